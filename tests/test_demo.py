"""``harmonia demo``: the --quick run end to end, and the report's building blocks."""

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from harmonia.cli.main import app
from harmonia.experiments import comparison as compare
from harmonia.experiments.comparison import Comparison, ComparisonSettings, ModelRun
from harmonia.report.figures import curves_figure, maps_figure, metrics_figure
from harmonia.report.html import fmt, mean_sd, render_demo_report
from harmonia.report.sections import DemoReport, Figures, Outcome, Rerun, Training

runner = CliRunner()


@pytest.fixture
def one_thread():
    # Spinning OpenMP workers on a busy CI machine made training steps several times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_demo_quick_writes_report_and_store(tmp_path, one_thread):
    from harmonia.store import ResultStore

    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = out / "report.html"
    assert report.is_file()
    assert str(report.resolve()) in r.output.replace("\n", "")  # the path is printed
    page = report.read_text()
    assert "simulated" in page and "SYNTHETIC" in page
    assert "<td>baseline</td>" in page and "<td>harmonized</td>" in page
    assert "data:image/png;base64," in page and 'src="http' not in page  # self-contained

    store = ResultStore(out / "results.sqlite")
    evals = [run for run in store.runs(kind="evaluation", status="complete")]
    by_split = {}
    for run in evals:
        by_split.setdefault(run.meta["split"], []).append(run)
    # two models x three splits, all on SYNTHETIC data, one row per test image each
    assert {s: len(v) for s, v in by_split.items()} == {"test": 2, "test_shortcut_broken": 2, "test_no_cue": 2}
    n_test = ComparisonSettings.quick().n_test
    assert all(run.meta["synthetic"] and run.n_rows == n_test for run in evals)
    assert len(store.runs(kind="training", status="complete")) == 2
    # adversarial alignment of both models: one row per attacked image, never a made-up norm
    adv = store.runs(kind="adversarial", status="complete")
    assert len(adv) == 2 and all(run.n_rows == ComparisonSettings.quick().adv_images for run in adv)
    for run in adv:
        for row in store.rows(run.key):
            assert (row["status"] == "fooled") == (row["l2"] is not None and math.isfinite(row["l2"]))
    assert "Adversarial alignment" in page and "perturbation" in page

    summary = json.loads((out / "summary.json").read_text())
    assert summary["synthetic"] is True
    assert sorted(r["variant"] for r in summary["runs"]) == ["baseline", "harmonized"]
    lambdas = {r["variant"]: r["lambda_harmonization"] for r in summary["runs"]}
    assert lambdas["baseline"] == 0 and lambdas["harmonized"] > 0


def test_the_two_variants_differ_only_in_the_human_map_terms():
    s = ComparisonSettings()
    a = s.train_config("d", "o", seed=3, harmonized=False).to_json()
    b = s.train_config("d", "o", seed=3, harmonized=True).to_json()
    assert {k for k in a if a[k] != b[k]} == {"lambda_harmonization", "lambda_masked"}
    assert a["lambda_harmonization"] == 0 and b["lambda_harmonization"] == s.lambda_harmonization
    assert a["lambda_masked"] == 0 and b["lambda_masked"] == s.lambda_masked > 0
    assert a["seed"] == 3 and a["augment"] is False


def _run(variant, seed, acc_broken, align):
    m = {"test": {"accuracy": 0.9, "alignment": align, "spearman": align * 0.65},
         "test_shortcut_broken": {"accuracy": acc_broken, "alignment": align, "spearman": align * 0.65}}
    return ModelRun(variant, seed, 0.0 if variant == "baseline" else 3.0, m, {"steps": [], "evals": []}, 1.0, Path("."))


def test_verdict_counts_seeds_and_keeps_nan():
    runs = [_run("baseline", 0, 0.1, 0.3), _run("harmonized", 0, 0.4, 0.6),
            _run("baseline", 1, 0.2, 0.3), _run("harmonized", 1, 0.1, float("nan"))]
    v = Comparison(ComparisonSettings(seeds=(0, 1)), Path("."), {}, runs).verdict()
    assert v["test_shortcut_broken/accuracy"]["n_better"] == 1 and v["test_shortcut_broken/accuracy"]["n_seeds"] == 2
    assert math.isclose(v["test_shortcut_broken/accuracy"]["mean_diff"], (0.3 - 0.1) / 2)
    assert v["test/alignment"]["n_seeds"] == 1  # the NaN seed is left out, not counted as 0


