"""The digital assistant end to end in headless Chromium: the customer page asks it, sees
and hears its face, says "I want to talk to a person" (Chromium's fake microphone plays
piper's WAV of it), and is queued to a person; the agent desk shows the conversation the
assistant had and takes the call, and the assistant leaves.
"""

from __future__ import annotations

import wave
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from teller.config import load_config
from teller.speech.tts import TtsEngine

from .browser import SCREENSHOTS, StatsPage, chromium_context, require_browser
from .conftest import Server

playwright_api = require_browser(30_000)
expect = playwright_api.expect

pytest.importorskip("faster_whisper")
pytest.importorskip("piper")
pytest.importorskip("mediapipe")

pytestmark = [pytest.mark.browser, pytest.mark.media]

TIMEOUT = 45.0
RATE = 48000
# Before the words: time for the page to join and the assistant to start its greeting,
# which the words then interrupt.
LEAD_S = 6.0


@pytest.fixture
async def person_wav(tmp_path: Path) -> Path:
    """What the customer's microphone hears: silence, the request, silence."""
    engine = TtsEngine(load_config(env={}).speech)
    try:
        speech = np.concatenate([p async for p in engine.stream("I want to talk to a person.", "en")])
    finally:
        engine.close()
    pcm = np.concatenate([np.zeros(int(LEAD_S * RATE), np.int16), speech, np.zeros(30 * RATE, np.int16)])
    path = tmp_path / "person.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm.tobytes())
    return path


async def test_the_customer_talks_to_the_assistant_and_reaches_a_person(
    bot_server: Server, person_wav: Path, http: aiohttp.ClientSession,
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    supervisor = bot_server.issuer.issue(room="*", role="supervisor", subject="sup", name="Supervisor")
    args = [f"--use-file-for-fake-audio-capture={person_wav}%noloop"]
    async with chromium_context(extra_args=args) as customer_context, chromium_context() as desk_context:
        customer = StatsPage(await customer_context.new_page(), "customer", TIMEOUT)
        cpage = customer.page
        await cpage.set_viewport_size({"width": 1280, "height": 860})
        await cpage.goto(f"{bot_server.url}/customer?lang=en")
        await cpage.get_by_label("Your name").fill("Farmer Zhao")
        await cpage.get_by_role("button", name="Ask the digital assistant").click()

        # The assistant's face plays on the customer page, and its words show under it.
        seen = await customer.wait(
            lambda s: s["phase"] == "call" and s["callState"] == "bot" and s["botId"]
            and s["agentParticipantId"] == s["botId"] and s["decodedFrames"] > 30
            and s["remoteVideo"]["width"] == 640 and s["remoteVideo"]["height"] == 480,
            "the assistant's video playing")
        await expect(cpage.locator("#remote-name")).to_have_text("Digital assistant")
        await expect(cpage.locator("#status")).to_contain_text("digital assistant is with you")
        await expect(cpage.locator("#caption")).to_contain_text("digital assistant")
        call_id = seen["callId"]
        await customer.wait(lambda s: s["decodedFrames"] > seen["decodedFrames"] + 30, "more of the assistant's frames")
        await cpage.screenshot(path=str(SCREENSHOTS / "digital-human-customer.png"))

        # "I want to talk to a person": queued to a person, and told so.
        await customer.wait(lambda s: s["callState"] in ("queued", "ringing") and s["botStatus"],
                            "the handover to a person", timeout=TIMEOUT)
        await expect(cpage.locator("#bot-status")).to_contain_text("colleague")
        async with http.get(f"{bot_server.url}/v1/calls/{call_id}",
                            headers={"Authorization": f"Bearer {supervisor}"}) as response:
            record = await response.json()
        assert record["bot"]["handover"]["reason"] == "asked_for_person", record["bot"]
        assert record["skill"] == "service"

        # The agent desk: the offered call carries the assistant's conversation.
        desk = StatsPage(await desk_context.new_page(), "desk", TIMEOUT)
        dpage = desk.page
        await dpage.set_viewport_size({"width": 1280, "height": 900})
        await dpage.goto(f"{bot_server.url}/desk")
        await dpage.get_by_label("Your name").fill("Agent Sun")
        await dpage.get_by_role("button", name="Log in").click()
        await expect(dpage.locator("#agent-bar")).to_be_visible()
        await dpage.get_by_label("Set state").select_option("available")
        await dpage.get_by_role("button", name="Set", exact=True).click()
        await expect(dpage.locator("#incoming")).to_be_visible(timeout=TIMEOUT * 1000)
        notes = dpage.locator("#bot-notes")
        await expect(notes).to_be_visible()
        await expect(notes.locator("#bot-reason")).to_contain_text("asked for a person")
        await expect(notes.locator('li[data-who="customer"]')).to_contain_text("person")
        await expect(notes.locator('li[data-who="bot"]').first).to_contain_text("digital assistant")
        await dpage.screenshot(path=str(SCREENSHOTS / "digital-human-desk-handover.png"))
        await dpage.get_by_role("button", name="Accept (A)").click()
        await desk.wait(lambda s: s["callId"] == call_id and s["callState"] == "connected", "taking the call")
        await expect(notes).to_be_visible()  # still there to read during the call

        # The person replaces the assistant on the customer page.
        await customer.wait(lambda s: s["callState"] == "connected" and not s["botId"] and not s["botStatus"],
                            "the assistant leaving for the person")
        await expect(cpage.locator("#remote-name")).to_have_text("Agent Sun")
        await expect(cpage.locator("#status")).to_contain_text("connected to an agent")
        await customer.wait(lambda s: s["decodedFrames"] > 10, "the agent's video")
        assert not customer.errors() and not desk.errors(), (customer.errors(), desk.errors())
