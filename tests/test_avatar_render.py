"""The digital human's face: framing, what face mesh sees on drawn frames, head motion, the track.

Face mesh (the same model a viewer's analysis would use) is the judge of whether the
mouth opens and the eyes close; pixels are the judge of what must not move.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import shutil
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from teller.digital_human import portrait as portrait_module
from teller.digital_human.head import HeadPose
from teller.digital_human.motion import AvatarState, Motion
from teller.digital_human.portrait import (
    DEFAULT_PORTRAIT,
    FACE_CENTRE_Y,
    FACE_SHARE,
    PortraitError,
    frame_crop,
    load_portrait,
)
from teller.digital_human.renderer import AvatarRenderer
from teller.digital_human.rig import AvatarRig, load_rig
from teller.digital_human.track import AvatarTrack

STILL = HeadPose()


@pytest.fixture(scope="module")
def rig() -> AvatarRig:
    return load_rig(None, 640, 480)


@pytest.fixture(scope="module")
def mesh() -> Any:
    mp = pytest.importorskip("mediapipe")
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as found:
        yield found


def landmarks_of(mesh: Any, bgr: np.ndarray) -> np.ndarray:
    faces = mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).multi_face_landmarks
    assert faces, "face mesh lost the face"
    h, w = bgr.shape[:2]
    return np.array([(p.x * w, p.y * h) for p in faces[0].landmark])


def mouth_openness(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[13] - lm[14]) / np.linalg.norm(lm[10] - lm[152]))


def eye_aspect(lm: np.ndarray) -> tuple[float, float]:
    right = np.linalg.norm(lm[159] - lm[145]) / np.linalg.norm(lm[33] - lm[133])
    left = np.linalg.norm(lm[386] - lm[374]) / np.linalg.norm(lm[362] - lm[263])
    return float(right), float(left)


def state(mouth: int = 0, eyes: float = 0.0, head: HeadPose = STILL) -> AvatarState:
    return AvatarState(mouth=mouth, opening=mouth / 15, right_eye=eyes, left_eye=eyes, head=head)


def test_the_default_avatar_has_its_landmarks_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_mediapipe(*_: Any) -> np.ndarray:
        raise AssertionError("the shipped avatar must not need face mesh")

    monkeypatch.setattr(portrait_module, "detect_landmarks", no_mediapipe)
    portrait = load_portrait(None, 640, 480)
    assert portrait.landmarks.shape == (478, 3)
    xy = portrait.landmarks[:, :2]
    assert (xy >= 0).all() and (xy[:, 0] < 640).all() and (xy[:, 1] < 480).all()
    assert Path(str(DEFAULT_PORTRAIT) + ".landmarks.json").is_file()


@pytest.mark.parametrize("size", [(640, 480), (1280, 720)])
def test_the_crop_frames_the_face(size: tuple[int, int]) -> None:
    width, height = size
    portrait = load_portrait(None, width, height)
    assert portrait.image.shape == (height, width, 3)
    assert 0.40 <= portrait.face_height / height <= 0.46
    lo, hi = portrait.landmarks[:, :2].min(axis=0), portrait.landmarks[:, :2].max(axis=0)
    centre = (lo + hi) / 2
    assert abs(centre[0] / width - 0.5) < 0.02
    assert abs(centre[1] / height - FACE_CENTRE_Y) < 0.03
    crop = portrait.crop
    assert crop.x >= 0 and crop.y >= 0 and crop.x + crop.width <= 512 + 1e-6 and crop.y + crop.height <= 512 + 1e-6


def test_a_tight_photo_is_cropped_inside_it_with_a_larger_face() -> None:
    landmarks = np.zeros((478, 3), np.float32)
    landmarks[:, :2] = (100, 60)
    landmarks[10, :2], landmarks[152, :2] = (100, 20), (100, 110)  # a face of 90 in a 200 x 150 photo
    crop = frame_crop(landmarks, 200, 150, 1280, 720)
    assert crop.x >= 0 and crop.y >= 0 and crop.x + crop.width <= 200 + 1e-6 and crop.y + crop.height <= 150 + 1e-6
    assert crop.scale * 90 / 720 > FACE_SHARE


def test_the_mouth_face_mesh_sees_opens_with_the_voice(rig: AvatarRig, mesh: Any) -> None:
    seen = []
    for level in (0.0, 0.55, 0.75, 1.0):
        renderer = AvatarRenderer(rig, seed=7)
        for k in range(8):  # the smoothing settles; the first blink comes later
            i420 = renderer.render(100.0 + k / 30, level)
        assert i420.shape == (480 * 3 // 2, 640) and i420.dtype == np.uint8
        seen.append(mouth_openness(landmarks_of(mesh, cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420))))
    assert all(b > a for a, b in itertools.pairwise(seen)), seen
    assert seen[-1] - seen[0] > 0.05, seen


def test_every_fifth_mouth_level_opens_wider(rig: AvatarRig, mesh: Any) -> None:
    renderer = AvatarRenderer(rig)
    seen = [mouth_openness(landmarks_of(mesh, renderer.draw(state(mouth=m)))) for m in (0, 5, 10, 15)]
    assert all(b > a for a, b in itertools.pairwise(seen)), seen


def test_a_full_blink_closes_both_eyes(rig: AvatarRig, mesh: Any) -> None:
    renderer = AvatarRenderer(rig)
    open_right, open_left = eye_aspect(landmarks_of(mesh, renderer.draw(state())))
    shut_right, shut_left = eye_aspect(landmarks_of(mesh, renderer.draw(state(eyes=1.0))))
    assert shut_right < 0.5 * open_right and shut_left < 0.5 * open_left, (open_right, open_left, shut_right, shut_left)


def test_the_mouth_moves_nothing_above_it(rig: AvatarRig, mesh: Any) -> None:
    renderer = AvatarRenderer(rig)
    pose = HeadPose(dx=2.0, dy=-1.0, roll=1.0, scale=1.004)
    closed = renderer.draw(state(head=pose))
    nose = landmarks_of(mesh, closed)[1]
    x, y = np.round(nose).astype(int)
    base = int(landmarks_of(mesh, closed)[2, 1])
    r = int(0.08 * rig.face_height)
    for mouth in range(1, 16):
        opened = renderer.draw(state(mouth=mouth, head=pose))
        # The nose, down to its base, is the same pixels whatever the mouth does: it
        # cannot jitter against the eyes.
        assert np.array_equal(closed[y - r : base, x - r : x + r], opened[y - r : base, x - r : x + r])
        # Face mesh's nose tip stays put too, within its own noise (about a pixel: it fits
        # the whole face, so any change to the mouth nudges every landmark a little).
        if mouth == 4:
            assert np.linalg.norm(landmarks_of(mesh, opened)[1] - nose) < 1.5


def test_the_head_moves_and_the_background_stays(rig: AvatarRig, mesh: Any) -> None:
    renderer = AvatarRenderer(rig)
    still = renderer.draw(state())
    moved = renderer.draw(state(head=HeadPose(dx=4.0, dy=3.0)))
    shift = landmarks_of(mesh, moved)[1] - landmarks_of(mesh, still)[1]
    assert np.allclose(shift, (4.0, 3.0), atol=1.0), shift
    tilted = renderer.draw(state(head=HeadPose(roll=1.5)))
    assert not np.array_equal(tilted, still)

    head = rig.head
    outside = np.ones(still.shape[:2], bool)
    outside[head.box] = False
    for frame in (moved, tilted):
        assert np.array_equal(frame[outside], still[outside])
        assert np.array_equal(frame[5, 5], still[5, 5]) and np.array_equal(frame[-5, -5], still[-5, -5])
    # The eyes, nose and mouth move as one piece: all at the head's shift.
    eyes_and_mouth = [33, 133, 263, 362, 13, 14, 61, 291]
    shifts = landmarks_of(mesh, moved)[eyes_and_mouth] - landmarks_of(mesh, still)[eyes_and_mouth]
    assert np.allclose(shifts, (4.0, 3.0), atol=1.5), shifts


def test_the_motion_is_seeded_and_smoothed() -> None:
    a, b = Motion(seed=3, face_height=200), Motion(seed=3, face_height=200)
    times = [10.0 + k / 30 for k in range(30 * 8)]
    levels = [1.0 if 60 <= k < 90 else 0.0 for k in range(len(times))]
    states_a = [a.step(t, v) for t, v in zip(times, levels)]
    assert states_a == [b.step(t, v) for t, v in zip(times, levels)]
    assert states_a != [Motion(seed=4, face_height=200).step(t, v) for t, v in zip(times, levels)]

    # Attack is quicker than release: one frame after the voice starts the mouth is more
    # than half open; one frame after it stops it is still more than half open.
    assert states_a[60].opening > 0.6 and states_a[90].opening > 0.5
    assert states_a[100].mouth == 0 and states_a[59].mouth == 0
    # Eight seconds hold a blink (one a 2-6 s), and a frame of it sees the eyes shut.
    assert max(s.right_eye for s in states_a) == 1.0
    assert all(s.right_eye == s.left_eye for s in states_a)
    # The idle sway is small and smooth: no frame-to-frame jumps.
    rolls = np.array([s.head.roll for s in states_a])
    dxs = np.array([s.head.dx for s in states_a])
    assert np.abs(rolls).max() <= 1.5 and np.abs(np.diff(rolls)).max() < 0.1
    assert np.abs(dxs).max() < 0.03 * 200 and np.abs(np.diff(dxs)).max() < 0.3


class Levels:
    """A voice that is loud every other 100 ms, remembering what it was asked."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def level_at(self, t: float) -> float:
        self.asked.append(t)
        return 0.9 if int(t * 10) % 2 else 0.1


