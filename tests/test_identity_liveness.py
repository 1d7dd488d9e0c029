"""The liveness check's eyes and its challenge, on a real face photo.

skimage's astronaut() is a real face. Head turns and nods are geometric warps of it,
blinks its own eyelid stretched over the eye, an open mouth its jaw dropped
(teller/identity/synthetic.py); every reading comes from MediaPipe's face mesh run on
those pictures, as the stage runs it on a customer's video.
"""

from __future__ import annotations

import itertools
import secrets

import cv2
import numpy as np
import pytest

pytest.importorskip("mediapipe")
skimage_data = pytest.importorskip("skimage.data")

from teller.identity.analysis import FaceAnalyzer, FaceReading
from teller.identity.challenge import STEPS, Challenge, Event, choose_steps
from teller.identity.governor import Governor
from teller.identity.synthetic import ActingFace, Look, action

FPS = 10.0


@pytest.fixture(scope="module")
def face() -> ActingFace:
    return ActingFace(skimage_data.astronaut())


def watch(frames: list[np.ndarray], t0: float = 0.0, fps: float = FPS) -> list[FaceReading]:
    """Readings of a video: one tracking analyser over consecutive frames, as the stage does."""
    analyser = FaceAnalyzer()
    try:
        return [analyser.analyse(frame, t0 + i / fps) for i, frame in enumerate(frames)]
    finally:
        analyser.close()


def performing(face: ActingFace, steps: list[str], still_s: float = 1.0) -> list[np.ndarray]:
    """Frontal and still, then each step in turn with a short pause between."""
    looks = [Look()] * round(still_s * FPS)
    for step in steps:
        looks += action(step, FPS) + [Look()] * 3
    return [face.frame(look) for look in looks]


def run(challenge: Challenge, readings: list[FaceReading]) -> list[Event]:
    events = challenge.start()
    for reading in readings:
        events += challenge.feed(reading)
    return events


def new(steps: list[str], **kw: float) -> Challenge:
    args = {"position_timeout_s": 10.0, "challenge_timeout_s": 10.0, "min_brightness": 50.0, **kw}
    return Challenge(steps=steps, started_at=0.0, **args)  # type: ignore[arg-type]


# -- what the analyser sees ---------------------------------------------------------------


def test_the_photo_is_one_frontal_face(face: ActingFace) -> None:
    reading = watch([cv2.resize(skimage_data.astronaut(), (640, 480))])[0]
    assert reading.faces == 1
    assert reading.state(50.0) == "one_face"
    assert reading.sharpness > 0 and reading.box is not None


def test_a_blank_frame_has_no_face() -> None:
    reading = watch([np.full((480, 640, 3), 90, np.uint8)])[0]
    assert (reading.faces, reading.state(50.0)) == (0, "no_face")


def test_two_faces_side_by_side_are_several_faces() -> None:
    photo = skimage_data.astronaut()
    head = cv2.resize(photo[0:300, 100:400], (240, 240))
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[120:360, 40:280] = head
    frame[120:360, 360:600] = head
    reading = watch([frame])[0]
    assert reading.faces == 2
    assert reading.state(50.0) == "several_faces"


def test_a_dim_face_is_too_dark(face: ActingFace) -> None:
    dim = (face.frame().astype(np.float32) * 0.2).astype(np.uint8)
    reading = watch([dim])[0]
    assert reading.faces == 1
    assert reading.state(50.0) == "too_dark"
    assert watch([face.frame()])[0].state(50.0) == "one_face"


def test_the_actions_move_the_measures_the_right_way(face: ActingFace) -> None:
    still, blink, mouth, left, right, nod = watch([face.frame(look) for look in (
        Look(), Look(blink=1.0), Look(mouth=1.0), Look(yaw=1.0), Look(yaw=-1.0), Look(pitch=1.0))])
    p = still.pose
    assert p is not None and blink.pose and mouth.pose and left.pose and right.pose and nod.pose
    assert blink.pose.eyes < 0.55 * p.eyes
    assert mouth.pose.mouth > p.mouth + 0.15
    assert left.pose.yaw > p.yaw + 0.2
    assert right.pose.yaw < p.yaw - 0.2
    assert nod.pose.pitch > p.pitch + 0.055


# -- the challenge --------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [[s] for s in STEPS] + [["nod", "turn_left", "blink"], ["open_mouth", "turn_right"]])
def test_doing_the_steps_in_order_passes(face: ActingFace, steps: list[str]) -> None:
    challenge = new(steps)
    events = run(challenge, watch(performing(face, steps)))
    assert challenge.state == "passed", (challenge.reason, events)
    prompts = [e.step for e in events if e.kind == "prompt"]
    assert prompts == ["position", *steps]
    assert [e.step for e in events if e.kind == "step_done"] == steps
    assert events[-1].kind == "passed"


