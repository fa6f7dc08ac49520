"""Simulated ClickMe participants: where would people click to reveal the diagnostic part?

Each participant clicks a random number of times. Most clicks are Gaussian-scattered around
the diagnostic part (with a personal offset and spread), some land anywhere on the body, a
few anywhere in the image (inattention, mis-clicks). The mixture weights differ from one
participant to the next, so two halves of a group agree well but not perfectly: the
split-half ceiling computed from these clicks is clearly positive and clearly below 1.
Clicks that fall outside the image are kept; the click-map pipeline drops them, as it does
for real data.

Example:
    >>> import numpy as np
    >>> from harmonia.humans.simulate_render import render_sample
    >>> s = render_sample(np.random.default_rng(0), 64, part_class=1, cue_class=1)
    >>> xs, ys = simulate_clicks(np.random.default_rng(0), s, n_subjects=3)
    >>> len(xs), all(5 <= len(x) <= 20 for x in xs)
    (3, True)
"""

from __future__ import annotations


import numpy as np

from harmonia.humans.simulate_render import Sample
from harmonia.settings import ParticipantModel


def simulate_clicks(
    rng: np.random.Generator, sample: Sample, n_subjects: int, model: ParticipantModel = ParticipantModel()
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Click coordinates of ``n_subjects`` participants on one image: (xs, ys), one int array each.

    x is the column and y the row, as the click-map pipeline expects.

    Example:
        >>> import numpy as np
        >>> from harmonia.humans.simulate_render import render_sample
        >>> s = render_sample(np.random.default_rng(3), 64, part_class=0, cue_class=4)
        >>> xs, ys = simulate_clicks(np.random.default_rng(1), s, n_subjects=10)
        >>> x, y = np.concatenate(xs), np.concatenate(ys)
        >>> x0, y0, x1, y1 = s.object_box
        >>> bool(np.mean((x >= x0) & (x < x1) & (y >= y0) & (y < y1)) > 0.7)
        True
    """
    if model.min_clicks < 1 or model.max_clicks < model.min_clicks:
        raise ValueError("need 1 <= min_clicks <= max_clicks")
    h, w = sample.body_mask.shape
    body_rows, body_cols = np.nonzero(sample.body_mask >= 0.5)  # for "somewhere on the object"
    r = sample.part_radius
    # Per-participant habits, all drawn at once (one vectorised pass, no loop over clicks).
    n = rng.integers(model.min_clicks, model.max_clicks + 1, n_subjects)
    p_part = rng.beta(*model.part_beta, n_subjects)
    p_any = rng.beta(*model.anywhere_beta, n_subjects) * (1 - p_part)
    spread = rng.uniform(*model.scatter, n_subjects) * r
    aim = np.asarray(sample.part_center) + rng.normal(0, model.offset * r, (n_subjects, 2))
    who = np.repeat(np.arange(n_subjects), n)
    # One uniform per click picks its kind: [0, p_part) part, [1 - p_any, 1) anywhere, else body.
    u = rng.random(who.size)
    pts = aim[who] + rng.normal(0, 1, (who.size, 2)) * spread[who, None]
    anywhere = u >= 1 - p_any[who]
    on_body = (u >= p_part[who]) & ~anywhere
    if body_rows.size:
        k = rng.integers(body_rows.size, size=int(on_body.sum()))
        pts[on_body] = np.stack([body_cols[k], body_rows[k]], 1) + rng.random((k.size, 2))
    pts[anywhere] = rng.random((int(anywhere.sum()), 2)) * (w, h)
    pix = np.floor(pts).astype(np.int64)
    split = np.cumsum(n)[:-1]
    return np.split(pix[:, 0], split), np.split(pix[:, 1], split)
