"""The digital human: CPU and frame cadence per avatar, answer start, barge-in, lip sync.

    python loadtests/bench_digital_human.py avatars [--counts 1,2,4] [--seconds 15]
    python loadtests/bench_digital_human.py answer  [--repeat 5]
    python loadtests/bench_digital_human.py all

`teller serve` runs in its own process (ASR on, English) and the customers are aiortc
peers in this one, so the server's CPU (read from /proc) is the bots' own: avatar
drawing, VP8 encoding, TTS, Opus, forwarding.

avatars: N customers each ask the digital assistant; each is kept talking (a typed
question every few seconds, answered aloud) while the window runs. Per avatar: CPU
(cores, the idle server's subtracted), frames received per second and the frame
interval p99 on arrival at the customer. Target: 30 fps at <= 0.3 core per avatar.

answer: one customer whose microphone says piper questions the FAQ answers. Answer
start: from the question's last sample leaving the microphone to the first received
video frame whose mouth face mesh sees open (and, beside it, the first loud audio).
Target <= 1.5 s. Barge-in: the customer starts talking during an answer; from its first
sample to the assistant's received audio going quiet. Target <= 300 ms. Lip sync: the
lag of the best correlation between received mouth openness and received loudness
(arrival times, so aiortc's audio jitter buffer is inside it).

Each part prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.bench_forward import Child, cpu_seconds

SECRET = "bench-digital-human-secret-0123456789"
QUESTIONS = [
    "What are your opening hours?",
    "I lost my bank card, what should I do?",
    "How do I apply for a farm loan?",
    "How do I open a new account?",
    "What is the daily transfer limit?",
    "How do I reset my mobile banking password?",
]
INTERRUPT = "Excuse me, one moment please."
TYPED = ["How do I apply for a farm loan?", "What are your opening hours?", "How do I open a new account?"]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def start_server(workdir: Path) -> tuple[Child, str]:
    config = workdir / "server.toml"
    config.write_text(
        f'[server]\nport = 0\n[auth]\nsecret = "{SECRET}"\n[storage]\ndata_dir = "{workdir}/data"\n'
        f'[log]\nlevel = "WARNING"\n[signaling]\nmessages_per_second = 1000\nmessage_burst = 1000\n'
        f'[recording]\nenabled = false\n[stages]\nenabled = ["asr"]\n[speech]\nasr_language = "en"\n'
        f'prompt_on_answer = false\n[digital_human]\ngreet_delay_s = 0.3\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = Child([sys.executable, "-m", "teller", "serve", "--config", str(config)], workdir / "server.log", env)
    return server, server.read_event("url", timeout=120)["url"]


def rest(url: str, method: str, path: str, token: str, body: Any = None) -> Any:
    request = urllib.request.Request(f"{url}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class Customer:
    def __init__(self, url: str, who: str, mic: Any = None) -> None:
        from teller.client import RoomClient
        from teller.signaling.tokens import TokenIssuer

        self.url = url
        self.token = TokenIssuer(SECRET).issue(room=f"cust-{who}", role="customer", subject=who, name=who)
        self.client = RoomClient(url, self.token)
        self.mic = mic
        self.said: list[dict[str, Any]] = []
        self.heard: list[dict[str, Any]] = []
        self.client.on("data", lambda m: self.said.append({**m["payload"], "_at": time.time()})
                       if m.get("topic") == "bot.say" else None)
        self.client.on("data", lambda m: self.heard.append(m["payload"]) if m.get("topic") == "speech.caption" else None)
        self.call: dict[str, Any] = {}
        self.subscription: Any = None

    def bot_id(self) -> str | None:
        return next((p["participant_id"] for p in self.client.participants.values()
                     if p.get("identity") == "teller-digital-human" and len(p.get("tracks", [])) >= 2), None)

    async def start(self) -> None:
        self.call = await asyncio.to_thread(rest, self.url, "POST", "/v1/calls", self.token,
                                            {"business": "general_enquiry", "language": "en", "target": "digital_human"})
        await self.client.connect()
        if self.mic is not None:
            publication = await self.client.publish([self.mic], data_channel=True)
            await publication.wait_connected(20)
        deadline = time.monotonic() + 60
        while self.bot_id() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the assistant did not come")
            await asyncio.sleep(0.05)
        self.subscription = await self.client.subscribe(self.bot_id())
        await self.subscription.wait_connected(20)


class Watch:
    """A customer's view of the assistant: video arrivals (and mouth openness), audio loudness."""

    def __init__(self, customer: Customer, mouths: bool, pool: ThreadPoolExecutor | None = None) -> None:
        from teller.speech.voice import loudness

        self._loudness = loudness
        self.video: list[tuple[float, int]] = []
        self.audio: list[tuple[float, float]] = []
        self.mouth: list[tuple[float, float]] = []
        self._mesh: Any = None
        self._pool = pool
        if mouths:
            import mediapipe as mp

            self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1)
        self._tasks = [asyncio.ensure_future(self._video(customer.subscription.track("video"))),
                       asyncio.ensure_future(self._audio(customer.subscription.track("audio")))]

    def _openness(self, i420: np.ndarray) -> float | None:
        import cv2

        found = self._mesh.process(cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)).multi_face_landmarks
        if not found:
            return None
        lm = found[0].landmark
        h, w = i420.shape[0] * 2 // 3, i420.shape[1]
        gap = np.hypot((lm[13].x - lm[14].x) * w, (lm[13].y - lm[14].y) * h)
        face = np.hypot((lm[10].x - lm[152].x) * w, (lm[10].y - lm[152].y) * h)
        return float(gap / face)

    async def _video(self, track: Any) -> None:
        while True:
            frame = await track.recv()
            now = time.monotonic()
            self.video.append((now, int(frame.pts)))
            if self._mesh is not None and self._pool is not None:
                # Measured in one worker, in order, never holding up reception: a result
                # that comes late still carries its frame's arrival time.
                job = self._pool.submit(self._openness, frame.to_ndarray(format="yuv420p"))
                job.add_done_callback(lambda done, at=now: self._measured(at, done))

    def _measured(self, at: float, done: Any) -> None:
        openness = None if done.cancelled() or done.exception() else done.result()
        if openness is not None:
            self.mouth.append((at, openness))

    async def _audio(self, track: Any) -> None:
        while True:
            frame = await track.recv()
            self.audio.append((time.monotonic(), self._loudness(frame.to_ndarray().reshape(-1))))

    def quiet_since(self, since: float, hold_s: float) -> float | None:
        """When the voice went quiet after `since` for `hold_s`: a silent voice sends no
        frames at all, so quiet is the absence of loud ones."""
        last = since
        for t in [t for t, level in self.audio if t >= since and level >= 0.15]:
            if t - last >= hold_s:
                return last
            last = t
        return last if time.monotonic() - last >= hold_s else None

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._mesh is not None:
            if self._pool is not None:
                # A frame still queued for the mesh would run on a closed graph: MediaPipe
                # then crashes the process (SIGSEGV), losing every figure printed so far.
                await asyncio.to_thread(self._pool.shutdown, True, cancel_futures=True)
            self._mesh.close()


