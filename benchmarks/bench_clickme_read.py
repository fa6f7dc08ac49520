"""ClickMe shard read throughput vs raw JPEG decode of the same images.

Writes N harmonization-layout records (JPEG image 256 x 256 cut at random from real
photos of scikit-image / scikit-learn, JPEG heatmap of smooth blobs, label) into a few
shards in a temporary folder, then measures images/s through ``ClickMeDataset`` + a
DataLoader with 0, 1 and 2 workers, against PIL decoding the very same JPEG bytes
(stored as plain .jpg files) through a DataLoader with the same worker counts:

* ``decode image``: the image JPEG only -> uint8 tensor (the strict baseline);
* ``decode img+map``: both JPEGs of each record -> uint8 tensors (the same decoding
  work the reader has to do);
* ``img+map->float``: both, then float32 image in [0, 1] and float map (the reader's
  output contract without the TFRecord layer: isolates framing/CRC/protobuf cost);
* ``tv img+map``: both JPEGs through ``torchvision.io.decode_jpeg`` (libjpeg-turbo, the
  decoder the reader itself uses; same pixels as PIL, faster): the strictest baseline.

Reader rows: ``ClickMe none`` / ``ClickMe release`` are the float32 outputs;
``ClickMe uint8`` is ``output="uint8"`` (decoded pixels only, what is compared with raw
decoding); ``uint8+batch release`` adds the release preprocessing done per batch in the
main process with :meth:`ClickMeDataset.finish_batch` (on a GPU it runs on the device).

The reader is timed with ``preprocess="none"`` (framing, CRC32C checks, protobuf
parsing, decoding, float conversion) for the ratio (target >= 0.8), and with the
release's preprocessing (resize to 224, map blur at 64) separately, plus the
preprocessing alone per item. Every variant runs through a fresh DataLoader, the
variants interleaved, best of ``--repeats`` epochs, warm page cache. Besides wall-clock
images/s, images per CPU-second (this process + its workers) are printed: on a shared,
busy machine wall time swings with other load, CPU time much less.

Run: .venv/bin/python benchmarks/bench_clickme_read.py [--n 512] [--workers 0 1 2]
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harmonia.data.clickme import ClickMeDataset
from harmonia.data.clickme_preprocess import ClickMePreprocess
from harmonia.data.convert import encode_harmonization_record
from harmonia.data.example import decode_example
from harmonia.data.tfrecord import TFRecordWriter


def photos() -> list[np.ndarray]:
    import skimage.data as sd

    out = [getattr(sd, n)() for n in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
                                      "hubble_deep_field", "retina")]
    try:
        from sklearn.datasets import load_sample_images

        out += list(load_sample_images().images)
    except Exception:  # pragma: no cover - scikit-learn is a dependency, but stay usable
        pass
    return [p[..., :3] for p in out if p.ndim == 3 and min(p.shape[:2]) >= 256]


def blob_map(rng: np.random.Generator, side: int = 256) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side]
    m = np.zeros((side, side))
    for _ in range(rng.integers(2, 6)):
        cy, cx, s = rng.integers(0, side), rng.integers(0, side), rng.uniform(8, 40)
        m += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return (255 * m / m.max()).astype(np.uint8)


def write_data(root: Path, n: int, shards: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    pics = photos()
    jpg_dir = root / "jpeg"
    jpg_dir.mkdir()
    per = -(-n // shards)
    files = []
    for s in range(shards):
        with TFRecordWriter(root / f"train-{s}.tfrecords") as w:
            for i in range(s * per, min(n, (s + 1) * per)):
                p = pics[i % len(pics)]
                y, x = rng.integers(0, p.shape[0] - 255), rng.integers(0, p.shape[1] - 255)
                crop = np.ascontiguousarray(p[y : y + 256, x : x + 256])
                rec = encode_harmonization_record(crop, blob_map(rng), int(i % 1000), quality=90)
                w.write(rec)
                # the very same JPEG bytes as plain files for the baseline
                ex = decode_example(rec)
                (jpg_dir / f"{i:05d}.jpg").write_bytes(ex["image"][0])
                (jpg_dir / f"{i:05d}.map.jpg").write_bytes(ex["heatmap"][0])
                files.append(jpg_dir / f"{i:05d}.jpg")
    return files


class JpegFiles(torch.utils.data.Dataset):
    """Baselines: PIL-decode the .jpg files; ``mode``: "image" (uint8 image only), "both"
    (uint8 image and map) or "float" (both, then float32 image in [0, 1] and float map:
    the reader's output contract without the TFRecord layer)."""

    def __init__(self, files: list[Path], mode: str) -> None:
        self.files, self.mode = files, mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        if self.mode == "tv":
            return tuple(_tv_decode(f) for f in (self.files[i], self.files[i].with_suffix("").with_suffix(".map.jpg")))
        img = torch.from_numpy(np.array(Image.open(self.files[i]).convert("RGB")))
        if self.mode == "image":
            return img
        hm = torch.from_numpy(np.array(Image.open(self.files[i].with_suffix("").with_suffix(".map.jpg"))))
        if self.mode == "both":
            return img, hm
        return img.permute(2, 0, 1).contiguous().float().div_(255), hm.float()


def _tv_decode(path: Path) -> torch.Tensor:
    import warnings

    from torchvision.io import decode_jpeg

    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs (warns per call)
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data)