class CountingRenderer(AvatarRenderer):
    threads: set[str]

    def render(self, t: float, level: float) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        return super().render(t, level)


async def test_the_track_sends_frames_drawn_ahead_on_a_30_fps_clock(rig: AvatarRig) -> None:
    renderer = CountingRenderer(rig, fps=30, seed=1)
    renderer.threads = set()
    levels = Levels()
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="test-avatar")
    track = AvatarTrack(renderer, levels, executor=executor)
    pts: list[int] = []
    for _ in range(12):
        frame = await track.recv()
        assert frame.format.name == "yuv420p" and (frame.width, frame.height) == (640, 480)
        assert frame.time_base == pytest.approx(1 / 90000)
        pts.append(int(frame.pts))
        # Frame k is out; frame k+1 has been asked for its loudness (it is being drawn).
        assert max(levels.asked) == pytest.approx(track._start + len(pts) / 30)  # type: ignore[operator]
    assert pts[0] == 0 and np.all(np.diff(pts) == 3000), pts
    assert threading.current_thread().name not in renderer.threads and renderer.threads
    assert track.frames_sent == 12 and track.stats()["render_ms_mean"] is not None

    # A consumer that stalls: the track jumps to the frame due now instead of bursting.
    await asyncio.sleep(0.35)
    stalled = await track.recv()
    after = await track.recv()
    assert track.resyncs == 1
    assert stalled.pts - pts[-1] >= 0.3 * 90000 and after.pts - stalled.pts == 3000

    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()
    await asyncio.sleep(0.05)
    executor.shutdown(wait=True)  # nothing left running for the stopped track
    assert not track._busy


