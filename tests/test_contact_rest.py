"""The contact centre over REST: a customer queues, an agent takes the call, both
meet in the call's room with media, a supervisor watches; webhooks are signed and
retried; bad input changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from teller.client import RoomClient, TestPatternTrack
from teller.signaling.webhooks import verify

from .conftest import Server, start_in_process, wait_until
from .documents import minimal_pdf
from .test_rest import call, error_code

WEBHOOK_SECRET = "webhook-secret-0123456789"


def supervisor(server: Server) -> str:
    return server.issuer.issue(room="*", role="supervisor", subject="sup-1", name="Supervisor")


def agent_token(server: Server, agent_id: str, role: str = "agent") -> str:
    return server.issuer.issue(room=f"desk-{agent_id}", role=role, subject=agent_id, name=agent_id)


def customer_token(server: Server, who: str) -> str:
    return server.issuer.issue(room=f"cust-{who}", role="customer", subject=who, name=who)


async def register(http: aiohttp.ClientSession, server: Server, agent_id: str, skills: dict[str, int]) -> None:
    status, _ = await call(http, server, "PUT", f"/v1/agents/{agent_id}", token=supervisor(server),
                           json={"name": agent_id, "skills": skills, "languages": ["zh", "en"]})
    assert status == 200


async def test_catalogue_is_public_and_bilingual(http: aiohttp.ClientSession, server: Server) -> None:
    status, body = await call(http, server, "GET", "/v1/catalogue?lang=zh")
    assert status == 200
    names = {b["id"]: b["name"] for b in body["businesses"]}
    assert names["pension_certification"] == "养老金资格认证" and len(names) == 8
    status, body = await call(http, server, "GET", "/v1/catalogue")
    transfer = next(b for b in body["businesses"] if b["id"] == "transfer")
    assert transfer["name"] == {"zh": "转账汇款", "en": "Transfer"} and transfer["signature_required"] is True
    assert transfer["script"]["anti_fraud"]["en"].startswith("Police")


async def test_customer_queues_agent_answers_and_they_meet(http: aiohttp.ClientSession, server: Server, clients: list[RoomClient]) -> None:
    cust = customer_token(server, "farmer-li")
    status, queued = await call(http, server, "POST", "/v1/calls", token=cust, json={"business": "pension_certification", "elderly": True})
    assert status == 201 and queued["state"] == "queued" and queued["room"] == "cust-farmer-li"
    call_id = queued["call_id"]
    status, mine = await call(http, server, "GET", f"/v1/calls/{call_id}", token=cust)
    assert mine["queue"]["position"] == 1 and mine["queue"]["estimated_wait_s"] > 0

    await register(http, server, "ag-wang", {"pensions": 3})
    ag = agent_token(server, "ag-wang")
    status, me = await call(http, server, "POST", "/v1/agents/me/state", token=ag, json={"state": "available"})
    assert status == 200
    status, me = await call(http, server, "GET", "/v1/agents/me", token=ag)
    assert (me["state"], me["offered_call"]) == ("ringing", call_id)
    status, accepted = await call(http, server, "POST", f"/v1/calls/{call_id}/accept", token=ag)
    assert status == 200 and accepted["state"] == "connected"

    # The customer waits in its own room; the accept's token opens exactly that room.
    customer_client = RoomClient(server.url, cust)
    agent_client = RoomClient(server.url, accepted["token"])
    clients += [customer_client, agent_client]
    await customer_client.connect()
    await customer_client.publish([TestPatternTrack(160, 120, 15)], data_channel=False)
    joined = await agent_client.connect()
    assert joined["room"]["name"] == "cust-farmer-li"
    subscription = await agent_client.subscribe(customer_client.participant_id)
    frame = await asyncio.wait_for(subscription.track("video").recv(), 10)
    assert (frame.width, frame.height) == (160, 120)

    status, queues = await call(http, server, "GET", "/v1/queues", token=supervisor(server))
    assert queues["queues"]["pensions"]["answered"] == 1 and queues["queues"]["pensions"]["service_level"] == 1.0
    status, ended = await call(http, server, "DELETE", f"/v1/calls/{call_id}", token=ag)
    assert status == 200 and ended["state"] == "ended" and ended["ended_by"] == "agent:ag-wang"
    status, me = await call(http, server, "POST", "/v1/agents/me/wrap-up", token=ag, json={"code": "certified", "notes": "ok"})
    assert status == 200 and me["state"] == "available"
    events = await _timeline(server, call_id)
    assert [e["type"] for e in events] == ["call_queued", "call_offered", "call_answered", "call_ended"]


async def _timeline(server: Server, call_id: str) -> list[dict[str, Any]]:
    from teller.signaling.keys import STORE

    store = server.app[STORE]
    for _ in range(50):
        events = await store.read_events(call_id)
        if len(events) >= 4:
            return events
        await asyncio.sleep(0.05)
    return await store.read_events(call_id)


async def test_bad_input_is_refused_and_changes_nothing(http: aiohttp.ClientSession, server: Server) -> None:
    cust = customer_token(server, "c1")
    await register(http, server, "ag-1", {"cards": 1})
    await register(http, server, "ag-2", {"cards": 1})
    ag1, ag2 = agent_token(server, "ag-1"), agent_token(server, "ag-2")
    await call(http, server, "POST", "/v1/agents/me/state", token=ag1, json={"state": "available"})
    status, queued = await call(http, server, "POST", "/v1/calls", token=cust, json={"business": "card_activation"})
    call_id = queued["call_id"]
    assert error_code(await call(http, server, "POST", f"/v1/calls/{call_id}/accept", token=cust), 403) == "role_forbidden"
    assert error_code(await call(http, server, "POST", f"/v1/calls/{call_id}/accept", token=ag2), 409) == "call_not_offered"
    assert error_code(await call(http, server, "GET", f"/v1/calls/{call_id}", token=ag2), 403) == "call_forbidden"
    assert error_code(await call(http, server, "GET", f"/v1/calls/{call_id}", token=customer_token(server, "c2")), 403) == "call_forbidden"
    assert (await call(http, server, "POST", f"/v1/calls/{call_id}/accept", token=ag1))[0] == 200
    assert error_code(await call(http, server, "POST", f"/v1/calls/{call_id}/accept", token=ag1), 409) == "call_not_offered"
    for method, path, token, body, status, code in [
        ("POST", "/v1/calls", cust, {"business": "no_such"}, 404, "business_not_found"),
        ("POST", "/v1/calls", cust, {"business": 7}, 400, "invalid_message"),
        ("POST", "/v1/calls", cust, {"business": "transfer", "elderly": "yes"}, 400, "invalid_message"),
        ("POST", "/v1/calls", ag1, {"business": "transfer"}, 403, "role_forbidden"),
        ("POST", "/v1/agents/me/state", ag2, {"state": "sleeping"}, 400, "invalid_state"),
        ("POST", "/v1/agents/me/state", ag1, {"state": "available"}, 409, "agent_busy"),
        ("POST", "/v1/agents/me/wrap-up", ag1, {"code": "x"}, 409, "not_in_wrap_up"),
        ("POST", f"/v1/calls/{call_id}/transfer", ag1, {"skill": "astrology"}, 404, "skill_not_found"),
        ("POST", f"/v1/calls/{call_id}/transfer", ag1, {}, 400, "invalid_message"),
        ("PUT", "/v1/agents/ag-9", ag1, {"skills": {"cards": 1}, "languages": ["zh"]}, 403, "role_forbidden"),
        ("PUT", "/v1/agents/ag-9", supervisor(server), {"skills": {"cards": 0}, "languages": ["zh"]}, 400, "invalid_message"),
        ("GET", "/v1/queues", ag1, None, 403, "role_forbidden"),
        ("GET", "/v1/calls/CL_nope", supervisor(server), None, 404, "call_not_found"),
        ("GET", "/v1/catalogue?lang=" + "x" * 40, None, None, 400, "invalid_message"),
    ]:
        assert error_code(await call(http, server, method, path, token=token, json=body), status) == code, (method, path, body)
    assert error_code(await call(http, server, "POST", "/v1/calls", token=cust, data="{nope", headers={"Content-Type": "application/json"}), 400) == "invalid_json"
    status, calls = await call(http, server, "GET", "/v1/calls", token=supervisor(server))
    assert [(c["call_id"], c["state"], c["agent_id"]) for c in calls["calls"]] == [(call_id, "connected", "ag-1")]
    status, agents = await call(http, server, "GET", "/v1/agents", token=supervisor(server))
    assert {a["agent_id"]: a["state"] for a in agents["agents"]} == {"ag-1": "busy", "ag-2": "offline"}


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A bank's endpoint: checks every signature, fails the first two deliveries."""
    got: list[dict[str, Any]] = []
    attempts = {"n": 0}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        attempts["n"] += 1
        if attempts["n"] <= 2:
            return web.Response(status=503)
        got.append({
            "valid": verify(WEBHOOK_SECRET, request.headers["X-Teller-Signature"], body),
            "forged": verify("another-secret-0123456789", request.headers["X-Teller-Signature"], body),
            "event": request.headers["X-Teller-Event"],
            "attempt": int(request.headers["X-Teller-Attempt"]),
            "body": json.loads(body),
        })
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", got
    finally:
        await runner.cleanup()


