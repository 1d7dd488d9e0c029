"""One analysed frame: how many faces, how lit, how sharp, and the main face's pose.

MediaPipe's face mesh runs in tracking mode with room for two faces: while it tracks
fewer than two it runs its detector on every frame, so a second person stepping into
the picture is seen on the next analysed frame. All of it runs in a worker thread; a
FaceAnalyzer is one stream's, used by one thread at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from .geometry import Pose, face_box, pose

log = logging.getLogger("teller.identity")

# Wider frames are scaled down first: the mesh works on 192x192 crops anyway.
MAX_WIDTH = 640
# Frontal enough for the challenge to start, against the picture (not a baseline).
MAX_FRONTAL_YAW = 0.3
MAX_FRONTAL_ROLL = 20.0

FaceState = Literal["unknown", "one_face", "no_face", "several_faces", "too_dark", "not_frontal"]


class AnalysisUnavailable(RuntimeError):
    """MediaPipe (the avatar extra) is not installed."""


@dataclass(frozen=True)
class FaceReading:
    t: float
    faces: int
    # Mean luma (0-255) of the main face, or of the whole picture when there is none.
    brightness: float
    # Variance of the Laplacian of the main face's crop: higher is sharper.
    sharpness: float
    pose: Pose | None
    # The main face's box in the analysed picture, and that picture's size.
    box: tuple[int, int, int, int] | None
    size: tuple[int, int]

    def state(self, min_brightness: float) -> FaceState:
        if self.faces == 0:
            return "no_face"
        if self.faces > 1:
            return "several_faces"
        if self.brightness < min_brightness:
            return "too_dark"
        assert self.pose is not None
        if abs(self.pose.yaw) > MAX_FRONTAL_YAW or abs(self.pose.roll) > MAX_FRONTAL_ROLL:
            return "not_frontal"
        return "one_face"


def load_face_mesh(max_faces: int = 2, static: bool = False) -> Any:
    try:
        import mediapipe as mp
    except ImportError as exc:  # the avatar extra
        raise AnalysisUnavailable("MediaPipe is not installed (pip install 'teller[avatar]')") from exc
    return mp.solutions.face_mesh.FaceMesh(
        static_image_mode=static, max_num_faces=max_faces, refine_landmarks=True,
        min_detection_confidence=0.5, min_tracking_confidence=0.5,
    )


class FaceAnalyzer:
    def __init__(self, static: bool = False) -> None:
        self._mesh = load_face_mesh(static=static)

    def analyse(self, rgb: np.ndarray, t: float) -> FaceReading:
        """`rgb`: an (H, W, 3) uint8 picture."""
        if rgb.shape[1] > MAX_WIDTH:
            scale = MAX_WIDTH / rgb.shape[1]
            rgb = cv2.resize(rgb, (MAX_WIDTH, max(1, round(rgb.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        height, width = rgb.shape[:2]
        result = self._mesh.process(rgb)
        faces = list(result.multi_face_landmarks or [])
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if not faces:
            return FaceReading(t, 0, float(gray.mean()), 0.0, None, None, (width, height))
        meshes = [np.array([(p.x * width, p.y * height) for p in face.landmark], np.float32) for face in faces]
        main = max(meshes, key=lambda m: float(np.ptp(m[:, 0]) * np.ptp(m[:, 1])))
        box = face_box(main, width, height)
        crop = gray[box[1]:box[3], box[0]:box[2]]
        if crop.size == 0:
            return FaceReading(t, len(meshes), float(gray.mean()), 0.0, pose(main), None, (width, height))
        sharpness = float(cv2.Laplacian(crop, cv2.CV_64F).var())
        return FaceReading(t, len(meshes), float(crop.mean()), sharpness, pose(main), box, (width, height))

    def close(self) -> None:
        self._mesh.close()


def frame_to_rgb(planes: Any) -> np.ndarray:
    """From what `copy_frame` took on the event loop to RGB, in the worker."""
    kind, data = planes
    if kind == "i420":
        return cv2.cvtColor(data, cv2.COLOR_YUV2RGB_I420)
    return data


def copy_frame(frame: Any) -> tuple[str, np.ndarray]:
    """The frame's pixels, copied on the event loop: a planar copy for I420 (a memcpy;
    no reformatter, whose use from two threads is unsafe), else an RGB conversion."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return "i420", frame.to_ndarray(format="yuv420p")
    return "rgb", frame.to_ndarray(format="rgb24")