def test_a_still_photo_does_not_pass(face: ActingFace) -> None:
    challenge = new(["blink", "turn_left"], challenge_timeout_s=3.0)
    run(challenge, watch([face.frame()] * 50))
    assert challenge.state == "failed"
    assert challenge.reason == "challenge_timeout"


def test_a_replay_of_another_order_fails(face: ActingFace) -> None:
    """A recording that passed [turn_left, open_mouth] is shown to an attempt that asks the
    other way round: the mouth opens while it waits for the mouth, then no turn comes."""
    recorded = watch(performing(face, ["turn_left", "open_mouth"]))
    challenge = new(["open_mouth", "turn_left"], challenge_timeout_s=4.0)
    run(challenge, recorded)
    challenge.tick(recorded[-1].t + 5.0)
    assert challenge.state == "failed"
    assert challenge.reason == "challenge_timeout"
    assert challenge.step_index == 1


def test_the_wrong_action_does_not_count(face: ActingFace) -> None:
    challenge = new(["turn_left"], challenge_timeout_s=3.0)
    run(challenge, watch(performing(face, ["turn_right", "blink", "nod"])))
    challenge.tick(100.0)
    assert (challenge.state, challenge.reason) == ("failed", "challenge_timeout")


def test_no_face_fails_the_positioning_with_that_reason() -> None:
    challenge = new(["blink"], position_timeout_s=2.0)
    readings = watch([np.full((480, 640, 3), 90, np.uint8)] * 25)
    run(challenge, readings)
    assert (challenge.state, challenge.reason) == ("failed", "no_face")


def test_a_dark_picture_fails_as_too_dark(face: ActingFace) -> None:
    challenge = new(["blink"], position_timeout_s=2.0)
    dim = (face.frame().astype(np.float32) * 0.2).astype(np.uint8)
    run(challenge, watch([dim] * 25))
    assert (challenge.state, challenge.reason) == ("failed", "too_dark")


def test_a_second_face_during_the_challenge_fails_it(face: ActingFace) -> None:
    photo = skimage_data.astronaut()
    head = cv2.resize(photo[0:300, 100:400], (240, 240))
    two = np.zeros((480, 640, 3), np.uint8)
    two[120:360, 40:280] = head
    two[120:360, 360:600] = head
    challenge = new(["blink", "nod"])
    run(challenge, watch([face.frame()] * 10 + [two] * 3))
    assert challenge.state == "failed"
    assert challenge.reason == "several_faces"


def test_the_face_leaving_mid_challenge_fails_it(face: ActingFace) -> None:
    challenge = new(["blink"])
    run(challenge, watch([face.frame()] * 10 + [np.full((480, 640, 3), 90, np.uint8)] * 20))
    assert (challenge.state, challenge.reason) == ("failed", "face_lost")


def test_time_runs_out_without_frames() -> None:
    challenge = new(["blink"], position_timeout_s=3.0)
    challenge.start()
    assert challenge.tick(2.9) == []
    assert challenge.tick(3.0) == [Event("failed", reason="position_timeout")]
    assert challenge.state == "failed"


def test_steps_are_random_distinct_and_within_bounds() -> None:
    rng = secrets.SystemRandom()
    draws = [choose_steps(STEPS, 2, 3, rng) for _ in range(300)]
    assert all(2 <= len(d) <= 3 and len(set(d)) == len(d) and set(d) <= set(STEPS) for d in draws)
    assert all({a, b} != {"turn_left", "turn_right"} for d in draws for a, b in itertools.pairwise(d))
    assert len({tuple(d) for d in draws}) > 30  # many orders, not a fixed list
    assert {d[0] for d in draws} == set(STEPS)
    with pytest.raises(ValueError):
        choose_steps(["smile"], 1, 2)


def test_the_governor_slows_analysis_past_its_budget_and_recovers() -> None:
    now = [0.0]
    governor = Governor(0.1, clock=lambda: now[0])
    factors = []
    for _second in range(4):  # 0.4 core of analysis a second against a budget of 0.1
        for _ in range(40):
            now[0] += 0.025
            governor.spent(0.01)
        factors.append(governor.factor)
    assert factors[0] == 0.5 and factors[-1] < factors[0] and factors[-1] >= 0.05
    low = governor.factor
    for _ in range(5):  # then almost nothing: the rate comes back, a step at a time
        now[0] += 1.0
        governor.spent(0.001)
    assert low < governor.factor <= 1.0
    assert governor.analysed == 165 and len(governor.cpu_ms) == 165
