"""Speech on the pages, in headless Chromium (docs/speech.md): a whole English call.

The customer page queues, the agent desk accepts. The customer speaks into its (real)
microphone track: piper's voice, fetched from /v1/speech/synthesize and played into a
WebAudio stream that stands in for the microphone. The ASR stage transcribes it: the
desk shows the final caption; a fraud-coaching phrase raises the risk banner (English,
then Chinese). "Play to customer" on the risk prompt makes the room's voice participant
speak it: the desk lists it as played, the customer page hears the voice (no tile) and
shows the prompt to read along. Hanging up plays the anti-fraud reminder, then ends the
call: the desk reaches wrap-up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from .browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, StatsPage, require_browser
from .conftest import Server, start_in_process, wait_until

playwright_api = require_browser(20_000)
expect = playwright_api.expect
pytest.importorskip("faster_whisper")
pytest.importorskip("piper")

pytestmark = pytest.mark.browser

TIMEOUT = 30.0
EXPECT_MS = int(TIMEOUT * 1000)
SENTENCE = "The weather in the village is sunny and the harvest will be good this year."


def heard_sentence(text: str) -> bool:
    """The sentence, as Whisper base hears it through Chromium's audio processing: most
    of its words (it once wrote "hardest" for "harvest"), "village" always."""
    words = text.lower()
    return "village" in words and sum(w in words for w in ("weather", "sunny", "harvest", "good", "year")) >= 3
FRAUD = "Please move your money to a safe account."
ADVICE_EN = "Banks never move money to a 'safe account'."
ADVICE_ZH = "银行从不要求把钱转到“安全账户”。"

# Both pages get a microphone that is silent until the test makes it speak: a WebAudio
# stream in place of the fake device's beeps (which the ASR would try to transcribe).
# `window.__say(text)` plays piper's voice of `text` (the page's own token fetches it)
# into that stream and resolves when it has been played.
MICROPHONE_SCRIPT = """(() => {
  const devices = navigator.mediaDevices;
  const native = devices.getUserMedia.bind(devices);
  let mic = null;
  devices.getUserMedia = async (constraints) => {
    const stream = await native(constraints);
    if (!constraints || !constraints.audio) return stream;
    const ctx = new AudioContext({ sampleRate: 48000 });
    const destination = ctx.createMediaStreamDestination();
    mic = { ctx, destination };
    for (const track of stream.getAudioTracks()) { stream.removeTrack(track); track.stop(); }
    stream.addTrack(destination.stream.getAudioTracks()[0]);
    return stream;
  };
  window.__say = async (text) => {
    if (!mic) throw new Error("no microphone yet");
    await mic.ctx.resume();
    const query = new URLSearchParams({ text, lang: "en" });
    const response = await fetch(`/v1/speech/synthesize?${query}`, {
      headers: { Authorization: `Bearer ${window.teller.state.token}` } });
    if (!response.ok) throw new Error(`synthesize: ${response.status}`);
    const buffer = await mic.ctx.decodeAudioData(await response.arrayBuffer());
    const source = mic.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(mic.destination);
    await new Promise((resolve) => { source.onended = resolve; source.start(); });
    return buffer.duration;
  };
})();"""


@asynccontextmanager
async def speech_browser() -> AsyncIterator[Any]:
    """A context with the fake camera allowed, audio that plays without a gesture, and the
    test's microphone on every page."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"])
        try:
            context = await browser.new_context(permissions=["camera", "microphone"])
            await context.add_init_script(MICROPHONE_SCRIPT)
            yield context
            await context.close()
        finally:
            await browser.close()


@pytest.fixture
async def asr_server(tmp_path: Path) -> AsyncIterator[Server]:
    srv, runner = await start_in_process(tmp_path, stages={"enabled": ["asr"]}, speech={"asr_language": "en"})
    try:
        from teller.speech.service import HUB

        hub = srv.app[HUB]
        await wait_until(lambda: hub._engine is not None and hub._engine.ready, timeout=90)
        yield srv
    finally:
        await runner.cleanup()


Page = StatsPage


def customer_captions(stats: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in stats["speech"]["captions"] if c["role"] == "customer"]


