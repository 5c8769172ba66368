"""Synthetic people: images of articulated stick figures with exact COCO keypoint annotations.

Every figure is drawn facing the viewer, so the person's left side is on the image's right side of the
body axis (as for real people seen from the front); in-plane rotation keeps that chirality, so a model
can tell left from right and a horizontal flip needs the keypoint flip pairs, exactly as for real data.
Left limbs are drawn in a green family of colours, right limbs in a magenta family, and the ears carry
their side's colour. Every keypoint is the centre of a drawn disc, so the pixel under each visible
keypoint belongs to the figure. Keypoints covered by another person or by an occluding block are
labelled but not visible (v=1); keypoints outside the image are unlabelled (v=0, x=y=0).

Geometry is built in a "side frame" (x outward from the body axis, y down) and mirrored for the right
side, so the figure is mirror-consistent with the COCO / COCO-WholeBody flip pairs.
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from posecli.atomic import atomic_write_text, atomic_write_with
from posecli.datasets.meta import DatasetMeta, load_builtin
from posecli.errors import PoseCliError

SUPPORTED = ("coco", "body_foot", "coco_wholebody")
SUBPIXEL_BITS = 4  # OpenCV drawing `shift`: coordinates are drawn (and stored) in 1/16 pixel steps
_SUB = 1 << SUBPIXEL_BITS
SIDES = {"left": 1.0, "right": -1.0}  # +1: the person's left is on the image's right (front view)
_FINGERS = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
# Hand points in a frame (along the forearm, towards the thumb side), in units of the hand length.
_HAND_BASE = {
    "thumb": [(0.10, 0.16), (0.22, 0.30), (0.34, 0.40), (0.45, 0.47)],
    "forefinger": [(0.45, 0.17), (0.62, 0.19), (0.74, 0.20), (0.85, 0.21)],
    "middle_finger": [(0.47, 0.05), (0.66, 0.05), (0.79, 0.05), (0.92, 0.05)],
    "ring_finger": [(0.45, -0.07), (0.63, -0.08), (0.75, -0.09), (0.86, -0.10)],
    "pinky_finger": [(0.40, -0.17), (0.54, -0.19), (0.64, -0.20), (0.73, -0.21)],
}
# Owner mask values: 0 background, 1..254 person index + 1, 255 an occluding block.
OCCLUDER = 255


@dataclass
class LimbPose:
    """One side's arm and leg: angles in radians measured from 'down' towards the outside of the body."""

    upper_arm: float
    elbow: float  # forearm angle relative to the upper arm
    wrist: float  # hand angle relative to the forearm
    finger_curl: float  # 0 straight .. 0.6 strongly curled (shortened fingers)
    thigh: float
    knee: float  # shin angle relative to the thigh
    foot: float  # foot angle relative to the shin
    length_scale: float = 1.0  # small per-side difference (perspective)


@dataclass
class Pose:
    """Everything that defines one figure's shape; lengths are fractions of the body height."""

    torso_lean: float = 0.0
    head_tilt: float = 0.0
    face_yaw: float = 0.0  # horizontal shift of the facial features, fraction of the head radius
    mouth_open: float = 0.05
    torso: float = 0.30
    shoulder_half: float = 0.11
    hip_half: float = 0.07
    head_radius: float = 0.075
    upper_arm: float = 0.16
    forearm: float = 0.15
    hand: float = 0.10
    thigh: float = 0.24
    shin: float = 0.23
    limbs: dict[str, LimbPose] = field(default_factory=dict)


def symmetric_pose() -> Pose:
    """A mirror-symmetric standing pose (used to check the figure against the flip pairs)."""
    limb = LimbPose(upper_arm=0.4, elbow=0.3, wrist=0.1, finger_curl=0.2, thigh=0.15, knee=-0.1, foot=0.9)
    return Pose(limbs={"left": limb, "right": LimbPose(**vars(limb))})