def _page(runs):
    cmp = Comparison(ComparisonSettings(seeds=(0, 1)), Path("."), {"test": {"value": 0.65, "source": "x"}}, runs)
    png = metrics_figure(cmp.values(), compare.METRICS)
    summary = cmp.summary_json()
    report = DemoReport(Outcome(summary["settings"], cmp.values(), compare.METRICS, cmp.verdict(), cmp.ceilings),
                        Training(summary["runs"], {"total": 1.0}), Figures(png, png, png),
                        Rerun("harmonia demo --seeds 2", {"report": "r.html"}, {}))
    return render_demo_report(report)


BETTER = "The harmonized model is more aligned and more accurate without the shortcut in every seed."
NOT_BETTER = "The harmonized model does <b>not</b> beat the baseline"


def test_report_says_synthetic_and_shows_mean_and_per_seed_values():
    page = _page([_run("baseline", 0, 0.1, 0.3), _run("harmonized", 0, 0.4, 0.6),
                  _run("baseline", 1, 0.2, 0.3), _run("harmonized", 1, 0.5, 0.7)])
    assert "simulated (SYNTHETIC)" in page
    assert mean_sd([0.4, 0.5]) in page and "0.450 ± 0.071 (n=2)" in page
    assert "harmonia demo --seeds 2" in page
    # harmonized better on all three in both seeds: the positive verdict, and only it
    assert BETTER in page and NOT_BETTER not in page


def test_report_verdict_is_negative_when_one_seed_is_worse():
    # seed 1: harmonized less accurate with the shortcut broken (0.1 < 0.2)
    page = _page([_run("baseline", 0, 0.1, 0.3), _run("harmonized", 0, 0.4, 0.6),
                  _run("baseline", 1, 0.2, 0.3), _run("harmonized", 1, 0.1, 0.7)])
    assert NOT_BETTER in page and BETTER not in page
    assert "harmonized higher in 1 of 2 seed(s)" in page


def test_report_accepts_the_flat_context_as_before():
    runs = [_run("baseline", 0, 0.1, 0.3), _run("harmonized", 0, 0.4, 0.6)]
    cmp = Comparison(ComparisonSettings(), Path("."), {"test": {"value": 0.65, "source": "x"}}, runs)
    png = metrics_figure(cmp.values(), compare.METRICS)
    summary = cmp.summary_json()
    ctx = {"settings": summary["settings"], "values": cmp.values(), "metric_labels": compare.METRICS,
           "verdict": cmp.verdict(), "ceilings": cmp.ceilings, "runs": summary["runs"], "timings": {"total": 1.0},
           "figures": {"maps": png, "curves": png, "metrics": png}, "command": "harmonia demo", "paths": {}}
    assert render_demo_report(ctx) == render_demo_report(DemoReport.from_context(ctx))


def test_report_package_trains_and_measures_nothing():
    # the experiment lives in harmonia.experiments; report/ only renders
    import harmonia.report

    src = "".join(p.read_text() for p in Path(harmonia.report.__file__).parent.glob("*.py"))
    for name in ("train(", "run_comparison", "evaluate(", "adversarial_alignment(", "measurements import run"):
        assert name not in src, name


def test_figures_are_png():
    maps = maps_figure(torch.rand(2, 3, 16, 16), torch.rand(2, 16, 16),
                       {"baseline": torch.rand(2, 16, 16), "harmonized": torch.zeros(2, 16, 16)}, ["a", "b"])
    hist = {"steps": [{"epoch": 0.5, "ce": 2.0, "harm": 0.0}],
            "evals": [{"epoch": 1, "split": "test", "accuracy": 0.5, "alignment": float("nan")}]}
    curves = curves_figure([{"label": "baseline", "variant": "baseline", "history": hist}])
    assert maps[:4] == curves[:4] == b"\x89PNG"


def test_fmt_never_turns_nan_into_zero():
    assert fmt(float("nan")) == "nan" and fmt(None) == "nan" and mean_sd([float("nan")]) == "nan"


def test_demo_simulation_options_reach_the_data_and_the_rerun_command(tmp_path):
    from harmonia.experiments.demo import rerun_command, simulated_data
    from harmonia.data import read_info
    settings = ComparisonSettings.quick(n_train=16, n_test=8, n_subjects=2, shortcut_rate=0.7, part_radius=(7.0, 9.0))
    root = simulated_data(tmp_path / "sim", settings)
    sim = read_info(root).extra["simulation"]
    assert sim["shortcut_rate"] == 0.7 and tuple(sim["part_radius"]) == (7.0, 9.0)
    assert "test_no_cue" in read_info(root).splits
    assert simulated_data(tmp_path / "sim", settings) == root  # same settings: reused
    cmd = rerun_command(False, 1, tmp_path, {"shortcut-rate": 0.7, "part-radius": (7.0, 9.0), "lambda": None,
                                              "skip-photos": True, "device": None})
    assert cmd.endswith("--shortcut-rate 0.7 --part-radius 7.0 9.0 --skip-photos")
