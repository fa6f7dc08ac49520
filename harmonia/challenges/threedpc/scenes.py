"""SYNTHETIC 3D-PC-like scenes: a ball, an object and a viewer on a ground plane, ray-cast.

Not the 3D-PC (natural scenes rendered by Gaussian splatting): a small stand-in so that the
readers, the probe and the example run end to end without the real data. Every scene's
ground truth comes from its geometry:

- depth order (label 1): the ball's centre is nearer the camera than the object's centre;
- perspective taking (label 1): the viewer can see the ball: the ball is within 60 degrees of
  the viewer's facing direction and the segment from the viewer's eyes to the ball misses the
  object's cylinder.

The viewer is a body, a head and a dark visor on the side it faces. ``easy=True`` puts the
nearer of ball and object in a near band and the other far, so depth order is trivially given
by the ball's size; ``labels="random"`` writes labels unrelated to the scene (chance control).

Example:
    >>> gen = ThreeDPCScenes(seed=0, task="depth", size=48, length=4)
    >>> s = gen[1]
    >>> s["image"].shape, s["label"], s["meta"]["depth_label"], s["meta"]["synthetic"]
    ((48, 48, 3), 1, 1, True)
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from harmonia.challenges.base import CHALLENGES, Challenge
from harmonia.utils.io import atomic_write, atomic_write_text

CAMERA = np.array([0.0, 1.6, 0.0])
PITCH = math.radians(14.0)
FOV = math.radians(60.0)
BALL_R = 0.22
OBJ_R = 0.35
BODY_R, BODY_H, HEAD_R, EYE_H = 0.18, 1.05, 0.16, 1.25
VIEW_HALF_ANGLE = math.radians(60.0)
LIGHT = np.array([0.45, 0.8, -0.4]) / np.linalg.norm([0.45, 0.8, -0.4])
DEFAULT_SIZES = {"train": 64, "val": 32, "test": 64, "human": 16}


def _rays(size: int) -> np.ndarray:
    """Unit ray directions (size, size, 3) of the pitched pinhole camera."""
    half = math.tan(FOV / 2)
    u = np.linspace(-half, half, size)
    x, y = np.meshgrid(u, -u)
    forward = np.array([0.0, -math.sin(PITCH), math.cos(PITCH)])
    up = np.array([0.0, math.cos(PITCH), math.sin(PITCH)])
    right = np.array([1.0, 0.0, 0.0])
    d = forward + x[..., None] * right + y[..., None] * up
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def _sphere(d: np.ndarray, centre: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    oc = CAMERA - centre
    b = d @ oc
    disc = b * b - (oc @ oc - r * r)
    t = np.where(disc >= 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
    t = np.where(t > 0, t, np.inf)
    n = CAMERA + t[..., None] * d - centre
    return t, n / r


def _cylinder(d: np.ndarray, x: float, z: float, r: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertical cylinder standing on the ground, with its top cap."""
    ox, oz = CAMERA[0] - x, CAMERA[2] - z
    a = d[..., 0] ** 2 + d[..., 2] ** 2
    b = ox * d[..., 0] + oz * d[..., 2]
    c = ox * ox + oz * oz - r * r
    disc = b * b - a * c
    t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / np.maximum(a, 1e-12), np.inf)
    y = CAMERA[1] + t * d[..., 1]
    t = np.where((t > 0) & (y >= 0) & (y <= h), t, np.inf)
    n = np.stack([CAMERA[0] + t * d[..., 0] - x, np.zeros_like(t), CAMERA[2] + t * d[..., 2] - z], -1) / r
    with np.errstate(divide="ignore", invalid="ignore"):
        tc = (h - CAMERA[1]) / d[..., 1]
    px, pz = CAMERA[0] + tc * d[..., 0] - x, CAMERA[2] + tc * d[..., 2] - z
    cap = (tc > 0) & (px * px + pz * pz <= r * r) & (tc < t)
    t = np.where(cap, tc, t)
    n = np.where(cap[..., None], np.array([0.0, 1.0, 0.0]), n)
    return t, n


def line_of_sight(eye: np.ndarray, target: np.ndarray, obj_xz: np.ndarray, obj_h: float, r: float = OBJ_R) -> bool:
    """Whether the segment eye -> target misses the vertical cylinder (radius r, height obj_h).

    Example:
        >>> line_of_sight(np.array([0, 1, 0.]), np.array([0, 0.2, 4.]), np.array([0, 2.]), 1.0)
        False
    """
    s = np.linspace(0.0, 1.0, 400)[:, None]
    p = eye + s * (target - eye)
    inside = (np.hypot(p[:, 0] - obj_xz[0], p[:, 2] - obj_xz[1]) < r) & (p[:, 1] <= obj_h)
    return not bool(inside.any())


