import os

# ViT double back-propagation on the CPU needs timm's fused attention off.
os.environ.setdefault("TIMM_FUSED_ATTN", "0")

import numpy as np
import pytest
import torch
import torch.nn as nn

from harmonia.data import DatasetWriter
from harmonia.models.wrapper import HarmoniaModel, Preprocessing

torch.set_num_threads(min(2, torch.get_num_threads()))


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(autouse=True)
def _default_store_in_tmp(tmp_path_factory, monkeypatch):
    """Commands run without --store write the default store: keep it out of the working folder."""
    if "HARMONIA_STORE" not in os.environ:
        monkeypatch.setenv("HARMONIA_STORE", str(tmp_path_factory.mktemp("default-store") / "harmonia-results.sqlite"))


@pytest.fixture
def tiny_model() -> HarmoniaModel:
    torch.manual_seed(0)
    return HarmoniaModel(TinyCNN(), "tiny", Preprocessing(input_size=(32, 32)), class_names=["a", "b", "c"]).eval()


def write_tiny_dataset(root, n: int = 10, size: int = 32, constant_map_ids=(), split: str = "test", subjects: int = 0):
    """A small dataset in harmonia's format (SYNTHETIC random images and smooth maps)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    with DatasetWriter(root, split, name="tiny", synthetic=True, classes=["a", "b", "c"],
                       description="SYNTHETIC test data") as w:
        for i in range(n):
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            m = gaussian_filter(rng.random((size, size)), 3).astype(np.float32)
            if i in constant_map_ids:
                m = np.ones_like(m)
            subj = None
            if subjects:
                subj = np.stack([np.clip(m + 0.05 * rng.standard_normal(m.shape), 0, None) for _ in range(subjects)]).astype(np.float32)
            w.add(f"im{i:03d}", img, m, label=i % 3, subjects=subj)
    return root


@pytest.fixture
def tiny_dataset(tmp_path):
    return write_tiny_dataset(tmp_path / "data", constant_map_ids=(3,))
