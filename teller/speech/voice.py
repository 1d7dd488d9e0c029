"""The voice participant: a hidden-from-nobody "service" participant that speaks prompts.

It joins the room through the client SDK, like any worker would in a cluster, so its
audio goes through the same forwarder to every subscriber and into the recording:
compliance hears the prompt that was played. One per room, made when first needed,
gone when the room has nobody else in it.

Its track sends nothing while idle and paces 20 ms frames in real time while it
speaks; timestamps follow the wall clock, so a pause between prompts is a gap, not
a stretch of encoded silence.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .tts import OUTPUT_RATE, TtsEngine
from .vad import level_db

log = logging.getLogger("teller.speech")

FRAME_SAMPLES = 960  # 20 ms at 48 kHz
FRAME_S = FRAME_SAMPLES / OUTPUT_RATE
IDENTITY = "teller-voice"
NAMES = {"zh": "语音播报", "en": "Voice prompts"}
LEVEL_HISTORY = 50  # a second of frames
KINDS = ("risk_prompt", "anti_fraud", "script", "broadcast", "identity_question", "liveness_prompt")


class _Mark:
    """Reached when everything queued before it has been sent."""

    def __init__(self, ends: bool = False) -> None:
        self.reached = asyncio.Event()
        self.at = 0.0
        self.ends = ends  # the end of an utterance (not its first audio)
        self.dropped = False  # reached by a flush, not by sending


class VoiceTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._items: collections.deque[np.ndarray | _Mark] = collections.deque()
        self._arrived = asyncio.Event()
        self._buffer = np.zeros(0, np.int16)
        self._speaking = 0  # utterances queued and not finished
        self._next = 0.0
        self._epoch = time.monotonic()
        # (monotonic time a frame went out, its loudness 0..1): what a face lip-syncs to.
        self._sent: collections.deque[tuple[float, float]] = collections.deque(maxlen=LEVEL_HISTORY)
        self.frames_sent = 0
        self.flushes = 0

    def begin(self) -> None:
        self._speaking += 1

    def push(self, item: np.ndarray | _Mark) -> None:
        self._items.append(item)
        self._arrived.set()

    def end(self) -> _Mark:
        mark = _Mark(ends=True)
        self.push(mark)
        return mark

    @property
    def speaking(self) -> bool:
        return self._speaking > 0

    def flush(self) -> None:
        """Barge-in: what is queued is dropped, and every mark in it is reached now, so
        whoever waits on one goes on. The frame being sent still finishes (20 ms)."""
        now = time.monotonic()
        self._buffer = np.zeros(0, np.int16)
        while self._items:
            item = self._items.popleft()
            if isinstance(item, _Mark):
                item.at = now
                item.dropped = True
                item.reached.set()
                if item.ends:
                    self._speaking -= 1
        self.flushes += 1

    def level_at(self, t: float) -> float:
        """Loudness (0..1) of the audio that goes out at monotonic time t: looked up in
        what was sent, or read ahead in what is queued (a renderer draws ahead)."""
        if self._next and t >= self._next:
            offset = int((t - self._next) / FRAME_S) * FRAME_SAMPLES
            return loudness(self._peek(offset, FRAME_SAMPLES))
        for sent_at, level in reversed(self._sent):
            if sent_at <= t:
                return level if t - sent_at < FRAME_S * 1.5 else 0.0
        return 0.0

    def _peek(self, offset: int, count: int) -> np.ndarray:
        parts: list[np.ndarray] = []
        for item in (self._buffer, *self._items):
            if isinstance(item, _Mark) or not len(item):
                continue
            if offset >= len(item):
                offset -= len(item)
                continue
            parts.append(item[offset : offset + count])
            count -= len(parts[-1])
            offset = 0
            if count <= 0:
                break
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    def _take(self) -> None:
        while self._items and len(self._buffer) < FRAME_SAMPLES:
            item = self._items[0]
            if isinstance(item, _Mark):
                if len(self._buffer):  # finish what came before the mark first
                    return
                self._items.popleft()
                item.at = time.monotonic()
                item.reached.set()
                if item.ends:
                    self._speaking -= 1
                continue
            self._items.popleft()
            self._buffer = np.concatenate((self._buffer, item))

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._take()
        while not len(self._buffer) and not self._speaking:
            self._next = 0.0
            if not self._items:  # idle: wait for the next utterance
                self._arrived.clear()
                await self._arrived.wait()
            self._take()
        now = time.monotonic()
        if self._next == 0.0 or now - self._next > 0.2:
            self._next = now
        else:
            await asyncio.sleep(max(0.0, self._next - now))
        due = self._next
        self._next += FRAME_S
        pcm = self._buffer[:FRAME_SAMPLES]
        self._buffer = self._buffer[FRAME_SAMPLES:]
        if len(pcm) < FRAME_SAMPLES:  # synthesis is behind, or the last frame: pad with silence
            pcm = np.concatenate((pcm, np.zeros(FRAME_SAMPLES - len(pcm), np.int16)))
        self._sent.append((due, loudness(pcm)))
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = OUTPUT_RATE
        frame.pts = int((self._next - self._epoch) * OUTPUT_RATE) // FRAME_SAMPLES * FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, OUTPUT_RATE)
        self.frames_sent += 1
        return frame


def loudness(pcm: np.ndarray) -> float:
    """0 at -50 dBFS RMS and below, 1 at -15 dBFS and above: speech's working range."""
    return min(1.0, max(0.0, (level_db(pcm) + 50.0) / 35.0))