def intervals(arrivals: list[float]) -> tuple[float, float]:
    """(frames per second, interval p99 ms) of arrival times."""
    if len(arrivals) < 3:
        return 0.0, float("inf")
    gaps = np.diff(np.array(arrivals)) * 1000
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), float(np.percentile(gaps, 99))


async def bench_avatars(url: str, pid: int, counts: list[int], seconds: float) -> dict[str, Any]:
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(5)
    idle_cores = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    runs = []
    for n in counts:
        customers = [Customer(url, f"av{n}-{i}-{int(time.time())}") for i in range(n)]
        await asyncio.gather(*(c.start() for c in customers))
        watches = [Watch(c, mouths=False) for c in customers]
        await asyncio.sleep(2.0)
        ask = 0
        for c in customers:
            await c.client.send_data({"text": TYPED[ask % len(TYPED)]}, topic="chat")
        window_start = time.monotonic()
        cpu0 = cpu_seconds(pid)
        next_ask = window_start + 4.0
        while time.monotonic() - window_start < seconds:
            await asyncio.sleep(0.2)
            if time.monotonic() >= next_ask:  # a new question before the answer ends: it talks all the time
                ask += 1
                for c in customers:
                    await c.client.send_data({"text": TYPED[ask % len(TYPED)]}, topic="chat")
                next_ask += 4.0
        window = time.monotonic() - window_start
        cores = (cpu_seconds(pid) - cpu0) / window
        per = []
        for w in watches:
            arrivals = [t for t, _ in w.video if window_start <= t <= window_start + window]
            fps, p99 = intervals(arrivals)
            talking = [level for t, level in w.audio if window_start <= t <= window_start + window]
            per.append({"fps": round(fps, 2), "interval_p99_ms": round(p99, 1),
                        "talking_share": round(sum(1 for x in talking if x > 0.2) / max(1, len(talking)), 2)})
        for w in watches:
            await w.close()
        for c in customers:
            await asyncio.to_thread(rest, url, "DELETE", f"/v1/calls/{c.call['call_id']}", c.token)
            await c.client.close()
        await asyncio.sleep(2.0)
        runs.append({
            "avatars": n, "server_cores": round(cores, 3),
            "cores_per_avatar": round((cores - idle_cores) / n, 3),
            "fps_min": min(p["fps"] for p in per), "interval_p99_ms_max": max(p["interval_p99_ms"] for p in per),
            "talking_share_min": min(p["talking_share"] for p in per), "per_avatar": per,
        })
    return {"benchmark": "digital_human_avatars", "seconds": seconds, "idle_server_cores": round(idle_cores, 3),
            "runs": runs, "target": {"fps": 30, "cores_per_avatar": 0.3}, "cpus": os.cpu_count()}


