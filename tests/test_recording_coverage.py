"""How much of a participant's time a recording holds (teller/recording/coverage.py),
and the store of resumable device uploads (teller/recording/uploads.py), without a server."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from teller.config import FieldSettings
from teller.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, Unprocessable
from teller.recording.coverage import TOLERANCE_S, coverage, gap_events
from teller.recording.uploads import UploadStore

T0 = 1_700_000_000.0


def live(start: float, end: float, gaps: list[list[float]] | None = None, participant: str = "officer-1",
         kind: str = "video") -> dict[str, Any]:
    return {"participant_id": participant, "track_kind": kind, "start_wall": T0 + start, "end_wall": T0 + end,
            "device": False, "gaps": [[T0 + a, T0 + b] for a, b in gaps or []]}


def device(start: float, end: float, participant: str = "officer-1", kind: str = "video") -> dict[str, Any]:
    return {"participant_id": participant, "track_kind": kind, "start_wall": T0 + start, "end_wall": T0 + end,
            "device": True, "gaps": []}


def at(*spans: tuple[float, float]) -> list[list[float]]:
    return [[round(T0 + a, 3), round(T0 + b, 3)] for a, b in spans]


# -- coverage --------------------------------------------------------------------------


def test_a_hole_filled_exactly_by_a_device_segment_leaves_no_gap() -> None:
    cover = coverage([live(0, 60, gaps=[[20, 35]]), device(20, 35)])
    assert cover == {"officer-1/video": {"start": T0, "end": T0 + 60, "live_s": 45.0, "device_s": 15.0,
                                         "filled": at((20, 35)), "gaps": []}}


def test_a_hole_filled_in_part_keeps_the_rest_as_a_gap() -> None:
    cover = coverage([live(0, 60, gaps=[[20, 35]]), device(24, 30)])["officer-1/video"]
    assert cover["filled"] == at((24, 30))
    assert cover["gaps"] == at((20, 24), (30, 35))
    assert (cover["live_s"], cover["device_s"]) == (45.0, 6.0)
    # A device segment that overhangs the hole fills only the hole.
    cover = coverage([live(0, 60, gaps=[[20, 35]]), device(10, 30)])["officer-1/video"]
    assert cover["filled"] == at((20, 30)) and cover["gaps"] == at((30, 35)) and cover["device_s"] == 20.0


def test_a_hole_between_live_segments_and_at_the_end_is_a_gap() -> None:
    # Two live segments (the link dropped and the participant came back), then a device
    # segment after the last one: the time between them is a gap, the device's own time filled.
    cover = coverage([live(0, 10), live(20, 30), device(40, 45)])["officer-1/video"]
    assert cover["start"] == T0 and cover["end"] == T0 + 45
    assert cover["gaps"] == at((10, 20), (30, 40))
    assert cover["filled"] == at((40, 45))


def test_whole_coverage_without_a_device_segment_is_not_reported() -> None:
    assert coverage([live(0, 60), live(0, 60, kind="audio"), live(0, 30, participant="customer")]) == {}
    # Back-to-back segments (rotation) are one span.
    assert coverage([live(0, 30), live(30, 60), live(60.5, 90)]) == {}
    assert coverage([]) == {}


def test_a_device_segment_over_live_media_fills_nothing_but_counts() -> None:
    cover = coverage([live(0, 60), device(10, 20)])
    assert cover == {"officer-1/video": {"start": T0, "end": T0 + 60, "live_s": 60.0, "device_s": 10.0,
                                         "filled": [], "gaps": []}}
    assert gap_events(cover) == []


def test_holes_up_to_the_tolerance_are_jitter_not_gaps() -> None:
    assert TOLERANCE_S == 1.0
    assert coverage([live(0, 60, gaps=[[20, 20.9]])]) == {}
    assert coverage([live(0, 60, gaps=[[20, 21]])]) == {}
    assert coverage([live(0, 10), live(10.8, 20)]) == {}
    cover = coverage([live(0, 60, gaps=[[20, 21.5]])])
    assert cover["officer-1/video"]["gaps"] == at((20, 21.5)) and cover["officer-1/video"]["filled"] == []
    # A device segment that leaves less than the tolerance either side fills the hole whole.
    cover = coverage([live(0, 60, gaps=[[20, 35]]), device(20.5, 34.5)])["officer-1/video"]
    assert cover["gaps"] == [] and cover["filled"] == at((20.5, 34.5))


def test_internal_gaps_are_cut_from_their_segment_only() -> None:
    # Gaps given out of order, overlapping, or reaching past the segment.
    cover = coverage([live(0, 60, gaps=[[40, 45], [10, 15], [12, 18], [55, 70]])])["officer-1/video"]
    assert cover["gaps"] == at((10, 18), (40, 45))
    assert cover["live_s"] == 60 - 8 - 5 - 5
    assert cover["end"] == T0 + 55  # the last 5 s had no media


def test_participants_and_kinds_are_independent() -> None:
    tracks = [
        live(0, 60, gaps=[[20, 30]]), device(20, 30),                     # officer video: filled
        live(0, 60, gaps=[[40, 50]], kind="audio"),                       # officer audio: a gap
        live(0, 60, participant="customer"), device(0, 60, participant="reviewer", kind="audio"),
        live(0, 60, participant="customer", kind="audio"),
    ]
    cover = coverage(tracks)
    assert sorted(cover) == ["officer-1/audio", "officer-1/video", "reviewer/audio"]
    assert cover["officer-1/video"]["filled"] == at((20, 30)) and cover["officer-1/video"]["gaps"] == []
    assert cover["officer-1/audio"]["filled"] == [] and cover["officer-1/audio"]["gaps"] == at((40, 50))
    # A participant only a device recorded: its whole time came from the device.
    assert cover["reviewer/audio"]["live_s"] == 0 and cover["reviewer/audio"]["filled"] == at((0, 60))


def test_unfinished_and_empty_segments_are_skipped() -> None:
    unfinished = {**live(0, 10), "end_wall": None}
    assert coverage([unfinished]) == {}
    # A segment with no length (one frame, or one a crash left and recovery sealed at 0 s)
    # must not break the coverage of the session it belongs to.
    assert coverage([live(5, 5)]) == {}
    assert coverage([live(0, 10, gaps=[[0, 10]])]) == {}
    cover = coverage([live(5, 5), live(5, 5, kind="audio"), live(0, 60, gaps=[[10, 20]], kind="audio")])
    assert list(cover) == ["officer-1/audio"] and cover["officer-1/audio"]["gaps"] == at((10, 20))


def test_gap_events_name_each_filled_hole_and_each_remaining_gap() -> None:
    cover = coverage([live(0, 60, gaps=[[20, 35]]), device(24, 30),
                      live(0, 30, participant="reviewer-2", kind="audio"), live(40, 60, participant="reviewer-2", kind="audio")])
    events = gap_events(cover)
    assert sorted(events, key=lambda e: (e["participant_id"], e["ts"])) == [
        {"type": "recording_gap", "ts": round(T0 + 20, 3), "end": round(T0 + 24, 3), "duration_s": 4.0,
         "participant_id": "officer-1", "kind": "video"},
        {"type": "gap_filled", "ts": round(T0 + 24, 3), "end": round(T0 + 30, 3), "duration_s": 6.0,
         "participant_id": "officer-1", "kind": "video"},
        {"type": "recording_gap", "ts": round(T0 + 30, 3), "end": round(T0 + 35, 3), "duration_s": 5.0,
         "participant_id": "officer-1", "kind": "video"},
        {"type": "recording_gap", "ts": round(T0 + 30, 3), "end": round(T0 + 40, 3), "duration_s": 10.0,
         "participant_id": "reviewer-2", "kind": "audio"},
    ]
    assert json.loads(json.dumps(events)) == events
    assert gap_events({}) == []


# -- the upload store ------------------------------------------------------------------


class Body:
    """What UploadStore.append reads a chunk from (aiohttp's StreamReader): readany()
    gives the next piece, then b"" at the end, or raises where the link dropped."""

    def __init__(self, *pieces: bytes, drop: BaseException | None = None) -> None:
        self.pieces = list(pieces)
        self.drop = drop

    async def readany(self) -> bytes:
        if self.pieces:
            return self.pieces.pop(0)
        if self.drop is not None:
            raise self.drop
        return b""


SETTINGS = FieldSettings(chunk_max_bytes=1000, max_upload_bytes=10_000, upload_keep_s=3600)
META = {"kind": "video", "codec": "vp8", "start_wall": T0, "participant_id": "cam", "events": []}


@pytest.fixture
def store(tmp_path: Path) -> UploadStore:
    return UploadStore(tmp_path / "uploads", SETTINGS)


def files(store: UploadStore) -> list[str]:
    return sorted(p.name for p in store.directory.iterdir())


async def test_an_upload_is_created_appended_verified_and_finished(store: UploadStore) -> None:
    data = os.urandom(2500)
    upload = store.create("RM_1", "room-1", "cam", META, len(data), hashlib.sha256(data).hexdigest().upper())
    assert upload.sha256 == hashlib.sha256(data).hexdigest() and upload.offset == 0 and not upload.complete
    assert files(store) == sorted([f"{upload.upload_id}.bin", f"{upload.upload_id}.upload.json"])

    upload = await store.append(upload, 0, Body(data[:400], data[400:1000]))  # exactly chunk_max
    assert upload.offset == 1000
    # A fresh store over the same files (a restart) knows where the upload stands.
    again = UploadStore(store.directory, SETTINGS).get("RM_1", upload.upload_id)
    assert (again.offset, again.size, again.meta, again.room, again.device) == (1000, 2500, META, "room-1", "cam")
    upload = await store.append(again, 1000, Body(data[1000:2000]))
    upload = await store.append(upload, 2000, Body(data[2000:]))
    assert upload.offset == upload.size == 2500

    path = await store.verify(upload)
    assert path.read_bytes() == data
    store.finish(upload, {"part": "device-1"})
    assert files(store) == [f"{upload.upload_id}.upload.json"] and store.completed == 1
    done = store.get("RM_1", upload.upload_id)
    assert done.complete and done.offset == 2500 and done.result == {"part": "device-1"}
    assert done.public() == {"upload_id": upload.upload_id, "session_id": "RM_1", "offset": 2500, "size": 2500,
                             "complete": True, "result": {"part": "device-1"}}
    with pytest.raises(Conflict) as refused:
        await store.append(done, 2500, Body(b"x"))
    assert refused.value.code == "upload_complete"


async def test_a_chunk_is_all_or_nothing(store: UploadStore) -> None:
    data = os.urandom(3000)
    upload = store.create("RM_1", "room-1", "cam", META, len(data), hashlib.sha256(data).hexdigest())
    upload = await store.append(upload, 0, Body(data[:700]))
    bytes_path = store.directory / f"{upload.upload_id}.bin"

    # The link drops mid-chunk: what came of it is gone, the offset is the last whole chunk.
    with pytest.raises(ConnectionResetError):
        await store.append(upload, 700, Body(data[700:900], data[900:1100], drop=ConnectionResetError()))
    assert bytes_path.stat().st_size == 700 and store.get("RM_1", upload.upload_id).offset == 700
    # Too large a chunk, or one past the declared size: refused, nothing kept.
    with pytest.raises(PayloadTooLarge) as refused:
        await store.append(upload, 700, Body(data[700:1200], data[1200:1701]))
    assert refused.value.code == "message_too_large" and bytes_path.stat().st_size == 700
    upload = await store.append(upload, 700, Body(data[700:1700]))
    upload = await store.append(upload, 1700, Body(data[1700:2700]))
    with pytest.raises(PayloadTooLarge):
        await store.append(upload, 2700, Body(data[2700:] + b"!"))
    assert bytes_path.stat().st_size == 2700
    # A wrong offset says where to go on from.
    for wrong in (0, 2699, 2701):
        with pytest.raises(Conflict) as mismatch:
            await store.append(upload, wrong, Body(data[wrong:wrong + 10]))
        assert mismatch.value.code == "offset_mismatch" and mismatch.value.details == {"offset": 2700}
    upload = await store.append(upload, 2700, Body(data[2700:]))
    assert (await store.verify(upload)).read_bytes() == data


async def test_a_digest_mismatch_discards_the_upload(store: UploadStore) -> None:
    data = os.urandom(500)
    upload = store.create("RM_1", "room-1", "cam", META, len(data), hashlib.sha256(b"other").hexdigest())
    upload = await store.append(upload, 0, Body(data))
    with pytest.raises(Unprocessable) as refused:
        await store.verify(upload)
    assert refused.value.code == "checksum_mismatch" and refused.value.details["received"] == hashlib.sha256(data).hexdigest()
    assert files(store) == [] and store.checksum_failures == 1
    with pytest.raises(NotFound):
        store.get("RM_1", upload.upload_id)


@pytest.mark.parametrize(("size", "sha256", "field"), [
    (0, "a" * 64, "size"), (-1, "a" * 64, "size"), ("10", "a" * 64, "size"), (True, "a" * 64, "size"),
    (1.5, "a" * 64, "size"), (None, "a" * 64, "size"), (10_001, "a" * 64, "size"),
    (10, "a" * 63, "sha256"), (10, "g" * 64, "sha256"), (10, None, "sha256"), (10, 5, "sha256"),
])
def test_a_bad_declaration_makes_no_upload(store: UploadStore, size: Any, sha256: Any, field: str) -> None:
    with pytest.raises(BadRequest) as refused:
        store.create("RM_1", "room-1", "cam", META, size, sha256)
    assert refused.value.code == "invalid_message" and refused.value.details == {"field": field}
    assert not store.directory.exists() or files(store) == []


def test_an_upload_belongs_to_its_session(store: UploadStore) -> None:
    upload = store.create("RM_1", "room-1", "cam", META, 10, "a" * 64)
    assert store.get("RM_1", upload.upload_id).upload_id == upload.upload_id
    for sid, upload_id in (("RM_2", upload.upload_id), ("RM_1", "UP_0123456789abcdef"), ("RM_1", "../etc/passwd"),
                           ("RM_1", upload.upload_id.upper())):
        with pytest.raises(NotFound) as missing:
            store.get(sid, upload_id)
        assert missing.value.code == "upload_not_found"


def test_sweep_forgets_old_uploads_finished_or_not(store: UploadStore) -> None:
    old = store.create("RM_1", "room-1", "cam", META, 10, "a" * 64)
    done = store.create("RM_1", "room-1", "cam", META, 10, "b" * 64)
    store.finish(done, {"part": "device-1"})
    fresh = store.create("RM_1", "room-1", "cam", META, 10, "c" * 64)
    now = fresh.created_at
    assert store.sweep(now=now) == 0 and len(files(store)) == 5
    # Make two of them two hours old; a state that cannot be read is judged by its file's age.
    for upload in (old, done):
        state = store.directory / f"{upload.upload_id}.upload.json"
        state.write_text(json.dumps({**json.loads(state.read_text()), "created_at": now - 7200}))
    broken = store.directory / "UP_00000000000000ff.upload.json"
    broken.write_text("{not json")
    os.utime(broken, (now - 7200, now - 7200))
    assert store.sweep(now=now) == 3
    assert files(store) == sorted([f"{fresh.upload_id}.bin", f"{fresh.upload_id}.upload.json"])
    for upload in (old, done):
        with pytest.raises(NotFound):
            store.get("RM_1", upload.upload_id)
    # Kept for exactly upload_keep_s, not a moment longer.
    assert store.sweep(now=now + SETTINGS.upload_keep_s) == 0
    assert store.sweep(now=now + SETTINGS.upload_keep_s + 1) == 1 and files(store) == []