def sample_pose(rng: np.random.Generator) -> Pose:
    """A random pose: arms anywhere from down to raised, legs from closed to kicking, bent joints."""
    u = rng.uniform
    limbs = {}
    for side in SIDES:
        limbs[side] = LimbPose(
            upper_arm=u(-0.4, 2.9) if u() < 0.6 else u(-0.3, 1.0),
            elbow=u(-2.2, 2.2),
            wrist=u(-0.5, 0.5),
            finger_curl=u(0.0, 0.6),
            thigh=u(-0.3, 0.6) if u() < 0.85 else u(0.6, 1.6),
            knee=u(-1.4, 0.4),
            foot=u(0.3, 1.6),
            length_scale=u(0.92, 1.08),
        )
    return Pose(
        torso_lean=float(np.clip(rng.normal(0.0, 0.15), -0.5, 0.5)),
        head_tilt=float(np.clip(rng.normal(0.0, 0.2), -0.5, 0.5)),
        face_yaw=u(-0.25, 0.25),
        mouth_open=u(0.02, 0.1),
        torso=0.30 * u(0.9, 1.1),
        shoulder_half=0.11 * u(0.85, 1.15),
        hip_half=0.07 * u(0.85, 1.15),
        head_radius=0.075 * u(0.9, 1.1),
        upper_arm=0.16 * u(0.9, 1.1),
        forearm=0.15 * u(0.9, 1.1),
        hand=0.10 * u(0.9, 1.1),
        thigh=0.24 * u(0.9, 1.1),
        shin=0.23 * u(0.9, 1.1),
        limbs=limbs,
    )


def _side_dir(angle: float) -> np.ndarray:
    """Unit vector in the side frame: angle 0 points down, pi/2 points outward (x), pi points up."""
    return np.array([math.sin(angle), math.cos(angle)])


def _face_points(mouth_open: float) -> dict[str, tuple[float, float]]:
    """The 68 face points (iBUG order, as COCO-WholeBody) in head-radius units; x towards the person's left."""
    pts: dict[int, tuple[float, float]] = {}
    for t in range(17):  # jaw from the person's right ear round the chin to the left ear
        b = math.pi * t / 16
        pts[t] = (-0.86 * math.cos(b), 0.82 * math.sin(b))
    for i in range(5):  # eyebrows: the person's right (image left) first
        arch = -0.40 - 0.06 * math.sin(math.pi * i / 4)
        pts[17 + i] = (-0.62 + 0.11 * i, arch)
        pts[22 + i] = (0.18 + 0.11 * i, -0.40 - 0.06 * math.sin(math.pi * (4 - i) / 4))
    for i in range(4):  # nose bridge, top to tip
        pts[27 + i] = (0.0, -0.22 + 0.12 * i)
    for i in range(5):  # nostrils, right to left
        pts[31 + i] = (-0.2 + 0.1 * i, 0.24 + 0.04 * math.sin(math.pi * i / 4))
    rx, ry, cy = 0.17, 0.07, -0.17
    # eyes as rings from the image-left corner: top two, image-right corner, bottom two. For the right eye
    # (first) that is outer, top outer, top inner, inner, ...; for the left eye inner, top inner, ... as iBUG.
    for c, first in ((-0.36, 36), (0.36, 42)):
        ring = [(c - rx, cy), (c - rx / 3, cy - ry), (c + rx / 3, cy - ry), (c + rx, cy)]
        ring += [(c + rx / 3, cy + ry), (c - rx / 3, cy + ry)]
        for k, p in enumerate(ring):
            pts[first + k] = p
    mx, my, mc = 0.34, 0.12, 0.52
    for i in range(7):  # outer lip: right corner, over the top, to the left corner
        a = math.pi + i * math.pi / 6
        pts[48 + i] = (mx * math.cos(a), mc + my * math.sin(a))
    for i in range(1, 6):  # outer lip bottom, left to right
        a = i * math.pi / 6
        pts[54 + i] = (mx * math.cos(a), mc + my * math.sin(a))
    ix, iy = 0.22, mouth_open
    for i in range(5):  # inner lip top: right corner .. left corner
        a = math.pi + i * math.pi / 4
        pts[60 + i] = (ix * math.cos(a), mc + iy * math.sin(a))
    for i in range(1, 4):  # inner lip bottom, left to right
        a = i * math.pi / 4
        pts[64 + i] = (ix * math.cos(a), mc + iy * math.sin(a))
    return {f"face-{k}": pts[k] for k in range(68)}


