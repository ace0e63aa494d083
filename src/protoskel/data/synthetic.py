"""Procedural skeleton action clips in the ``kinect-v1-20`` layout, for demos and tests.

Each clip is made the way a motion-capture rig would make it: a rest pose built from bone
lengths, joint angles animated over time, and forward kinematics down the layout's parent tree,
so bone lengths stay constant within a clip (before the optional sensor noise). Coordinates are
Kinect-style camera space in metres: y up, the subject about 3 m in front of the camera at yaw
0 facing it (towards -z), the subject's right on +x.

Every clip varies: subject (body size and proportions), speed, amplitude, phase, onset, yaw about
the vertical axis, position, idle sway of the limbs that do not act, sensor noise and length
(30-70 frames at 30 fps). Everything is drawn from ``numpy.random.default_rng`` seeded by the
caller, and all clips are computed at once (vectorised over clips and frames), so a few hundred
clips take a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import ConfigError
from protoskel.layouts import Layout, get_layout

__all__ = [
    "CLASSES",
    "FPS",
    "LAYOUT",
    "NUM_SUBJECTS",
    "generate",
    "rest_offsets",
    "subject_bones",
    "synthetic_splits",
    "write_synthetic_store",
]

LAYOUT = "kinect-v1-20"
FPS = 30.0
CLASSES: tuple[str, ...] = (
    "wave_right",
    "wave_left",
    "squat",
    "jump",
    "punch_right",
    "walk_in_place",
)
#: Subjects are a fixed cast: subject ``s`` has the same body in every call (like a dataset).
NUM_SUBJECTS = 10
_SUBJECT_SALT = 0x5EC7  # keeps the cast independent of the clip seed
_MIN_LEN, _MAX_LEN = 30, 70

# Rest pose: unit direction of each bone (parent -> joint) in the body frame (x = subject's
# right, y = up, z = backwards) and its length in metres for a 1.75 m adult.
_REST: dict[str, tuple[tuple[float, float, float], float]] = {
    "spine": ((0.0, 1.0, 0.0), 0.21),
    "shoulder_center": ((0.0, 1.0, 0.0), 0.25),
    "head": ((0.0, 1.0, 0.0), 0.19),
    "left_shoulder": ((-1.0, -0.15, 0.0), 0.17),
    "left_elbow": ((0.0, -1.0, 0.0), 0.29),
    "left_wrist": ((0.0, -1.0, 0.0), 0.26),
    "left_hand": ((0.0, -1.0, 0.0), 0.08),
    "right_shoulder": ((1.0, -0.15, 0.0), 0.17),
    "right_elbow": ((0.0, -1.0, 0.0), 0.29),
    "right_wrist": ((0.0, -1.0, 0.0), 0.26),
    "right_hand": ((0.0, -1.0, 0.0), 0.08),
    "left_hip": ((-1.0, -0.5, 0.0), 0.10),
    "left_knee": ((0.0, -1.0, 0.0), 0.43),
    "left_ankle": ((0.0, -1.0, 0.0), 0.41),
    "left_foot": ((0.0, -0.3, -1.0), 0.10),
    "right_hip": ((1.0, -0.5, 0.0), 0.10),
    "right_knee": ((0.0, -1.0, 0.0), 0.43),
    "right_ankle": ((0.0, -1.0, 0.0), 0.41),
    "right_foot": ((0.0, -0.3, -1.0), 0.10),
}
# Bone groups that share one per-subject proportion factor (left and right stay symmetric).
_SEGMENTS = {
    "torso": ("spine", "shoulder_center"),
    "neck": ("head",),
    "clavicle": ("left_shoulder", "right_shoulder"),
    "upper_arm": ("left_elbow", "right_elbow"),
    "forearm": ("left_wrist", "right_wrist", "left_hand", "right_hand"),
    "pelvis": ("left_hip", "right_hip"),
    "thigh": ("left_knee", "right_knee"),
    "shank": ("left_ankle", "right_ankle", "left_foot", "right_foot"),
}


def rest_offsets(layout: Layout | None = None) -> np.ndarray:
    """Rest-pose bone vectors (V, 3) in metres (root row zero) for the reference body."""
    lay = layout or get_layout(LAYOUT)
    out = np.zeros((lay.num_joints, 3))
    for name, (direction, length) in _REST.items():
        d = np.asarray(direction, dtype=np.float64)
        out[lay.index(name)] = d / np.linalg.norm(d) * length
    return out


def subject_bones(subject: int, layout: Layout | None = None) -> np.ndarray:
    """Bone vectors (V, 3) of one subject of the fixed cast: overall size and proportions."""
    lay = layout or get_layout(LAYOUT)
    rng = np.random.default_rng([_SUBJECT_SALT, int(subject)])
    size = rng.uniform(0.86, 1.12)
    factor = np.ones(lay.num_joints)
    for names in _SEGMENTS.values():
        f = rng.uniform(0.93, 1.07)
        for n in names:
            factor[lay.index(n)] = f
    return rest_offsets(lay) * (size * factor)[:, None]


# ------------------------------------------------------------------------------- rotations
def _euler(ang: np.ndarray) -> np.ndarray:
    """Matrices (..., 3, 3) from angles (..., 3) about (x, y, z), applied z, then x, then y.

    x is flexion (a limb hanging down swings forward for positive x), z is abduction (a limb
    hanging down swings towards +x), y is twist about the vertical. Written out in closed form
    (Ry @ Rx @ Rz) because stacked 3x3 matmuls are slow in numpy.
    """
    ca, sa = np.cos(ang[..., 0]), np.sin(ang[..., 0])
    cb, sb = np.cos(ang[..., 1]), np.sin(ang[..., 1])
    cg, sg = np.cos(ang[..., 2]), np.sin(ang[..., 2])
    r = np.empty((*ang.shape[:-1], 3, 3))
    r[..., 0, 0] = cb * cg + sb * sa * sg
    r[..., 0, 1] = sb * sa * cg - cb * sg
    r[..., 0, 2] = sb * ca
    r[..., 1, 0] = ca * sg
    r[..., 1, 1] = ca * cg
    r[..., 1, 2] = -sa
    r[..., 2, 0] = cb * sa * sg - sb * cg
    r[..., 2, 1] = sb * sg + cb * sa * cg
    r[..., 2, 2] = cb * ca
    return r


def _forward_kinematics(
    parents: Sequence[int], bones: np.ndarray, angles: np.ndarray, root: np.ndarray
) -> np.ndarray:
    """Joint positions (N, T, V, 3) from bone vectors (N, V, 3), angles (N, T, V, 3), root.

    ``angles[..., v, :]`` rotates the bone ending at joint ``v`` (and everything below it)
    about its parent joint, relative to the parent bone's frame; the root's angles are the
    body's global orientation and ``root`` (N, T, 3) its position. Parents must precede
    children in the joint order.
    """
    n, t, v, _ = angles.shape
    frames: list[np.ndarray] = []
    pos = np.empty((n, t, v, 3))
    for j, p in enumerate(parents):
        if p < 0:
            frames.append(_euler(angles[:, :, j]))
            pos[:, :, j] = root
            continue
        frame = frames[p]
        if np.any(angles[:, :, j]):  # most bones never rotate on their own; skip the product
            frame = np.einsum("ntab,ntbc->ntac", frame, _euler(angles[:, :, j]))
        frames.append(frame)
        pos[:, :, j] = pos[:, :, p] + np.einsum("ntab,nb->nta", frame, bones[:, j])
    return pos


# ----------------------------------------------------------------------------- the motions
def _smooth_step(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, a smooth cubic in between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _bump(x: np.ndarray) -> np.ndarray:
    """sin^2 hump on [0, 1], zero outside."""
    inside = (x > 0) & (x < 1)
    return np.where(inside, np.sin(np.pi * np.clip(x, 0.0, 1.0)) ** 2, 0.0)


class _Clip:
    """Per-class motion writer: views of the angle and root arrays plus per-clip draws."""

    def __init__(
        self, lay: Layout, angles: np.ndarray, root: np.ndarray, p: dict[str, np.ndarray]
    ) -> None:
        self.lay, self.angles, self.root, self.p = lay, angles, root, p

    def add(self, joint: str, axis: int, value: np.ndarray) -> None:
        """Add an angle track (N, T) to a joint's rotation about one axis."""
        self.angles[:, :, self.lay.index(joint), axis] += value


