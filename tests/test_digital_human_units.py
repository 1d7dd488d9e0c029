"""The digital human's parts without a network: the voice track's loudness lookup and
flush (what lip sync and barge-in stand on), the bot's dialogue with a fake room, fake
TTS and a fake answerer, the answering-service adapter against a small HTTP server,
and the hub's speech.activity."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from teller.config import DigitalHumanSettings
from teller.digital_human.answer import Answer, ChainAnswerer, HttpAnswerer
from teller.digital_human.bot import DigitalHuman
from teller.speech.voice import FRAME_S, FRAME_SAMPLES, VoiceTrack, loudness

# -- the voice track --------------------------------------------------------------------


def tone(seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * 48000)) / 48000
    return (np.sin(2 * np.pi * 220 * t) * amplitude * 32767).astype(np.int16)


def test_loudness_spans_speech_levels() -> None:
    assert loudness(np.zeros(960, np.int16)) == 0.0
    assert loudness(np.zeros(0, np.int16)) == 0.0
    assert loudness(tone(0.02, 0.5)) == 1.0
    quiet, loud = loudness(tone(0.02, 0.01)), loudness(tone(0.02, 0.1))
    assert 0.0 < quiet < loud < 1.0


async def test_the_voice_track_reads_loudness_ahead_and_behind() -> None:
    track = VoiceTrack()
    track.begin()
    track.push(np.concatenate([tone(0.2, 0.3), np.zeros(int(0.2 * 48000), np.int16), tone(0.2, 0.3)]))
    done = track.end()
    first = await track.recv()
    now = time.monotonic()
    assert first.samples == FRAME_SAMPLES
    # Ahead: the queue says what goes out when (a renderer draws a frame or two early).
    assert track.level_at(now + 0.05) > 0.5          # still the first tone
    assert track.level_at(now + 0.30) == 0.0          # the pause
    assert track.level_at(now + 0.50) > 0.5          # the second tone
    assert track.level_at(now + 1.00) == 0.0          # nothing queued that far
    # Behind: what was sent (the frame on the wire now), and nothing before it.
    assert track.level_at(now + 0.005) > 0.5
    assert track.level_at(now - 0.1) == 0.0
    pump = asyncio.ensure_future(_pump(track))
    await asyncio.wait_for(done.reached.wait(), 2)
    pump.cancel()
    assert not track.speaking
    assert track.level_at(time.monotonic() + 0.1) == 0.0
    track.stop()


async def _pump(track: VoiceTrack) -> None:
    while True:
        await track.recv()


async def test_flush_drops_the_queue_and_releases_its_marks() -> None:
    track = VoiceTrack()
    track.begin()
    track.push(tone(2.0, 0.3))
    done = track.end()
    await track.recv()
    assert track.speaking and track.level_at(time.monotonic() + 0.5) > 0.5
    track.flush()
    assert done.reached.is_set() and not track.speaking and track.flushes == 1
    assert track.level_at(time.monotonic() + 0.1) == 0.0
    # Idle again: the next recv waits for new speech instead of sending silence.
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.sleep(3 * FRAME_S)
    assert not waiting.done()
    track.begin()
    track.push(tone(0.1, 0.3))
    track.end()
    frame = await asyncio.wait_for(waiting, 1)
    assert np.abs(frame.to_ndarray()).max() > 1000
    track.stop()


# -- the bot, with a fake room ------------------------------------------------------------


class FakePublication:
    async def wait_connected(self, timeout: float = 10.0) -> None:
        return None


class FakeClient:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.listeners: dict[str, list[Any]] = {}
        self.participants = {"c1": {"participant_id": "c1", "role": "customer"}, "a1": {"participant_id": "a1", "role": "agent"}}
        self.closed = False

    def on(self, kind: str, callback: Any) -> None:
        self.listeners.setdefault(kind, []).append(callback)

    async def publish(self, tracks: list[Any], data_channel: bool = True) -> FakePublication:
        self.tracks = tracks
        return FakePublication()

    async def send_data(self, payload: Any, *, topic: str | None = None, to: Any = None) -> None:
        self.sent.append((topic or "", payload))

    async def close(self) -> None:
        self.closed = True

    def deliver(self, topic: str, payload: Any, sender: str | None = None) -> None:
        for callback in self.listeners.get("data", []):
            callback({"type": "data", "topic": topic, "payload": payload, "from_participant_id": sender})

    def said(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [p for t, p in self.sent if t == "bot.say" and (kind is None or p["kind"] == kind)]


class FakeTts:
    """Speech of 0.5 s per sentence, made at once."""

    def __init__(self, speaks: bool = True) -> None:
        self.speaks = speaks
        self.spoken: list[str] = []

    def check(self, language: str) -> None:
        from teller.speech.tts import TtsUnavailable

        if not self.speaks:
            raise TtsUnavailable("no voice")

    async def warm(self, language: str) -> None:
        return None

    async def stream(self, text: str, language: str) -> AsyncIterator[np.ndarray]:
        self.spoken.append(text)
        for _ in range(max(1, len(text) // 40)):
            yield tone(0.5, 0.3)


class FakeAnswerer:
    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def answer(self, question: str, language: str, history: list[dict[str, Any]]) -> Answer | None:
        self.asked.append(question)
        return next((a for key, a in self.answers.items() if key in question.lower()), None)


HOURS = Answer("We are open from nine to five on weekdays.", "faq", "opening_hours", "service", 0.9)


class Harness:
    def __init__(self, settings: DigitalHumanSettings | None = None, speaks: bool = True,
                 answers: dict[str, Answer] | None = None) -> None:
        self.client = FakeClient()
        self.tts = FakeTts(speaks)
        self.answerer = FakeAnswerer(answers if answers is not None else {"hours": HOURS})
        self.handovers: list[tuple[str, str | None, list[dict[str, Any]]]] = []
        self.events: list[dict[str, Any]] = []
        self.voice = VoiceTrack()
        self.bot = DigitalHuman(
            {"call_id": "CL_1", "room": "r1", "language": "en"}, self.client, self.tts, self.answerer,  # type: ignore[arg-type]
            settings or DigitalHumanSettings(greet_delay_s=0.0), video=None, voice=self.voice,
            handover=self._handover, on_event=self._event,
        )
        self._pump: asyncio.Task[None] | None = None

    async def _handover(self, reason: str, skill: str | None, turns: list[dict[str, Any]]) -> None:
        self.handovers.append((reason, skill, turns))

    async def _event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def start(self) -> None:
        await self.bot.start()
        self._pump = asyncio.ensure_future(self._run_track())  # the sender's pacing loop

    async def _run_track(self) -> None:
        while True:
            await self.voice.recv()

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        await self.bot.close()

    def activity(self, speaking: bool) -> None:
        self.client.deliver("speech.activity", {"participant_id": "c1", "role": "customer", "speaking": speaking,
                                                "ts": time.time()})

    def caption(self, text: str, final: bool = True, utterance_end: bool = True) -> None:
        self.client.deliver("speech.caption", {"participant_id": "c1", "role": "customer", "text": text, "final": final,
                                               "utterance_end": utterance_end, "end": time.time()})


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    made = Harness()
    await made.start()
    yield made
    await made.close()


async def test_it_greets_then_answers_a_spoken_question(harness: Harness) -> None:
    await until(lambda: harness.client.said("greeting"))
    harness.activity(True)
    harness.caption("what are your opening", final=True, utterance_end=False)
    harness.caption("hours please")
    await until(lambda: harness.client.said("answer"))
    assert harness.answerer.asked == ["what are your opening hours please"]
    assert harness.client.said("answer")[0]["text"] == HOURS.text
    assert HOURS.text in harness.tts.spoken
    assert harness.events[0]["type"] == "bot_answer" and harness.events[0]["entry"] == "opening_hours"
    assert [t["who"] for t in harness.bot.conversation] == ["bot", "customer", "bot"]
    await until(lambda: harness.bot.stats.answer_start_s != [])


async def test_a_question_cut_at_a_pause_is_asked_when_the_customer_stops(harness: Harness) -> None:
    harness.activity(True)
    harness.caption("what are your opening hours", utterance_end=False)  # cut at a pause
    await asyncio.sleep(0.1)
    assert harness.answerer.asked == []  # more may come
    harness.activity(False)  # the hub heard the customer stop; the rest was too short for a final
    await until(lambda: harness.answerer.asked == ["what are your opening hours"])
    # The other order: stopped first, then the last piece's final.
    harness.activity(True)
    harness.activity(False)
    harness.caption("and the opening hours on sunday", utterance_end=False)
    await until(lambda: len(harness.answerer.asked) == 2)


async def test_partial_captions_and_other_speakers_are_not_questions(harness: Harness) -> None:
    harness.client.deliver("speech.caption", {"role": "customer", "text": "opening hours", "final": False})
    harness.client.deliver("speech.caption", {"role": "agent", "text": "opening hours", "final": True})
    harness.client.deliver("chat", {"text": "opening hours"}, sender="a1")  # an agent's chat
    await asyncio.sleep(0.2)
    assert harness.answerer.asked == []


async def test_the_customer_starting_to_talk_cuts_the_bot_off(harness: Harness) -> None:
    await until(lambda: harness.voice.speaking)
    harness.client.deliver("speech.activity", {"participant_id": "c1", "role": "customer", "speaking": True,
                                               "ts": time.time()})
    assert not harness.voice.speaking and harness.bot.stats.barge_ins == 1
    assert harness.voice.level_at(time.monotonic() + 0.1) == 0.0
    await until(lambda: any(e["type"] == "bot_barge_in" for e in harness.events))
    # Talking while the bot is silent is no barge-in.
    harness.client.deliver("speech.activity", {"role": "customer", "speaking": True, "ts": time.time()})
    assert harness.bot.stats.barge_ins == 1


async def test_barge_in_can_be_switched_off() -> None:
    made = Harness(DigitalHumanSettings(greet_delay_s=0.0, barge_in=False))
    await made.start()
    try:
        await until(lambda: made.voice.speaking)
        made.client.deliver("speech.activity", {"role": "customer", "speaking": True, "ts": time.time()})
        assert made.voice.speaking and made.bot.stats.barge_ins == 0
    finally:
        await made.close()


async def test_two_unanswered_questions_hand_over(harness: Harness) -> None:
    harness.caption("can you sing")
    await until(lambda: harness.client.said("not_understood"))
    assert harness.handovers == [] and harness.bot.failures == 1
    harness.caption("what about the football")
    await until(lambda: harness.handovers)
    reason, skill, turns = harness.handovers[0]
    assert reason == "not_understood" and skill is None
    assert [t["text"] for t in turns if t["who"] == "customer"] == ["can you sing", "what about the football"]
    await until(lambda: harness.client.said("handover"))
    # Once handed over it keeps answering what it can, and never hands over twice.
    harness.caption("and your opening hours")
    await until(lambda: harness.client.said("answer"))
    harness.caption("I want a person now")
    harness.caption("still nothing")
    await asyncio.sleep(0.2)
    assert len(harness.handovers) == 1


async def test_an_answer_resets_the_failures(harness: Harness) -> None:
    harness.caption("can you sing")
    await until(lambda: harness.bot.failures == 1)
    harness.caption("opening hours")
    await until(lambda: harness.client.said("answer"))
    assert harness.bot.failures == 0
    harness.caption("can you dance")
    await until(lambda: harness.client.said("not_understood") and len(harness.client.said("not_understood")) == 2)
    assert harness.handovers == []


async def test_a_person_comes_from_the_skill_of_the_last_topic() -> None:
    loans = Answer("Our officers visit farms to advise on loans.", "faq", "farm_loans", "loans", 0.8)
    made = Harness(answers={"hours": HOURS, "loan": loans})
    await made.start()
    try:
        made.caption("what are your hours")
        made.caption("and how do I get a farm loan")
        await until(lambda: made.bot.topic_skill == "loans")
        made.caption("I want to talk to a person")
        await until(lambda: made.handovers)
        assert made.handovers[0][:2] == ("asked_for_person", "loans")
    finally:
        await made.close()


@pytest.mark.parametrize("question", ["I want to talk to a person", "转人工", "can I speak to an agent please"])
async def test_asking_for_a_person_hands_over_at_once(harness: Harness, question: str) -> None:
    harness.caption(question)
    await until(lambda: harness.handovers)
    assert harness.handovers[0][0] == "asked_for_person"
    assert harness.answerer.asked == []


async def test_a_risk_cue_hands_over_and_typed_chat_is_masked(harness: Harness) -> None:
    harness.client.deliver("chat", {"text": "my card is 6222 0202 0011 2233 and hours?"}, sender="c1")
    await until(lambda: harness.client.said("answer"))
    assert "6222 0202 0011 2233" not in str(harness.bot.conversation)
    harness.client.deliver("speech.risk", {"role": "customer", "category": "fraud_coaching"})
    await until(lambda: harness.handovers)
    assert harness.handovers[0][0] == "risk"


async def test_a_failed_handover_is_tried_again() -> None:
    made = Harness()
    attempts: list[str] = []

    async def broken(reason: str, skill: str | None, turns: list[dict[str, Any]]) -> None:
        attempts.append(reason)
        if len(attempts) == 1:
            raise RuntimeError("store down")

    made.bot._handover = broken
    await made.start()
    try:
        made.caption("I want a person")
        await until(lambda: len(attempts) == 1)
        await asyncio.sleep(0.05)
        assert made.bot.handed_over is None
        made.caption("a person please")
        await until(lambda: len(attempts) == 2)
        await until(lambda: made.bot.handed_over == "asked_for_person")
    finally:
        await made.close()


async def test_without_a_voice_it_answers_in_text() -> None:
    made = Harness(speaks=False)
    await made.start()
    try:
        await until(lambda: made.client.said("greeting"))
        assert made.client.said("greeting")[0]["spoken"] is False and made.tts.spoken == []
        made.caption("opening hours")
        await until(lambda: made.client.said("answer"))
        assert not made.voice.speaking
    finally:
        await made.close()


async def test_an_answerer_may_ask_for_a_person() -> None:
    made = Harness(answers={"mortgage": Answer("", "llm", None, "loans", 0.0, handover=True)})
    await made.start()
    try:
        made.caption("about my mortgage")
        await until(lambda: made.handovers)
        assert made.handovers[0][:2] == ("answerer", "loans")
    finally:
        await made.close()


# -- the answering service adapter ------------------------------------------------------------


@pytest.fixture
async def llm() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("Authorization")})
        question = body["question"]
        if "slow" in question:
            await asyncio.sleep(2)
        if "broken" in question:
            return web.Response(status=500, text="oops")
        if "garbage" in question:
            return web.Response(text="not json")
        if "person" in question:
            return web.json_response({"answer": "", "handover": True, "skill": "loans"})
        return web.json_response({"answer": f"About {question}: yes."})

    app = web.Application()
    app.router.add_post("/answer", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/answer", seen
    await runner.cleanup()


async def test_the_answering_service_adapter(llm: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = llm
    answerer = HttpAnswerer(url, token="s3cret", timeout_s=0.5)
    try:
        got = await answerer.answer("fees", "en", [{"who": "customer", "text": "hi", "ts": 1.0}])
        assert got is not None and got.text == "About fees: yes." and got.source == "llm"
        assert seen[0]["auth"] == "Bearer s3cret" and seen[0]["body"]["history"][0]["text"] == "hi"
        handover = await answerer.answer("a person", "en", [])
        assert handover is not None and handover.handover and handover.skill == "loans"
        for bad in ("slow", "broken", "garbage"):
            assert await answerer.answer(bad, "en", []) is None
        assert answerer.failures == 3
        chain = ChainAnswerer([FakeAnswerer({"hours": HOURS}), answerer])
        assert (await chain.answer("hours", "en", [])) is HOURS
        assert (await chain.answer("fees", "en", [])).source == "llm"  # type: ignore[union-attr]
    finally:
        await answerer.close()
