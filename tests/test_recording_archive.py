"""The archive around recordings: S3 with an outage, retention and legal hold, spot
checks, export, field-device segments, bad input beside a live recorded call."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from teller.client import RoomClient
from teller.recording.archive import ARCHIVE
from teller.recording.audit import verify_audit
from teller.recording.index import publish_op
from teller.recording.manifest import session_prefix, verify_recording
from teller.recording.service import FINALIZER, OBJECTS

from .conftest import SECRET, Server, start_in_process
from .s3_server import MotoServer, moto_binary
from .tcp_proxy import TcpProxy
from .test_recording import (
    RECORDING,
    compliance_token,
    decode_duration,
    get_json,
    ready_entry,
    run_call,
)


@pytest.fixture(scope="module")
def s3_proxy() -> Iterator[TcpProxy]:
    if moto_binary() is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    with MotoServer() as moto, TcpProxy(("127.0.0.1", moto.port)) as proxy:
        yield proxy


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def recorded(tmp_path: Path, clients: list[RoomClient], http: aiohttp.ClientSession, seconds: float = 3.0,
                   **sections: Any) -> tuple[Server, Any, dict[str, Any]]:
    server, runner = await start_in_process(
        tmp_path, recording={**RECORDING, "composite": False, **sections.pop("recording", {})},
        rooms={"empty_timeout_s": 0.5}, **sections,
    )
    await run_call(server, f"arch-{uuid.uuid4().hex[:6]}", seconds, clients)
    entry = await ready_entry(http, server, compliance_token(server))
    return server, runner, entry


async def test_recording_goes_to_s3_encrypted_and_survives_a_store_outage(
    tmp_path: Path, clients: list[RoomClient], http: aiohttp.ClientSession, s3_proxy: TcpProxy
) -> None:
    objects = {
        "backend": "s3", "endpoint": s3_proxy.endpoint, "access_key": MotoServer.access_key,
        "secret_key": MotoServer.secret_key, "bucket": f"rec-{uuid.uuid4().hex[:10]}", "region": MotoServer.region,
        "sse": "s3", "part_size": 5 * 1024 * 1024, "max_attempts": 2, "retry_base_s": 0.05, "retry_max_s": 0.1,
        "timeout_s": 3.0,
    }
    server, runner = await start_in_process(
        tmp_path, recording={**RECORDING, "composite": False, "finalize_retry_s": 0.5},
        rooms={"empty_timeout_s": 0.5}, objects=objects,
    )
    try:
        s3_proxy.cut()  # the store is down when the session ends
        await run_call(server, "s3-room", 3.0, clients)
        finalizer = server.app[FINALIZER]  # type: ignore[index]
        deadline = time.monotonic() + 30
        while finalizer.failures == 0:
            assert time.monotonic() < deadline, "finalisation never tried the store"
            await asyncio.sleep(0.2)
        spool = finalizer.spool
        assert any(p.suffix == ".webm" for p in spool.rglob("*")), "nothing is deleted before the store confirms"
        s3_proxy.restore()
        token = compliance_token(server)
        entry = await ready_entry(http, server, token, timeout=60)
        sid = entry["session_id"]
        store = server.app[OBJECTS]  # type: ignore[index]
        listed = [o async for o in store.list(session_prefix(sid))]
        media = [o for o in listed if o.key.endswith(".webm")]
        assert len(media) == 4
        for obj in media:
            info = await store.stat(obj.key)
            assert info is not None and info.encrypted and info.sha256
        report = await verify_recording(store, sid, SECRET)
        assert report.ok, report
        assert not any(p.is_file() for p in spool.rglob("*"))
    finally:
        s3_proxy.restore()
        await runner.cleanup()


async def test_retention_deletes_exactly_the_expired_sessions_not_on_hold(
    tmp_path: Path, clients: list[RoomClient], http: aiohttp.ClientSession
) -> None:
    server, runner, entry = await recorded(tmp_path, clients, http)
    try:
        archive = server.app[ARCHIVE]  # type: ignore[index]
        store = server.app[OBJECTS]  # type: ignore[index]
        now = time.time()
        # Three archived sessions besides the real one: expired, expired but held, not yet due.
        for sid, until in (("RM_expired", now - 10), ("RM_held", now - 10), ("RM_current", now + 86400)):
            await store.put_bytes(session_prefix(sid) + "tracks/x.webm", b"media")
            await publish_op(archive.state, {"op": "upsert", "entry": {
                "session_id": sid, "room": "r", "started_at": now - 100, "status": "ready", "retention_until": until}})
        token = compliance_token(server)
        async with http.put(f"{server.url}/v1/recordings/RM_held/legal-hold", json={"hold": True, "reason": "court order 17"},
                            headers=auth(token)) as response:
            assert response.status == 200 and (await response.json())["legal_hold"] is True
        deleted = await archive.sweep(now)
        assert deleted == ["RM_expired"]
        assert [o.key async for o in store.list(session_prefix("RM_expired"))] == []
        assert [o.key async for o in store.list(session_prefix("RM_held"))] != []
        assert [o.key async for o in store.list(session_prefix("RM_current"))] != []
        assert [o.key async for o in store.list(session_prefix(entry["session_id"]))] != []
        # A held recording cannot be deleted by hand either, until the hold is lifted.
        async with http.delete(f"{server.url}/v1/recordings/RM_held", headers=auth(token)) as response:
            assert response.status == 409 and (await response.json())["error"]["code"] == "legal_hold"
        async with http.put(f"{server.url}/v1/recordings/RM_held/legal-hold", json={"hold": False, "reason": "released"},
                            headers=auth(token)) as response:
            assert response.status == 200
        assert await archive.sweep(now) == ["RM_held"]
        status, body = await get_json(http, f"{server.url}/v1/audit", token, limit="500")
        actions = [(e["action"], e["target"], e["outcome"]) for e in body["entries"]]
        assert ("delete", "RM_expired", "ok") in actions and ("delete", "RM_held", "denied") in actions
        assert ("legal_hold", "RM_held", "ok") in actions
        assert verify_audit(archive.audit_dir, SECRET).ok
    finally:
        await runner.cleanup()


async def test_spot_check_evaluation_export_and_device_segment(
    tmp_path: Path, clients: list[RoomClient], http: aiohttp.ClientSession
) -> None:
    server, runner, entry = await recorded(tmp_path, clients, http, recording={"spot_check_percent": 100})
    try:
        token = compliance_token(server)
        sid = entry["session_id"]
        archive = server.app[ARCHIVE]  # type: ignore[index]
        # The spot check draws sessions per agent; this one has an agent only when a call
        # is linked, so give the index one as the contact centre would.
        await publish_op(archive.state, {"op": "upsert", "entry": {"session_id": sid, "agent_id": "AG_1", "agent_name": "Wang"}})
        week = time.strftime("%G-W%V", time.gmtime(entry["started_at"]))
        status, body = await get_json(http, f"{server.url}/v1/recordings/spot-checks", token, week=week)
        assert status == 200 and [i["session_id"] for i in body["items"]] == [sid]
        assert body["items"][0]["evaluated"] is False
        scores = {"greeting": 5, "identity_check": 4, "risk_disclosure": 5, "accuracy": 3, "courtesy": 5}
        async with http.post(f"{server.url}/v1/recordings/{sid}/evaluations", json={"scores": scores, "comments": "good"},
                             headers=auth(token)) as response:
            assert response.status == 201 and (await response.json())["total"] == 22
        status, body = await get_json(http, f"{server.url}/v1/recordings/spot-checks", token, week=week)
        assert body["items"][0]["evaluated"] is True
        async with http.post(f"{server.url}/v1/recordings/{sid}/evaluations", json={"scores": {"greeting": 9}},
                             headers=auth(token)) as response:
            assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_message"

        # Export: one zip with every file of the session.
        async with http.get(f"{server.url}/v1/recordings/{sid}/export", params={"access_token": token}) as response:
            assert response.status == 200
            bundle = zipfile.ZipFile(io.BytesIO(await response.read()))
        names = bundle.namelist()
        assert f"{sid}/manifest.json" in names and sum(n.endswith(".webm") for n in names) == 4
        assert bundle.testzip() is None

        # A body-cam segment recorded offline arrives later and joins the session.
        segment = tmp_path / "device.webm"
        start_wall = entry["ended_at"] + 5
        write_test_webm(segment, seconds=2.0)
        device = server.issuer.issue(room=entry["room"], role="officer", subject="bodycam-7")
        form = aiohttp.FormData()
        form.add_field("meta", json.dumps({"kind": "video", "codec": "vp8", "start_wall": start_wall,
                                           "participant_id": "bodycam-7", "label": "Body camera",
                                           "events": [{"type": "snapshot", "ts": start_wall + 1, "note": "farm gate"}]}),
                       content_type="application/json")
        form.add_field("file", segment.read_bytes(), filename="seg.webm", content_type="video/webm")
        async with http.post(f"{server.url}/v1/recordings/{sid}/segments", data=form, headers=auth(device)) as response:
            assert response.status == 201, await response.text()
        finalizer = server.app[FINALIZER]  # type: ignore[index]
        deadline = time.monotonic() + 30
        while True:
            status, detail = await get_json(http, f"{server.url}/v1/recordings/{sid}", token)
            tracks = [f for f in detail["files"] if f["kind"] == "track"]
            if len(tracks) == 5:
                break
            assert time.monotonic() < deadline, detail
            await asyncio.sleep(0.3)
        await finalizer.idle()
        status, timeline = await get_json(http, f"{server.url}/v1/recordings/{sid}/timeline", token)
        types = [e["type"] for e in timeline["events"]]
        assert "device_segment" in types and "snapshot" in types
        assert detail["manifest_ok"] is True
        assert (await verify_recording(server.app[OBJECTS], sid, SECRET)).ok  # type: ignore[index]
        # A customer's token may not add segments.
        async with http.post(f"{server.url}/v1/recordings/{sid}/segments", data=b"x",
                             headers=auth(server.token(entry["room"], "customer"))) as response:
            assert response.status == 403
    finally:
        await runner.cleanup()


async def test_bad_archive_requests_change_nothing_and_a_recorded_call_beside_them_is_unharmed(
    tmp_path: Path, clients: list[RoomClient], http: aiohttp.ClientSession
) -> None:
    server, runner = await start_in_process(tmp_path, recording={**RECORDING, "composite": False},
                                            rooms={"empty_timeout_s": 0.5})
    try:
        token = compliance_token(server)
        call = asyncio.create_task(run_call(server, "beside", 5.0, clients))
        await asyncio.sleep(1.5)
        bad: list[tuple[str, str, dict[str, Any], int, str]] = [
            ("GET", "/v1/recordings", {"params": {"from": "yesterday"}}, 400, "invalid_query"),
            ("GET", "/v1/recordings", {"params": {"min_duration": "-5"}}, 400, "invalid_query"),
            ("GET", "/v1/recordings", {"params": {"colour": "red"}}, 400, "invalid_query"),
            ("GET", "/v1/recordings", {"params": {"cursor": "@@@"}}, 400, "invalid_cursor"),
            ("GET", "/v1/recordings", {"params": {"limit": "100000"}}, 400, "invalid_query"),
            ("GET", "/v1/recordings/..%2F..%2Fetc", {}, 400, "invalid_session_id"),
            ("GET", "/v1/recordings/RM_nope", {}, 404, "recording_not_found"),
            ("GET", "/v1/recordings/spot-checks", {"params": {"week": "week 47"}}, 400, "invalid_query"),
            ("PUT", "/v1/recordings/RM_nope/legal-hold", {"json": {"hold": "yes"}}, 400, "invalid_message"),
            ("PUT", "/v1/recordings/RM_nope/legal-hold", {"json": {"hold": True}}, 400, "invalid_message"),
            ("PUT", "/v1/recordings/RM_nope/legal-hold", {"data": b"{", "headers": {"Content-Type": "application/json"}}, 400, "invalid_json"),
            ("POST", "/v1/recordings/login", {"json": {"role": "customer"}}, 400, "invalid_message"),
        ]
        for method, path, kwargs, status, code in bad:
            headers = {**auth(token), **kwargs.pop("headers", {})}
            async with http.request(method, f"{server.url}{path}", headers=headers, **kwargs) as response:
                body = await response.json()
                assert (response.status, body["error"]["code"]) == (status, code), (path, body)
        await call
        entry = await ready_entry(http, server, token)
        assert entry["room"] == "beside" and entry["tracks"] == 4 and entry["legal_hold"] is False
        status, detail = await get_json(http, f"{server.url}/v1/recordings/{entry['session_id']}", token)
        track = next(f for f in detail["files"] if f["kind"] == "track" and f["track_kind"] == "video")
        async with http.get(f"{server.url}/v1/recordings/{entry['session_id']}/files/{track['name']}",
                            params={"access_token": token}) as response:
            data = await response.read()
        path = tmp_path / "beside.webm"
        path.write_bytes(data)
        assert decode_duration(path)[1] >= 4.0
        async with http.get(f"{server.url}/v1/recordings/{entry['session_id']}/files/composite.mp4",
                            params={"access_token": token}, headers={"Range": "bytes=99999999-"}) as response:
            assert response.status == 404  # no composite in this configuration
    finally:
        await runner.cleanup()


def write_test_webm(path: Path, seconds: float) -> None:
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(int(seconds * 10)):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), (i * 20) % 255, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


async def test_a_contact_centre_call_is_indexed_with_its_business_people_evidence_and_outcome(
    tmp_path: Path, clients: list[RoomClient], http: aiohttp.ClientSession
) -> None:
    """The recording knows the call: business, agent, customer; the confirmation and its
    signature are in the timeline; the wrap-up code, given after the call, becomes the outcome."""
    from teller.client import TestPatternTrack, ToneTrack

    from .test_contact_rest import agent_token, customer_token, register
    from .test_rest import call

    server, runner = await start_in_process(tmp_path, recording={**RECORDING, "composite": False},
                                            rooms={"empty_timeout_s": 0.5})
    try:
        cust = customer_token(server, "farmer-zhao")
        status, queued = await call(http, server, "POST", "/v1/calls", token=cust, json={"business": "transfer"})
        assert status == 201
        call_id = queued["call_id"]
        customer = RoomClient(server.url, cust)
        clients.append(customer)
        await customer.connect()
        await customer.publish([TestPatternTrack(160, 120, 15), ToneTrack(440.0)])
        await register(http, server, "ag-chen", {"payments": 3})
        ag = agent_token(server, "ag-chen")
        await call(http, server, "POST", "/v1/agents/me/state", token=ag, json={"state": "available"})
        status, accepted = await call(http, server, "POST", f"/v1/calls/{call_id}/accept", token=ag)
        assert status == 200
        agent = RoomClient(server.url, accepted["token"])
        clients.append(agent)
        await agent.connect()
        await agent.publish([TestPatternTrack(160, 120, 15), ToneTrack(660.0)])
        # A transfer needs identity first (tests/test_identity_call.py): overridden here.
        status, _ = await call(http, server, "POST", f"/v1/calls/{call_id}/identity/override", token=ag,
                               json={"reason": "Identity checked by the branch"})
        assert status == 200
        status, request = await call(http, server, "POST", f"/v1/calls/{call_id}/confirmations", token=ag,
                                     json={"what": "Transfer", "amount": "500.00", "account": "6222020012345678"})
        assert status in (200, 201), request
        signature = "data:image/png;base64,iVBORw0KGgo="
        status, answered = await call(http, server, "POST", f"/v1/calls/{call_id}/confirmations/{request['request_id']}",
                                      token=cust, json={"accepted": True, "signature": signature})
        assert status in (200, 201), answered
        await asyncio.sleep(2.0)
        status, _ = await call(http, server, "DELETE", f"/v1/calls/{call_id}", token=ag)
        assert status == 200
        await customer.leave()
        await agent.leave()
        token = compliance_token(server)
        entry = await ready_entry(http, server, token)
        assert (entry["business"], entry["agent_id"], entry["customer_id"], entry["call_id"]) == (
            "transfer", "ag-chen", "farmer-zhao", call_id)
        _, timeline = await get_json(http, f"{server.url}/v1/recordings/{entry['session_id']}/timeline", token)
        answered_events = [e for e in timeline["events"] if e["type"] == "call_confirmation_answered"]
        assert answered_events and answered_events[0]["signature"] == signature
        status, _ = await call(http, server, "POST", "/v1/agents/me/wrap-up", token=ag, json={"code": "transfer_done"})
        assert status == 200
        status, found = await get_json(http, f"{server.url}/v1/recordings", token, outcome="transfer_done", business="transfer")
        assert [i["session_id"] for i in found["items"]] == [entry["session_id"]]
    finally:
        await runner.cleanup()
