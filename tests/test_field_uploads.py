"""Resumable, checksummed uploads of what a field device recorded while its link was
down (teller/recording/uploads.py, the REST at the end of teller/recording/rest.py):
chunks at offsets, resume after a dropped chunk, the SDK helper through an outage, a
digest that does not match, and bad input beside a live recorded call."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from teller.client import RoomClient
from teller.client.uploads import upload_segment
from teller.recording.archive import ARCHIVE, Archive
from teller.recording.index import publish_op
from teller.recording.manifest import verify_recording
from teller.recording.service import FINALIZER, OBJECTS
from teller.recording.uploads import Upload
from teller.signaling.tokens import Grants

from .conftest import SECRET, Server
from .tcp_proxy import TcpProxy
from .test_recording import compliance_token, decode_duration, get_json, run_call
from .test_recording_archive import auth, recorded

pytestmark = pytest.mark.media

# Small enough that a 2 s test segment (~500 KB of noise) takes several chunks.
CHUNK_MAX = 256 * 1024
MAX_UPLOAD = 4 * 1024 * 1024
FIELD = {"chunk_max_bytes": CHUNK_MAX, "max_upload_bytes": MAX_UPLOAD}
DEVICE = "bodycam-7"


def write_noise_webm(path: Path, seconds: float = 2.0, seed: int = 7) -> bytes:
    """A real, playable VP8 WebM that does not compress (noise), so it is large enough to
    need several chunks and to reach the server's disk mid-chunk."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.bit_rate = 2_000_000
        for _ in range(int(seconds * 10)):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path.read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def device_meta(start_wall: float, **extra: Any) -> dict[str, Any]:
    return {"kind": "video", "codec": "vp8", "start_wall": start_wall, "participant_id": DEVICE,
            "label": "Body camera",
            "events": [{"type": "snapshot", "ts": start_wall + 1, "note": "farm gate"}], **extra}


class Api:
    """The upload endpoints of one session, as a device calls them."""

    def __init__(self, http: aiohttp.ClientSession, server: Server, sid: str, token: str) -> None:
        self.http, self.server, self.sid, self.token = http, server, sid, token

    def url(self, upload_id: str | None = None, sid: str | None = None) -> str:
        base = f"{self.server.url}/v1/recordings/{sid or self.sid}/uploads"
        return f"{base}/{upload_id}" if upload_id else base

    async def create(self, body: dict[str, Any], token: str | None = None) -> tuple[int, Any]:
        async with self.http.post(self.url(), json=body, headers=auth(token or self.token)) as response:
            return response.status, await response.json()

    async def patch(self, upload_id: str, offset: int | str | None, data: Any, *, token: str | None = None,
                    sid: str | None = None) -> tuple[int, Any]:
        headers = {**auth(token or self.token), "Content-Type": "application/octet-stream"}
        if offset is not None:
            headers["Upload-Offset"] = str(offset)
        async with self.http.patch(self.url(upload_id, sid), data=data, headers=headers) as response:
            return response.status, await response.json()

    async def status(self, upload_id: str, *, token: str | None = None, sid: str | None = None) -> tuple[int, Any]:
        async with self.http.get(self.url(upload_id, sid), headers=auth(token or self.token)) as response:
            return response.status, await response.json()


def archive_of(server: Server) -> Archive:
    return server.app[ARCHIVE]  # type: ignore[index]


