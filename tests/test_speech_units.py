"""Speech parts without models: endpointing, the decode queue under load, the hub's
masking, sealing, risk alerts and timeline, the voice track's pacing, transcripts."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import numpy as np
import pytest

from teller.speech.asr import AsrEngine, Job, Transcript
from teller.speech.seal import Sealer, SealError
from teller.speech.transcript import build_transcript, public, to_vtt
from teller.speech.tts import split_pieces
from teller.speech.vad import RATE, Endpointer, VadSettings
from teller.speech.voice import FRAME_SAMPLES, VoiceTrack


def tone(seconds: float, level: float = 0.3, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    # A syllable-like envelope so it is not one flat block.
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


def quiet(seconds: float, level: float = 0.001) -> np.ndarray:
    return (np.random.default_rng(1).standard_normal(int(seconds * RATE)) * level * 32767).astype(np.int16)


def feed(endpointer: Endpointer, audio: np.ndarray, step: int = 321) -> list[Any]:
    out = []
    for i in range(0, len(audio), step):  # odd sizes, as the resampler gives them
        out += endpointer.feed(audio[i : i + step])
    return out


def test_an_utterance_ends_after_its_silence_and_keeps_its_own_times() -> None:
    ep = Endpointer(VadSettings(partial_interval_s=10))
    chunks = feed(ep, np.concatenate((quiet(1.0), tone(1.5), quiet(1.0))))
    finals = [c for c in chunks if c.final]
    assert len(finals) == 1 and finals[0].utterance_end
    assert 0.75 <= finals[0].start <= 1.0 and 2.5 <= finals[0].end <= 2.7
    assert not ep.speaking


def test_long_speech_is_cut_at_pauses_and_at_the_hard_limit() -> None:
    ep = Endpointer(VadSettings(min_chunk_s=2.0, max_chunk_s=4.0, pause_split_s=0.2, partial_interval_s=10))
    speech = np.concatenate((quiet(0.5), tone(2.5), quiet(0.3), tone(6.0), quiet(1.0)))
    finals = [c for c in feed(ep, speech) if c.final]
    lengths = [round(c.end - c.start, 1) for c in finals]
    assert len(finals) >= 3 and max(lengths) <= 4.05, lengths  # the pause cut, then the limit
    assert [c.seq for c in finals] == list(range(len(finals)))
    # The last piece is out at the first pause long enough to cut, before the utterance's end.
    assert 9.3 <= finals[-1].end <= 9.5 and not any(c.utterance_end for c in finals[:-1])


def test_partials_come_while_speaking_and_quiet_noise_is_no_speech() -> None:
    ep = Endpointer(VadSettings(partial_interval_s=0.5))
    chunks = feed(ep, np.concatenate((quiet(2.0), tone(2.0), quiet(1.0))))
    partials = [c for c in chunks if not c.final]
    assert len(partials) >= 2 and all(p.seq == 0 for p in partials)
    assert [c.final for c in chunks][-1] is True
    assert feed(Endpointer(VadSettings()), quiet(5.0, level=0.003)) == []


def test_a_muted_speaker_is_final_at_once() -> None:
    ep = Endpointer(VadSettings(partial_interval_s=10))
    assert [c for c in feed(ep, np.concatenate((quiet(0.5), tone(1.0)))) if c.final] == []
    flushed = ep.flush()
    assert len(flushed) == 1 and flushed[0].final and ep.flush() == []


class SlowTranscriber:
    name = "fake"

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.calls: list[tuple[bool, int]] = []
        self.contexts: list[str] = []

    def load(self) -> None:
        pass

    def transcribe(self, audio: np.ndarray, language: str | None, final: bool, context: str = "") -> Transcript:
        time.sleep(self.delay)
        self.calls.append((final, len(audio)))
        self.contexts.append(context)
        return Transcript(f"{'final' if final else 'partial'} {len(audio)}", "en", 0.99, self.delay)


async def test_finals_go_first_and_under_load_partials_are_skipped_and_counted() -> None:
    transcriber = SlowTranscriber(0.05)
    engine = AsrEngine(transcriber, workers=1, max_backlog_s=30)
    await engine.start()
    done: list[tuple[str, bool]] = []
    try:
        def job(key: str, final: bool, seconds: float = 1.0) -> Job:
            return Job(key, 0, final, np.zeros(int(seconds * RATE), np.int16), "en", lambda j, r: done.append((j.key, j.final)))

        engine.submit_final(job("a", True))
        engine.submit_final(job("b", True))
        assert engine.overloaded and not engine.offer_partial(job("c", False))
        assert engine.stats.partials_skipped == 1
        await asyncio.sleep(0.3)
        assert done == [("a", True), ("b", True)] and not engine.overloaded
        # Idle again: partials are decoded, and a newer one replaces an older one still waiting.
        engine.submit_final(job("x", True))  # the worker is busy with it a while
        await asyncio.sleep(0.01)
        assert engine.offer_partial(job("d", False)) and engine.offer_partial(job("d", False))
        assert engine.stats.partials_superseded == 1
        await asyncio.sleep(0.3)
        assert done[-2:] == [("x", True), ("d", False)]
        assert engine.to_json()["real_time_factor"] is not None
        # A piece that continues an utterance is decoded with the words before it.
        engine.submit_final(Job("k", 1, True, np.zeros(RATE, np.int16), "en", lambda j, r: done.append((j.key, True)),
                                context=lambda: "the words before"))
        await asyncio.sleep(0.2)
        assert transcriber.contexts[-1] == "the words before"
    finally:
        await engine.close()


async def test_the_oldest_finals_are_dropped_when_the_backlog_is_too_long() -> None:
    engine = AsrEngine(SlowTranscriber(0.2), workers=1, max_backlog_s=5)
    await engine.start()
    try:
        for i in range(6):
            engine.submit_final(Job(f"s{i}", i, True, np.zeros(2 * RATE, np.int16), None, lambda j, r: None))
        assert engine.stats.finals_dropped >= 3 and engine.backlog_s <= 5
    finally:
        await engine.close()


def test_sealed_text_opens_only_with_its_key_and_session() -> None:
    sealer = Sealer("s" * 32)
    sealed = sealer.seal("card 6222 0212 3456 7890 123", "RM_1")
    assert "6222" not in sealed and sealer.open(sealed, "RM_1").endswith("123")
    with pytest.raises(SealError):
        sealer.open(sealed, "RM_2")
    with pytest.raises(SealError):
        Sealer("t" * 32).open(sealed, "RM_1")
    with pytest.raises(SealError):
        sealer.open("not base64!", "RM_1")


def test_a_transcript_is_built_from_the_timeline_and_served_without_originals() -> None:
    t0 = 1000.0
    events = [
        {"type": "call_answered", "ts": t0 + 1},
        {"type": "transcript", "ts": t0 + 4, "start": t0 + 2, "end": t0 + 3.5, "role": "customer", "name": "Li",
         "participant_id": "P1", "text": "my card is [card ****1234]", "language": "en", "pii": True, "sealed": "xyz"},
        {"type": "transcript", "ts": t0 + 6, "start": t0 + 5, "end": t0 + 5.2, "role": "agent", "name": "Wang",
         "participant_id": "P2", "text": "a <b> & c", "language": "en", "pii": False},
        {"type": "fraud_risk", "ts": t0 + 4.1, "t": 4.1, "category": "fraud_coaching", "rule": "safe_account"},
        {"type": "tts_played", "ts": t0 + 1.5, "t": 1.5, "kind": "risk_prompt", "text": "Please note"},
    ]
    doc = build_transcript("RM_1", t0, events)
    assert doc is not None and [line["start_s"] for line in doc["lines"]] == [2.0, 5.0]
    assert doc["lines"][0]["sealed"] == "xyz" and "sealed" not in public(doc)["lines"][0]
    assert doc["risk"][0]["rule"] == "safe_account" and doc["played"][0]["kind"] == "risk_prompt"
    vtt = to_vtt(doc)
    assert vtt.startswith("WEBVTT") and "00:00:02.000 --> 00:00:03.500" in vtt
    assert "<v Customer>my card is [card ****1234]" in vtt and "a &lt;b&gt; &amp; c" in vtt and "xyz" not in vtt
    assert "00:00:05.000 --> 00:00:05.500" in vtt  # a very short line still shows for half a second
    assert build_transcript("RM_1", t0, [{"type": "call_answered", "ts": t0}]) is None


def test_long_sentences_are_spoken_clause_by_clause() -> None:
    pieces = split_pieces("Hello. Before we begin, please note that the bank will never ask you for your code, "
                          "and never asks you to move money. 请注意，银行不会索要验证码。")
    assert pieces[0] == ("Hello.", "sentence") and pieces[1][1] == "clause"
    assert pieces[-1] == ("请注意，银行不会索要验证码。", "sentence")
    assert split_pieces("   ") == []


async def test_the_voice_track_paces_speech_and_waits_when_idle() -> None:
    track = VoiceTrack()
    track.begin()
    track.push(np.full(FRAME_SAMPLES * 10, 1000, np.int16))
    done = track.end()
    started = time.monotonic()
    frames = [await track.recv() for _ in range(10)]
    assert time.monotonic() - started >= 0.15  # paced at 20 ms, not as fast as possible
    assert all(f.samples == FRAME_SAMPLES for f in frames) and frames[0].to_ndarray().max() == 1000
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts))
    # Idle: recv waits for the next utterance instead of sending silence.
    waiter = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.1)
    assert done.reached.is_set() and not waiter.done()
    track.begin()
    track.push(np.full(FRAME_SAMPLES, 7, np.int16))
    track.end()
    frame = await asyncio.wait_for(waiter, 1)
    assert frame.to_ndarray().max() == 7 and frame.pts > pts[-1]
    track.stop()
