"""A whole contact-centre call in headless Chromium: three pages, no SDK in the media path.

The customer page (/customer) queues for a transfer; the agent desk (/desk) logs in,
goes available and accepts; both decode each other's video; the desk pushes a slide
and asks for a signed confirmation, which the customer page shows, the test signs and
the desk sees confirmed (evidence in the call record). The wallboard (/wallboard)
monitors the call unseen, whispers to the agent only, then barges in. The desk hangs
up and wraps up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from .browser import (
    SCREENSHOTS,
    StatsPage,
    chromium_context,
    eventually,
    require_browser,
)
from .conftest import Server

playwright_api = require_browser(20_000)
expect = playwright_api.expect

pytestmark = pytest.mark.browser

TIMEOUT = 30.0


@pytest.fixture
async def browser_context() -> AsyncIterator[Any]:
    async with chromium_context() as context:
        yield context


Page = StatsPage


async def rest(http: aiohttp.ClientSession, server: Server, method: str, path: str, token: str | None = None,
               json: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, server.url + path, json=json, headers=headers) as response:
        body = await response.json()
        assert response.status < 300, (method, path, response.status, body)
        return body


# The customer page's view of the room: who it knows of, and whom it subscribes to.
CUSTOMER_ROOM = """() => ({
  participants: [...window.teller.state.participants.values()].map((p) => ({
    id: p.participant_id, role: p.role || null, hidden: p.hidden ?? null, tracks: (p.tracks || []).length })),
  subscribedTo: window.teller.state.subscription?.participantId || null,
})"""

# The desk's view: the participants it subscribes to.
DESK_SUBSCRIPTIONS = "() => [...window.teller.state.subscriptions.keys()]"


async def test_customer_desk_and_wallboard_carry_a_supervised_call(
    server: Server, browser_context: Any, http: aiohttp.ClientSession
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    supervisor = server.issuer.issue(room="*", role="supervisor", subject="sup-e2e", name="Supervisor")

    # -- The customer queues for a transfer ---------------------------------------------------
    customer = Page(await browser_context.new_page(), "customer")
    cpage = customer.page
    await cpage.set_viewport_size({"width": 1280, "height": 800})
    await cpage.goto(f"{server.url}/customer?lang=en")
    await cpage.get_by_label("Your name").fill("Farmer Li")
    await cpage.get_by_role("button", name="Transfer", exact=True).click()
    queued = await customer.wait(lambda s: s["phase"] == "waiting" and s["published"], "queueing and publishing")
    call_id = queued["callId"]
    customer_pid = queued["participantId"]

    # -- The agent logs in, goes available and accepts ----------------------------------------
    desk = Page(await browser_context.new_page(), "desk")
    dpage = desk.page
    await dpage.set_viewport_size({"width": 1280, "height": 900})
    await dpage.goto(f"{server.url}/desk")
    await dpage.get_by_label("Your name").fill("Agent Kim")
    await dpage.get_by_role("button", name="Log in").click()
    await expect(dpage.locator("#agent-bar")).to_be_visible()
    await dpage.get_by_label("Set state").select_option("available")
    await dpage.get_by_role("button", name="Set", exact=True).click()
    await expect(dpage.locator("#incoming")).to_be_visible(timeout=TIMEOUT * 1000)
    await expect(dpage.locator("#in-business")).to_have_text("Transfer")
    await expect(dpage.locator("#in-customer")).to_have_text("Farmer Li")
    await dpage.get_by_role("button", name="Accept (A)").click()
    await desk.wait(lambda s: s["callId"] == call_id and s["callState"] == "connected", "taking the call")
    agent_id = (await desk.stats())["agentId"]

    # -- Both pages decode each other's video ------------------------------------------------
    first = await customer.wait(
        lambda s: s["phase"] == "call" and s["callState"] == "connected" and s["decodedFrames"] > 0,
        "decoding the agent's video")
    agent_pid = first["agentParticipantId"]
    await customer.wait(lambda s: s["decodedFrames"] > first["decodedFrames"] + 5, "decoding more frames")
    desk_first = await desk.wait(lambda s: s["decodedFrames"] > 0, "decoding the customer's video")
    await desk.wait(lambda s: s["decodedFrames"] > desk_first["decodedFrames"] + 5, "decoding more frames")
    await expect(cpage.locator("#remote-name")).to_have_text("Agent Kim")
    room = (await rest(http, server, "GET", f"/v1/calls/{call_id}", supervisor))["room"]

    # -- A slide pushed from the desk shows on the customer page ------------------------------
    await dpage.get_by_label("Slide").select_option("product")
    await dpage.get_by_role("button", name="Push to customer").click()
    await expect(cpage.locator("#material-content h3")).to_have_text("Transfer")
    await customer.wait(lambda s: s["material"], "the material id")

    # -- A confirmation: asked on the desk, signed and confirmed on the customer page ---------
    # A transfer needs identity first: here a supervisor overrides it (the check itself is
    # tests/test_identity_call.py), and the desk's confirm button unblocks.
    await rest(http, server, "POST", f"/v1/calls/{call_id}/identity/override", supervisor,
               {"reason": "Identity checked by the branch"})
    await dpage.get_by_label("Amount").fill("500.00 CNY")
    await dpage.get_by_label("Account").fill("6222020200112233")
    await dpage.get_by_role("button", name="Ask to confirm").click()
    dialog = cpage.locator("#confirm")
    await expect(dialog).to_be_visible()
    await expect(cpage.locator("#confirm-amount")).to_have_text("500.00 CNY")
    await expect(cpage.locator("#confirm-account")).not_to_contain_text("6222020200112233")
    box = await cpage.locator("#signature").bounding_box()
    assert box is not None
    await cpage.mouse.move(box["x"] + 30, box["y"] + box["height"] / 2)
    await cpage.mouse.down()
    for i in range(1, 12):
        await cpage.mouse.move(box["x"] + 30 + i * 25, box["y"] + box["height"] / 2 + (15 if i % 2 else -15))
    await cpage.mouse.up()
    await cpage.get_by_role("button", name="Confirm", exact=True).click()
    await customer.wait(lambda s: (s["confirmation"] or {}).get("state") == "accepted", "accepting the confirmation")
    await expect(dialog).to_be_hidden()
    await expect(dpage.locator("#confirm-status")).to_contain_text("confirmed")
    assert (await desk.stats())["lastConfirmation"]["status"] == "confirmed"
    record = await rest(http, server, "GET", f"/v1/calls/{call_id}", supervisor)
    answer = record["confirmations"][0]["answer"]
    assert answer["accepted"] is True and len(answer["signature_sha256"]) == 64, record["confirmations"]

    # -- The wallboard monitors the call unseen ----------------------------------------------
    wall = Page(await browser_context.new_page(), "wallboard")
    wpage = wall.page
    await wpage.set_viewport_size({"width": 1280, "height": 1000})
    await wpage.goto(f"{server.url}/wallboard")
    row = wpage.locator(f'#live [data-call-id="{call_id}"]')
    await expect(row).to_contain_text("Farmer Li")
    await expect(row.get_by_role("button", name="Whisper to the agent")).to_be_disabled()
    await expect(row.get_by_role("button", name="Barge in")).to_be_disabled()
    await row.get_by_role("button", name="Monitor").click()
    watching = await wall.wait(
        lambda s: (m := s["monitor"]) and m["joined"] and m["hidden"] and set(m["subscribed"]) == {customer_pid, agent_pid}
        and m["decodedFrames"] > 0,
        "monitoring: both parties subscribed and decoded")
    sup_pid = watching["monitor"]["participantId"]
    assert watching["monitor"]["room"] == room and not watching["monitor"]["whispering"] and not watching["monitor"]["revealed"]
    await wall.wait(lambda s: s["monitor"]["decodedFrames"] > watching["monitor"]["decodedFrames"] + 10, "more frames")
    await expect(wpage.locator("#monitor-tiles video")).to_have_count(2)
    await expect(wpage.locator("#monitor")).to_be_visible()

    # The server has it hidden; the customer page knows nothing of it.
    listed = {p["participant_id"]: p for p in (await rest(http, server, "GET", f"/v1/rooms/{room}/participants", supervisor))["participants"]}
    assert listed[sup_pid]["hidden"] is True, listed
    seen = await cpage.evaluate(CUSTOMER_ROOM)
    assert sup_pid not in {p["id"] for p in seen["participants"]}, seen
    assert seen["subscribedTo"] == agent_pid
    await expect(cpage.locator("video")).to_have_count(2)  # the agent's (big) and its own preview, nothing more
    await wpage.screenshot(path=str(SCREENSHOTS / "e2e-wallboard-monitor.png"), full_page=True)

    # -- Whisper: the agent desk gets the supervisor's voice, the customer does not -----------
    await row.get_by_role("button", name="Whisper to the agent").click()
    await wall.wait(lambda s: s["monitor"]["whispering"] and s["monitor"]["whisperPacketsSent"] > 0, "whispering")
    await expect(row.get_by_role("button", name="Stop whispering")).to_have_attribute("aria-pressed", "true")
    # The desk subscribes to any participant's new tracks, the supervisor's included.
    await eventually(lambda: desk_subscribed_to(dpage, sup_pid), "the desk subscribing to the whisper", desk.describe, TIMEOUT)
    await asyncio.sleep(1.0)  # time for a (wrong) track_published to reach the customer
    seen = await cpage.evaluate(CUSTOMER_ROOM)
    assert sup_pid not in {p["id"] for p in seen["participants"]}, seen
    assert seen["subscribedTo"] == agent_pid, seen
    node_room = server.node.rooms[room]
    customer_subs = [t.get("participant_id") for t in subscribed_tracks(node_room, customer_pid)]
    assert customer_subs and set(customer_subs) == {agent_pid}, customer_subs

    # -- Barge in: the customer page now knows the supervisor --------------------------------
    await row.get_by_role("button", name="Barge in").click()
    await wall.wait(lambda s: s["monitor"]["revealed"] and not s["monitor"]["hidden"], "barging in")
    await expect(row.get_by_role("button", name="Barge in")).to_be_disabled()

    async def customer_knows_supervisor() -> Any:
        seen = await cpage.evaluate(CUSTOMER_ROOM)
        return next((p for p in seen["participants"] if p["id"] == sup_pid and p["tracks"] > 0), None)

    await eventually(customer_knows_supervisor, "the supervisor (with its audio) appearing to the customer page",
                     customer.describe, TIMEOUT)
    listed = {p["participant_id"]: p for p in (await rest(http, server, "GET", f"/v1/rooms/{room}/participants", supervisor))["participants"]}
    assert listed[sup_pid]["hidden"] is False, listed
    # ...and sees and hears it: a tile of its own, decoding its audio.
    async def customer_hears_supervisor() -> bool:
        return bool(await cpage.evaluate(
            """async (pid) => {
                const tile = document.querySelector(`#view-call figure.other[data-participant-id="${pid}"]`);
                const video = tile && tile.querySelector("video");
                if (!video || !video.srcObject) return false;
                return video.srcObject.getAudioTracks().length > 0 && !video.paused;
            }""",
            sup_pid,
        ))

    await eventually(customer_hears_supervisor, "the customer page playing the supervisor", customer.describe, TIMEOUT)

    # -- The desk hangs up and wraps up -----------------------------------------------------
    await cpage.screenshot(path=str(SCREENSHOTS / "e2e-customer.png"))
    await dpage.screenshot(path=str(SCREENSHOTS / "e2e-desk.png"), full_page=True)
    await dpage.get_by_role("button", name="Hang up (H)").click()
    await expect(dpage.locator("#wrapup")).to_be_visible()
    assert (await desk.stats())["callState"] == "ended"
    await dpage.get_by_label("Code").select_option("resolved")
    await dpage.get_by_label("Notes").fill("transfer confirmed, supervised")
    await dpage.get_by_role("button", name="Finish wrap-up").click()
    await desk.wait(lambda s: s["state"] == "available", "back to available")
    ended = await rest(http, server, "GET", f"/v1/calls/{call_id}", supervisor)
    assert ended["state"] == "ended" and ended["wrap_ups"][0]["code"] == "resolved", ended
    agents = {a["agent_id"]: a["state"] for a in (await rest(http, server, "GET", "/v1/agents", supervisor))["agents"]}
    assert agents[agent_id] == "available", agents
    await customer.wait(lambda s: s["phase"] == "ended", "the customer page seeing the end")
    # The wallboard stops monitoring once the call is no longer live.
    await wall.wait(lambda s: s["monitor"] is None and call_id not in s["live"], "the wallboard letting go of the call")
    await expect(wpage.locator("#monitor")).to_be_hidden()

    for page in (customer, desk, wall):
        assert not page.errors(), (page.name, page.console)


async def desk_subscribed_to(page: Any, participant_id: str) -> bool:
    return participant_id in await page.evaluate(DESK_SUBSCRIPTIONS)


def subscribed_tracks(room: Any, participant_id: str) -> list[dict[str, Any]]:
    """What the SFU forwards to a participant: the `tracks` of its subscriptions."""
    participant = room.participants[participant_id]
    return [track for subscription in participant.subscriptions.values() for track in subscription.tracks()]
