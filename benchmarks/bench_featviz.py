"""Feature visualization: harmonia.featviz side by side with Horama (PyTorch MACO), and
the transferability of class visualizations, MACO vs the Fourier baseline.

Same model (EfficientNet-Lite0, real ImageNet weights), image size, steps and crops for both
sides; Horama gets our shipped spectrum file (copied to the name it looks for in its working
directory, so it does not download) and our crop range (its ``box_size=(0, 0.5)`` draws sides
in [0.5, 1.0] because of the bound it adds) and the value range of Lite0's normalisation.

1. ``speed``: seconds per step for one objective (ours / Horama, target <= 1.0); and K = 16
   class objectives, ours in one batch vs 16 sequential calls (of ours and of Horama):
   throughput ratio (target >= 3). Horama's runs get the network with frozen parameters too.
1b. ``costs``: where a step's time goes: the network's forward + backward (as given, and
   folded + channels-last as harmonia runs it, and that in bfloat16 autocast with the relative
   error of its input gradient) and each crop resampling (min of repeats).
2. ``objective``: the class logit reached after the same number of steps, measured on the
   final images with one fixed protocol for both (the mean logit over the whole image and 8
   fixed crops), over --objective-seeds seeds (mean and standard error): ours / Horama (target >= 1).
3. ``transfer``: 10 ImageNet classes (listed below), one Lite0 visualization each with MACO,
   with Fourier on MACO's crops (``fourier``) and with Fourier on the transforms published with
   it (``fourier_lucid``), in one batch per method: the rank of the class in EfficientNet-Lite1 and
   Lite2 (top-5 counts), plausibility and a Frechet distance in Lite2's last-stage features
   against crops of the real photos of those classes that ship with scikit-image /
   scikit-learn (coffee, chelsea, flower, china, rocket). The images are cached in --out, so an
   interrupted run resumes.

Run (one thread, niced; about 30-60 min on a shared 2-core CPU):

  nice .venv/bin/python benchmarks/bench_featviz.py --out bench-featviz/

  nice .venv/bin/python benchmarks/bench_featviz.py --parts transfer --transfer-steps 128
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

CLASSES = {967: "espresso", 281: "tabby", 985: "daisy", 698: "palace", 657: "missile",
           1: "goldfish", 130: "flamingo", 323: "monarch", 340: "zebra", 951: "lemon"}
# the transfer part's methods: the Fourier baseline with MACO's crops (shared augmentation code),
# and with the transforms published with it (Lucid / Lucent: pad, jitter, scale, rotate, jitter)
METHODS = {"maco": {"method": "maco"}, "fourier": {"method": "fourier"},
           "fourier_lucid": {"method": "fourier", "augmentation": "lucid"}}
# real photos shipped with installed packages, by the class they show
PHOTOS = {967: "coffee", 281: "chelsea", 985: "flower", 698: "china", 657: "rocket"}


def horama_run(model, target: int, steps: int, size: int, crops: int, spectrum_file: Path, seed: int):
    """One Horama MACO run on Lite0's network (inputs normalised like our wrapper does)."""
    import horama

    net = model.net
    lo = float((0 - model._mean.flatten()[0]) / model._std.flatten()[0])
    hi = float((1 - model._mean.flatten()[0]) / model._std.flatten()[0])
    cwd = os.getcwd()
    # frozen parameters, as harmonia runs them: otherwise Horama's backward also computes every
    # weight gradient, a cost a careful user would not pay
    flags = [(q, q.requires_grad) for q in net.parameters()]
    for q, _ in flags:
        q.requires_grad_(False)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(spectrum_file, Path(tmp) / "spectrum_decorrelated.npy")
        os.chdir(tmp)
        try:
            torch.manual_seed(seed)
            img, alpha = horama.maco(lambda x: net(x)[:, target].mean(), total_steps=steps, image_size=size,
                                     model_input_size=model.input_size[0], crops_per_iteration=crops,
                                     box_size=(0.0, 0.5), noise=0.01 * (hi - lo), values_range=(lo, hi),
                                     device="cpu")
        finally:
            os.chdir(cwd)
            for q, flag in flags:
                q.requires_grad_(flag)
    return ((img.detach() - lo) / (hi - lo)).clamp(0, 1)


