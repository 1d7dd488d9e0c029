"""The identity check of a call in headless Chromium: the customer page, the agent desk
and the server's "liveness" stage watching the customer's real (fake-device) camera.

Chromium's fake camera shows a moving pattern and no face, so the coaching watch says
"no face" and raises a face-absent cue, and a liveness check fails with reason no_face
once positioning runs out. The business (card activation) requires an identity check:
the desk's "Ask to confirm" stays disabled and the server refuses a confirmation (409
identity_required) until the agent overrides with a reason, which the tamper-evident
audit log and the call's timeline keep.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from teller.signaling.tokens import ANY_ROOM

from .browser import StatsPage, chromium_context, eventually, require_browser
from .conftest import Server, start_in_process

playwright_api = require_browser(20_000)
expect = playwright_api.expect

pytestmark = pytest.mark.browser

TIMEOUT = 30.0
POSITION_TIMEOUT_S = 3
WATCH_CUE_S = 2
REASON = "Checked the ID card against the customer in person"


@pytest.fixture
async def identity_server(tmp_path: Path) -> AsyncIterator[Server]:
    """The liveness stage on, positioning short, cues soon."""
    srv, runner = await start_in_process(
        tmp_path, stages={"enabled": ["liveness"]},
        identity={"position_timeout_s": POSITION_TIMEOUT_S, "watch_cue_s": WATCH_CUE_S},
    )
    try:
        yield srv
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser_context() -> AsyncIterator[Any]:
    async with chromium_context() as context:
        yield context


async def rest(http: aiohttp.ClientSession, server: Server, method: str, path: str, token: str | None = None,
               json: Any = None, params: dict[str, str] | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, server.url + path, json=json, headers=headers, params=params) as response:
        return response.status, await response.json()


async def call_events(server: Server, call_id: str, kind: str) -> list[dict[str, Any]]:
    """The call's timeline events of one type, from the state store."""
    from teller.signaling.keys import STORE

    events = await server.app[STORE].read_events(call_id)
    return [e for e in events if e.get("type") == kind]


