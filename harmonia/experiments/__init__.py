"""Experiments: measurements composed into a study (train, then measure; several models, seeds).

- :mod:`harmonia.experiments.comparison`: the demo's baseline-vs-harmonized comparison
  (train both with the same seed and budget, then measure both through
  :func:`harmonia.measurements.run`).

Reports (:mod:`harmonia.report`) render what an experiment returns; they train and
measure nothing.

Example:
    >>> from harmonia.experiments.comparison import ComparisonSettings
    >>> ComparisonSettings.quick().epochs
    2
"""
