"""The study report: trade-off figures (PNG + SVG beside the page) and a self-contained HTML page.

Each panel puts an accuracy on x (ImageNet top-1 for ImageNet models: measured, else timm's
published value; accuracy on the study's data for the others, in their own panel) against
a human-alignment number on y: alignment with human feature maps, perturbation tolerance
(median minimal L2) and adversarial alignment. When the study measured neural scores
(``kind = "neural"``), their panels put the neural predictivity (divided by the recording's
ceiling when it has one; and the neural-map alignment of spatial recordings) on y against
accuracy and against alignment with human maps. Every panel shows the points coloured by
family, a least-squares trend, Spearman's rho with a 95% bootstrap CI, the Pareto front
(no model better on both axes) and an arrow from each baseline to its harmonized model.
Points carry the model's name in an SVG ``<title>`` (shown on hover); the page's table is
built from embedded JSON and sorts by any column.

Example:
    >>> rho, lo, hi = spearman_ci([1, 2, 3, 4, 5], [1, 3, 2, 5, 4], n_boot=200)
    >>> round(rho, 2), lo <= rho <= hi
    (0.8, True)
    >>> pareto_front([(1, 1), (2, 0.5), (0.5, 2), (0.4, 0.4)])
    [(0.5, 2), (1, 1), (2, 0.5)]
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harmonia.studies.spec import Study

N_BOOT = 2000


def spearman_ci(x: Sequence[float], y: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's rho and a 95% percentile bootstrap CI (resampling models with replacement)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if np.unique(x[i]).size > 1 and np.unique(y[i]).size > 1:  # rho of a constant is undefined
            boots.append(spearmanr(x[i], y[i]).statistic)
    if not boots:
        return rho, math.nan, math.nan
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return rho, float(lo), float(hi)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both coordinates (higher is better), by increasing x."""
    front, best_y = [], -math.inf  # drawn as steps that drop at each front point (where="pre")
    for p in sorted(points, key=lambda p: (-p[0], -p[1])):
        if p[1] > best_y:
            front.append(p)
            best_y = p[1]
    return sorted(front)


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    points: list[dict[str, Any]]  # model, family, variant, pair, x, y


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def panels(study: Study, records: list[dict[str, Any]]) -> list[Panel]:
    """The trade-off panels the study's measurements allow."""
    kinds = {m.name: m.kind for m in study.measurements}
    ys: list[tuple[str, str, str]] = []  # (measurement name, metric choices, label)
    for name, kind in kinds.items():
        if kind == "alignment":
            ys.append((name, "alignment|spearman_mean", f"alignment with human maps ({name})"))
        elif kind == "adversarial":
            ys.append((name, "l2_median", f"perturbation tolerance: median minimal L2 ({name})"))
            ys.append((name, "alignment|spearman_mean", f"adversarial alignment ({name})"))
    acc_names = [n for n, k in kinds.items() if k == "accuracy"] + [n for n, k in kinds.items() if k == "alignment"]
    out: list[Panel] = []
    for d in study.data:
        if d.kind == "neural":
            continue  # its panels pair it with the image data's numbers (neural_panels)
        recs = [r for r in records if r["data"] == d.name]
        for group, xlabel in (("imagenet", "ImageNet top-1 (%)"), ("data", f"accuracy on {d.name} (%)")):
            for mname, metrics, ylabel in ys:
                pts = []
                for r in recs:
                    if group == "imagenet":
                        x = r.get("imagenet_top1")
                    else:
                        if _finite(r.get("imagenet_top1")):
                            continue
                        x = _accuracy(r, acc_names)
                    y = _first(r, mname, metrics)
                    if _finite(x) and _finite(y):
                        pts.append(_point(r, x, y, r.get("top1_source") if group == "imagenet" else f"measured on {d.name}"))
                if pts:
                    metric_label = _alignment_label(ylabel, metrics, mname, recs)
                    out.append(Panel(f"{metric_label} vs {xlabel} on {d.name}", xlabel, metric_label, pts))
    return out + neural_panels(study, records)


def _alignment_label(label: str, metrics: str, mname: str, recs: list[dict[str, Any]]) -> str:
    if "alignment" in metrics and any(_finite(r.get(f"{mname}/alignment")) for r in recs):
        return label + " / human ceiling"
    return label


def _point(r: dict[str, Any], x: float, y: float, x_source: Any) -> dict[str, Any]:
    return {"model": r["model"], "family": r["family"] or "?", "variant": r.get("variant"), "pair": r.get("pair"),
            "x": float(x), "y": float(y), "x_source": x_source}


