"""Feature visualization (harmonia.featviz): tiny models, small images, a few steps, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from harmonia.featviz import (
    AccentuationImage,
    MacoImage,
    accentuate,
    compute_spectrum,
    direction,
    fourier,
    load_spectrum,
    maco,
    parse_objective,
)
from harmonia.featviz.spectrum import decorrelate
from harmonia.models.wrapper import HarmoniaModel, Preprocessing


def timm_cnn() -> HarmoniaModel:
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=5)
    return HarmoniaModel(net, "timm:resnet10t", Preprocessing(input_size=(32, 32)), class_names=list("abcde")).eval()


def timm_vit() -> HarmoniaModel:
    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32, patch_size=8, depth=2)
    for m in net.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return HarmoniaModel(net, "timm:vit_tiny", Preprocessing(input_size=(32, 32))).eval()


FAST = dict(image_size=32, crops=2)


@pytest.mark.parametrize("size", [(32, 32), (24, 19)])
def test_maco_spectrum_magnitude_is_the_fixed_one_whatever_the_steps(size):
    h, w = size
    param = MacoImage(load_spectrum(size=size), size, seeds=[0, 1])
    opt = torch.optim.NAdam(param.parameters(), lr=1.0)
    target = torch.rand(2, 3, h, w)
    for _step in range(6):
        spatial = param.spatial()
        got = torch.fft.rfft2(spatial).abs()
        torch.testing.assert_close(got, param.magnitude.expand_as(got), rtol=1e-4, atol=1e-3 * float(param.magnitude.mean()))
        # ... and the standardised image (what the colour step gets) has the same spectrum up to scale, DC aside
        std = (spatial - spatial.mean((1, 2, 3), keepdim=True)) / spatial.std((1, 2, 3), keepdim=True)
        ratio = torch.fft.rfft2(std).abs()[..., 1:, 1:] / param.magnitude[..., 1:, 1:]
        assert torch.allclose(ratio, ratio.flatten(1).mean(1).view(-1, 1, 1, 1), rtol=1e-3)
        loss = (param.images() - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_maco_objective_increases_and_transparency(tiny_model):
    r = maco(tiny_model, ["class:0", "class:2"], steps=25, seed=3, **FAST)
    assert r.images.shape == (2, 3, 32, 32) and 0 <= r.images.min() and r.images.max() <= 1
    assert r.trace.shape == (25, 2)
    assert (r.trace[-5:].mean(0) > r.trace[:5].mean(0)).all(), r.trace
    assert r.transparency.shape == (2, 32, 32) and (r.transparency >= 0).all() and r.transparency.sum() > 0
    assert r.settings["method"] == "maco" and r.settings["seeds"] == [3, 4]


def test_batched_objectives_equal_single_runs(tiny_model):
    specs = ["class:0", "class:1", "channel:features.2:3"]
    batched = maco(tiny_model, specs, steps=6, seed=10, **FAST)
    for k, spec in enumerate(specs):
        single = maco(tiny_model, spec, steps=6, seed=10 + k, **FAST)
        torch.testing.assert_close(batched.images[k], single.images[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batched.transparency[k], single.transparency[0], atol=1e-5, rtol=1e-3)
        torch.testing.assert_close(batched.trace[:, k], single.trace[:, 0], atol=1e-4, rtol=1e-4)


def test_determinism_with_a_seed(tiny_model):
    a = maco(tiny_model, "class:1", steps=4, seed=5, **FAST)
    b = maco(tiny_model, "class:1", steps=4, seed=5, **FAST)
    c = maco(tiny_model, "class:1", steps=4, seed=6, **FAST)
    assert torch.equal(a.images, b.images) and torch.equal(a.transparency, b.transparency)
    assert not torch.allclose(a.images, c.images)


@pytest.mark.parametrize("build", [timm_cnn, timm_vit], ids=["cnn", "vit"])
def test_every_objective_kind_on_timm_models(build):
    model = build()
    layer = "layer3.0.conv2" if "resnet" in model.arch else "blocks.1"  # pre-BN (timm zero-inits the last BN), alive
    width = 256 if "resnet" in model.arch else 192
    vec = torch.randn(width, generator=torch.Generator().manual_seed(0))
    objectives = [
        parse_objective("class:3"),
        parse_objective(f"channel:{layer}:5"),
        parse_objective(f"neuron:{layer}:7,y=1,x=0"),
        parse_objective(f"layer:{layer}"),
        direction(layer, vec),
        parse_objective(f"class:1 - 0.5*channel:{layer}:2"),
    ]
    r = maco(model, objectives, steps=12, seed=0, **FAST)
    assert r.images.shape == (6, 3, 32, 32) and torch.isfinite(r.images).all()
    assert (r.transparency >= 0).all() and r.transparency.shape == (6, 32, 32)
    assert (r.trace[-3:].mean(0) > r.trace[:3].mean(0)).sum() >= 5, r.trace  # nearly all rise in 12 noisy steps


def test_objective_algebra_matches_its_terms():
    acts = {"": torch.randn(4, 5), "l": torch.randn(4, 6, 3, 3)}
    a, b, c = parse_objective("class:2"), parse_objective("channel:l:1"), parse_objective("layer:l")
    combo = a + 2 * b - c * 0.5
    torch.testing.assert_close(combo(acts), a(acts) + 2 * b(acts) - 0.5 * c(acts))
    assert parse_objective("class:2 + 2*channel:l:1 - 0.5*layer:l")(acts).allclose(combo(acts))
    assert torch.allclose(parse_objective("neuron:l:1,y=0,x=2")(acts), acts["l"][:, 1, 0, 2])
    assert torch.allclose(parse_objective("neuron:l:1")(acts), acts["l"][:, 1, 1, 1])  # default: centre
    # a direction along one channel: dot * cos, with cos = that channel's share of the norm
    d = direction("l", torch.eye(6)[4])(acts)
    x = acts["l"]
    want = (x[:, 4] * (x[:, 4] / x.norm(dim=1)).clamp_min(0)).mean((1, 2))
    torch.testing.assert_close(d, want)


def test_objective_errors(tiny_model):
    with pytest.raises(KeyError, match="no layer named 'features.9'.*did you mean"):
        maco(tiny_model, "channel:features.9:0", steps=1, **FAST)
    with pytest.raises(ValueError, match="outside 0..2"):
        maco(tiny_model, "class:7", steps=1, **FAST)
    with pytest.raises(ValueError, match="unknown class 'zebra'"):
        maco(tiny_model, "class:zebra", steps=1, **FAST)
    assert parse_objective("class:b").bind(tiny_model).terms[0][1].channel == 1
    with pytest.raises(ValueError, match="unknown objective 'chanel'.*did you mean channel"):
        parse_objective("chanel:features.0:1")
    with pytest.raises(ValueError, match="channel 99 outside"):
        maco(tiny_model, "channel:features.2:99", steps=1, **FAST)
    with pytest.raises(ValueError, match="takes 1 positional"):
        parse_objective("class:1:2")


def test_fourier_baseline_and_accentuation(tiny_model):
    f = fourier(tiny_model, "class:2", steps=20, seed=1, **FAST)
    assert f.settings["method"] == "fourier" and (f.trace[-5:].mean() > f.trace[:5].mean())
    seed = torch.rand(3, 32, 32) * 0.8 + 0.1
    start = AccentuationImage(seed[None]).images()
    torch.testing.assert_close(start[0], seed, atol=1e-4, rtol=0)  # step 0 is the seed image
    near = accentuate(tiny_model, "class:2", seed, steps=15, crops=2, closeness=100.0)
    far = accentuate(tiny_model, "class:2", seed, steps=15, crops=2, closeness=0.0)
    dist = [float((r.images[0] - seed).pow(2).mean()) for r in (near, far)]
    assert dist[0] < dist[1], dist
    assert far.trace[-3:].mean() > far.trace[:3].mean()


def test_spectrum_from_an_image_folder(tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli.main import app

    folder = tmp_path / "photos"
    folder.mkdir()
    colours = [(200, 30, 30), (20, 180, 90)]
    for i, c in enumerate(colours):
        Image.fromarray(np.full((20, 30, 3), c, np.uint8)).save(folder / f"c{i}.png")
    res = CliRunner().invoke(app, ["featviz", "spectrum", "--images", str(folder), "--out", str(tmp_path / "s.npy"),
                                   "--size", "16"])
    assert res.exit_code == 0, res.output
    spec = np.load(tmp_path / "s.npy")
    assert spec.shape == (3, 16, 9) and spec.dtype == np.float32
    # constant images: all energy at DC, which is 16*16 * the mean decorrelated colour's magnitude
    rgb = torch.tensor(colours, dtype=torch.float32).view(2, 3, 1, 1) / 255
    want = (decorrelate(rgb).abs().view(2, 3).mean(0) * 256).numpy()
    np.testing.assert_allclose(spec[:, 0, 0], want, rtol=1e-3)
    assert np.abs(spec[:, 1:, :]).max() < 1e-3 * want.max() and np.abs(spec[:, 0, 1:]).max() < 1e-3 * want.max()
    assert torch.equal(load_spectrum(tmp_path / "s.npy"), torch.from_numpy(spec))
    # the shipped default: natural images, so magnitude falls with frequency
    default = load_spectrum()
    assert default.shape == (3, 512, 257)
    assert default[0, 1, 0] > default[0, 8, 0] > default[0, 64, 0] > default[0, 200, 0]
    with pytest.raises(ValueError, match="no images"):
        compute_spectrum([])


def test_cli_featviz_writes_outputs_records_the_run_and_caches(tmp_path):
    import json

    from typer.testing import CliRunner

    from harmonia.cli.main import app
    from harmonia.store import ResultStore

    runner = CliRunner()
    out, store = tmp_path / "viz", tmp_path / "r.sqlite"
    args = ["featviz", "--model", "small_cnn", "--random-init", "--objective", "class:3", "--objective", "channel:3:1",
            "--out", str(out), "--steps", "3", "--image-size", "32", "--crops", "1", "--store", str(store), "--report",
            "--transfer", "small_cnn"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    for name in ("00_class_3.png", "00_class_3_rgba.png", "00_class_3_transparency.npy", "01_channel_3_1.png",
                 "grid.png", "result.json", "report.html"):
        assert (out / name).is_file(), name
    rgba = np.asarray(Image.open(out / "00_class_3_rgba.png"))
    assert rgba.shape == (32, 32, 4) and rgba[..., 3].max() == 255
    data = json.loads((out / "result.json").read_text())
    assert len(data["trace"]) == 3 and data["settings"]["method"] == "maco"
    assert data["transfer"]["ranks"]["small_cnn"][1] is None  # not a class objective
    runs = ResultStore(store).runs(kind="featviz")
    assert len(runs) == 1 and runs[0].status == "complete"
    rows = ResultStore(store).rows(runs[0].key)
    assert [r["objective"] for r in rows] == ["class:3", "channel:3:1"]
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "cached" in again.output


def test_cli_featviz_errors_and_layers(tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli.main import app

    runner = CliRunner()
    base = ["featviz", "--model", "small_cnn", "--random-init", "--out", str(tmp_path), "--steps", "1",
            "--store", str(tmp_path / "r.sqlite")]
    bad_layer = runner.invoke(app, [*base, "--objective", "channel:features.4:1"])
    assert bad_layer.exit_code == 2 and "error: no layer named 'features.4'" in bad_layer.output
    bad_class = runner.invoke(app, [*base, "--objective", "class:espresso"])
    assert bad_class.exit_code == 2 and "unknown class 'espresso'" in bad_class.output
    missing = runner.invoke(app, ["featviz", "--model", "small_cnn"])
    assert missing.exit_code == 2 and "missing --objective, --out" in missing.output
    layers = runner.invoke(app, ["featviz", "layers", "small_cnn", "--random-init"])
    assert layers.exit_code == 0 and "Conv2d" in layers.output


def test_scores():
    from harmonia.featviz.scores import frechet_distance, plausibility, transferability, transparency_alignment

    g = np.random.default_rng(0)
    a = g.normal(size=(4000, 3)) * [1.0, 2.0, 0.5]
    b = g.normal(size=(4000, 3)) * [2.0, 1.0, 0.5] + [1.0, 0.0, 0.0]
    # diagonal Gaussians: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2 = 1 + 1 + 1 + 0
    assert abs(frechet_distance(a, b) - 3.0) < 0.15
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, b[:, :2])

    class Fixed(torch.nn.Module):  # logits = the image's mean per channel
        def forward(self, x):
            return x.mean((2, 3))

    imgs = torch.zeros(2, 3, 4, 4)
    imgs[0, 2], imgs[1, 0] = 1.0, 1.0
    imgs[1, 1] = 0.5
    t = transferability(imgs, [2, 1], {"m": Fixed()}, k=1)
    assert t["ranks"]["m"] == [0, 1] and t["topk"]["m"] == 0.5 and t["in_all"] == [True, False]
    p = plausibility(torch.tensor([[1.0, 1.0]]), {0: torch.tensor([[1.0, 0.0], [0.0, 1.0]])}, [0])
    assert abs(p[0] - 1.0) < 1e-9
    m = torch.rand(1, 16, 16)
    small = torch.nn.functional.avg_pool2d(m[None], 2)[0]
    assert transparency_alignment(m, small).item() == pytest.approx(1.0)
    assert transparency_alignment(m, -small).item() == pytest.approx(-1.0)


def test_an_interrupted_run_resumes_from_its_checkpoint(tiny_model, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    full = maco(tiny_model, ["class:0", "class:1"], steps=6, seed=2, **FAST)

    def stop_at_4(done, total):
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        maco(tiny_model, ["class:0", "class:1"], steps=6, seed=2, checkpoint=ckpt, checkpoint_every=2,
             progress=stop_at_4, **FAST)
    assert ckpt.is_file()
    seen = []
    resumed = maco(tiny_model, ["class:0", "class:1"], steps=6, seed=2, checkpoint=ckpt, checkpoint_every=2,
                   progress=lambda d, n: seen.append(d), **FAST)
    assert seen[0] == 4 and not ckpt.is_file()
    assert torch.equal(resumed.images, full.images) and torch.equal(resumed.trace, full.trace)
    torch.testing.assert_close(resumed.transparency, full.transparency)


def test_chunked_forward_passes_give_the_same_run(tiny_model):
    specs = ["class:0", "class:1", "class:2"]
    one = maco(tiny_model, specs, steps=4, seed=1, **FAST)
    chunked = maco(tiny_model, specs, steps=4, seed=1, max_batch=2, **FAST)  # one image per forward
    torch.testing.assert_close(chunked.images, one.images, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(chunked.trace, one.trace, atol=1e-5, rtol=1e-4)
