"""The digital human through real sessions: its face, its voice, its ears, its handover.

Real models (Whisper base and the piper voice from PyPI, MediaPipe face mesh), real
peer connections through the SFU. The customer is an SDK client whose microphone says
piper speech. Latencies (answer start, barge-in, fps under load) are measured by
loadtests/bench_digital_human.py; here behaviour is asserted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from teller.client import RoomClient, SpeechTrack
from teller.digital_human.bot import IDENTITY
from teller.digital_human.service import DIGITAL_HUMAN
from teller.signaling.keys import STORE
from teller.speech.voice import loudness
from teller.state import StateStore

from .conftest import Server, wait_until
from .test_contact_rest import agent_token, register
from .test_rest import call
from .test_speech_media import data_of

pytest.importorskip("faster_whisper")
pytest.importorskip("piper")
pytest.importorskip("mediapipe")

pytestmark = pytest.mark.media

OPENING_HOURS = "What are your opening hours?"
PERSON = "I want to talk to a person."


class Customer:
    """A customer who asked for the digital assistant: in the call's room, with a
    microphone that says what it is given, subscribed to the assistant."""

    def __init__(self, server: Server, who: str) -> None:
        self.server = server
        self.who = who
        self.token = server.issuer.issue(room=f"cust-{who}", role="customer", subject=who, name=who)
        self.client = RoomClient(server.url, self.token)
        self.mic = SpeechTrack()
        self.call: dict[str, Any] = {}
        self.said = data_of(self.client, "bot.say")
        self.subscription: Any = None

    async def start(self, http: aiohttp.ClientSession, language: str = "en") -> None:
        status, self.call = await call(http, self.server, "POST", "/v1/calls", token=self.token,
                                       json={"business": "general_enquiry", "language": language, "target": "digital_human"})
        assert status == 201 and self.call["state"] == "bot", self.call
        await self.client.connect()
        publication = await self.client.publish([self.mic], data_channel=True)
        await publication.wait_connected(15)
        await wait_until(lambda: self.bot_has(2), timeout=30)  # the assistant's voice and face
        self.subscription = await self.client.subscribe(self.bot_id())
        await self.subscription.wait_connected(15)

    def bot_id(self) -> str | None:
        return next((p["participant_id"] for p in self.client.participants.values() if p.get("identity") == IDENTITY), None)

    def bot_has(self, tracks: int) -> bool:
        pid = self.bot_id()
        return pid is not None and len(self.client.participants[pid].get("tracks", [])) >= tracks

    async def state(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        status, body = await call(http, self.server, "GET", f"/v1/calls/{self.call['call_id']}", token=self.token)
        assert status == 200
        return body


class Ear:
    """Listens to the assistant's audio: loudness per 20 ms frame, by arrival time."""

    def __init__(self, track: Any) -> None:
        self.levels: list[tuple[float, float]] = []
        self._task = asyncio.ensure_future(self._run(track))

    async def _run(self, track: Any) -> None:
        while True:
            frame = await track.recv()
            pcm = frame.to_ndarray().reshape(-1)
            self.levels.append((time.monotonic(), loudness(pcm)))

    def talking_since(self, since: float) -> bool:
        return any(level > 0.3 for t, level in self.levels if t >= since)

    def first_silence_after(self, since: float, hold_s: float = 0.4) -> float | None:
        """When the audio went quiet after `since` and stayed quiet `hold_s`. A silent
        voice sends nothing at all, so quiet is the absence of loud frames."""
        loud = [t for t, level in self.levels if t >= since and level >= 0.15]
        last = since
        for t in loud:
            if t - last >= hold_s:
                return last
            last = t
        return last if time.monotonic() - last >= hold_s else None

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def customers() -> AsyncIterator[list[Customer]]:
    made: list[Customer] = []
    yield made
    for customer in made:
        await customer.client.close()


def bot_of(server: Server, call_id: str) -> Any:
    assert server.app is not None
    return server.app[DIGITAL_HUMAN].bots.get(call_id)


