"""Device selection: the GPU when there is one, else the CPU."""

from __future__ import annotations

import os

import torch


def default_device() -> torch.device:
    """``cuda`` if available, else ``mps`` if available, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


DEVICE_CHOICES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` -> :func:`default_device`; anything else -> a ``torch.device``
    that exists on this machine.

    The one place a device option is checked: an unknown name, or a GPU this machine does
    not have, raises :class:`~harmonia.errors.UserError` before any work starts.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("tpu")
        Traceback (most recent call last):
        ...
        harmonia.errors.UserError: device 'tpu' is unknown; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'
    """
    from harmonia.errors import UserError

    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return default_device()
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device).strip().lower())
    except (RuntimeError, ValueError):
        raise UserError(f"device {str(device)!r} is unknown; use {DEVICE_CHOICES}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UserError(f"device {str(device)!r}: {why}; use 'cpu' or 'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise UserError(f"device {str(device)!r}: Apple MPS is not available here; use 'cpu' or 'auto'")
    elif dev.type != "cpu":
        raise UserError(f"device {str(device)!r}: harmonia runs on {DEVICE_CHOICES}")
    return dev


def default_num_workers(device: str | torch.device | None) -> int:
    """DataLoader worker processes to use by default: 0 on the CPU, up to 4 on an accelerator.

    On the CPU the model's forward and backward already use every core, and forking a
    worker makes the parent pay copy-on-write faults on its whole heap: measured on 2 cores,
    a forked idle worker cost EfficientNet-Lite0 about 2 s of extra time on its next batch
    of 16 saliency maps (a batch takes ~1 s), every evaluation or epoch that forks anew.
    Decoding a 224 px PNG takes ~2.5 ms against ~60 ms of forward + backward per image, so
    loading in the main process loses little. On a GPU, workers overlap decoding with it.

    Example:
        >>> default_num_workers("cpu")
        0
    """
    if resolve_device(device).type == "cpu":
        return 0
    return max(1, min(4, os.cpu_count() or 1))
