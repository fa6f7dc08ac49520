"""Figures: overlays of feature-importance maps."""

from harmonia.viz.overlay import normalize_map, overlay_figure, save_overlay, signed_limit

__all__ = ["normalize_map", "overlay_figure", "save_overlay", "signed_limit"]