def _wave(c: _Clip, side: str) -> None:
    """Arm raised sideways, forearm up and swinging side to side."""
    p = c.p
    sign = 1.0 if side == "right" else -1.0
    env = p["env"]
    osc = np.sin(p["omega"] * 2.2 * p["t"] + p["phase"])
    c.add(f"{side}_elbow", 2, sign * env * p["amp"] * 1.45)  # raise the upper arm sideways
    c.add(f"{side}_elbow", 0, env * 0.25)
    c.add(f"{side}_wrist", 2, sign * env * (1.35 + 0.45 * p["amp"] * osc))  # forearm waves
    c.add(f"{side}_hand", 2, sign * env * 0.25 * osc)
    c.add("head", 1, -sign * env * 0.15)


def _squat(c: _Clip) -> None:
    """One squat: hips drop with knees and hips flexing, arms forward, torso leaning."""
    p = c.p
    d = _bump((p["u"] - p["u0"]) / (p["u1"] - p["u0"]))
    alpha = p["amp"] * 1.15 * d  # thigh flexion
    for side in ("left", "right"):
        c.add(f"{side}_knee", 0, alpha)
        c.add(f"{side}_ankle", 0, -2.0 * alpha)  # shank back: the feet stay under the body
        c.add(f"{side}_foot", 0, alpha)
        c.add(f"{side}_elbow", 0, 1.35 * d)  # arms forward for balance
    c.add("spine", 0, -0.45 * d)  # lean forward
    c.add("head", 0, 0.3 * d)
    c.root[..., 1] -= p["leg"] * (1.0 - np.cos(alpha))