def _first(r: dict[str, Any] | None, name: str, metrics: str) -> float | None:
    """The first finite ``name/metric`` of a record among ``metrics`` ("a|b")."""
    if r is None:
        return None
    return next((r[f"{name}/{m}"] for m in metrics.split("|") if _finite(r.get(f"{name}/{m}"))), None)


def _accuracy(r: dict[str, Any] | None, names: list[str]) -> float | None:
    """The record's accuracy (%) from the first of these measurements that has one."""
    return next((100 * a for a in (_first(r, n, "accuracy") for n in names) if a is not None), None)


def neural_panels(study: Study, records: list[dict[str, Any]]) -> list[Panel]:
    """Neural score panels (none when no neural score was measured): for each neural
    measurement and recording, the score (ceiled when the recording has a ceiling; the
    neural-map alignment too for spatial recordings) against ImageNet top-1, against the
    accuracy on each image data set (models without an ImageNet top-1) and against each
    alignment with human maps. A model's numbers on images and on the recording are joined
    by its label."""
    kinds = {m.name: m.kind for m in study.measurements}
    neural = [n for n, k in kinds.items() if k == "neural"]
    acc_names = [n for n, k in kinds.items() if k == "accuracy"] + [n for n, k in kinds.items() if k == "alignment"]
    aligns = [n for n, k in kinds.items() if k == "alignment"]
    image_data = [d.name for d in study.data if d.kind != "neural"]
    by = {(r["model"], r["data"]): r for r in records}
    out: list[Panel] = []
    for nd in (d for d in study.data if d.kind == "neural"):
        nrecs = [r for r in records if r["data"] == nd.name]
        for mname in neural:
            ceiled = any(_finite(r.get(f"{mname}/ceiled")) for r in nrecs)
            for metric, label in (("ceiled" if ceiled else "score",
                                   f"neural predictivity{' / ceiling' if ceiled else ' (median r)'} ({mname} on {nd.name})"),
                                  ("map_spearman", f"neural-map alignment, Spearman ({mname} on {nd.name})")):
                ys = [(r, r[f"{mname}/{metric}"]) for r in nrecs if _finite(r.get(f"{mname}/{metric}"))]
                pts = [_point(r, r["imagenet_top1"], y, r.get("top1_source")) for r, y in ys if _finite(r.get("imagenet_top1"))]
                if pts:
                    out.append(Panel(f"{label} vs ImageNet top-1 (%)", "ImageNet top-1 (%)", label, pts))
                for d in image_data:
                    xlabel = f"accuracy on {d} (%)"
                    pts = []
                    for r, y in ys:
                        acc = None if _finite(r.get("imagenet_top1")) else _accuracy(by.get((r["model"], d)), acc_names)
                        if acc is not None:
                            pts.append(_point(r, acc, y, f"measured on {d}"))
                    if pts:
                        out.append(Panel(f"{label} vs {xlabel}", xlabel, label, pts))
                    for aname in aligns:
                        recs = [by[(r["model"], d)] for r, _ in ys if (r["model"], d) in by]
                        xlabel = _alignment_label(f"alignment with human maps ({aname} on {d})", "alignment", aname, recs)
                        pts = [_point(r, x, y, f"{aname} on {d}") for r, y in ys
                               if (x := _first(by.get((r["model"], d)), aname, "alignment|spearman_mean")) is not None]
                        if pts:
                            out.append(Panel(f"{label} vs {xlabel}", xlabel, label, pts))
    return out


