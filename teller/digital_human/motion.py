"""What the face does at each frame: mouth from the voice's loudness, blinks, head sway.

Deterministic for a seed: blinks and the idle sway are functions of the time since the
first frame, and the mouth and nod follow the loudness through smoothing applied in
frame order. Nothing here draws; the renderer turns an `AvatarState` into pixels.
"""

from __future__ import annotations

import collections
import math
import random
from dataclasses import dataclass

from .head import HeadPose

# Loudness (0..1, voice.loudness) to mouth opening: closed below the floor, wide open at
# the top; speech sits mostly between.
MOUTH_FLOOR = 0.3
MOUTH_FULL = 0.95
MOUTH_ATTACK_S = 0.030
MOUTH_RELEASE_S = 0.070
NOD_SMOOTHING_S = 0.3

BLINK_EVERY_S = (2.0, 6.0)
BLINK_LENGTH_S = (0.15, 0.20)
DOUBLE_BLINK = 0.15  # the share of blinks followed at once by a second one
DOUBLE_GAP_S = (0.08, 0.14)

# Idle sway amplitudes (sum of the sinusoids' peaks); shifts in face heights.
SWAY_ROLL_DEG = 1.2
SWAY_DX = 0.012
SWAY_DY = 0.008
SWAY_SCALE = 0.004
NOD_DY = 0.014
NOD_ROLL_DEG = 0.3
MAX_ROLL_DEG = 1.5


@dataclass(frozen=True)
class AvatarState:
    mouth: int  # the mouth sprite's level: 0 (as in the photo) .. mouth_levels - 1
    opening: float  # the same, 0..1 before rounding
    right_eye: float  # closure 0..1 (the person's right eye)
    left_eye: float
    head: HeadPose


@dataclass(frozen=True)
class _Sine:
    amplitude: float
    hz: float
    phase: float

    def at(self, t: float) -> float:
        return self.amplitude * math.sin(2 * math.pi * self.hz * t + self.phase)


def _sway(rng: random.Random, total: float, parts: int = 3) -> list[_Sine]:
    """Low-frequency sinusoids with incommensurate rates: smooth, never visibly periodic."""
    weights = [rng.uniform(0.5, 1.0) for _ in range(parts)]
    return [_Sine(total * w / sum(weights), rng.uniform(0.06, 0.35), rng.uniform(0, 2 * math.pi)) for w in weights]


class Blinks:
    """Blink times drawn ahead from the seed, so closure is a function of time alone."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        # (start, length), seconds from the first frame; ended ones are dropped.
        self._blinks: collections.deque[tuple[float, float]] = collections.deque()
        self._next = rng.uniform(0.8, 3.0)

    def closure(self, t: float) -> float:
        while self._next <= t + 1.0:
            self._schedule()
        while self._blinks and sum(self._blinks[0]) < t:
            self._blinks.popleft()
        for start, length in self._blinks:
            if start <= t <= start + length:
                return _blink_shape((t - start) / length)
        return 0.0

    def _schedule(self) -> None:
        rng = self._rng
        length = rng.uniform(*BLINK_LENGTH_S)
        self._blinks.append((self._next, length))
        start = self._next + length
        if rng.random() < DOUBLE_BLINK:
            second = start + rng.uniform(*DOUBLE_GAP_S)
            self._blinks.append((second, rng.uniform(*BLINK_LENGTH_S)))
            start = second + self._blinks[-1][1]
        self._next = start + rng.uniform(*BLINK_EVERY_S)


def _blink_shape(u: float) -> float:
    """Closure over a blink (u: 0..1): quick to close, a moment shut (longer than a frame
    at 30 fps, so a frame sees the eye closed), slower to open."""
    if u < 0.32:
        return math.sin(math.pi / 2 * u / 0.32)
    if u < 0.55:
        return 1.0
    return math.cos(math.pi / 2 * (u - 0.55) / 0.45)


class Motion:
    """The animation of one avatar. `step` must be called with non-decreasing times."""

    def __init__(self, *, seed: int = 0, face_height: float = 200.0, fps: float = 30.0, mouth_levels: int = 16) -> None:
        rng = random.Random(seed)
        self.mouth_levels = mouth_levels
        self.face_height = face_height
        self._frame_s = 1.0 / fps
        self._blinks = Blinks(random.Random(rng.random()))
        self._roll = _sway(rng, SWAY_ROLL_DEG)
        self._dx = _sway(rng, SWAY_DX * face_height)
        self._dy = _sway(rng, SWAY_DY * face_height)
        self._scale = _sway(rng, SWAY_SCALE, parts=2)
        self._nod_phase = rng.uniform(0, 2 * math.pi)
        self._t0: float | None = None
        self._last = 0.0
        self._mouth = 0.0
        self._speech = 0.0

    def step(self, t: float, level: float) -> AvatarState:
        if self._t0 is None:
            self._t0 = t - self._frame_s
        rel = t - self._t0
        dt = max(0.0, rel - self._last)
        self._last = max(self._last, rel)

        target = min(1.0, max(0.0, (level - MOUTH_FLOOR) / (MOUTH_FULL - MOUTH_FLOOR)))
        tau = MOUTH_ATTACK_S if target > self._mouth else MOUTH_RELEASE_S
        self._mouth += (target - self._mouth) * (1 - math.exp(-dt / tau))
        self._speech += (min(1.0, max(0.0, level)) - self._speech) * (1 - math.exp(-dt / NOD_SMOOTHING_S))

        closure = self._blinks.closure(rel)
        return AvatarState(mouth=round(self._mouth * (self.mouth_levels - 1)), opening=self._mouth,
                           right_eye=closure, left_eye=closure, head=self._pose(rel))

    def _pose(self, t: float) -> HeadPose:
        nod = self._speech * (0.6 + 0.4 * math.sin(2 * math.pi * 1.6 * t + self._nod_phase))
        roll = sum(s.at(t) for s in self._roll) + NOD_ROLL_DEG * self._speech * math.sin(
            2 * math.pi * 0.9 * t + self._nod_phase)
        return HeadPose(
            dx=sum(s.at(t) for s in self._dx),
            dy=sum(s.at(t) for s in self._dy) + NOD_DY * self.face_height * nod,
            roll=max(-MAX_ROLL_DEG, min(MAX_ROLL_DEG, roll)),
            scale=1.0 + sum(s.at(t) for s in self._scale),
        )