def _jump(c: _Clip) -> None:
    """Crouch, take off with an arm swing, flight, landing crouch."""
    p = c.p
    u = (p["u"] - p["u0"]) / (p["u1"] - p["u0"])
    crouch = _bump(u / 0.35) + _bump((u - 0.65) / 0.35)
    flight = np.where((u > 0.35) & (u < 0.65), np.sin(np.pi * np.clip((u - 0.35) / 0.3, 0, 1)), 0)
    alpha = 0.75 * crouch
    for side in ("left", "right"):
        c.add(f"{side}_knee", 0, alpha)
        c.add(f"{side}_ankle", 0, -2.0 * alpha)
        c.add(f"{side}_foot", 0, alpha - 0.7 * flight)  # toes point down in the air
        c.add(f"{side}_elbow", 0, -0.55 * crouch + 2.4 * p["amp"] * flight)  # arm swing
        c.add(f"{side}_wrist", 0, 0.3 * crouch)
    c.add("spine", 0, -0.35 * crouch)
    c.root[..., 1] += p["height"] * flight - p["leg"] * (1.0 - np.cos(alpha))


def _punch(c: _Clip) -> None:
    """Fists in guard; the right one repeatedly thrown forward with a torso twist."""
    p = c.p
    env = p["env"]
    # Sharp extension, slower retraction: a skewed pulse per cycle.
    ph = np.mod(p["omega"] * 1.4 * p["t"] + p["phase"], 2 * np.pi) / (2 * np.pi)
    ext = env * _bump(np.where(ph < 0.45, ph / 0.9, 0.5 + (ph - 0.45) / 1.1))
    ext = ext * np.minimum(1.0, 0.5 + 0.5 * p["amp"])  # a punch always nearly extends
    for side, sign in (("left", -1.0), ("right", 1.0)):  # both fists up in guard
        c.add(f"{side}_elbow", 0, env * 0.45)
        c.add(f"{side}_elbow", 2, sign * env * 0.3)
        c.add(f"{side}_wrist", 0, env * 2.1)
    c.add("right_elbow", 0, 1.05 * ext)
    c.add("right_elbow", 2, -0.35 * ext)
    c.add("right_wrist", 0, -2.0 * ext)
    c.add("spine", 1, 0.3 * ext)  # the right shoulder comes forward