async def test_webhooks_are_signed_retried_and_in_order(tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]) -> None:
    url, got = receiver
    server, runner = await start_in_process(tmp_path, webhooks={"urls": [url], "secret": WEBHOOK_SECRET})
    try:
        async with aiohttp.ClientSession() as session:
            cust = customer_token(server, "c1")
            status, queued = await call(session, server, "POST", "/v1/calls", token=cust, json={"business": "complaint"})
            assert status == 201
            status, cancelled = await call(session, server, "DELETE", f"/v1/calls/{queued['call_id']}", token=cust)
            assert cancelled["state"] == "abandoned"
        await wait_until(lambda: len(got) == 2, timeout=15)
        assert [g["event"] for g in got] == ["call.queued", "call.abandoned"]
        assert got[0]["attempt"] == 3  # two 503s, then delivered
        assert all(g["valid"] and not g["forged"] for g in got)
        assert got[1]["body"]["data"]["call_id"] == queued["call_id"]
    finally:
        await runner.cleanup()


async def test_webhooks_need_a_real_secret(tmp_path: Path) -> None:
    from teller.config import ConfigError

    with pytest.raises(ConfigError):
        await start_in_process(tmp_path, webhooks={"urls": ["http://127.0.0.1:9/hook"], "secret": "short"})


