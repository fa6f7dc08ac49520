"""ChallengeDataset (on the fly, workers), write_challenge / ChallengeFolder, `harmonia data challenge`."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import harmonia.challenges as hc
from harmonia.challenges.dataset import ChallengeDataset
from harmonia.challenges.writer import ChallengeFolder, write_challenge
from harmonia.cli.main import app
from harmonia.data import HarmoniaDataset
from harmonia.data.format import DatasetFormatError


def test_dataset_items_and_workers_are_reproducible():
    gen = hc.create("featuretracker", seed=1, frames=8)
    ds = ChallengeDataset(gen, length=8)
    item = ds[3]
    assert item["video"].shape == (3, 8, 32, 32) and item["masks"].shape == (8, 32, 32)
    assert torch.equal(item["video"], torch.from_numpy(gen[3]["video"]).permute(3, 0, 1, 2).float() / 255)
    serial = [b["video"] for b in torch.utils.data.DataLoader(ds, batch_size=4)]
    parallel = [b["video"] for b in torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel))
    assert not torch.equal(serial[0][0], serial[0][1])  # distinct samples
    with pytest.raises(ValueError, match="length must be in"):
        ChallengeDataset(gen, length=len(gen) + 1)


def test_write_read_resume_and_refuse(tmp_path):
    gen = hc.create("featuretracker", seed=0, frames=6)
    root = write_challenge(gen, tmp_path / "ft", n=6, split="test")
    info = json.loads((root / "harmonia.json").read_text())
    assert info["synthetic"] is True and info["extra"]["modality"] == "video"
    assert info["extra"]["challenge"]["shapes"] == "in"
    ds = ChallengeFolder(root, "test")
    assert len(ds) == 6
    for i in (0, 5):
        assert np.array_equal(ds[i]["video"], gen[i]["video"]) and np.array_equal(ds[i]["masks"], gen[i]["masks"])
        assert ds[i]["label"] == gen[i]["label"] and ds[i]["meta"]["target"] == gen[i]["meta"]["target"]
    # an interrupted write (index gone, one sample gone) resumes to the same files
    (root / "test" / "index.csv").unlink()
    (root / "test" / "meta" / "000004.json").unlink()
    before = (root / "test" / "videos" / "000001.npy").stat().st_mtime_ns
    write_challenge(gen, root, n=6, split="test")
    assert (root / "test" / "videos" / "000001.npy").stat().st_mtime_ns == before  # kept, not redrawn
    assert ChallengeFolder(root, "test")[4]["meta"]["target"] == gen[4]["meta"]["target"]
    with pytest.raises(ValueError, match="other settings"):
        write_challenge(hc.create("featuretracker", seed=0, frames=6, colors="out"), root, n=6, split="test")
    write_challenge(hc.create("featuretracker", seed=0, frames=6, colors="out"), root, n=2, split="test", overwrite=True)
    assert len(ChallengeFolder(root, "test")) == 2
    with pytest.raises(DatasetFormatError, match="challenge dataset"):
        HarmoniaDataset(root)
    with pytest.raises(ValueError, match="holds challenge 'featuretracker'"):
        write_challenge(hc.create("pathtracker"), root, n=2, split="x")


def test_cli_data_challenge(tmp_path):
    runner = CliRunner()
    out = tmp_path / "pt"
    res = runner.invoke(app, ["data", "challenge", "pathtracker", "--out", str(out), "--n", "4",
                              "--set", "frames=32", "--set", "distractors=0"])
    assert res.exit_code == 0, res.output
    assert "SYNTHETIC" in res.output
    ds = ChallengeFolder(out)
    assert ds[1]["video"].shape == (32, 32, 32, 3) and ds[1]["meta"]["trajectories"].__len__() == 2
    bad = runner.invoke(app, ["data", "challenge", "pathtracker", "--out", str(out), "--set", "speed=0"])
    assert bad.exit_code == 2 and "error: speed must be" in bad.output
    unknown = runner.invoke(app, ["data", "challenge", "patht", "--out", str(out)])
    assert unknown.exit_code == 2 and "unknown challenge" in unknown.output


class _Squares(hc.Challenge):
    """A tiny image challenge (not registered): is there a bright square?"""

    modality = "image"
    name = "squares"

    def __init__(self, seed: int = 0, size: int = 8, length: int = 100) -> None:
        super().__init__(seed=seed, length=length, size=size)
        self.size = size

    def sample(self, rng, label, index):
        image = (rng.random((self.size, self.size)) * 100).astype(np.uint8)
        if label:
            image[2:4, 2:4] = 255
        return {"image": image, "label": label, "meta": {"noise_max": int(image.max())}}


def test_image_modality_round_trip(tmp_path):
    gen = _Squares(seed=3)
    root = write_challenge(gen, tmp_path / "sq", n=4)
    ds = ChallengeFolder(root)
    assert ds.modality == "image" and (root / "train" / "images" / "000001.png").is_file()
    for i in range(4):
        assert np.array_equal(ds[i]["image"], gen[i]["image"]) and ds[i]["meta"] == gen[i]["meta"]
    item = ChallengeDataset(gen, length=4)[1]
    assert item["image"].shape == (1, 8, 8) and float(item["image"].max()) == 1.0