class Finished:
    """A ClickMe dataset whose batches are finished (release preprocessing) in the main process."""

    def __init__(self, ds: ClickMeDataset) -> None:
        self.ds = ds


def _count(batch) -> int:
    x = batch["image"] if isinstance(batch, dict) else (batch[0] if isinstance(batch, (list, tuple)) else batch)
    return x.shape[0]


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def epoch(dataset, workers: int, batch_size: int) -> tuple[float, float]:
    """One pass through a fresh DataLoader: (images per wall second, images per CPU second).

    CPU time counts this process and the workers (reaped at the end of the epoch), so it
    stays meaningful on a busy machine where wall time does not.
    """
    finish = dataset.ds.finish_batch if isinstance(dataset, Finished) else None
    loader = torch.utils.data.DataLoader(dataset.ds if finish else dataset, batch_size=batch_size,
                                         num_workers=workers)
    c0, t0 = _cpu(), time.perf_counter()
    n = sum(_count(finish(b) if finish else b) for b in loader)
    del loader
    gc.collect()  # make sure the workers are joined before reading their CPU time
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return n / wall, n / max(cpu, 1e-9)


def preprocess_cost(files: list[Path], repeats: int) -> float:
    """CPU milliseconds per item of the release preprocessing alone (decoded tensors in memory)."""
    pre = ClickMePreprocess()
    imgs = [torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1).float() for f in files[:64]]
    maps = [torch.from_numpy(np.array(Image.open(f.with_suffix("").with_suffix(".map.jpg")))).float()
            for f in files[:64]]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for im, m in zip(imgs, maps):
            pre(im, m)
        best = min(best, (time.process_time() - t0) / len(imgs))
    return best * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)  # one core per process, like DataLoader workers; fair to both sides

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = write_data(root, args.n, args.shards)
        shards = sorted(root.glob("train-*.tfrecords"))
        mb = sum(s.stat().st_size for s in shards) / 2**20
        print(f"{args.n} records in {len(shards)} shards ({mb:.1f} MiB), batch {args.batch_size}, "
              f"best of {args.repeats}, torch threads 1\n")
        variants = {
            "decode image": JpegFiles(files, "image"),
            "decode img+map": JpegFiles(files, "both"),
            "img+map->float": JpegFiles(files, "float"),
            "tv img+map": JpegFiles(files, "tv"),
            "ClickMe none": ClickMeDataset(shards, preprocess="none"),
            "ClickMe release": ClickMeDataset(shards),  # the release's preprocessing
            "ClickMe uint8": ClickMeDataset(shards, output="uint8"),
            "uint8+batch release": Finished(ClickMeDataset(shards, output="uint8")),
        }
        for w in args.workers:
            best = {k: (0.0, 0.0) for k in variants}
            for _ in range(args.repeats):  # interleaved, so load changes hit every variant alike
                for k, ds in variants.items():
                    wall, cpu = epoch(ds, w, args.batch_size)
                    best[k] = (max(best[k][0], wall), max(best[k][1], cpu))
            print(f"workers={w}")
            for k, (wall, cpu) in best.items():
                print(f"  {k:20s} {wall:7.0f} img/s wall   {cpu:7.0f} img per CPU-s")
            for ours, bases in (("ClickMe none", ("decode image", "decode img+map", "img+map->float")),
                                ("ClickMe uint8", ("decode img+map", "tv img+map")),
                                ("uint8+batch release", ("decode img+map", "tv img+map")),
                                ("ClickMe release", ("decode img+map", "tv img+map"))):
                ours_w, ours_c = best[ours]
                for base in bases:
                    bw, bc = best[base]
                    print(f"  ratio {ours:19s} / {base:15s} wall {ours_w / bw:5.2f}   CPU {ours_c / bc:5.2f}")
        print(f"\nrelease preprocessing alone: {preprocess_cost(files, args.repeats):.2f} CPU-ms/item "
              "(resize 256->224, map 256->64, blur 10x10, 64->224)")
        print("target: ClickMe read / raw JPEG decode of image + map >= 0.8")


if __name__ == "__main__":
    main()
