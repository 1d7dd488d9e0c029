"""A field visit end to end: a body camera publishes with GPS, a reviewer watches, talks,
takes evidence and decides; a dropped rural link loses nothing from the recording."""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from teller.client import RoomClient
from teller.client import cli as client_cli
from teller.client.bodycam import BodyCam
from teller.client.device import DeviceFeed, LocalRecorder
from teller.client.sources import media_tracks
from teller.impair import Impairment
from teller.recording.service import FINALIZER

from .conftest import Server, start_in_process, wait_until
from .media import receive
from .tcp_proxy import TcpProxy
from .turn import impaired_turn

pytestmark = pytest.mark.media

RECORDING = {"enabled": True, "composite": False}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def dev_token(http: aiohttp.ClientSession, server: Server, role: str, name: str) -> str:
    async with http.post(f"{server.url}/v1/dev/field", json={"role": role, "name": name}) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["token"]


async def start_visit(http: aiohttp.ClientSession, server: Server, officer: str, case: str = "LN-2026-0042") -> dict[str, Any]:
    async with http.post(f"{server.url}/v1/field/sessions", json={"customer_name": "Li Hua", "case_number": case},
                         headers=auth(officer)) as r:
        assert r.status == 201, await r.text()
        return await r.json()


async def get(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any]:
    async with http.get(url, headers=auth(token)) as r:
        return r.status, await r.json(content_type=None)


