"""The ClickMe preprocessing of the harmonizer release (serre-lab/Harmonization), in torch.

What the release's loader does to each harmonization record (facts, see
docs/methods.md, "ClickMe data", and the release's ``clickme_dataset.py``/``blur.py``):

* image: uint8 -> float32 (0..255) -> ``tf.image.resize(.., (224, 224), "bilinear")``;
* heatmap: uint8 -> float32 -> bilinear resize to 64 x 64 -> 2-D convolution with a
  10 x 10 Gaussian (sigma 10) with TensorFlow "SAME" zero padding -> bilinear resize to 224.

TF2's ``tf.image.resize`` bilinear without antialias is ``resize_bilinear`` with half-pixel
centres: source coordinate ``(i + 0.5) * in/out - 0.5``, neighbours clamped to the edge,
no low-pass filter when down-sampling. ``F.interpolate(mode="bilinear",
align_corners=False, antialias=False)`` computes the same thing (it clamps negative
source coordinates to 0, which picks the same edge pixel), so :func:`tf_resize_bilinear`
is that call; tests check it against a loop-by-loop NumPy version of TF's algorithm.

The release's kernel is built on the integer grid ``x = -(k-1)//2 ... (k-1)//2`` (Python
floor division, so -5..4 for k = 10) and ``y`` from ``(k-1)//2`` *down* to ``-(k-1)//2``
(4..-5), ``exp(-(x² + y²) / (2 sigma²)) / (2 pi sigma²)`` normalised to sum 1, in float64
then cast to float32. For an even size the kernel is therefore not centred: its peak is at
row 4, column 5 — and with SAME padding (4 before, 5 after) a blurred delta peaks one
column to the *left* of the click. We reproduce that exactly; it is what the published
scores were computed with.

Images in the release stay in 0..255; harmonia's readers divide by 255 after the same
resize (numerically the same up to that scale).

Example:
    >>> import torch
    >>> pre = ClickMePreprocess()            # the release's settings
    >>> img, hm = pre(torch.rand(3, 256, 256) * 255, torch.rand(256, 256) * 255)
    >>> tuple(img.shape), tuple(hm.shape)
    ((3, 224, 224), (224, 224))
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

RELEASE_IMAGE_SIZE = 224
RELEASE_BLUR_RESOLUTION = 64
RELEASE_BLUR_KERNEL_SIZE = 10
RELEASE_BLUR_SIGMA = 10.0


def _as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def tf_resize_bilinear(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``tf.image.resize(method="bilinear", antialias=False)`` (TF2) on a (..., H, W) tensor.

    Example:
        >>> tf_resize_bilinear(torch.ones(3, 256, 256), 224).shape
        torch.Size([3, 224, 224])
    """
    size = _as_size(size)
    if tuple(x.shape[-2:]) == size:
        return x  # TF returns the input unchanged too (scale 1, exact centres)
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    dtype = flat.dtype
    if not dtype.is_floating_point:
        flat = flat.float()
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=False)
    return out.reshape(*lead, *size)


def release_gaussian_kernel(
    size: int = RELEASE_BLUR_KERNEL_SIZE, sigma: float = RELEASE_BLUR_SIGMA
) -> torch.Tensor:
    """The harmonizer release's Gaussian kernel (size x size, float32, sums to 1).

    Example:
        >>> k = release_gaussian_kernel()
        >>> tuple(k.shape), divmod(int(k.argmax()), 10)   # peak at row 4, column 5
        ((10, 10), (4, 5))
    """
    return _kernel(int(size), float(sigma)).clone()


