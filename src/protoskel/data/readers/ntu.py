"""NTU RGB+D ``.skeleton`` text files (Kinect v2, 25 joints) -> SkeletonSequence (ntu-25).

The published format, one value group per line::

    <frame count>
    per frame:  <body count>
      per body: <bodyID clipedEdges handLeftConfidence handLeftState handRightConfidence
                 handRightState isResticted leanX leanY trackingState>
                <joint count (25)>
                per joint: <x y z depthX depthY colorX colorY
                            orientationW orientationX orientationY orientationZ trackingState>

Only ``x y z`` (camera space, metres) and the joint ``trackingState`` are kept. Bodies are
followed across frames by ``bodyID``; the ``max_bodies`` (default 2) bodies with the most motion
are kept, most active first. Motion energy of a body is the sum, over its 75 coordinates, of
the variance across the frames where it is present (the choice of the NTU baselines).
Frames where a kept body is absent are zeros with score 0.

Scores map the joint trackingState: 2 (tracked) -> 1.0, 1 (inferred) -> 0.5,
0 (not tracked) -> 0.0.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError
from protoskel.layouts import get_layout

__all__ = ["NTU_ACTIONS", "NTU_FPS", "TRACKING_SCORE", "parse_ntu_name", "read_ntu"]

NTU_FPS = 30.0
TRACKING_SCORE = {0: 0.0, 1: 0.5, 2: 1.0}
_BODY_FIELDS = 10
_JOINT_FIELDS = 12
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_JOINT_NAMES = (
    "x y z depthX depthY colorX colorY orientationW orientationX orientationY orientationZ "
    "trackingState"
).split()
_NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")

#: Short names of NTU RGB+D 120's actions; index k is action A{k+1:03d} (NTU-60: the first 60).
NTU_ACTIONS: tuple[str, ...] = tuple(
    """
drink_water eat_meal brush_teeth brush_hair drop pick_up throw sit_down stand_up clap read
write tear_up_paper put_on_jacket take_off_jacket put_on_shoe take_off_shoe put_on_glasses
take_off_glasses put_on_hat take_off_hat cheer_up wave_hand kick_something reach_into_pocket
hop jump_up phone_call play_with_phone type_on_keyboard point_with_finger take_selfie
check_time rub_hands nod_or_bow shake_head wipe_face salute palms_together cross_hands_stop
sneeze_or_cough stagger fall touch_head touch_chest touch_back touch_neck nausea_or_vomit
fan_oneself punch_or_slap_other kick_other push_other pat_back_of_other point_at_other
hug_other give_to_other touch_pocket_of_other handshake walk_towards_each_other walk_apart
put_on_headphone take_off_headphone shoot_at_basket bounce_ball tennis_swing
juggle_table_tennis_balls hush flick_hair thumb_up thumb_down ok_sign victory_sign staple_book
count_money cut_nails cut_paper snap_fingers open_bottle sniff squat_down toss_coin fold_paper
ball_up_paper play_magic_cube cream_on_face cream_on_hand_back put_on_bag take_off_bag
put_into_bag take_out_of_bag open_box move_heavy_objects shake_fist throw_up_cap hands_up
cross_arms arm_circles arm_swings run_on_the_spot butt_kicks cross_toe_touch side_kick yawn
stretch blow_nose hit_other_with_object wield_knife_at_other knock_over_other
grab_stuff_of_other shoot_other_with_gun step_on_foot high_five cheers_and_drink
carry_with_other photo_of_other follow_other whisper_to_other exchange_things support_other
rock_paper_scissors
""".split()
)


def parse_ntu_name(name: str) -> dict[str, int] | None:
    """Setup, camera, performer, replication, action numbers of an ``SsssCcccPpppRrrrAaaa`` name."""
    m = _NAME_RE.search(name)
    if m is None:
        return None
    keys = ("setup", "camera", "performer", "replication", "action")
    return {k: int(v) for k, v in zip(keys, m.groups(), strict=True)}


class _Lines:
    """A cursor over the file's lines that reports the 1-based line number of every problem."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        # Split on "\n" only so line numbers match what an editor shows.
        self.lines = [ln.rstrip("\r") for ln in text.split("\n")]
        while self.lines and not self.lines[-1].strip():
            self.lines.pop()
        self.pos = 0

    def error(self, what: str, line: int | None = None) -> DataFormatError:
        return DataFormatError(self.path, f"line {line or self.pos}", what)

    def next(self, expecting: str) -> list[str]:
        """Tokens of the next line; a missing line means the file is truncated."""
        if self.pos >= len(self.lines):
            raise DataFormatError(
                self.path,
                f"line {self.pos + 1}",
                f"file ends where {expecting} was expected; the file is truncated",
            )
        self.pos += 1
        return self.lines[self.pos - 1].split()

    def count(self, expecting: str) -> int:
        """A line holding one non-negative integer (frame, body or joint count)."""
        tokens = self.next(expecting)
        if len(tokens) != 1:
            raise self.error(f"expected {expecting} (one integer), found {len(tokens)} values")
        try:
            n = int(tokens[0])
        except ValueError:
            raise self.error(f"expected {expecting}, found {tokens[0]!r}") from None
        if n < 0:
            raise self.error(f"{expecting} is negative ({n})")
        return n