def upload_files(server: Server) -> list[str]:
    directory = archive_of(server).uploads.directory
    return sorted(p.name for p in directory.glob("UP_*")) if directory.exists() else []


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Polls `predicate`; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def settled(http: aiohttp.ClientSession, server: Server, sid: str, tracks: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The session once the finaliser has added its device parts: (detail, timeline events)."""
    token = compliance_token(server)
    finalizer = server.app[FINALIZER]  # type: ignore[index]
    deadline = time.monotonic() + 60
    while True:
        await finalizer.idle()
        status, detail = await get_json(http, f"{server.url}/v1/recordings/{sid}", token)
        assert status == 200, detail
        if sum(f["kind"] == "track" for f in detail["files"]) >= tracks:
            break
        assert time.monotonic() < deadline, detail
        await asyncio.sleep(0.2)
    await finalizer.idle()
    status, detail = await get_json(http, f"{server.url}/v1/recordings/{sid}", token)
    status, timeline = await get_json(http, f"{server.url}/v1/recordings/{sid}/timeline", token)
    assert status == 200, timeline
    return detail, timeline["events"]


async def test_a_segment_sent_in_three_chunks_joins_the_recording_with_its_digest_and_events(
    tmp_path: Path, clients: list[RoomClient], http: aiohttp.ClientSession
) -> None:
    server, runner, entry = await recorded(tmp_path, clients, http, field=FIELD)
    try:
        sid = entry["session_id"]
        data = write_noise_webm(tmp_path / "device.webm")
        assert CHUNK_MAX < len(data) <= 3 * CHUNK_MAX  # more than one chunk must take
        start_wall = entry["ended_at"] + 5
        api = Api(http, server, sid, server.issuer.issue(room=entry["room"], role="officer", subject=DEVICE))

        status, created = await api.create({**device_meta(start_wall), "size": len(data), "sha256": sha256(data)})
        assert status == 201, created
        upload_id = created["upload_id"]
        assert created["offset"] == 0 and created["size"] == len(data) and created["complete"] is False
        assert created["chunk_max"] == CHUNK_MAX and created["session_id"] == sid
        status, body = await api.status(upload_id)
        assert (status, body["offset"], body["complete"]) == (200, 0, False)

        third = -(-len(data) // 3)
        assert third <= CHUNK_MAX
        pieces = [data[i:i + third] for i in range(0, len(data), third)]
        assert len(pieces) == 3
        offset = 0
        for piece in pieces[:-1]:
            status, body = await api.patch(upload_id, offset, piece)
            offset += len(piece)
            assert status == 200, body
            assert body["offset"] == offset and body["complete"] is False and "part" not in body
            status, body = await api.status(upload_id)
            assert (status, body["offset"], body["size"], body["complete"]) == (200, offset, len(data), False)
        assert len(upload_files(server)) == 2  # its state and its bytes so far

        status, done = await api.patch(upload_id, offset, pieces[-1])
        assert status == 201, done
        assert done["complete"] is True and done["offset"] == len(data) and done["session_id"] == sid
        assert done["part"].startswith("device-") and done["duration_s"] == pytest.approx(2.0, abs=0.3)
        status, body = await api.status(upload_id)
        assert status == 200 and body["complete"] is True and body["result"]["part"] == done["part"]
        # The bytes moved into the recording; only the small state (for a late retry) stays.
        assert upload_files(server) == [f"{upload_id}.upload.json"]
        status, body = await api.patch(upload_id, len(data), b"")
        assert (status, body["error"]["code"]) == (409, "upload_complete")
        assert archive_of(server).uploads.completed == 1

        detail, events = await settled(http, server, sid, tracks=5)
        device_tracks = [f for f in detail["files"] if f["kind"] == "track" and done["part"] in f["name"]]
        assert len(device_tracks) == 1, detail["files"]
        assert detail["manifest_ok"] is True
        segment = [e for e in events if e["type"] == "device_segment"]
        assert len(segment) == 1, events
        assert segment[0]["sha256"] == sha256(data) and segment[0]["device"] == DEVICE
        assert segment[0]["participant_id"] == DEVICE and segment[0]["kind"] == "video"
        assert segment[0]["ts"] == pytest.approx(start_wall, abs=0.01)
        snapshot = [e for e in events if e["type"] == "snapshot"]
        assert len(snapshot) == 1 and snapshot[0]["source"] == "device" and snapshot[0]["note"] == "farm gate"
        cover = detail["coverage"][f"{DEVICE}/video"]
        assert cover["device_s"] == pytest.approx(done["duration_s"], abs=0.01) and cover["gaps"] == []
        # The bytes the recording holds are the ones the device hashed.
        async with http.get(f"{server.url}/v1/recordings/{sid}/files/{device_tracks[0]['name']}",
                            params={"access_token": compliance_token(server)}) as response:
            assert response.status == 200
            assert sha256(await response.read()) == sha256(data)
        assert (await verify_recording(server.app[OBJECTS], sid, SECRET)).ok  # type: ignore[index]
    finally:
        await runner.cleanup()


class Dropped(Exception):
    """The device's link went down in the middle of a chunk."""


async def test_an_interrupted_upload_resumes_from_the_servers_offset_and_the_sdk_rides_out_an_outage(
    tmp_path: Path, clients: list[RoomClient], http: aiohttp.ClientSession
) -> None:
    server, runner, entry = await recorded(tmp_path, clients, http, field=FIELD)
    proxy = TcpProxy(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))).start()
    try:
        sid = entry["session_id"]
        store = archive_of(server).uploads
        data = write_noise_webm(tmp_path / "device.webm")
        start_wall = entry["ended_at"] + 5
        device = server.issuer.issue(room=entry["room"], role="officer", subject=DEVICE)
        api = Api(http, server, sid, device)
        status, created = await api.create({**device_meta(start_wall), "size": len(data), "sha256": sha256(data)})
        assert status == 201, created
        upload_id = created["upload_id"]
        bytes_path = store.directory / f"{upload_id}.bin"
        piece = 150_000

        status, body = await api.patch(upload_id, 0, data[:piece])
        assert (status, body["offset"]) == (200, piece)
        # A retry of a chunk the server already has (its answer was lost), and one from too
        # far on: both told where the server's copy ends, and nothing is written.
        for wrong in (0, piece - 1, piece + 1, 10 * piece):
            status, body = await api.patch(upload_id, wrong, data[wrong:wrong + 10])
            assert (status, body["error"]["code"]) == (409, "offset_mismatch"), body
            assert body["error"]["details"]["offset"] == piece and body["error"]["message"]
        assert bytes_path.stat().st_size == piece

        # The link drops with half of the next chunk sent: the server keeps none of it.
        async def half_then_drop() -> AsyncIterator[bytes]:
            yield data[piece:piece + piece // 2]
            await wait_for(lambda: bytes_path.stat().st_size > piece, "the half chunk to reach the server")
            raise Dropped

        with pytest.raises((Dropped, aiohttp.ClientError)):
            await api.patch(upload_id, piece, half_then_drop())
        status, body = await api.patch(upload_id, piece, data[piece:2 * piece])
        assert (status, body["offset"]) == (200, 2 * piece), body

        # Again, cut in the network (the TCP proxy) rather than by the client.
        resume = asyncio.Event()

        async def half_then_wait() -> AsyncIterator[bytes]:
            yield data[2 * piece:2 * piece + piece // 2]
            await resume.wait()
            yield data[2 * piece + piece // 2:3 * piece]

        through_proxy = Api(http, Server(f"http://{proxy.endpoint}", server.issuer, server.config), sid, device)
        request = asyncio.create_task(through_proxy.patch(upload_id, 2 * piece, half_then_wait()))
        await wait_for(lambda: bytes_path.stat().st_size > 2 * piece, "the half chunk to reach the server")
        proxy.cut()
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(request, 20)
        resume.set()
        proxy.restore()
        status, body = await api.patch(upload_id, 2 * piece, data[2 * piece:3 * piece])
        assert (status, body["offset"]) == (200, 3 * piece), body
        status, body = await api.status(upload_id)
        assert (status, body["offset"]) == (200, 3 * piece)
        assert bytes_path.stat().st_size == 3 * piece

        status, done = await api.patch(upload_id, 3 * piece, data[3 * piece:])
        assert status == 201 and done["complete"] is True, done

        # The SDK helper, through the proxy, with the line cut after its second chunk: it
        # asks where the server's copy ends and goes on from there.
        second = write_noise_webm(tmp_path / "second.webm", seed=11)
        sdk_chunk = 64 * 1024
        reached, release = asyncio.Event(), asyncio.Event()
        original = store.append

        async def gated(upload: Upload, offset: int, body: Any) -> Upload:
            result = await original(upload, offset, body)
            if upload.upload_id != upload_id and result.offset == 2 * sdk_chunk and not release.is_set():
                reached.set()
                await release.wait()
            return result

        store.append = gated  # type: ignore[method-assign]
        accepted = proxy.accepted
        task = asyncio.create_task(upload_segment(f"http://{proxy.endpoint}", device, sid, tmp_path / "second.webm",
                                                  device_meta(start_wall + 10), chunk=sdk_chunk, retry_s=0.1))
        await asyncio.wait_for(reached.wait(), 20)
        proxy.cut()
        release.set()
        proxy.restore()
        result = await asyncio.wait_for(task, 30)
        store.append = original  # type: ignore[method-assign]
        assert result["complete"] is True and result["size"] == len(second) and result["part"].startswith("device-")
        assert proxy.accepted > accepted + 1  # it came back on a new connection

        detail, events = await settled(http, server, sid, tracks=6)
        digests = sorted(e.get("sha256") for e in events if e["type"] == "device_segment")
        assert digests == sorted([sha256(data), sha256(second)])
        assert detail["manifest_ok"] is True
        assert upload_files(server) == sorted(f"{u}.upload.json" for u in (upload_id, result["upload_id"]))
    finally:
        proxy.close()
        await runner.cleanup()


async def test_a_checksum_mismatch_discards_the_upload_and_adds_nothing(
    tmp_path: Path, clients: list[RoomClient], http: aiohttp.ClientSession
) -> None:
    server, runner, entry = await recorded(tmp_path, clients, http, field=FIELD)
    try:
        sid = entry["session_id"]
        data = write_noise_webm(tmp_path / "device.webm")
        other = write_noise_webm(tmp_path / "other.webm", seed=8)
        api = Api(http, server, sid, server.issuer.issue(room=entry["room"], role="officer", subject=DEVICE))
        status, created = await api.create({**device_meta(entry["ended_at"] + 5), "size": len(data),
                                            "sha256": sha256(other)})
        assert status == 201, created
        upload_id = created["upload_id"]
        half = len(data) // 2
        status, body = await api.patch(upload_id, 0, data[:half])
        assert (status, body["offset"]) == (200, half)
        status, body = await api.patch(upload_id, half, data[half:])
        assert (status, body["error"]["code"]) == (422, "checksum_mismatch"), body
        assert body["error"]["message"] and body["error"]["details"]["received"] == sha256(data)
        status, body = await api.status(upload_id)
        assert (status, body["error"]["code"]) == (404, "upload_not_found")
        status, body = await api.patch(upload_id, half, data[half:])
        assert (status, body["error"]["code"]) == (404, "upload_not_found")
        assert upload_files(server) == []
        assert archive_of(server).uploads.checksum_failures == 1 and archive_of(server).uploads.completed == 0

        detail, events = await settled(http, server, sid, tracks=4)
        assert sum(f["kind"] == "track" for f in detail["files"]) == 4
        assert not [e for e in events if e["type"] in ("device_segment", "snapshot")]
        assert not list((server.app[FINALIZER].spool / sid).glob("part-device-*"))  # type: ignore[index]
    finally:
        await runner.cleanup()


async def test_bad_uploads_change_nothing_and_a_recorded_call_beside_them_is_unharmed(
    tmp_path: Path, clients: list[RoomClient], http: aiohttp.ClientSession
) -> None:
    server, runner, entry = await recorded(tmp_path, clients, http, field=FIELD)
    try:
        sid, room = entry["session_id"], entry["room"]
        archive = archive_of(server)
        device = server.issuer.issue(room=room, role="officer", subject=DEVICE)
        api = Api(http, server, sid, device)
        data = write_noise_webm(tmp_path / "device.webm")
        start_wall = entry["ended_at"] + 5
        good = {**device_meta(start_wall), "size": len(data), "sha256": sha256(data)}
        status, created = await api.create(good)
        assert status == 201, created
        upload_id = created["upload_id"]
        first = 100_000
        status, body = await api.patch(upload_id, 0, data[:first])
        assert (status, body["offset"]) == (200, first)
        # Another session, in another room, with an upload of its own.
        other_sid, other_room = f"RM_other{uuid.uuid4().hex[:8]}", "elsewhere"
        await publish_op(archive.state, {"op": "upsert", "entry": {"session_id": other_sid, "room": other_room,
                                                                   "started_at": time.time() - 60, "status": "ready"}})
        other_device = server.issuer.issue(room=other_room, role="officer", subject=DEVICE)
        other_api = Api(http, server, other_sid, other_device)
        status, other = await other_api.create(good)
        assert status == 201, other
        status, small = await api.create({**good, "size": 1000, "sha256": sha256(b"y" * 1000)})
        assert status == 201, small
        before = upload_files(server)
        assert len(before) == 6

        call = asyncio.create_task(run_call(server, "beside", 4.0, clients))
        await wait_for(lambda: any(r == "beside" for r in server.node.rooms), "the call beside", timeout=30)

        customer = server.token(room, "customer")
        elsewhere = server.issuer.issue(room="elsewhere", role="officer", subject=DEVICE)
        no_grant = server.issuer.issue(room=room, role="officer", subject=DEVICE, grants=Grants(subscribe=True))
        creates: list[tuple[dict[str, Any], str | None, int, str]] = [
            ({**good, "size": 0}, None, 400, "invalid_message"),
            ({**good, "size": -1}, None, 400, "invalid_message"),
            ({**good, "size": "10"}, None, 400, "invalid_message"),
            ({**good, "size": 10.5}, None, 400, "invalid_message"),
            ({**good, "size": True}, None, 400, "invalid_message"),
            ({**good, "size": MAX_UPLOAD + 1}, None, 400, "invalid_message"),
            ({k: v for k, v in good.items() if k != "size"}, None, 400, "invalid_message"),
            ({**good, "sha256": "abc"}, None, 400, "invalid_message"),
            ({**good, "sha256": "g" * 64}, None, 400, "invalid_message"),
            ({**good, "sha256": 12345}, None, 400, "invalid_message"),
            ({k: v for k, v in good.items() if k != "sha256"}, None, 400, "invalid_message"),
            ({k: v for k, v in good.items() if k != "kind"}, None, 400, "invalid_message"),
            ({**good, "kind": "screen"}, None, 400, "invalid_message"),
            ({k: v for k, v in good.items() if k != "codec"}, None, 400, "invalid_message"),
            ({**good, "codec": "av1"}, None, 400, "invalid_message"),
            ({k: v for k, v in good.items() if k != "start_wall"}, None, 400, "invalid_message"),
            ({**good, "start_wall": "now"}, None, 400, "invalid_message"),
            ({**good, "start_wall": 0}, None, 400, "invalid_message"),
            ({**good, "start_wall": True}, None, 400, "invalid_message"),
            ({**good, "start_wall": time.time() + 3600}, None, 400, "invalid_message"),
            ({**good, "participant_id": "../etc"}, None, 400, "invalid_message"),
            ({**good, "participant_id": ""}, None, 400, "invalid_message"),
            ({**good, "participant_id": "x" * 65}, None, 400, "invalid_message"),
            ({**good, "participant_id": 7}, None, 400, "invalid_message"),
            ({**good, "events": "snapshot"}, None, 400, "invalid_message"),
            ({**good, "events": [{"type": 5, "ts": 1}]}, None, 400, "invalid_message"),
            ({**good, "events": [{"type": "note"}]}, None, 400, "invalid_message"),
            (good, customer, 403, "role_forbidden"),
            (good, elsewhere, 403, "room_forbidden"),
            (good, no_grant, 403, "grant_missing"),
        ]
        for body, token, want_status, code in creates:
            status, answer = await api.create(body, token=token)
            assert (status, answer["error"]["code"]) == (want_status, code), (body, answer)
            assert answer["error"]["message"]
        async with http.post(api.url(), data=b"{", headers={**auth(device), "Content-Type": "application/json"}) as r:
            assert (r.status, (await r.json())["error"]["code"]) == (400, "invalid_json")
        async with http.post(f"{server.url}/v1/recordings/RM_nope/uploads", json=good, headers=auth(device)) as r:
            assert (r.status, (await r.json())["error"]["code"]) == (404, "recording_not_found")
        async with http.post(api.url(), json=good) as r:
            assert r.status == 401

        patches: list[tuple[str, Any, Any, dict[str, Any], int, str]] = [
            (upload_id, None, data[first:first + 10], {}, 400, "invalid_message"),
            (upload_id, "abc", data[first:first + 10], {}, 400, "invalid_message"),
            (upload_id, "-1", data[first:first + 10], {}, 400, "invalid_message"),
            (upload_id, "1.5", data[first:first + 10], {}, 400, "invalid_message"),
            (upload_id, "", data[first:first + 10], {}, 400, "invalid_message"),
            (upload_id, 0, data[:10], {}, 409, "offset_mismatch"),
            # A chunk over chunk_max, and one that fits it but passes the declared size.
            (upload_id, first, data[first:first + CHUNK_MAX + 1], {}, 413, "message_too_large"),
            (small["upload_id"], 0, b"y" * 1001, {}, 413, "message_too_large"),
            ("UP_0123456789abcdef", first, b"x", {}, 404, "upload_not_found"),
            ("nope", first, b"x", {}, 404, "upload_not_found"),
            (other["upload_id"], 0, data[:10], {}, 404, "upload_not_found"),
            (upload_id, first, data[first:first + 10], {"sid": other_sid, "token": other_device}, 404, "upload_not_found"),
            (upload_id, first, data[first:first + 10], {"token": customer}, 403, "role_forbidden"),
            (upload_id, first, data[first:first + 10], {"token": elsewhere}, 403, "room_forbidden"),
        ]
        for upload, offset, chunk, kwargs, want_status, code in patches:
            status, answer = await api.patch(upload, offset, chunk, **kwargs)
            assert (status, answer["error"]["code"]) == (want_status, code), (upload, offset, answer)
            assert answer["error"]["message"]
            if code == "offset_mismatch":
                assert answer["error"]["details"]["offset"] == first
        for upload, kwargs, want_status, code in [
            ("UP_0123456789abcdef", {}, 404, "upload_not_found"),
            (other["upload_id"], {}, 404, "upload_not_found"),
            (upload_id, {"sid": other_sid, "token": other_device}, 404, "upload_not_found"),
            (upload_id, {"token": customer}, 403, "role_forbidden"),
            (upload_id, {"token": elsewhere}, 403, "room_forbidden"),
        ]:
            status, answer = await api.status(upload, **kwargs)
            assert (status, answer["error"]["code"]) == (want_status, code), (upload, answer)

        # Nothing changed: the same uploads, the first still where it was.
        assert upload_files(server) == before
        status, body = await api.status(upload_id)
        assert (status, body["offset"], body["complete"]) == (200, first, False)
        for other_upload, other_side in ((other, other_api), (small, api)):
            status, body = await other_side.status(other_upload["upload_id"])
            assert (status, body["offset"]) == (200, 0)

        # Bytes with the right digest that are not a playable WebM: refused, discarded.
        junk = b"this is not a webm segment " * 100
        status, created = await api.create({**good, "size": len(junk), "sha256": sha256(junk)})
        assert status == 201
        status, answer = await api.patch(created["upload_id"], 0, junk)
        assert (status, answer["error"]["code"]) == (400, "invalid_media"), answer
        assert answer["error"]["message"]
        status, answer = await api.status(created["upload_id"])
        assert (status, answer["error"]["code"]) == (404, "upload_not_found")
        assert upload_files(server) == before
        assert not list((server.app[FINALIZER].spool / sid).glob("tracks/device-*/*.webm"))  # type: ignore[index]

        # The call beside is recorded whole.
        await asyncio.wait_for(call, 60)
        token = compliance_token(server)
        deadline = time.monotonic() + 60
        while True:
            status, listing = await get_json(http, f"{server.url}/v1/recordings", token)
            beside = [i for i in listing["items"] if i["room"] == "beside" and i["status"] == "ready"]
            if beside:
                break
            assert time.monotonic() < deadline, listing
            await asyncio.sleep(0.3)
        assert beside[0]["tracks"] == 4
        status, detail = await get_json(http, f"{server.url}/v1/recordings/{beside[0]['session_id']}", token)
        track = next(f for f in detail["files"] if f["kind"] == "track" and f["track_kind"] == "video")
        async with http.get(f"{server.url}/v1/recordings/{beside[0]['session_id']}/files/{track['name']}",
                            params={"access_token": token}) as response:
            (tmp_path / "beside.webm").write_bytes(await response.read())
        assert decode_duration(tmp_path / "beside.webm")[1] >= 3.0

        # The abused upload still finishes, and the first session holds exactly it.
        middle = first + CHUNK_MAX
        status, body = await api.patch(upload_id, first, data[first:middle])
        assert (status, body["offset"]) == (200, middle), body
        status, done = await api.patch(upload_id, middle, data[middle:])
        assert status == 201 and done["complete"] is True, done
        detail, events = await settled(http, server, sid, tracks=5)
        assert sum(f["kind"] == "track" for f in detail["files"]) == 5
        assert [e["sha256"] for e in events if e["type"] == "device_segment"] == [sha256(data)]
    finally:
        await runner.cleanup()


# -- defects found in review, fixed: each of these failed before --------------------------


@pytest.fixture
async def field_session(tmp_path: Path) -> AsyncIterator[tuple[Server, Api, bytes]]:
    """A session in the index with nothing recorded live yet: enough for the upload API."""
    from .conftest import start_in_process
    from .test_recording import RECORDING

    server, runner = await start_in_process(tmp_path, recording={**RECORDING, "composite": False}, field=FIELD)
    try:
        sid, room = f"RM_field{uuid.uuid4().hex[:8]}", "visit-1"
        await publish_op(archive_of(server).state, {"op": "upsert", "entry": {
            "session_id": sid, "room": room, "started_at": time.time() - 120, "status": "ready"}})
        async with aiohttp.ClientSession() as http:
            api = Api(http, server, sid, server.issuer.issue(room=room, role="officer", subject=DEVICE))
            yield server, api, write_noise_webm(tmp_path / "device.webm")
    finally:
        await runner.cleanup()


async def test_an_upload_offset_in_other_digits_is_refused(field_session: tuple[Server, Api, bytes]) -> None:
    _, api, data = field_session
    status, created = await api.create({**device_meta(time.time() - 60), "size": len(data), "sha256": sha256(data)})
    assert status == 201
    status, answer = await api.patch(created["upload_id"], "²", data[:10])
    assert (status, answer["error"]["code"]) == (400, "invalid_message")


async def test_a_label_that_is_not_text_is_refused(field_session: tuple[Server, Api, bytes]) -> None:
    _, api, data = field_session
    status, answer = await api.create({**device_meta(time.time() - 60, label=5), "size": len(data),
                                       "sha256": sha256(data)})
    assert (status, answer.get("error", {}).get("code")) == (400, "invalid_message"), answer


async def test_event_times_must_be_finite(field_session: tuple[Server, Api, bytes]) -> None:
    _, api, data = field_session
    body = {**device_meta(time.time() - 60, events=[{"type": "note", "ts": float("nan")}]),
            "size": len(data), "sha256": sha256(data)}
    async with api.http.post(api.url(), data=json.dumps(body),
                             headers={**auth(api.token), "Content-Type": "application/json"}) as response:
        assert response.status == 400, await response.text()


async def test_the_sdk_returns_when_the_answer_to_its_last_chunk_was_lost(
    field_session: tuple[Server, Api, bytes], tmp_path: Path
) -> None:
    server, api, _ = field_session  # the segment is written at tmp_path / "device.webm"
    archive = archive_of(server)
    store = archive.uploads
    proxy = TcpProxy(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))).start()
    refused: list[str] = []
    original_ingest, original_append = archive.ingest_file, store.append

    async def ingest_then_cut(*args: Any) -> dict[str, Any]:
        result = await original_ingest(*args)
        proxy.cut()  # the segment has joined; its answer never reaches the device
        proxy.restore()
        return result

    async def counting(upload: Upload, offset: int, body: Any) -> Upload:
        try:
            return await original_append(upload, offset, body)
        except Exception as exc:
            refused.append(getattr(exc, "code", repr(exc)))
            raise

    archive.ingest_file = ingest_then_cut  # type: ignore[method-assign]
    store.append = counting  # type: ignore[method-assign]
    path = tmp_path / "device.webm"
    task = asyncio.create_task(upload_segment(f"http://{proxy.endpoint}", api.token, api.sid, path,
                                              device_meta(time.time() - 60), chunk=CHUNK_MAX, retry_s=0.1))
    try:
        await wait_for(lambda: task.done() or len(refused) >= 20, "the SDK to finish or loop", timeout=30)
        assert task.done() and task.result()["complete"] is True, f"still PATCHing after {refused[:3]}..."
    finally:
        task.cancel()
        proxy.close()


async def test_a_repeated_last_chunk_while_the_segment_is_being_added_is_refused(
    field_session: tuple[Server, Api, bytes],
) -> None:
    server, api, data = field_session
    archive = archive_of(server)
    status, created = await api.create({**device_meta(time.time() - 60), "size": len(data), "sha256": sha256(data)})
    upload_id = created["upload_id"]
    status, body = await api.patch(upload_id, 0, data[:CHUNK_MAX])
    assert status == 200
    entered, release = asyncio.Event(), asyncio.Event()
    original = archive.ingest_file
    calls: list[str] = []

    async def slow_ingest(*args: Any) -> dict[str, Any]:
        calls.append("ingest")
        if len(calls) == 1:
            entered.set()
            await release.wait()
        return await original(*args)

    archive.ingest_file = slow_ingest  # type: ignore[method-assign]
    last = asyncio.create_task(api.patch(upload_id, CHUNK_MAX, data[CHUNK_MAX:]))
    try:
        await asyncio.wait_for(entered.wait(), 20)
        status, body = await api.status(upload_id)
        assert (body["offset"], body["complete"]) == (len(data), False)
        status, again = await api.patch(upload_id, len(data), b"")
        release.set()
        status_last, answer = await asyncio.wait_for(last, 20)
        assert status == 409, again
        assert status_last == 201 and calls == ["ingest"], answer
    finally:
        release.set()
        await asyncio.gather(last, return_exceptions=True)
