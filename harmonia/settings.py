"""harmonia's settings objects, each default written once (all :class:`harmonia.config.Config`).

- :class:`LossOptions`: the harmonizer loss (``harmonia.training.harmonizer_loss``, ``TrainConfig``);
- :class:`CeilingSettings`: the human split-half ceiling (``harmonia ceiling``, ``run_ceiling``);
- :class:`NeuralSettings`: the neural read-out (``harmonia neural``, ``score_recording``);
- :class:`SimulationConfig` and :class:`ParticipantModel`: the simulated-ClickMe data set;
- :class:`ComparisonSettings`: the demo's baseline-vs-harmonized experiment (``harmonia demo``).

The module imports neither torch nor numpy, so the command line reads its option defaults
here without slowing ``harmonia --help``; checks that need the algorithms import them when
they run. The algorithms' modules re-export their class (``harmonia.humans.simulate.
SimulationConfig`` is this one).

Example:
    >>> SimulationConfig.from_json(SimulationConfig(n_train=10).to_json()).n_train
    10
    >>> CeilingSettings(repeats=0).validate()
    Traceback (most recent call last):
    ...
    harmonia.errors.UserError: repeats must be >= 1, got 0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harmonia.config import Config

SCORES = ("logit", "centered_logit", "log_prob")
CEILING_METRICS = ("spearman", "dice", "iou", "dice_top", "iou_top")
BLURS = ("disk", "gaussian", "none")
REGRESSIONS = ("pls", "ridge")
# the simulated splits the comparison evaluates (harmonia.experiments.comparison)
COMPARISON_SPLITS = ("test", "test_shortcut_broken", "test_no_cue")


@dataclass(frozen=True)
class LossOptions(Config):
    """The settings of :func:`harmonia.training.harmonizer_loss` (its defaults: the release's loss).

    The one place these defaults are written: ``harmonizer_loss``'s keywords,
    :class:`harmonia.training.TrainConfig` and the ``harmonia train`` options read them here.

    Example:
        >>> LossOptions(reducer="max_abs", score="centered_logit").validate().levels
        5
        >>> LossOptions(score="prob").validate()
        Traceback (most recent call last):
        ...
        harmonia.errors.UserError: score must be one of logit, centered_logit, log_prob, got 'prob'
    """

    lambda_harmonization: float = 1.0
    lambda_weights: float = 1e-5
    label_smoothing: float = 0.1
    levels: int = 5  # pyramid levels averaged: 5 as released, 6 as in the original code
    pyramid_levels: int = 6
    reducer: str = "mean"  # colour-channel reduction of the training saliency (signed mean, as released)
    saliency_input: str = "pixels"
    score: str = "logit"
    lambda_outside: float = 0.0
    outside_threshold: float = 0.05
    lambda_masked: float = 0.0

    def _checks(self) -> list[tuple[bool, str]]:
        from harmonia.attribution.reducers import REDUCERS

        return [
            (self.reducer in REDUCERS, f"unknown reducer {self.reducer!r}; valid reducers: {', '.join(REDUCERS)}"),
            (self.saliency_input in ("pixels", "normalized"),
             f"saliency_input must be 'pixels' or 'normalized', got {self.saliency_input!r}"),
            (self.score in SCORES, f"score must be one of {', '.join(SCORES)}, got {self.score!r}"),
            (self.lambda_outside >= 0 and self.lambda_masked >= 0 and 0 <= self.outside_threshold < 1,
             "need lambda_outside >= 0, lambda_masked >= 0 and 0 <= outside_threshold < 1, got "
             f"{self.lambda_outside}, {self.lambda_masked}, {self.outside_threshold}"),
            (1 <= self.levels <= self.pyramid_levels,
             f"need 1 <= levels <= pyramid_levels, got levels={self.levels}, pyramid_levels={self.pyramid_levels}"),
        ]  # fmt: skip


@dataclass(frozen=True)
class CeilingSettings(Config):
    """The split-half ceiling's settings (:func:`harmonia.humans.ceiling.run_ceiling`).

    ``blur`` / ``blur_size`` / ``sigma`` None: as recorded with the data, else ClickMe's
    disk scaled to the map size; ``crop`` None: no crop. ``chunk_size`` decides which
    images the floor compares, so it is a setting (it changes numbers).

    Example:
        >>> CeilingSettings().repeats, CeilingSettings(metric="dice").validate().metric
        (10, 'dice')
    """

    metric: str = "spearman"
    repeats: int = 10
    blur: str | None = None
    blur_size: int | None = None
    sigma: float | None = None
    crop: int | None = None
    seed: int = 0
    chunk_size: int = 32

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (callable(self.metric) or self.metric in CEILING_METRICS,
             f"metric must be one of {', '.join(CEILING_METRICS)}, got {self.metric!r}"),
            (self.repeats >= 1, f"repeats must be >= 1, got {self.repeats}"),
            (self.blur is None or self.blur in BLURS, f"blur must be one of {', '.join(BLURS)}, got {self.blur!r}"),
            (self.blur_size is None or self.blur_size >= 1, f"blur_size must be >= 1, got {self.blur_size}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.chunk_size >= 2, f"chunk_size must be >= 2, got {self.chunk_size}"),
        ]  # fmt: skip


@dataclass(frozen=True)
class NeuralSettings(Config):
    """The neural read-out's settings (:func:`harmonia.neural.score_recording`; ``harmonia neural``).

    ``n_components`` is PLS's, ``alpha`` ridge's; ``folds`` and ``seed`` the flat
    recordings' cross-validation; ``max_channels`` and ``down`` the spatial benchmark's.

    Example:
        >>> NeuralSettings().regression, NeuralSettings(folds=1).validate()
        Traceback (most recent call last):
        ...
        harmonia.errors.UserError: folds must be >= 2, got 1
    """

    regression: str = "pls"
    n_components: int = 25
    alpha: float = 1.0
    folds: int = 5
    seed: int = 0
    batch_size: int = 32
    max_channels: int | None = 600
    down: int = 4

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (self.regression in REGRESSIONS, f"unknown regression {self.regression!r}: use 'pls' or 'ridge'"),
            (self.n_components >= 1, f"n_components must be >= 1, got {self.n_components}"),
            (self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}"),
            (self.folds >= 2, f"folds must be >= 2, got {self.folds}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.down >= 1, f"down must be >= 1, got {self.down}"),
        ]


@dataclass(frozen=True)
class ParticipantModel(Config):
    """How simulated participants click (all distances in units of the part's half-size).

    Per participant: share of clicks on the part ~ Beta(*part_beta), share anywhere in the
    image ~ Beta(*anywhere_beta), the rest on the body; scatter around the part centre
    ~ Uniform(*scatter); a personal aim offset ~ Normal(0, offset).

    Example:
        >>> ParticipantModel(min_clicks=3).max_clicks
        20
    """

    min_clicks: int = 5
    max_clicks: int = 20
    part_beta: tuple[float, float] = (6.0, 3.0)  # mean 0.67
    anywhere_beta: tuple[float, float] = (1.2, 12.0)  # mean 0.09
    scatter: tuple[float, float] = (0.6, 1.4)
    offset: float = 0.5

    def _checks(self) -> list[tuple[bool, str]]:
        return [(1 <= self.min_clicks <= self.max_clicks, "need 1 <= min_clicks <= max_clicks")]


@dataclass(frozen=True)
class SimulationConfig(Config):
    """Everything that determines a simulated ClickMe data set (stored in harmonia.json).

    ``blur_size`` None means the ClickMe setting (disk of 21 px at 256 px) scaled to the
    image size (:func:`harmonia.humans.blur.native_blur_size`; 5 px at 64 px).

    Example:
        >>> cfg = SimulationConfig(n_train=100, seed=4)
        >>> SimulationConfig.from_json(cfg.to_json()) == cfg, cfg.effective_blur_size
        (True, 5)
    """

    n_train: int = 3000
    n_test: int = 1000
    image_size: int = 64
    n_classes: int = 8
    shortcut_rate: float = 0.9
    n_subjects: int = 10
    seed: int = 0
    train_subjects: bool = False
    blur_size: int | None = None
    part_radius: tuple[float, float] = (4.5, 6.0)  # half-size range of the part, pixels at 64 px (scales with the image)
    participants: ParticipantModel = field(default_factory=ParticipantModel)

    def _checks(self) -> list[tuple[bool, str]]:
        from harmonia.humans.simulate_render import MAX_CLASSES

        return [
            (2 <= self.n_classes <= MAX_CLASSES, f"n_classes must be between 2 and {MAX_CLASSES}, got {self.n_classes}"),
            (0.0 <= self.shortcut_rate <= 1.0, f"shortcut_rate must be in [0, 1], got {self.shortcut_rate}"),
            (self.image_size >= 32, f"image_size must be at least 32, got {self.image_size}"),
            (self.n_train >= 1 and self.n_test >= 1, "n_train and n_test must be at least 1"),
            (self.n_subjects >= 1, f"n_subjects must be at least 1, got {self.n_subjects}"),
            (self.blur_size is None or (self.blur_size >= 1 and self.blur_size % 2 == 1),
             f"blur_size must be a positive odd number, got {self.blur_size}"),
        ]

    def validate(self) -> "SimulationConfig":
        """Raise :class:`~harmonia.errors.UserError` naming the first bad setting."""
        from harmonia.humans.simulate_render import check_part_radius

        check_part_radius(self.part_radius)
        return super().validate()

    @property
    def effective_blur_size(self) -> int:
        from harmonia.humans.blur import native_blur_size

        return self.blur_size if self.blur_size is not None else native_blur_size(self.image_size)

    def to_json(self) -> dict[str, Any]:
        """The settings plus the derived ``effective_blur_size`` (shown in harmonia.json, ignored when read)."""
        return {**super().to_json(), "effective_blur_size": self.effective_blur_size}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "SimulationConfig":
        """Inverse of :meth:`to_json` (e.g. ``harmonia.json``'s ``extra["simulation"]``): remake a data set."""
        return super().from_json({k: v for k, v in obj.items() if k != "effective_blur_size"})


@dataclass(frozen=True)
class ComparisonSettings(Config):
    """Data-set size, model and training budget of the comparison (both models share them).

    The defaults are the full demo (see docs/demo.md for how they were chosen and what
    they measured); :meth:`quick` is the CI-sized variant.

    Example:
        >>> ComparisonSettings().n_train, ComparisonSettings.quick().n_train
        (3000, 200)
    """

    # the simulated benchmark (harmonia.humans.simulate defaults)
    n_train: int = SimulationConfig.n_train
    n_test: int = SimulationConfig.n_test
    n_subjects: int = SimulationConfig.n_subjects
    sim_seed: int = SimulationConfig.seed
    shortcut_rate: float = SimulationConfig.shortcut_rate
    part_radius: tuple[float, float] = SimulationConfig.part_radius
    # model and training recipe
    width: int = 16
    epochs: int = 6
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    lambda_harmonization: float = 1.0
    # The map the evaluation scores; the released loss's signed channel mean lets the
    # colour-coded shortcut hide from the training saliency (docs/demo.md, measured).
    reducer: str = "max_abs"
    score: str = "logit"
    lambda_outside: float = 0.0  # harmonized model only (see harmonia.training.harmonizer_loss)
    # Harmonized model only, not in the release: the cross-entropy of the images reduced to
    # what people looked at. The gradient-map terms alone raise alignment but leave the
    # decision with the shortcut in every seed (docs/demo.md, measured); 0 = the release's loss.
    lambda_masked: float = 2.0
    seeds: tuple[int, ...] = (0,)
    # reporting
    # adversarial alignment: FMN (L2) on the first adv_images images of "test"
    adv_images: int = 100
    adv_steps: int = 200
    curve_eval_limit: int = 200  # images per split in the per-epoch evaluations (curves only)
    n_examples: int = 6  # rows of the side-by-side figure

    @classmethod
    def quick(cls, **overrides: Any) -> "ComparisonSettings":
        """Tiny sizes for CI: it runs the whole pipeline, its numbers mean little."""
        base = dict(n_train=200, n_test=64, n_subjects=4, width=8, epochs=2, curve_eval_limit=32, n_examples=3,
                    adv_images=16, adv_steps=30)
        return cls(**{**base, **overrides})

    def simulation_config(self) -> SimulationConfig:
        """The simulated-ClickMe settings of the comparison's data set.

        Example:
            >>> ComparisonSettings(shortcut_rate=0.7).simulation_config().shortcut_rate
            0.7
        """
        return SimulationConfig(n_train=self.n_train, n_test=self.n_test, n_subjects=self.n_subjects,
                                seed=self.sim_seed, shortcut_rate=self.shortcut_rate, part_radius=self.part_radius)