async def test_the_desk_checks_identity_and_an_override_unblocks_the_confirmation(
    identity_server: Server, browser_context: Any, http: aiohttp.ClientSession
) -> None:
    server = identity_server

    # -- The customer (large text) comes for card activation, which requires identity ----------
    customer = StatsPage(await browser_context.new_page(), "customer", TIMEOUT)
    cpage = customer.page
    await cpage.set_viewport_size({"width": 1280, "height": 800})
    await cpage.goto(f"{server.url}/customer?lang=en&large=1")
    await cpage.get_by_label("Your name").fill("Grandpa Wu")
    await cpage.get_by_role("button", name="Card activation", exact=True).click()
    queued = await customer.wait(lambda s: s["phase"] == "waiting" and s["published"], "queueing and publishing")
    call_id = queued["callId"]

    # -- The agent answers on the desk ----------------------------------------------------------
    desk = StatsPage(await browser_context.new_page(), "desk", TIMEOUT)
    dpage = desk.page
    await dpage.set_viewport_size({"width": 1280, "height": 1000})
    await dpage.goto(f"{server.url}/desk")
    await dpage.get_by_label("Your name").fill("Agent Kim")
    await dpage.get_by_role("button", name="Log in").click()
    await expect(dpage.locator("#agent-bar")).to_be_visible()
    await dpage.get_by_label("Set state").select_option("available")
    await dpage.get_by_role("button", name="Set", exact=True).click()
    await expect(dpage.locator("#incoming")).to_be_visible(timeout=TIMEOUT * 1000)
    await expect(dpage.locator("#in-business")).to_have_text("Card activation")
    await dpage.get_by_role("button", name="Accept (A)").click()
    await desk.wait(lambda s: s["callId"] == call_id and s["callState"] == "connected", "taking the call")
    await customer.wait(lambda s: s["phase"] == "call" and s["callState"] == "connected", "the customer in the call")
    agent_token = await dpage.evaluate("window.teller.state.token")

    # -- The watch sees no face; a face-absent cue follows ----------------------------------------
    face = dpage.locator("#identity-face")
    await expect(face).to_have_attribute("data-face", "no_face", timeout=TIMEOUT * 1000)
    await expect(face).to_have_text("No face")
    overall = dpage.locator("#identity-overall")
    await expect(overall).to_have_attribute("data-state", "not_started")
    await expect(overall).to_contain_text("not verified")
    await expect(dpage.locator("#identity")).to_have_attribute("data-required", "true")
    cue = dpage.locator('#identity-cues li[data-kind="face_absent"]').first
    await expect(cue).to_contain_text(re.compile(r"No face for \d+ s"), timeout=TIMEOUT * 1000)

    # -- The confirmation is blocked, on the desk and by the server -------------------------------
    ask = dpage.get_by_role("button", name="Ask to confirm")
    await expect(ask).to_be_disabled()
    await expect(dpage.locator("#confirm-blocked")).to_be_visible()
    await expect(dpage.locator("#confirm-blocked")).to_contain_text("Identity not verified")
    status, refused = await rest(http, server, "POST", f"/v1/calls/{call_id}/confirmations", agent_token,
                                 {"what": "Card activation", "amount": "0.00 CNY", "account": "6222020200112233"})
    assert status == 409 and refused["error"]["code"] == "identity_required", (status, refused)

    # ...and says so in Chinese too.
    await dpage.get_by_role("button", name="中文").click()
    await expect(face).to_have_text("未检测到人脸")
    await expect(dpage.locator("#confirm-blocked")).to_contain_text("身份未核验")
    await expect(dpage.get_by_role("button", name="开始活体检测")).to_be_visible()
    await dpage.get_by_role("button", name="English").click()
    await expect(face).to_have_text("No face")

    # -- A liveness check: the customer is asked to face the camera, and it fails: no face --------
    start = dpage.get_by_role("button", name="Start liveness check")
    await start.click()
    prompt = cpage.locator("#identity-prompt")
    await expect(prompt).to_be_visible()
    await expect(prompt).to_have_attribute("data-step", "position")
    await expect(cpage.locator("#identity-prompt-text")).to_contain_text(re.compile("look straight at the camera", re.IGNORECASE))
    await expect(cpage.locator("#identity-prompt-heading")).to_contain_text("Get ready")
    await expect(cpage.locator("#identity-prompt-countdown")).to_contain_text(re.compile(r"\d s left"))
    # Large text: big words, all of the overlay on the screen.
    size = await cpage.locator("#identity-prompt-text").evaluate("(e) => parseFloat(getComputedStyle(e).fontSize)")
    assert size >= 32, size
    box = await cpage.locator("#preview").bounding_box()
    assert box and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= 1280 and box["y"] + box["height"] <= 800, box
    await expect(start).to_be_disabled()  # one attempt at a time

    await expect(prompt).to_have_attribute("data-result", "failed", timeout=(POSITION_TIMEOUT_S + TIMEOUT) * 1000)
    await expect(cpage.locator("#identity-prompt-text")).to_contain_text("face")
    state_line = dpage.locator("#identity-liveness-state")
    await expect(state_line).to_have_attribute("data-reason", "no_face")
    await expect(state_line).to_contain_text("Liveness failed: the customer's face was not seen")
    await expect(overall).to_have_attribute("data-state", "failed")
    steps = await dpage.locator("#identity-steps li").count()
    assert 2 <= steps <= 3, steps  # min_steps and max_steps, listed in order
    await expect(start).to_be_enabled()
    await expect(ask).to_be_disabled()
    # The result shows for a few seconds, then the self-view goes back to its corner.
    await expect(prompt).to_be_hidden(timeout=TIMEOUT * 1000)
    log = (await customer.stats())["identity"]["log"]
    assert {"kind": "prompt", "step": "position", "index": -1} in log, log
    assert {"kind": "result", "passed": False, "reason": "no_face"} in log, log

    # -- The ID document: captured, shown as a thumbnail fetched with the token --------------------
    await dpage.get_by_role("button", name="Capture ID document").click()
    await expect(dpage.locator("#identity-message")).to_have_text("ID document captured.")
    doc = dpage.locator("#identity-doc-img")
    await expect(doc).to_have_attribute("src", re.compile("^blob:"))
    await eventually(lambda: doc.evaluate("(img) => img.complete && img.naturalWidth > 0"), "the ID thumbnail decoded",
                     desk.describe, TIMEOUT)
    compare = dpage.get_by_role("button", name="Compare faces")
    await expect(compare).to_be_disabled()  # no face frame: the check did not pass

    # -- Compare: a face frame (captured here by REST, as a passed check would) against the ID ----
    status, face_entry = await rest(http, server, "POST", f"/v1/calls/{call_id}/identity/capture", agent_token,
                                    {"kind": "face"})
    assert status == 201 and face_entry["kind"] == "face", (status, face_entry)
    await expect(dpage.locator("#identity-face-img")).to_have_attribute("src", re.compile("^blob:"))
    await expect(compare).to_be_enabled()
    await compare.click()
    comparison = dpage.locator("#identity-comparison")
    await expect(comparison).to_have_attribute("data-outcome", "manual_check_required")  # no comparer configured
    await expect(comparison).to_contain_text("Manual check required")
    await expect(ask).to_be_disabled()  # a comparison alone verifies nothing

    # -- The agent overrides, with a reason -------------------------------------------------------
    await dpage.get_by_label("Override reason").fill(REASON)
    await dpage.get_by_role("button", name="Override", exact=True).click()
    await expect(overall).to_have_attribute("data-state", "overridden")
    await expect(overall).to_contain_text(f"overridden by Agent Kim: {REASON}")
    await expect(ask).to_be_enabled()
    await expect(dpage.locator("#confirm-blocked")).to_be_hidden()

    # A confirmation now goes through (201) and reaches the customer.
    await dpage.get_by_label("Amount").fill("0.00 CNY")
    await dpage.get_by_label("Account").fill("6222020200112233")
    async with dpage.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(f"/v1/calls/{call_id}/confirmations")
    ) as answered:
        await ask.click()
    assert (await answered.value).status == 201
    await expect(cpage.locator("#confirm")).to_be_visible()
    await expect(dpage.locator("#confirm-status")).to_contain_text("Waiting for the customer")

    # -- The override is in the audit log and on the call's timeline ------------------------------
    compliance = server.issuer.issue(room=ANY_ROOM, role="compliance", name="Auditor")
    status, audit = await rest(http, server, "GET", "/v1/audit", compliance, params={"action": "identity_override"})
    assert status == 200, audit
    mine = [e for e in audit["entries"] if e["action"] == "identity_override" and call_id in json.dumps(e)]
    assert mine and REASON in json.dumps(mine[0]), audit
    events = await eventually(lambda: call_events(server, call_id, "identity_override"), "the override on the timeline",
                              timeout=TIMEOUT)
    assert REASON in json.dumps(events[0]), events

    # The outcome in Chinese too.
    await dpage.get_by_role("button", name="中文").click()
    await expect(comparison).to_contain_text("需人工核验")
    await expect(overall).to_contain_text("人工放行")
    await expect(face).to_have_text("未检测到人脸")

    stats = await desk.stats()
    assert stats["identity"]["state"] == "overridden" and stats["identity"]["satisfied"] is True, stats["identity"]
    for page in (customer, desk):
        assert not page.errors(), (page.name, page.console)
