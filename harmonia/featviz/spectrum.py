"""The natural-image magnitude spectrum MACO keeps fixed, computed offline from real photos.

The spectrum is the mean ``|rfft2|`` of images in the *decorrelated* colour space (pixels
right-multiplied by the inverse of :data:`COLOR_MATRIX`), a float32 array 3 x S x (S//2+1),
the layout of the MACO releases (S = 512). Its absolute scale does not matter: the image is
standardised after the inverse FFT. Other image sizes get it resized bilinearly.

The default shipped in ``harmonia/resources/featviz_spectrum.npy`` is computed by
:func:`default_spectrum_photos` + :func:`compute_spectrum` from the real colour photos that
ship with scikit-image, scikit-learn and matplotlib (see docs/featviz.md); nothing is downloaded.

Example:
    >>> import torch
    >>> s = compute_spectrum([torch.rand(3, 40, 50)], size=32, crops_per_image=2)
    >>> tuple(s.shape)
    (3, 32, 17)
    >>> tuple(load_spectrum(size=(64, 48)).shape)
    (3, 64, 25)
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Lucid's colour correlation matrix divided by its largest column norm, transposed: pixel
# vectors (N x 3) are right-multiplied by it to go from the decorrelated space to RGB.
COLOR_MATRIX = torch.tensor([
    [0.56282854, 0.58447580, 0.58447580],
    [0.19482528, 0.0, -0.19482528],
    [0.04329450, -0.10823626, 0.06494176],
])

DEFAULT_SPECTRUM_FILE = "featviz_spectrum.npy"
DEFAULT_SPECTRUM_SIZE = 512


def recorrelate(x: torch.Tensor) -> torch.Tensor:
    """K x 3 x H x W in the decorrelated colour space -> RGB (each pixel vector @ COLOR_MATRIX)."""
    return torch.einsum("kchw,cd->kdhw", x, COLOR_MATRIX.to(x))


def decorrelate(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`recorrelate`."""
    return torch.einsum("kchw,cd->kdhw", x, torch.linalg.inv(COLOR_MATRIX.double()).to(x))


def _random_square_crops(image: torch.Tensor, size: int, n: int, rng: np.random.Generator) -> torch.Tensor:
    """The centre square (first) and ``n - 1`` random squares of 50-100 % of the short side, at size x size."""
    _, h, w = image.shape
    short = min(h, w)
    boxes = [((h - short) // 2, (w - short) // 2, short)]
    for _ in range(n - 1):
        side = int(rng.uniform(0.5, 1.0) * short)
        boxes.append((int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1)), side))
    crops = [F.interpolate(image[None, :, y:y + s, x:x + s], size=(size, size), mode="bilinear",
                           align_corners=False, antialias=True)[0] for y, x, s in boxes]
    return torch.stack(crops)


