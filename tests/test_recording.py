"""Recording end to end: a real two-party call on a real server, recorded, finalised,
stored, searchable, replayable and verifiable."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from teller.client import RoomClient
from teller.client.sources import TestPatternTrack, ToneTrack
from teller.recording.archive import ARCHIVE
from teller.recording.manifest import verify_recording
from teller.recording.service import FINALIZER, OBJECTS
from teller.signaling.tokens import ANY_ROOM

from .conftest import SECRET, Server, start_in_process, wait_until

RECORDING = {"enabled": True, "composite_height": 240, "composite_fps": 10, "flush_interval_s": 0.5}


def compliance_token(server: Server, role: str = "compliance", name: str = "Auditor") -> str:
    return server.issuer.issue(room=ANY_ROOM, role=role, name=name)


async def get_json(http: aiohttp.ClientSession, url: str, token: str, **params: str) -> tuple[int, Any]:
    async with http.get(url, params=params, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json()


async def run_call(server: Server, room: str, seconds: float, clients: list[RoomClient]) -> None:
    """A customer and an agent, each with camera and microphone, for `seconds`."""
    customer = RoomClient(server.url, server.token(room, "customer", name="Li Hua"))
    agent = RoomClient(server.url, server.token(room, "agent", name="Wang Li"))
    clients += [customer, agent]
    for client, (colour, tone) in ((customer, (0, 440.0)), (agent, (1, 660.0))):
        await client.connect()
        await client.publish([TestPatternTrack(320, 240, 15), ToneTrack(tone)])
    await asyncio.sleep(seconds)
    for client in (customer, agent):
        await client.leave()


async def ready_entry(http: aiohttp.ClientSession, server: Server, token: str, timeout: float = 90.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, body = await get_json(http, f"{server.url}/v1/recordings", token)
        assert status == 200, body
        items = [i for i in body["items"] if i["status"] == "ready"]
        if items:
            return dict(items[0])
        assert loop.time() < deadline, f"no recording became ready: {body}"
        await asyncio.sleep(0.5)


def decode_duration(path: Path) -> tuple[str, float, int]:
    with av.open(str(path)) as container:
        stream = container.streams[0]
        first = last = None
        frames = 0
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base)
            first = t if first is None else first
            last = t
            frames += 1
        return stream.codec_context.name, (last or 0) - (first or 0), frames


@pytest.fixture
async def recording_server(tmp_path: Path) -> Any:
    srv, runner = await start_in_process(tmp_path, recording=RECORDING, rooms={"empty_timeout_s": 0.5})
    try:
        yield srv
    finally:
        await runner.cleanup()


async def test_two_party_session_is_recorded_finalised_and_verifiable(
    recording_server: Server, http: aiohttp.ClientSession, clients: list[RoomClient], tmp_path: Path
) -> None:
    server = recording_server
    await run_call(server, "rec-1", 10.0, clients)
    token = compliance_token(server)
    entry = await ready_entry(http, server, token)
    sid = entry["session_id"]
    assert entry["room"] == "rec-1" and entry["tracks"] == 4 and entry["composite"] is True
    assert 9.0 <= entry["duration_s"] <= 13.0

    status, detail = await get_json(http, f"{server.url}/v1/recordings/{sid}", token)
    assert status == 200 and detail["manifest_ok"] is True
    tracks = [f for f in detail["files"] if f["kind"] == "track"]
    assert sorted(f["track_kind"] for f in tracks) == ["audio", "audio", "video", "video"]

    # Every original decodes, with about the call's duration, without transcoding.
    for track in tracks:
        target = tmp_path / "dl" / track["name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        async with http.get(f"{server.url}/v1/recordings/{sid}/files/{track['name']}",
                            params={"access_token": token, "download": "1"}) as response:
            assert response.status == 200
            target.write_bytes(await response.read())
        codec, seconds, _ = decode_duration(target)
        assert codec == ("vp8" if track["track_kind"] == "video" else "opus")
        assert 8.5 <= seconds <= 11.0, (track["name"], seconds)

    # The composite is H.264 + AAC and plays for the length of the session.
    composite = tmp_path / "composite.mp4"
    async with http.get(f"{server.url}/v1/recordings/{sid}/files/composite.mp4", params={"access_token": token}) as response:
        assert response.status == 200 and response.content_type == "video/mp4"
        composite.write_bytes(await response.read())
    with av.open(str(composite)) as container:
        kinds = sorted(s.codec_context.name for s in container.streams)
        assert kinds == ["aac", "h264"]
        assert 8.5 <= container.duration / 1e6 <= 13.0
        assert sum(1 for _ in container.decode(video=0)) > 50

    # A byte range, as a media element asks for it.
    async with http.get(f"{server.url}/v1/recordings/{sid}/files/composite.mp4",
                        params={"access_token": token}, headers={"Range": "bytes=100-199"}) as response:
        assert response.status == 206
        assert await response.read() == composite.read_bytes()[100:200]

    # The timeline has the joins and the track publications, in order, relative to the start.
    status, timeline = await get_json(http, f"{server.url}/v1/recordings/{sid}/timeline", token)
    types = [e["type"] for e in timeline["events"]]
    assert types.count("participant_joined") == 2 and types.count("track_published") == 4
    assert [e["t"] for e in timeline["events"]] == sorted(e["t"] for e in timeline["events"])

    # The manifest proves the files; a one-byte edit of any of them is caught.
    objects = server.app[OBJECTS]  # type: ignore[index]
    report = await verify_recording(objects, sid, SECRET)
    assert report.ok and report.checked >= 6, report
    victim = Path(server.config.storage.data_dir) / "objects" / "recordings" / sid / tracks[0]["name"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    report = await verify_recording(objects, sid, SECRET)
    assert not report.ok and [p["key"].rsplit("/", 1)[-1] for p in report.problems] == [tracks[0]["name"].rsplit("/", 1)[-1]]


async def test_archive_is_for_compliance_and_supervisors_only_and_refusals_are_audited(
    recording_server: Server, http: aiohttp.ClientSession
) -> None:
    server = recording_server
    for token in (server.token("rec-x", "customer"), server.token("rec-x", "agent"),
                  server.issuer.issue(room="rec-x", role="compliance")):
        status, body = await get_json(http, f"{server.url}/v1/recordings", token)
        assert status == 403 and body["error"]["code"] == "role_forbidden"
    status, body = await get_json(http, f"{server.url}/v1/recordings", "not-a-token")
    assert status == 401
    status, body = await get_json(http, f"{server.url}/v1/recordings", compliance_token(server, "supervisor"))
    assert status == 200 and body["items"] == []
    status, body = await get_json(http, f"{server.url}/v1/audit", compliance_token(server))
    assert status == 200
    denied = [e for e in body["entries"] if e["outcome"] == "denied"]
    assert {e["role"] for e in denied} >= {"customer", "agent", "compliance", "none"}
    assert all(e["action"] == "search" and e["ip"] == "127.0.0.1" for e in denied)
    # A supervisor may search but not hold or delete.
    async with http.put(f"{server.url}/v1/recordings/RM_x/legal-hold", json={"hold": True, "reason": "x"},
                        headers={"Authorization": f"Bearer {compliance_token(server, 'supervisor')}"}) as response:
        assert response.status == 403


async def test_recording_waits_for_nothing_on_the_live_path_and_discards_unrecorded_businesses(
    tmp_path: Path, http: aiohttp.ClientSession, clients: list[RoomClient]
) -> None:
    """A business outside recording.businesses leaves no recording behind."""
    server, runner = await start_in_process(
        tmp_path, recording={**RECORDING, "businesses": ["transfer"], "record_unassigned": False},
        rooms={"empty_timeout_s": 0.5},
    )
    try:
        async with http.post(f"{server.url}/v1/rooms", json={"name": "plain-room", "metadata": {"business": "complaint"}},
                             headers={"Authorization": f"Bearer {server.admin_token()}"}) as response:
            assert response.status in (200, 201), await response.text()
        await run_call(server, "plain-room", 2.0, clients)
        finalizer = server.app[FINALIZER]  # type: ignore[index]
        spool = finalizer.spool
        await wait_until(lambda: not any(spool.iterdir()), timeout=20)
        await finalizer.idle()
        archive = server.app[ARCHIVE]  # type: ignore[index]
        await archive.feeder.sync()
        assert (await archive.index.search(__import__("teller.recording.index", fromlist=["SearchQuery"]).SearchQuery())).items == []
    finally:
        await runner.cleanup()


def _json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_kill_9_mid_session_leaves_playable_segments_and_a_restart_finalises_them(
    tmp_path: Path, http: aiohttp.ClientSession, clients: list[RoomClient]
) -> None:
    """SIGKILL in the middle of a call: what is on disk plays, short by at most 2 s, and the
    next start uploads and finalises it without anyone asking."""
    import signal
    import time

    from .conftest import start_process, stop_process

    sections = {"recording": {**RECORDING, "composite": False}}
    server = start_process(tmp_path, **sections)
    try:
        customer = RoomClient(server.url, server.token("crash-room", "customer"), reconnect=False)
        clients.append(customer)
        await customer.connect()
        await customer.publish([TestPatternTrack(320, 240, 15), ToneTrack(440.0)])
        published = time.time()
        await asyncio.sleep(6.0)
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        killed = time.time()
        server.process.wait(10)
    except BaseException:
        stop_process(server)
        raise
    spool = tmp_path / "data" / "spool"
    media = sorted(p for p in spool.rglob("*") if p.suffix in (".webm", ".mkv"))
    assert len(media) == 2, media
    for path in media:
        meta = json.loads(path.with_name(path.name + ".json").read_text())
        assert not meta["closed"]  # nobody closed it: the process died
        _, seconds, _ = decode_duration(path)
        covered = meta["start_wall"] + seconds
        assert killed - covered <= 2.0, (path.name, killed - covered)
        assert seconds >= (killed - published) - 2.5
    await customer.close()

    restarted = start_process(tmp_path, **sections)
    try:
        token = restarted.issuer.issue(room=ANY_ROOM, role="compliance")
        entry = await ready_entry(http, restarted, token, timeout=60)
        assert entry["room"] == "crash-room" and entry["tracks"] == 2
        assert entry["duration_s"] >= 4.0
        assert not any(p.is_file() for p in spool.rglob("*")), "the spool is emptied once the store has everything"
    finally:
        stop_process(restarted)
