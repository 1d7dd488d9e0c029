"""Decoding speech off the event loop: a Whisper transcriber and the queue in front of it.

Finals come before partials. A partial is only worth decoding while nothing final
waits: under load the stage falls back to finals only, and counts the partials it
skipped. A newer partial of a piece replaces an older one still waiting, and the
piece's final replaces both. Audio waiting for a final beyond `max_backlog_s` is
dropped, oldest first, and counted: captions minutes late help nobody.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("teller.speech")

RATE = 16000
# Whisper writes traditional characters for Mandarin unless its context shows simplified ones.
INITIAL_PROMPTS = {"zh": "以下是普通话的句子，使用简体中文。"}
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    language_probability: float
    seconds: float  # decode time
    speech: bool = True  # False: the check found no speech in the audio


class Transcriber(Protocol):
    name: str

    def load(self) -> None: ...

    def transcribe(self, audio: np.ndarray, language: str | None, final: bool, context: str = "") -> Transcript: ...


class WhisperTranscriber:
    """faster-whisper (CTranslate2) on the CPU; one model shared by every worker thread."""

    def __init__(self, model_dir: Path, *, threads: int, workers: int, compute_type: str, beam_size: int) -> None:
        self.model_dir = model_dir
        self.name = model_dir.name
        self._threads = threads
        self._workers = workers
        self._compute_type = compute_type
        self._beam_size = beam_size
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                self._model = self._open()

    def _open(self) -> Any:
        from faster_whisper import WhisperModel

        return WhisperModel(
            str(self.model_dir), device="cpu", compute_type=self._compute_type,
            cpu_threads=self._threads, num_workers=self._workers,
        )

    def has_speech(self, audio: np.ndarray) -> bool:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        return bool(get_speech_timestamps(audio, VadOptions(min_speech_duration_ms=120)))

    def transcribe(self, audio: np.ndarray, language: str | None, final: bool, context: str = "") -> Transcript:
        """`context`: what the speaker said just before, when this piece continues it; Whisper
        reads a piece cut at a pause better with the words that led up to it."""
        started = time.perf_counter()
        self.load()
        if final and not self.has_speech(audio):
            return Transcript("", language or "", 0.0, time.perf_counter() - started, speech=False)
        segments, info = self._model.transcribe(
            audio,
            language=language or None,
            beam_size=self._beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
            initial_prompt=" ".join(p for p in (INITIAL_PROMPTS.get(language or ""), context[-200:]) if p) or None,
            temperature=0.0,
        )
        texts = [
            s.text.strip()
            for s in segments
            if not (s.no_speech_prob > NO_SPEECH_PROB and s.avg_logprob < LOW_LOGPROB)
        ]
        text = " ".join(t for t in texts if t) if info.language != "zh" else "".join(texts)
        return Transcript(text, info.language, info.language_probability, time.perf_counter() - started)


@dataclass
class Job:
    key: str  # the speaker's stream
    piece: int
    final: bool
    audio: np.ndarray  # int16, 16 kHz mono
    language: str | None
    on_done: Callable[[Job, Transcript], None]
    queued_at: float = field(default_factory=time.monotonic)
    superseded: bool = False
    # Read when the decode starts: by then the piece before has its final text.
    context: Callable[[], str] = lambda: ""

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE


@dataclass
class EngineStats:
    finals: int = 0
    partials: int = 0
    partials_skipped: int = 0
    partials_superseded: int = 0
    finals_dropped: int = 0
    no_speech: int = 0
    failures: int = 0
    audio_s: float = 0.0
    decode_s: float = 0.0


class AsrEngine:
    def __init__(self, transcriber: Transcriber, *, workers: int = 1, max_backlog_s: float = 30.0) -> None:
        self.transcriber = transcriber
        self.workers = max(1, workers)
        self.max_backlog_s = max_backlog_s
        self.stats = EngineStats()
        self._queue: asyncio.PriorityQueue[tuple[int, int, Job]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._finals: list[Job] = []  # waiting, oldest first
        self._partials: dict[str, Job] = {}  # the one waiting per speaker
        self._busy = 0
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="asr")
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False
        self.load_error: str | None = None

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [asyncio.create_task(self._work(), name=f"asr-{i}") for i in range(self.workers)]
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self.transcriber.load)
            self.ready = True
        except Exception as exc:
            self.load_error = repr(exc)
            log.error("the ASR model did not load; no captions", extra={"error": self.load_error})

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def backlog_s(self) -> float:
        return sum(j.seconds for j in self._finals)

    @property
    def overloaded(self) -> bool:
        """Finals are waiting: partials are skipped until they are done."""
        return bool(self._finals)

    def submit_final(self, job: Job) -> None:
        waiting = self._partials.pop(job.key, None)
        if waiting is not None:
            waiting.superseded = True
            self.stats.partials_superseded += 1
        self._finals.append(job)
        self._queue.put_nowait((0, next(self._order), job))
        while self.backlog_s > self.max_backlog_s and len(self._finals) > 1:
            dropped = self._finals.pop(0)
            dropped.superseded = True
            self.stats.finals_dropped += 1
            log.warning("ASR behind: a final was dropped", extra={"stream": dropped.key, "seconds": round(dropped.seconds, 2)})

    def offer_partial(self, job: Job) -> bool:
        """Queues a partial unless the engine is busy with finals; False: skipped."""
        if self.overloaded:
            self.stats.partials_skipped += 1
            return False
        waiting = self._partials.get(job.key)
        if waiting is not None:
            waiting.superseded = True
            self.stats.partials_superseded += 1
        self._partials[job.key] = job
        self._queue.put_nowait((1, next(self._order), job))
        return True

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            _, _, job = await self._queue.get()
            if job.superseded:
                continue
            if job.final:
                self._finals.remove(job)
            elif self._partials.get(job.key) is job:
                del self._partials[job.key]
            self._busy += 1
            try:
                audio = job.audio.astype(np.float32) / 32768.0
                result = await loop.run_in_executor(
                    self._pool, self.transcriber.transcribe, audio, job.language, job.final, job.context())
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.failures += 1
                log.exception("ASR decode failed", extra={"stream": job.key})
                continue
            finally:
                self._busy -= 1
            self.stats.audio_s += job.seconds
            self.stats.decode_s += result.seconds
            if job.final:
                self.stats.finals += 1
            else:
                self.stats.partials += 1
            if not result.speech:
                self.stats.no_speech += 1
            try:
                job.on_done(job, result)
            except Exception:
                log.exception("ASR result handler failed", extra={"stream": job.key})

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "model": self.transcriber.name,
            "ready": self.ready,
            "load_error": self.load_error,
            "workers": self.workers,
            "busy": self._busy,
            "backlog_s": round(self.backlog_s, 2),
            "finals": s.finals,
            "partials": s.partials,
            "partials_skipped": s.partials_skipped,
            "partials_superseded": s.partials_superseded,
            "finals_dropped": s.finals_dropped,
            "no_speech": s.no_speech,
            "failures": s.failures,
            "real_time_factor": round(s.decode_s / s.audio_s, 3) if s.audio_s else None,
        }
