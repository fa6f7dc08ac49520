"""The demo report's content as typed sections: what each part of the page shows.

An experiment (:mod:`harmonia.experiments.comparison`) trains and measures; what it
returned, read from the results store, fills a :class:`DemoReport`, which
:func:`harmonia.report.html.render_demo_report` renders. Nothing here computes a number.

Example:
    >>> r = DemoReport(Outcome({"n_train": 1}, {}, {}, {}, {}), Training([], {}), Figures(b"", b"", b""),
    ...                Rerun("harmonia demo", {}, {}))
    >>> r.outcome.settings["n_train"], r.photos.rows
    (1, [])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass
class Outcome:
    """The comparison's numbers: settings, per-seed values, the verdict and the ceilings divided by."""

    settings: dict[str, Any]  # ComparisonSettings.to_json() with seeds as a list
    values: dict[str, dict[str, list[float]]]  # variant -> metric -> per-seed values
    metric_labels: Mapping[str, str]  # metric key -> label, in table order
    verdict: dict[str, dict[str, Any]]  # metric -> mean_diff, n_better, n_seeds
    ceilings: dict[str, dict[str, Any]]  # split -> value, source
    n_classes: int | None = None


@dataclass
class Training:
    """Per run: variant, seed, lambda, metrics, training seconds (the summary's ``runs``)."""

    runs: list[dict[str, Any]]
    timings: dict[str, float]  # phase -> seconds


@dataclass
class Figures:
    """PNG bytes of the page's figures; ``perturbations`` None leaves the adversarial section out."""

    metrics: bytes
    maps: bytes
    curves: bytes
    perturbations: bytes | None = None
    examples_split: str = "test_shortcut_broken"
    examples_seed: int = 0


@dataclass
class Photos:
    """Part 1: the pretrained model's top-1 on real photos (empty when skipped)."""

    rows: list[list[str]] = field(default_factory=list)
    figure: bytes | None = None


@dataclass
class Rerun:
    """How to re-run and where everything is."""

    command: str
    paths: dict[str, Any]
    about: dict[str, Any]  # description (the data set's own text), version, quick


@dataclass
class DemoReport:
    """Everything the ``harmonia demo`` page shows."""

    outcome: Outcome
    training: Training
    figures: Figures
    rerun: Rerun
    photos: Photos = field(default_factory=Photos)

    @classmethod
    def from_context(cls, ctx: Mapping[str, Any]) -> "DemoReport":
        """From the flat dict earlier versions took (keys as in ``render_demo_report``'s docs)."""
        figs = ctx["figures"]
        return cls(
            Outcome(ctx["settings"], ctx["values"], ctx["metric_labels"], ctx["verdict"], ctx["ceilings"],
                    ctx.get("n_classes")),
            Training(list(ctx.get("runs") or []), dict(ctx["timings"])),
            Figures(figs["metrics"], figs["maps"], figs["curves"], figs.get("perturbations"),
                    ctx.get("examples_split", "test_shortcut_broken"), ctx.get("examples_seed", 0)),
            Rerun(ctx["command"], dict(ctx["paths"]),
                  {"description": ctx.get("description", ""), "version": ctx.get("version", ""),
                   "quick": bool(ctx.get("quick"))}),
            Photos(list(ctx.get("photo_rows") or []), ctx.get("photo_figure")),
        )  # fmt: skip