def figure_points(pose: Pose) -> dict[str, np.ndarray]:
    """All keypoints of the figure (COCO-WholeBody names) plus helper points ('_'-prefixed).

    Coordinates are in body-height units, y down, origin at the pelvis; the figure faces the viewer.
    """
    up = np.array([math.sin(pose.torso_lean), -math.cos(pose.torso_lean)])
    right = np.array([math.cos(pose.torso_lean), math.sin(pose.torso_lean)])  # towards the image's right

    def to_body(side: str, v: np.ndarray) -> np.ndarray:
        """Side frame (x outward, y down along the torso) to the body frame."""
        return SIDES[side] * v[0] * right - v[1] * up

    pts: dict[str, np.ndarray] = {}
    pelvis = np.zeros(2)
    neck = pelvis + up * pose.torso
    pts["_pelvis"], pts["_neck"] = pelvis, neck
    for side, s in SIDES.items():
        limb = pose.limbs[side]
        k = limb.length_scale
        shoulder = neck - up * 0.02 + s * right * pose.shoulder_half
        elbow_dir = _side_dir(limb.upper_arm)
        elbow = shoulder + to_body(side, elbow_dir) * pose.upper_arm * k
        fore_angle = limb.upper_arm + limb.elbow
        wrist = elbow + to_body(side, _side_dir(fore_angle)) * pose.forearm * k
        pts[f"{side}_shoulder"], pts[f"{side}_elbow"], pts[f"{side}_wrist"] = shoulder, elbow, wrist
        # hand frame: a along the hand, n towards the thumb (outward when the arm hangs, palm forward)
        hand_angle = fore_angle + limb.wrist
        a = to_body(side, _side_dir(hand_angle))
        n = to_body(side, np.array([math.cos(hand_angle), -math.sin(hand_angle)]))
        hl = pose.hand * k
        pts[f"{side}_hand_root"] = wrist
        for finger in _FINGERS:
            base = _HAND_BASE[finger]
            prev_src = np.array(base[0])
            prev = wrist + (a * base[0][0] + n * base[0][1]) * hl
            pts[f"{side}_{finger}1"] = prev
            for j in range(1, 4):
                step = (np.array(base[j]) - prev_src) * (1.0 - limb.finger_curl * j / 3)  # curled: foreshortened
                prev_src = np.array(base[j])
                prev = prev + (a * step[0] + n * step[1]) * hl
                pts[f"{side}_{finger}{j + 1}"] = prev
        hip = pelvis + s * right * pose.hip_half
        knee = hip + to_body(side, _side_dir(limb.thigh)) * pose.thigh * k
        shin_angle = limb.thigh + limb.knee
        ankle = knee + to_body(side, _side_dir(shin_angle)) * pose.shin * k
        pts[f"{side}_hip"], pts[f"{side}_knee"], pts[f"{side}_ankle"] = hip, knee, ankle
        foot_angle = shin_angle + limb.foot
        f = to_body(side, _side_dir(foot_angle))
        m = to_body(side, np.array([math.cos(foot_angle), -math.sin(foot_angle)]))
        pts[f"{side}_big_toe"] = ankle + (f * 0.085 + m * 0.010) * k
        pts[f"{side}_small_toe"] = ankle + (f * 0.065 - m * 0.025) * k
        pts[f"{side}_heel"] = ankle + (-f * 0.020 - m * 0.030) * k
    # head: centre above the neck, tilted; facial features shifted sideways by the yaw
    head_up = np.array([math.sin(pose.torso_lean + pose.head_tilt), -math.cos(pose.torso_lean + pose.head_tilt)])
    head_right = np.array([-head_up[1], head_up[0]])
    r = pose.head_radius
    center = neck + head_up * (0.04 + r)
    pts["_head"] = center
    pts["_head_top"] = center + head_up * r

    def on_head(x: float, y: float, shift: float) -> np.ndarray:
        return center + head_right * (x + shift) * r - head_up * y * r

    yaw = pose.face_yaw
    for name, (x, y) in _face_points(pose.mouth_open).items():
        jaw = int(name.split("-")[1]) < 17
        pts[name] = on_head(x, y, 0.4 * yaw if jaw else yaw)
    pts["nose"] = pts["face-30"].copy()
    pts["left_eye"] = on_head(0.36, -0.17, yaw)
    pts["right_eye"] = on_head(-0.36, -0.17, yaw)
    pts["left_ear"] = on_head(0.98, -0.08, 0.0)
    pts["right_ear"] = on_head(-0.98, -0.08, 0.0)
    return pts


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    """HSV in [0, 1] to an OpenCV BGR colour tuple."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (round(b * 255), round(g * 255), round(r * 255))


def sample_palette(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    """Colours of one figure: left limbs green family, right limbs magenta family, torso blue or yellow."""
    u = rng.uniform
    left_h, right_h = u(0.27, 0.42), u(0.80, 0.93)
    pal = {
        "left": _hsv(left_h, u(0.6, 1.0), u(0.6, 1.0)),
        "right": _hsv(right_h, u(0.6, 1.0), u(0.6, 1.0)),
        "torso": _hsv(u(0.52, 0.68) if u() < 0.6 else u(0.10, 0.17), u(0.5, 0.9), u(0.5, 0.95)),
        "skin": _hsv(u(0.03, 0.10), u(0.3, 0.6), u(0.55, 0.95)),
        "face": _hsv(u(0.0, 1.0), u(0.2, 0.6), u(0.1, 0.3)),
    }
    pal["left_joint"] = tuple(int(c * 0.6) for c in pal["left"])  # type: ignore[assignment]
    pal["right_joint"] = tuple(int(c * 0.6) for c in pal["right"])  # type: ignore[assignment]
    return pal


class _Canvas:
    """Draws a figure's primitives into a colour-index label image; points are named, in 1/16 px."""

    def __init__(self, shape_hw: tuple[int, int], fixed: dict[str, tuple[int, int]]) -> None:
        self.label = np.zeros(shape_hw, dtype=np.uint8)  # (H, W) 0 = not drawn, i = colours[i - 1]
        self.colors: list[tuple[int, int, int]] = []
        self.fixed = fixed

    def color(self, bgr: tuple[int, int, int]) -> int:
        """Register a colour; return its label value."""
        self.colors.append(bgr)
        return len(self.colors)

    def line(self, a: str, b: str, thickness: float, ci: int) -> None:
        # OpenCV draws thick lines with round caps, so consecutive limbs join without gaps
        t = max(1, int(round(thickness)))
        cv2.line(self.label, self.fixed[a], self.fixed[b], ci, t, cv2.LINE_8, SUBPIXEL_BITS)

    def disc(self, a: str, radius: float, ci: int) -> None:
        r = max(_SUB, int(round(radius * _SUB)))  # at least 1 px, so the centre pixel is always covered
        cv2.circle(self.label, self.fixed[a], r, ci, -1, cv2.LINE_8, SUBPIXEL_BITS)

    def polygon(self, names: list[str], ci: int) -> None:
        poly = np.array([self.fixed[n] for n in names], dtype=np.int32)
        cv2.fillPoly(self.label, [poly], ci, cv2.LINE_8, SUBPIXEL_BITS)

    def polyline(self, names: list[str], thickness: float, ci: int) -> None:
        poly = np.array([self.fixed[n] for n in names], dtype=np.int32)
        t = max(1, int(round(thickness)))
        cv2.polylines(self.label, [poly], False, ci, t, cv2.LINE_8, SUBPIXEL_BITS)


