"""Text to speech behind an interface; piper is one engine, installed as an optional extra.

piper-tts is GPL-3.0-or-later, so Teller never needs it: without it (or without a
voice for a language) prompts are shown as text and the REST answers
`tts_unavailable`. Synthesis streams by sentence: the first sentence plays while
the rest is still being made, so the first audio comes after one short sentence,
not after the whole text.
"""

from __future__ import annotations

import asyncio
import collections
import io
import re
import threading
import wave
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np

from ..config import SpeechSettings
from ..errors import TellerError
from .models import piper_installed, piper_voice_path

OUTPUT_RATE = 48000
# Pieces cut at sentence ends, and at commas once a sentence runs long.
SENTENCE_END = re.compile(r"(?<=[.!?。！？；;])\s*")
CLAUSE_END = re.compile(r"(?<=[,，、:：])\s*")
LONG_PIECE = 60
PAUSE_S = {"sentence": 0.18, "clause": 0.06}
# Finished syntheses kept for reuse (48 kHz int16: about 10 minutes of speech).
CACHE_BYTES = 64 * 1024 * 1024


class TtsUnavailable(TellerError):
    status = 409
    code = "tts_unavailable"


class Synthesizer(Protocol):
    sample_rate: int

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """int16 mono audio for `text`, in pieces; blocking (runs in a worker thread)."""


class PiperSynthesizer:
    def __init__(self, voice_path: Path) -> None:
        from piper import PiperVoice

        self._voice = PiperVoice.load(str(voice_path))
        self.sample_rate = int(self._voice.config.sample_rate)

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        for chunk in self._voice.synthesize(text):
            yield chunk.audio_int16_array


def split_pieces(text: str) -> list[tuple[str, str]]:
    """(piece, what ends it): sentences, and the clauses of a long sentence."""
    out: list[tuple[str, str]] = []
    for sentence in (s.strip() for s in SENTENCE_END.split(text)):
        if not sentence:
            continue
        if len(sentence) <= LONG_PIECE:
            out.append((sentence, "sentence"))
            continue
        clauses = [c.strip() for c in CLAUSE_END.split(sentence) if c.strip()]
        merged: list[str] = []
        for clause in clauses:  # a very short clause rides with the next one
            if merged and len(merged[-1]) < 12:
                merged[-1] = f"{merged[-1]} {clause}"
            else:
                merged.append(clause)
        out += [(c, "clause") for c in merged[:-1]] + [(merged[-1], "sentence")]
    return out


def _to_output_rate(pcm: np.ndarray, rate: int, resampler: Any) -> np.ndarray:
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    return np.concatenate(out) if out else np.zeros(0, np.int16)


class TtsEngine:
    def __init__(self, settings: SpeechSettings, synthesizers: dict[str, Synthesizer] | None = None) -> None:
        self.settings = settings
        self._loaded: dict[str, Synthesizer] = dict(synthesizers or {})
        self._given = set(self._loaded)
        self._lock = threading.Lock()
        # One synthesis at a time: onnxruntime already uses every core for one.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tts")
        self._cache: collections.OrderedDict[tuple[str, str], list[np.ndarray]] = collections.OrderedDict()
        self._cached_bytes = 0
        self.cache_bytes = CACHE_BYTES

    def languages(self) -> list[str]:
        if not self.settings.tts:
            return []
        found = set(self._given)
        if piper_installed():
            found |= {lang for lang in {"en", *self.settings.tts_voices} if piper_voice_path(lang, self.settings.tts_voices)}
        return sorted(found)

    def check(self, language: str) -> None:
        if not self.settings.tts:
            raise TtsUnavailable("text to speech is switched off (speech.tts)")
        if language in self._loaded:
            return
        if not piper_installed():
            raise TtsUnavailable("no TTS engine is installed: pip install 'teller[tts]' (piper-tts, GPL-3.0)")
        if piper_voice_path(language, self.settings.tts_voices) is None:
            raise TtsUnavailable(
                f"no voice for language {language!r}: set speech.tts_voices.{language} to a piper .onnx voice",
                language=language,
            )

    def _synthesizer(self, language: str) -> Synthesizer:
        with self._lock:
            synth = self._loaded.get(language)
            if synth is None:
                path = piper_voice_path(language, self.settings.tts_voices)
                if path is None:
                    raise TtsUnavailable(f"no voice for language {language!r}")
                synth = self._loaded[language] = PiperSynthesizer(path)
            return synth

    async def warm(self, language: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._synthesizer, language)

    async def stream(self, text: str, language: str) -> AsyncIterator[np.ndarray]:
        """48 kHz int16 mono audio, piece by piece, as soon as each piece is made.

        What was said before in full comes from the cache at once: a bank's prompts and
        its digital employee's answers repeat, and their first audio then costs nothing."""
        self.check(language)
        key = (language, text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            for piece in cached:
                yield piece
            return
        made: list[np.ndarray] = []
        async for piece in self._synthesize(text, language):
            made.append(piece)
            yield piece
        self._remember(key, made)

    async def prepare(self, text: str, language: str) -> None:
        """Synthesises into the cache ahead of need (one text at a time, so a live
        request waits behind one text at most)."""
        async for _ in self.stream(text, language):
            pass

    def _remember(self, key: tuple[str, str], pieces: list[np.ndarray]) -> None:
        size = sum(p.nbytes for p in pieces)
        if size > self.cache_bytes // 4:
            return
        self._cache[key] = pieces
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes and self._cache:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= sum(p.nbytes for p in old)

    async def _synthesize(self, text: str, language: str) -> AsyncIterator[np.ndarray]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[np.ndarray | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                synth = self._synthesizer(language)
                resampler = av.AudioResampler(format="s16", layout="mono", rate=OUTPUT_RATE)
                for piece, ending in split_pieces(text):
                    if stop.is_set():
                        return
                    pcm = [p for p in synth.synthesize(piece) if len(p)]
                    if not pcm:
                        continue
                    audio = _to_output_rate(np.concatenate(pcm), synth.sample_rate, resampler)
                    pause = np.zeros(int(PAUSE_S[ending] * OUTPUT_RATE), np.int16)
                    loop.call_soon_threadsafe(queue.put_nowait, np.concatenate((audio, pause)))
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except BaseException as exc:
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        future = loop.run_in_executor(self._pool, produce)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            await asyncio.gather(future, return_exceptions=True)

    async def wav(self, text: str, language: str) -> bytes:
        pieces = [p async for p in self.stream(text, language)]
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(OUTPUT_RATE)
            out.writeframes(np.concatenate(pieces).tobytes() if pieces else b"")
        return buffer.getvalue()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
