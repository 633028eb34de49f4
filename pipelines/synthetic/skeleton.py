"""Articulated COCO-17 human body in walking, running, standing and cycling poses.

Segment lengths are fractions of stature from Winter's anthropometric model (D. A. Winter, *Biomechanics and
Motor Control of Human Movement*, 4th ed., 2009, fig. 4.1). Sagittal joint-angle ranges follow clinical gait
data: walking after Perry & Burnfield (*Gait Analysis*, 2nd ed., 2010), running after Novacheck ("The
biomechanics of running", Gait & Posture 7, 1998). Joints are in metres in the body frame: x forward,
y to the body's left, z up, origin on the ground under the pelvis. Keypoint order is COCO's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
J = {name: i for i, name in enumerate(KEYPOINTS)}
LEFT_SIDE = tuple(i for i, name in enumerate(KEYPOINTS) if name.startswith("left"))
RIGHT_SIDE = tuple(i for i, name in enumerate(KEYPOINTS) if name.startswith("right"))

# Fractions of stature (Winter 2009).
SHOULDER_HEIGHT = 0.818
HIP_HEIGHT = 0.530
ANKLE_HEIGHT = 0.039
THIGH = 0.245
SHANK = 0.246
UPPER_ARM = 0.186
FOREARM = 0.146
HALF_SHOULDER_WIDTH = 0.129
HALF_HIP_WIDTH = 0.095
# Face points relative to the point between the shoulders, as fractions of stature.
_FACE_JOINTS = [J[name] for name in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]
_FACE_OFFSETS = np.array([
    [0.045, 0.0, 0.107], [0.035, 0.032, 0.122], [0.035, -0.032, 0.122], [-0.010, 0.068, 0.112],
    [-0.010, -0.068, 0.112],
])


@dataclass(frozen=True)
class Gait:
    """One gait: stride (a full cycle, two steps) as a fraction of stature; angles in radians."""

    stride: float
    hip_mean: float  # mean hip flexion
    hip_swing: float  # amplitude of hip flexion/extension
    knee_stance: float  # knee flexion while the foot is on the ground
    knee_swing: float  # peak knee flexion in mid-swing
    shoulder_swing: float  # arm swing amplitude, opposite to the same-side leg
    elbow: float  # elbow flexion
    lean: float  # forward trunk lean


WALK = Gait(stride=0.82, hip_mean=np.deg2rad(8), hip_swing=np.deg2rad(21), knee_stance=np.deg2rad(10),
            knee_swing=np.deg2rad(62), shoulder_swing=np.deg2rad(17), elbow=np.deg2rad(22), lean=np.deg2rad(3))
RUN = Gait(stride=1.65, hip_mean=np.deg2rad(15), hip_swing=np.deg2rad(36), knee_stance=np.deg2rad(35),
           knee_swing=np.deg2rad(110), shoulder_swing=np.deg2rad(35), elbow=np.deg2rad(88), lean=np.deg2rad(10))
_STANDING_ELBOW = np.deg2rad(10)

# COCO lists every limb joint as a (left, right) pair, so slices pick both sides at once.
_SHOULDERS, _ELBOWS, _WRISTS, _HIPS, _KNEES, _ANKLES = (
    slice(J[f"left_{joint}"], J[f"left_{joint}"] + 2)
    for joint in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
)
_UPPER_BODY = slice(0, J["left_hip"])  # face, shoulders, elbows and wrists come before the hips


def _upright() -> np.ndarray:
    """Standing joints of a person of stature 1, before the limbs are hung (x is filled in later)."""
    joints = np.zeros((17, 3))
    joints[_FACE_JOINTS] = _FACE_OFFSETS + [0.0, 0.0, SHOULDER_HEIGHT]
    for pair in (_SHOULDERS, _ELBOWS, _WRISTS):
        joints[pair, 1] = [HALF_SHOULDER_WIDTH, -HALF_SHOULDER_WIDTH]
    for pair in (_HIPS, _KNEES, _ANKLES):
        joints[pair, 1] = [HALF_HIP_WIDTH, -HALF_HIP_WIDTH]
    joints[_SHOULDERS, 2] = SHOULDER_HEIGHT
    joints[_HIPS, 2] = HIP_HEIGHT
    return joints


_UPRIGHT = _upright()


def gait_pose(gait: Gait, phase: float, amount: float, stature: float) -> np.ndarray:
    """Joints (17, 3) at gait ``phase`` (radians; the left leg is in mid-swing at 0).

    ``amount`` in [0, 1] scales every swing from standing still (0) to the full gait (1), so slowing walkers
    take smaller steps instead of sliding. The pelvis height keeps the lower ankle on the ground.
    """
    leg_phase = phase + np.array([0.0, np.pi])  # left, right
    hip_flexion = amount * (gait.hip_mean + gait.hip_swing * np.sin(leg_phase))
    # The knee folds while the leg swings forward, i.e. while the hip flexion grows (cos > 0).
    knee_flexion = amount * (gait.knee_stance
                             + (gait.knee_swing - gait.knee_stance) * np.maximum(np.cos(leg_phase), 0.0) ** 2)
    upper_arm = -amount * gait.shoulder_swing * np.sin(leg_phase)  # arms swing against the same-side leg
    forearm = upper_arm + _STANDING_ELBOW + amount * (gait.elbow - _STANDING_ELBOW)
    joints = _UPRIGHT.copy()
    _hang(joints, _HIPS, _KNEES, THIGH, hip_flexion)
    _hang(joints, _KNEES, _ANKLES, SHANK, hip_flexion - knee_flexion)
    _hang(joints, _SHOULDERS, _ELBOWS, UPPER_ARM, upper_arm)
    _hang(joints, _ELBOWS, _WRISTS, FOREARM, forearm)
    pelvis = np.array([0.0, 0.0, HIP_HEIGHT])
    joints[_UPPER_BODY] = pelvis + _pitch(joints[_UPPER_BODY] - pelvis, amount * gait.lean)
    joints[:, 2] += ANKLE_HEIGHT - joints[_ANKLES, 2].min()
    return joints * stature


def _hang(joints: np.ndarray, roots: slice, ends: slice, length: float, angles: np.ndarray) -> None:
    """Places ``ends`` at ``length`` below ``roots``, swung forward by ``angles``."""
    joints[ends, 0] = joints[roots, 0] + length * np.sin(angles)
    joints[ends, 2] = joints[roots, 2] - length * np.cos(angles)


@dataclass(frozen=True)
class BicycleFit:
    """Where a rider touches a bicycle, in the bicycle's frame (metres)."""

    saddle: np.ndarray
    handlebar: np.ndarray
    crank_centre: np.ndarray
    crank_radius: float


