"""The quality monitor of one SFU node: once a tick, every participant's figures.

It reads counters (teller/quality/stats.py), scores them (scores.py), raises and
clears alerts (alerts.py), moves subscribers between tiers (adapt.py), and tells:
staff in the room (data topic `quality.stats` every report interval, and
`quality.alert` at once, also to the participant concerned), the session timeline,
the webhooks, and the state store (a `quality` doc per room for the supervisors'
live list). All of it runs once a second on the event loop and costs a few
microseconds per track; nothing is added to the per-packet path.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import QualitySettings
from ..sfu.participant import STAFF_ROLES
from ..state.room_docs import RoomDocs
from .adapt import FULL, Adaptation, TierChange, TierRegistry
from .alerts import Alert, AlertBook, conditions
from .report import ParticipantReport
from .scores import audio_mos, video_tier, worst
from .stats import DownSampler, DownStats, UpSampler, UpStats

if TYPE_CHECKING:
    from ..sfu.forwarder import DownTrack
    from ..sfu.node import Node
    from ..sfu.participant import Participant
    from ..sfu.room import Room
    from ..state import StateStore

log = logging.getLogger("teller.quality")

DOC_KIND = "quality"
WRITE_TIMEOUT_S = 2.0


@dataclass
class _Member:
    """What the monitor keeps about one participant while it is in the room."""

    alerts: AlertBook
    adaptation: Adaptation | None
    report: ParticipantReport
    figures: dict[str, Any] = field(default_factory=dict)
    tracks: tuple[list[UpStats], list[DownStats]] = field(default_factory=lambda: ([], []))
    peak_fps: float = 0.0


@dataclass
class _RoomState:
    members: dict[str, _Member] = field(default_factory=dict)
    last_report: float = 0.0


@dataclass
class Totals:
    """Monotonic counters for /metrics, advanced by each tick's differences."""

    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    video_frames_out: int = 0
    packets_lost: int = 0
    alerts: dict[str, int] = field(default_factory=dict)
    tier_changes: int = 0


