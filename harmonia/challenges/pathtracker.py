"""PathTracker (Linsley, Malik et al., NeurIPS 2021): track one of many identical dots.

A video is T x 32 x 32 x 3 uint8 on black. Every dot is the same green 2 x 2 square, so only
motion tells the target apart. A red 3 x 3 hollow start marker is centred on the target's first
position and a blue end marker sits at the end of one of two full-length paths in every frame:
the target's (label 1) or a second path that carries its own dot (label 0). ``distractors``
more dots move on their own paths. Trajectories: :mod:`harmonia.challenges._tracking`.

Positions are top-left pixels of the dots, inside a 27 x 27 window (32 - 5) placed two pixels
from the border so that the markers around the first and last positions fit in the frame.
The markers are drawn over the dots (they are visible in every frame); a marker's centre is the
top-left pixel of the dot it marks.

Example:
    >>> import harmonia.challenges as hc
    >>> gen = hc.create("pathtracker", seed=0, frames=32, distractors=5)
    >>> s = gen[1]
    >>> s["video"].shape, s["label"], s["meta"]["trajectories"].shape
    ((32, 32, 32, 3), 1, (7, 32, 2))
    >>> tuple(s["meta"]["trajectories"][s["meta"]["target"], -1]) == s["meta"]["end_marker"]
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harmonia.challenges._tracking import (
    check_int,
    draw_markers,
    path_uniforms,
    paths_from_uniforms,
)
from harmonia.challenges.base import CHALLENGES, BatchedChallenge

SIZE = 32
WINDOW = SIZE - 5
OFFSET = 2  # window's top-left in the frame: markers (radius 1) around any position fit
MARKER = 3
MIN_END_GAP = 3.0  # pixels between the two full paths' ends: the end marker marks one of them unambiguously
FRAMES = (32, 64, 128)
DISTRACTORS = (0, 5, 14, 25)
SPEEDS = (1, 2, 4)
DOT_BYTES = np.array([0, 3, SIZE * 3, SIZE * 3 + 3])  # a 2 x 2 dot's pixels, in bytes from its top-left one


def end_gaps(paths: np.ndarray) -> np.ndarray:
    """Distance between the last positions of rows 0 and 1 of each video's paths (B x objects x T x 2)."""
    return np.linalg.norm((paths[:, 0, -1] - paths[:, 1, -1]).astype(float), axis=1)


@CHALLENGES.register("pathtracker", aliases=("path_tracker", "pt"))
class PathTracker(BatchedChallenge):
    """PathTracker videos; knobs ``frames`` (32, 64 default, 128), ``distractors`` (0, 5, 14 default,
    25), ``speed`` (1 default, 2, 4: path samples per frame). Other values are allowed when possible.

    ``gen[i]``: ``video`` (T x 32 x 32 x 3 uint8), ``label`` and ``meta`` with ``trajectories``
    (objects x T x 2 int, each dot's top-left (row, col) per frame), ``target`` and ``second``
    (rows of the two full paths), ``start_marker``, ``end_marker`` ((row, col) centres) and
    ``condition``.
    """

    modality = "video"
    object_size = 2  # a dot: trajectories hold its top-left pixel
    name = "pathtracker"

    def __init__(self, seed: int = 0, frames: int = 64, distractors: int = 14, speed: int = 1,
                 length: int = 20_000) -> None:
        frames = check_int("frames", frames, 2, 1024)
        distractors = check_int("distractors", distractors, 0, 200)
        speed = check_int("speed", speed, 1, 16)
        super().__init__(seed=seed, length=length, frames=frames, distractors=distractors, speed=speed)
        self.frames, self.distractors, self.speed = frames, distractors, speed

    def sample_batch(self, rngs: list[np.random.Generator], labels: list[int]) -> list[dict[str, Any]]:
        """Videos for several generators at once: each video's random numbers come from its own
        generator (so the result equals drawing them one by one), the maths runs on all together."""
        n, n_obj, frames = len(rngs), 2 + self.distractors, self.frames
        u = np.stack([path_uniforms(r, n_obj, frames, self.speed) for r in rngs])
        paths = paths_from_uniforms(u.reshape(n * n_obj, -1), frames, self.speed, WINDOW).reshape(n, n_obj, frames, 2)
        paths += OFFSET
        # rows 0 and 1 are the two full paths; their ends must be told apart by the end marker. A
        # video whose ends are too close redraws its second path from its own generator until they
        # are apart; the redraws of all such videos are computed together, round by round.
        redraw = np.flatnonzero(end_gaps(paths) < MIN_END_GAP)
        for _ in range(1000):
            if not len(redraw):
                break
            u = np.concatenate([path_uniforms(rngs[b], 1, frames, self.speed) for b in redraw])
            paths[redraw, 1] = paths_from_uniforms(u, frames, self.speed, WINDOW) + OFFSET
            redraw = redraw[end_gaps(paths[redraw]) < MIN_END_GAP]
        else:  # pragma: no cover - needs a degenerate window
            raise RuntimeError("could not place two path ends apart")
        order = np.stack([r.permutation(n_obj) for r in rngs])  # the target's row is random, not always 0
        target, second = np.argmax(order == 0, axis=1), np.argmax(order == 1, axis=1)
        b = np.arange(n)
        # identical dots: the pixels do not depend on the order, so draw from the unshuffled rows
        # (0 the target, 1 the second full path)
        start = paths[:, 0, 0]
        end = np.where(np.asarray(labels)[:, None] == 1, paths[:, 0, -1], paths[:, 1, -1])
        video = np.zeros((n, frames, SIZE, SIZE, 3), np.uint8)
        # flat index of each dot's top-left green byte per (video, frame, dot), in frame order; then
        # one write per pixel of the dots (index arrays a quarter the size of one for all four: 1.4x)
        by_frame = paths.transpose(0, 2, 1, 3)
        corner = by_frame[..., 0] * (SIZE * 3) + by_frame[..., 1] * 3
        corner += (np.arange(n * frames) * (SIZE * SIZE * 3) + 1).reshape(n, frames, 1)
        corner, flat = corner.ravel(), video.reshape(-1)
        for offset in DOT_BYTES:
            flat[corner + offset] = 255
        draw_markers(video, start, end, MARKER)
        paths = paths[b[:, None], order]
        condition = f"frames={frames},distractors={self.distractors},speed={self.speed}"
        return [{"video": video[k], "label": int(labels[k]), "meta": {
            "trajectories": paths[k], "target": int(target[k]), "second": int(second[k]),
            "start_marker": (int(start[k, 0]), int(start[k, 1])), "end_marker": (int(end[k, 0]), int(end[k, 1])),
            "condition": condition}} for k in range(n)]
