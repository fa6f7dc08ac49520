"""``harmonia challenge probe 3dpc``: the 3D-PC linear-probe (or fine-tune) protocol for any model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from harmonia.cli.common import console, reflow, user_errors

PROBE_HELP = """Run the 3D-PC protocol on a model and place it on the published 327-model scatter.

BENCHMARK is 3dpc. --data is a 3D-PC folder in the released layout
(<task>/<split>/<0|1>/*.png with splits train, val, test, human and the label CSVs) or in the
Hugging Face parquet layout (<config>/<split>-*.parquet). The linear probe follows the paper:
pooled pre-logit features (short side resized to the model's input size, no crop), extracted
once and cached in the results store (a re-run reads them back), a BatchNorm -> Dropout(0.3)
-> Linear head trained with AdamW (lr 5e-5, weight decay 1e-4, batch 16, 30 epochs), and test
and human-set accuracy at the epoch of best validation accuracy. --protocol finetune trains
the whole backbone with the same head and optimiser (cosine, 3 warm-up epochs, min lr 1e-6):
a GPU job. With --out: results.json, scatter-TASK.png (the model among the published ones,
ImageNet top-1 vs accuracy; the top-1 comes from the shipped tables or --imagenet-top1) and
report.html (the table and the scatters in one page).

--make-synthetic DIR writes SYNTHETIC 3D-PC-like scenes (ball, object, viewer; labels from
the geometry) in the released layout, to try the protocol without the real data.

Examples:

  harmonia challenge probe 3dpc --make-synthetic sim-3dpc

  harmonia challenge probe 3dpc --model efficientnet_lite0 --data sim-3dpc --task depth --out reports/3dpc-sim

  harmonia challenge probe 3dpc --model timm:convnext_base.fb_in22k_ft_in1k --data 3D-PC/ --out reports/3dpc --device cuda

  harmonia challenge probe 3dpc --model timm:resnet50.a1h_in1k --data 3D-PC-hf/ --protocol finetune --task perspective --device cuda
"""


@user_errors
def challenge_probe_command(
    benchmark: str = typer.Argument(..., help="The benchmark: 3dpc."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or checkpoint (harmonia models load).", show_default="none (required unless --make-synthetic)"),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="3D-PC folder (release or parquet layout).", show_default="none (required unless --make-synthetic)"),
    tasks: Optional[List[str]] = typer.Option(None, "--task", "-t", help="perspective (VPT), depth or vpt-strategy; repeatable.", show_default="perspective and depth when present"),
    protocol: str = typer.Option("linear", "--protocol", help="linear (probe, as published) or finetune."),
    epochs: int = typer.Option(30, "--epochs", min=1, help="Epochs (published: 30)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Feature-extraction batch size (the probe's own is 16)."),
    layout: Optional[str] = typer.Option(None, "--layout", help="release or parquet.", show_default="detected"),
    imagenet_top1: Optional[float] = typer.Option(None, "--imagenet-top1", help="The model's ImageNet top-1 (%) for the scatter.", show_default="from the shipped tables"),
    seed: int = typer.Option(0, "--seed", help="Seed of the head's initialisation and batch order."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for results.json and scatter-TASK.png.", show_default="none (table only)"),
    store_path: Optional[Path] = typer.Option(None, "--store", help="Results store.", show_default="$HARMONIA_STORE or ./harmonia-results.sqlite"),
    make_synthetic: Optional[Path] = typer.Option(None, "--make-synthetic", help="Write SYNTHETIC 3D-PC-like scenes here (release layout) and exit.", show_default="none"),
    synthetic_size: int = typer.Option(128, "--synthetic-size", min=16, help="Side of the synthetic images, px."),
) -> None:
    from harmonia.challenges.threedpc.data import TASKS, available_splits, detect_layout, task_name
    from harmonia.challenges.threedpc.probe import FinetuneConfig, ProbeConfig, finetune_3dpc, linear_probe_3dpc
    from harmonia.challenges.threedpc.tables import HUMANS, LICENCE, imagenet_top1 as lookup_top1
    from harmonia.challenges.threedpc.tables import rank_among, scatter_png, summary
    from harmonia.cli.progress import progress_callback
    from harmonia.models import load
    from harmonia.store import ResultStore
    from harmonia.utils.io import atomic_write_bytes, atomic_write_text

    if benchmark.strip().lower().replace("-", "") not in ("3dpc", "threedpc"):
        raise ValueError(f"unknown probe benchmark {benchmark!r}; available: 3dpc")
    if make_synthetic is not None:
        from harmonia.challenges.threedpc.scenes import DEFAULT_SIZES, write_release

        with progress_callback("writing SYNTHETIC 3D-PC-like scenes") as update:
            root = write_release(make_synthetic, size=synthetic_size, progress=update)
        console.print(f"[yellow]SYNTHETIC[/] 3D-PC-like scenes (not the 3D-PC) in {root}: perspective/ and depth/, "
                      f"splits {DEFAULT_SIZES}", highlight=False)
        return
    if model is None or data is None:
        raise ValueError("give --model and --data (or --make-synthetic DIR)")
    if protocol not in ("linear", "finetune"):
        raise ValueError(f"--protocol must be linear or finetune, got {protocol!r}")
    layout = layout or detect_layout(data)
    names = [task_name(t) for t in tasks] if tasks else [t for t in ("perspective", "depth")
                                                          if "train" in available_splits(data, t, layout)]
    if not names:
        raise FileNotFoundError(f"{data}: no 3D-PC task with a train split ({', '.join(TASKS)})")
    synthetic = (Path(data) / "SYNTHETIC.json").exists()
    net = load(model, device=device)
    top1 = imagenet_top1 if imagenet_top1 is not None else lookup_top1(model.removeprefix("timm:"))
    results = []
    with ResultStore(store_path) as store:
        for task in names:
            with progress_callback(f"3D-PC {task}: {protocol} ({'SYNTHETIC' if synthetic else 'data'})") as update:
                cb = lambda stage, done, total: update(done, total)  # noqa: E731
                if protocol == "linear":
                    res = linear_probe_3dpc(net, data, task, store=store, layout=layout, batch_size=batch_size,
                                            config=ProbeConfig(epochs=epochs, seed=seed), progress=cb)
                else:
                    res = finetune_3dpc(net, data, task, FinetuneConfig(epochs=epochs, seed=seed), layout=layout,
                                        progress=cb)
            res["synthetic"] = synthetic
            res["imagenet_top1"] = top1
            results.append(res)
    table = Table(title=f"3D-PC {protocol} protocol: {model}" + (" on SYNTHETIC scenes" if synthetic else ""))
    for col in ("task", "best epoch", "val", "test", "human set", "published mean / max", "humans", "rank"):
        table.add_column(col, justify="right" if col != "task" else "left")
    for r in results:
        acc = r["accuracy"]
        known = r["task"] in HUMANS
        pub = summary(protocol, r["task"]) if known else None
        rank = rank_among(protocol, r["task"], acc["test"]) if known else None
        table.add_row(r["task"], str(r["best_epoch"]), f"{acc['val']:.3f}", f"{acc['test']:.3f}",
                      f"{acc['human']:.3f}" if "human" in acc else "-",
                      f"{pub['mean']:.1f}% / {pub['max']:.1f}%" if pub else "-",
                      f"{HUMANS[r['task']]:.1f}%" if known else "-",
                      f"{rank['models_above']} of {pub['n']} above" if rank else "-")
    console.print(table)
    if protocol == "linear":
        hits = sum(r.get("feature_cache_hits", 0) for r in results)
        console.print(f"features: {hits} split(s) read from the cache; top-1 for the scatter: "
                      f"{'unknown' if top1 is None else f'{top1:.2f}%'}", highlight=False)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.json", json.dumps({"licence": LICENCE, "results": results}, indent=1,
                                                           default=str) + "\n")
        written = ["results.json"]
        for r in results:
            if r["task"] in HUMANS:
                label = f"{model}{' (SYNTHETIC data)' if synthetic else ''}"
                png = scatter_png(protocol, r["task"], [{"name": label, "imagenet_top1": top1,
                                                          "accuracy": r["accuracy"]["test"]}])
                atomic_write_bytes(out / f"scatter-{r['task']}.png", png)
                written.append(f"scatter-{r['task']}.png")
        from harmonia.challenges.threedpc.tables import report_html
        from harmonia.report.html import write_html

        write_html(out / "report.html", report_html(results, model, protocol, top1, synthetic))
        written.append("report.html")
        console.print(f"wrote {', '.join(str(out / w) for w in written)}", highlight=False)


def register(challenge: typer.Typer) -> None:
    """Add ``harmonia challenge probe`` to the ``challenge`` group."""
    challenge.command("probe", help=reflow(PROBE_HELP))(challenge_probe_command)
