"""The liveness challenge: one frontal, well-lit face, then random actions in time.

A pure state machine over FaceReadings (no frames, no clock of its own): the stage
feeds it what the analyser saw and when, and calls `tick` so that time runs out even
when no frame arrives. Each action is judged against the customer's own frontal
baseline, taken while they held still at the start, so faces of every shape pass
with the same thresholds.

Replay resistance comes from the order: the steps of an attempt are drawn at random
when it starts and shown one at a time, so a recording of an earlier pass does the
wrong things at the wrong moments.
"""

from __future__ import annotations

import itertools
import secrets
import statistics
from dataclasses import dataclass, field
from typing import Literal

from .analysis import FaceReading, FaceState

STEPS = ("blink", "turn_left", "turn_right", "open_mouth", "nod")
State = Literal["positioning", "challenge", "passed", "failed"]


@dataclass(frozen=True)
class Thresholds:
    # Eyes closed below this share of their baseline openness, open again above the second.
    blink_closed: float = 0.55
    blink_open: float = 0.8
    # Nose offset (half face-widths) beyond the baseline: a turn.
    turn: float = 0.2
    # Mouth openness above the baseline by this much, and at least mouth_min.
    mouth: float = 0.15
    mouth_min: float = 0.3
    # Nose drop (eye-to-chin fraction) for a nod, and how close to level it must come back.
    nod_down: float = 0.055
    nod_back: float = 0.025
    # One good face this long (analysed frames spanning it) gives the baseline.
    hold_s: float = 0.5
    # No face this long in the middle of the challenge fails it.
    face_lost_s: float = 1.5


@dataclass(frozen=True)
class Event:
    kind: Literal["prompt", "step_done", "passed", "failed"]
    step: str | None = None
    index: int = -1
    reason: str | None = None


def choose_steps(kinds: list[str] | tuple[str, ...], least: int, most: int,
                 rng: secrets.SystemRandom | None = None) -> list[str]:
    """A random number of distinct steps in random order (never a left and a right turn
    back to back: one head movement would do both)."""
    rng = rng or secrets.SystemRandom()
    kinds = [k for k in dict.fromkeys(kinds) if k in STEPS]
    if not kinds:
        raise ValueError("no known liveness steps configured")
    most = max(1, min(most, len(kinds)))
    least = max(1, min(least, most))
    for _ in range(50):
        steps = rng.sample(kinds, rng.randint(least, most))
        if not any({a, b} == {"turn_left", "turn_right"} for a, b in itertools.pairwise(steps)):
            return steps
    return steps


@dataclass
class _Baseline:
    yaw: float
    pitch: float
    eyes: float
    mouth: float


@dataclass
class Challenge:
    steps: list[str]
    started_at: float
    position_timeout_s: float
    challenge_timeout_s: float
    min_brightness: float
    thresholds: Thresholds = field(default_factory=Thresholds)
    state: State = "positioning"
    reason: str | None = None
    step_index: int = -1
    challenge_started_at: float | None = None
    ended_at: float | None = None
    # What positioning saw last, for the failure reason when it runs out.
    last_face: FaceState = "unknown"
    _held: list[FaceReading] = field(default_factory=list)
    _baseline: _Baseline | None = None
    _phase: int = 0  # within a step: 0 before the action, 1 in it (eyes shut, head down)
    _last_face_at: float | None = None

    @property
    def done(self) -> bool:
        return self.state in ("passed", "failed")

    @property
    def deadline(self) -> float:
        if self.state == "positioning" or self.challenge_started_at is None:
            return self.started_at + self.position_timeout_s
        return self.challenge_started_at + self.challenge_timeout_s

    def start(self) -> list[Event]:
        return [Event("prompt", "position", -1)]

    def tick(self, now: float) -> list[Event]:
        if self.done:
            return []
        if now >= self.deadline:
            if self.state == "positioning":
                reason = self.last_face if self.last_face not in ("one_face", "unknown") else "position_timeout"
                return self._fail(now, reason)
            return self._fail(now, "challenge_timeout")
        if (self.state == "challenge" and self._last_face_at is not None
                and now - self._last_face_at > self.thresholds.face_lost_s):
            return self._fail(now, "face_lost")
        return []

    def feed(self, reading: FaceReading) -> list[Event]:
        if self.done:
            return []
        events = self.tick(reading.t)
        if events:
            return events
        face = reading.state(self.min_brightness)
        if self.state == "positioning":
            return self._position(reading, face)
        if reading.faces > 1:
            return self._fail(reading.t, "several_faces")
        if reading.faces == 0 or reading.pose is None:
            return []
        self._last_face_at = reading.t
        if self._step_done(self.steps[self.step_index], reading):
            return self._advance(reading.t)
        return []

    # -- positioning ------------------------------------------------------------------

    def _position(self, reading: FaceReading, face: FaceState) -> list[Event]:
        self.last_face = face
        if face != "one_face":
            self._held.clear()
            return []
        self._held.append(reading)
        if reading.t - self._held[0].t < self.thresholds.hold_s:
            return []
        poses = [r.pose for r in self._held if r.pose is not None]
        self._baseline = _Baseline(
            yaw=statistics.median(p.yaw for p in poses), pitch=statistics.median(p.pitch for p in poses),
            eyes=statistics.median(p.eyes for p in poses), mouth=statistics.median(p.mouth for p in poses),
        )
        self._held.clear()
        self.state = "challenge"
        self.challenge_started_at = reading.t
        self._last_face_at = reading.t
        self.step_index = 0
        self._phase = 0
        return [Event("prompt", self.steps[0], 0)]

    # -- the steps ----------------------------------------------------------------------

    def _step_done(self, step: str, reading: FaceReading) -> bool:
        base, th, p = self._baseline, self.thresholds, reading.pose
        assert base is not None and p is not None
        if step == "blink":
            if self._phase == 0:
                self._phase = int(p.eyes < th.blink_closed * base.eyes)
                return False
            return p.eyes > th.blink_open * base.eyes
        if step == "turn_left":
            return p.yaw - base.yaw >= th.turn
        if step == "turn_right":
            return base.yaw - p.yaw >= th.turn
        if step == "open_mouth":
            return p.mouth >= max(th.mouth_min, base.mouth + th.mouth)
        if step == "nod":
            if self._phase == 0:
                self._phase = int(p.pitch - base.pitch >= th.nod_down)
                return False
            return p.pitch - base.pitch <= th.nod_back
        raise ValueError(f"unknown step {step!r}")

    def _advance(self, now: float) -> list[Event]:
        events = [Event("step_done", self.steps[self.step_index], self.step_index)]
        self.step_index += 1
        self._phase = 0
        if self.step_index >= len(self.steps):
            self.state = "passed"
            self.ended_at = now
            return [*events, Event("passed")]
        return [*events, Event("prompt", self.steps[self.step_index], self.step_index)]

    def _fail(self, now: float, reason: str) -> list[Event]:
        self.state = "failed"
        self.reason = reason
        self.ended_at = now
        return [Event("failed", reason=reason)]

    def fail(self, now: float, reason: str) -> list[Event]:
        """Ended from outside (the call ended, the customer's video went away)."""
        return [] if self.done else self._fail(now, reason)
