"""SYNTHETIC neural recordings generated from a known "ground-truth" network.

Responses are a fixed random linear read-out of one layer of :class:`GroundTruthNet`
(optionally through a softplus), plus noise of known reliability. Because the true layer
is known, a benchmark must rank it first, recover the designed ceiling and score an
unrelated network (another seed) lower. Everything produced here says ``synthetic``.

Example:
    >>> rec = simulate_flat(n_stimuli=8, n_neurons=3, seed=0)
    >>> rec.synthetic, rec.responses.shape, rec.repeats.shape
    (True, (8, 3), (4, 8, 3))
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import gaussian_filter

from harmonia.neural.data import NeuralRecording
from harmonia.neural.features import extract_features, minmax_per_image

LAYERS = ("block1", "block2", "block3", "block4")


class GroundTruthNet(nn.Module):
    """A small random CNN (32 x 32 input) with four named blocks; ``seed`` fixes its weights.

    Example:
        >>> GroundTruthNet(seed=0)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, seed: int = 0, width: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        c = [3, width, width, 2 * width, 2 * width]
        for i in range(4):
            conv = nn.Conv2d(c[i], c[i + 1], 3, stride=1 if i == 0 else 2, padding=1)
            with torch.no_grad():  # seeded explicitly: the global RNG must not change the truth
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * math.sqrt(2.0 / (c[i] * 9)))
                conv.bias.copy_(0.1 * torch.randn(conv.bias.shape, generator=g))
            self.add_module(f"block{i + 1}", nn.Sequential(conv, nn.ReLU()))
        self.head = nn.Linear(c[-1], 10)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) / math.sqrt(c[-1]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(4):
            x = getattr(self, f"block{i + 1}")(x)
        return self.head(x.mean((2, 3)))


def ground_truth_model(seed: int = 0):
    """:class:`GroundTruthNet` wrapped as a HarmoniaModel (32 x 32, ImageNet normalisation)."""
    from harmonia.models.wrapper import HarmoniaModel, Preprocessing

    return HarmoniaModel(GroundTruthNet(seed), f"simulated:{seed}", Preprocessing(input_size=(32, 32))).eval()


def synthetic_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth random colour images in [0, 1], quantised to 8 bits (so PNG round trips are exact)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, size, size))
    x = np.stack([gaussian_filter(im, sigma=(0, 1.5, 1.5)) for im in x])
    x = (x - x.min((1, 2, 3), keepdims=True)) / np.ptp(x, axis=(1, 2, 3), keepdims=True)
    return (np.round(x * 255) / 255).astype(np.float32)


def _noisy(signal: np.ndarray, reliability: float, n_repeats: int, rng: np.random.Generator) -> np.ndarray:
    """Repeats R x signal.shape with per-neuron noise set so the repeat average has the
    given reliability: var(s) / (var(s) + sigma^2 / R) = reliability (neurons on axis 1)."""
    axes = tuple(i for i in range(signal.ndim) if i != 1)
    var = signal.var(axis=axes, keepdims=True)
    sigma = np.sqrt(n_repeats * var * (1 - reliability) / reliability)
    return signal[None] + sigma[None] * rng.normal(size=(n_repeats, *signal.shape))


def simulate_flat(
    n_stimuli: int = 100, n_neurons: int = 20, layer: str = "block2", reliability: float = 0.8,
    n_repeats: int = 4, net_seed: int = 0, seed: int = 0, nonlinear: bool = False, image_size: int = 32,
) -> NeuralRecording:
    """A SYNTHETIC stimuli x neuroids recording: read-out of ``layer``'s 2 x 2-pooled features."""
    if not 0 < reliability < 1:
        raise ValueError(f"reliability must be in (0, 1), got {reliability}")
    rng = np.random.default_rng(seed + 1)
    images = synthetic_images(n_stimuli, image_size, seed)
    f = extract_features(ground_truth_model(net_seed), torch.from_numpy(images), [layer], mode="grid", grid=(2, 2))[layer]
    f = f.reshape(n_stimuli, -1).double().numpy()
    f = (f - f.mean(0)) / (f.std(0) + 1e-8)
    signal = f @ rng.normal(size=(f.shape[1], n_neurons)) / math.sqrt(f.shape[1])
    if nonlinear:
        signal = np.logaddexp(0, 2 * signal)  # softplus: a rectifying static non-linearity
    reps = _noisy(signal, reliability, n_repeats, rng)
    return NeuralRecording(
        images, reps.mean(0), [f"stim{i:04d}" for i in range(n_stimuli)], [f"n{j:03d}" for j in range(n_neurons)],
        name=f"simulated-flat-{layer}", synthetic=True, repeats=reps,
        description=f"SYNTHETIC: read-out of GroundTruthNet(seed={net_seed}).{layer}, reliability {reliability}",
        meta={"synthetic": True, "true_layer": layer, "reliability": reliability, "net_seed": net_seed, "nonlinear": nonlinear},
    )