def table_records(study: Study, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report table's rows: a model's neural scores as columns of its rows on image data
    (``neural/ceiled [it]``: measurement/metric [recording]); a model measured on recordings
    only keeps its own row."""
    neural_data = {d.name for d in study.data if d.kind == "neural"}
    if not neural_data:
        return records
    kinds = {m.name: m.kind for m in study.measurements}
    columns: dict[str, dict[str, Any]] = {}
    kept: list[dict[str, Any]] = []
    for r in records:
        if r["data"] in neural_data:
            cols = {f"{k} [{r['data']}]": v for k, v in r.items() if kinds.get(k.partition("/")[0]) == "neural" and "/" in k}
            columns.setdefault(r["model"], {}).update(cols)
            kept.append({k: v for k, v in r.items() if "/" not in k or kinds.get(k.partition("/")[0]) != "neural"} | cols)
    out = [r | columns.get(r["model"], {}) for r in records if r["data"] not in neural_data]
    with_rows = {r["model"] for r in out}
    return out + [r for r in kept if r["model"] not in with_rows]


def _figure(panel: Panel) -> tuple[bytes, str, dict[str, Any]]:
    """(PNG bytes, SVG text with a <title> per point, the panel's statistics)."""
    from harmonia.report.figures import _pyplot

    plt = _pyplot()
    pts = panel.points
    fams = sorted({p["family"] for p in pts})
    colour = {f: f"C{i % 10}" for i, f in enumerate(fams)}
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for i, p in enumerate(pts):
        marker = {"baseline": "s", "harmonized": "*"}.get(p["variant"] or "", "o")
        ax.scatter([p["x"]], [p["y"]], s=70 if marker == "*" else 36, c=colour[p["family"]], marker=marker,
                   edgecolors="black", linewidths=0.4, zorder=3, gid=f"point-{i}")
    for f in fams:
        ax.scatter([], [], c=colour[f], label=f, s=30)
    xs, ys = np.array([p["x"] for p in pts]), np.array([p["y"] for p in pts])
    stats: dict[str, Any] = {"n": len(pts)}
    if len(pts) >= 3 and np.unique(xs).size > 1:
        slope, icpt = np.polyfit(xs, ys, 1)
        grid = np.linspace(xs.min(), xs.max(), 50)
        ax.plot(grid, slope * grid + icpt, "--", color="grey", lw=1, label="least-squares trend", zorder=1)
        rho, lo, hi = spearman_ci(xs, ys)
        stats.update(rho=rho, lo=lo, hi=hi)
        ax.set_title(f"Spearman rho = {rho:.2f} [95% CI {lo:.2f}, {hi:.2f}], n = {len(pts)}", fontsize=9)
    else:
        ax.set_title(f"n = {len(pts)} (too few models for a trend)", fontsize=9)
    front = pareto_front([(p["x"], p["y"]) for p in pts])
    if len(front) > 1:
        fx, fy = zip(*front)
        ax.step(fx, fy, where="pre", color="black", lw=0.8, alpha=0.6, label="Pareto front", zorder=2)
    by_pair: dict[str, dict[str, dict[str, Any]]] = {}
    for p in pts:
        if p["pair"] and p["variant"]:
            by_pair.setdefault(p["pair"], {})[p["variant"]] = p
    n_arrows = 0
    for pair in by_pair.values():
        if "baseline" in pair and "harmonized" in pair:
            a, b = pair["baseline"], pair["harmonized"]
            ax.annotate("", xy=(b["x"], b["y"]), xytext=(a["x"], a["y"]),
                        arrowprops={"arrowstyle": "->", "color": "#1b9e77", "lw": 1.2}, zorder=2)
            n_arrows += 1
    if n_arrows:
        ax.plot([], [], color="#1b9e77", label="baseline -> harmonized")
    stats["arrows"] = n_arrows
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel if len(panel.ylabel) < 60 else panel.ylabel[:57] + "...")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    png, svg = io.BytesIO(), io.StringIO()
    fig.savefig(png, format="png", dpi=130)
    fig.savefig(svg, format="svg")
    plt.close(fig)
    text = svg.getvalue()
    for i, p in enumerate(pts):  # the hover name of each point
        tip = html.escape(f"{p['model']} ({p['family']}): x = {p['x']:.3g}, y = {p['y']:.3g}")
        text = text.replace(f'<g id="point-{i}">', f'<g id="point-{i}" class="point"><title>{tip}</title>', 1)
    text = re.sub(r"^<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?", "", text)
    return png.getvalue(), text, stats


_JS = """
const data = JSON.parse(document.getElementById('study-data').textContent);
const cols = data.columns, rows = data.rows;
const table = document.getElementById('study-table');
let sortCol = 0, asc = true;
function cell(v) { return v === null || v === undefined ? '' : (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : String(v)); }
function draw() {
  const sorted = rows.slice().sort((a, b) => {
    const x = a[sortCol], y = b[sortCol];
    if (x === y) return 0; if (x === null) return 1; if (y === null) return -1;
    return (x < y ? -1 : 1) * (asc ? 1 : -1);
  });
  const head = '<thead><tr>' + cols.map((c, i) => '<th data-col="' + i + '">' + c + (i === sortCol ? (asc ? ' ▲' : ' ▼') : '') + '</th>').join('') + '</tr></thead>';
  const body = '<tbody>' + sorted.map(r => '<tr>' + r.map(v => '<td>' + cell(v).replace(/&/g, '&amp;').replace(/</g, '&lt;') + '</td>').join('') + '</tr>').join('') + '</tbody>';
  table.innerHTML = head + body;
  table.querySelectorAll('th').forEach(th => th.onclick = () => { const c = +th.dataset.col; asc = c === sortCol ? !asc : true; sortCol = c; draw(); });
}
draw();
"""

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em} .fig{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
.fig svg{width:560px;height:auto} .point:hover{opacity:.6} table{border-collapse:collapse;font-size:.8em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right} th{cursor:pointer;background:#f3f3f3;position:sticky;top:0}
td:first-child{text-align:left} .note{color:#555;font-size:.9em} .failed{color:#a40}"""


def write_report(study: Study, out_dir: str | Path) -> Path:
    """Write ``OUT/report.html`` (self-contained) and ``OUT/figure-*.png|svg``; returns the page's path."""
    from harmonia.studies.export import study_rows, wide_table
    from harmonia.studies.runner import task_states
    from harmonia.utils.io import atomic_write_bytes, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = study_rows(study)
    records = wide_table(rows)
    synthetic = _synthetic_data(study, rows)
    sections = [f"<h1>Study {html.escape(study.name)}</h1>"]
    if study.description:
        sections.append(f"<p>{html.escape(study.description)}</p>")
    states = task_states(study)
    counts = {s: sum(1 for _, st, _ in states if st == s) for s in ("done", "running", "pending", "failed")}
    sections.append("<p>" + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" of {len(states)} tasks.</p>")
    if synthetic:
        neural = {d.name for d in study.data if d.kind == "neural"}
        what = [w for w, shown in (("simulated images and human maps, not ClickMe", set(synthetic) - neural),
                                   ("simulated neural recordings: read-outs of a random ground-truth network, not "
                                    "monkey IT", set(synthetic) & neural)) if shown]
        sections.append(f"<p class='note'><b>SYNTHETIC data:</b> {', '.join(map(html.escape, synthetic))} "
                        f"({'; '.join(what)}); the numbers show the method, not findings about real models.</p>")
    sections.append("<p class='note'>Hover a point for the model's name. Squares: baselines, stars: harmonized "
                    "models (arrows: baseline to harmonized, same architecture and seed). Dashed: least-squares trend; "
                    "black steps: Pareto front. Spearman CIs: 95% percentile bootstrap over models "
                    f"({N_BOOT} resamples). ImageNet top-1 is measured when the study measured it on ImageNet, else "
                    "timm's published value (see the table's top1_source).</p>")
    for i, panel in enumerate(panels(study, records), 1):
        png, svg, stats = _figure(panel)
        stem = f"figure-{i}"
        atomic_write_bytes(out / f"{stem}.png", png)
        atomic_write_text(out / f"{stem}.svg", svg)
        sections.append(f"<div class='fig'><h2>{html.escape(panel.title)}</h2>{svg}"
                        f"<p class='note'><a href='{stem}.png'>PNG</a> · <a href='{stem}.svg'>SVG</a></p></div>")
    failed = [(t, r) for t, s, r in states if s == "failed"]
    if failed:
        items = "".join(f"<li>{html.escape(t.title)}: {html.escape((r or {}).get('reason') or '')}</li>" for t, r in failed)
        sections.append(f"<h2>Failed tasks</h2><ul class='failed'>{items}</ul>")
    table = table_records(study, records)
    cols: list[str] = []
    for r in table:
        cols.extend(k for k in r if k not in cols)
    payload = {"columns": cols, "rows": [[_json_value(r.get(c)) for c in cols] for r in table]}
    blob = json.dumps(payload).replace("</", "<\\/")
    sections.append("<h2>Models</h2><p class='note'>Click a column to sort.</p><table id='study-table'></table>"
                    f"<script type='application/json' id='study-data'>{blob}</script><script>{_JS}</script>")
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Study {html.escape(study.name)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")
    path = out / "report.html"
    atomic_write_text(path, page)
    return path


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


def _synthetic_data(study: Study, rows: list[dict[str, Any]]) -> list[str]:
    from harmonia.data.format import read_info
    from harmonia.store import ResultStore

    names = []
    for d in study.data:
        if d.kind == "neural":  # simulated here, or a recording whose runs say so (NeuralSweep's meta)
            keys = {r["content_key"] for r in rows if r["data"] == d.name and r["content_key"]}
            with ResultStore(study.store) as store:
                runs = [store.get_run(k) for k in keys]
            if d.simulate is not None or any(run is not None and run.meta.get("synthetic") for run in runs):
                names.append(d.name)
            continue
        try:
            if read_info(d.path).synthetic:
                names.append(d.name)
        except (OSError, ValueError):
            pass
    return names