async def test_captions_risk_alert_prompts_and_the_reminder_on_the_pages(asr_server: Server) -> None:
    server = asr_server
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with speech_browser() as context:
        # -- The customer (large text) queues for a transfer in English; the desk accepts --------
        customer = Page(await context.new_page(), "customer")
        cpage = customer.page
        await cpage.set_viewport_size({"width": 1100, "height": 900})
        await cpage.goto(f"{server.url}/customer?lang=en&large=1")
        await cpage.get_by_label("Your name").fill("Farmer Li")
        # "Read aloud": before the call the page speaks by itself (the server's synthesis once it
        # has a token, else the browser's voice); in the call the server's voice says it.
        await cpage.get_by_role("button", name="Read aloud").click()
        await cpage.get_by_role("button", name="Transfer", exact=True).click()
        queued = await customer.wait(lambda s: s["phase"] == "waiting" and s["published"], "queueing and publishing")
        call_id, customer_pid = queued["callId"], queued["participantId"]
        await customer.wait(lambda s: any(x["how"] == "synthesize" for x in s["speech"]["spoken"]), "the queue place read aloud")

        desk = Page(await context.new_page(), "desk")
        dpage = desk.page
        await dpage.set_viewport_size({"width": 1280, "height": 1100})
        await dpage.goto(f"{server.url}/desk")
        await dpage.get_by_label("Your name").fill("Agent Kim")
        await dpage.get_by_role("button", name="Log in").click()
        await expect(dpage.locator("#agent-bar")).to_be_visible()
        await dpage.get_by_label("Set state").select_option("available")
        await dpage.get_by_role("button", name="Set", exact=True).click()
        await expect(dpage.locator("#incoming")).to_be_visible(timeout=EXPECT_MS)
        await dpage.get_by_role("button", name="Accept (A)").click()
        await desk.wait(lambda s: s["callId"] == call_id and s["callState"] == "connected", "taking the call")
        await customer.wait(lambda s: s["phase"] == "call" and s["agentParticipantId"], "seeing the agent")
        await desk.wait(lambda s: (s["speech"]["info"] or {}).get("tts", {}).get("available"), "the voice available")
        spoken = await customer.wait(lambda s: any(x["how"] == "broadcast" for x in s["speech"]["spoken"]), "a broadcast")
        assert spoken["speech"]["spoken"][0] == {"how": "browser", "text": "Read aloud"}, spoken["speech"]
        assert {"how": "broadcast", "text": "You are connected to an agent."} in spoken["speech"]["spoken"], spoken["speech"]
        # The agent hears it too: the voice plays it into the call.
        await expect(dpage.locator('#played-list .played[data-kind="broadcast"]')).to_have_count(1, timeout=EXPECT_MS)

        # -- A sentence the customer says: a final caption on the desk -------------------------
        await cpage.evaluate("(text) => window.__say(text)", SENTENCE)
        said = await desk.wait(lambda s: any(heard_sentence(c["text"]) for c in customer_captions(s)),
                               "the customer's sentence as a final caption", timeout=TIMEOUT)
        line = next(c for c in customer_captions(said) if heard_sentence(c["text"]))
        assert line["participant_id"] == customer_pid and line["name"] == "Farmer Li", line
        caption = dpage.locator('#caption-lines .caption[data-role="customer"][data-final="true"]').filter(has_text="village")
        await expect(caption).to_have_count(1)
        await expect(caption.locator(".caption-who")).to_have_text("Customer · Farmer Li")
        await expect(caption.locator(".caption-time")).to_have_text(_pattern(r"\d\d:\d\d:\d\d"))
        await expect(dpage.locator("#captions-note")).to_have_text("")
        await dpage.screenshot(path=str(SCREENSHOTS / "desk-captions-en.png"), full_page=True)

        # -- A fraud-coaching phrase: the risk banner, in the desk's language -------------------
        await cpage.evaluate("(text) => window.__say(text)", FRAUD)
        banner = dpage.locator('#risk-alerts .risk-alert[data-category="fraud_coaching"]')
        try:
            await expect(banner).to_have_count(1, timeout=EXPECT_MS)
        except AssertionError as exc:  # say what the desk heard instead
            heard = [c["text"] for c in customer_captions(await desk.stats())]
            raise AssertionError(f"no fraud banner; the desk's captions: {heard}") from exc
        await expect(banner).to_have_attribute("role", "alert")
        await expect(banner).to_have_attribute("data-severity", "critical")
        await expect(banner).to_have_attribute("data-role", "customer")
        await expect(banner.locator(".risk-advice")).to_contain_text(ADVICE_EN)
        await expect(banner.locator(".risk-heard")).to_contain_text("The customer said:")
        await expect(banner.locator(".risk-heard")).to_contain_text("safe account")
        await expect(banner.locator(".risk-title")).to_have_text("Critical · Possible fraud coaching")
        # The caption line it was heard in is marked.
        await expect(dpage.locator('#caption-lines .caption[data-role="customer"][data-risk="critical"]')).not_to_have_count(0)
        risk = (await desk.stats())["speech"]["risks"][0]
        assert risk["participant_id"] == customer_pid and "safe account" in risk["phrase"].lower(), risk
        await dpage.screenshot(path=str(SCREENSHOTS / "desk-risk-alert-en.png"), full_page=True)
        await dpage.get_by_role("button", name="中文").click()
        await expect(banner.locator(".risk-advice")).to_contain_text(ADVICE_ZH)
        await expect(banner.locator(".risk-heard")).to_contain_text("客户说")
        await expect(dpage.locator("#captions-title")).to_have_text("实时字幕")
        await dpage.screenshot(path=str(SCREENSHOTS / "desk-risk-alert-zh.png"), full_page=True)
        await dpage.get_by_role("button", name="English").click()
        await expect(banner.locator(".risk-advice")).to_contain_text(ADVICE_EN)
        # The customer is never told; the banner stays until the agent dismisses it.
        assert await cpage.locator(".risk-alert").count() == 0
        await banner.get_by_role("button", name="Dismiss this risk alert").click()
        await expect(banner).to_have_count(0)

        # -- "Play to customer" on the risk prompt: the voice speaks it --------------------------
        risk_text = (await dpage.locator("#script-risk").text_content() or "").strip()
        assert risk_text.startswith("Make sure you know"), risk_text
        play = dpage.locator('#script button.play[data-script="risk_prompt"]')
        await expect(play).to_have_text("Play to customer")
        await expect(play).to_have_attribute("aria-disabled", "false")
        await play.click()
        played = dpage.locator('#played-list .played[data-kind="risk_prompt"]')
        await expect(played).to_have_count(1)
        await expect(played.locator(".played-text")).to_have_text(risk_text)
        # The customer page hears the voice (an <audio>, no tile) and shows the prompt big.
        prompt = cpage.locator('#prompt[data-kind="risk_prompt"]')
        await expect(prompt).to_be_visible(timeout=EXPECT_MS)
        await expect(cpage.locator("#prompt-text")).to_have_text(risk_text)
        await expect(cpage.locator("#prompt-heading")).to_have_text("Risk notice (please read along)")
        await expect(cpage.locator("#caption")).to_contain_text(risk_text)  # large text: the words under the video
        heard = await customer.wait(lambda s: s["speech"]["voices"] and s["speech"]["voiceAudio"] > 0, "playing the voice")
        assert heard["agentParticipantId"] not in heard["speech"]["voices"], heard
        await expect(cpage.locator("video")).to_have_count(2)  # the agent's and its own preview: no tile for the voice
        await cpage.screenshot(path=str(SCREENSHOTS / "customer-prompt-en.png"), full_page=True)
        await expect(played).to_have_attribute("data-state", "finished", timeout=EXPECT_MS)
        await expect(played.locator(".played-head")).to_contain_text("Risk prompt · played")
        await desk.wait(lambda s: s["speech"]["voiceAudio"] > 0, "the desk hearing the voice")
        await expect(dpage.locator("#others figure")).to_have_count(0)
        # The voice's words are a caption line of its own.
        await expect(dpage.locator('#caption-lines .caption[data-role="service"]').filter(has_text=risk_text)).to_have_count(1)

        # -- Hang up: the anti-fraud reminder plays, then the call ends ---------------------------
        hangup = dpage.get_by_role("button", name="Hang up (H)")
        await hangup.click()
        # While the reminder plays (seconds): said so, and no second hang-up.
        await expect(dpage.locator("#status")).to_have_text("Playing the anti-fraud reminder… the call ends after it.")
        await expect(hangup).to_be_disabled()
        await expect(dpage.locator("#wrapup")).to_be_visible(timeout=EXPECT_MS)
        ended = await desk.stats()
        assert ended["callState"] == "ended", ended
        assert ended["speech"]["reminder"]["played"] is True, ended["speech"]["reminder"]
        assert ended["speech"]["reminder"]["text"].startswith("Police and courts"), ended["speech"]["reminder"]
        assert any(p["kind"] == "anti_fraud" and p["state"] == "finished" for p in ended["speech"]["played"]), ended["speech"]
        await expect(dpage.locator("#hangup")).to_be_enabled()  # ready for the next call
        await customer.wait(lambda s: s["phase"] == "ended", "the customer page seeing the end")

        for page in (customer, desk):
            assert not page.errors(), (page.name, page.console)


def _pattern(text: str) -> Any:
    import re

    return re.compile(text)
