"""Crop resampling and Lucid's transforms (harmonia.featviz.augment)."""

from __future__ import annotations

import pytest
import torch

from harmonia.featviz import fourier, visualize
from harmonia.featviz.augment import LucidTransforms, _resample


def test_bicubic_crops_sample_the_box():
    img = torch.rand(2, 3, 20, 24)
    whole = torch.tensor([[1, 0.0, 0.0, 24.0, 20.0]])
    torch.testing.assert_close(_resample(img, whole, (20, 24), "bicubic")[0], img[1], atol=1e-5, rtol=0)
    # a ramp is reproduced by every interpolation: the bicubic box agrees with roi_align's
    ramp = torch.arange(32.0).expand(1, 3, 32, 32).contiguous()
    box = torch.tensor([[0, 6.0, 5.0, 22.0, 21.0]])
    torch.testing.assert_close(_resample(ramp, box, (8, 8), "bicubic"), _resample(ramp, box, (8, 8), "bilinear"),
                               atol=1e-4, rtol=0)


def test_lucid_transforms_shapes_streams_and_their_parts():
    img = torch.rand(2, 3, 40, 40)
    t = LucidTransforms(crops=3)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (0, 1)]  # noqa: E731
    a, b = t(img, (32, 32), gens(), 0, 1), t(img, (32, 32), gens(), 0, 1)
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b)  # each image's own stream
    assert not torch.allclose(a[0], a[1])  # three different copies
    # no jitter, scale 1, no rotation: only the grey pad, then the resize
    plain = LucidTransforms(crops=1, jitter=(1, 1), scales=(1.0,), angles=(0,))
    out = plain(img[:1], (64, 64), [torch.Generator()], 0, 1)[0]
    torch.testing.assert_close(out[:, 12:52, 12:52], img[0], atol=1e-5, rtol=0)
    assert torch.allclose(out[:, :12], torch.full_like(out[:, :12], 0.5))
    with pytest.raises(ValueError, match="augmentation"):
        fourier(torch.nn.Conv2d(3, 2, 1), "class:0", steps=1, image_size=16, augmentation="nope")


def test_fourier_with_lucid_transforms_runs_batched_as_single(tiny_model):
    kw = dict(method="fourier", steps=4, image_size=32, crops=2, augmentation="lucid")
    batched = visualize(tiny_model, ["class:0", "class:1"], seed=3, **kw)
    single = visualize(tiny_model, "class:1", seed=4, **kw)
    assert batched.settings["augmentation"]["kind"] == "lucid"
    torch.testing.assert_close(batched.images[1], single.images[0], atol=1e-4, rtol=1e-4)