class QualityMonitor:
    def __init__(self, node: Node, settings: QualitySettings, *, store: StateStore | None = None,
                 webhook: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.node = node
        self.settings = settings
        self.store = store
        self.webhook = webhook or (lambda event, body: None)
        self.window_ticks = max(1, round(settings.window_s / settings.interval_s))
        self.tiers = TierRegistry(node.stages, settings)
        self.totals = Totals()
        # Called with (name, value) per tick and track: the loss and jitter histograms.
        self.observers: list[Callable[[str, float], None]] = []
        self._rooms: dict[str, _RoomState] = {}
        self._up: dict[str, UpSampler] = {}
        self._down: dict[int, DownSampler] = {}
        self._task: asyncio.Task[None] | None = None
        self._docs = RoomDocs(store, DOC_KIND, node.id, WRITE_TIMEOUT_S) if store is not None else None
        self._last_tick = 0.0
        self.tick_seconds = 0.0  # CPU time of the last tick
        self.cpu_seconds = 0.0  # of every tick so far: what statistics cost this process
        node.timeline_listeners.append(self._on_timeline)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._last_tick = asyncio.get_running_loop().time()
            self._task = asyncio.create_task(self._run(), name="quality-monitor")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.tiers.close()
        # Let go of every track: samplers hold publications and their peer connections.
        self._up.clear()
        self._down.clear()
        self._rooms.clear()
        if self._docs is not None:  # best effort: the store may be closing too
            await self._docs.close(cancel=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.interval_s)
            try:
                self.tick(loop.time())
            except Exception:
                log.exception("quality tick failed")

    # -- one tick -----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        started = time.thread_time()
        dt = max(1e-3, now - self._last_tick)
        self._last_tick = now
        up: dict[str, UpSampler] = {}
        down: dict[int, DownSampler] = {}
        for room in list(self.node.rooms.values()):
            if room.closed:
                continue
            try:
                self._tick_room(room, now, dt, up, down)
            except Exception:  # one room's trouble must not silence every other room
                log.exception("quality tick failed", extra={"room": room.name})
        for key, sampler in self._down.items():
            if down.get(key) is not sampler:  # ended or closed since the last tick
                sampler.take_delta()
                self._count_down(sampler)
        self._up, self._down = up, down
        for name in [n for n, r in self._rooms.items() if n not in self.node.rooms]:
            del self._rooms[name]
        self.tick_seconds = time.thread_time() - started
        self.cpu_seconds += self.tick_seconds

    def _tick_room(self, room: Room, now: float, dt: float, up: dict[str, UpSampler], down: dict[int, DownSampler]) -> None:
        state = self._rooms.setdefault(room.name, _RoomState())
        totals = self.totals
        figures_by_id: dict[str, dict[str, Any]] = {}
        up_stats: dict[str, UpStats] = {}
        for participant in list(room.participants.values()):
            for publisher in participant.publishers.values():
                self._observe_connect(publisher.transport)
                for publication in publisher.publications:
                    if publication.ended:
                        continue
                    sampler = self._up.get(publication.id)
                    if sampler is None:
                        sampler = UpSampler(publication, self.window_ticks)
                        if self.settings.adapt:  # weak subscribers get a tier, not the publisher's bitrate
                            publication.remb_policy = "max"
                    stats = sampler.sample(now, dt)
                    up[publication.id] = sampler
                    up_stats[publication.id] = stats
                    totals.bytes_in += sampler.delta[0]
                    totals.packets_in += sampler.delta[1]
                    totals.packets_lost += sampler.delta[2]
                    self._emit("loss", stats.loss)
                    self._emit("jitter", stats.jitter_ms / 1000.0)
        for participant in list(room.participants.values()):
            member = state.members.get(participant.id)
            if member is None:
                member = state.members[participant.id] = self._member(participant)
            ups = [up_stats[p.id] for p in participant.publications() if p.id in up_stats]
            downs: list[DownStats] = []
            video_downtracks: list[DownTrack] = []
            link_losses: list[float] = []
            for subscription in participant.subscriptions.values():
                self._observe_connect(subscription.transport)
                for downtrack in subscription.downtracks.values():
                    if downtrack.ended:
                        continue
                    key = id(downtrack)
                    sampler = self._down.get(key)
                    if sampler is None or sampler.downtrack is not downtrack:
                        sampler = DownSampler(downtrack, self.window_ticks)
                    stats = sampler.sample(now, dt)
                    self._count_down(sampler)
                    down[key] = sampler
                    downs.append(stats)
                    upstream = up_stats.get(downtrack.publication.id)
                    fresh = now - downtrack.report_at < 3.0
                    if fresh:
                        link_losses.append(max(0.0, sampler.loss_ewma - (upstream.loss_window if upstream else 0.0)))
                    if downtrack.kind == "video":
                        video_downtracks.append(downtrack)
            figures = self._figures(participant, member, ups, downs, link_losses, now)
            figures_by_id[participant.id] = figures
            member.report.add(figures, dt)
            if member.adaptation is not None and video_downtracks:
                if member.adaptation.level:
                    member.adaptation.apply(video_downtracks)
                change = member.adaptation.evaluate(max(link_losses, default=0.0), video_downtracks, now, dt)
                if change is not None:
                    self._tier_changed(room, participant, member, change)
            who = "customer" if participant.role == "customer" else (participant.name or participant.role)
            changed = member.alerts.update(conditions(participant.role, who, figures, self.settings), now)
            for alert in changed:
                self._alert(room, participant, member, alert)
        for pid in [p for p in state.members if p not in room.participants]:
            state.members.pop(pid, None)
        if now - state.last_report >= self.settings.report_interval_s - 1e-6:
            state.last_report = now
            self._report(room, state, figures_by_id)

    def _count_down(self, sampler: DownSampler) -> None:
        octets, packets, frames = sampler.delta
        totals = self.totals
        totals.bytes_out += octets
        totals.packets_out += packets
        if sampler.downtrack.kind == "video":
            totals.video_frames_out += frames

    def _member(self, participant: Participant) -> _Member:
        adaptation = None
        if self.settings.adapt and participant.permissions.subscribe:
            adaptation = Adaptation(participant.id, self.settings, self.tiers)
        return _Member(
            alerts=AlertBook(participant.id, participant.identity, participant.role, self.settings),
            adaptation=adaptation,
            report=ParticipantReport(participant.id, participant.identity, participant.role, participant.name),
        )

    def _figures(self, participant: Participant, member: _Member, ups: list[UpStats], downs: list[DownStats],
                 link_losses: list[float], now: float) -> dict[str, Any]:
        s = self.settings
        loss_up = max((u.loss_window for u in ups if u.packets), default=0.0)
        loss_down = max(link_losses, default=0.0)
        rtts = [d.rtt_ms for d in downs if d.rtt_ms is not None]
        rtt = max(rtts) if rtts else None
        audio_up = [u for u in ups if u.kind == "audio" and u.packets]
        audio_down = [d for d in downs if d.kind == "audio" and d.packets]
        jitters = [u.jitter_ms for u in audio_up] + [d.jitter_ms for d in audio_down]
        jitter = max(jitters) if jitters else None
        mos = None
        if audio_up or audio_down:
            audio_loss = max([u.loss_window for u in audio_up] + [loss_down], default=0.0)
            mos = audio_mos(audio_loss, rtt, jitter or 0.0)
        video = next((u for u in ups if u.kind == "video" and u.packets), None)
        levels = []
        if mos is not None:
            levels.append("good" if mos >= s.mos_warning else "fair" if mos >= s.mos_critical else "poor")
        figures: dict[str, Any] = {
            "participant_id": participant.id,
            "identity": participant.identity,
            "name": participant.name,
            "role": participant.role,
            "mos": mos,
            "loss": round(max(loss_up, loss_down), 4),
            "loss_up": round(loss_up, 4),
            "loss_down": round(loss_down, 4),
            "rtt_ms": round(rtt, 1) if rtt is not None else None,
            "jitter_ms": round(jitter, 1) if jitter is not None else None,
            "bitrate_up": sum(u.bitrate for u in ups),
            "bitrate_down": sum(d.bitrate for d in downs),
            "tier": member.adaptation.tier if member.adaptation is not None else FULL,
        }
        if video is not None:
            member.peak_fps = max(member.peak_fps, video.fps_window)
            figures.update(
                fps=round(video.fps_window, 1), expected_fps=round(member.peak_fps, 1), frozen_s=round(video.frozen_s, 1),
                freezes=video.freezes, freeze_s=round(video.freeze_s, 1), width=video.width, height=video.height,
            )
            levels.append(video_tier(video.fps_window, member.peak_fps or None, video.freeze_ratio, video.loss_window))
        # The level agrees with the alerts: a loss that raises network_poor is never "good".
        loss = max(loss_up, loss_down)
        if loss >= s.loss_critical:
            levels.append("poor")
        elif loss >= s.loss_warning or figures["tier"] != FULL:
            levels.append("fair")
        figures["level"] = worst(levels) if levels else "good"
        member.figures = figures
        member.tracks = (ups, downs)
        return figures

    def _observe_connect(self, transport: Any) -> None:
        if transport.connected_at is not None and not transport.connect_observed:
            transport.connect_observed = True
            self.node.observe("connect_seconds", transport.connected_at - transport.created_at)

    def _emit(self, name: str, value: float) -> None:
        if math.isfinite(value):
            for observer in self.observers:
                observer(name, value)

    # -- telling people -------------------------------------------------------------------

    def _staff(self, room: Room) -> list[str]:
        return [p.id for p in room.participants.values() if p.role in STAFF_ROLES and p.permissions.data]

    def _send(self, room: Room, topic: str, payload: Any, to: list[str]) -> None:
        if to and not room.closed:
            room.send_data(None, payload, topic, to)

    def _alert(self, room: Room, participant: Participant, member: _Member, alert: Alert) -> None:
        body = {"room": room.name, "session_id": room.sid, **alert.to_json()}
        if alert.state == "raised":
            self.totals.alerts[alert.kind] = self.totals.alerts.get(alert.kind, 0) + 1
        member.report.alerts = member.alerts.raised_count
        to = self._staff(room)
        if participant.id not in to:
            to.append(participant.id)
        self._send(room, "quality.alert", body, to)
        self.node.timeline(room, "quality_alert", **alert.to_json())
        self.webhook("quality.alert", body)
        log.info("quality alert", extra={"room": room.name, "kind": alert.kind, "state": alert.state,
                                          "severity": alert.severity, "participant": participant.id})
        self._write_doc(room)

    def _tier_changed(self, room: Room, participant: Participant, member: _Member, change: TierChange) -> None:
        self.totals.tier_changes += 1
        member.report.tier_changes += 1
        payload = {"participant_id": participant.id, "from": change.old, "to": change.new,
                   "reason": change.reason, "loss": change.loss}
        self._send(room, "quality.tier", payload, [participant.id, *self._staff(room)])
        self.node.timeline(room, "tier_changed", **payload)
        self.webhook("quality.tier_changed", {"room": room.name, "session_id": room.sid, **payload})

    def _report(self, room: Room, state: _RoomState, figures: dict[str, dict[str, Any]]) -> None:
        participants = []
        for pid, f in figures.items():
            member = state.members.get(pid)
            if member is None or pid not in room.participants:
                continue
            ups, downs = member.tracks
            participants.append({**f, "tracks": {"up": [u.to_json() for u in ups], "down": [d.to_json() for d in downs]}})
        payload = {"room": room.name, "session_id": room.sid, "ts": round(time.time(), 3), "participants": participants}
        self._send(room, "quality.stats", payload, self._staff(room))
        self._write_doc(room)

    def room_quality(self, room: Room) -> dict[str, Any]:
        """The live summary of a room: what the supervisors' list and REST show."""
        state = self._rooms.get(room.name) or _RoomState()
        members = [m for pid, m in state.members.items() if pid in room.participants and m.figures]
        participants = [dict(m.figures) for m in members]
        alerts = [a.to_json() for m in members for a in m.alerts.active]
        mos = [p["mos"] for p in participants if p.get("mos") is not None]
        return {
            "room": room.name,
            "session_id": room.sid,
            "node_id": self.node.id,
            "updated_at": round(time.time(), 3),
            "level": worst([p["level"] for p in participants]) if participants else "good",
            "mos_min": min(mos) if mos else None,
            "alerts": alerts,
            "participants": participants,
        }

    def _write_doc(self, room: Room) -> None:
        if self._docs is not None:
            self._docs.put(room.name, self.room_quality(room))

    # -- the session timeline ------------------------------------------------------------

    def _on_timeline(self, room: Room, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "participant_left":
            state = self._rooms.get(room.name)
            member = state.members.pop(str(event.get("participant_id")), None) if state else None
            if member is None:
                return
            for alert in member.alerts.clear_all():  # nobody is left for them to be about
                body = {"room": room.name, "session_id": room.sid, **alert.to_json()}
                self._send(room, "quality.alert", body, self._staff(room))
                self.node.timeline(room, "quality_alert", **alert.to_json())
                self.webhook("quality.alert", body)
            if member.report.seconds > 0:
                self.node.timeline(room, "quality_summary", **member.report.summary())
        elif kind in ("room_closed", "room_moved"):
            self._rooms.pop(room.name, None)
            if self._docs is not None:
                self._docs.forget(room.name)

    def stats(self) -> dict[str, Any]:
        return {
            "rooms": len(self._rooms),
            "tracks_sampled": len(self._up) + len(self._down),
            "tier_encoders": self.tiers.encoders,
            "tick_ms": round(self.tick_seconds * 1000, 3),
            "alerts_active": sum(len(m.alerts.active) for r in self._rooms.values() for m in r.members.values()),
        }
