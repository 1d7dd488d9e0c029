"""A real face photo that blinks, turns, nods and opens its mouth: for tests, the
benchmark and demos of the liveness check.

The photo is framed and rigged as the digital human does it (teller/digital_human):
its blink sprites stretch the eyelid's own skin over the eye, its mouth sprites drop
the jaw. Head turns and nods are geometric warps: the middle of the face (nose, eyes,
mouth) is displaced sideways or down under a smooth bump while the outline stays,
which is how a turn of a few tens of degrees looks in the picture. The face mesh then
finds these changes in the pixels, as it would on a camera.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from ..client.sources import VIDEO_CLOCK, VIDEO_TIME_BASE, PacedTrack
from ..digital_human.portrait import detect_landmarks, frame_portrait
from ..digital_human.rig import AvatarRig, build_rig
from .geometry import NOSE_TIP

TURN_SHIFT = 0.45  # of half the face's width, at full turn
NOD_SHIFT = 0.2  # of the face's height, at full nod


@dataclass(frozen=True)
class Look:
    blink: float = 0.0  # 0 open .. 1 closed
    mouth: float = 0.0  # 0 closed .. 1 wide open
    yaw: float = 0.0  # -1 full turn to the customer's right .. +1 to their left
    pitch: float = 0.0  # 0 level .. 1 nodded down


class ActingFace:
    """Blocking (face mesh, warps): build it in a worker thread or a test."""

    def __init__(self, rgb: np.ndarray, width: int = 640, height: int = 480) -> None:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        portrait = frame_portrait(bgr, detect_landmarks(bgr, "the photo"), width, height, Path("synthetic"))
        self.rig: AvatarRig = build_rig(portrait)
        points = portrait.landmarks[:, :2]
        lo, hi = points.min(axis=0), points.max(axis=0)
        self._face_w, self._face_h = float(hi[0] - lo[0]), float(hi[1] - lo[1])
        self._nose = points[NOSE_TIP]
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        self._grid = (xs, ys)
        sx, sy = 0.32 * self._face_w, 0.42 * self._face_h
        self._bump = np.exp(-(((xs - self._nose[0]) / sx) ** 2 + ((ys - self._nose[1]) / sy) ** 2) / 2).astype(np.float32)

    @property
    def size(self) -> tuple[int, int]:
        return self.rig.width, self.rig.height

    def frame(self, look: Look = Look()) -> np.ndarray:
        """The photo doing `look`, as RGB."""
        image = self.rig.base.copy()
        if look.mouth > 0:
            self.rig.mouth.paste(self.rig.mouth.index(look.mouth), image)
        if look.blink > 0:
            for eye in (self.rig.right_eye, self.rig.left_eye):
                eye.paste(eye.index(look.blink), image)
        if look.yaw or look.pitch:
            xs, ys = self._grid
            dx = look.yaw * TURN_SHIFT * self._face_w / 2
            dy = look.pitch * NOD_SHIFT * self._face_h
            # Backward map: a pixel shows what lay `shift` behind it under the bump.
            map_x = xs - dx * self._bump
            map_y = ys - dy * self._bump
            image = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def action(step: str, fps: float = 10.0) -> list[Look]:
    """The looks of one challenge step, at `fps`, from frontal back to frontal."""
    n = max(2, round(fps * 0.3))  # ramps of about 0.3 s
    ramp = [i / n for i in range(1, n + 1)]
    hold = [1.0] * max(1, round(fps * 0.3))

    def there_and_back(make: type[Look] | None = None, **key: float) -> list[Look]:
        name = next(iter(key))
        sign = key[name]
        amounts = ramp + hold + ramp[::-1][1:] + [0.0]
        return [Look(**{name: sign * a}) for a in amounts]

    if step == "blink":
        return [Look(blink=1.0)] * max(1, round(fps * 0.2)) + [Look()] * 2
    if step == "open_mouth":
        return there_and_back(mouth=1.0)
    if step == "turn_left":
        return there_and_back(yaw=1.0)
    if step == "turn_right":
        return there_and_back(yaw=-1.0)
    if step == "nod":
        return there_and_back(pitch=1.0)
    raise ValueError(f"no such step {step!r}")


class ActingTrack(PacedTrack):
    """A video track of an ActingFace that does what it is told: `perform(step)` plays
    the step's looks next; otherwise it looks straight at the camera. Each distinct look
    is drawn once and kept."""

    kind = "video"

    def __init__(self, face: ActingFace, fps: int = 15) -> None:
        super().__init__(fps)
        self.face, self.fps = face, fps
        self.queue: collections.deque[Look] = collections.deque()
        self.still = Look()
        self._drawn: dict[Look, np.ndarray] = {}

    def perform(self, step: str) -> None:
        self.queue.extend(action(step, self.fps))

    async def recv(self) -> av.VideoFrame:
        index = await self._next_slot()
        look = self.queue.popleft() if self.queue else self.still
        image = self._drawn.get(look)
        if image is None:
            image = self._drawn[look] = self.face.frame(look)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index * (VIDEO_CLOCK // self.fps)
        frame.time_base = VIDEO_TIME_BASE
        return frame