async def test_stats_csv_and_a_supervisor_must_say_why_it_ends_a_call(http: aiohttp.ClientSession, server: Server) -> None:
    cust = customer_token(server, "c9")
    await register(http, server, "ag-9", {"service": 1})
    ag = agent_token(server, "ag-9")
    await call(http, server, "POST", "/v1/agents/me/state", token=ag, json={"state": "available"})
    status, queued = await call(http, server, "POST", "/v1/calls", token=cust, json={"business": "complaint"})
    await call(http, server, "POST", f"/v1/calls/{queued['call_id']}/accept", token=ag)
    sup = supervisor(server)
    path = f"/v1/calls/{queued['call_id']}"
    assert error_code(await call(http, server, "DELETE", path, token=sup), 400) == "reason_required"
    status, ended = await call(http, server, "DELETE", path + "?reason=abusive+language", token=sup)
    assert status == 200 and ended["end_reason"] == "abusive language" and ended["ended_by"] == "supervisor:sup-1"
    status, body = await call(http, server, "GET", "/v1/stats?by=business", token=sup)
    assert status == 200 and body["rows"][0]["group"] == "complaint" and body["rows"][0]["connected"] == 1
    async with http.get(server.url + "/v1/stats?by=agent&format=csv", headers={"Authorization": f"Bearer {sup}"}) as r:
        assert r.status == 200 and r.content_type == "text/csv"
        lines = (await r.text()).splitlines()
    assert lines[0].split(",")[:3] == ["group", "requests", "connected"] and lines[1].startswith("ag-9,1,1")
    assert error_code(await call(http, server, "GET", "/v1/stats?by=weekday", token=sup), 400) == "invalid_message"
    assert error_code(await call(http, server, "GET", "/v1/stats?from=yesterday", token=sup), 400) == "invalid_message"
    assert error_code(await call(http, server, "GET", "/v1/stats", token=ag), 403) == "role_forbidden"