async def bench_answer(url: str, repeat: int) -> dict[str, Any]:
    from teller.client import SpeechTrack
    from teller.config import load_config
    from teller.speech.tts import TtsEngine

    engine = TtsEngine(load_config(env={}).speech)
    try:
        speech = {t: np.concatenate([p async for p in engine.stream(t, "en")]) for t in [*QUESTIONS, INTERRUPT]}
    finally:
        engine.close()
    mic = SpeechTrack()
    customer = Customer(url, f"answer-{int(time.time())}", mic)
    await customer.start()
    pool = ThreadPoolExecutor(1)
    watch = Watch(customer, mouths=True, pool=pool)
    mouth_start, audio_start, barge = [], [], []
    try:
        await asyncio.sleep(1.0)
        await wait_quiet(watch, 1.0, 30)
        closed = float(np.median([o for _, o in watch.mouth[-20:]]))
        for i in range(repeat):
            question = QUESTIONS[i % len(QUESTIONS)]
            ended_wall = await mic.say(speech[question])
            ended = time.monotonic() - (time.time() - ended_wall)
            loud = first_after(watch.audio, ended, 0.3)
            opened = first_after(watch.mouth, ended, closed + 0.03)
            try:
                await wait_for(lambda: loud() is not None and opened() is not None, 15)  # noqa: B023
            except TimeoutError:
                raise TimeoutError(f"no answer to {question!r}: loud {loud()}, mouth {opened()} (closed {closed:.3f}, "
                                   f"max {max((o for t, o in watch.mouth if t > ended), default=None)}), "
                                   f"said {[s.get('kind') for s in customer.said]}, heard "
                                   f"{[(h.get('text'), h.get('final'), h.get('utterance_end')) for h in customer.heard]}") from None
            audio_start.append(loud() - ended)  # type: ignore[operator]
            mouth_start.append(opened() - ended)  # type: ignore[operator]
            # Barge in a second into the answer.
            await asyncio.sleep(1.0)
            began = time.monotonic()
            interrupt = mic.say(speech[INTERRUPT])
            await interrupt
            quiet = watch.quiet_since(began, 0.3)
            if quiet is not None:
                barge.append(quiet - began)
            await asyncio.sleep(3.0)  # "excuse me..." gets its own (not-understood) reply; let it pass
            await wait_quiet(watch, 1.0, 30)
        mouth = [o for _, o in watch.mouth]
        t_mouth = np.array([t for t, _ in watch.mouth])
        t_audio = np.array([t for t, _ in watch.audio])
        level = np.array([v for _, v in watch.audio])
        r, lag = max((float(np.corrcoef(mouth, np.interp(t_mouth + lag, t_audio, level))[0, 1]), float(lag))
                     for lag in np.arange(-0.3, 0.301, 0.01))
        stats = await asyncio.to_thread(rest, url, "GET", "/v1/digital-human", service_token())
    finally:
        await watch.close()
        pool.shutdown()
        await customer.client.close()
    return {
        "benchmark": "digital_human_answer", "questions": repeat,
        "answer_start_mouth_s_p50": pct(mouth_start, 0.5), "answer_start_mouth_s_max": pct(mouth_start, 1.0),
        "answer_start_audio_s_p50": pct(audio_start, 0.5),
        "server_answer_start_s_p50": stats.get("answer_start_s_p50"),
        "barge_in_ms_p50": None if not barge else round(1000 * pct(barge, 0.5), 0),  # type: ignore[operator]
        "barge_in_ms_max": None if not barge else round(1000 * pct(barge, 1.0), 0),  # type: ignore[operator]
        "barge_ins": len(barge), "server_barge_in_ms_p50": stats.get("barge_in_ms_p50"),
        "lipsync_r": round(r, 3), "lipsync_audio_lag_ms_on_arrival": round(lag * 1000),
        "target": {"answer_start_s": 1.5, "barge_in_ms": 300, "lipsync_window_ms": [-45, 125]},
    }