def simulate_spatial(
    n_images: int = 14, n_neurons: int = 16, grid: tuple[int, int] = (9, 9), layer: str = "block2",
    reliability: float = 0.8, net_seed: int = 0, seed: int = 0, image_size: int = 32, n_repeats: int = 1,
) -> NeuralRecording:
    """A SYNTHETIC spatial recording (images x neurons x Gy x Gx): each neuron's map is a
    read-out of ``layer``'s features resized to the grid (as the benchmark sees them) plus
    noise with the given reliability (of the average of ``n_repeats`` presentations; the
    published files have one, and keep no repeats)."""
    rng = np.random.default_rng(seed + 1)
    images = synthetic_images(n_images, image_size, seed)
    f = extract_features(ground_truth_model(net_seed), torch.from_numpy(images), [layer], mode="grid", grid=grid)[layer]
    f = minmax_per_image(f).double().numpy()  # N x Gy x Gx x C
    signal = f @ rng.normal(size=(f.shape[-1], n_neurons))  # N x Gy x Gx x K
    signal = signal.transpose(0, 3, 1, 2)
    reps = _noisy(signal, reliability, n_repeats, rng)
    return NeuralRecording(
        images, reps.mean(0), [f"img{i:02d}" for i in range(n_images)], [f"ch{j + 1}" for j in range(n_neurons)],
        name=f"simulated-spatial-{layer}", synthetic=True, repeats=reps if n_repeats > 1 else None,
        description=f"SYNTHETIC: maps read out from GroundTruthNet(seed={net_seed}).{layer}, reliability {reliability}",
        meta={"synthetic": True, "true_layer": layer, "reliability": reliability, "net_seed": net_seed},
    )


def write_arcaro_mat(
    rec: NeuralRecording, mat_path: str | Path, stimuli_dir: str | Path,
    window: tuple[int, int] = (90, 130), n_ms: int = 200, seed: int = 0,
) -> None:
    """Write a spatial recording in the published layout: ``imageRF`` (x, y, time, channel,
    image; one bin per ms from 0) and ``UniqueNames``, stimuli as PNGs in ``stimuli_dir``.

    Inside ``window`` every bin holds the map plus zero-mean jitter (the window average is
    exactly the map); outside it, baseline noise. Axes are stored unflipped, so reading
    (which flips x and y like the release) gives ``rec.responses`` back.
    """
    from PIL import Image
    from scipy.io import savemat

    if rec.kind != "spatial":
        raise ValueError("only spatial recordings have the published layout")
    rng = np.random.default_rng(seed)
    maps = rec.responses[:, :, ::-1, ::-1].transpose(3, 2, 1, 0)  # x, y, channel, image
    a, b = window
    rf = rng.normal(scale=0.1, size=(maps.shape[0], maps.shape[1], n_ms, *maps.shape[2:]))
    jitter = rf[:, :, a:b]
    rf[:, :, a:b] = maps[:, :, None] + (jitter - jitter.mean(2, keepdims=True))
    stimuli_dir = Path(stimuli_dir)
    stimuli_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for sid, im in zip(rec.stimulus_ids, rec.images):
        names.append(f"{sid}.png")
        Image.fromarray((np.clip(im.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)).save(stimuli_dir / names[-1])
    Path(mat_path).parent.mkdir(parents=True, exist_ok=True)
    cell = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cell[i, 0] = n
    savemat(str(mat_path), {"imageRF": rf.astype(np.float64), "UniqueNames": cell,
                            "synthetic": "SYNTHETIC data from harmonia.neural.simulate"}, do_compression=True)