async def test_a_pdf_becomes_page_images_any_screen_can_show(http: aiohttp.ClientSession, server: Server) -> None:
    import io

    from PIL import Image

    ag = agent_token(server, "ag-pdf")
    async with http.post(server.url + "/v1/materials", data=minimal_pdf(["Wealth product", "Risks"]),
                         headers={"Authorization": f"Bearer {ag}", "Content-Type": "application/pdf"}) as r:
        assert r.status == 201, await r.text()
        material = await r.json()
    assert material["kind"] == "pdf" and [p["page"] for p in material["pages"]] == [1, 2]
    async with http.get(server.url + material["pages"][0]["url"]) as r:
        assert r.status == 200 and r.content_type == "image/png"
        page = Image.open(io.BytesIO(await r.read()))
    assert page.size[0] == 1280
    dark = sum(1 for px in page.convert("L").tobytes() if px < 128)
    assert dark > 500  # the text was drawn, not a blank page
    # Refusals: not a PDF, wrong type, no token, customer token, unknown page.
    headers = {"Authorization": f"Bearer {ag}", "Content-Type": "application/pdf"}
    async with http.post(server.url + "/v1/materials", data=b"%PDF-garbage", headers=headers) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_material"
    async with http.post(server.url + "/v1/materials", data=b"x", headers={**headers, "Content-Type": "text/html"}) as r:
        assert r.status == 415
    async with http.post(server.url + "/v1/materials", data=b"x", headers={"Content-Type": "application/pdf"}) as r:
        assert r.status == 401
    async with http.post(server.url + "/v1/materials", data=b"x", headers={**headers, "Authorization": f"Bearer {customer_token(server, 'c')}"}) as r:
        assert r.status == 403
    async with http.get(server.url + material["pages"][0]["url"].replace("/1.png", "/9.png")) as r:
        assert r.status == 404
    async with http.get(server.url + "/v1/materials/MT_guess/1.png") as r:
        assert r.status == 404


TINY_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


async def test_a_confirmation_and_its_signature_are_evidence_in_the_timeline(http: aiohttp.ClientSession, server: Server) -> None:
    from teller.signaling.keys import STORE

    cust = customer_token(server, "signer")
    await register(http, server, "ag-sign", {"payments": 1})
    ag = agent_token(server, "ag-sign")
    await call(http, server, "POST", "/v1/agents/me/state", token=ag, json={"state": "available"})
    status, queued = await call(http, server, "POST", "/v1/calls", token=cust, json={"business": "transfer"})
    call_id = queued["call_id"]
    await call(http, server, "POST", f"/v1/calls/{call_id}/accept", token=ag)
    # A transfer needs identity first: refused until it passed or an agent overrode it.
    # This server runs no liveness stage: the desk is told, and only the override is left.
    assert error_code(await call(http, server, "POST", f"/v1/calls/{call_id}/confirmations", token=ag,
                                 json={"what": "x", "amount": "1", "account": "1"}), 409) == "identity_required"
    status, identity = await call(http, server, "GET", f"/v1/calls/{call_id}/identity", token=ag)
    assert status == 200 and (identity["required"], identity["available"], identity["satisfied"]) == (True, False, False)
    assert error_code(await call(http, server, "POST", f"/v1/calls/{call_id}/identity/liveness", token=ag), 503) == "liveness_unavailable"
    status, _ = await call(http, server, "POST", f"/v1/calls/{call_id}/identity/override", token=ag,
                           json={"reason": "Identity checked by the branch"})
    assert status == 200
    status, request = await call(http, server, "POST", f"/v1/calls/{call_id}/confirmations", token=ag,
                                 json={"what": "Transfer to Wang", "amount": "5,000.00 CNY", "account": "6222020200112233"})
    assert status == 201 and request["account_masked"] == "************2233" and request["signature_required"]
    path = f"/v1/calls/{call_id}/confirmations/{request['request_id']}"
    assert error_code(await call(http, server, "POST", path, token=cust, json={"accepted": True}), 400) == "signature_required"
    assert error_code(await call(http, server, "POST", path, token=ag, json={"accepted": True, "signature": TINY_PNG}), 403) == "role_forbidden"
    assert error_code(await call(http, server, "POST", path, token=cust, json={"accepted": True, "signature": "data:text/html,<b>"}), 400) == "invalid_message"
    status, answer = await call(http, server, "POST", path, token=cust, json={"accepted": True, "signature": TINY_PNG})
    assert status == 200 and answer["answer"]["accepted"] is True and len(answer["answer"]["signature_sha256"]) == 64
    assert error_code(await call(http, server, "POST", path, token=cust, json={"accepted": False}), 409) == "already_answered"
    store = server.app[STORE]
    events = []
    for _ in range(50):
        events = await store.read_events(call_id)
        if any(e["type"] == "call_confirmation_answered" for e in events):
            break
        await asyncio.sleep(0.05)
    requested = next(e for e in events if e["type"] == "call_confirmation_requested")
    answered = next(e for e in events if e["type"] == "call_confirmation_answered")
    assert requested["confirmation"]["amount"] == "5,000.00 CNY" and "6222020200112233" not in str(requested)
    assert answered["signature"] == TINY_PNG and answered["confirmation"]["answer"]["accepted"] is True