def _parse_body_info(cur: _Lines, frame: int, body: int) -> str:
    tokens = cur.next(f"the info line of body {body + 1} in frame {frame + 1}")
    if len(tokens) != _BODY_FIELDS:
        raise cur.error(
            f"body info line (frame {frame + 1}, body {body + 1}) needs {_BODY_FIELDS} values "
            f"(bodyID clipedEdges ... trackingState), found {len(tokens)}"
        )
    for i, tok in enumerate(tokens):
        try:
            float(tok)
        except ValueError:
            raise cur.error(f"body info value {i + 1} is not a number: {tok!r}") from None
    return tokens[0]


def _parse_joint(cur: _Lines, frame: int, body: int, joint: int) -> tuple[list[float], float]:
    tokens = cur.next(f"joint {joint + 1} of body {body + 1} in frame {frame + 1}")
    if len(tokens) != _JOINT_FIELDS:
        raise cur.error(
            f"joint line (frame {frame + 1}, body {body + 1}, joint {joint + 1}) needs "
            f"{_JOINT_FIELDS} values ({' '.join(_JOINT_NAMES)}), found {len(tokens)}"
        )
    values = []
    for i, tok in enumerate(tokens):
        try:
            values.append(float(tok))
        except ValueError:
            raise cur.error(f"{_JOINT_NAMES[i]} (value {i + 1}) is not a number: {tok!r}") from None
    xyz = values[:3]
    for i, v in enumerate(xyz):
        if not math.isfinite(v) or abs(v) > _FLOAT32_MAX:
            raise cur.error(
                f"{_JOINT_NAMES[i]} (value {i + 1}) is not a finite float32: {tokens[i]!r}"
            )
    state = values[-1]
    if state not in TRACKING_SCORE:
        raise cur.error(f"joint trackingState must be 0, 1 or 2, found {tokens[-1]!r}")
    return xyz, TRACKING_SCORE[int(state)]


def read_ntu(path: str | Path, max_bodies: int = 2) -> SkeletonSequence:
    """Read an NTU RGB+D ``.skeleton`` file into a SkeletonSequence in layout ntu-25."""
    if max_bodies < 1:
        raise ValueError(f"max_bodies must be at least 1, got {max_bodies}")
    path = Path(path)
    layout = get_layout("ntu-25")
    num_joints = layout.num_joints
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataFormatError(path, None, f"cannot read the file ({e.strerror})") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataFormatError(
            path, f"line {line}", "non-ASCII byte; an NTU .skeleton file is plain text"
        ) from None

    cur = _Lines(path, text)
    num_frames = cur.count("the frame count")
    if num_frames == 0:
        raise cur.error("the file announces zero frames; there is no clip to read")

    # bodies[key] = (first frame seen, {frame: xyz (V, 3)}, {frame: scores (V,)})
    bodies: dict[tuple[str, int], tuple[int, dict[int, np.ndarray], dict[int, np.ndarray]]] = {}
    for t in range(num_frames):
        n_bodies = cur.count(f"the body count of frame {t + 1} of {num_frames}")
        seen_ids: dict[str, int] = {}
        for b in range(n_bodies):
            body_id = _parse_body_info(cur, t, b)
            n_joints = cur.count(f"the joint count of body {b + 1} in frame {t + 1}")
            if n_joints != num_joints:
                raise cur.error(
                    f"body {b + 1} in frame {t + 1} has {n_joints} joints, but layout "
                    f"{layout.name!r} has {num_joints}"
                )
            xyz = np.empty((num_joints, 3), dtype=np.float32)
            score = np.empty(num_joints, dtype=np.float32)
            for v in range(num_joints):
                xyz[v], score[v] = _parse_joint(cur, t, b, v)
            # A repeated bodyID inside one frame is a distinct body, not an overwrite.
            occurrence = seen_ids.get(body_id, 0)
            seen_ids[body_id] = occurrence + 1
            key = (body_id, occurrence)
            if key not in bodies:
                bodies[key] = (t, {}, {})
            bodies[key][1][t] = xyz
            bodies[key][2][t] = score
    if cur.pos < len(cur.lines):
        raise cur.error(
            f"unexpected content after the last of the {num_frames} frames the file announces "
            "(wrong frame or body count?)",
            line=cur.pos + 1,
        )
    if not bodies:
        raise DataFormatError(
            path,
            None,
            f"no body is tracked in any of the {num_frames} frames "
            "(one of NTU's 'missing skeleton' samples); leave this file out",
        )

    def energy(item: tuple[tuple[str, int], Any]) -> float:
        frames = np.stack(list(item[1][1].values())).reshape(len(item[1][1]), -1)
        return float(frames.astype(np.float64).var(axis=0).sum())

    ranked = sorted(bodies.items(), key=lambda it: (-energy(it), it[1][0]))[:max_bodies]
    kp = np.zeros((len(ranked), num_frames, num_joints, 3), dtype=np.float32)
    sc = np.zeros((len(ranked), num_frames, num_joints), dtype=np.float32)
    for m, (_, (_, frames, scores)) in enumerate(ranked):
        for t, xyz in frames.items():
            kp[m, t] = xyz
            sc[m, t] = scores[t]

    name = path.name.removesuffix(".skeleton")
    info = parse_ntu_name(name)
    meta: dict[str, Any] = {"body_ids": [key[0] for key, _ in ranked], "num_bodies": len(bodies)}
    if info is not None:
        meta.update(info)
    seq = SkeletonSequence(
        keypoints=kp,
        layout=layout.name,
        scores=sc,
        # NTU names actions A001..A120; class indices are 0-based.
        label=None if info is None else info["action"] - 1,
        id=name,
        subject=None if info is None else info["performer"],
        view=None if info is None else info["camera"],
        fps=NTU_FPS,
        meta=meta,
    )
    seq.validate(path, layout)
    return seq