def _walk(c: _Clip) -> None:
    """Marching on the spot: knees lifted in turn, arms swinging against the legs."""
    p = c.p
    env = p["env"]
    ph = p["omega"] * 1.1 * p["t"] + p["phase"]
    for side, shift in (("left", 0.0), ("right", np.pi)):
        lift = env * p["amp"] * 0.85 * np.maximum(0.0, np.sin(ph + shift))
        c.add(f"{side}_knee", 0, lift)
        c.add(f"{side}_ankle", 0, -1.6 * lift)
        c.add(f"{side}_foot", 0, 0.4 * lift)
        # Arms swing against the leg on the same side.
        c.add(f"{side}_elbow", 0, -env * 0.45 * p["amp"] * np.sin(ph + shift))
        c.add(f"{side}_wrist", 0, env * 0.35)
    c.root[..., 1] += env * 0.025 * np.abs(np.sin(ph))


_MOTIONS: dict[str, Callable[[_Clip], None]] = {
    "wave_right": lambda c: _wave(c, "right"),
    "wave_left": lambda c: _wave(c, "left"),
    "squat": _squat,
    "jump": _jump,
    "punch_right": _punch,
    "walk_in_place": _walk,
}


def _idle(c: _Clip, rng: np.random.Generator) -> None:
    """What every clip has besides its action: sway, head motion, relaxed arm pose."""
    n = c.p["t"].shape[0]
    p = c.p

    def draw(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, (n, 1))

    slow = 2 * np.pi * draw(0.2, 0.6) * p["t"] + draw(0, 2 * np.pi)
    c.add("hip_center", 0, draw(0.0, 0.04) * np.sin(slow))
    c.add("hip_center", 2, draw(0.0, 0.04) * np.cos(slow))
    c.add("spine", 0, draw(-0.08, 0.04) + 0.02 * np.sin(slow))
    c.add("spine", 1, draw(-0.08, 0.08))
    c.add("head", 0, draw(-0.2, 0.1))
    c.add("head", 1, draw(-0.2, 0.2) + draw(0.0, 0.15) * np.sin(slow * 1.7))
    for side, sign in (("left", -1.0), ("right", 1.0)):
        c.add(f"{side}_elbow", 2, sign * draw(0.04, 0.25))
        c.add(f"{side}_elbow", 0, draw(-0.1, 0.25) + draw(0, 0.08) * np.sin(slow + sign))
        c.add(f"{side}_wrist", 0, draw(0.05, 0.5))
        c.add(f"{side}_knee", 2, sign * draw(0.0, 0.08))  # stance width
        c.add(f"{side}_ankle", 2, -sign * draw(0.0, 0.08))


# Arms a class's motion drives (left, right): distractor gestures leave them alone.
_BUSY_ARMS = {"wave_right": (False, True), "wave_left": (True, False), "punch_right": (True, True)}


def _distractors(c: _Clip, rng: np.random.Generator, busy: np.ndarray) -> None:
    """Movements unrelated to the label, so that no single pose or limb gives the class away.

    A free arm may gesture once (raise forward or sideways, bend the elbow: looks like the
    start of a wave or a punch); the knees may dip briefly (a shallow squat or a hop's crouch);
    the weight may shift from leg to leg. ``busy`` (N, 2) marks arms the action drives.
    """
    n = busy.shape[0]
    u = c.p["u"]

    def draw(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, (n, 1))

    for k, (side, sign) in enumerate((("left", -1.0), ("right", 1.0))):
        on = ((rng.random(n) < 0.5) & ~busy[:, k])[:, None]
        g = on * _bump((u - draw(-0.2, 0.7)) / draw(0.3, 0.7))
        c.add(f"{side}_elbow", 0, g * draw(0.2, 1.5))
        c.add(f"{side}_elbow", 2, sign * g * draw(0.0, 0.9))
        c.add(f"{side}_wrist", 0, g * draw(0.0, 1.6))
    dip = (rng.random(n) < 0.4)[:, None] * _bump((u - draw(-0.1, 0.7)) / draw(0.2, 0.5))
    alpha = dip * draw(0.1, 0.5)
    for side in ("left", "right"):
        c.add(f"{side}_knee", 0, alpha)
        c.add(f"{side}_ankle", 0, -2.0 * alpha)
        c.add(f"{side}_foot", 0, alpha)
    c.root[..., 1] -= c.p["leg"] * (1.0 - np.cos(alpha))
    shift = draw(0.0, 0.05) * np.sin(2 * np.pi * draw(0.2, 0.7) * c.p["t"] + draw(0, 2 * np.pi))
    c.add("hip_center", 2, shift)
    c.add("left_knee", 2, -shift)
    c.add("right_knee", 2, -shift)


