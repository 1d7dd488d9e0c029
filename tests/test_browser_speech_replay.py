"""Speech on the supervisor wallboard and the compliance replay page, in headless Chromium.

A real contact-centre call (the customer queues, an agent accepts, both publish camera and
microphone through the SFU) is recorded. While it runs, two final lines go through the
speech hub the way the ASR stage hands them over (`SpeechHub._on_result` with the
speaker's stream and a final chunk, teller/speech/hub.py): the customer reading out a card
number and repeating a fraudster's "safe account", then the agent. The hub masks them,
seals the original, sends captions and the risk alert to the room, writes `transcript` and
`fraud_risk` events into the session's timeline and the room's speech doc that
GET /v1/calls reads. The voice participant speaks a prompt into the session when the
server can synthesise English. The wallboard then shows the risk on the live session (and
sorts it first) and, while monitoring, the captions and the alert; once the recording is
finalised, the replay page shows the masked transcript with the risk marked, seeks the
player from a line, downloads the WebVTT, and reveals the card number to compliance only,
audited.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from teller.client import RoomClient, TestPatternTrack, ToneTrack
from teller.signaling.keys import STORE
from teller.speech.asr import Transcript
from teller.speech.hub import SpeakerStream
from teller.speech.service import HUB
from teller.speech.vad import RATE, Chunk

from .browser import (
    SCREENSHOTS,
    StatsPage,
    chromium_context,
    eventually,
    require_browser,
)
from .conftest import Server, start_in_process
from .test_browser_replay import (
    REPLAY_RECORDING,
    at,
    log_in,
    page_console,
    page_errors,
    player,
)
from .test_recording import compliance_token, get_json, ready_entry

playwright_api = require_browser(20_000)
expect = playwright_api.expect

pytestmark = pytest.mark.browser

TIMEOUT = 30.0
CARD = "4111 1111 1111 1111"
MASKED_CARD = "[card ****1111]"
CUSTOMER_SAYS = f"They told me to move my savings to a safe account, my card number is {CARD}"
AGENT_SAYS = "Please stop: the bank never asks you to move money to another account."
PROMPT = "This call is recorded. Never share your verification code with anyone."


def _contains(text: str) -> re.Pattern[str]:
    return re.compile(re.escape(text))


@pytest.fixture
async def browser_context() -> AsyncIterator[Any]:
    async with chromium_context() as context:
        yield context


async def rest(http: aiohttp.ClientSession, server: Server, method: str, path: str, token: str | None = None,
               json: Any = None, status: int | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, server.url + path, json=json, headers=headers) as response:
        body = await response.json()
        if status is None:
            assert response.status < 300, (method, path, response.status, body)
        else:
            assert response.status == status, (method, path, response.status, body)
        return body


async def connected_call(http: aiohttp.ClientSession, server: Server, customer: str, agent: str) -> tuple[dict[str, Any], str, str]:
    """A customer queues for a transfer and a (development) agent accepts it:
    (the call, the customer's token, the agent's token for the call's room)."""
    cust = server.issuer.issue(room=f"cust-{customer.lower().replace(' ', '-')}", role="customer",
                               subject=customer.lower().replace(" ", "-"), name=customer)
    queued = await rest(http, server, "POST", "/v1/calls", cust, {"business": "transfer", "language": "en"})
    desk = await rest(http, server, "POST", "/v1/dev/agent", None, {"name": agent})
    await rest(http, server, "POST", "/v1/agents/me/state", desk["token"], {"state": "available"})

    async def offered() -> bool:
        me = await rest(http, server, "GET", "/v1/agents/me", desk["token"])
        return me.get("offered_call") == queued["call_id"]

    await eventually(offered, f"the call of {customer} offered to {agent}")
    accepted = await rest(http, server, "POST", f"/v1/calls/{queued['call_id']}/accept", desk["token"])
    assert accepted["state"] == "connected", accepted
    return accepted, cust, accepted["token"]


def hear(server: Server, room: str, client: RoomClient, role: str, name: str, text: str, seq: int,
         spoke: tuple[float, float]) -> None:
    """One final line of `client`'s microphone, through the hub as the ASR stage hands it
    over: the speaker's stream (its clock started `spoke[1] + 0.3` s ago) and a final chunk
    from `spoke[0]` to `spoke[1]` seconds of its audio, decoded as `text`."""
    hub = server.app[HUB]  # type: ignore[index]
    participant = {"participant_id": client.participant_id, "role": role, "name": name}
    stream = SpeakerStream(hub, room, participant, "microphone")
    stream._t0 = time.time() - spoke[1] - 0.3  # the wall time of its first sample, as feed() sets it
    start, end = spoke
    chunk = Chunk(audio=np.zeros(int((end - start) * RATE), np.int16), start=start, end=end, seq=seq, final=True,
                  utterance_end=True)
    hub._on_result(stream, chunk, Transcript(text=text, language="en", language_probability=0.99, seconds=0.2))


async def test_wallboard_risk_and_replay_transcript_reveal(
    tmp_path: Path, browser_context: Any, http: aiohttp.ClientSession, clients: list[RoomClient]
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    server, runner = await start_in_process(tmp_path, recording=REPLAY_RECORDING, rooms={"empty_timeout_s": 0.5})
    try:
        # A quiet call (no media: no quality figures, no recording), then the one that will hear the risk.
        quiet, _, _ = await connected_call(http, server, "Zhou Min", "Agent Chen")
        call, cust_token, agent_token = await connected_call(http, server, "Li Hua", "Agent Wang")
        room = call["room"]
        customer = RoomClient(server.url, cust_token)
        agent = RoomClient(server.url, agent_token)
        clients += [customer, agent]
        for client, tone in ((customer, 440.0), (agent, 660.0)):
            await client.connect()
            await client.publish([TestPatternTrack(320, 240, 15), ToneTrack(tone)])
        session_started = time.time()

        # The voice speaks a prompt into the session, when this machine has an English voice.
        speech = await rest(http, server, "GET", "/v1/speech", agent_token)
        prompts = speech["tts"]["available"] and "en" in speech["tts"]["languages"]
        if prompts:
            said = await rest(http, server, "POST", f"/v1/rooms/{room}/speech/say", agent_token, {"text": PROMPT, "language": "en"})
            assert said["text"] == PROMPT, said

        # The wallboard, monitoring the call: no risk yet.
        wall = StatsPage(await browser_context.new_page(), "wallboard")
        wpage = wall.page
        await wpage.set_viewport_size({"width": 1400, "height": 1000})
        await wpage.goto(f"{server.url}/wallboard")
        row = wpage.locator(f'#live tbody tr[data-call-id="{call["call_id"]}"]')
        await expect(row).to_contain_text("Li Hua")
        await expect(row).to_have_attribute("data-risk", "none")
        await expect(row.locator('td[data-column="risk"] .risk-none')).to_have_attribute("aria-label", "No risk heard")
        await wall.wait(lambda s: set(s["live"]) == {quiet["call_id"], call["call_id"]}, "both calls listed")
        await row.locator("button.monitor").click()
        await wall.wait(lambda s: s["monitor"] and s["monitor"]["joined"], "monitoring the call")

        # The customer says the card number and "safe account"; the agent answers (a few
        # seconds into the session, so that the lines have their own places in it).
        await asyncio.sleep(max(0.0, session_started + 4.0 - time.time()))
        hear(server, room, customer, "customer", "Li Hua", CUSTOMER_SAYS, 1, (0.2, 2.0))
        await asyncio.sleep(0.5)
        hear(server, room, agent, "agent", "Agent Wang", AGENT_SAYS, 1, (0.1, 1.6))
        last_line = time.time()

        # The live list: a critical fraud-risk badge with the phrase and the advice, the row first.
        risk = row.locator('td[data-column="risk"]')
        badge = risk.locator(".risk-badge")
        await expect(badge).to_have_attribute("data-kind", "fraud", timeout=TIMEOUT * 1000)
        await expect(badge).to_have_attribute("data-severity", "critical")
        await expect(badge).to_have_text("⚠ Fraud risk · 1")
        await expect(badge).to_have_attribute("aria-label", _contains("“safe account” (customer)"))
        await expect(badge).to_have_attribute("title", _contains("Banks never move money to a 'safe account'"))
        await expect(risk.locator(".risk-phrase")).to_have_text("“safe account”")
        await expect(row).to_have_attribute("data-risk", "critical")
        await expect(row).to_have_class(_contains("risk-critical"))
        board = await wall.wait(lambda s: s["order"][0] == call["call_id"], "the risky call sorted first")
        assert board["risk"][call["call_id"]] == {"hits": 1, "kind": "fraud", "severity": "critical", "phrase": "safe account"}, board
        assert board["risk"][quiet["call_id"]] is None, board

        # The monitor panel: the alert with its advice, the captions masked.
        alert = wpage.locator('#monitor-risks li[data-rule="safe_account"]')
        await expect(alert).to_have_attribute("data-severity", "critical")
        await expect(alert).to_contain_text("Banks never move money")
        captions = wpage.locator("#monitor-captions li.caption.final")
        await expect(captions).to_have_count(2)
        await expect(captions.first).to_contain_text(MASKED_CARD)
        await expect(captions.first).to_have_attribute("data-role", "customer")
        monitored = (await wall.stats())["monitor"]
        assert not any(CARD in text for text in monitored["captions"]), monitored
        assert [r["rule"] for r in monitored["risks"]] == ["safe_account"], monitored
        await wpage.screenshot(path=str(SCREENSHOTS / "wallboard-risk.png"), full_page=True)

        # In Chinese, the advice is the Chinese one.
        await wpage.get_by_role("button", name="中文").click()
        await expect(badge).to_have_attribute("title", _contains("银行从不要求"))
        await expect(badge).to_contain_text("诈骗风险")
        await wpage.get_by_role("button", name="English").click()

        if prompts:
            async def prompt_played() -> bool:
                return any(e.get("type") == "tts_played" for e in await server.app[STORE].read_events(call["call_id"]))  # type: ignore[index]

            await eventually(prompt_played, "the prompt played into the session", timeout=60)
        # Long enough for a composite with a picture at every line to seek to.
        await asyncio.sleep(max(0.0, session_started + 6.0 - time.time(), last_line + 3.0 - time.time()))
        await wpage.locator("#monitor-stop").click()
        await expect(wpage.locator("#monitor")).to_be_hidden()
        assert not wall.errors(), wall.console
        await wpage.close()
        await rest(http, server, "DELETE", f"/v1/calls/{call['call_id']}", agent_token)
        for client in (customer, agent):
            await client.leave()

        # -- The recording ------------------------------------------------------------------
        compliance = compliance_token(server)
        entry = await ready_entry(http, server, compliance)
        sid = entry["session_id"]
        assert "risk_keyword" in entry["flags"], entry
        status, transcript = await get_json(http, f"{server.url}/v1/recordings/{sid}/transcript", compliance)
        assert status == 200, transcript
        lines = transcript["lines"]
        assert [line["role"] for line in lines] == ["customer", "agent"], lines
        assert 0 < lines[0]["start_s"] < lines[1]["start_s"] < entry["duration_s"], (lines, entry)
        assert lines[0]["pii"] is True and MASKED_CARD in lines[0]["text"] and CARD not in str(transcript), lines
        assert all("sealed" not in line and "revealed" not in line for line in lines), lines
        assert [(r["rule"], r["category"]) for r in transcript["risk"]] == [("safe_account", "fraud_coaching")], transcript
        assert bool(transcript["played"]) == prompts, transcript
        # The sealed originals open only through the reveal: not as a file, not in the export,
        # not in the timeline (whose transcript lines are there, masked).
        status, refused = await get_json(http, f"{server.url}/v1/recordings/{sid}/files/sealed/transcript.json", compliance)
        assert (status, refused["error"]["code"]) == (403, "sealed_file"), refused
        status, timeline = await get_json(http, f"{server.url}/v1/recordings/{sid}/timeline", compliance)
        assert status == 200 and all("sealed" not in e for e in timeline["events"])
        assert any(e["type"] == "transcript" and e.get("pii") for e in timeline["events"])
        async with http.get(f"{server.url}/v1/recordings/{sid}/export", headers={"Authorization": f"Bearer {compliance}"}) as r:
            names = zipfile.ZipFile(io.BytesIO(await r.read())).namelist()
        assert f"{sid}/transcript.json" in names and not any("/sealed/" in n for n in names), names

        page = await browser_context.new_page()
        await page.set_viewport_size({"width": 1400, "height": 1100})
        console = page_console(page)
        await log_in(page, server, "Auditor Zhao", "compliance")

        # The search filters by the risk flag: the session has it.
        await page.locator('#f-flags input[value="risk_keyword"]').check()
        await page.click("#search-btn")
        result = page.locator(f'#results tbody tr[data-session="{sid}"]')
        await expect(result.locator(".badge.flag-risk_keyword")).to_be_visible()
        await result.click()
        await expect(page.locator("#detail")).to_have_attribute("data-session", sid)

        # The transcript: the lines in order, masked, with time, speaker and the risk marked.
        panel = page.locator("#transcript-panel")
        await expect(panel).to_have_attribute("data-state", "ok")
        items = page.locator("#transcript li.line")
        await expect(items).to_have_count(2)
        first, second = items.nth(0), items.nth(1)
        await expect(first).to_contain_text(MASKED_CARD)
        await expect(first).not_to_contain_text(CARD)
        await expect(first.locator(".speaker")).to_have_text("Li Hua (customer): ")
        await expect(first).to_have_attribute("data-pii", "true")
        await expect(first.locator(".pii")).to_have_attribute("aria-label", "Personal data masked")
        await expect(first).to_have_class(_contains("risk"))
        hit = first.locator('.risk-badge[data-category="fraud_coaching"]')
        await expect(hit).to_have_attribute("data-severity", "critical")
        await expect(hit).to_contain_text("Fraud risk: “safe account” (customer)")
        await expect(second.locator(".speaker")).to_have_text("Agent Wang (agent): ")
        await expect(second).to_have_attribute("data-pii", "false")
        await expect(second.locator(".risk-badge")).to_have_count(0)
        stamp = f"{int(lines[1]['start_s']) // 60:02d}:{int(lines[1]['start_s']) % 60:02d}"
        await expect(second.locator(".cue-at")).to_have_text(stamp)
        # The risk on the timeline too, red; the transcript lines are not on the bar.
        marker = page.locator('#timeline-bar .marker[data-type="fraud_risk"]')
        await expect(marker).to_have_count(1)
        await expect(marker).to_have_class(_contains("risk"))
        await expect(marker).to_have_attribute("aria-label", _contains("“safe account”"))
        await expect(page.locator('#timeline-bar .marker[data-type="transcript"]')).to_have_count(0)
        if prompts:
            played = page.locator("#transcript li.played")
            await expect(played).to_have_count(1)
            await expect(played).to_contain_text(PROMPT)
            await expect(page.locator('#timeline-bar .marker[data-type="tts_played"]')).to_have_count(1)

        # A click on a line seeks the player to it, and that line is the current one.
        await expect(page.locator("#source")).to_have_value("composite.mp4")

        async def loaded() -> bool:
            return (await player(page))["readyState"] >= 1

        await eventually(loaded, "the composite loaded", describe=lambda: player(page))
        offset = (await player(page))["offset"] or 0
        for line, item in ((lines[1], second), (lines[0], first)):
            await item.locator(".text").click()
            target = max(0.0, line["start_s"] - offset)
            await eventually(lambda target=target: at(page, target), f"the line at {line['start_s']} seeking to {target}",
                             describe=lambda: player(page))
            await expect(item).to_have_class(_contains("current"))
            await expect(item).to_have_attribute("aria-current", "true")
        await page.screenshot(path=str(SCREENSHOTS / "replay-transcript.png"), full_page=True)

        # The WebVTT, with the page's token: masked captions.
        vtt = page.locator("#transcript-vtt")
        await expect(vtt).to_be_visible()
        async with page.expect_download() as download_info:
            await vtt.click()
        download = await download_info.value
        text = Path(await download.path()).read_text("utf-8")
        assert text.startswith("WEBVTT"), text[:80]
        assert MASKED_CARD in text and CARD not in text and "<v Customer>" in text, text

        # Reveal: a reason in a form, the card number shown, the audit noted.
        reveal = page.locator("#reveal-open")
        await expect(reveal).to_have_text("Reveal personal data")
        await reveal.click()
        form = page.locator("#reveal-form")
        await expect(form).to_be_visible()
        await expect(form).to_contain_text("This reveal is written to the audit log.")
        await expect(page.locator("#reveal-reason")).to_be_focused()
        await page.fill("#reveal-reason", "Complaint 2026-204: disputed transfer")
        await page.click("#reveal-submit")
        revealed = first.locator("mark.revealed")
        await expect(revealed).to_contain_text(CARD)
        await expect(form).to_be_hidden()
        notice = page.locator("#reveal-notice")
        await expect(notice).to_contain_text("This reveal is written to the audit log.")
        await expect(notice).to_contain_text("Complaint 2026-204")
        await expect(second.locator("mark.revealed")).to_have_count(0)
        await expect(reveal).to_have_text("Hide personal data")
        await page.screenshot(path=str(SCREENSHOTS / "replay-transcript-revealed.png"), full_page=True)
        # Hiding masks it again, without asking the server.
        await reveal.click()
        await expect(first.locator("mark.revealed")).to_have_count(0)
        await expect(first).to_contain_text(MASKED_CARD)
        # In Chinese: the same transcript, the page's words translated.
        await page.get_by_role("button", name="中文").click()
        await expect(reveal).to_have_text("显示个人信息")
        await expect(hit).to_contain_text("诈骗风险：“safe account”（客户）")
        await expect(first.locator(".speaker")).to_have_text("Li Hua (客户)：")
        await page.get_by_role("button", name="English").click()
        await expect(reveal).to_have_text("Reveal personal data")
        assert not page_errors(console), console

        status, audit = await get_json(http, f"{server.url}/v1/audit", compliance, action="reveal", limit="50")
        assert status == 200, audit
        reveals = [e for e in audit["entries"] if e["target"] == sid]
        assert [(e["outcome"], e["name"], e["details"].get("reason"), e["details"].get("lines")) for e in reveals] == [
            ("ok", "Auditor Zhao", "Complaint 2026-204: disputed transfer", 1)], reveals

        # Not for a supervisor: no button on the page, and the server says 403 (audited as denied).
        supervisor = compliance_token(server, role="supervisor", name="Supervisor Chen")
        body = await rest(http, server, "POST", f"/v1/recordings/{sid}/transcript/reveal", supervisor,
                          {"reason": "curious"}, status=403)
        assert body["error"]["code"] == "role_forbidden", body
        body = await rest(http, server, "POST", f"/v1/recordings/{sid}/transcript/reveal", compliance,
                          {"reason": " "}, status=400)
        assert body["error"]["code"] == "reason_required", body
        sup = await browser_context.new_page()
        sup_console = page_console(sup)
        await log_in(sup, server, "Supervisor Chen", "supervisor")
        await sup.locator(f'#results tbody tr[data-session="{sid}"]').click()
        await expect(sup.locator("#transcript li.line")).to_have_count(2)
        await expect(sup.locator("#transcript-vtt")).to_be_visible()
        await expect(sup.locator("#reveal-open")).to_be_hidden()
        assert not page_errors(sup_console), sup_console
        status, audit = await get_json(http, f"{server.url}/v1/audit", compliance, action="reveal", limit="50")
        denied = [e for e in audit["entries"] if e["outcome"] == "denied"]
        assert [(e["role"], e["details"].get("code")) for e in denied] == [("supervisor", "role_forbidden")], denied
    finally:
        await runner.cleanup()