def cycling_pose(fit: BicycleFit, crank: float, stature: float) -> np.ndarray:
    """Joints (17, 3) of a seated rider pedalling at crank angle ``crank`` (radians)."""
    joints = np.zeros((17, 3))
    lean = np.deg2rad(38)
    pelvis = fit.saddle + np.array([0.0, 0.0, 0.04 * stature])
    neck = pelvis + (SHOULDER_HEIGHT - HIP_HEIGHT) * stature * np.array([np.sin(lean), 0.0, np.cos(lean)])
    for side, sign, angle in (("left", 1.0, crank), ("right", -1.0, crank + np.pi)):
        # Cranks turn so that the upper pedal moves forward.
        pedal = fit.crank_centre + fit.crank_radius * np.array([np.cos(-angle), 0.0, np.sin(-angle)])
        hip = pelvis + np.array([0.0, sign * HALF_HIP_WIDTH * stature, 0.0])
        ankle_target = pedal + np.array([-0.02, sign * 0.12, 0.06])
        knee, ankle = _two_link(hip, ankle_target, THIGH * stature, SHANK * stature, bend=np.array([1.0, 0.0, 0.0]))
        shoulder = neck + np.array([0.0, sign * HALF_SHOULDER_WIDTH * stature, 0.0])
        grip = fit.handlebar + np.array([0.0, sign * 0.22, 0.0])
        elbow, wrist = _two_link(shoulder, grip, UPPER_ARM * stature, FOREARM * stature,
                                 bend=np.array([-0.3, 0.0, -1.0]))
        for joint, point in (("hip", hip), ("knee", knee), ("ankle", ankle), ("shoulder", shoulder),
                             ("elbow", elbow), ("wrist", wrist)):
            joints[J[f"{side}_{joint}"]] = point
    # Riders lift the head to look ahead, so the face tilts less than the trunk.
    _place_face(joints, neck, stature, lean / 3)
    return joints


def _place_face(joints: np.ndarray, neck: np.ndarray, stature: float, pitch: float) -> None:
    joints[_FACE_JOINTS] = neck + _pitch(_FACE_OFFSETS * stature, pitch)


def _pitch(points: np.ndarray, angle: float) -> np.ndarray:
    """Tilts points (N, 3) forward by ``angle`` about the left axis (up turns towards forward)."""
    c, s = np.cos(angle), np.sin(angle)
    x, z = points[:, 0], points[:, 2]
    return np.stack([c * x + s * z, points[:, 1], -s * x + c * z], axis=1)


def _two_link(root: np.ndarray, target: np.ndarray, upper: float, lower: float,
              bend: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Middle and end joint of a two-segment limb reaching from ``root`` towards ``target``.

    The limb bends in the plane of the reach and ``bend``; an out-of-reach target is approached along the
    same line, so segment lengths never change.
    """
    reach = target - root
    distance = float(np.linalg.norm(reach))
    along = reach / distance
    distance = float(np.clip(distance, abs(upper - lower) + 1e-6, upper + lower - 1e-6))
    side = bend - along * float(bend @ along)
    side /= np.linalg.norm(side)
    foot = (upper**2 - lower**2 + distance**2) / (2 * distance)
    middle = root + along * foot + side * np.sqrt(max(upper**2 - foot**2, 0.0))
    return middle, root + along * distance