def test_a_portrait_without_one_face_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("mediapipe")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 200, np.uint8))
    with pytest.raises(PortraitError) as caught:
        load_rig(blank)
    assert caught.value.code == "avatar_no_face" and caught.value.status == 400

    two = tmp_path / "two.jpg"
    face = cv2.imread(str(DEFAULT_PORTRAIT))[20:260, 110:340]
    cv2.imwrite(str(two), np.hstack([face, face]))
    with pytest.raises(PortraitError) as caught:
        load_rig(two)
    assert caught.value.code == "avatar_many_faces"

    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image")
    for path in (garbage, tmp_path / "missing.jpg"):
        with pytest.raises(PortraitError) as caught:
            load_rig(path)
        assert caught.value.code == "avatar_unreadable"


def test_a_changed_portrait_is_analysed_again(tmp_path: Path) -> None:
    pytest.importorskip("mediapipe")
    photo = tmp_path / "me.jpg"
    shutil.copy(DEFAULT_PORTRAIT, photo)
    shutil.copy(str(DEFAULT_PORTRAIT) + ".landmarks.json", str(photo) + ".landmarks.json")
    before = load_portrait(photo).landmarks
    cv2.imwrite(str(photo), cv2.flip(cv2.imread(str(photo)), 1))
    after = load_portrait(photo).landmarks
    # Mirrored: the nose tip is now as far right of the centre as it was left.
    assert abs((after[1, 0] - 320) + (before[1, 0] - 320)) < 6.0
