"""Head pose and facial actions from MediaPipe face-mesh landmarks, in image terms.

The measures are ratios of distances in the picture, not angles of a fitted 3-D
head: what the customer does shows as a change against their own frontal baseline,
which keeps the thresholds independent of face shape, distance and camera.
Coordinates are pixels (x right, y down) of the image the mesh ran on; "left" and
"right" are the customer's own, and the camera does not mirror: turning to one's
left moves the nose towards the right of the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Landmark indices of the 468-point mesh.
NOSE_TIP = 1
CHEEK_IMAGE_LEFT, CHEEK_IMAGE_RIGHT = 234, 454
FOREHEAD, CHIN = 10, 152
# Eye: outer corner, inner corner, two upper-lid points, two lower-lid points.
EYE_IMAGE_LEFT = (33, 133, 160, 158, 144, 153)
EYE_IMAGE_RIGHT = (263, 362, 387, 385, 373, 380)
MOUTH_UPPER, MOUTH_LOWER, MOUTH_LEFT, MOUTH_RIGHT = 13, 14, 78, 308


@dataclass(frozen=True)
class Pose:
    # Nose offset from the cheeks' midpoint, in half face-widths: + is the customer's left.
    yaw: float
    # Nose height between the eye line (0) and the chin (1).
    pitch: float
    # Tilt of the eye line, degrees.
    roll: float
    # Eye and mouth openness (height over width).
    eyes: float
    mouth: float


def _dist(points: np.ndarray, a: int, b: int) -> float:
    return float(np.hypot(*(points[a] - points[b])))


def eye_openness(points: np.ndarray, eye: tuple[int, int, int, int, int, int]) -> float:
    outer, inner, up1, up2, low1, low2 = eye
    width = _dist(points, outer, inner)
    if width <= 0:
        return 0.0
    return (_dist(points, up1, low1) + _dist(points, up2, low2)) / (2.0 * width)


def pose(points: np.ndarray) -> Pose:
    """`points`: (N >= 468, 2) pixel coordinates of one face."""
    left, right = points[CHEEK_IMAGE_LEFT], points[CHEEK_IMAGE_RIGHT]
    half_width = max(float(np.hypot(*(right - left))) / 2.0, 1e-6)
    yaw = float(points[NOSE_TIP][0] - (left[0] + right[0]) / 2.0) / half_width
    eye_l = points[list(EYE_IMAGE_LEFT[:2])].mean(axis=0)
    eye_r = points[list(EYE_IMAGE_RIGHT[:2])].mean(axis=0)
    eye_mid = (eye_l + eye_r) / 2.0
    span = float(points[CHIN][1] - eye_mid[1])
    pitch = float(points[NOSE_TIP][1] - eye_mid[1]) / span if span > 0 else 0.0
    roll = math.degrees(math.atan2(float(eye_r[1] - eye_l[1]), float(eye_r[0] - eye_l[0])))
    eyes = (eye_openness(points, EYE_IMAGE_LEFT) + eye_openness(points, EYE_IMAGE_RIGHT)) / 2.0
    mouth_width = _dist(points, MOUTH_LEFT, MOUTH_RIGHT)
    mouth = _dist(points, MOUTH_UPPER, MOUTH_LOWER) / mouth_width if mouth_width > 0 else 0.0
    return Pose(yaw=yaw, pitch=pitch, roll=roll, eyes=eyes, mouth=mouth)


def face_box(points: np.ndarray, width: int, height: int, margin: float = 0.1) -> tuple[int, int, int, int]:
    """The face's bounding box with a margin, clipped to the image: (x0, y0, x1, y1)."""
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return (max(0, int(x0 - mx)), max(0, int(y0 - my)), min(width, int(x1 + mx) + 1), min(height, int(y1 + my) + 1))