@functools.lru_cache(maxsize=16)
def _kernel(size: int, sigma: float) -> torch.Tensor:
    if size < 1 or sigma <= 0:
        raise ValueError(f"blur kernel size must be >= 1 and sigma > 0 (got {size}, {sigma})")
    half = -(size - 1) // 2  # Python floor division, as in the release: -5 for size 10
    xs = torch.arange(half, (size - 1) // 2 + 1, dtype=torch.float64)
    ys = torch.arange((size - 1) // 2, half - 1, -1, dtype=torch.float64)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # row i has y = ys[i], column j has x = xs[j]
    k = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    return (k / k.sum()).to(torch.float32)


def tf_same_padding(kernel_size: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) for stride 1: the extra pixel goes after.

    Example:
        >>> tf_same_padding(10), tf_same_padding(5)
        ((4, 5), (2, 2))
    """
    total = kernel_size - 1
    return total // 2, total - total // 2


def gaussian_blur_same(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2-D cross-correlation of (..., H, W) with ``kernel`` (kh x kw), TF "SAME" zero padding.

    Example:
        >>> gaussian_blur_same(torch.ones(64, 64), release_gaussian_kernel()).shape
        torch.Size([64, 64])
    """
    kh, kw = kernel.shape
    (top, bottom), (left, right) = tf_same_padding(kh), tf_same_padding(kw)
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    flat = F.pad(flat, (left, right, top, bottom))
    out = F.conv2d(flat, kernel.to(flat.dtype)[None, None])  # conv2d is cross-correlation, like TF
    return out.reshape(*lead, *out.shape[-2:])


@dataclass(frozen=True)
class ClickMePreprocess:
    """Resize images and diffuse (blur) human maps; the defaults are the release's.

    ``image_size``: output side of image and map (None keeps the native size).
    ``blur``: apply the Gaussian diffusion to the map. ``blur_resolution``: the map is
    resized to this side before blurring (None blurs at native resolution).
    ``blur_kernel_size`` / ``blur_sigma``: the kernel, built as the release builds it.
    Works on single items (3 x H x W, H x W) and batches (N x 3 x H x W, N x H x W).

    Example:
        >>> ClickMePreprocess(image_size=128).heatmap(torch.rand(256, 256)).shape
        torch.Size([128, 128])
    """

    image_size: int | None = RELEASE_IMAGE_SIZE
    blur: bool = True
    blur_resolution: int | None = RELEASE_BLUR_RESOLUTION
    blur_kernel_size: int = RELEASE_BLUR_KERNEL_SIZE
    blur_sigma: float = RELEASE_BLUR_SIGMA

    def __post_init__(self) -> None:
        for name in ("image_size", "blur_resolution"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ValueError(f"{name} must be a positive size or None, got {v}")
        if self.blur:
            _kernel(int(self.blur_kernel_size), float(self.blur_sigma))  # validates

    @classmethod
    def release(cls) -> "ClickMePreprocess":
        """The harmonizer release's loader: 224, blur 10/10 at 64 x 64."""
        return cls()

    @classmethod
    def none(cls) -> "ClickMePreprocess":
        """No resizing and no blur: records as stored (images still scaled to [0, 1])."""
        return cls(image_size=None, blur=False, blur_resolution=None)

    def image(self, image: torch.Tensor) -> torch.Tensor:
        """(..., 3, H, W) float image, any value scale -> resized (same scale)."""
        return image if self.image_size is None else tf_resize_bilinear(image, self.image_size)

    def heatmap(self, heatmap: torch.Tensor) -> torch.Tensor:
        """(..., H, W) float map -> [resize to blur_resolution, blur] -> resize to image_size."""
        out_size = tuple(heatmap.shape[-2:]) if self.image_size is None else _as_size(self.image_size)
        m = heatmap
        if self.blur:
            if self.blur_resolution is not None:
                m = tf_resize_bilinear(m, self.blur_resolution)
            m = gaussian_blur_same(m, _kernel(int(self.blur_kernel_size), float(self.blur_sigma)))
        return tf_resize_bilinear(m, out_size)  # type: ignore[arg-type]

    def from_uint8(self, images: torch.Tensor, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded uint8 records -> what the float32 ClickMe readers give, for whole batches.

        ``images``: uint8 (N x) 3 x H x W, ``heatmaps``: uint8 (N x) H x W, on any device
        (run it after moving a batch to the GPU: the resizes and the blur are batched there).
        Returns float32 images in [0, 1] and float32 maps, the per-item path's operations in
        the same order (so equal to ~1e-6 relative; only batched kernels' summation order
        can differ).

        Example:
            >>> img, hm = ClickMePreprocess().from_uint8(torch.zeros(2, 3, 256, 256, dtype=torch.uint8),
            ...                                          torch.zeros(2, 256, 256, dtype=torch.uint8))
            >>> tuple(img.shape), tuple(hm.shape), img.dtype
            ((2, 3, 224, 224), (2, 224, 224), torch.float32)
        """
        if images.dtype != torch.uint8 or heatmaps.dtype != torch.uint8:
            raise ValueError(f"from_uint8 expects uint8 images and maps, got {images.dtype} and {heatmaps.dtype}")
        image = images.float()
        if self.image_size is None or tuple(image.shape[-2:]) == _as_size(self.image_size):
            image = image.div_(255.0)  # no resize: convert and scale together, as the readers do
        else:
            image = self.image(image).div_(255.0)  # 0..255 as the release; divided after the resize
        return image, self.heatmap(heatmaps.float()).contiguous()

    def __call__(self, image: torch.Tensor, heatmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(image), self.heatmap(heatmap)

    def config(self) -> dict[str, Any]:
        """Settings that change what items look like (for cache keys)."""
        return asdict(self)


def release_preprocess(format: str) -> ClickMePreprocess:
    """The preprocessing each published release applies to its own format.

    harmonization and ClickMe 1.0 records: the harmonizer loader (resize 224, blur at 64).
    adversarial-alignment records (already 224 x 224): that release uses the maps as
    stored, so no blur.

    Example:
        >>> release_preprocess("adversarial").blur
        False
    """
    if format in ("harmonization", "clickme1"):
        return ClickMePreprocess.release()
    if format == "adversarial":
        return ClickMePreprocess(blur=False)
    raise ValueError(f"unknown ClickMe format {format!r} (harmonization, clickme1, adversarial)")
