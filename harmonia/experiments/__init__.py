"""Experiments: measurements composed into a study (train, then measure; several models, seeds).

- :mod:`harmonia.experiments.comparison`: the demo's baseline-vs-harmonized comparison
  as a study (train both with the same seed and budget, then measure both; run by
  :func:`harmonia.studies.run_study`) and its results read back for the report.
- :mod:`harmonia.experiments.demo`: the whole ``harmonia demo`` job (``run_demo``).
- One measurement over several models, what the commands call: ``evaluate_models``
  (:mod:`~harmonia.experiments.evaluation`), ``attack_models`` (:mod:`~harmonia.experiments.adversarial`),
  ``score_neural_models`` (:mod:`~harmonia.experiments.neural`). Each shows its work through a
  :class:`harmonia.utils.ui.UI` and returns its runs.

Reports (:mod:`harmonia.report`) render what an experiment returns; they train and
measure nothing.

Example:
    >>> from harmonia.experiments.comparison import ComparisonSettings
    >>> ComparisonSettings.quick().epochs
    2
"""
