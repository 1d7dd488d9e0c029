"""Speech through real sessions: piper speaks into a room, the ASR stage transcribes it.

Real models (Whisper base from PyPI, the piper voice from PyPI), real peer
connections through the SFU. Latencies are measured by loadtests/bench_speech.py;
here only behaviour is asserted.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from teller.client import RoomClient, SpeechTrack, TestPatternTrack
from teller.signaling.keys import STORE

from .conftest import Server, start_in_process, wait_until
from .test_contact_rest import agent_token, customer_token, register
from .test_rest import call

pytest.importorskip("faster_whisper")
pytest.importorskip("piper")

pytestmark = pytest.mark.media

SENTENCE = "The weather in the village is sunny and the harvest will be good this year."
FRAUD = "He told me to move all my money to a safe account today."


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref = re.findall(r"[a-z0-9']+", reference.lower())
    hyp = re.findall(r"[a-z0-9']+", hypothesis.lower())
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / max(1, len(ref))


@pytest.fixture
async def asr_server(tmp_path: Path) -> AsyncIterator[Server]:
    srv, runner = await start_in_process(tmp_path, stages={"enabled": ["asr"]}, speech={"asr_language": "en"})
    try:
        from teller.speech.service import HUB

        hub = srv.app[HUB]
        await wait_until(lambda: hub._engine is not None and hub._engine.ready, timeout=60)
        yield srv
    finally:
        await runner.cleanup()


def data_of(client: RoomClient, topic: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    client.on("data", lambda m: got.append({**m["payload"], "_at": time.time()}) if m.get("topic") == topic else None)
    return got


async def test_piper_speech_is_transcribed_live_with_a_low_word_error_rate(asr_server: Server, voice: Any, clients: list[RoomClient]) -> None:
    customer = RoomClient(asr_server.url, asr_server.token("speech-1", "customer", name="Li"))
    agent = RoomClient(asr_server.url, asr_server.token("speech-1", "agent", name="Wang"))
    clients += [customer, agent]
    await agent.connect()
    captions = data_of(agent, "speech.caption")
    await customer.connect()
    mic = SpeechTrack()
    publication = await customer.publish([mic])
    await publication.wait_connected()
    await asyncio.sleep(0.5)
    ended = await mic.say(await voice(SENTENCE))
    await wait_until(lambda: any(c["final"] for c in captions), timeout=30)
    finals = [c for c in captions if c["final"]]
    text = " ".join(c["text"] for c in finals)
    assert word_error_rate(SENTENCE, text) <= 0.15, text
    assert {c["role"] for c in finals} == {"customer"} and finals[0]["participant_id"] == customer.participant_id
    assert finals[-1]["end"] <= ended + 1.0  # the line's times are the speech's, not the decode's
    # Partials may come first, for the same piece, never after its final.
    seq = finals[0]["seq"]
    assert all(not c["final"] for c in captions[: captions.index(finals[0])] if c["seq"] == seq)

    # The live transcript (any signalling process reads it from the state store).
    async with aiohttp.ClientSession() as http:
        await wait_until(lambda: bool(asr_server.app[STORE]), timeout=1)
        for _ in range(40):
            status, body = await call(http, asr_server, "GET", "/v1/rooms/speech-1/transcript",
                                      token=asr_server.token("speech-1", "agent"))
            if body.get("lines"):
                break
            await asyncio.sleep(0.1)
        assert status == 200 and word_error_rate(SENTENCE, " ".join(x["text"] for x in body["lines"])) <= 0.15
        status, body = await call(http, asr_server, "GET", "/v1/rooms/speech-1/transcript",
                                  token=asr_server.token("speech-1", "customer"))
        assert status == 403 and body["error"]["code"] == "role_forbidden"


async def test_a_coached_customer_raises_a_fraud_alert_for_the_agent_only(asr_server: Server, voice: Any, clients: list[RoomClient]) -> None:
    customer = RoomClient(asr_server.url, asr_server.token("speech-2", "customer", name="Li"))
    agent = RoomClient(asr_server.url, asr_server.token("speech-2", "agent", name="Wang"))
    clients += [customer, agent]
    await agent.connect()
    await customer.connect()
    alerts, customer_alerts = data_of(agent, "speech.risk"), data_of(customer, "speech.risk")
    mic = SpeechTrack()
    await (await customer.publish([mic])).wait_connected()
    await asyncio.sleep(0.5)
    await mic.say(await voice(FRAUD))
    await wait_until(lambda: bool(alerts), timeout=30)
    alert = alerts[0]
    assert alert["category"] == "fraud_coaching" and alert["severity"] == "critical"
    assert "safe account" in alert["phrase"].lower() and alert["role"] == "customer"
    assert alert["advice"]["en"] and alert["advice"]["zh"]
    await asyncio.sleep(0.5)
    assert customer_alerts == []  # the customer is never told what the agent is warned about
    from teller.speech.service import HUB

    assert asr_server.app[HUB].room_doc(asr_server.node.rooms["speech-2"])["risk_summary"]["hits"] == 1


@pytest.fixture
async def prompt_server(tmp_path: Path) -> AsyncIterator[Server]:
    srv, runner = await start_in_process(tmp_path, speech={"prompt_on_answer": True, "prompt_delay_s": 0.3})
    try:
        yield srv
    finally:
        await runner.cleanup()


async def _call_events(server: Server, call_id: str, want: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    store = server.app[STORE]
    await wait_until(lambda: True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = await store.read_events(call_id)
        if any(e["type"] == want for e in events):
            return events
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {want} in {[e['type'] for e in await store.read_events(call_id)]}")


async def test_the_risk_prompt_plays_on_answer_and_the_reminder_before_the_end(
    prompt_server: Server, clients: list[RoomClient]
) -> None:
    server = prompt_server
    async with aiohttp.ClientSession() as http:
        cust = customer_token(server, "li")
        status, queued = await call(http, server, "POST", "/v1/calls", token=cust,
                                    json={"business": "loan_consultation", "language": "en"})
        assert status == 201
        call_id, room = queued["call_id"], queued["room"]
        customer = RoomClient(server.url, cust)
        clients.append(customer)
        await customer.connect()
        await (await customer.publish([SpeechTrack()])).wait_connected()

        await register(http, server, "ag-1", {"loans": 3})
        ag = agent_token(server, "ag-1")
        await call(http, server, "POST", "/v1/agents/me/state", token=ag, json={"state": "available"})
        status, accepted = await call(http, server, "POST", f"/v1/calls/{call_id}/accept", token=ag)
        assert status == 200
        agent = RoomClient(server.url, accepted["token"])
        clients.append(agent)
        await agent.connect()
        await agent.publish([TestPatternTrack(160, 120, 10)], data_channel=True)
        played = data_of(customer, "speech.tts")

        # The voice joins as a "service" participant and the customer hears it.
        await wait_until(lambda: any(p.get("role") == "service" and p.get("tracks") for p in customer.participants.values()), timeout=15)
        voice_id = next(p["participant_id"] for p in customer.participants.values() if p.get("role") == "service")
        heard = await customer.subscribe(voice_id)
        loud = 0
        events = await _call_events(server, call_id, "tts_played")
        prompt = next(e for e in events if e["type"] == "tts_played")
        assert prompt["kind"] == "risk_prompt" and prompt["language"] == "en" and prompt["duration_s"] > 1
        assert [e["type"] for e in events].index("call_answered") < [e["type"] for e in events].index("tts_played")
        # The event is stored as the voice finishes; the customer's copy travels a data channel.
        await wait_until(lambda: [p["state"] for p in played if p["kind"] == "risk_prompt"][-1:] == ["finished"], timeout=10)

        # Bad requests change nothing, and the call beside them goes on.
        say = f"/v1/rooms/{room}/speech/say"
        for body, want_status, code in [
            ({"script": "sermon"}, 400, "invalid_message"),
            ({"script": "identity_question", "index": 99}, 400, "invalid_message"),
            ({"text": "x" * 5000, "language": "en"}, 400, "text_too_long"),
            ({"text": "你好", "language": "zh"}, 409, "tts_unavailable"),
            ({"text": 5}, 400, "invalid_message"),
        ]:
            status, body_out = await call(http, server, "POST", say, token=ag, json=body)
            assert (status, body_out["error"]["code"]) == (want_status, code), body_out
        status, body_out = await call(http, server, "POST", say, token=cust, json={"text": "hi", "language": "en"})
        assert (status, body_out["error"]["code"]) == (403, "role_forbidden")
        status, body_out = await call(http, server, "POST", "/v1/rooms/nowhere/speech/say", token=ag, json={"text": "hi", "language": "en"})
        assert status == 403
        # An agent plays a script line on demand.
        status, line = await call(http, server, "POST", say, token=ag, json={"script": "identity_question", "index": 0})
        assert status == 202 and line["kind"] == "identity_question" and line["language"] == "en"

        frames = 0
        while frames < 25:
            frame = await asyncio.wait_for(heard.track("audio").recv(), 10)
            frames += 1
            loud += int(np.abs(frame.to_ndarray()).max() > 500)
        assert loud > 0  # the customer really hears the voice

        # Hanging up plays the reminder first, then ends the call.
        status, ended = await call(http, server, "POST", f"/v1/calls/{call_id}/finish", token=ag)
        assert status == 200 and ended["state"] == "ended" and ended["reminder"]["played"] is True
        assert ended["reminder"]["text"].startswith("Anyone asking")  # the business's English reminder
        events = await _call_events(server, call_id, "call_ended")
        kinds = [(e["type"], e.get("kind")) for e in events]
        assert kinds.index(("tts_played", "anti_fraud")) < kinds.index(("call_ended", None))
        assert kinds.index(("tts_played", "risk_prompt")) < kinds.index(("tts_played", "identity_question")) < kinds.index(("tts_played", "anti_fraud"))
        status, again = await call(http, server, "POST", f"/v1/calls/{call_id}/finish", token=ag)
        assert (status, again["error"]["code"]) == (409, "call_not_connected")


async def test_asr_on_four_speakers_leaves_forwarding_untouched(asr_server: Server, voice: Any, clients: list[RoomClient]) -> None:
    """Four microphones transcribed at once while their cameras are forwarded: every
    video frame still reaches its subscriber; the decodes run beside, not in front."""
    from teller.speech.service import HUB

    hub = asr_server.app[HUB]
    speech = np.concatenate([await voice(SENTENCE), np.zeros(9600, np.int16), await voice(FRAUD), np.zeros(9600, np.int16)])
    pairs = []
    for i in range(4):
        room = f"load-{i}"
        speaker = RoomClient(asr_server.url, asr_server.token(room, "customer", name=f"c{i}"))
        viewer = RoomClient(asr_server.url, asr_server.token(room, "agent", name=f"a{i}"))
        clients += [speaker, viewer]
        await speaker.connect()
        await viewer.connect()
        mic, camera = SpeechTrack(), TestPatternTrack(160, 120, 15)
        await (await speaker.publish([mic, camera])).wait_connected()
        subscription = await viewer.subscribe(speaker.participant_id)
        pairs.append((mic, camera, subscription))
    received = [0] * 4

    async def count(i: int, track: Any) -> None:
        while True:
            await track.recv()
            received[i] += 1

    counters = [asyncio.ensure_future(count(i, sub.track("video"))) for i, (_, _, sub) in enumerate(pairs)]
    try:
        await wait_until(lambda: all(received), timeout=15)
        finals_before = hub.engine.stats.finals
        sent_before = [camera.frames_sent for _, camera, _ in pairs]
        got_before = list(received)
        for mic, _, _ in pairs:
            mic.say(speech)
        await asyncio.sleep(len(speech) / 48000)
        # Until every speaker's pieces are decoded: the whole time the decoders are busy.
        await wait_until(lambda: hub.engine.stats.finals >= finals_before + 4 and not hub.engine.backlog_s, timeout=90)
        sent = [camera.frames_sent - s for (_, camera, _), s in zip(pairs, sent_before, strict=True)]
        got = [r - g for r, g in zip(received, got_before, strict=True)]
    finally:
        for task in counters:
            task.cancel()
    assert hub.engine.stats.finals > finals_before  # the stage really was decoding meanwhile
    for s, g in zip(sent, got, strict=True):
        assert g >= 0.97 * s, (sent, got)  # a frame or two in flight at either end


async def test_a_spoken_card_number_is_masked_everywhere_and_sealed(asr_server: Server, voice: Any, clients: list[RoomClient]) -> None:
    from teller.signaling.tokens import resolve_secret
    from teller.speech.seal import Sealer

    events: list[dict[str, Any]] = []
    asr_server.node.timeline_listeners.append(lambda room, e: events.append(e) if e["type"] == "transcript" else None)
    customer = RoomClient(asr_server.url, asr_server.token("speech-3", "customer", name="Li"))
    agent = RoomClient(asr_server.url, asr_server.token("speech-3", "agent", name="Wang"))
    clients += [customer, agent]
    await agent.connect()
    captions = data_of(agent, "speech.caption")
    await customer.connect()
    mic = SpeechTrack()
    await (await customer.publish([mic])).wait_connected()
    await asyncio.sleep(0.5)
    await mic.say(await voice("My card number is 6222 0212 3456 7890."))
    await wait_until(lambda: bool(events), timeout=30)
    await asyncio.sleep(1.5)
    shown = " ".join(c["text"] for c in captions)
    # A partial may show the first few digits of a number still being said; never nine.
    assert "[card ****" in shown and not re.search(r"(?:\d[,.\- ]?){9,}", shown), shown
    line = next(e for e in events if e.get("pii"))
    assert "[card ****" in line["text"]
    original = Sealer(resolve_secret(asr_server.config)).open(line["sealed"], asr_server.node.rooms["speech-3"].sid)
    assert len(re.sub(r"\D", "", original)) >= 13  # the digits are all there, sealed


async def test_synthesis_gives_wav_and_is_rate_limited_per_caller(prompt_server: Server) -> None:
    server = prompt_server
    cust, other = customer_token(server, "a"), customer_token(server, "b")
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(11):
            async with http.get(f"{server.url}/v1/speech/synthesize", params={"text": "Hello.", "lang": "en"},
                                headers={"Authorization": f"Bearer {cust}"}) as response:
                statuses.append(response.status)
                body = await response.read()
                if response.status == 200:
                    assert response.content_type == "audio/wav" and body[:4] == b"RIFF" and len(body) > 10_000
                else:
                    assert json.loads(body)["error"]["code"] == "rate_limited"
        assert statuses[:10] == [200] * 10 and statuses[10] == 429
        # Another caller is not held back by the first one's limit.
        async with http.get(f"{server.url}/v1/speech/synthesize", params={"text": "Hello.", "lang": "en"},
                            headers={"Authorization": f"Bearer {other}"}) as response:
            assert response.status == 200
        status, body = await call(http, server, "GET", "/v1/speech/synthesize?text=&lang=en", token=other)
        assert (status, body["error"]["code"]) == (400, "invalid_message")


async def test_the_voice_comes_back_after_its_room_was_closed(prompt_server: Server, clients: list[RoomClient]) -> None:
    server = prompt_server
    staff = server.token("voice-room", "agent", name="Kim")
    async with aiohttp.ClientSession() as http:
        for attempt in range(2):
            customer = RoomClient(server.url, server.token("voice-room", "customer", name="Li"), reconnect=False)
            clients.append(customer)
            await customer.connect()
            played = data_of(customer, "speech.tts")
            status, body = await call(http, server, "POST", "/v1/rooms/voice-room/speech/say", token=staff,
                                      json={"text": f"Attempt {attempt}.", "language": "en"})
            assert status == 202, body
            await wait_until(lambda: any(p["state"] == "finished" for p in played), timeout=20)
            # The room is closed under the voice (an operator, or the empty-room timer).
            status, _ = await call(http, server, "DELETE", "/v1/rooms/voice-room", token=server.admin_token())
            assert status == 200
            await wait_until(lambda: customer.closed.is_set(), timeout=10)
