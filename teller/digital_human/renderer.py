"""One avatar's frames: the animation state at a time, drawn from the shared rig, as I420.

A frame costs a copy of the head's box, up to three sprite pastes, one remap of the box
and the colour conversion; the rest of the frame is the portrait, written once. Frames
are drawn one at a time, in order (the motion's smoothing is applied in frame order),
by whichever worker thread the track hands them to.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from .motion import AvatarState, Motion
from .rig import AvatarRig, load_rig

__all__ = ["AvatarRenderer", "load_rig"]


class AvatarRenderer:
    def __init__(self, rig: AvatarRig, *, fps: float = 30.0, seed: int = 0) -> None:
        self.rig = rig
        self.fps = fps
        self.motion = Motion(seed=seed, face_height=rig.face_height, fps=fps, mouth_levels=rig.mouth.levels)
        self.frames = 0
        self.render_seconds = 0.0
        head = rig.head
        self._frame = rig.base.copy()
        self._head_src = np.empty((head.height, head.width, 3), np.uint8)
        self._map = np.empty((head.height, head.width, 2), np.float32)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, portrait: str | Path | None = None, width: int = 640, height: int = 480,
                      fps: float = 30.0, seed: int = 0) -> AvatarRenderer:
        """A renderer with a rig of its own (blocking: face mesh, warps). Bots of one process
        share a rig instead: `AvatarRenderer(load_rig(...), ...)`."""
        return cls(load_rig(portrait, width, height), fps=fps, seed=seed)

    @property
    def width(self) -> int:
        return self.rig.width

    @property
    def height(self) -> int:
        return self.rig.height

    def render(self, t: float, level: float) -> np.ndarray:
        """The frame at monotonic time t for speech loudness `level` (0..1): I420, (h*3/2, w).

        Calls must come in frame order (non-decreasing t); concurrent calls are serialised."""
        with self._lock:
            started = time.perf_counter()
            i420 = cv2.cvtColor(self._compose(self.motion.step(t, level)), cv2.COLOR_BGR2YUV_I420)
            self.render_seconds += time.perf_counter() - started
            self.frames += 1
            return i420

    def draw(self, state: AvatarState) -> np.ndarray:
        """The BGR frame for a given state, outside the animation (tests, previews)."""
        with self._lock:
            return self._compose(state).copy()

    def _compose(self, state: AvatarState) -> np.ndarray:
        rig, head = self.rig, self.rig.head
        src = self._head_src
        np.copyto(src, rig.base[head.box])
        if state.mouth:
            rig.mouth.paste(min(state.mouth, rig.mouth.levels - 1), src, head.x, head.y)
        for pool, closure in ((rig.right_eye, state.right_eye), (rig.left_eye, state.left_eye)):
            level = pool.index(closure)
            if level:
                pool.paste(level, src, head.x, head.y)
        out = self._frame[head.box]
        if state.head.still:
            np.copyto(out, src)
        else:
            head.draw(src, state.head, out, self._map)
        return self._frame