async def test_the_avatar_streams_30_fps_and_its_mouth_follows_its_voice(
    bot_server: Server, customers: list[Customer], http: aiohttp.ClientSession,
) -> None:
    import cv2
    import mediapipe as mp

    customer = Customer(bot_server, "face")
    customers.append(customer)
    await customer.start(http)
    video, audio = customer.subscription.track("video"), customer.subscription.track("audio")
    ear = Ear(audio)
    frames: list[tuple[float, int, np.ndarray]] = []
    try:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            frame = await asyncio.wait_for(video.recv(), 5)
            frames.append((time.monotonic(), int(frame.pts), frame.to_ndarray(format="yuv420p")))
    finally:
        await ear.close()

    # The cadence the frames carry (RTP time): the track's own rate, not this loop's.
    assert frames[0][2].shape == (480 * 3 // 2, 640)
    pts = np.array([f[1] for f in frames], dtype=np.int64)
    intervals_ms = np.diff(pts) / 90.0
    span_s = (pts[-1] - pts[0]) / 90000
    fps = (len(frames) - 1) / span_s
    print(f"avatar: {len(frames)} frames over {span_s:.2f} s of RTP time: {fps:.2f} fps, "
          f"interval p99 {np.percentile(intervals_ms, 99):.1f} ms")
    assert span_s > 9.0 and fps >= 29.9
    assert np.percentile(intervals_ms, 99) <= 43.0

    # Mouth openness seen by face mesh on the received frames, against the voice's loudness.
    openness: list[tuple[float, float]] = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1) as mesh:
        for arrived, _pts, i420 in frames:
            rgb = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
            found = mesh.process(rgb).multi_face_landmarks
            if not found:
                continue
            lm = found[0].landmark
            gap = np.hypot(lm[13].x - lm[14].x, (lm[13].y - lm[14].y) * 480 / 640)
            face = np.hypot(lm[10].x - lm[152].x, (lm[10].y - lm[152].y) * 480 / 640)
            openness.append((arrived, gap / face))
    assert len(openness) >= 0.95 * len(frames), "face mesh lost the avatar's face"
    t_video = np.array([t for t, _ in openness])
    mouth = np.array([o for _, o in openness])
    t_audio = np.array([t for t, _ in ear.levels])
    level = np.array([v for _, v in ear.levels])
    assert level.max() > 0.5, "the greeting was not heard"
    best = max(
        (float(np.corrcoef(mouth, np.interp(t_video + lag, t_audio, level))[0, 1]), lag)
        for lag in np.arange(-0.3, 0.301, 0.01)
    )
    print(f"mouth ~ loudness: r = {best[0]:.3f} at audio lag {best[1] * 1000:+.0f} ms (arrival times)")
    assert best[0] >= 0.6


async def test_a_spoken_question_gets_the_faq_answer(
    bot_server: Server, customers: list[Customer], http: aiohttp.ClientSession, voice: Any,
) -> None:
    customer = Customer(bot_server, "faq")
    customers.append(customer)
    await customer.start(http)
    await wait_until(lambda: any(s["kind"] == "greeting" for s in customer.said), timeout=20)
    service = bot_server.app[DIGITAL_HUMAN]  # type: ignore[index]
    expected = service.faq.match(OPENING_HOURS, "en")
    assert expected is not None

    await customer.mic.say(await voice(OPENING_HOURS))
    await wait_until(lambda: any(s["kind"] == "answer" for s in customer.said), timeout=30)
    answer = next(s for s in customer.said if s["kind"] == "answer")
    assert answer["text"] == expected.answer and answer["spoken"] is True

    store: StateStore = bot_server.app[STORE]  # type: ignore[index]
    events = await store.read_events(customer.call["call_id"])
    answered = [e for e in events if e.get("type") == "bot_answer"]
    assert answered and answered[0]["entry"] == expected.entry.id and answered[0]["source"] == "faq"
    bot = bot_of(bot_server, customer.call["call_id"])
    await wait_until(lambda: bot.stats.answer_start_s, timeout=10)  # its first audio went out
    print(f"answer start after the question ended: {bot.stats.answer_start_s[-1]:.2f} s")


async def test_the_customer_talking_stops_the_assistant(
    bot_server: Server, customers: list[Customer], http: aiohttp.ClientSession, voice: Any,
) -> None:
    customer = Customer(bot_server, "barge")
    customers.append(customer)
    await customer.start(http)
    ear = Ear(customer.subscription.track("audio"))
    question = await voice(OPENING_HOURS)
    try:
        await wait_until(lambda: ear.talking_since(time.monotonic() - 0.5), timeout=20)  # the greeting plays
        await asyncio.sleep(0.8)
        started = time.monotonic()
        ended_wall = customer.mic.say(question)
        question_s = len(question) / 48000
        await ended_wall
        bot = bot_of(bot_server, customer.call["call_id"])
        await wait_until(lambda: bot.stats.barge_ins >= 1, timeout=10)
        silent = ear.first_silence_after(started)
    finally:
        await ear.close()
    assert silent is not None
    print(f"barge-in: the assistant went quiet {(silent - started) * 1000:.0f} ms after the customer began "
          f"(hub to flush {bot.stats.barge_in_ms[-1]:.0f} ms); the question lasts {question_s * 1000:.0f} ms")
    assert silent - started < question_s, "the assistant talked over the whole question"
    greeting = next(s for s in customer.said if s["kind"] == "greeting")
    assert greeting  # it had started, and was cut, not finished: its audio stopped above


