"""Image parameterisations: MACO (phase only), Fourier (Lucid) and feature accentuation.

Each holds K images' parameters and renders them, differentiably, as K x 3 x H x W in [0, 1]:

- :class:`MacoImage` (Fel et al. 2023): ``sigmoid(recorrelate(standardise(irfft2(r * exp(i phi)))))``
  with ``r`` the fixed natural-image magnitude and only the phase ``phi`` optimised (standardised
  every step). The phase is made Hermitian-consistent (antisymmetric along H on the columns
  ``irfft2`` folds, zero at self-conjugate bins) so that the spatial image's spectrum magnitude
  *is* ``r``, not a silently projected version of it;
- :class:`FourierImage` (Olah et al. 2017, Lucid): the whole spectrum optimised, scaled by
  ``1 / max(f, 1/max(H, W))^decay``, then colours recorrelated and a sigmoid;
- :class:`AccentuationImage` (Hamblin et al. 2024): MACO-style phase optimisation started from
  a seed image's own magnitude and phase (so step 0 is the seed), with a closeness penalty
  ``closeness * mean((x - seed)^2)`` added to the loss.

Example:
    >>> import torch
    >>> p = MacoImage(torch.ones(3, 16, 9), (16, 16), seeds=[0, 1])
    >>> tuple(p.images().shape)
    (2, 3, 16, 16)
"""

from __future__ import annotations

from typing import Sequence

import torch

from harmonia.featviz.spectrum import decorrelate, recorrelate


def _standardise(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per image (first axis): zero mean, unit standard deviation."""
    dims = tuple(range(1, x.ndim))
    return (x - x.mean(dims, keepdim=True)) / (x.std(dims, keepdim=True) + eps)


def _folded_columns(w: int) -> list[int]:
    """rfft2 columns whose bins pair with each other along H (DC, and Nyquist for an even width)."""
    return [0] + ([w // 2] if w % 2 == 0 and w > 1 else [])


def _hermitian_phase(phi: torch.Tensor, w: int) -> torch.Tensor:
    """The phase with the folded columns antisymmetric along H and zero on self-conjugate bins,
    so ``rfft2(irfft2(r * exp(i phi)))`` gives back ``r * exp(i phi)`` (with a symmetric ``r``)."""
    h = phi.shape[-2]
    cols = _folded_columns(w)
    mirror = (-torch.arange(h, device=phi.device)) % h
    col = phi[..., :, cols]
    col = 0.5 * (col - col[..., mirror, :])  # antisymmetric; 0 where mirror == index
    out = phi.clone()
    out[..., :, cols] = col
    return out


def symmetric_magnitude(r: torch.Tensor, w: int) -> torch.Tensor:
    """A magnitude symmetric along H on the folded columns (what a real image's spectrum is)."""
    h = r.shape[-2]
    cols = _folded_columns(w)
    mirror = (-torch.arange(h, device=r.device)) % h
    out = r.clone()
    out[..., :, cols] = 0.5 * (r[..., :, cols] + r[..., mirror, :][..., :, cols])
    return out


def _randn(shape: Sequence[int], seeds: Sequence[int], scale: float = 1.0) -> torch.Tensor:
    """One tensor per seed (so image k depends only on seeds[k]), stacked."""
    return torch.stack([torch.randn(*shape, generator=torch.Generator().manual_seed(int(s))) * scale for s in seeds])


class MacoImage:
    """K phase-only images over a fixed magnitude ``r`` (3 x H x W//2+1)."""

    default_optimizer = ("nadam", 1.0)

    def __init__(self, magnitude: torch.Tensor, size: tuple[int, int], seeds: Sequence[int],
                 device: torch.device | str = "cpu") -> None:
        h, w = size
        if tuple(magnitude.shape) != (3, h, w // 2 + 1):
            raise ValueError(f"magnitude of shape {tuple(magnitude.shape)} does not fit a {h} x {w} image "
                             f"(needs 3 x {h} x {w // 2 + 1}; see load_spectrum)")
        self.size = (h, w)
        self.magnitude = symmetric_magnitude(magnitude.float(), w).to(device)
        self.phase = _randn(self.magnitude.shape, seeds).to(device).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.phase]

    def spectrum(self) -> torch.Tensor:
        """The complex spectrum (K x 3 x H x W//2+1) of the image before standardisation."""
        phi = _hermitian_phase(_standardise(self.phase), self.size[1])
        return torch.polar(self.magnitude.expand_as(phi), phi)

    def spatial(self) -> torch.Tensor:
        """The image in the decorrelated colour space, before standardisation."""
        return torch.fft.irfft2(self.spectrum(), s=self.size)

    def images(self) -> torch.Tensor:
        return torch.sigmoid(recorrelate(_standardise(self.spatial())))

    def penalty(self, images: torch.Tensor) -> torch.Tensor | None:
        return None


class FourierImage:
    """K Lucid-style images: the full spectrum optimised, scaled by 1/f^decay."""

    default_optimizer = ("adam", 0.05)

    def __init__(self, size: tuple[int, int], seeds: Sequence[int], decay: float = 1.0, init_std: float = 0.01,
                 device: torch.device | str = "cpu") -> None:
        h, w = size
        self.size = (h, w)
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        freq = (fy ** 2 + fx ** 2).sqrt()
        self.scale = (1.0 / freq.clamp_min(1.0 / max(h, w)) ** decay * (h * w) ** 0.5).to(device)
        self.coeffs = _randn((3, h, w // 2 + 1, 2), seeds, init_std).to(device).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.coeffs]

    def images(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.coeffs) * self.scale
        x = torch.fft.irfft2(spec, s=self.size) / 4.0  # Lucid's constant
        return torch.sigmoid(recorrelate(x))

    def penalty(self, images: torch.Tensor) -> torch.Tensor | None:
        return None


class AccentuationImage:
    """K images optimised in phase from seed images (K x 3 x H x W in [0, 1]) with a closeness penalty."""

    default_optimizer = ("nadam", 0.1)

    def __init__(self, seed_images: torch.Tensor, closeness: float = 1.0, device: torch.device | str = "cpu") -> None:
        if seed_images.ndim != 4 or seed_images.shape[1] != 3:
            raise ValueError(f"seed images must be K x 3 x H x W, got {tuple(seed_images.shape)}")
        self.size = tuple(int(s) for s in seed_images.shape[-2:])
        self.seed_images = seed_images.float().clamp(0, 1).to(device)
        z = decorrelate(torch.logit(self.seed_images.clamp(0.005, 0.995)))
        spec = torch.fft.rfft2(z)
        self.magnitude = spec.abs()
        self.phase = spec.angle().requires_grad_(True)
        self.closeness = float(closeness)

    def parameters(self) -> list[torch.Tensor]:
        return [self.phase]

    def images(self) -> torch.Tensor:
        # Unlike MACO no standardisation: step 0 must reproduce the seed.
        return torch.sigmoid(recorrelate(torch.fft.irfft2(torch.polar(self.magnitude, self.phase), s=self.size)))

    def penalty(self, images: torch.Tensor) -> torch.Tensor | None:
        if self.closeness == 0:
            return None
        return self.closeness * (images - self.seed_images).pow(2).mean((1, 2, 3)).sum()
