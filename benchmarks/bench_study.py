"""The study runner's overhead, its local parallelism and (with a GPU) its throughput.

1. Study runner at 1 worker vs the same measurements called directly in a loop (load each
   model, ``harmonia.measurements.run`` into a fresh store): ratio = direct time / study
   time (target >= 0.95: planning, the ledger and the status checks should cost little).
2. ``--workers 2`` vs 1 on 4 small models (ratio = 1-worker time / 2-worker time; this
   machine has 2 cores, shared).
3. With a GPU: models per minute for a 10-model alignment study on 1,000 images at 224 px
   (skipped without CUDA; the models are random-init timm/built-in architectures, since
   only the EfficientNet-Lite weights are offline; throughput does not depend on weights).

The data are SYNTHETIC (harmonia's ClickMe simulator). Each side is timed ``--repeats``
times, interleaved, and the best run of each is kept.

Run: .venv/bin/python benchmarks/bench_study.py [--images 64] [--repeats 2] [--gpu-only]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

SMALL = """
[study]
name = "bench"
batch_size = 32
device = "{device}"
{models}
[[data]]
name = "sim"
path = "{data}"
split = "test"
limit = {images}

[[measurements]]
kind = "alignment"
explainer = "saliency:reducer=max_abs"
ceiling = "none"
[[measurements]]
kind = "accuracy"
"""


def _models(specs: list[tuple[str, str, str]]) -> str:
    return "".join(f'\n[[models]]\nname = "{n}"\nlabel = "{label}"\npretrained = false\nnum_classes = 8\n{extra}\n'
                   for n, label, extra in specs)


def _study_file(folder: Path, data: Path, specs: list[tuple[str, str, str]], images: int, device: str = "cpu") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "bench.toml"
    p.write_text(SMALL.format(models=_models(specs), data=data, images=images, device=device))
    return p


def _direct(study_path: Path, store_path: Path) -> float:
    """The same tasks called directly: load, build the measurement, run into a store."""
    from harmonia.data import HarmoniaDataset
    from harmonia.measurements import run
    from harmonia.models import load
    from harmonia.store import ResultStore
    from harmonia.studies import load_study
    from harmonia.studies.measures import build_measurement

    study = load_study(study_path)
    t = time.perf_counter()
    with ResultStore(store_path) as store:
        d = study.data[0]
        ds = HarmoniaDataset(d.path, d.split)
        for spec in study.models:
            model = load(spec.name, pretrained=False, num_classes=spec.num_classes, seed=0, **spec.kwargs)
            for ms in study.measurements:
                m = build_measurement(ms.kind, ms.settings, ds, store, study.device)
                m.limit = d.limit
                run(m, model, ds, store=store, batch_size=study.batch_size)
    return time.perf_counter() - t


def _study(study_path: Path, workers: int = 1) -> float:
    from harmonia.studies import load_study, run_study

    study = load_study(study_path)
    t = time.perf_counter()
    summary = run_study(study, workers=workers, threads=1 if workers > 1 else None)
    assert summary["failed"] == 0, summary
    return time.perf_counter() - t


def _simulate(root: Path, n: int, size: int) -> Path:
    from harmonia.humans.simulate import SimulationConfig, simulate_from_config

    out = root / f"sim-{size}"
    simulate_from_config(out, SimulationConfig(n_train=8, n_test=n, image_size=size, n_subjects=2), progress=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--gpu-only", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-study-"))
    if not args.gpu_only:
        torch.set_num_threads(2)
        data = _simulate(root, args.images, 64)
        specs = [("small_cnn", f"cnn-w{w}", f"kwargs = {{ width = {w} }}") for w in (8, 12, 16, 24)]
        best_direct = best_study = best_1 = best_2 = float("inf")
        for r in range(args.repeats):
            best_direct = min(best_direct, _direct(_study_file(root / f"d{r}", data, specs, args.images),
                                                   root / f"d{r}" / "direct.sqlite"))
            best_study = min(best_study, _study(_study_file(root / f"s{r}", data, specs, args.images)))
        print(f"study runner vs direct calls, 4 models x 2 measurements x {args.images} images, 1 worker: "
              f"direct {best_direct:.2f} s, study {best_study:.2f} s, ratio {best_direct / best_study:.3f} (target >= 0.95)")
        for r in range(args.repeats):
            best_1 = min(best_1, _study(_study_file(root / f"w1-{r}", data, specs, args.images), workers=1))
            best_2 = min(best_2, _study(_study_file(root / f"w2-{r}", data, specs, args.images), workers=2))
        print(f"--workers 2 vs 1 on 4 small models: 1 worker {best_1:.2f} s, 2 workers {best_2:.2f} s, "
              f"speed-up {best_1 / best_2:.2f}x (2 shared cores; spawning 2 interpreters included)")
    if torch.cuda.is_available():
        data = _simulate(root, 1000, 224)
        names = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "timm:resnet18", "timm:resnet50",
                 "timm:convnext_tiny", "timm:vit_small_patch16_224", "timm:efficientnet_b0", "timm:regnety_016",
                 "timm:deit_tiny_patch16_224"]
        specs = [(n, n.replace(":", "-"), "") for n in names]
        p = _study_file(root / "gpu", data, specs, 1000, device="cuda")
        p.write_text(p.read_text().replace('[[measurements]]\nkind = "accuracy"\n', ""))
        seconds = _study(p)
        print(f"GPU ({torch.cuda.get_device_name()}): 10-model alignment study, 1,000 images at 224 px: "
              f"{seconds:.1f} s, {10 / seconds * 60:.1f} models per minute")
    else:
        print("GPU throughput: skipped (no CUDA device here)")


if __name__ == "__main__":
    main()