def _glitches(pos: np.ndarray, lengths: np.ndarray, prob: float, rng: np.random.Generator) -> None:
    """Depth-sensor tracking errors in place: a hand or foot jumps away for a few frames."""
    n = pos.shape[0]
    hit = np.flatnonzero(rng.random(n) < prob)
    lay = get_layout(LAYOUT)
    ends = [lay.index(j) for j in ("left_hand", "right_hand", "left_foot", "right_foot")]
    joints = rng.choice(ends, size=hit.size)
    width = rng.integers(2, 7, size=hit.size)
    start = (rng.random(hit.size) * (lengths[hit] - width)).astype(np.int64)
    jump = rng.normal(0.0, 0.12, size=(hit.size, 3))
    for i, j, a, w, d in zip(hit, joints, start, width, jump, strict=True):
        pos[i, a : a + w, j] += d


# ------------------------------------------------------------------------------ generation
def generate(
    n_per_class: int,
    seed: int = 0,
    *,
    subjects: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    noise: float = 0.02,
    glitch_prob: float = 0.3,
    max_yaw_deg: float = 75.0,
) -> list[SkeletonSequence]:
    """``n_per_class`` clips of each class (class-major order), fully determined by ``seed``.

    ``subjects`` picks the cast members clips are drawn from (default: all ``NUM_SUBJECTS``),
    so disjoint subject lists give a cross-subject split. ``noise`` is the std in metres of
    per-joint sensor jitter and ``glitch_prob`` the chance that a clip has a short tracking
    error (a hand or foot jumps away); with both 0 the clip is exact forward kinematics, so
    every bone keeps its length in every frame. Labels index ``classes``
    (default ``CLASSES``); ``view`` is 0, 1 or 2 for a body yaw (about the vertical, 0 = facing
    the camera) below -20 deg, within +-20 deg, above 20 deg.
    """
    names = tuple(CLASSES if classes is None else classes)
    unknown = [c for c in names if c not in _MOTIONS]
    if unknown:
        raise ConfigError(f"synthetic classes: unknown {unknown}; known: {', '.join(CLASSES)}")
    if n_per_class < 0:
        raise ConfigError(f"synthetic n_per_class must be >= 0, got {n_per_class}")
    cast = np.arange(NUM_SUBJECTS) if subjects is None else np.asarray(list(subjects), np.int64)
    if cast.size == 0:
        raise ConfigError("synthetic subjects: need at least one subject")
    lay = get_layout(LAYOUT)
    if any(p >= j for j, p in enumerate(lay.parents)):
        raise ConfigError(f"layout {lay.name!r}: parents must precede children")
    n = n_per_class * len(names)
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(names)), n_per_class)
    subj = rng.choice(cast, size=n)
    lengths = rng.integers(_MIN_LEN, _MAX_LEN + 1, size=n)
    yaw = np.deg2rad(rng.uniform(-max_yaw_deg, max_yaw_deg, size=n))

    frames = np.arange(_MAX_LEN, dtype=np.float64)[None, :]
    col = lambda a: a[:, None]  # noqa: E731 - per-clip scalar -> (N, 1) for broadcasting
    u0 = rng.uniform(0.0, 0.3, n)
    p = {
        "t": np.broadcast_to(frames / FPS, (n, _MAX_LEN)),
        "u": frames / col(lengths - 1.0),  # 0..1 over the clip (beyond 1 in the padding)
        "u0": col(u0),
        "u1": col(rng.uniform(0.7, 1.0, n)),
        "env": _smooth_step((frames / col(lengths - 1.0) - col(u0)) / 0.15),
        "omega": col(2 * np.pi * rng.uniform(0.6, 1.5, n)),  # 1 Hz times speed
        "phase": col(rng.uniform(0, 2 * np.pi, n)),
        "amp": col(rng.uniform(0.45, 1.2, n)),
        "height": col(rng.uniform(0.06, 0.4, n)),
    }
    body = {int(s): subject_bones(int(s), lay) for s in np.unique(subj)}
    bones = np.stack([body[int(s)] for s in subj])
    knee, ankle = lay.index("left_knee"), lay.index("left_ankle")
    p["leg"] = col(np.linalg.norm(bones[:, knee], axis=1) + np.linalg.norm(bones[:, ankle], axis=1))

    angles = np.zeros((n, _MAX_LEN, lay.num_joints, 3))
    root = np.zeros((n, _MAX_LEN, 3))
    _idle(_Clip(lay, angles, root, p), rng)
    busy = np.array([_BUSY_ARMS.get(c, (False, False)) for c in names])[labels]
    _distractors(_Clip(lay, angles, root, p), rng, busy)
    for k, name in enumerate(names):
        sel = labels == k
        sub = {key: (v[sel] if v.shape[0] == n else v) for key, v in p.items()}
        a, r = angles[sel], root[sel]
        _MOTIONS[name](_Clip(lay, a, r, sub))
        angles[sel], root[sel] = a, r
    angles[:, :, lay.root, 1] += yaw[:, None]
    # Pelvis height from the legs' length; position on the floor a few metres from the camera.
    floor = np.stack([rng.uniform(-0.4, 0.4, n), np.zeros(n), rng.uniform(2.6, 3.4, n)], 1)
    root += floor[:, None, :]
    root[..., 1] += p["leg"] + 0.08
    pos = _forward_kinematics(lay.parents, bones, angles, root)
    if glitch_prob > 0:
        _glitches(pos, lengths, glitch_prob, rng)
    if noise > 0:
        pos = pos + rng.normal(0.0, noise, pos.shape)
    pos = pos.astype(np.float32)

    counters = dict.fromkeys(names, 0)
    views = np.digitize(np.rad2deg(yaw), [-20.0, 20.0])
    out = []
    for i in range(n):
        name = names[labels[i]]
        idx = counters[name]
        counters[name] += 1
        out.append(
            SkeletonSequence(
                keypoints=np.ascontiguousarray(pos[i, : lengths[i]])[None],
                layout=lay.name,
                label=int(labels[i]),
                id=f"syn_{name}_{idx:04d}",
                subject=int(subj[i]),
                view=int(views[i]),
                fps=FPS,
                meta={"class": name, "yaw_deg": float(np.rad2deg(yaw[i])), "source": "synthetic"},
            )
        )
    return out


