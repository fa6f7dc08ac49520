"""Measurements: one interface (:class:`Measurement`) and one keyed, resumable runner (:func:`run`)."""

from harmonia.measurements.base import Batch, Measurement, Result, dataset_ids, loader_batches, progress_events, run

__all__ = ["Batch", "Measurement", "Result", "dataset_ids", "loader_batches", "progress_events", "run"]