def first_after(series: list[tuple[float, float]], since: float, above: float) -> Any:
    """A probe: the time of the first sample after `since` above `above`, or None yet."""
    return lambda: next((t for t, value in series if t > since and value > above), None)


def service_token() -> str:
    from teller.signaling.tokens import Grants, TokenIssuer

    return TokenIssuer(SECRET).issue(room="*", role="service", grants=Grants(True, True, True, True))


async def wait_for(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the assistant did not answer")
        await asyncio.sleep(0.02)


async def wait_quiet(watch: Watch, hold_s: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(level >= 0.15 for t, level in watch.audio if t > time.monotonic() - hold_s):
            return
        await asyncio.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["avatars", "answer", "all"])
    parser.add_argument("--counts", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="teller-bench-dh-"))
    server, url = start_server(workdir)
    try:
        wait_ready(url)
        if args.part in ("answer", "all"):
            print(json.dumps(asyncio.run(bench_answer(url, args.repeat))), flush=True)
        if args.part in ("avatars", "all"):
            counts = [int(x) for x in args.counts.split(",")]
            print(json.dumps(asyncio.run(bench_avatars(url, server.proc.pid, counts, args.seconds))), flush=True)
    finally:
        server.stop()


def wait_ready(url: str, timeout: float = 180) -> None:
    """Until the ASR model is loaded and the bot's lines are synthesised (as a server in
    service would be; the first question would wait for them otherwise)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/v1/speech", headers={
                "Authorization": f"Bearer {service_token()}"}), timeout=10) as response:
            body = json.loads(response.read())
        prepared = rest(url, "GET", "/v1/digital-human", service_token()).get("prepared")
        if body["asr"].get("ready") and prepared:
            return
        time.sleep(0.5)


if __name__ == "__main__":
    main()