def _labels(ball: np.ndarray, obj_xz: np.ndarray, obj_h: float, viewer_xz: np.ndarray, facing: float) -> dict[str, Any]:
    obj_c = np.array([obj_xz[0], obj_h / 2, obj_xz[1]])
    depth = int(np.linalg.norm(ball - CAMERA) < np.linalg.norm(obj_c - CAMERA))
    eye = np.array([viewer_xz[0], EYE_H, viewer_xz[1]])
    to_ball = ball[[0, 2]] - viewer_xz
    f = np.array([math.cos(facing), math.sin(facing)])
    angle = math.acos(float(np.clip(to_ball @ f / np.linalg.norm(to_ball), -1, 1)))
    in_view = angle <= VIEW_HALF_ANGLE
    clear = line_of_sight(eye, ball, obj_xz, obj_h)
    return {"depth_label": depth, "perspective_label": int(in_view and clear), "in_view": bool(in_view),
            "unoccluded": bool(clear), "view_angle_deg": math.degrees(angle)}


def draw_scene(rng: np.random.Generator, easy: bool = False) -> dict[str, Any]:
    """Random geometry: ball, object (cylinder) and viewer on the ground, apart from each other."""
    while True:
        if easy:
            near, far = rng.uniform(3.0, 4.2), rng.uniform(7.5, 9.5)
            bz, oz = (near, far) if rng.random() < 0.5 else (far, near)
        else:
            bz, oz = rng.uniform(3.0, 9.0, size=2)
        vz = rng.uniform(3.5, 9.0)
        xs = rng.uniform(-1.0, 1.0, size=3) * np.array([bz, oz, vz]) * math.tan(FOV / 2) * 0.75
        ball = np.array([xs[0], BALL_R, bz])
        obj_xz, viewer_xz = np.array([xs[1], oz]), np.array([xs[2], vz])
        if rng.random() < 0.5 and not easy:  # put the object between viewer and ball: occlusion cases
            obj_xz = viewer_xz + rng.uniform(0.35, 0.65) * (ball[[0, 2]] - viewer_xz)
        pts = [ball[[0, 2]], obj_xz, viewer_xz]
        radii = [BALL_R, OBJ_R, BODY_R + 0.05]
        if all(np.linalg.norm(pts[i] - pts[j]) > radii[i] + radii[j] + 0.15 for i in range(3) for j in range(i + 1, 3)):
            break
    to_ball = math.atan2(ball[2] - viewer_xz[1], ball[0] - viewer_xz[0])
    facing = to_ball + rng.uniform(-1.0, 1.0) * math.radians(110)
    obj_h = rng.uniform(0.7, 1.3)
    colour = rng.uniform(0.15, 0.9, size=3)
    return {"ball": ball.tolist(), "object_xz": obj_xz.tolist(), "object_height": obj_h, "object_colour": colour.tolist(),
            "viewer_xz": viewer_xz.tolist(), "facing": facing,
            **_labels(ball, obj_xz, obj_h, viewer_xz, facing)}


def render(scene: dict[str, Any], size: int = 128) -> np.ndarray:
    """Ray-cast the scene: an H x W x 3 uint8 image."""
    with np.errstate(invalid="ignore", divide="ignore"):  # rays that miss a primitive carry inf
        return _render(scene, size)


def _render(scene: dict[str, Any], size: int) -> np.ndarray:
    d = _rays(size)
    hits: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    ball = np.array(scene["ball"])
    t, n = _sphere(d, ball, BALL_R)
    hits.append((t, n, np.array([0.85, 0.12, 0.1])))
    ox, oz = scene["object_xz"]
    t, n = _cylinder(d, ox, oz, OBJ_R, scene["object_height"])
    hits.append((t, n, np.array(scene["object_colour"])))
    vx, vz = scene["viewer_xz"]
    t, n = _cylinder(d, vx, vz, BODY_R, BODY_H)
    hits.append((t, n, np.array([0.25, 0.35, 0.75])))
    head = np.array([vx, EYE_H, vz])
    t, n = _sphere(d, head, HEAD_R)
    hits.append((t, n, np.array([0.95, 0.8, 0.65])))
    f = np.array([math.cos(scene["facing"]), 0.0, math.sin(scene["facing"])])
    t, n = _sphere(d, head + 0.11 * f, 0.085)  # the visor: which way the viewer looks
    hits.append((t, n, np.array([0.05, 0.05, 0.05])))
    tg = np.where(d[..., 1] < 0, -CAMERA[1] / d[..., 1], np.inf)
    finite = np.isfinite(tg)
    gx = np.where(finite, CAMERA[0] + tg * d[..., 0], 0.0)
    gz = np.where(finite, CAMERA[2] + tg * d[..., 2], 0.0)
    checker = ((np.floor(gx) + np.floor(gz)) % 2 == 0)
    ground = np.where(checker[..., None], np.array([0.55, 0.6, 0.45]), np.array([0.45, 0.5, 0.38]))
    sky = np.array([0.65, 0.8, 0.95]) * (0.8 + 0.2 * d[..., 1:2])
    img = np.where(np.isfinite(tg)[..., None], ground * (1.0 - 0.04 * np.minimum(tg, 12.0)[..., None]), sky)
    depth = tg.copy()
    for t, n, colour in hits:
        shade = 0.35 + 0.65 * np.clip(n @ LIGHT, 0, 1)
        front = t < depth
        img = np.where(front[..., None], colour * shade[..., None], img)
        depth = np.where(front, t, depth)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@CHALLENGES.register("3dpc-synthetic", aliases=("threedpc_synthetic", "3dpc_synthetic"))