def compute_spectrum(
    images: Iterable[torch.Tensor | str | os.PathLike],
    size: int = DEFAULT_SPECTRUM_SIZE,
    crops_per_image: int = 1,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Mean ``|rfft2|`` (3 x size x size//2+1, float32) of square crops of ``images``, in the
    decorrelated colour space.

    ``images`` are 3 x H x W tensors in [0, 1] or image files. Each image gives its centre
    square and ``crops_per_image - 1`` random squares (50-100 % of its short side), resized to
    ``size`` x ``size``: more crops smooth the mean when there are few photos.
    """
    from harmonia.data.format import load_image

    if size < 2:
        raise ValueError(f"spectrum size must be >= 2, got {size}")
    if crops_per_image < 1:
        raise ValueError(f"crops_per_image must be >= 1, got {crops_per_image}")
    items = list(images)
    if not items:
        raise ValueError("no images to compute a spectrum from")
    rng = np.random.default_rng(seed)
    total = torch.zeros(3, size, size // 2 + 1, dtype=torch.float64)
    count = 0
    for i, item in enumerate(items):
        img = item if isinstance(item, torch.Tensor) else load_image(Path(item))
        img = img.float()
        if img.ndim != 3 or img.shape[0] not in (1, 3):
            raise ValueError(f"image {i}: expected 3 x H x W, got {tuple(img.shape)}")
        img = img.expand(3, -1, -1)
        crops = decorrelate(_random_square_crops(img, size, crops_per_image, rng))
        total += torch.fft.rfft2(crops.double()).abs().sum(0)
        count += crops.shape[0]
        if progress:
            progress(i + 1, len(items))
    return (total / count).float()


def save_spectrum(path: str | os.PathLike, spectrum: torch.Tensor) -> None:
    """Write a spectrum as a float32 ``.npy`` file (atomically)."""
    from harmonia.utils.io import atomic_save_npy

    atomic_save_npy(path, np.asarray(spectrum, dtype=np.float32))


def default_spectrum_path() -> Path:
    """The shipped default spectrum file (package data)."""
    return Path(str(resources.files("harmonia") / "resources" / DEFAULT_SPECTRUM_FILE))


def load_spectrum(path: str | os.PathLike | None = None, size: Sequence[int] | int | None = None) -> torch.Tensor:
    """A spectrum file (None: the shipped default), resized bilinearly to ``size`` = (H, W) of the image.

    Raises:
        FileNotFoundError / ValueError: missing file, or not a 3 x H x (W//2+1) array.
    """
    p = Path(path) if path is not None else default_spectrum_path()
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no spectrum file (make one with `harmonia featviz spectrum --images DIR --out FILE`)")
    arr = np.load(p, allow_pickle=False)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"{p}: a spectrum is a 3 x H x (W//2+1) array, got shape {arr.shape}")
    spec = torch.from_numpy(np.asarray(arr, dtype=np.float32))
    if size is None:
        return spec
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if spec.shape[1:] == (h, w // 2 + 1):
        return spec
    return F.interpolate(spec[None], size=(h, w // 2 + 1), mode="bilinear", align_corners=False)[0]


def default_spectrum_photos() -> list[tuple[str, Callable[[], np.ndarray]]]:
    """The real colour photos, shipped inside installed packages, the default spectrum is made of.

    scikit-image's data images (astronaut, chelsea, coffee, rocket, motorcycle_left),
    scikit-learn's sample images (china, flower) and matplotlib's sample data (grace_hopper):
    every colour photograph of a natural scene among them (microscopy, retina, Hubble, textures,
    grey and synthetic images left out).
    """
    import matplotlib.cbook
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_image

    def sk(name: str) -> Callable[[], np.ndarray]:
        return lambda: np.asarray(Image.open(Path(skimage.data.__file__).parent / name).convert("RGB"))

    def mpl(name: str) -> Callable[[], np.ndarray]:
        return lambda: np.asarray(Image.open(matplotlib.cbook.get_sample_data(name, asfileobj=False)).convert("RGB"))

    return [
        *((n, sk(f)) for n, f in (("astronaut", "astronaut.png"), ("chelsea", "chelsea.png"), ("coffee", "coffee.png"),
                                   ("rocket", "rocket.jpg"), ("motorcycle_left", "motorcycle_left.png"))),
        ("china", lambda: load_sample_image("china.jpg")),
        ("flower", lambda: load_sample_image("flower.jpg")),
        ("grace_hopper", mpl("grace_hopper.jpg")),
    ]


def build_default_spectrum(size: int = DEFAULT_SPECTRUM_SIZE, crops_per_image: int = 32, seed: int = 0) -> torch.Tensor:
    """The shipped default: :func:`compute_spectrum` of :func:`default_spectrum_photos`
    (centre square + 31 random squares each), re-run with
    ``python -m harmonia.featviz.spectrum`` to rebuild ``harmonia/resources/featviz_spectrum.npy``."""
    photos = [torch.from_numpy(read().copy()).permute(2, 0, 1).float() / 255.0 for _, read in default_spectrum_photos()]
    return compute_spectrum(photos, size=size, crops_per_image=crops_per_image, seed=seed)


if __name__ == "__main__":  # rebuild the shipped default
    out = Path(__file__).resolve().parents[1] / "resources" / DEFAULT_SPECTRUM_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    save_spectrum(out, build_default_spectrum())
    print(f"wrote {out}")