def draw_figure(canvas: _Canvas, height_px: float, pal: dict[str, tuple[int, int, int]], far: str) -> None:
    """Draw one figure (points already placed in the canvas); `far` is the side drawn first (behind)."""
    h = height_px
    limb_t, thigh_t, joint_r = 0.045 * h, 0.06 * h, 0.028 * h
    finger_t = max(1.0, 0.012 * h)
    dot_r = max(1.0, 0.006 * h)
    ci = {name: canvas.color(bgr) for name, bgr in pal.items()}
    order = [far, "right" if far == "left" else "left"]
    for side in order:  # legs behind the torso
        c, cj = ci[side], ci[f"{side}_joint"]
        canvas.line(f"{side}_hip", f"{side}_knee", thigh_t, c)
        canvas.line(f"{side}_knee", f"{side}_ankle", limb_t, c)
        canvas.polygon([f"{side}_ankle", f"{side}_big_toe", f"{side}_small_toe", f"{side}_heel"], cj)
        for name in ("big_toe", "small_toe", "heel"):
            canvas.disc(f"{side}_{name}", dot_r * 1.5, cj)
    canvas.polygon(["left_shoulder", "right_shoulder", "right_hip", "left_hip"], ci["torso"])
    canvas.line("_neck", "_head", 0.05 * h, ci["skin"])
    # ears in their side's colour behind the head, then the head and the face
    canvas.disc("left_ear", 0.022 * h, ci["left"])
    canvas.disc("right_ear", 0.022 * h, ci["right"])
    head_r = math.dist(canvas.fixed["_head_top"], canvas.fixed["_head"]) / _SUB
    canvas.disc("_head", head_r, ci["skin"])
    face = ci["face"]
    for group in (range(0, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36), range(48, 55)):
        canvas.polyline([f"face-{i}" for i in group], 1.0, face)
    canvas.polyline([f"face-{i}" for i in (54, 55, 56, 57, 58, 59, 48)], 1.0, face)
    canvas.polyline([f"face-{i}" for i in (*range(60, 68), 60)], 1.0, face)
    for eye, side in ((range(36, 42), "right"), (range(42, 48), "left")):
        canvas.polygon([f"face-{i}" for i in eye], ci[f"{side}_joint"])
        canvas.disc(f"{side}_eye", dot_r * 1.5, ci[f"{side}_joint"])
    for i in range(68):
        canvas.disc(f"face-{i}", 0.6, face)
    canvas.disc("nose", dot_r * 1.5, face)
    for side in order:  # arms and hands in front of the torso
        c, cj = ci[side], ci[f"{side}_joint"]
        canvas.line(f"{side}_shoulder", f"{side}_elbow", limb_t, c)
        canvas.line(f"{side}_elbow", f"{side}_wrist", limb_t * 0.9, c)
        canvas.polygon([f"{side}_hand_root"] + [f"{side}_{f}1" for f in _FINGERS], c)
        for finger in _FINGERS:
            chain = [f"{side}_{finger}{j}" for j in range(1, 5)]
            canvas.polyline(chain, finger_t, cj)
            for name in chain:
                canvas.disc(name, dot_r, cj)
        for joint in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
            canvas.disc(f"{side}_{joint}", joint_r if joint != "wrist" else joint_r * 0.8, cj)


