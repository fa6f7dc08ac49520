"""The 3D-PC (Linsley, Zhou et al., ICLR 2025): readers, the linear-probe and fine-tune protocols,
the published per-model tables, and SYNTHETIC 3D-PC-like scenes for tests and the example.

- :mod:`.data`: the released ``<task>/<split>/<0|1>/*.png`` layout and the Hugging Face parquets;
- :mod:`.probe`: features extracted once and cached in the results store, the published head;
- :mod:`.tables`: the 327-model published tables (CC-BY-4.0) and the report scatter;
- :mod:`.scenes`: SYNTHETIC scenes (ball, object, viewer) with labels from their geometry.
"""

from harmonia.challenges.threedpc import scenes  # noqa: F401  (registers "3dpc-synthetic")
