"""Speech: ASR speed, caption and alert latency, TTS time to first audio, ASR capacity.

    python loadtests/bench_speech.py rtf       [--repeat 3]
    python loadtests/bench_speech.py latency   [--sentences 12]
    python loadtests/bench_speech.py tts       [--repeat 10]
    python loadtests/bench_speech.py capacity  [--seconds 30]
    python loadtests/bench_speech.py all

rtf: Whisper base (int8, 2 threads) on piper sentences, decode time / audio time.

latency: a customer's microphone (a real aiortc peer) says piper sentences into a live
session through the SFU; the ASR stage transcribes them. Caption latency is from the
last sample of a sentence leaving the microphone to its final caption reaching the
agent's client; alert latency the same for a fraud phrase and its `speech.risk`.
Targets: final caption ≤ 1.5 s after the end of speech, the alert ≤ 3 s.

tts: piper's first audio for a prompt (sentence-level streaming), warm, p50/p95;
and through the voice participant in a session (join included on the first one).
Target: first audio ≤ 300 ms.

capacity: K speakers each saying a sentence every few seconds (about 50 % of the time
speaking, as in a conversation), fed to the decode queue at real-time pace; the
largest K whose finals keep up (backlog stays under 3 s) on this machine.

Each part prints one JSON line; `all` prints them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECRET = "bench-speech-secret-0123456789abcdef"
SENTENCES = [
    "The weather in the village is sunny and the harvest will be good this year.",
    "I would like to check the balance of my savings account please.",
    "My pension arrives on the fifth day of every month.",
    "Can you tell me how much interest the loan will cost?",
    "I lost my bank card yesterday at the market.",
    "Please send the statement to my home address.",
    "How long does it take to open a new account?",
    "My son helps me use the mobile banking app.",
]
FRAUD = "He told me to move all my money to a safe account today."


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))], 3)


async def synth(texts: list[str]) -> dict[str, np.ndarray]:
    """48 kHz int16 speech from piper for each text."""
    from teller.config import load_config
    from teller.speech.tts import TtsEngine

    engine = TtsEngine(load_config(env={}).speech)
    try:
        return {t: np.concatenate([p async for p in engine.stream(t, "en")]) for t in texts}
    finally:
        engine.close()


def to16k(pcm48: np.ndarray) -> np.ndarray:
    return pcm48[::3].astype(np.float32) / 32768.0  # piper's output is band-limited well below 8 kHz


def transcriber(threads: int = 2, workers: int = 1) -> Any:
    from teller.speech.asr import WhisperTranscriber
    from teller.speech.models import whisper_model_dir

    model = whisper_model_dir("", Path(tempfile.gettempdir()) / "teller-bench-models")
    t = WhisperTranscriber(model, threads=threads, workers=workers, compute_type="int8", beam_size=1)
    t.load()
    return t


async def bench_rtf(repeat: int) -> dict[str, Any]:
    audio = await synth(SENTENCES)
    t = transcriber()
    t.transcribe(to16k(audio[SENTENCES[0]]), "en", True)  # warm
    rows = []
    for _ in range(repeat):
        for text, pcm in audio.items():
            x = to16k(pcm)
            result = t.transcribe(x, "en", True)
            rows.append((result.seconds, len(x) / 16000))
    decode, speech = sum(r[0] for r in rows), sum(r[1] for r in rows)
    return {"bench": "asr_rtf", "model": "whisper-base int8", "threads": 2, "utterances": len(rows),
            "audio_s": round(speech, 1), "real_time_factor": round(decode / speech, 3),
            "per_utterance_s_p50": pct([r[0] for r in rows], 0.5), "per_utterance_s_p95": pct([r[0] for r in rows], 0.95)}


@contextlib.asynccontextmanager
async def server(tmp: Path, **speech: Any) -> Any:
    from aiohttp import web

    from teller.config import load_config
    from teller.signaling.app import create_app
    from teller.signaling.tokens import TokenIssuer

    config = load_config(overrides={
        "storage": {"data_dir": str(tmp / "data")}, "auth": {"secret": SECRET}, "log": {"level": "WARNING"}, "digital_human": {"prepare": False},
        "server": {"host": "127.0.0.1", "port": 0}, "recording": {"enabled": False},
        "stages": {"enabled": ["asr"]}, "speech": {"asr_language": "en", **speech},
    }, env={})
    app = create_app(config, issuer=TokenIssuer(SECRET))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield app, f"http://127.0.0.1:{runner.addresses[0][1]}", TokenIssuer(SECRET)
    finally:
        await runner.cleanup()


async def wait_for(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.01)


async def bench_latency(sentences: int) -> dict[str, Any]:
    from teller.client import RoomClient, SpeechTrack
    from teller.speech.service import HUB

    texts = (SENTENCES * 3)[:sentences]
    audio = await synth([*set(texts), FRAUD])
    with tempfile.TemporaryDirectory() as tmp:
        async with server(Path(tmp)) as (app, url, issuer):
            hub = app[HUB]
            await wait_for(lambda: hub._engine is not None and hub._engine.ready, 60)
            customer = RoomClient(url, issuer.issue(room="bench", role="customer", name="c"))
            agent = RoomClient(url, issuer.issue(room="bench", role="agent", name="a"))
            finals: list[tuple[float, dict[str, Any]]] = []
            alerts: list[float] = []
            agent.on("data", lambda m: finals.append((time.time(), m["payload"])) if m.get("topic") == "speech.caption" and m["payload"].get("final") else None)
            agent.on("data", lambda m: alerts.append(time.time()) if m.get("topic") == "speech.risk" else None)
            try:
                await agent.connect()
                await customer.connect()
                mic = SpeechTrack()
                await (await customer.publish([mic])).wait_connected()
                await asyncio.sleep(1.0)
                caption_latency = []
                for text in texts:
                    before = len(finals)
                    ended = await mic.say(audio[text])
                    await wait_for(lambda before=before: len(finals) > before, 20)
                    await asyncio.sleep(1.0)  # any later piece of the same sentence
                    last = max(t for t, _ in finals[before:])
                    caption_latency.append(last - ended)
                    await asyncio.sleep(0.5)
                alert_latency = []
                for _ in range(2):
                    before = len(alerts)
                    ended = await mic.say(audio[FRAUD])
                    await wait_for(lambda before=before: len(alerts) > before, 20)
                    alert_latency.append(alerts[before] - ended)
                    await asyncio.sleep(31)  # one alert per rule per speaker per 30 s
                stats = hub.engine.to_json()
            finally:
                await customer.close()
                await agent.close()
    return {"bench": "caption_latency", "sentences": len(caption_latency),
            "final_caption_s_p50": pct(caption_latency, 0.5), "final_caption_s_p95": pct(caption_latency, 0.95),
            "final_caption_s_max": round(max(caption_latency), 3), "alert_s": [round(a, 3) for a in alert_latency],
            "target_caption_s": 1.5, "target_alert_s": 3.0, "engine": stats}


async def bench_tts(repeat: int) -> dict[str, Any]:
    from teller.client import RoomClient
    from teller.config import load_config
    from teller.speech.service import VOICE
    from teller.speech.tts import TtsEngine

    prompt = "Before we begin, please note that the bank will never ask for your verification code, and never asks you to move money."
    engine = TtsEngine(load_config(env={}).speech)
    await engine.warm("en")
    first = []
    total = []
    for i in range(repeat):
        started = time.perf_counter()
        n = 0
        # A new text each time: the engine answers a text it has said before from its cache.
        async for _piece in engine.stream(f"Prompt number {i}. {prompt}", "en"):
            if n == 0:
                first.append(time.perf_counter() - started)
            n += 1
        total.append(time.perf_counter() - started)
    engine.close()
    session = []
    with tempfile.TemporaryDirectory() as tmp:
        async with server(Path(tmp)) as (app, url, issuer):
            voice = app[VOICE]
            voice.local_url = url
            listener = RoomClient(url, issuer.issue(room="tts", role="customer", name="c"))
            await listener.connect()
            try:
                for i in range(repeat):
                    u = await voice.play("tts", "script", f"Prompt number {i}. {prompt}", "en", "bench")
                    session.append(u.first_audio_ms / 1000)
            finally:
                await listener.close()
    return {"bench": "tts_first_audio", "voice": "en_US-joe-medium", "first_audio_s_p50": pct(first, 0.5),
            "first_audio_s_p95": pct(first, 0.95), "whole_prompt_synthesis_s_p50": pct(total, 0.5),
            "in_session_first_audio_s": {"first_with_join": round(session[0], 3), "warm_p50": pct(session[1:], 0.5),
                                         "warm_p95": pct(session[1:], 0.95)}, "target_s": 0.3}


async def bench_capacity(seconds: float) -> dict[str, Any]:
    from teller.speech.asr import AsrEngine, Job

    audio = await synth(SENTENCES)
    pieces = [(pcm[::3]).astype(np.int16) for pcm in audio.values()]  # 16 kHz int16, as the stage makes
    results = []
    for workers, threads in ((1, 2), (2, 1)):
        t = transcriber(threads=threads, workers=workers)
        best = 0
        for k in range(1, 9):
            engine = AsrEngine(t, workers=workers, max_backlog_s=1e9)
            await engine.start()
            lag: list[float] = []
            started = time.monotonic()

            async def speaker(i: int) -> None:
                n = i
                await asyncio.sleep(i * 0.7)
                while time.monotonic() - started < seconds:
                    pcm = pieces[n % len(pieces)]
                    n += 1
                    await asyncio.sleep(len(pcm) / 16000)  # speaking
                    ended = time.monotonic()
                    engine.submit_final(Job(f"s{i}", n, True, pcm, "en",
                                            lambda j, r, ended=ended: lag.append(time.monotonic() - ended)))
                    await asyncio.sleep(len(pcm) / 16000)  # listening: ~50 % speech

            await asyncio.gather(*(speaker(i) for i in range(k)))
            with contextlib.suppress(TimeoutError):
                await wait_for(lambda: not engine.backlog_s and engine._busy == 0, 60)
            await engine.close()
            ok = bool(lag) and pct(lag, 0.95) <= 3.0
            results.append({"workers": workers, "threads": threads, "speakers": k, "final_lag_s_p50": pct(lag, 0.5),
                            "final_lag_s_p95": pct(lag, 0.95), "keeps_up": ok})
            print(json.dumps(results[-1]), file=sys.stderr)
            if not ok:
                break
            best = k
        results.append({"workers": workers, "threads": threads, "max_speakers": best})
    best = max(r["max_speakers"] for r in results if "max_speakers" in r)
    return {"bench": "asr_capacity", "speech_fraction": 0.5, "seconds": seconds, "max_conversational_speakers": best,
            "runs": [r for r in results if "max_speakers" in r], "steps": [r for r in results if "max_speakers" not in r]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["rtf", "latency", "tts", "capacity", "all"])
    parser.add_argument("--repeat", type=int, default=0)
    parser.add_argument("--sentences", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    parts = ["rtf", "tts", "latency", "capacity"] if args.part == "all" else [args.part]
    for part in parts:
        if part == "rtf":
            out = await bench_rtf(args.repeat or 3)
        elif part == "latency":
            out = await bench_latency(args.sentences)
        elif part == "tts":
            out = await bench_tts(args.repeat or 10)
        else:
            out = await bench_capacity(args.seconds)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