def _background(rng: np.random.Generator, image_wh: tuple[int, int]) -> np.ndarray:
    """A low-saturation textured background: gradient + blotches + grain + a few grey shapes. (H, W, 3) uint8."""
    w, h = image_wh
    u = rng.uniform
    # a 16 x 16 colour field (gradient between two corners + grey and coloured blotches), smoothly enlarged
    c0, c1 = (np.array(_hsv(u(), u(0.0, 0.3), u(0.2, 0.9)), np.float32) for _ in range(2))
    angle = u(0, 2 * math.pi)
    ramp = np.linspace(-0.5, 0.5, 16, dtype=np.float32)
    t = 0.5 + ramp[None, :] * math.cos(angle) + ramp[:, None] * math.sin(angle)  # (16, 16)
    small = c0 + t[..., None] * (c1 - c0)  # (16, 16, 3)
    small += rng.standard_normal((16, 16, 1), dtype=np.float32) * u(5, 30)
    small += rng.standard_normal((16, 16, 3), dtype=np.float32) * u(0, 8)
    field = cv2.resize(np.clip(small, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    # grey grain from raw random bytes (much cheaper than normal samples)
    grain = np.frombuffer(rng.bytes(w * h), dtype=np.uint8).reshape(h, w, 1).astype(np.int16) - 128
    amp = int(rng.integers(4, 24))
    out = np.clip(field.astype(np.int16) + (grain * amp >> 7), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 5))):  # distractors, never keypoint-like colours (low saturation)
        col = _hsv(u(), u(0.0, 0.25), u(0.1, 0.95))
        p = (int(u(0, w)), int(u(0, h)))
        q = (int(u(0, w)), int(u(0, h)))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.line(out, p, q, col, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(out, p, int(u(3, max(w, h) / 6)), col, -1 if u() < 0.5 else 2, cv2.LINE_AA)
        else:
            cv2.rectangle(out, p, q, col, -1 if u() < 0.3 else 2)
    return out


@dataclass
class SyntheticPerson:
    """One annotated figure: keypoints (K, 3) x, y, v in image pixels; bbox xywh around its drawn pixels."""

    keypoints: np.ndarray
    bbox_xywh: tuple[int, int, int, int]
    palette: dict[str, tuple[int, int, int]]
    height_px: float
    rotation: float
    mask: np.ndarray  # (H, W) bool: every pixel drawn for this figure, including those covered later


@dataclass
class SyntheticImage:
    """A rendered image (H, W, 3) uint8 BGR, its owner mask (H, W) uint8 and the annotated people."""

    image: np.ndarray
    owner: np.ndarray
    people: list[SyntheticPerson]


def _place(
    names: list[str], canon: np.ndarray, height_px: float, rotation: float, offset: np.ndarray
) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """Rotate, scale and shift canonical points (P, 2); return image xy (P, 2) and the 1/16 px drawing points."""
    c, s = math.cos(rotation), math.sin(rotation)
    rot = np.array([[c, -s], [s, c]])
    fixed = np.round((canon @ rot.T * height_px + offset) * _SUB).astype(np.int64)  # (P, 2)
    return fixed / _SUB, dict(zip(names, map(tuple, fixed.tolist()), strict=True))


def render_synthetic_image(
    meta: DatasetMeta, image_wh: tuple[int, int], rng: np.random.Generator, max_people: int = 2
) -> SyntheticImage:
    """Draw 1..max_people figures on a textured background, maybe occlude them, and annotate them."""
    w, h = image_wh
    u = rng.uniform
    image = _background(rng, image_wh)
    owner = np.zeros((h, w), dtype=np.uint8)  # (H, W) who is on top of each pixel
    n_people = 1 if max_people <= 1 or u() < 0.55 else int(rng.integers(2, max_people + 1))
    side = min(w, h)
    drawn = []
    for idx in range(n_people):
        pose = sample_pose(rng)
        pal = sample_palette(rng)
        height_px = side * (u(0.45, 0.85) if n_people == 1 else u(0.35, 0.7))
        rotation = float(np.clip(rng.normal(0.0, 0.3), -0.8, 0.8)) if u() < 0.85 else u(-math.pi, math.pi)
        points = figure_points(pose)
        names = list(points)
        canon = np.stack([points[n] for n in names])  # (P, 2)
        xy, _ = _place(names, canon, height_px, rotation, np.zeros(2))
        lo, hi = xy.min(0) - 0.03 * height_px, xy.max(0) + 0.03 * height_px
        size = hi - lo
        if u() < 0.2:  # truncated: the figure's box centre anywhere in the middle of the image
            centre = np.array([u(0.1 * w, 0.9 * w), u(0.1 * h, 0.9 * h)])
        else:  # inside when it fits
            cx = u(size[0] / 2, w - size[0] / 2) if size[0] < w else w / 2
            cy = u(size[1] / 2, h - size[1] / 2) if size[1] < h else h / 2
            centre = np.array([cx, cy])
        xy, fixed = _place(names, canon, height_px, rotation, centre - (lo + hi) / 2)
        canvas = _Canvas((h, w), fixed)
        draw_figure(canvas, height_px, pal, far="left" if u() < 0.5 else "right")
        mask = canvas.label > 0
        lut = np.array([(0, 0, 0), *canvas.colors], dtype=np.uint8)
        image[mask] = lut[canvas.label[mask]]
        owner[mask] = idx + 1
        drawn.append((dict(zip(names, xy, strict=True)), pal, height_px, rotation, mask))
    for _ in range(int(rng.integers(1, 3)) if u() < 0.35 else 0):  # occluding blocks over a random body point
        pts = drawn[int(rng.integers(0, len(drawn)))][0]
        names = [n for n in pts if not n.startswith("_")]
        c = pts[names[int(rng.integers(0, len(names)))]]
        bw, bh = u(0.08, 0.25) * side, u(0.08, 0.25) * side
        centre = (float(c[0] + u(-0.5, 0.5) * bw), float(c[1] + u(-0.5, 0.5) * bh))
        box = cv2.boxPoints((centre, (bw, bh), u(0, 180)))  # (4, 2) corners
        poly = np.round(box * _SUB).astype(np.int32)
        cv2.fillPoly(image, [poly], _hsv(u(), u(0.0, 0.5), u(0.15, 0.9)), cv2.LINE_8, SUBPIXEL_BITS)
        cv2.fillPoly(owner, [poly], OCCLUDER, cv2.LINE_8, SUBPIXEL_BITS)
    people = []
    for idx, (pts, pal, height_px, rotation, mask) in enumerate(drawn):
        if not mask.any():  # cannot happen with centres inside the image; never annotate an undrawn figure
            continue
        kpts = np.zeros((meta.num_keypoints, 3), dtype=np.float64)  # (K, 3) x, y, v; v=0 rows stay 0, 0, 0
        for k, name in enumerate(meta.keypoint_names):
            x, y = pts[name]
            px, py = int(round(x)), int(round(y))
            if 0 <= px < w and 0 <= py < h:
                kpts[k] = (x, y, 2 if owner[py, px] == idx + 1 else 1)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        bbox = (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
        people.append(SyntheticPerson(kpts, bbox, pal, height_px, rotation, mask))
    return SyntheticImage(image=image, owner=owner, people=people)


def _meta_for(keypoints: str) -> DatasetMeta:
    if keypoints not in SUPPORTED:
        raise PoseCliError(f"synthetic people support --keypoints {', '.join(SUPPORTED)}, not '{keypoints}'")
    return load_builtin(keypoints)


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of image `index` (images do not depend on how many are generated)."""
    return np.random.default_rng([seed, index])


def generate_synthetic_dataset(
    out_dir: str | Path,
    num_images: int,
    keypoints: str = "coco",
    image_size: int = 256,
    seed: int = 0,
    max_people: int = 2,
    image_ext: str = ".jpg",
) -> Path:
    """Write out_dir/images/NNNNNN.jpg and out_dir/annotations.json (COCO keypoints); return the JSON path."""
    meta = _meta_for(keypoints)
    if not 1 <= num_images <= 1_000_000:
        raise PoseCliError(f"--num-images must be between 1 and 1000000, got {num_images}")
    if not 32 <= image_size <= 4096:
        raise PoseCliError(f"--image-size must be between 32 and 4096 pixels, got {image_size}")
    if not 1 <= max_people <= 16:
        raise PoseCliError(f"--max-people must be between 1 and 16, got {max_people}")
    if image_ext not in (".jpg", ".png"):
        raise PoseCliError(f"image_ext must be .jpg or .png, got {image_ext}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PoseCliError("--out must be a folder for synthetic data", out_dir)
    img_dir = out_dir / "images"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if image_ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    images, annotations = [], []
    for i in range(num_images):
        sample = render_synthetic_image(meta, (image_size, image_size), image_rng(seed, i), max_people)
        image_id = i + 1
        file_name = f"{image_id:06d}{image_ext}"
        ok, buf = cv2.imencode(image_ext, sample.image, params)
        if not ok:
            raise PoseCliError(f"could not encode {file_name}", img_dir)
        atomic_write_with(img_dir / file_name, lambda fh, b=buf: fh.write(b.tobytes()))
        images.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
        for person in sample.people:
            k = person.keypoints
            bx, by, bw, bh = person.bbox_xywh
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [bx, by, bw, bh],
                    "area": bw * bh,  # box area: the OKS scale, as for converted datasets
                    "iscrowd": 0,
                    "num_keypoints": int((k[:, 2] > 0).sum()),
                    "keypoints": [float(v) if j % 3 != 2 else int(v) for j, v in enumerate(k.reshape(-1))],
                }
            )
    coco = {
        "info": {"description": f"posecli synthetic people ({keypoints}, seed {seed})"},
        "images": images,
        "annotations": annotations,
        "categories": [
            {
                "id": 1,
                "name": "person",
                "supercategory": "person",
                "keypoints": list(meta.keypoint_names),
                "skeleton": [[a + 1, b + 1] for a, b in meta.skeleton],  # COCO files are 1-based
            }
        ],
    }
    ann_file = out_dir / "annotations.json"
    atomic_write_text(ann_file, json.dumps(coco) + "\n")
    return ann_file
