"""Live call quality on the pages, in headless Chromium (docs/quality.md).

The agent desk shows the figures the server sends staff every two seconds
(`quality.stats`) from a real media flow, and a banner when the customer's uplink
really loses packets (`teller impair` in front of a TURN relay the customer must use);
the wallboard shows the live session's quality beside it; the customer page tells the
customer gently when its own link is weak or its video was paused; the replay page
shows the quality summary of a recorded session that had an alert.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from teller.client import RoomClient, TestPatternTrack, ToneTrack
from teller.impair.model import Impairment

from .browser import (
    SCREENSHOTS,
    StatsPage,
    chromium_context,
    eventually,
    require_browser,
)
from .conftest import Server, start_in_process
from .media import receive
from .test_browser_replay import log_in, page_console, page_errors
from .test_recording import RECORDING, compliance_token, ready_entry
from .turn import impaired_turn

playwright_api = require_browser(20_000)
expect = playwright_api.expect

pytestmark = pytest.mark.browser
requires_coturn = pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn is not installed (apt-get install coturn)")

TIMEOUT = 30.0
EXPECT_MS = int(TIMEOUT * 1000)
ALERT_EN = "Customer's network is poor: suggest audio only"
ALERT_ZH = "客户网络较差：建议改为纯语音"

# Chromium's peer connections through the TURN relay only, as a customer behind the
# impaired network would be (the page takes its ICE servers from the server's join).
RELAY_ONLY_SCRIPT = """(() => {
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(config = {}, ...rest) { super({ ...config, iceTransportPolicy: "relay" }, ...rest); }
  };
})();"""


@pytest.fixture
async def browser_context() -> AsyncIterator[Any]:
    async with chromium_context() as context:
        yield context


async def start_impaired(tmp_path: Path, turn: Any, **sections: dict[str, Any]) -> tuple[Server, Any]:
    return await start_in_process(tmp_path, ice={"servers": turn.ice_servers()}, sfu={"bind_addresses": ["127.0.0.1"]}, **sections)


async def rest(http: aiohttp.ClientSession, server: Server, method: str, path: str, token: str | None = None,
               json: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, server.url + path, json=json, headers=headers) as response:
        body = await response.json()
        assert response.status < 300, (method, path, response.status, body)
        return body


def supervisor(server: Server) -> str:
    return server.issuer.issue(room="*", role="supervisor", subject="sup-q", name="Supervisor")


Page = StatsPage


async def desk_takes_the_call(context: Any, server: Server, call_id: str) -> Page:
    """The agent desk: log in, go available, accept the offered call."""
    desk = Page(await context.new_page(), "desk")
    page = desk.page
    await page.set_viewport_size({"width": 1280, "height": 1000})
    await page.goto(f"{server.url}/desk")
    await page.get_by_label("Your name").fill("Agent Kim")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#agent-bar")).to_be_visible()
    await page.get_by_label("Set state").select_option("available")
    await page.get_by_role("button", name="Set", exact=True).click()
    await expect(page.locator("#incoming")).to_be_visible(timeout=EXPECT_MS)
    await page.get_by_role("button", name="Accept (A)").click()
    await desk.wait(lambda s: s["callId"] == call_id and s["callState"] == "connected", "taking the call")
    return desk


async def customer_queues(http: aiohttp.ClientSession, server: Server, turn: Any, room: str) -> tuple[RoomClient, str]:
    """The customer (the Python SDK, through the impaired relay only) queues and publishes."""
    token = server.issuer.issue(room=room, role="customer", subject=room, name="Farmer Li")
    queued = await rest(http, server, "POST", "/v1/calls", token, {"business": "transfer", "language": "en"})
    customer = RoomClient(server.url, token, relay_only=True)
    await customer.connect()
    await customer.publish([TestPatternTrack(320, 240, 15), ToneTrack()])
    return customer, queued["call_id"]


def customer_row(stats: dict[str, Any]) -> dict[str, Any] | None:
    return next((p for p in stats["quality"]["participants"] if p["role"] == "customer"), None)


@requires_coturn
async def test_desk_and_wallboard_show_live_quality_and_the_customer_loss_alert(
    tmp_path: Path, browser_context: Any, http: aiohttp.ClientSession
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with impaired_turn(tmp_path, seed=21) as turn:
        server, runner = await start_impaired(tmp_path, turn)
        customer = None
        try:
            customer, call_id = await customer_queues(http, server, turn, "cust-quality")
            desk = await desk_takes_the_call(browser_context, server, call_id)
            page = desk.page

            # Real figures every two seconds once the call connects: the customer's row with a
            # level, a MOS, loss, round trip and the video it sends; the agent's own row with
            # the tier it receives.
            first = await desk.wait(lambda s: (c := customer_row(s)) and c["mos"] is not None and (c["fps"] or 0) > 5,
                                    "the customer's live figures")
            await desk.wait(lambda s: s["quality"]["updates"] > first["quality"]["updates"], "a later quality.stats")
            panel = page.locator("#quality")
            await expect(panel).to_have_attribute("data-state", "live")
            await expect(page.locator("#quality-summary")).to_have_attribute("role", "status")
            row = page.locator('#quality-table tr[data-role="customer"]')
            await expect(row.locator('[data-field="level"] .quality-badge')).to_have_attribute("data-level", "good")
            await expect(row.locator('[data-field="mos"]')).to_have_text(_number_pattern())
            await expect(row.locator('[data-field="loss"]')).to_contain_text("%")
            await expect(row.locator('[data-field="video"]')).to_contain_text("320×240")
            mine = page.locator('#quality-table tr[data-self="true"]')
            await expect(mine.locator('[data-field="who"]')).to_have_text("You")
            await expect(mine.locator('[data-field="tier"]')).to_have_attribute("data-tier", "full")
            await expect(page.locator("#quality-my-tier")).to_have_text("You receive: full")
            await expect(page.locator("#quality-summary")).to_contain_text("Customer: good")
            # A clean link says nothing about the network.
            await expect(page.locator('.quality-alert[data-kind="network_poor"]')).to_have_count(0)
            await page.screenshot(path=str(SCREENSHOTS / "desk-quality-en.png"), full_page=True)

            # The customer's uplink loses one packet in ten: the banner, in the agent's words.
            turn.relay.set(up=Impairment(loss=0.1))
            banner = page.locator('#quality-alerts .quality-alert[data-kind="network_poor"][data-role="customer"]')
            await expect(banner).to_be_visible(timeout=EXPECT_MS)
            await expect(banner).to_have_attribute("role", "alert")
            await expect(banner).to_contain_text(ALERT_EN)
            assert await banner.get_attribute("data-severity") in ("warning", "critical")
            assert await banner.get_attribute("data-participant-id") == customer.participant_id
            assert await banner.get_attribute("data-suggestion") == "audio_only"
            await desk.wait(lambda s: (c := customer_row(s)) and c["level"] in ("fair", "poor") and c["loss_up"] >= 0.03,
                            "the customer's row showing the loss")
            await expect(row.locator(".quality-badge")).not_to_have_attribute("data-level", "good")
            await page.screenshot(path=str(SCREENSHOTS / "desk-quality-alert-en.png"), full_page=True)

            # In Chinese: the same banner, translated by kind and role.
            await page.get_by_role("button", name="中文").click()
            await expect(banner).to_contain_text(ALERT_ZH)
            await expect(page.locator("#quality-title")).to_contain_text("通话质量")
            await page.screenshot(path=str(SCREENSHOTS / "desk-quality-alert-zh.png"), full_page=True)
            await page.get_by_role("button", name="English").click()
            await expect(banner).to_contain_text(ALERT_EN)

            # The wallboard: the live session with its quality, the alert listed, poor first.
            wall = Page(await browser_context.new_page(), "wallboard")
            wpage = wall.page
            await wpage.set_viewport_size({"width": 1280, "height": 900})
            await wpage.goto(f"{server.url}/wallboard")
            live = wpage.locator(f'#live tbody tr[data-call-id="{call_id}"]')
            await expect(live).to_contain_text("Farmer Li")
            quality = live.locator('td[data-column="quality"]')
            await expect(quality.locator(".quality-badge")).to_have_attribute("data-level", _pattern("fair|poor"), timeout=EXPECT_MS)
            await expect(quality.locator(".mos")).to_have_text(_pattern(r"MOS \d\.\d"))
            count = quality.locator(".alert-count")
            await expect(count).to_have_attribute("title", _pattern("Customer's network is poor"), timeout=EXPECT_MS)
            assert int(await count.get_attribute("data-count") or "0") >= 1
            await expect(count).to_have_attribute("aria-label", _pattern("quality alert"))
            await expect(live).to_have_attribute("data-quality-level", _pattern("fair|poor"))
            board = await wall.stats()
            assert "network_poor" in board["quality"][call_id]["alerts"], board
            await wpage.screenshot(path=str(SCREENSHOTS / "wallboard-quality.png"), full_page=True)

            # The link heals: the banner goes once the server clears the alert.
            turn.relay.set(up=Impairment())
            await expect(banner).to_have_count(0, timeout=EXPECT_MS)
            await desk.wait(lambda s: (c := customer_row(s)) and c["loss_up"] < 0.03, "the customer's loss back down")
            await expect(count).to_have_count(0, timeout=EXPECT_MS)
            for p in (desk, wall):
                assert not p.errors(), (p.name, p.console)
        finally:
            if customer is not None:
                await customer.close()
            await runner.cleanup()


@requires_coturn
async def test_customer_page_says_gently_when_its_link_is_weak_and_video_paused(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with impaired_turn(tmp_path, seed=23) as turn:
        server, runner = await start_impaired(tmp_path, turn)
        agent = None
        try:
            async with chromium_context(init_script=RELAY_ONLY_SCRIPT) as context:
                customer = Page(await context.new_page(), "customer")
                page = customer.page
                await page.set_viewport_size({"width": 1024, "height": 800})
                await page.goto(f"{server.url}/customer?lang=en")
                await page.get_by_label("Your name").fill("Farmer Li")
                await page.get_by_role("button", name="Transfer", exact=True).click()
                queued = await customer.wait(lambda s: s["phase"] == "waiting" and s["published"], "queueing and publishing")

                # The agent (the Python SDK, on a clean link) accepts and shows its camera.
                await rest(http, server, "PUT", "/v1/agents/ag-q", supervisor(server),
                           {"name": "Agent Kim", "skills": {"payments": 5}, "languages": ["zh", "en"]})
                agent_token = server.issuer.issue(room="desk-ag-q", role="agent", subject="ag-q", name="Agent Kim")
                await rest(http, server, "POST", "/v1/agents/me/state", agent_token, {"state": "available"})
                accepted = await rest(http, server, "POST", f"/v1/calls/{queued['callId']}/accept", agent_token)
                agent = RoomClient(server.url, accepted["token"])
                await agent.connect()
                await agent.publish([TestPatternTrack(320, 240, 15), ToneTrack()])
                await customer.wait(lambda s: s["phase"] == "call" and s["decodedFrames"] > 10, "decoding the agent's video")
                sub = await agent.subscribe(queued["participantId"])
                asyncio.ensure_future(receive(sub.track("video"), 120.0, first_timeout=TIMEOUT))
                asyncio.ensure_future(receive(sub.track("audio"), 120.0, first_timeout=TIMEOUT))
                network = page.locator("#network-notice")
                paused = page.locator("#audio-only-notice")
                await expect(page.locator("#quality-notices")).to_have_attribute("role", "status")
                await expect(network).to_be_hidden()
                await expect(paused).to_be_hidden()

                # The customer's downlink drops a third of its packets: the server raises an alert
                # about it (to it too) and steps its video down to audio only.
                turn.relay.set(down=Impairment(loss=0.3))
                await expect(network).to_be_visible(timeout=EXPECT_MS)
                await expect(network).to_have_text("Your network is weak; the picture may pause.")
                await customer.wait(lambda s: s["quality"]["audioOnly"], "the video paused for audio only", timeout=60)
                await expect(paused).to_be_visible()
                await expect(paused).to_have_text("The video is paused to keep the voice clear.")
                await page.screenshot(path=str(SCREENSHOTS / "customer-quality-en.png"))
                await page.get_by_role("button", name="中文").click()
                await expect(network).to_have_text("您的网络信号较弱，画面可能会暂停。")
                await expect(paused).to_have_text("为保证通话声音清晰，已暂停视频画面。")
                await page.screenshot(path=str(SCREENSHOTS / "customer-quality-zh.png"))

                # The link heals: the alert clears and the video comes back up a rung.
                turn.relay.set(down=Impairment())
                await expect(paused).to_be_hidden(timeout=60_000)
                await expect(network).to_be_hidden(timeout=EXPECT_MS)
                assert not customer.errors(), customer.console
        finally:
            if agent is not None:
                await agent.close()
            await runner.cleanup()


@requires_coturn
async def test_replay_shows_the_quality_summary_of_a_session_with_an_alert(
    tmp_path: Path, browser_context: Any, http: aiohttp.ClientSession
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with impaired_turn(tmp_path, seed=25) as turn:
        server, runner = await start_impaired(
            tmp_path, turn, recording={**RECORDING, "composite": False}, rooms={"empty_timeout_s": 0.5})
        try:
            # A two-party call whose customer loses one uplink packet in ten for a while.
            room = "quality-replay"
            customer = RoomClient(server.url, server.token(room, "customer", name="Li Hua"), relay_only=True)
            agent = RoomClient(server.url, server.token(room, "agent", name="Wang Li"))
            alerts: list[dict[str, Any]] = []
            agent.on("data", lambda m: alerts.append(m["payload"]) if m.get("topic") == "quality.alert" else None)
            try:
                for client in (customer, agent):
                    await client.connect()
                    await client.publish([TestPatternTrack(320, 240, 15), ToneTrack()])
                await asyncio.sleep(3.0)
                turn.relay.set(up=Impairment(loss=0.1))
                await eventually(lambda: any(a["kind"] == "network_poor" for a in alerts), "the network alert", timeout=TIMEOUT)
                await asyncio.sleep(2.0)
            finally:
                for client in (customer, agent):
                    await client.leave()
                    await client.close()
            token = compliance_token(server)
            entry = await ready_entry(http, server, token)
            sid = entry["session_id"]
            async with http.get(f"{server.url}/v1/recordings/{sid}", headers={"Authorization": f"Bearer {token}"}) as response:
                detail = await response.json()
            assert any(f["name"] == "quality.json" and f["kind"] == "quality" for f in detail["files"]), detail["files"]

            page = await browser_context.new_page()
            console = page_console(page)
            await page.set_viewport_size({"width": 1400, "height": 1000})
            await log_in(page, server, "Auditor Zhao", "compliance")
            await page.locator(f'#results tbody tr[data-session="{sid}"]').click()
            await expect(page.locator("#detail")).to_have_attribute("data-session", sid)

            panel = page.locator("#quality-panel")
            await expect(panel).to_be_visible()
            await expect(panel).to_have_attribute("data-level", _pattern("fair|poor"))
            summary = page.locator("#quality-summary")
            await expect(summary.locator('[data-field="level"] .quality-badge')).to_have_attribute("data-level", _pattern("fair|poor"))
            await expect(summary.locator('[data-field="mos_min"]')).to_have_text(_number_pattern())
            assert int(await summary.locator('[data-field="alerts_raised"]').text_content() or "0") >= 1
            await expect(summary.locator('[data-field="tier_changes"]')).to_have_text(_pattern(r"\d+"))
            row = page.locator('#quality-participants tr[data-role="customer"]')
            await expect(row.locator('[data-field="who"]')).to_contain_text("Li Hua")
            await expect(row.locator('[data-field="mos"]')).to_have_text(_pattern(r"\d\.\d\d / \d\.\d\d"))
            await expect(row.locator('[data-field="loss_up"]')).to_have_text(_pattern(r"\d+\.\d% / \d+\.\d%"))
            await expect(row.locator('[data-field="rtt"]')).to_have_text(_pattern(r"\d+ ms|—"))
            await expect(row.locator('[data-field="freezes"]')).to_have_text(_pattern(r"\d+ \(\d+\.\d s\)"))
            await expect(page.locator('#quality-participants tr[data-role="agent"]')).to_have_count(1)
            await expect(page.locator('#quality-alert-list li[data-kind="network_poor"]').first).to_contain_text(ALERT_EN)

            # The alert is on the timeline as the page marks alerts, in words, and seeks there.
            marker = page.locator('#timeline-bar .marker[data-type="quality_alert"]').first
            await expect(marker).to_have_class(_pattern(r"\balert\b"))
            await expect(marker).to_have_attribute("aria-label", _pattern(ALERT_EN))
            await expect(page.locator('#event-list li[data-type="quality_alert"]').first).to_contain_text(ALERT_EN)
            await page.screenshot(path=str(SCREENSHOTS / "replay-quality.png"), full_page=True)
            await page.get_by_role("button", name="中文").click()
            await expect(page.locator("#quality-title")).to_have_text("通话质量")
            await expect(page.locator('#quality-alert-list li[data-kind="network_poor"]').first).to_contain_text(ALERT_ZH)
            assert not page_errors(console), console
        finally:
            await runner.cleanup()


def alert(participant_id: str, role: str, kind: str, severity: str, state: str = "raised", alert_id: str = "QA_test1",
          **values: Any) -> dict[str, Any]:
    """A `quality.alert` payload as the monitor sends it (teller/quality/alerts.py)."""
    return {
        "room": "", "session_id": "", "alert_id": alert_id, "kind": kind, "severity": severity, "state": state,
        "message": f"{role}'s {kind}", "suggestion": "audio_only" if kind == "network_poor" else None,
        "participant_id": participant_id, "identity": role, "role": role, "raised_at": 1.0,
        "cleared_at": 2.0 if state == "cleared" else None, "values": values,
    }


async def test_desk_and_customer_page_follow_the_servers_quality_messages_and_no_one_elses(
    server: Server, browser_context: Any, http: aiohttp.ClientSession
) -> None:
    """The pages' side of the contract, message by message: raised, escalated, cleared,
    a tier change and back; the customer hears only about itself; a participant who sends
    a quality topic itself is not believed."""
    customer = Page(await browser_context.new_page(), "customer")
    cpage = customer.page
    await cpage.goto(f"{server.url}/customer?lang=en")
    await cpage.get_by_label("Your name").fill("Farmer Li")
    await cpage.get_by_role("button", name="Transfer", exact=True).click()
    queued = await customer.wait(lambda s: s["phase"] == "waiting" and s["published"], "queueing and publishing")
    call_id, customer_pid = queued["callId"], queued["participantId"]
    desk = await desk_takes_the_call(browser_context, server, call_id)
    page = desk.page
    joined = await customer.wait(lambda s: s["phase"] == "call" and s["agentParticipantId"], "meeting the agent")
    desk_pid = joined["agentParticipantId"]
    room_name = (await rest(http, server, "GET", f"/v1/calls/{call_id}", supervisor(server)))["room"]
    room = server.node.rooms[room_name]
    everyone = [customer_pid, desk_pid]

    # A participant cannot raise an alert: the agent's own "quality.alert" reaches the
    # customer page, which ignores it (only the server's messages count).
    room.send_data(room.participants[desk_pid], alert(customer_pid, "customer", "network_poor", "critical", alert_id="QA_fake"),
                   "quality.alert", [customer_pid])
    room.send_data(room.participants[desk_pid], {"participant_id": customer_pid, "from": "full", "to": "audio_only",
                                                 "reason": "loss", "loss": 0.5}, "quality.tier", [customer_pid])

    # Raised: a warning banner on the desk, a gentle notice on the customer page.
    room.send_data(None, alert(customer_pid, "customer", "network_poor", "warning", loss=0.05), "quality.alert", everyone)
    banner = page.locator('#quality-alerts .quality-alert[data-alert-id="QA_test1"]')
    await expect(banner).to_have_text("Warning: Customer's network is poor: suggest audio only")
    await expect(banner).to_have_attribute("data-severity", "warning")
    await expect(cpage.locator("#network-notice")).to_be_visible()
    stats = await customer.stats()
    assert stats["quality"]["alerts"] == [{"alert_id": "QA_test1", "kind": "network_poor"}], stats
    assert not stats["quality"]["audioOnly"], stats

    # Escalated: the same banner, now critical; still one.
    room.send_data(None, alert(customer_pid, "customer", "network_poor", "critical", loss=0.12), "quality.alert", everyone)
    await expect(banner).to_have_attribute("data-severity", "critical")
    await expect(banner).to_have_text("Critical: Customer's network is poor: suggest audio only")
    await expect(page.locator("#quality-alerts .quality-alert")).to_have_count(1)

    # About the agent itself, to staff only: in the agent's own words, with the figure.
    room.send_data(None, alert(desk_pid, "agent", "high_latency", "warning", alert_id="QA_test2", rtt_ms=452.4),
                   "quality.alert", [desk_pid])
    own = page.locator('#quality-alerts .quality-alert[data-alert-id="QA_test2"]')
    await expect(own).to_have_text("Warning: Your connection is slow (round trip 452 ms): pause between turns")
    # Critical first.
    await expect(page.locator("#quality-alerts .quality-alert").first).to_have_attribute("data-alert-id", "QA_test1")

    # The customer's video goes to audio only, then comes back a rung.
    room.send_data(None, {"participant_id": customer_pid, "from": "low", "to": "audio_only", "reason": "loss", "loss": 0.3},
                   "quality.tier", everyone)
    await expect(cpage.locator("#audio-only-notice")).to_be_visible()
    await expect(cpage.locator("#audio-only-notice")).to_have_text("The video is paused to keep the voice clear.")
    await page.get_by_role("button", name="中文").click()
    await expect(banner).to_have_text("【严重】客户网络较差：建议改为纯语音")
    await expect(own).to_have_text("【注意】您的网络延迟较高（往返 452 毫秒）：请在对话间稍作停顿")
    await page.get_by_role("button", name="English").click()
    await cpage.get_by_role("button", name="中文").click()
    await expect(cpage.locator("#network-notice")).to_have_text("您的网络信号较弱，画面可能会暂停。")
    await cpage.get_by_role("button", name="English").click()

    # Cleared and recovered: all gone.
    room.send_data(None, alert(customer_pid, "customer", "network_poor", "critical", state="cleared"), "quality.alert", everyone)
    await expect(banner).to_have_count(0)
    await expect(cpage.locator("#network-notice")).to_be_hidden()
    await expect(cpage.locator("#audio-only-notice")).to_be_visible()
    room.send_data(None, {"participant_id": customer_pid, "from": "audio_only", "to": "low", "reason": "recovered", "loss": 0.0},
                   "quality.tier", everyone)
    await expect(cpage.locator("#audio-only-notice")).to_be_hidden()
    await expect(own).to_be_visible()
    room.send_data(None, alert(desk_pid, "agent", "high_latency", "warning", state="cleared", alert_id="QA_test2"),
                   "quality.alert", [desk_pid])
    await expect(page.locator("#quality-alerts .quality-alert")).to_have_count(0)
    assert (await desk.stats())["quality"]["alerts"] == []
    for p in (customer, desk):
        assert not p.errors(), (p.name, p.console)


def _pattern(regex: str) -> Any:
    import re

    return re.compile(regex)


def _number_pattern() -> Any:
    return _pattern(r"^\d(\.\d+)?$")
