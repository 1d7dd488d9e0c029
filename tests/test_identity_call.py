"""Identity checks inside a call, through the SFU: a customer (a real face photo that
acts, teller/identity/synthetic.py) passes a liveness challenge it is prompted for;
evidence lands in the recording; the confirmation gate holds until identity passed
or an agent overrode it with a reason, which is audited; bad input changes nothing."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytest.importorskip("mediapipe")
skimage_data = pytest.importorskip("skimage.data")

from teller.client import RoomClient, TestPatternTrack
from teller.identity.synthetic import ActingFace, ActingTrack
from teller.signaling.keys import STORE

from .conftest import SECRET, Server, start_in_process
from .test_contact_rest import agent_token, customer_token, register
from .test_rest import call, error_code

pytestmark = pytest.mark.media

CONFIRM = {"what": "Card activation", "amount": "0.00 CNY", "account": "6222020200112233"}


@pytest.fixture(scope="module")
def face() -> ActingFace:
    return ActingFace(skimage_data.astronaut())


async def start(tmp_path: Path, **identity: Any) -> tuple[Server, Any]:
    settings = {"position_timeout_s": 8.0, "challenge_timeout_s": 20.0, "watch_cue_s": 1.0, **identity}
    return await start_in_process(tmp_path, stages={"enabled": ["liveness"]}, identity=settings,
                                  recording={"enabled": True})


async def answered_call(http: aiohttp.ClientSession, server: Server, customer: str, agent: str,
                        business: str = "card_activation", skill: str = "cards") -> tuple[str, str, dict[str, Any]]:
    cust = customer_token(server, customer)
    await register(http, server, agent, {skill: 1})
    ag = agent_token(server, agent)
    await call(http, server, "POST", "/v1/agents/me/state", token=ag, json={"state": "available"})
    status, queued = await call(http, server, "POST", "/v1/calls", token=cust, json={"business": business, "language": "en"})
    assert status == 201, queued
    status, accepted = await call(http, server, "POST", f"/v1/calls/{queued['call_id']}/accept", token=ag)
    assert status == 200, accepted
    return cust, ag, accepted


async def identity(http: aiohttp.ClientSession, server: Server, call_id: str, token: str) -> dict[str, Any]:
    status, body = await call(http, server, "GET", f"/v1/calls/{call_id}/identity", token=token)
    assert status == 200, body
    return body


async def until(http: aiohttp.ClientSession, server: Server, call_id: str, token: str, check: Any, timeout: float = 45.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        body = await identity(http, server, call_id, token)
        if check(body):
            return body
        assert loop.time() < deadline, f"identity never got there: {body}"
        await asyncio.sleep(0.2)


async def wait_until(check: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def events(server: Server, call_id: str) -> list[dict[str, Any]]:
    return await server.app[STORE].read_events(call_id)


async def test_a_customer_passes_the_prompted_challenge_and_the_face_is_evidence(tmp_path: Path, face: ActingFace) -> None:
    from PIL import Image

    from teller.recording.service import RECORDER

    server, runner = await start(tmp_path)
    clients: list[RoomClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            cust, ag, accepted = await answered_call(http, server, "kyc-li", "ag-kyc")
            call_id = accepted["call_id"]
            customer = RoomClient(server.url, cust)
            clients.append(customer)
            await customer.connect()
            track = ActingTrack(face, fps=15)
            prompts: list[dict[str, Any]] = []
            results: list[dict[str, Any]] = []

            def on_data(message: dict[str, Any]) -> None:
                payload = message.get("payload")
                if message.get("topic") == "identity.prompt":
                    prompts.append(payload)
                    if payload["step"] != "position":
                        track.perform(payload["step"])
                elif message.get("topic") == "identity.result":
                    results.append(payload)

            customer.on("data", on_data)
            await customer.publish([track], data_channel=False)
            await until(http, server, call_id, ag, lambda s: s["face"]["state"] == "one_face")

            before = await identity(http, server, call_id, ag)
            assert (before["required"], before["satisfied"], before["state"], before["available"]) == (True, False, "not_started", True)
            assert error_code(await call(http, server, "POST", f"/v1/calls/{call_id}/confirmations", token=ag, json=CONFIRM), 409) == "identity_required"

            status, started = await call(http, server, "POST", f"/v1/calls/{call_id}/identity/liveness", token=ag)
            assert status == 202 and started["state"] == "checking", started
            steps = started["liveness"]["steps"]
            assert 2 <= len(steps) <= 3
            done = await until(http, server, call_id, ag, lambda s: s["liveness"]["state"] in ("passed", "failed"))
            assert done["liveness"]["state"] == "passed", done
            assert (done["state"], done["satisfied"]) == ("passed", True)
            # The customer was prompted for exactly the attempt's steps, one at a time, in order.
            assert [p["step"] for p in prompts] == ["position", *steps]
            assert all(p["attempt_id"] == started["liveness"]["attempt_id"] for p in prompts)
            assert results and results[-1]["passed"] is True

            # The best face frame is evidence: in the object store, and beside the recording.
            face_entry = done["evidence"]["face"]
            assert face_entry is not None and (face_entry["width"], face_entry["height"]) == (640, 480)
            async with http.get(server.url + face_entry["url"], headers={"Authorization": f"Bearer {ag}"}) as response:
                assert response.status == 200 and response.content_type == "image/jpeg"
                assert Image.open(io.BytesIO(await response.read())).size == (640, 480)
            part = next(iter(server.app[RECORDER].parts.values()))
            assert (part.directory / "evidence" / f"identity-face-{face_entry['evidence_id']}.jpg").exists()

            # The agent captures the ID card frame; with no comparison service configured,
            # the comparison says a person must check.
            status, id_entry = await call(http, server, "POST", f"/v1/calls/{call_id}/identity/capture", token=ag,
                                          json={"kind": "id_document"})
            assert status == 201 and id_entry["kind"] == "id_document" and id_entry["by"] == "ag-kyc", id_entry
            status, comparison = await call(http, server, "POST", f"/v1/calls/{call_id}/identity/compare", token=ag)
            assert status == 200 and (comparison["backend"], comparison["outcome"]) == ("none", "manual_check_required")

            status, confirmation = await call(http, server, "POST", f"/v1/calls/{call_id}/confirmations", token=ag, json=CONFIRM)
            assert status == 201, confirmation
            kinds = [e["type"] for e in await events(server, call_id)]
            for kind in ("liveness_passed", "evidence_captured", "face_compared", "call_confirmation_requested"):
                assert kind in kinds, kinds
            if importlib.util.find_spec("piper") is not None:  # the tts extra: the prompts were spoken too
                async def spoken() -> bool:
                    return any(e["type"] == "tts_played" and e.get("kind") == "liveness_prompt"
                               for e in await events(server, call_id))

                await wait_until(spoken, timeout=30)
            timeline = [json.loads(line) for path in part.directory.glob("timeline-*.jsonl")
                        for line in path.read_text().splitlines()]
            captured = [e for e in timeline if e["type"] == "evidence_captured"]
            assert {e["kind"] for e in captured} == {"face", "id_document"}, captured
    finally:
        for client in clients:
            await client.close()
        await runner.cleanup()


async def test_the_gate_the_watch_and_bad_input_with_a_session_beside(tmp_path: Path, face: ActingFace) -> None:
    server, runner = await start(tmp_path, position_timeout_s=2.0)
    clients: list[RoomClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            # Beside: a customer who shows a face, in a call of its own.
            cust_b, ag_b, accepted_b = await answered_call(http, server, "beside", "ag-beside")
            beside = RoomClient(server.url, cust_b)
            clients.append(beside)
            await beside.connect()
            await beside.publish([ActingTrack(face, fps=10)], data_channel=False)

            # The call under test: the customer's camera shows no face.
            cust, ag, accepted = await answered_call(http, server, "noface", "ag-noface")
            call_id, path = accepted["call_id"], f"/v1/calls/{accepted['call_id']}/identity"
            customer = RoomClient(server.url, cust)
            clients.append(customer)
            await customer.connect()
            await customer.publish([TestPatternTrack(320, 240, 15)], data_channel=False)

            # The coaching watch: no face, then a risk cue after watch_cue_s.
            watched = await until(http, server, call_id, ag, lambda s: s["face"]["state"] == "no_face" and s["cues"])
            assert watched["cues"][0]["kind"] == "face_absent" and watched["cues"][0]["duration_s"] >= 1.0
            await wait_until(lambda: _has(server, call_id, "risk_cue"), timeout=10)

            # Bad input: refused with a code, and nothing changes.
            other = agent_token(server, "ag-beside")
            assert error_code(await call(http, server, "GET", path, token=other), 403) == "call_forbidden"
            assert error_code(await call(http, server, "POST", f"{path}/liveness", token=other), 403) == "call_forbidden"
            assert error_code(await call(http, server, "POST", f"{path}/liveness", token=cust), 403) == "call_forbidden"
            assert error_code(await call(http, server, "POST", f"{path}/override", token=ag, json={"reason": "  "}), 400) == "invalid_message"
            assert error_code(await call(http, server, "POST", f"{path}/override", token=ag, json={"reason": "x" * 501}), 400) == "invalid_message"
            assert error_code(await call(http, server, "POST", f"{path}/override", token=ag, json=["reason"]), 400) == "invalid_message"
            assert error_code(await call(http, server, "POST", f"{path}/capture", token=ag, json={"kind": "selfie"}), 400) == "invalid_message"
            assert error_code(await call(http, server, "POST", f"{path}/compare", token=ag), 409) == "evidence_missing"
            assert error_code(await call(http, server, "GET", f"{path}/evidence/EV_nothing", token=ag), 404) == "evidence_not_found"
            assert error_code(await call(http, server, "GET", "/v1/calls/CL_nothing/identity", token=ag), 404) == "call_not_found"
            unchanged = await identity(http, server, call_id, ag)
            assert (unchanged["override"], unchanged["liveness"], unchanged["satisfied"]) == (None, None, False)
            assert error_code(await call(http, server, "POST", f"/v1/calls/{call_id}/confirmations", token=ag, json=CONFIRM), 409) == "identity_required"

            # A liveness check on a picture with no face fails with that reason, and tells the customer.
            prompts: list[dict[str, Any]] = []
            customer.on("data", lambda m: prompts.append(m) if str(m.get("topic", "")).startswith("identity.") else None)
            status, started = await call(http, server, "POST", f"{path}/liveness", token=ag)
            assert status == 202, started
            assert error_code(await call(http, server, "POST", f"{path}/liveness", token=ag), 409) == "liveness_running"
            failed = await until(http, server, call_id, ag, lambda s: s["liveness"]["state"] == "failed")
            assert (failed["liveness"]["reason"], failed["state"], failed["satisfied"]) == ("no_face", "failed", False)
            await wait_until(lambda: any(m["topic"] == "identity.result" for m in prompts), timeout=10)
            result = next(m["payload"] for m in prompts if m["topic"] == "identity.result")
            assert result["passed"] is False and result["reason"] == "no_face" and result["text"]["en"]

            # A manual override with a reason unblocks the confirmation and is audited.
            status, overridden = await call(http, server, "POST", f"{path}/override", token=ag,
                                            json={"reason": "Camera broken; ID checked against the branch record"})
            assert status == 200 and (overridden["state"], overridden["satisfied"]) == ("overridden", True), overridden
            status, _ = await call(http, server, "POST", f"/v1/calls/{call_id}/confirmations", token=ag, json=CONFIRM)
            assert status == 201
            from teller.recording.archive import ARCHIVE
            from teller.recording.audit import read_entries, verify_audit

            audit_dir = server.app[ARCHIVE].audit_dir
            entries = [e for e in read_entries(audit_dir) if e.action == "identity_override"]
            assert len(entries) == 1 and entries[0].target == call_id and entries[0].subject == "ag-noface"
            assert entries[0].details["reason"].startswith("Camera broken")
            assert verify_audit(audit_dir, SECRET).ok
            assert await _has(server, call_id, "identity_override")

            # The session beside saw none of it.
            beside_status = await identity(http, server, accepted_b["call_id"], ag_b)
            assert beside_status["face"]["state"] == "one_face"
            assert (beside_status["cues"], beside_status["override"], beside_status["liveness"]) == ([], None, None)
    finally:
        for client in clients:
            await client.close()
        await runner.cleanup()


async def _has(server: Server, call_id: str, kind: str) -> bool:
    return any(e["type"] == kind for e in await events(server, call_id))


async def test_a_business_without_identity_is_not_gated(tmp_path: Path) -> None:
    server, runner = await start(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            _cust, ag, accepted = await answered_call(http, server, "plain", "ag-plain", business="complaint", skill="service")
            status = await identity(http, server, accepted["call_id"], ag)
            assert (status["required"], status["state"]) == (False, "not_started")
            status_code, _ = await call(http, server, "POST", f"/v1/calls/{accepted['call_id']}/confirmations", token=ag, json=CONFIRM)
            assert status_code == 201
    finally:
        await runner.cleanup()


async def test_an_unwatched_business_decodes_only_while_a_check_needs_it(tmp_path: Path, face: ActingFace) -> None:
    """[identity] watch_businesses leaves card activation out: no decoder runs for its
    customer until the agent starts a challenge or captures, and none after."""
    from teller.signaling.keys import NODE

    server, runner = await start(tmp_path, watch_businesses=["loss_report"])
    stages = server.app[NODE].stages
    clients: list[RoomClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            cust, ag, accepted = await answered_call(http, server, "unwatched", "ag-unwatched")
            call_id = accepted["call_id"]
            customer = RoomClient(server.url, cust)
            clients.append(customer)
            await customer.connect()
            track = ActingTrack(face, fps=15)
            customer.on("data", lambda m: track.perform(m["payload"]["step"])
                        if m.get("topic") == "identity.prompt" and m["payload"]["step"] != "position" else None)
            publication = await customer.publish([track], data_channel=False)
            await publication.wait_connected()
            await wait_until(lambda: track.frames_sent > 30, timeout=20)
            assert stages.stats()["taps"] == 0
            assert (await identity(http, server, call_id, ag))["face"]["state"] == "unknown"

            status, started = await call(http, server, "POST", f"/v1/calls/{call_id}/identity/liveness", token=ag)
            assert status == 202, started
            assert stages.stats()["taps"] == 1
            done = await until(http, server, call_id, ag, lambda s: s["liveness"]["state"] in ("passed", "failed"))
            assert done["liveness"]["state"] == "passed", done
            await wait_until(lambda: stages.stats()["taps"] == 0, timeout=10)

            status, entry = await call(http, server, "POST", f"/v1/calls/{call_id}/identity/capture", token=ag,
                                       json={"kind": "id_document"})
            assert status == 201 and (entry["width"], entry["height"]) == (640, 480), entry
            await wait_until(lambda: stages.stats()["taps"] == 0, timeout=10)
    finally:
        for client in clients:
            await client.close()
        await runner.cleanup()