class ThreeDPCScenes(Challenge):
    """SYNTHETIC 3D-PC-like scenes for one task, balanced by rejection on the geometric label."""

    modality = "image"
    name = "3dpc-synthetic"

    def __init__(self, seed: int = 0, task: str = "depth", size: int = 128, easy: bool = False,
                 labels: str = "geometry", length: int = 10_000) -> None:
        if task not in ("depth", "perspective"):
            raise ValueError(f"task must be depth or perspective, got {task!r}")
        if labels not in ("geometry", "random"):
            raise ValueError(f"labels must be geometry or random, got {labels!r}")
        if size < 16:
            raise ValueError(f"size must be >= 16 px, got {size}")
        super().__init__(seed=seed, length=length, task=task, size=int(size), easy=bool(easy), labels=labels)
        self.task, self.size, self.easy, self.labels = task, int(size), bool(easy), labels

    def sample(self, rng: np.random.Generator, label: int, index: int) -> dict[str, Any]:
        key = f"{self.task}_label"
        for _ in range(1000):
            scene = draw_scene(rng, self.easy)
            if self.labels == "random" or scene[key] == label:
                break
        else:  # pragma: no cover - both labels are common
            raise RuntimeError(f"no {self.task} scene with label {label} in 1000 draws")
        meta = {**scene, "synthetic": True, "task": self.task, "label_source": self.labels}
        return {"image": render(scene, self.size), "label": int(label), "meta": meta}


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_release(root: str | Path, sizes: dict[str, int] | None = None, size: int = 128, seed: int = 0,
                  easy: bool = False, labels: str = "geometry", tasks: tuple[str, ...] = ("perspective", "depth"),
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Write SYNTHETIC scenes in the release layout (``<task>/<split>/<0|1>/*.png`` + label CSVs).

    Each task and split has its own seed, so splits never share a scene. The human split's CSV
    has ``img_url,perspective_label,depth_label`` like the release's.
    """
    root = Path(root)
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    total = sum(sizes.values()) * len(tasks)
    done = 0
    for t_i, task in enumerate(tasks):
        for s_i, (split, n) in enumerate(sizes.items()):
            gen = ThreeDPCScenes(seed=seed * 1000 + 10 * t_i + s_i, task=task, size=size, easy=easy,
                                 labels=labels, length=max(n, 1))
            rows = []
            for i in range(n):
                s = gen[i]
                name = f"synthetic_{split}_{i:05d}.png"
                path = root / task / split / str(s["label"]) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda tmp, img=s["image"]: Image.fromarray(img).save(tmp, format="PNG"))
                m = s["meta"]
                other = "depth" if task == "perspective" else "perspective"
                lab = {task: s["label"], other: m[f"{other}_label"]}
                rows.append((f"{split}/{s['label']}/{name}", lab["perspective"], lab["depth"], s["label"]))
                done += 1
                if progress:
                    progress(done, total)
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            if split == "human":
                w.writerow(["img_url", "perspective_label", "depth_label"])
                w.writerows(r[:3] for r in rows)
            else:
                w.writerow(["img_url", "label"])
                w.writerows((r[0], r[3]) for r in rows)
            atomic_write_text(root / task / f"{split}.csv", buf.getvalue())
    info = {"synthetic": True, "what": "SYNTHETIC 3D-PC-like scenes (harmonia.challenges.threedpc.scenes), "
            "not the 3D-PC", "sizes": sizes, "size": size, "seed": seed, "easy": easy, "labels": labels}
    atomic_write_text(root / "SYNTHETIC.json", json.dumps(info, indent=1) + "\n")
    return root


def release_to_parquet(src: str | Path, dst: str | Path) -> Path:
    """Rewrite a release-layout tree in the Hugging Face layout (``<config>/<split>-00000-of-00001.parquet``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harmonia.challenges.threedpc.data import TASKS, available_splits, read_release

    dst = Path(dst)
    for task, (folder, config) in TASKS.items():
        if folder is None or not (Path(src) / folder).is_dir():
            continue
        for split in available_splits(src, task, "release"):
            data = read_release(src, task, split)
            images = [{"bytes": p.read_bytes(), "path": p.name} for p in data.paths]
            table = pa.table({"image": images, "label": data.labels.tolist()})
            out = dst / config / f"{split}-00000-of-00001.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(out, lambda tmp, t=table: pq.write_table(t, tmp))
    return dst
