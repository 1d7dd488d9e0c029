"""The digital employee in one call: it greets, listens, answers, and hands over.

It is a participant like any other (role "service"), joined through the client SDK,
so its voice and face reach the customer, the recording and any agent through the
same forwarder. It hears the customer through the room's "asr" stage: finished
lines arrive as `speech.caption`, and `speech.activity` says the moment the customer
starts talking, which stops the bot's voice (barge-in) long before any words are
decoded. A person takes over when the customer asks for one, after
`max_failed_answers` questions in a row it cannot answer, or on a risk cue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc.mediastreams import MediaStreamTrack

from ..config import DigitalHumanSettings
from ..speech.masking import mask
from ..speech.tts import TtsEngine, TtsUnavailable
from ..speech.voice import VoiceTrack, _Mark
from .answer import Answer, Answerer
from .faq import is_goodbye, wants_person
from .texts import text

log = logging.getLogger("teller.digital_human")

IDENTITY = "teller-digital-human"
MAX_QUESTION_CHARS = 1000

Handover = Callable[[str, str | None, list[dict[str, Any]]], Awaitable[Any]]
EventSink = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class BotStats:
    questions: int = 0
    answered: int = 0
    not_understood: int = 0
    barge_ins: int = 0
    # Seconds from the end of the customer's question (its caption's end) to the first
    # audio of the answer leaving the bot.
    answer_start_s: list[float] = field(default_factory=list)
    # Milliseconds from the moment the hub heard the customer start to the bot's flush.
    barge_in_ms: list[float] = field(default_factory=list)


class DigitalHuman:
    def __init__(
        self,
        call: dict[str, Any],
        client: Any,
        tts: TtsEngine,
        answerer: Answerer,
        settings: DigitalHumanSettings,
        *,
        video: MediaStreamTrack | None,
        voice: VoiceTrack | None = None,
        handover: Handover,
        on_event: EventSink,
        on_conversation: Callable[[list[dict[str, Any]]], Awaitable[Any]] | None = None,
    ) -> None:
        self.call = call
        self.call_id: str = call["call_id"]
        self.room: str = call["room"]
        self.language: str = call.get("language") or "zh"
        self.client = client
        self.tts = tts
        self.answerer = answerer
        self.settings = settings
        self.voice = voice or VoiceTrack()
        self.video = video
        self._handover = handover
        self._on_event = on_event
        self._on_conversation = on_conversation
        self.conversation: list[dict[str, Any]] = []
        self.stats = BotStats()
        self.failures = 0
        self.topic_skill: str | None = None  # the skill of what the customer asked about last
        self.handed_over: str | None = None
        self.closed = False
        self._heard: list[str] = []  # final pieces of what the customer is saying
        self._heard_end = 0.0
        self._heard_in: Any = None
        self._customer_talking = False
        self._speaking: asyncio.Task[bool] | None = None
        self._turn: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._close_task: asyncio.Future[None] | None = None
        self.can_speak = True

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, timeout: float = 15.0) -> None:
        try:
            self.tts.check(self.language)
        except TtsUnavailable:
            self.can_speak = False  # it still answers, in text on the customer's screen
        tracks: list[MediaStreamTrack] = [self.voice]
        if self.video is not None:
            tracks.append(self.video)
        self.client.on("data", self._on_data)
        publication = await self.client.publish(tracks, data_channel=True)
        await publication.wait_connected(timeout)
        if self.can_speak:
            await self.tts.warm(self.language)
        self._spawn(self._greet())

    async def _greet(self) -> None:
        await asyncio.sleep(self.settings.greet_delay_s)
        if not self.conversation:  # nobody spoke first
            await self._say(text("greeting", self.language), kind="greeting")

    async def close(self) -> None:
        """Idempotent, and finishes even when the caller is cancelled half-way (a shutdown
        that cancels whoever was closing it would otherwise leave its connection open)."""
        self.closed = True
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        for task in [self._turn, self._speaking, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in [self._turn, self._speaking, *self._tasks] if t is not None), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.client.close()
        self.voice.stop()
        if self.video is not None:
            self.video.stop()

    async def farewell(self) -> None:
        """A person has taken the call: the bot stops talking and goes."""
        self._cut_speech()
        await self.close()

    # -- hearing -------------------------------------------------------------------------

    def _on_data(self, message: dict[str, Any]) -> None:
        topic, payload = message.get("topic"), message.get("payload")
        if self.closed or not isinstance(payload, dict | str):
            return
        if topic == "chat":
            sender = self.client.participants.get(message.get("from_participant_id") or "") or {}
            body = payload.get("text") if isinstance(payload, dict) else payload
            if sender.get("role") == "customer" and isinstance(body, str) and body.strip():
                self._ask(body.strip()[:MAX_QUESTION_CHARS], typed=True, ended_at=time.time())
            return
        if not isinstance(payload, dict) or payload.get("role") != "customer":
            return
        if topic == "speech.activity":
            self._customer_talking = payload.get("speaking") is True
            if self._customer_talking:
                self._barge_in(payload)
            else:
                self._question_heard()
        elif topic == "speech.caption" and payload.get("final"):
            line = str(payload.get("text") or "").strip()
            if line:
                self._heard.append(line)
                ended = payload.get("end")
                self._heard_end = float(ended) if isinstance(ended, int | float) else time.time()
                self._heard_in = payload.get("language")
            # A long utterance comes in pieces; it is a question once the customer stopped
            # (the last piece says so, or the hub said they stopped talking before it came).
            if payload.get("utterance_end", True) or not self._customer_talking:
                self._question_heard()
        elif topic == "speech.risk" and self.settings.handover_on_risk and not self.handed_over:
            self._spawn(self._hand_over("risk", None))

    def _question_heard(self) -> None:
        if not self._heard:
            return
        question = " ".join(self._heard)[:MAX_QUESTION_CHARS]
        self._heard = []
        self._ask(question, typed=False, ended_at=self._heard_end, heard_in=self._heard_in)

    def _barge_in(self, activity: dict[str, Any]) -> None:
        if not self.settings.barge_in or not self.voice.speaking:
            return
        self._cut_speech()
        self.stats.barge_ins += 1
        heard_at = activity.get("ts")
        if isinstance(heard_at, int | float):
            self.stats.barge_in_ms = [*self.stats.barge_in_ms[-99:], round((time.time() - heard_at) * 1000, 1)]
        self._spawn(self._on_event({"type": "bot_barge_in", "ts": round(time.time(), 3)}))

    def _cut_speech(self) -> None:
        if self._speaking is not None and not self._speaking.done():
            self._speaking.cancel()
        self.voice.flush()

    def _ask(self, question: str, *, typed: bool, ended_at: float, heard_in: Any = None) -> None:
        """A new question replaces an answer still being spoken."""
        if self._turn is not None and not self._turn.done():
            self._turn.cancel()
        self._cut_speech()
        self._follow_language(heard_in)
        self._turn = asyncio.ensure_future(self._answer(question, typed, ended_at))
        self._turn.add_done_callback(self._turn_done)

    def _turn_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the bot failed to answer", exc_info=task.exception(),
                      extra={"room": self.room, "call_id": self.call_id})

    def _follow_language(self, heard_in: Any) -> None:
        """A customer who speaks another language than the call's is answered in theirs,
        where the bot has a voice for it (or has no voice at all)."""
        if not isinstance(heard_in, str) or heard_in == self.language or heard_in not in ("zh", "en"):
            return
        try:
            self.tts.check(heard_in)
        except TtsUnavailable:
            if self.can_speak:
                return
        else:
            self.can_speak = True
        self.language = heard_in

    # -- answering -----------------------------------------------------------------------

    async def _answer(self, question: str, typed: bool, ended_at: float) -> None:
        shown = mask(question).text if typed else question  # captions come masked already
        self._remember("customer", shown)
        self.stats.questions += 1
        language = self.language
        if wants_person(question, language) and not self.handed_over:
            await self._hand_over("asked_for_person", None)
            return
        if is_goodbye(question):
            await self._say(text("goodbye", language), kind="goodbye")
            return
        answer: Answer | None = await self.answerer.answer(question, language, self.conversation)
        if answer is not None and answer.handover and not self.handed_over:
            await self._hand_over("answerer", answer.skill)
            return
        if answer is not None and answer.text:
            self.failures = 0
            self.stats.answered += 1
            self.topic_skill = answer.skill or self.topic_skill
            await self._on_event({"type": "bot_answer", "ts": round(time.time(), 3), "question": shown,
                                  "answer": answer.text, "source": answer.source, "entry": answer.entry_id,
                                  "score": answer.score})
            await self._say(answer.text, kind="answer", question_end=ended_at, skill=answer.skill)
            return
        self.stats.not_understood += 1
        await self._on_event({"type": "bot_not_understood", "ts": round(time.time(), 3), "question": shown})
        if self.handed_over:
            await self._say(text("waiting", language), kind="waiting")
            return
        self.failures += 1
        if self.failures >= self.settings.max_failed_answers:
            await self._hand_over("not_understood", None)
        else:
            await self._say(text("not_understood", language), kind="not_understood", question_end=ended_at)

    async def _hand_over(self, reason: str, skill: str | None) -> None:
        if self.handed_over:
            return
        self.handed_over = reason
        # A person who knows what was being asked about: the last answer's skill.
        skill = skill or self.topic_skill
        line = text({"asked_for_person": "handover_asked", "not_understood": "handover_not_understood",
                     "risk": "handover_risk", "answerer": "handover_llm"}.get(reason, "handover_unavailable"), self.language)
        self._cut_speech()
        self._remember("bot", line)
        try:
            await self._handover(reason, skill, list(self.conversation))
        except Exception as exc:
            log.warning("the handover failed", extra={"room": self.room, "call_id": self.call_id, "error": repr(exc)})
            self.handed_over = None
            return
        await self._say(line, kind="handover", remember=False)

    # -- speaking ------------------------------------------------------------------------

    async def _say(self, line: str, *, kind: str, question_end: float | None = None, skill: str | None = None,
                   remember: bool = True) -> bool:
        """Shows the line on the customer's screen and speaks it; False when cut short."""
        if remember:
            self._remember("bot", line)
        with contextlib.suppress(Exception):
            await self.client.send_data({"text": line, "language": self.language, "kind": kind, "spoken": self.can_speak},
                                        topic="bot.say")
        if not self.can_speak or self.closed:
            return True
        self._cut_speech()
        task = self._speaking = asyncio.ensure_future(self._speak(line, question_end))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            raise

    async def _speak(self, line: str, question_end: float | None) -> bool:
        track = self.voice
        first = _Mark()
        track.begin()
        pushed = ended = False
        try:
            async for pcm in self.tts.stream(line, self.language):
                if not pushed:
                    track.push(first)
                    pushed = True
                    if question_end is not None:
                        self._spawn(self._note_start(first, question_end))
                track.push(pcm)
            done = track.end()
            ended = True
            await done.reached.wait()
        except asyncio.CancelledError:
            if not ended:
                track.end()
            track.flush()
            raise
        except Exception as exc:
            if not ended:
                track.end()
            log.warning("the bot could not speak", extra={"room": self.room, "error": repr(exc)})
            return False
        return True

    async def _note_start(self, first: _Mark, question_end: float) -> None:
        """Answer start: the end of the question to the answer's first audio going out."""
        await first.reached.wait()
        if not first.dropped:
            started_wall = time.time() - (time.monotonic() - first.at)
            self.stats.answer_start_s = [*self.stats.answer_start_s[-99:], round(started_wall - question_end, 3)]

    # -- the record ------------------------------------------------------------------------

    def _remember(self, who: str, line: str) -> None:
        self.conversation = [*self.conversation[-49:], {"who": who, "text": line, "ts": round(time.time(), 3)}]
        if self._on_conversation is not None:
            self._spawn(self._on_conversation(list(self.conversation)))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def to_json(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id, "room": self.room, "language": self.language, "speaks": self.can_speak,
            "handed_over": self.handed_over, "turns": len(self.conversation), "failures": self.failures,
            "questions": self.stats.questions, "barge_ins": self.stats.barge_ins,
        }
