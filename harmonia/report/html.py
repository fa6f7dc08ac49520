"""The demo's self-contained HTML report: one file, figures embedded as base64 PNG.

The page opens offline in any browser and can be mailed or attached to a CI run as is:
no external CSS, scripts or image files. Every number on it is read from the measured
results passed in; nothing is typed in by hand.

Example:
    >>> page = render_page("t", ["<p>hello</p>"])
    >>> page.startswith("<!DOCTYPE html>") and "hello" in page
    True
"""

from __future__ import annotations

import base64
import html
import math
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from harmonia.report.sections import DemoReport
from harmonia.settings import SimulationConfig
from harmonia.utils.io import atomic_write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
.synthetic{background:#fff4d6;border:2px solid #e0a800;padding:.8em 1em;border-radius:6px}
.verdict{background:#eef6f0;border-left:4px solid #1b9e77;padding:.5em 1em}
.verdict.mixed{background:#fbeeee;border-left-color:#d95f02}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
.small{font-size:.85em;color:#555}
"""


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img src>``.

    Example:
        >>> png_data_uri(b"ab")
        'data:image/png;base64,YWI='
    """
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` holding ``png`` itself.

    Example:
        >>> img_tag(b"ab", "x <y>")
        '<img src="data:image/png;base64,YWI=" alt="x &lt;y&gt;">'
    """
    return f'<img src="{png_data_uri(png)}" alt="{html.escape(alt)}">'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; every cell is escaped.

    Example:
        >>> table(["a"], [["<b>"]])
        '<table><tr><th>a</th></tr><tr><td>&lt;b&gt;</td></tr></table>'
    """
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table; NaN / None print as "nan" (never as 0).

    Example:
        >>> fmt(0.12345), fmt(float("nan")), fmt(None)
        ('0.123', 'nan', 'nan')
    """
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "nan"
    return f"{x:.{digits}f}"


def mean_sd(values: Sequence[float]) -> str:
    """"mean +- sd (n)" over the finite values, or the single value.

    Example:
        >>> mean_sd([0.5, 0.7]), mean_sd([0.5])
        ('0.600 ± 0.141 (n=2)', '0.500')
    """
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "nan"
    if len(vals) == 1:
        return fmt(vals[0])
    return f"{statistics.fmean(vals):.3f} ± {statistics.stdev(vals):.3f} (n={len(vals)})"


def render_page(title: str, sections: Sequence[str]) -> str:
    """A complete HTML document around already-rendered ``sections``."""
    body = "\n".join(sections)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def write_html(path: str | Path, page: str) -> Path:
    """Write the page atomically (a reader never sees half a report); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, page)
    return path


_REDUCER_TEXT = {
    "mean": "the signed mean over colour channels of the true-class gradient, as in the released loss",
    "max_abs": "the max over colour channels of |true-class gradient|, the map the evaluation scores "
               "(the released loss uses the signed channel mean: see docs/demo.md)",
    "abs_mean": "|mean over colour channels| of the true-class gradient",
}


def _radius_text(r: Any) -> str:
    lo, hi = r if r else SimulationConfig.part_radius  # summaries written before the option
    return f"{lo:g}-{hi:g}"


def render_demo_report(report: DemoReport | Mapping[str, Any]) -> str:
    """The ``harmonia demo`` page from measured results: a :class:`~harmonia.report.sections.DemoReport`,
    or the flat dict it is built from (:meth:`DemoReport.from_context`), whose keys are: ``settings`` (dict), ``values`` (variant -> metric -> per-seed values),
    ``metric_labels``, ``verdict``, ``ceilings``, ``runs`` (list of dicts with variant,
    seed, lambda, metrics, train_seconds), ``timings`` (phase -> seconds), ``figures``
    (name -> PNG bytes: maps, curves, metrics), ``photo_rows`` (top-1 table rows) and
    ``photo_figure`` (PNG or None), ``command`` (how to re-run), ``paths``
    (name -> path shown to the reader), ``description`` (the data set's own text),
    ``version``, ``quick`` (bool).
    """
    r = report if isinstance(report, DemoReport) else DemoReport.from_context(report)
    s = r.outcome.settings
    labels: Mapping[str, str] = r.outcome.metric_labels
    values = r.outcome.values
    figs = r.figures
    esc = html.escape
    out: list[str] = []

    out.append("<h1>harmonia demo: baseline vs harmonized on simulated ClickMe</h1>")
    out.append(
        "<div class=\"synthetic\"><b>These data are simulated (SYNTHETIC).</b> The images are rendered by "
        "harmonia and the &ldquo;human&rdquo; maps come from simulated participants; no person clicked on "
        "anything. The numbers below say how the method behaves on a controlled benchmark whose evidence is "
        "known by construction, not how any model aligns with real people.<br>"
        f"<span class=\"small\">{esc(str(r.rerun.about.get('description', '')))}</span></div>"
    )
    if r.rerun.about.get("quick"):
        out.append("<p class=\"verdict mixed\"><b>--quick run:</b> tiny data set and budget, for CI. The "
                   "numbers exercise the pipeline and mean little; run without --quick for the real comparison.</p>")

    # -- what was done
    out.append("<h2>What was done</h2>")
    out.append(
        f"<p>A simulated-ClickMe data set (<b>SYNTHETIC</b>) with {s['n_train']} training images and "
        f"{s['n_test']} images in each test split, {s['n_subjects']} simulated participants per image, "
        "8 classes that differ only by a small part on a shared body (part half-size "
        f"{_radius_text(s.get('part_radius'))} px at 64 px), and a shortcut: a class-coded corner square "
        f"that agrees with the label in {s.get('shortcut_rate', SimulationConfig.shortcut_rate):.0%} of the <code>train</code> and <code>test</code> images "
        "and in none of <code>test_shortcut_broken</code>; in <code>test_no_cue</code> the square is plain "
        "grey, so accuracy there is what a model reads from the part alone.</p>"
        f"<p>Two models of the same architecture (<code>small_cnn</code>, width {s['width']}), trained from "
        f"the same random initialisation (seed), on the same batches, for {s['epochs']} epochs (batch "
        f"{s['batch_size']}, AdamW lr {s['lr']:g}, weight decay {s['weight_decay']:g}, cosine schedule, "
        f"label smoothing {s['label_smoothing']:g}, no augmentation). "
        "They differ only in the terms that use the human maps (the baseline has none): <b>baseline</b> "
        f"lambda = 0, <b>harmonized</b> "
        f"lambda = {s['lambda_harmonization']:g} (training saliency: {_REDUCER_TEXT.get(s['reducer'], esc(s['reducer']))}"
        + ("" if s.get("score", "logit") == "logit" else f", of the {esc(s['score'])} instead of the logit")
        + ("" if not s.get("lambda_outside") else f"; plus {s['lambda_outside']:g} x the squared saliency where "
           "the human map is below 5% of its max, a term not in the release")
        + ("" if not s.get("lambda_masked") else f"; plus {s['lambda_masked']:g} x the cross-entropy of the "
           "images reduced to what the participants looked at (the rest grey), a term not in the release; "
           "with <code>--lambda-masked 0</code> the harmonized model gets the harmonizer loss alone, which "
           "raises alignment but leaves the decisions with the shortcut: see docs/demo.md")
        + "). "
        f"Seeds: {', '.join(map(str, s['seeds']))}.</p>"
        "<p>Evaluation: accuracy, and alignment = mean Spearman correlation between the model's saliency "
        "(max over channels of |d logit<sub>label</sub> / d pixel|, the release's evaluation map) and the "
        "simulated human map, divided by the human split-half ceiling computed from the simulated "
        "participants: " + ", ".join(f"{esc(k)} {v['value']:.4f}" for k, v in r.outcome.ceilings.items()) + ".</p>"
    )

    # -- verdict
    verdict = r.outcome.verdict
    keys = ["test/alignment", "test_shortcut_broken/alignment", "test_shortcut_broken/accuracy"]
    good = all(verdict[k]["n_seeds"] and verdict[k]["n_better"] == verdict[k]["n_seeds"] for k in keys)
    lines = []
    for k in labels:
        v = verdict[k]
        lines.append(f"<li>{esc(labels[k])}: harmonized &minus; baseline = {fmt(v['mean_diff'])} "
                     f"(mean over seeds); harmonized higher in {v['n_better']} of {v['n_seeds']} seed(s).</li>")
    head = ("The harmonized model is more aligned and more accurate without the shortcut in every seed."
            if good else "The harmonized model does <b>not</b> beat the baseline on every one of alignment "
                         "and shortcut-broken accuracy in every seed (measured, see below).")
    broken = [x for x in values.get("harmonized", {}).get("test_shortcut_broken/accuracy", []) if x == x]
    chance = 1.0 / r.outcome.n_classes if r.outcome.n_classes else None
    if broken and chance is not None and max(broken) < 2 * chance:
        lines.append(f"<li>Shortcut-broken accuracy of the harmonized model: {fmt(max(broken))} at best, against "
                     f"chance {chance:.3f}: its decisions still follow the corner cue, whatever its maps look "
                     "like (see docs/demo.md).</li>")
    out.append(f"<h2>Outcome</h2><div class=\"verdict{'' if good else ' mixed'}\"><p>{head}</p>"
               f"<ul>{''.join(lines)}</ul></div>")

    # -- table
    out.append("<h2>Numbers</h2>")
    header = ["model", *labels.values()]
    rows = [[v, *(mean_sd(values[v][k]) for k in labels)] for v in values]
    out.append(table(header, rows))
    if len(s["seeds"]) > 1 or r.training.runs:
        per = []
        for run in r.training.runs:
            m = run["metrics"]
            per.append([f"{run['variant']} (seed {run['seed']}, lambda {run['lambda_harmonization']:g})",
                        *(fmt(m.get(k.split('/')[0], {}).get(k.split('/')[1])) for k in labels),
                        *(fmt(m.get(sp, {}).get("spearman")) for sp in ("test", "test_shortcut_broken")),
                        f"{run['train_seconds']:.0f}"])
        out.append("<p class=\"small\">Per run (raw mean Spearman before the ceiling, and the training time "
                   "with its per-epoch evaluations):</p>")
        out.append(table(["run", *labels.values(), "spearman, test", "spearman, broken", "seconds"], per))
    out.append(img_tag(figs.metrics, "final metrics per model, one dot per seed"))

    # -- maps
    out.append("<h2>Where the models look</h2>")
    out.append(f"<p>The first {s['n_examples']} images of <code>{esc(figs.examples_split)}</code> (a fixed choice, "
               "not picked by outcome): the image, the simulated human map, and each model's saliency for the "
               "labelled class (seed "
               f"{figs.examples_seed}). The left caption gives the class, the class the corner cue codes, and "
               "each model's prediction.</p>")
    out.append(img_tag(figs.maps, "image, human map, baseline map, harmonized map"))

    # -- adversarial alignment
    if figs.perturbations is not None:
        out.append("<h2>Adversarial alignment</h2>")
        out.append(
            f"<p>A minimal-norm L2 attack (FMN, {s['adv_steps']} steps) on the first {s['adv_images']} images of "
            "<code>test</code>: the smallest perturbation (in [0, 1] pixel units) that changes each model's "
            "decision. <b>Tolerance</b> is the median of its L2 norm over the fooled images; <b>adversarial "
            "alignment</b> is the mean Spearman correlation between the perturbation map (|mean over channels|, "
            "as in the 2023 paper) and the simulated human map, divided by the same ceiling. Images the model "
            "misclassifies, or that the attack does not fool, are counted apart and get no norm (per-run numbers: "
            "<code>harmonia results list</code>).</p>")
        out.append(img_tag(figs.perturbations, "image, human map, baseline perturbation, harmonized perturbation"))

    # -- curves
    out.append("<h2>Training curves</h2>")
    out.append(f"<p>Loss parts per logging interval; accuracy and alignment at the end of each epoch on the first "
               f"{s['curve_eval_limit']} images of each split (the final point of each curve uses all images).</p>")
    out.append(img_tag(figs.curves, "training curves"))

    # -- real photos
    if r.photos.rows:
        out.append("<h2>Pretrained model on real photos</h2>")
        out.append("<p>Before the simulated part: the ImageNet-pretrained EfficientNet-Lite0 that ships with "
                   "harmonia, explaining real photos bundled with scikit-image / scikit-learn (these photos are "
                   "real; they have no human maps). It shows that the pretrained weights load and the "
                   "explanation pipeline works.</p>")
        out.append(table(["photo", "top-1", "p", "top-5"], r.photos.rows))
        if r.photos.figure:
            out.append(img_tag(r.photos.figure, "real photos and their saliency maps"))

    # -- re-run
    out.append("<h2>How to re-run</h2>")
    out.append(f"<pre>{esc(r.rerun.command)}</pre>")
    out.append("<p>Everything is written under the output folder: " + ", ".join(
        f"{esc(k)}: <code>{esc(str(v))}</code>" for k, v in r.rerun.paths.items()) + ". Inspect the stored "
        "evaluations with <code>harmonia results list" + (f" --store {esc(str(r.rerun.paths['results store']))}"
                                                          if "results store" in r.rerun.paths else "") + "</code>"
        + (f", the study's tasks with <code>harmonia study status {esc(str(r.rerun.paths['study file']))}</code>"
           if "study file" in r.rerun.paths else "") + ".</p>")
    timing_rows = [[k, f"{v:.1f}"] for k, v in r.training.timings.items()]
    out.append("<p class=\"small\">Measured wall-clock time of each phase (seconds):</p>" + table(["phase", "s"], timing_rows))
    out.append(f"<p class=\"small\">harmonia {esc(str(r.rerun.about.get('version', '')))}</p>")
    return render_page("harmonia demo report (SYNTHETIC data)", out)
