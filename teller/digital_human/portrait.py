"""The portrait an avatar is drawn from: the photo, framed around its face, and its landmarks.

Landmarks come from MediaPipe face mesh (478 points, irises included) run once on the
source photo. They are cached beside it (`<photo>.landmarks.json`, keyed by the photo's
sha256), so the shipped default avatar is drawn even where mediapipe cannot be imported
and an operator's photo is analysed once, not at every start.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import BadRequest, Unavailable

log = logging.getLogger("teller.digital_human")

DEFAULT_PORTRAIT = Path(__file__).resolve().parent / "assets" / "default_avatar.jpg"
LANDMARK_COUNT = 478
CACHE_SUFFIX = ".landmarks.json"
# Framing: the face (forehead landmark 10 to chin 152) fills this share of the frame's
# height, centred across, its middle this far down; a head-and-shoulders shot.
FACE_SHARE = 0.43
FACE_CENTRE_Y = 0.42

FOREHEAD, CHIN = 10, 152


class PortraitError(BadRequest):
    """A portrait that cannot be drawn: unreadable, no face, several faces."""

    code = "avatar_invalid"


@dataclass(frozen=True)
class Crop:
    """The source rectangle that becomes the frame (source pixels; scale: frame px per source px)."""

    x: float
    y: float
    width: float
    height: float
    scale: float


@dataclass(frozen=True)
class Portrait:
    """The framed photo (BGR, frame size) and its landmarks in frame pixels (x, y, z)."""

    image: np.ndarray
    landmarks: np.ndarray
    source: Path
    crop: Crop

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def face_height(self) -> float:
        return float(np.linalg.norm(self.landmarks[CHIN, :2] - self.landmarks[FOREHEAD, :2]))


def load_portrait(path: str | Path | None = None, width: int = 640, height: int = 480) -> Portrait:
    """The portrait at `path` (None: the shipped default) framed to width x height."""
    source = Path(path) if path else DEFAULT_PORTRAIT
    image, digest = read_image(source)
    landmarks = source_landmarks(source, image, digest)
    return frame_portrait(image, landmarks, width, height, source)


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """The photo (BGR) and the sha256 of its file: the key of its landmarks' cache (of the
    file, not the pixels, which differ a little between JPEG decoders)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PortraitError(f"the portrait {path} cannot be read: {exc.strerror or exc}",
                            code="avatar_unreadable", path=str(path)) from exc
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise PortraitError(f"the portrait {path} is not an image OpenCV can read (JPEG, PNG, ...)",
                            code="avatar_unreadable", path=str(path))
    return image, hashlib.sha256(data).hexdigest()


def source_landmarks(path: Path, image: np.ndarray, digest: str) -> np.ndarray:
    """Landmarks of the photo as stored (pixels), from the cache when it matches the photo."""
    cache = path.with_name(path.name + CACHE_SUFFIX)
    landmarks = _read_cache(cache, digest, image.shape)
    if landmarks is not None:
        return landmarks
    landmarks = detect_landmarks(image, str(path))
    try:
        cache.write_text(json.dumps({
            "sha256": digest, "width": image.shape[1], "height": image.shape[0],
            "landmarks": np.round(landmarks.astype(np.float64), 2).tolist(),
        }))
    except OSError as exc:  # a read-only install: analysed again at the next start
        log.info("the portrait's landmarks cannot be cached", extra={"path": str(cache), "error": str(exc)})
    return landmarks


def _read_cache(cache: Path, digest: str, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        body = json.loads(cache.read_text())
        landmarks = np.asarray(body["landmarks"], dtype=np.float32)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if body.get("sha256") != digest or landmarks.shape != (LANDMARK_COUNT, 3):
        return None
    if (body.get("width"), body.get("height")) != (shape[1], shape[0]):
        return None
    return landmarks


def detect_landmarks(image: np.ndarray, name: str = "the portrait") -> np.ndarray:
    """Face mesh landmarks (pixels; z in the same scale as x) of the one face in a BGR image."""
    try:
        import mediapipe as mp  # heavy (TensorFlow Lite); only needed for a new photo
    except ImportError as exc:
        raise Unavailable("a new portrait needs mediapipe to find its face (pip install 'teller[avatar]')",
                          code="avatar_unavailable") from exc
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=2) as mesh:
        faces = mesh.process(rgb).multi_face_landmarks or []
    if not faces:
        raise PortraitError(f"no face found in {name}: use a frontal, evenly lit head-and-shoulders photo",
                            code="avatar_no_face")
    if len(faces) > 1:
        raise PortraitError(f"{len(faces)} faces found in {name}: the portrait must show one person",
                            code="avatar_many_faces", faces=len(faces))
    h, w = image.shape[:2]
    return np.array([(p.x * w, p.y * h, p.z * w) for p in faces[0].landmark], dtype=np.float32)


def frame_crop(landmarks: np.ndarray, image_width: int, image_height: int, width: int, height: int) -> Crop:
    """The "cover" crop that frames the face: as large as FACE_SHARE asks, never past the photo
    (a tight photo gives a larger face rather than borders)."""
    face = float(np.linalg.norm(landmarks[CHIN, :2] - landmarks[FOREHEAD, :2]))
    if face < 8:
        raise PortraitError("the face in the portrait is too small to animate", code="avatar_no_face")
    scale = FACE_SHARE * height / face
    crop_w, crop_h = width / scale, height / scale
    fit = min(1.0, image_width / crop_w, image_height / crop_h)
    crop_w, crop_h, scale = crop_w * fit, crop_h * fit, scale / fit
    lo, hi = landmarks[:, :2].min(axis=0), landmarks[:, :2].max(axis=0)
    cx, cy = (lo + hi) / 2
    x = min(max(cx - crop_w / 2, 0.0), image_width - crop_w)
    y = min(max(cy - FACE_CENTRE_Y * crop_h, 0.0), image_height - crop_h)
    return Crop(x=float(x), y=float(y), width=float(crop_w), height=float(crop_h), scale=float(scale))


def frame_portrait(image: np.ndarray, landmarks: np.ndarray, width: int, height: int, source: Path) -> Portrait:
    crop = frame_crop(landmarks, image.shape[1], image.shape[0], width, height)
    x, y, scale = crop.x, crop.y, crop.scale
    if scale < 1.0:  # shrinking: average source pixels first, or fine detail aliases
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        x, y, scale = x * crop.scale, y * crop.scale, 1.0
    matrix = np.array([[scale, 0.0, -x * scale], [0.0, scale, -y * scale]])
    framed = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE)
    placed = landmarks.astype(np.float32).copy()
    placed[:, 0] = (placed[:, 0] - crop.x) * crop.scale
    placed[:, 1] = (placed[:, 1] - crop.y) * crop.scale
    placed[:, 2] *= crop.scale
    return Portrait(image=framed, landmarks=placed, source=source, crop=crop)
