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


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` -> :func:`default_device`; anything else -> ``torch.device``."""
    if device is None or device == "auto":
        return default_device()
    return torch.device(device)


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