def fixed_protocol_logit(model, images: torch.Tensor, targets: list[int]) -> list[float]:
    """Mean logit of each image's class over the whole image and 8 fixed crops (same for all methods)."""
    from torchvision.ops import roi_align

    h = images.shape[-1]
    g = torch.Generator().manual_seed(1234)
    side = 0.5 + 0.5 * torch.rand(8, generator=g)
    c = 0.5 + 0.15 * torch.randn(8, 2, generator=g)
    c = torch.maximum(torch.minimum(c, 1 - side[:, None] / 2), side[:, None] / 2)
    out = []
    with torch.no_grad():
        for img, t in zip(images, targets):
            boxes = torch.stack([torch.zeros(8), (c[:, 1] - side / 2) * h, (c[:, 0] - side / 2) * h,
                                 (c[:, 1] + side / 2) * h, (c[:, 0] + side / 2) * h], 1)
            crops = roi_align(img[None], boxes, output_size=model.input_size, sampling_ratio=2, aligned=True)
            batch = torch.cat([torch.nn.functional.interpolate(img[None], size=model.input_size, mode="bilinear",
                                                               antialias=True, align_corners=False), crops])
            out.append(float(model(batch)[:, t].mean()))
    return out


def part_speed(lite0, args, spectrum_file: Path) -> dict:
    from harmonia.featviz import maco

    steps, size, crops = args.speed_steps, args.size, args.crops
    res: dict = {}
    maco(lite0, "class:967", steps=2, image_size=size, crops=crops)  # warm-up
    t = time.perf_counter()
    maco(lite0, "class:967", steps=steps, image_size=size, crops=crops)
    ours = (time.perf_counter() - t) / steps
    horama_run(lite0, 967, 2, size, crops, spectrum_file, 0)
    t = time.perf_counter()
    horama_run(lite0, 967, steps, size, crops, spectrum_file, 0)
    theirs = (time.perf_counter() - t) / steps
    res["step_s"] = {"harmonia": ours, "horama": theirs, "ratio_harmonia_over_horama": ours / theirs}
    targets = list(range(0, 1000, 1000 // args.k))[: args.k]
    kb = max(2, steps // 4)

    def run_batched() -> float:
        t = time.perf_counter()
        maco(lite0, [f"class:{c}" for c in targets], steps=kb, image_size=size, crops=crops)
        return time.perf_counter() - t

    # batched before and after the sequential runs (the best of the two): a changing load
    # on a shared machine then biases neither side
    first = run_batched()
    t = time.perf_counter()
    for i, c in enumerate(targets):
        maco(lite0, f"class:{c}", steps=kb, image_size=size, crops=crops, seed=i)
    sequential = time.perf_counter() - t
    t = time.perf_counter()
    for i, c in enumerate(targets):
        horama_run(lite0, c, kb, size, crops, spectrum_file, i)
    horama_seq = time.perf_counter() - t
    batched = min(first, run_batched())
    res["k16"] = {"k": args.k, "steps": kb, "batched_s": batched, "sequential_harmonia_s": sequential,
                  "sequential_horama_s": horama_seq, "throughput_vs_own_sequential": sequential / batched,
                  "throughput_vs_horama_sequential": horama_seq / batched}
    return res


def part_objective(lite0, args, spectrum_file: Path) -> dict:
    from harmonia.featviz import maco

    ours, theirs = [], []
    for s in range(args.objective_seeds):
        r = maco(lite0, "class:967", steps=args.objective_steps, image_size=args.size, crops=args.crops, seed=s)
        ours += fixed_protocol_logit(lite0, r.images, [967])
        h = horama_run(lite0, 967, args.objective_steps, args.size, args.crops, spectrum_file, s)
        theirs += fixed_protocol_logit(lite0, h[None], [967])
    a, b = float(np.mean(ours)), float(np.mean(theirs))
    # the seed-to-seed spread is large (a standard deviation of 1-2 logits at 48 steps): the
    # standard error says whether a gap between the means is more than that
    se = [float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None for v in (ours, theirs)]
    return {"steps": args.objective_steps, "harmonia": ours, "horama": theirs, "mean_harmonia": a, "mean_horama": b,
            "se_harmonia": se[0], "se_horama": se[1], "ratio_mean": a / b if a > 0 and b > 0 else None}


def part_costs(lite0, args) -> dict:
    """Where a step's time goes (4 crops): the network forward + backward for the input gradient,
    as given and folded + channels-last, and each crop resampling; interleaved, min of repeats."""
    from harmonia.featviz.augment import _resample
    from harmonia.models.fold_bn import fold_batchnorm

    net = lite0.net
    flags = [(q, q.requires_grad) for q in net.parameters()]
    for q, _ in flags:
        q.requires_grad_(False)  # input gradients only, as both implementations are run
    fast = fold_batchnorm(net, torch.rand(2, 3, *lite0.input_size))[0].to(memory_format=torch.channels_last)
    crops = args.crops
    image = torch.rand(1, 3, args.size, args.size)
    g = torch.Generator().manual_seed(0)
    side = args.size * (0.5 + 0.5 * torch.rand(crops, generator=g))
    x1 = (args.size - side) * torch.rand(crops, generator=g)
    y1 = (args.size - side) * torch.rand(crops, generator=g)
    boxes = torch.stack([torch.zeros(crops), x1, y1, x1 + side, y1 + side], 1)

    probe = torch.rand(crops, 3, *lite0.input_size, generator=g)

    def network(n: torch.nn.Module, channels_last: bool, bf16: bool = False) -> torch.Tensor:
        x = probe.clone()
        x = (x.contiguous(memory_format=torch.channels_last) if channels_last else x).requires_grad_(True)
        # bfloat16 autocast: this CPU family has AVX512-BF16, so it is the one cheaper arithmetic on offer
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = n(x)[:, 967].float().sum()
        y.backward()
        return x.grad

    def resample(how: str) -> None:
        x = image.clone().requires_grad_(True)
        _resample(x, boxes, tuple(lite0.input_size), how).pow(2).sum().backward()

    exact = network(fast, True)
    bf16_error = float((network(fast, True, bf16=True) - exact).norm() / exact.norm())
    tasks = {"network_as_given": lambda: network(net, False), "network_folded_channels_last": lambda: network(fast, True),
             "network_folded_channels_last_bf16": lambda: network(fast, True, bf16=True),
             **{f"resample_{h}": (lambda h=h: resample(h)) for h in ("box", "bilinear", "bicubic", "horama")}}
    times: dict = {k: [] for k in tasks}
    for f in tasks.values():
        f()
    for _ in range(args.cost_repeats):
        for k, f in tasks.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    for q, flag in flags:
        q.requires_grad_(flag)
    return {"crops": crops, "bf16_input_gradient_relative_error": bf16_error, "min_s": {k: min(v) for k, v in times.items()},
            "median_s": {k: float(np.median(v)) for k, v in times.items()}}


def real_photo_crops(size: int, per_photo: int = 16) -> dict[int, torch.Tensor]:
    """Random square crops (50-100 % of the short side) of the packaged photos, per class."""
    from harmonia.featviz.spectrum import _random_square_crops, default_spectrum_photos

    reads = dict(default_spectrum_photos())
    rng = np.random.default_rng(0)
    out = {}
    for c, name in PHOTOS.items():
        img = torch.from_numpy(reads[name]().copy()).permute(2, 0, 1).float() / 255
        out[c] = _random_square_crops(img, size, per_photo, rng)
    return out


def part_transfer(lites, args) -> dict:
    from harmonia.featviz import visualize
    from harmonia.featviz.scores import frechet_distance, plausibility, pooled_features, transferability

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    targets = list(CLASSES)
    real = real_photo_crops(args.size)
    real_feats = {c: pooled_features(lites[2], x) for c, x in real.items()}
    from harmonia.attribution import find_target_layer

    layer = find_target_layer(lites[2]).name
    res: dict = {"classes": CLASSES, "steps": args.transfer_steps, "crops": args.crops, "size": args.size,
                 "feature_space": f"EfficientNet-Lite2, output of {layer} (its last spatial stage, "
                                  f"find_target_layer), averaged over positions ({real_feats[967].shape[1]}-d)"}
    for method in args.methods.split(","):
        cache = out / f"transfer_{method}_{args.transfer_steps}.npy"
        if cache.is_file():
            images = torch.from_numpy(np.load(cache))
            seconds = None
        else:
            t = time.perf_counter()
            r = visualize(lites[0], [f"class:{c}" for c in targets], steps=args.transfer_steps,
                          image_size=args.size, crops=args.crops, seed=0, **METHODS[method],
                          progress=lambda d, n, _m=method: print(f"  {_m} step {d}/{n}", flush=True) if d % 16 == 0 else None)
            seconds = time.perf_counter() - t
            images = r.images
            np.save(cache, images.numpy())
        from harmonia.featviz.render import save_png, to_uint8

        for img, c in zip(images, targets):
            save_png(out / f"{method}_{c}_{CLASSES[c]}.png", to_uint8(img))
        tr = transferability(images, targets, {"efficientnet_lite1": lites[1], "efficientnet_lite2": lites[2]})
        tr0 = transferability(images, targets, {"efficientnet_lite0": lites[0]})
        feats = pooled_features(lites[2], images)
        with_photo = [i for i, c in enumerate(targets) if c in real_feats]
        plaus = plausibility(feats[with_photo], real_feats, [targets[i] for i in with_photo])
        fd = frechet_distance(feats[with_photo], torch.cat([real_feats[targets[i]] for i in with_photo]))
        res[method] = {"seconds": seconds, "ranks": tr["ranks"], "lite0_ranks": tr0["ranks"]["efficientnet_lite0"],
                       "top5_in_both": int(sum(tr["in_all"])), "top1": tr["top1"], "top5": tr["topk"],
                       "plausibility": dict(zip([CLASSES[targets[i]] for i in with_photo], plaus)),
                       "plausibility_mean": float(np.mean(plaus)), "frechet_distance": fd}
        print(json.dumps({method: res[method]}), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="speed,costs,objective,transfer")
    ap.add_argument("--out", default="bench-featviz")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--crops", type=int, default=4)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--speed-steps", type=int, default=8)
    ap.add_argument("--cost-repeats", type=int, default=5)
    ap.add_argument("--objective-steps", type=int, default=64)
    ap.add_argument("--objective-seeds", type=int, default=6)
    ap.add_argument("--transfer-steps", type=int, default=128)
    ap.add_argument("--methods", default="maco,fourier,fourier_lucid",
                    help=f"transfer: methods to run, of {', '.join(METHODS)} (their images are cached in --out)")
    args = ap.parse_args()
    from harmonia.featviz.spectrum import default_spectrum_path
    from harmonia.models import load

    lites = {n: load(f"efficientnet_lite{n}").eval() for n in (0, 1, 2)}
    parts = args.parts.split(",")
    results: dict = {"settings": vars(args), "torch_threads": torch.get_num_threads()}
    if "speed" in parts:
        results["speed"] = part_speed(lites[0], args, default_spectrum_path())
        print(json.dumps({"speed": results["speed"]}), flush=True)
    if "costs" in parts:
        results["costs"] = part_costs(lites[0], args)
        print(json.dumps({"costs": results["costs"]}), flush=True)
    if "objective" in parts:
        results["objective"] = part_objective(lites[0], args, default_spectrum_path())
        print(json.dumps({"objective": results["objective"]}), flush=True)
    if "transfer" in parts:
        results["transfer"] = part_transfer(lites, args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"results_{'_'.join(parts)}.json").write_text(json.dumps(results, indent=1))
    print("\n== ratios ==")
    if "speed" in results:
        s = results["speed"]
        print(f"step time harmonia / horama: {s['step_s']['ratio_harmonia_over_horama']:.2f} (target <= 1.0)")
        print(f"K={s['k16']['k']} batched vs sequential: {s['k16']['throughput_vs_own_sequential']:.2f}x own calls, "
              f"{s['k16']['throughput_vs_horama_sequential']:.2f}x horama calls (target >= 3)")
    if "objective" in results:
        o = results["objective"]
        ratio = f"{o['ratio_mean']:.2f}" if o["ratio_mean"] is not None else "n/a (a mean is <= 0)"
        print(f"class logit reached at {o['steps']} steps, {len(o['harmonia'])} seeds: harmonia {o['mean_harmonia']:.2f} "
              f"(se {o['se_harmonia'] or 0:.2f}), horama {o['mean_horama']:.2f} (se {o['se_horama'] or 0:.2f}), "
              f"ratio {ratio} (target >= 1)")
    if "transfer" in results:
        t = results["transfer"]
        for m in (m for m in METHODS if m in t):
            print(f"{m}: {t[m]['top5_in_both']}/10 classes in Lite1 and Lite2 top-5; plausibility {t[m]['plausibility_mean']:.3f}; "
                  f"Frechet distance {t[m]['frechet_distance']:.1f}")


if __name__ == "__main__":
    main()