async def post(http: aiohttp.ClientSession, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    async with http.post(url, json=body if body is not None else {}, headers=auth(token)) as r:
        return r.status, await r.json(content_type=None)


async def recording(http: aiohttp.ClientSession, server: Server, sid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The finished recording's detail and timeline, once finalised."""
    async with http.post(f"{server.url}/v1/recordings/login", json={"role": "compliance"}) as r:
        token = (await r.json())["token"]
    finalizer = server.app[FINALIZER]  # type: ignore[index]
    deadline = time.monotonic() + 60
    while True:
        await finalizer.idle()
        status, detail = await get(http, f"{server.url}/v1/recordings/{sid}", token)
        if status == 200 and detail["session"].get("status") == "ready" and detail.get("manifest_ok") and not any(
                p.name.startswith("part-") for p in (finalizer.spool / sid).glob("*")):
            break
        assert time.monotonic() < deadline, detail
        await asyncio.sleep(0.3)
    status, timeline = await get(http, f"{server.url}/v1/recordings/{sid}/timeline", token)
    assert status == 200
    return detail, timeline["events"]


async def test_whip_bodycam_with_gps_reviewer_snapshot_and_decision(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    server, runner = await start_in_process(tmp_path, recording=RECORDING, rooms={"empty_timeout_s": 0.5})
    reviewer_client: RoomClient | None = None
    camera = None
    try:
        officer = await dev_token(http, server, "officer", "Zhang Wei")
        reviewer = await dev_token(http, server, "reviewer", "Chen Jing")
        visit = await start_visit(http, server, officer)
        field_id = visit["field_id"]
        assert visit["room"] == f"field-{field_id}" and visit["resume_window_s"] == 60

        camera = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "teller", "client", "--url", server.url, "--token", visit["token"], "bodycam", "--whip",
            "--width", "320", "--height", "240", "--fps", "15", "--gps-interval", "0.5",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        status, listed = await get(http, f"{server.url}/v1/field/sessions", reviewer)
        assert status == 200 and [s["field_id"] for s in listed["sessions"]] == [field_id]
        assert listed["sessions"][0]["officer"]["name"] == "Zhang Wei" and listed["sessions"][0]["case_number"] == "LN-2026-0042"

        status, joined = await post(http, f"{server.url}/v1/field/sessions/{field_id}/join", reviewer)
        assert status == 200
        reviewer_client = RoomClient(server.url, joined["token"])
        fixes: list[dict[str, Any]] = []
        reviewer_client.on("data", lambda m: m.get("topic") == "gps" and fixes.append(m["payload"]))
        await reviewer_client.connect()
        await wait_until(lambda: _officer(reviewer_client) is not None, timeout=30)
        subscription = await reviewer_client.subscribe(_officer(reviewer_client))
        got = await receive(subscription.track("video"), 2.0)
        assert got.frames > 5 and got.sizes == {(320, 240)}
        await wait_until(lambda: len(fixes) >= 2, timeout=20)
        assert all(set(f) >= {"lat", "lon", "ts"} for f in fixes)

        status, snap = await post(http, f"{server.url}/v1/field/sessions/{field_id}/snapshots", reviewer)
        assert status == 201, snap
        assert (snap["width"], snap["height"]) == (320, 240) and snap["gps"]["lat"] == pytest.approx(30.5728, abs=0.01)
        async with http.get(f"{server.url}{snap['url']}", params={"access_token": reviewer}) as r:
            assert r.status == 200 and r.content_type == "image/jpeg"
            assert Image.open(io.BytesIO(await r.read())).size == (320, 240)
        # A customer's token, or the officer's, cannot decide; a reject needs notes.
        assert (await post(http, f"{server.url}/v1/field/sessions/{field_id}/decision", visit["token"],
                           {"decision": "approve"}))[0] == 403
        status, body = await post(http, f"{server.url}/v1/field/sessions/{field_id}/decision", reviewer, {"decision": "reject"})
        assert status == 400 and body["error"]["details"]["field"] == "notes"
        status, decision = await post(http, f"{server.url}/v1/field/sessions/{field_id}/decision", reviewer,
                                      {"decision": "approve", "notes": "herd of 12 cattle seen, matches the application"})
        assert status == 200 and decision["decision"] == "approve"

        status, detail = await get(http, f"{server.url}/v1/field/sessions/{field_id}", reviewer)
        assert detail["decision"]["decision"] == "approve" and len(detail["snapshots"]) == 1
        assert detail["fixes"] >= 2 and len(detail["track"]) == detail["fixes"] and detail["last_fix"] == detail["track"][-1]
        assert detail["officer_connected"] is True

        status, ended = await post(http, f"{server.url}/v1/field/sessions/{field_id}/end", reviewer)
        assert status == 200 and ended["state"] == "ended"
        await reviewer_client.leave()
        camera.terminate()
        await camera.wait()

        detail, events = await recording(http, server, visit["session_id"])
        entry = detail["session"]
        assert entry["business"] == "field_visit" and entry["agent_name"] == "Zhang Wei"
        assert entry["customer_name"] == "Li Hua" and entry["outcome"] == "approved"
        evidence = [f for f in detail["files"] if f["kind"] == "evidence"]
        assert [f["name"] for f in evidence] == [f"evidence/snapshot-{snap['snapshot_id']}.jpg"]
        types = [e["type"] for e in events]
        shot = next(e for e in events if e["type"] == "snapshot")
        assert shot["gps"] == snap["gps"] and shot["file"] == evidence[0]["name"] and shot["by"]
        assert "field_decision" in types and types.count("gps") >= 2 and "reviewer_joined" in types, str(types)
    finally:
        if camera is not None and camera.returncode is None:
            camera.kill()
            await camera.wait()
        if reviewer_client is not None:
            await reviewer_client.close()
        await runner.cleanup()


def _officer(client: RoomClient) -> str | None:
    return next((pid for pid, p in client.participants.items()
                 if p.get("role") == "officer" and any(t.get("kind") == "video" for t in p.get("tracks", []))), None)


def _bodycam_args(url: str, token: str, local_dir: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    client_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["client", "--url", url, "--token", token, "bodycam", "--width", "320", "--height", "240",
                              "--fps", "15", "--gps-interval", "1", "--local-dir", str(local_dir), "--segment-s", "4",
                              "--relay-only"])


@pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn is not installed (apt-get install coturn)")
async def test_a_twenty_second_link_drop_is_survived_and_filled_from_the_device(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with impaired_turn(tmp_path, seed=11) as turn:
        server, runner = await start_in_process(tmp_path, recording=RECORDING, rooms={"empty_timeout_s": 0.5},
                                                ice={"servers": turn.ice_servers()}, sfu={"bind_addresses": ["127.0.0.1"]})
        port = int(server.url.rsplit(":", 1)[1])
        proxy = TcpProxy(("127.0.0.1", port)).start()
        reviewer_client: RoomClient | None = None
        cam: BodyCam | None = None
        running: asyncio.Task[None] | None = None
        counting: asyncio.Task[None] | None = None
        try:
            officer = await dev_token(http, server, "officer", "Zhang Wei")
            reviewer = await dev_token(http, server, "reviewer", "Chen Jing")
            visit = await start_visit(http, server, officer, "LN-2026-0077")
            field_id = visit["field_id"]
            args = _bodycam_args(f"http://{proxy.endpoint}", visit["token"], tmp_path / "device")
            cam = BodyCam(args, visit["token"], DeviceFeed(media_tracks(None, False, 320, 240, 15),
                                                           LocalRecorder(tmp_path / "device", segment_s=4)))
            running = asyncio.create_task(cam.run())
            _, joined = await post(http, f"{server.url}/v1/field/sessions/{field_id}/join", reviewer)
            reviewer_client = RoomClient(server.url, joined["token"])
            await reviewer_client.connect()
            await wait_until(lambda: _officer(reviewer_client) is not None, timeout=30)
            officer_pid = _officer(reviewer_client)
            subscription = await reviewer_client.subscribe(officer_pid)
            assert (await receive(subscription.track("video"), 2.0)).frames > 5
            frames = [0]

            async def count(track: Any) -> None:
                while True:
                    await track.recv()
                    frames[0] += 1

            counting = asyncio.create_task(count(subscription.track("video")))
            left: list[dict[str, Any]] = []
            reviewer_client.on("participant_left", left.append)

            # The rural link goes: signalling and media, both ways, for 20 s.
            proxy.cut()
            turn.relay.set(up=Impairment(loss=1.0), down=Impairment(loss=1.0))
            await wait_until(lambda: cam.gaps, timeout=10)
            await asyncio.sleep(20)
            _, during = await get(http, f"{server.url}/v1/field/sessions/{field_id}", reviewer)
            assert during["officer_connected"] is False and during["state"] == "live"
            turn.relay.set(up=Impairment(), down=Impairment())
            proxy.restore()

            await wait_until(lambda: cam.gaps[-1].end is not None, timeout=40)
            assert cam.client is not None and cam.client.participant_id == officer_pid and cam.rejoins == 0
            assert left == []  # the officer never left the session
            await wait_until(lambda: cam.uploads >= 2 and cam.gaps[-1].uploaded, timeout=60)
            seen = frames[0]
            await wait_until(lambda: frames[0] > seen + 5, timeout=40)  # live video again, on the same subscription
            counting.cancel()
            _, after = await get(http, f"{server.url}/v1/field/sessions/{field_id}", reviewer)
            assert after["officer_connected"] is True

            cam.stop()
            await asyncio.wait_for(running, 60)
            await post(http, f"{server.url}/v1/field/sessions/{field_id}/end", reviewer)
            await reviewer_client.leave()

            detail, events = await recording(http, server, visit["session_id"])
            gap = cam.gaps[0]
            assert gap.end is not None
            video = detail["coverage"][f"{officer_pid}/video"]
            assert video["gaps"] == [], video  # no hole left in the officer's video
            filled = sum(b - a for a, b in video["filled"])
            assert filled >= 15, video  # the drop, filled from the device
            assert any(a <= gap.start + 3 and b >= gap.end - 3 for a, b in video["filled"]), (video, gap.start, gap.end)
            types = [e["type"] for e in events]
            assert "participant_disconnected" in types and "participant_resumed" in types
            assert "gap_filled" in types and "device_segment" in types and "link_gap" in types
            assert "participant_left" not in [e["type"] for e in events if e.get("participant_id") == officer_pid
                                               and e["ts"] < gap.end + 5]
            offline = [e for e in events if e["type"] == "gps" and e.get("source") == "device"]
            assert len(offline) >= 10 and all(gap.start - 1 <= e["payload"]["ts"] <= gap.end + 1 for e in offline)
        finally:
            if counting is not None:
                counting.cancel()
            if cam is not None and running is not None and not running.done():
                cam.stop()
                await asyncio.wait([running], timeout=30)
            if reviewer_client is not None:
                await reviewer_client.close()
            proxy.close()
            await runner.cleanup()


async def test_bad_field_requests_change_nothing_and_a_visit_beside_them_goes_on(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server, runner = await start_in_process(tmp_path)
    try:
        officer = await dev_token(http, server, "officer", "Zhang Wei")
        reviewer = await dev_token(http, server, "reviewer", "Chen Jing")
        visit = await start_visit(http, server, officer)
        field_id = visit["field_id"]
        cam = RoomClient(server.url, visit["token"])
        await cam.connect()
        await cam.send_data({"lat": 30.1, "lon": 114.2, "ts": time.time()}, topic="gps")
        url = f"{server.url}/v1/field/sessions"
        bad: list[tuple[str, str, str, Any, int, str]] = [
            ("POST", url, officer, {"case_number": "X"}, 400, "invalid_message"),
            ("POST", url, officer, {"customer_name": "Li", "case_number": ""}, 400, "invalid_message"),
            ("POST", url, officer, {"customer_name": "Li", "case_number": "x" * 65}, 400, "invalid_message"),
            ("POST", url, reviewer, {"customer_name": "Li", "case_number": "A-1"}, 403, "role_forbidden"),
            ("POST", url, "not-a-token", {"customer_name": "Li", "case_number": "A-1"}, 401, "token_invalid"),
            ("GET", f"{url}/FS_00000000", reviewer, None, 404, "field_session_not_found"),
            ("GET", f"{url}/..%2Fx", reviewer, None, 404, "field_session_not_found"),
            ("POST", f"{url}/{field_id}/join", officer, {}, 403, "role_forbidden"),
            ("POST", f"{url}/{field_id}/decision", reviewer, {"decision": "maybe"}, 400, "invalid_message"),
            ("POST", f"{url}/{field_id}/decision", reviewer, {"decision": "approve", "notes": "x" * 2001}, 400, "invalid_message"),
            ("POST", f"{url}/{field_id}/gps", visit["token"], {"lat": 300, "lon": 1, "ts": time.time()}, 400, "invalid_gps"),
            ("POST", f"{url}/{field_id}/gps", officer, {"lat": 30, "lon": 114, "ts": time.time()}, 403, "room_forbidden"),
            ("POST", f"{url}/{field_id}/snapshots", reviewer, {}, 409, "no_video"),
            ("POST", f"{url}/{field_id}/snapshots", reviewer, {"participant_id": 5}, 400, "invalid_message"),
            ("POST", "/v1/dev/field", "", {"role": "supervisor"}, 400, "invalid_message"),
        ]
        deadline = time.monotonic() + 10
        while (before := (await get(http, f"{url}/{field_id}", reviewer))[1])["fixes"] < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        for method, target, token, body, status, code in bad:
            target = target if target.startswith("http") else server.url + target
            async with http.request(method, target, json=body, headers=auth(token) if token else {}) as r:
                answer = await r.json(content_type=None)
                assert (r.status, answer["error"]["code"]) == (status, code), (method, target, answer)
                assert answer["error"]["message"]
        after = (await get(http, f"{url}/{field_id}", reviewer))[1]
        assert {k: v for k, v in after.items() if k != "duration_s"} == {k: v for k, v in before.items() if k != "duration_s"}
        assert len((await get(http, url, reviewer))[1]["sessions"]) == 1
        # The visit beside the bad requests still relays GPS.
        await cam.send_data({"lat": 30.2, "lon": 114.3, "ts": time.time()}, topic="gps")
        deadline = time.monotonic() + 10
        while (await get(http, f"{url}/{field_id}", reviewer))[1]["fixes"] < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        await cam.leave()
    finally:
        await runner.cleanup()