async def test_asking_for_a_person_queues_the_call_with_the_conversation(
    bot_server: Server, customers: list[Customer], http: aiohttp.ClientSession, voice: Any,
) -> None:
    customer = Customer(bot_server, "person")
    customers.append(customer)
    await customer.start(http)
    await wait_until(lambda: any(s["kind"] == "greeting" for s in customer.said), timeout=20)
    await asyncio.sleep(0.5)
    await customer.mic.say(await voice(PERSON))

    deadline = time.monotonic() + 30
    while (state := await customer.state(http))["state"] != "queued" and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert state["state"] == "queued" and state["skill"] == "service"
    assert state["bot"]["handover"]["reason"] == "asked_for_person"
    said = [t["text"].lower() for t in state["bot"]["conversation"] if t["who"] == "customer"]
    assert any("person" in line for line in said), state["bot"]["conversation"]
    assert any(s["kind"] == "handover" for s in customer.said) or await _eventually_said(customer, "handover")

    await register(http, bot_server, "svc-1", {"service": 5})
    token = agent_token(bot_server, "svc-1")
    status, _ = await call(http, bot_server, "POST", "/v1/agents/me/state", token=token, json={"state": "available"})
    assert status == 200
    status, accepted = await call(http, bot_server, "POST", f"/v1/calls/{customer.call['call_id']}/accept", token=token)
    assert status == 200 and accepted["state"] == "connected"
    await wait_until(lambda: customer.bot_id() is None, timeout=15)  # the assistant left for the person
    assert bot_of(bot_server, customer.call["call_id"]) is None


async def _eventually_said(customer: Customer, kind: str) -> bool:
    await wait_until(lambda: any(s["kind"] == kind for s in customer.said), timeout=10)
    return True


async def test_typed_questions_it_cannot_answer_twice_bring_a_person(
    bot_server: Server, customers: list[Customer], http: aiohttp.ClientSession,
) -> None:
    customer = Customer(bot_server, "typed")
    customers.append(customer)
    await customer.start(http)
    await wait_until(lambda: any(s["kind"] == "greeting" for s in customer.said), timeout=20)
    await customer.client.send_data({"text": "Which football team will win the cup?"}, topic="chat")
    await wait_until(lambda: any(s["kind"] == "not_understood" for s in customer.said), timeout=15)
    assert (await customer.state(http))["state"] == "bot"
    await customer.client.send_data({"text": "Can you sing me a song about the moon?"}, topic="chat")
    await wait_until(lambda: any(s["kind"] == "handover" for s in customer.said), timeout=15)
    state = await customer.state(http)
    assert state["state"] == "queued" and state["bot"]["handover"]["reason"] == "not_understood"
    assert [t["who"] for t in state["bot"]["conversation"]][:2] == ["bot", "customer"]


async def test_a_fraud_cue_hands_over_at_once(
    bot_server: Server, customers: list[Customer], http: aiohttp.ClientSession,
) -> None:
    customer = Customer(bot_server, "fraud")
    customers.append(customer)
    await customer.start(http)
    await customer.client.send_data({"text": "A man on the phone told me to move all my money to a safe account today."},
                                    topic="chat")
    deadline = time.monotonic() + 15
    while (state := await customer.state(http))["state"] == "bot" and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert state["state"] == "queued" and state["bot"]["handover"]["reason"] == "risk"


async def test_bad_input_changes_nothing_and_the_assistant_beside_it_goes_on(
    bot_server: Server, customers: list[Customer], http: aiohttp.ClientSession,
) -> None:
    customer = Customer(bot_server, "beside")
    customers.append(customer)
    await customer.start(http)
    other = bot_server.issuer.issue(room="cust-other", role="customer", subject="other", name="other")
    for body, code in (({"business": "general_enquiry", "target": "robot"}, "invalid_message"),
                       ({"business": "no-such", "target": "digital_human"}, "business_not_found")):
        status, reply = await call(http, bot_server, "POST", "/v1/calls", token=other, json=body)
        assert status in (400, 404) and reply["error"]["code"] == code, reply
    admin = bot_server.admin_token()
    status, reply = await call(http, bot_server, "POST", f"/v1/calls/{customer.call['call_id']}/handover", token=admin,
                               json={"reason": "x", "conversation": [{"who": "intruder", "text": "hi"}]})
    assert status == 400 and reply["error"]["code"] == "invalid_message"
    status, reply = await call(http, bot_server, "POST", f"/v1/calls/{customer.call['call_id']}/handover",
                               token=customer.token, json={"reason": "x"})
    assert status == 403
    status, reply = await call(http, bot_server, "POST", "/v1/digital-human/ask", token=admin, json={"question": ""})
    assert status == 400 and reply["error"]["details"]["field"] == "question"
    assert (await customer.state(http))["state"] == "bot"
    # The assistant still answers the customer beside all that.
    await customer.client.send_data({"text": "What are your opening hours?"}, topic="chat")
    await wait_until(lambda: any(s["kind"] == "answer" for s in customer.said), timeout=15)
    status, stats = await call(http, bot_server, "GET", "/v1/digital-human", token=admin)
    assert status == 200 and stats["faq_entries"] > 10
    assert [b["call_id"] for b in stats["bots"]] == [customer.call["call_id"]]