def synthetic_splits(
    n_train_per_class: int = 40,
    n_val_per_class: int = 15,
    seed: int = 0,
    *,
    train_subjects: Sequence[int] = (0, 1, 2, 3, 4, 5, 6),
    val_subjects: Sequence[int] = (7, 8, 9),
    **kw: Any,
) -> dict[str, list[SkeletonSequence]]:
    """A cross-subject ``{"train": [...], "val": [...]}`` set (keywords go to :func:`generate`)."""
    train = generate(n_train_per_class, seed, subjects=train_subjects, **kw)
    val = generate(n_val_per_class, seed + 1, subjects=val_subjects, **kw)
    for s in val:  # ids stay unique across the splits
        s.id = s.id.replace("syn_", "syn_val_", 1)
    return {"train": train, "val": val}


def write_synthetic_store(
    out: str | Path,
    *,
    n_train_per_class: int = 40,
    n_val_per_class: int = 15,
    seed: int = 0,
    force: bool = False,
    **kw: Any,
) -> Path:
    """Generate a cross-subject train/val set and write it as a prepared store at ``out``."""
    from protoskel.data.store import write_store

    splits = synthetic_splits(n_train_per_class, n_val_per_class, seed, **kw)
    return write_store(
        out,
        splits,
        dataset="synthetic",
        protocol="cross-subject",
        layout=LAYOUT,
        classes=list(kw.get("classes") or CLASSES),
        source=f"protoskel.data.synthetic seed={seed}",
        extra={
            "train_subjects": sorted({s.subject for s in splits["train"]}),
            "val_subjects": sorted({s.subject for s in splits["val"]}),
        },
        force=force,
    )