@dataclass
class Utterance:
    id: str
    kind: str
    text: str
    language: str
    by: str
    requested_at: float = field(default_factory=time.monotonic)
    first_audio_ms: float | None = None
    duration_s: float = 0.0
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "text": self.text, "language": self.language}
        if self.first_audio_ms is not None:
            out["first_audio_ms"] = round(self.first_audio_ms, 1)
        if self.duration_s:
            out["duration_s"] = round(self.duration_s, 2)
        if self.error:
            out["error"] = self.error
        return out


class VoiceParticipant:
    """One room's voice: a client in the room and the utterances it speaks, in order."""

    def __init__(self, room: str, client: Any, tts: TtsEngine, on_event: Callable[[str, Utterance], Awaitable[None]]) -> None:
        self.room = room
        self.client = client
        self.tts = tts
        self.track = VoiceTrack()
        self._on_event = on_event
        self._queue: asyncio.Queue[Utterance] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._close_task: asyncio.Future[None] | None = None
        self.closed = False

    @property
    def usable(self) -> bool:
        return not self.closed and not self.client.closed.is_set()

    async def start(self, timeout: float = 10.0) -> None:
        publication = await self.client.publish([self.track], data_channel=True)
        await publication.wait_connected(timeout)
        self._worker = asyncio.create_task(self._run(), name=f"voice:{self.room}")

    def enqueue(self, utterance: Utterance) -> None:
        self._queue.put_nowait(utterance)

    async def _run(self) -> None:
        while True:
            utterance = await self._queue.get()
            await self._speak(utterance)

    async def _speak(self, u: Utterance) -> None:
        await self._send("started", u)
        first = _Mark()
        self.track.begin()
        samples = 0
        try:
            async for pcm in self.tts.stream(u.text, u.language):
                if not samples:
                    self.track.push(first)
                self.track.push(pcm)
                samples += len(pcm)
        except Exception as exc:
            u.error = str(exc) or type(exc).__name__
            log.warning("a prompt could not be spoken", extra={"room": self.room, "error": u.error})
        done = self.track.end()
        await done.reached.wait()
        if first.reached.is_set():
            u.first_audio_ms = (first.at - u.requested_at) * 1000
        u.duration_s = samples / OUTPUT_RATE
        await self._send("failed" if u.error else "finished", u)
        u.done.set()

    async def _send(self, state: str, u: Utterance) -> None:
        with contextlib.suppress(Exception):
            await self.client.send_data({**u.to_json(), "state": state, "participant_id": self.client.participant_id},
                                        topic="speech.tts")
        with contextlib.suppress(Exception):
            await self._on_event(state, u)

    async def close(self) -> None:
        """Idempotent, and finishes even when the caller is cancelled half-way."""
        self.closed = True
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().done.set()
        with contextlib.suppress(Exception):
            await self.client.close()
        self.track.stop()


def new_utterance(kind: str, text: str, language: str, by: str) -> Utterance:
    return Utterance(id=secrets.token_hex(6), kind=kind, text=text, language=language, by=by)
