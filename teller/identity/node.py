"""The node side of identity checks: watching customers' faces, running challenges,
capturing evidence.

On the event loop a frame costs a time comparison, and for the few frames that are
analysed a copy of their planes; the face mesh runs in this process's one analysis
thread. Rates adapt twice over: a stream analyses its next frame only once its last
one is done, and the governor scales every stream's rate down while analysis takes
more than its share of a core. The watch runs at a low rate for the whole call; a
challenge raises its stream's rate while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import logs
from ..cluster.ask import answer_node
from ..config import Config
from ..errors import Conflict, TellerError, Unavailable
from ..recording.session_info import room_call_id
from ..state import StateStore, StateUnavailable
from . import status as st
from .analysis import (
    AnalysisUnavailable,
    FaceAnalyzer,
    FaceReading,
    copy_frame,
    frame_to_rgb,
)
from .challenge import Challenge, Event, choose_steps
from .governor import Governor
from .texts import PROMPTS, RESULTS, text

if TYPE_CHECKING:
    from ..recording.objects import ObjectStore
    from ..recording.recorder import Recorder
    from ..sfu.node import Node
    from ..sfu.room import Room
    from ..sfu.stages.base import FrameStream, StageContext

log = logging.getLogger("teller.identity")

CUSTOMER = "customer"
# A face state counts once it has held this long (the mesh flickers on a hard frame).
SETTLE_S = 0.6
# With no analysed frame for this long the face state is unknown (video stopped).
STALE_S = 3.0
TICK_S = 0.25
CAPTURE_TIMEOUT_S = 5.0
Planes = tuple[str, np.ndarray]


class LivenessUnavailable(Unavailable):
    code = "liveness_unavailable"


@dataclass
class Attempt:
    attempt_id: str
    challenge: Challenge
    by: str
    # The sharpest frontal frame so far: (score, planes, width, height, wall time).
    best: tuple[float, Planes, int, int, float] | None = None


@dataclass
class Watch:
    """One customer video stream of a room."""

    room: str
    participant_id: str
    language: str = "en"
    call_id: str | None = None
    analyzer: FaceAnalyzer | None = None
    busy: bool = False
    next_due: float = 0.0
    last_reading_at: float | None = None
    face: str = "unknown"
    candidate: str = "unknown"
    candidate_since: float = 0.0
    bad_kind: str | None = None
    bad_since: float = 0.0
    cue_sent: bool = False
    attempt: Attempt | None = None
    captures: list[asyncio.Future[tuple[Planes, int, int, float]]] = field(default_factory=list)
    analysed: int = 0
    skipped: int = 0
    # Readings, ticks and commands take turns (FIFO), so the challenge sees time in order.
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    ended: bool = False
    # Opened for a challenge or a capture only (the call's business is not watched): it
    # ends when no command is pending on it and no challenge runs.
    on_demand: bool = False
    pending: int = 0


class IdentityNode:
    def __init__(self, config: Config, store: StateStore, node: Node, secret: str,
                 objects: ObjectStore | None = None, recorder: Recorder | None = None) -> None:
        self.settings = config.identity
        self.store = store
        self.node = node
        self.secret = secret
        self.objects = objects
        self.recorder = recorder
        # The voice service where this process has one (embedded): prompts are spoken too.
        self.voice: Any = None
        self.governor = Governor(self.settings.cpu_budget)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="liveness")
        self._watches: dict[str, Watch] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.cues = 0

    # -- the stage ------------------------------------------------------------------------

    async def watch(self, ctx: StageContext, frames: FrameStream[Any]) -> None:
        """Runs for as long as a customer publishes camera video (the "liveness" stage),
        unless the call's business is not watched: then it returns at once, the stage host
        stops decoding, and a challenge or a capture opens the frames it needs itself."""
        watch = Watch(room=ctx.room, participant_id=str(ctx.track["participant_id"]))
        watch.call_id = await self._call_id(watch)
        if watch.call_id is not None and not await self._watched(watch.call_id):
            return
        await self._consume(watch, frames)

    async def _watched(self, call_id: str) -> bool:
        businesses = self.settings.watch_businesses
        if "*" in businesses:
            return True
        with contextlib.suppress(StateUnavailable):
            call = await self.store.get_doc("call", call_id)
            return (call or {}).get("business") in businesses
        return True

    async def _on_demand(self, room_name: str) -> Watch:
        """A watch for one challenge or capture in a room whose customer is not watched."""
        room = self._room(room_name)
        publication = _customer_camera(room) if room is not None else None
        if room is None or publication is None:
            raise Conflict("the customer publishes no video to check", code="no_video")
        watch = Watch(room=room_name, participant_id=publication.participant_id, on_demand=True, pending=1)
        stream = self.node.stages.open_decoded(publication)
        self._watches[room_name] = watch

        async def run() -> None:
            try:
                await self._consume(watch, stream)
            finally:
                self.node.stages.close_decoded(publication, stream)

        self._spawn(run())
        return watch

    async def _consume(self, watch: Watch, frames: FrameStream[Any]) -> None:
        self._watches[watch.room] = watch
        loop = asyncio.get_running_loop()
        ticker = asyncio.create_task(self._tick_loop(watch), name="liveness-tick")
        try:
            watch.call_id = watch.call_id or await self._call_id(watch)
            async for frame in frames:
                now = loop.time()
                if watch.captures:
                    taken = (copy_frame(frame), frame.width, frame.height, time.time())
                    for waiter in watch.captures:
                        if not waiter.done():
                            waiter.set_result(taken)
                    watch.captures.clear()
                if watch.on_demand and not watch.pending and not self._challenging(watch):
                    break  # what it was opened for is done
                if now < watch.next_due:
                    continue
                if watch.busy:
                    watch.skipped += 1
                    continue
                fps = self.settings.challenge_fps if self._challenging(watch) else self.settings.watch_fps
                fps = max(self.settings.min_fps, fps * self.governor.factor)
                watch.next_due = now + 1.0 / fps
                watch.busy = True
                planes = copy_frame(frame)
                future = loop.run_in_executor(self._executor, self._analyse, watch, planes, now)
                future.add_done_callback(lambda f, w=watch, p=planes, size=(frame.width, frame.height):
                                         self._analysed(w, p, size, f))
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            if watch.attempt is not None and not watch.attempt.challenge.done:
                async with watch.turn:
                    await self._handle(watch, watch.attempt.challenge.fail(loop.time(), "video_ended"))
            if self._watches.get(watch.room) is watch:
                del self._watches[watch.room]
            watch.ended = True
            self._executor.submit(self._release, watch)  # after any analysis still queued

    @staticmethod
    def _release(watch: Watch) -> None:
        analyzer, watch.analyzer = watch.analyzer, None
        if analyzer is not None:
            analyzer.close()

    def _analyse(self, watch: Watch, planes: Planes, t: float) -> FaceReading | None:
        """In the analysis thread. MediaPipe spreads its work over threads of its own, so
        the cost counted is the process's CPU time while the analysis runs: an upper
        bound, which makes analysis give way when the rest of the process is busy too."""
        if watch.ended:
            return None
        if watch.analyzer is None:
            watch.analyzer = FaceAnalyzer()
        started = time.process_time()
        reading = watch.analyzer.analyse(frame_to_rgb(planes), t)
        self.governor.spent(time.process_time() - started)
        return reading

    def _analysed(self, watch: Watch, planes: Planes, size: tuple[int, int], future: asyncio.Future[FaceReading | None]) -> None:
        watch.busy = False
        if future.cancelled():
            return
        if future.exception() is not None:
            log.error("face analysis failed", exc_info=future.exception(), extra={"room": watch.room})
            return
        reading = future.result()
        if reading is None:
            return
        watch.analysed += 1
        watch.last_reading_at = reading.t
        self._spawn(self._after_reading(watch, reading, planes, size))

    async def _after_reading(self, watch: Watch, reading: FaceReading, planes: Planes, size: tuple[int, int]) -> None:
        async with watch.turn:
            await self._take_reading(watch, reading, planes, size)

    async def _take_reading(self, watch: Watch, reading: FaceReading, planes: Planes, size: tuple[int, int]) -> None:
        face = reading.state(self.settings.min_brightness)
        attempt = watch.attempt
        if attempt is not None and not attempt.challenge.done and face == "one_face" and reading.pose is not None:
            score = reading.sharpness * max(0.0, 1.0 - abs(reading.pose.yaw) / 0.3) * max(0.0, 1.0 - abs(reading.pose.roll) / 20.0)
            if attempt.best is None or score > attempt.best[0]:
                attempt.best = (score, planes, size[0], size[1], time.time())
        await self._settle(watch, face, reading)
        await self._coach(watch, face, reading)
        if attempt is not None:
            await self._handle(watch, attempt.challenge.feed(reading))

    # -- the coaching watch -------------------------------------------------------------------

    async def _settle(self, watch: Watch, face: str, reading: FaceReading) -> None:
        if face == watch.face:
            watch.candidate = face
            return
        if face != watch.candidate:
            watch.candidate, watch.candidate_since = face, reading.t
            if watch.face != "unknown":
                return
        elif reading.t - watch.candidate_since < SETTLE_S:
            return
        watch.face = face
        since = round(time.time(), 3)
        await self._update(watch, lambda d: {**d, "face": {"state": face, "faces": reading.faces, "since": since}})

    async def _coach(self, watch: Watch, face: str, reading: FaceReading) -> None:
        kind = {"no_face": "face_absent", "several_faces": "several_faces"}.get(face)
        if kind != watch.bad_kind:
            watch.bad_kind, watch.bad_since, watch.cue_sent = kind, reading.t, False
            return
        if kind is None or watch.cue_sent or reading.t - watch.bad_since < self.settings.watch_cue_s:
            return
        watch.cue_sent = True
        self.cues += 1
        cue = {"kind": kind, "ts": round(time.time(), 3), "duration_s": round(reading.t - watch.bad_since, 1)}
        log.info("identity risk cue", extra={"room": watch.room, "cue": kind})
        await self._update(watch, lambda d: {**d, "cues": [*d.get("cues", []), cue][-st.MAX_CUES:]})
        room = self._room(watch.room)
        if room is not None:
            self._send(room, "identity.cue", cue, self._staff(room))
            self.node.timeline(room, "risk_cue", source="identity", call_id=watch.call_id, **cue)
        await self._call_event(watch, {"type": "risk_cue", "source": "identity", **cue})

    async def _tick_loop(self, watch: Watch) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            try:
                async with watch.turn:
                    await self._tick(watch, now)
            except (StateUnavailable, TellerError):
                log.warning("identity state not updated", extra={"room": watch.room})

    async def _tick(self, watch: Watch, now: float) -> None:
        if watch.attempt is not None:
            await self._handle(watch, watch.attempt.challenge.tick(now))
        if watch.face != "unknown" and watch.last_reading_at is not None and now - watch.last_reading_at > STALE_S:
            watch.face = watch.candidate = "unknown"
            watch.bad_kind = None
            await self._update(watch, lambda d: {**d, "face": {"state": "unknown", "faces": 0, "since": round(time.time(), 3)}})

    # -- challenges -------------------------------------------------------------------------

    def _challenging(self, watch: Watch) -> bool:
        return watch.attempt is not None and not watch.attempt.challenge.done

    async def start_attempt(self, room_name: str, by: str) -> dict[str, Any]:
        watch = await self._open(room_name)
        try:
            async with watch.turn:
                return await self._start_attempt(watch, by)
        finally:
            watch.pending -= 1

    async def _open(self, room_name: str) -> Watch:
        """The room's watch, opened on demand if the customer is not watched; one command
        more is pending on it until the caller lets go."""
        watch = self._watches.get(room_name)
        if watch is None:
            return await self._on_demand(room_name)
        watch.pending += 1
        return watch

    async def _start_attempt(self, watch: Watch, by: str) -> dict[str, Any]:
        room_name = watch.room
        if self._challenging(watch):
            raise Conflict("a liveness check is already running", code="liveness_running")
        watch.call_id = watch.call_id or await self._call_id(watch)
        s = self.settings
        steps = choose_steps(s.steps, s.min_steps, s.max_steps)
        now = asyncio.get_running_loop().time()
        challenge = Challenge(steps=steps, started_at=now, position_timeout_s=s.position_timeout_s,
                              challenge_timeout_s=s.challenge_timeout_s, min_brightness=s.min_brightness)
        attempt = Attempt(attempt_id=f"LV_{secrets.token_hex(6)}", challenge=challenge, by=by)
        watch.attempt = attempt
        watch.next_due = 0.0
        started = round(time.time(), 3)
        liveness = {"attempt_id": attempt.attempt_id, "state": "positioning", "steps": steps, "step_index": -1,
                    "reason": None, "message": "", "started_at": started, "ended_at": None, "by": by}
        doc = await self._update(watch, lambda d: {**d, "liveness": liveness})
        room = self._room(room_name)
        if room is not None:
            self.node.timeline(room, "liveness_started", call_id=watch.call_id, attempt_id=attempt.attempt_id,
                               steps=steps, by=by)
        await self._handle(watch, challenge.start())
        return doc

    async def _handle(self, watch: Watch, events: list[Event]) -> None:
        attempt = watch.attempt
        if attempt is None or not events:
            return
        challenge = attempt.challenge
        room = self._room(watch.room)
        loop_now = asyncio.get_running_loop().time()
        for event in events:
            if event.kind == "prompt" and event.step is not None:
                prompt = {"attempt_id": attempt.attempt_id, "step": event.step, "index": event.index,
                          "count": len(challenge.steps), "text": text(PROMPTS, event.step),
                          "remaining_s": round(max(0.0, challenge.deadline - loop_now), 1)}
                if room is not None:
                    self._send(room, "identity.prompt", prompt, [watch.participant_id])
                self._speak(watch, prompt["text"])
                await self._update(watch, lambda d, state=challenge.state, index=event.index:
                                   _liveness(d, attempt.attempt_id, state=state, step_index=index))
            elif event.kind in ("passed", "failed"):
                await self._finish(watch, attempt, event, room)

    async def _finish(self, watch: Watch, attempt: Attempt, event: Event, room: Room | None) -> None:
        passed = event.kind == "passed"
        reason = event.reason
        ended = round(time.time(), 3)
        evidence = None
        if passed and attempt.best is not None and room is not None:
            _score, planes, width, height, taken = attempt.best
            evidence = await self._store_evidence(watch, room, "face", planes, width, height, taken, attempt.by, "")
        session_id = room.sid if room is not None else ""
        message = text(RESULTS, "passed" if passed else str(reason))["en"]

        def finish(d: dict[str, Any]) -> dict[str, Any]:
            if (d.get("liveness") or {}).get("attempt_id") != attempt.attempt_id:
                return d
            liveness = {**d["liveness"], "state": "passed" if passed else "failed", "reason": reason, "message": message,
                        "ended_at": ended, "session_id": session_id, "step_index": attempt.challenge.step_index}
            if passed:
                liveness["seal"] = st.seal(self.secret, str(d.get("call_id")), session_id, liveness)
            out = {**d, "liveness": liveness}
            if evidence is not None:
                out["evidence"] = {**d.get("evidence", {}), "face": evidence}
            return out

        await self._update(watch, finish)
        result = {"attempt_id": attempt.attempt_id, "passed": passed, "reason": reason,
                  "text": text(RESULTS, "passed" if passed else str(reason))}
        if room is not None:
            self._send(room, "identity.result", result, [watch.participant_id])
            self.node.timeline(room, "liveness_passed" if passed else "liveness_failed", call_id=watch.call_id,
                               attempt_id=attempt.attempt_id, steps=attempt.challenge.steps, reason=reason)
        self._speak(watch, result["text"])
        await self._call_event(watch, {"type": "liveness_passed" if passed else "liveness_failed",
                                       "attempt_id": attempt.attempt_id, "steps": attempt.challenge.steps, "reason": reason})
        log.info("liveness check ended", extra={"room": watch.room, "passed": passed, "reason": reason})

    def _speak(self, watch: Watch, texts: dict[str, str]) -> None:
        if self.voice is None:
            return
        language = watch.language if watch.language in texts else "en"
        try:
            self.voice.tts.check(language)
        except TellerError:
            return  # no voice for this language: the prompt is shown only
        self._spawn(self._say(watch.room, texts[language], language))

    async def _say(self, room: str, words: str, language: str) -> None:
        with contextlib.suppress(Exception):
            await self.voice.say(room, "liveness_prompt", words, language, "system")

    # -- evidence ---------------------------------------------------------------------------

    async def capture(self, room_name: str, kind: str, by: str, by_name: str) -> dict[str, Any]:
        """The next frame of the customer's video, full resolution, as evidence."""
        room = self._room(room_name)
        if room is None:
            raise Conflict("the customer publishes no video to capture", code="no_video")
        watch = await self._open(room_name)
        waiter: asyncio.Future[tuple[Planes, int, int, float]] = asyncio.get_running_loop().create_future()
        watch.captures.append(waiter)
        watch.pending -= 1  # the waiter holds the watch open now
        try:
            planes, width, height, taken = await asyncio.wait_for(waiter, CAPTURE_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable("no frame of the customer's video arrived in time", code="capture_timeout") from None
        finally:
            if waiter in watch.captures:
                watch.captures.remove(waiter)
        watch.call_id = watch.call_id or await self._call_id(watch)
        entry = await self._store_evidence(watch, room, kind, planes, width, height, taken, by, by_name)
        await self._update(watch, lambda d: {**d, "evidence": {**d.get("evidence", {}), kind: entry}})
        return entry

    async def _store_evidence(self, watch: Watch, room: Room, kind: str, planes: Planes, width: int, height: int,
                              taken: float, by: str, by_name: str) -> dict[str, Any]:
        jpeg = await asyncio.to_thread(_jpeg, planes)
        evidence_id = f"EV_{secrets.token_hex(6)}"
        call_id = watch.call_id or ""
        entry = {"evidence_id": evidence_id, "kind": kind, "ts": round(taken, 3), "by": by, "by_name": by_name,
                 "width": width, "height": height, "bytes": len(jpeg),
                 "url": f"/v1/calls/{call_id}/identity/evidence/{evidence_id}"}
        name = f"identity-{kind}-{evidence_id}.jpg"
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.add_evidence, room.sid, name, jpeg)
        if self.objects is not None:
            await self.objects.put_bytes(evidence_key(call_id, evidence_id), jpeg, content_type="image/jpeg")
        self.node.timeline(room, "evidence_captured", file=f"evidence/{name}", call_id=call_id,
                           **{k: v for k, v in entry.items() if k != "url"})
        await self._call_event(watch, {"type": "evidence_captured", **{k: v for k, v in entry.items() if k != "url"}})
        return entry

    # -- state and messages ---------------------------------------------------------------------

    async def _call_id(self, watch: Watch) -> str | None:
        with contextlib.suppress(StateUnavailable):
            call_id = await room_call_id(self.store, watch.room)
            if call_id:
                call = await self.store.get_doc("call", call_id)
                watch.language = str((call or {}).get("language") or watch.language)
            return call_id
        return None

    async def _update(self, watch: Watch, change: Any) -> dict[str, Any]:
        """Changes the call's identity document and shows the agents the result."""
        if watch.call_id is None:
            watch.call_id = await self._call_id(watch)
        if watch.call_id is None:
            return st.blank("", watch.room)
        call_id, room_name = watch.call_id, watch.room
        doc = await self.store.update_doc(st.IDENTITY, call_id, lambda d: change(d or st.blank(call_id, room_name)))
        assert doc is not None
        self.push(room_name, doc)
        return doc

    def push(self, room_name: str, doc: dict[str, Any]) -> None:
        room = self._room(room_name)
        if room is not None:
            status = st.shown(doc, self.secret, bool(doc.get("required")), "identity" in self.node.stages.services)
            self._send(room, "identity.status", status, self._staff(room))

    async def _call_event(self, watch: Watch, event: dict[str, Any]) -> None:
        if watch.call_id:
            with contextlib.suppress(StateUnavailable):
                await self.store.append_event(watch.call_id, {"ts": round(time.time(), 3), **event})

    def _room(self, name: str) -> Room | None:
        room = self.node.rooms.get(name)
        return room if room is not None and not room.closed else None

    @staticmethod
    def _staff(room: Room) -> list[str]:
        return [p.id for p in room.participants.values() if p.role not in (CUSTOMER, "service")]

    @staticmethod
    def _send(room: Room, topic: str, payload: Any, to: list[str]) -> None:
        if to and not room.closed:
            room.send_data(None, payload, topic, to)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, (StateUnavailable, TellerError)):
                log.warning("identity update failed: %s", exc)
            else:
                log.error("identity update failed", exc_info=exc)

    # -- commands from the REST side of another process ----------------------------------------

    async def on_node_command(self, message: dict[str, Any]) -> None:
        """A command from the REST side of another process (teller/cluster/ask.py)."""
        with logs.bind(room=str(message.get("room"))):
            if "reply" in message:
                await answer_node(self.store, message, lambda: self.command(message))
            else:
                with contextlib.suppress(TellerError, StateUnavailable):
                    await self.command(message)

    async def command(self, message: dict[str, Any]) -> dict[str, Any]:
        action, room = message.get("action"), str(message.get("room"))
        by, by_name = str(message.get("by", "")), str(message.get("by_name", ""))
        if action == "start":
            return await self.start_attempt(room, by)
        if action == "capture":
            return await self.capture(room, str(message.get("kind")), by, by_name)
        if action == "push":
            doc = await self.store.get_doc(st.IDENTITY, str(message.get("call_id")))
            if doc is not None:
                self.push(room, doc)
            return {}
        raise Conflict(f"unknown identity command {action!r}", code="invalid_message")

    def serves(self, room_name: str) -> bool:
        return self._room(room_name) is not None

    def stats(self) -> dict[str, Any]:
        ms = sorted(self.governor.cpu_ms)
        return {
            "streams": len(self._watches), "analysed": self.governor.analysed, "rate_factor": round(self.governor.factor, 3),
            "cpu_ms_p50": round(ms[len(ms) // 2], 2) if ms else None, "cues": self.cues,
            "skipped_busy": sum(w.skipped for w in self._watches.values()),
        }

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)


def check_available() -> None:
    try:
        import mediapipe  # noqa: F401
    except ImportError as exc:
        raise LivenessUnavailable(str(AnalysisUnavailable("MediaPipe is not installed (pip install 'teller[avatar]')"))) from exc


def evidence_key(call_id: str, evidence_id: str) -> str:
    return f"identity/{call_id}/{evidence_id}.jpg"


def _liveness(doc: dict[str, Any], attempt_id: str, **fields: Any) -> dict[str, Any]:
    """`doc` with its liveness changed, if it is still this attempt's."""
    liveness = doc.get("liveness")
    if not liveness or liveness.get("attempt_id") != attempt_id:
        return doc
    return {**doc, "liveness": {**liveness, **fields}}


def _jpeg(planes: Planes) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(frame_to_rgb(planes)).save(out, format="JPEG", quality=92)
    return out.getvalue()


def _customer_camera(room: Room) -> Any:
    for participant in room.participants.values():
        if participant.role != CUSTOMER:
            continue
        for publication in participant.publications():
            if publication.kind == "video" and publication.source == "camera" and not publication.ended:
                return publication
    return None
