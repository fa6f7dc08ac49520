"""Evaluation of models' feature-importance maps against human maps."""

from harmonia.evaluation.evaluate import (
    Alignment,
    Ceiling,
    EvaluationResult,
    aggregate_rows,
    check_classes,
    evaluate,
    parse_ceiling_option,
    resolve_ceiling,
)

__all__ = ["Alignment", "Ceiling", "EvaluationResult", "aggregate_rows", "check_classes", "evaluate",
           "parse_ceiling_option", "resolve_ceiling"]
