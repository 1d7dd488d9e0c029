"""The speech hub of a media process: what the ASR stages hear becomes captions,
transcript lines, and risk alerts.

It lives where the media is (embedded, or a cluster's SFU node) because the stage
does. Every final line is masked before it leaves the hub; the original of a line
with personal numbers travels sealed beside it (seal.py). A risk cue reaches the
staff in the room (`speech.risk`), the session timeline (`fraud_risk` or
`content_risk`, which flags the recording), the webhooks, and the room's `speech`
doc in the state store that the supervisors' list and GET /v1/rooms/{room}/transcript
read from any signalling process.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from ..config import SpeechSettings
from ..sfu.participant import STAFF_ROLES
from ..state.room_docs import RoomDocs
from .asr import AsrEngine, EngineStats, Job, Transcript, WhisperTranscriber
from .masking import mask
from .risk import RiskDetector, RiskHit, load_rules_file
from .seal import Sealer
from .vad import RATE, Chunk, Endpointer, VadSettings

if TYPE_CHECKING:
    from ..sfu.node import Node
    from ..sfu.room import Room
    from ..sfu.stages.base import StageContext
    from ..state import StateStore

log = logging.getLogger("teller.speech")

DOC_KIND = "speech"
DOC_LINES = 200
DOC_RISKS = 50
# The same rule from the same speaker within this long is one alert, not many.
RISK_REPEAT_S = 30.0
# A speaker whose frames stop this long has stopped speaking (muted, gone).
FRAME_GAP_S = 0.6
RISK_TIMELINE = {"fraud_coaching": "fraud_risk"}
CHAT_TOPICS = frozenset({"chat"})
# Fraud-coaching cues count from these speakers: the people a fraudster coaches.
COACHED_ROLES = frozenset({"customer"})
MAX_CHAT_CHARS = 2000


@dataclass
class _RoomSpeech:
    lines: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=DOC_LINES))
    risks: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=DOC_RISKS))
    hits: int = 0
    recent: dict[tuple[str, str], float] = field(default_factory=dict)  # (speaker, rule) -> when
    write_pending: bool = False


class SpeakerStream:
    """One microphone being transcribed: resampling, endpointing, decode jobs."""

    def __init__(self, hub: SpeechHub, room: str, participant: dict[str, Any], track_id: str) -> None:
        self.hub = hub
        self.room = room
        self.participant_id = str(participant.get("participant_id", ""))
        self.role = str(participant.get("role", ""))
        self.name = str(participant.get("name") or participant.get("identity") or "")
        self.key = f"{room}/{self.participant_id}/{track_id}"
        self.language: str | None = hub.settings.asr_language or None
        self.endpointer = Endpointer(hub.vad)
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._t0: float | None = None  # wall time of sample 0
        # The last final's text while the utterance goes on, and its piece.
        self._context = ""
        self._context_seq = -2
        self._active = False
        self.closed = False

    def wall(self, offset: float) -> float:
        return (self._t0 or time.time()) + offset

    def feed(self, frame: av.AudioFrame) -> None:
        now = time.time()
        if self._t0 is None:
            self._t0 = now
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)] or [np.zeros(0, np.int16)])
        # After a gap (muted, lost packets) the sample clock is set back to the wall clock.
        expected = self._t0 + self.endpointer.samples / RATE
        if now - expected > 1.0 and not self.endpointer.speaking:
            self._t0 = now - self.endpointer.samples / RATE
        for chunk in self.endpointer.feed(pcm):
            self._submit(chunk)
        self._check_activity()

    def _check_activity(self) -> None:
        """Whether this speaker is talking, for a bot that must stop when they start."""
        if self.endpointer.speaking:
            if not self._active and self.endpointer.utterance_speech_s >= self.hub.activity_after_s:
                self._active = True
                self.hub._activity(self, True)
        elif self._active:
            self._active = False
            self.hub._activity(self, False)

    def pause(self) -> None:
        for chunk in self.endpointer.flush():
            self._submit(chunk)
        self._check_activity()

    def close(self) -> None:
        self.pause()
        self.closed = True

    def _submit(self, chunk: Chunk) -> None:
        job = Job(self.key, chunk.seq, chunk.final, chunk.audio, self.language,
                  lambda job, result, chunk=chunk: self.hub._on_result(self, chunk, result),
                  context=lambda seq=chunk.seq: self._context if self._context_seq == seq - 1 else "")
        if chunk.final:
            self.hub.engine.submit_final(job)
        else:
            self.hub.engine.offer_partial(job)

    def remember(self, chunk: Chunk, text: str) -> None:
        self._context, self._context_seq = ("", -2) if chunk.utterance_end else (text, chunk.seq)

    def learn_language(self, result: Transcript) -> None:
        if self.hub.settings.asr_language or not result.language:
            return
        if result.language_probability >= 0.8 or self.language is None:
            self.language = result.language if result.language_probability >= 0.5 else self.language


class SpeechHub:
    def __init__(
        self,
        node: Node,
        settings: SpeechSettings,
        *,
        store: StateStore | None,
        secret: str,
        cache_root: Path,
        asr_enabled: bool,
        webhook: Callable[[str, dict[str, Any]], None] | None = None,
        engine: AsrEngine | None = None,
        activity_after_s: float = 0.1,
    ) -> None:
        self.node = node
        self.settings = settings
        self.store = store
        self.sealer = Sealer(secret)
        self.webhook = webhook or (lambda event, body: None)
        self.asr_enabled = asr_enabled
        self.activity_after_s = activity_after_s
        self.roles = frozenset(settings.asr_roles)
        self.vad = VadSettings(
            level_db=settings.vad_level_db, margin_db=settings.vad_margin_db,
            endpoint_silence_s=settings.endpoint_silence_s, pause_split_s=settings.pause_split_s,
            min_chunk_s=settings.min_chunk_s, max_chunk_s=settings.max_chunk_s,
            partial_interval_s=settings.partial_interval_s,
        )
        self._cache_root = cache_root
        self._engine = engine
        self.detector = RiskDetector(load_rules_file(settings.risk_rules or None)) if settings.risk else None
        self._rooms: dict[str, _RoomSpeech] = {}
        self._streams: dict[str, SpeakerStream] = {}
        self._docs = RoomDocs(store, DOC_KIND, node.id) if store is not None else None
        self._start_task: asyncio.Task[None] | None = None
        self.captions_sent = 0
        self.lines = 0
        self.risk_hits = 0
        self.latencies: collections.deque[float] = collections.deque(maxlen=500)
        node.timeline_listeners.append(self._on_timeline)
        node.data_observers.append(self._on_data)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def engine(self) -> AsrEngine:
        if self._engine is None:
            from .models import whisper_model_dir

            s = self.settings
            model_dir = whisper_model_dir(s.asr_model, self._cache_root)
            transcriber = WhisperTranscriber(model_dir, threads=s.asr_threads, workers=s.asr_workers,
                                             compute_type=s.compute_type, beam_size=s.beam_size)
            self._engine = AsrEngine(transcriber, workers=s.asr_workers, max_backlog_s=s.max_backlog_s)
        return self._engine

    def start(self) -> None:
        """Loads the model in the background, so the first words of the first call are not lost to it."""
        if self.asr_enabled and self._start_task is None:
            self._start_task = asyncio.create_task(self._start(), name="asr-start")

    async def _start(self) -> None:
        try:
            engine = await asyncio.to_thread(lambda: self.engine)
        except Exception as exc:
            log.error("ASR is off: its model cannot be found", extra={"error": repr(exc)})
            self.asr_enabled = False
            return
        await engine.start()
        if not engine.ready:
            self.asr_enabled = False  # the model did not load: no stage attaches from now on

    async def close(self) -> None:
        if self._start_task is not None:
            self._start_task.cancel()
            await asyncio.gather(self._start_task, return_exceptions=True)
        if self._engine is not None:
            await self._engine.close()
        if self._docs is not None:
            await self._docs.close()
        for listeners, fn in ((self.node.timeline_listeners, self._on_timeline), (self.node.data_observers, self._on_data)):
            if fn in listeners:
                listeners.remove(fn)

    @property
    def ready(self) -> bool:
        """The model is loaded and decoding."""
        return self._engine is not None and self._engine.ready

    def transcribes(self, role: str) -> bool:
        return self.asr_enabled and role in self.roles

    def open_stream(self, ctx: StageContext) -> SpeakerStream:
        stream = SpeakerStream(self, ctx.room, ctx.participant, str(ctx.track.get("track_id", "")))
        self._streams[stream.key] = stream
        if self._start_task is None:
            self.start()
        return stream

    def close_stream(self, stream: SpeakerStream) -> None:
        stream.close()
        self._streams.pop(stream.key, None)

    # -- results -----------------------------------------------------------------------

    def _room(self, name: str) -> Room | None:
        room = self.node.rooms.get(name)
        return None if room is None or room.closed else room

    def _on_result(self, stream: SpeakerStream, chunk: Chunk, result: Transcript) -> None:
        room = self._room(stream.room)
        text = result.text.strip()
        if room is None or not text:
            return
        if chunk.final:
            stream.learn_language(result)
            stream.remember(chunk, text)
        masked = mask(text)
        start, end = stream.wall(chunk.start), stream.wall(chunk.end)
        caption = {
            "participant_id": stream.participant_id, "name": stream.name, "role": stream.role,
            "text": masked.text, "final": chunk.final, "start": round(start, 3), "end": round(end, 3),
            "seq": chunk.seq, "language": result.language, "utterance_end": chunk.utterance_end,
        }
        room.send_data(None, caption, "speech.caption", None)
        self.captions_sent += 1
        if chunk.final:
            self.lines += 1
            self.latencies.append(time.time() - end)
            event: dict[str, Any] = {k: caption[k] for k in ("participant_id", "name", "role", "text", "start", "end", "seq", "language")}
            event["pii"] = bool(masked.spans)
            if masked.spans:
                event["sealed"] = self.sealer.seal(text, room.sid)
            self.node.timeline(room, "transcript", **event)
            state = self._rooms.setdefault(room.name, _RoomSpeech())
            state.lines.append({k: event[k] for k in ("participant_id", "name", "role", "text", "start", "end", "language")})
            self._write_doc(room)
        self._scan(room, stream.participant_id, stream.role, text, masked.text, source="speech")

    def _activity(self, stream: SpeakerStream, speaking: bool) -> None:
        """`speech.activity` to the room's service participants (a digital human): the
        customer started or stopped talking. Not per frame: twice per utterance."""
        room = self._room(stream.room)
        if room is None:
            return
        bots = [p.id for p in room.participants.values() if p.role == "service" and p.permissions.data]
        if bots:
            room.send_data(None, {"participant_id": stream.participant_id, "role": stream.role, "speaking": speaking,
                                  "ts": round(time.time(), 3)}, "speech.activity", bots)

    def _on_data(self, room: Room, sender: Any, topic: str | None, payload: Any) -> None:
        """Chat goes through the same risk rules as speech."""
        if topic not in CHAT_TOPICS or self.detector is None:
            return
        text = payload.get("text") if isinstance(payload, dict) else payload
        if isinstance(text, str) and text.strip():
            text = text[:MAX_CHAT_CHARS]
            self._scan(room, sender.id, sender.role, text, mask(text).text, source="chat")

    def _scan(self, room: Room, participant_id: str, role: str, text: str, masked_text: str, *, source: str) -> None:
        if self.detector is None:
            return
        hits = self.detector.scan(text)
        if not hits:
            return
        state = self._rooms.setdefault(room.name, _RoomSpeech())
        now = time.time()
        for hit in hits:
            if hit.category == "fraud_coaching" and role not in COACHED_ROLES:
                continue  # an agent reading out the bank's own warning is no cue
            key = (participant_id, hit.rule_id)
            if now - state.recent.get(key, -1e9) < RISK_REPEAT_S:
                continue
            state.recent[key] = now
            self._raise(room, state, hit, participant_id, role, masked_text, source, now)

    def _raise(self, room: Room, state: _RoomSpeech, hit: RiskHit, participant_id: str, role: str,
               masked_text: str, source: str, now: float) -> None:
        phrase = mask(hit.phrase).text
        alert = {
            "id": secrets.token_hex(6), "category": hit.category, "severity": hit.severity, "rule": hit.rule_id,
            "phrase": phrase, "text": masked_text, "participant_id": participant_id, "role": role,
            "source": source, "ts": round(now, 3), "advice": dict(hit.advice),
        }
        staff = [p.id for p in room.participants.values() if p.role in STAFF_ROLES and p.permissions.data]
        if staff:
            room.send_data(None, alert, "speech.risk", staff)
        self.node.timeline(room, RISK_TIMELINE.get(hit.category, "content_risk"),
                           **{k: v for k, v in alert.items() if k != "advice"})
        self.webhook("speech.risk", {"room": room.name, "session_id": room.sid, **alert})
        state.hits += 1
        state.risks.append(alert)
        self.risk_hits += 1
        log.warning("risk cue heard", extra={"room": room.name, "rule": hit.rule_id, "category": hit.category})
        self._write_doc(room)

    # -- the room's doc in the state store ------------------------------------------------

    def room_doc(self, room: Room) -> dict[str, Any]:
        state = self._rooms.get(room.name) or _RoomSpeech()
        risks = list(state.risks)
        return {
            "room": room.name, "session_id": room.sid, "node_id": self.node.id, "updated_at": round(time.time(), 3),
            "lines": list(state.lines), "risk": risks,
            "risk_summary": {
                "hits": state.hits,
                "categories": sorted({r["category"] for r in risks}),
                "last": {k: risks[-1][k] for k in ("category", "severity", "phrase", "ts", "advice", "role")} if risks else None,
            },
        }

    def _write_doc(self, room: Room) -> None:
        """At most one write waiting per room; it carries whatever is current when it runs."""
        state = self._rooms.setdefault(room.name, _RoomSpeech())
        if self._docs is None or state.write_pending:
            return
        state.write_pending = True

        def current() -> dict[str, Any]:
            state.write_pending = False
            return self.room_doc(room)

        self._docs.put(room.name, current)

    def _on_timeline(self, room: Room, event: dict[str, Any]) -> None:
        gone = event.get("type") in ("room_closed", "room_moved") and self._rooms.pop(room.name, None) is not None
        if gone and self._docs is not None:
            self._docs.forget(room.name)

    def engine_stats(self) -> EngineStats | None:
        return self._engine.stats if self._engine is not None else None

    @property
    def streams(self) -> int:
        return len(self._streams)

    def stats(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "asr_enabled": self.asr_enabled,
            "streams": len(self._streams),
            "captions_sent": self.captions_sent,
            "lines": self.lines,
            "risk_hits": self.risk_hits,
            "final_latency_p50_s": round(lat[len(lat) // 2], 3) if lat else None,
            "engine": self._engine.to_json() if self._engine is not None else None,
        }
