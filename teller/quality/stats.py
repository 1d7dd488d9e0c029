"""Per-track statistics, sampled once a tick from counters the media path keeps anyway.

Nothing here runs per packet: the publication and each DownTrack count packets,
octets, frames, freezes and RTCP feedback as integers while forwarding, and a
sampler turns the differences between two ticks into rates and windowed figures.

Loss is the network's, before repair: a packet the SFU recovered by NACK and RTX
was still lost on the way (the receiver counts the retransmission as received, so
it is subtracted again). Downlink loss is what the subscriber reports in its RTCP
receiver reports.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..sfu.track import FREEZE_S

if TYPE_CHECKING:
    from ..sfu.forwarder import DownTrack
    from ..sfu.track import Publication


@dataclass
class UpStats:
    """A published track as the SFU receives it (the publisher's uplink)."""

    track_id: str
    kind: str
    source: str
    codec: str
    bitrate: int = 0
    packets: int = 0
    packets_lost: int = 0
    loss: float = 0.0  # this tick
    loss_window: float = 0.0
    loss_total: float = 0.0
    jitter_ms: float = 0.0
    nacks: int = 0
    plis: int = 0
    retransmissions: int = 0
    fps: float = 0.0
    fps_window: float = 0.0
    width: int = 0
    height: int = 0
    freezes: int = 0
    freeze_s: float = 0.0
    frozen_s: float = 0.0  # how long the current freeze has lasted; 0 if none
    freeze_ratio: float = 0.0  # of the window spent frozen
    audio_level: int | None = None  # RFC 6464 -dBov (127 is silence)
    subscribers: int = 0

    def to_json(self) -> dict[str, Any]:
        return _rounded(vars(self))


@dataclass
class DownStats:
    """One subscriber's copy of a track (the subscriber's downlink)."""

    track_id: str
    kind: str
    publisher_id: str
    bitrate: int = 0
    packets: int = 0
    loss: float = 0.0  # the latest receiver report's fraction lost
    loss_window: float = 0.0
    packets_lost: int = 0  # cumulative, as the subscriber reports it
    jitter_ms: float = 0.0
    rtt_ms: float | None = None
    nacks: int = 0
    plis: int = 0
    retransmits: int = 0
    remb: int | None = None
    tier: str = "full"

    def to_json(self) -> dict[str, Any]:
        return _rounded(vars(self))


def _rounded(data: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in data.items()}


@dataclass
class _Window:
    """(weight, value) samples over the last `size` ticks."""

    size: int
    items: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, weight: float, value: float) -> None:
        self.items.append((weight, value))
        while len(self.items) > self.size:
            self.items.popleft()

    def mean(self) -> float:
        total = sum(w for w, _ in self.items)
        return sum(w * v for w, v in self.items) / total if total > 0 else 0.0

    def total(self) -> float:
        return sum(v for _, v in self.items)


class UpSampler:
    """Turns one publication's counters into UpStats, tick after tick."""

    def __init__(self, publication: Publication, window_ticks: int) -> None:
        self.publication = publication
        self._window = window_ticks
        self._loss = _Window(window_ticks)
        self._frames = _Window(window_ticks)
        self._frozen = _Window(window_ticks)
        self._last: tuple[int, int, int, int, int, float] | None = None
        # This tick's differences: octets, packets received, packets lost.
        self.delta = (0, 0, 0)

    def sample(self, now: float, dt: float) -> UpStats:
        pub = self.publication
        rs = pub.stats
        expected = rs.cycles + rs.max_seq - rs.base_seq + 1 if rs.max_seq >= 0 else 0
        rtx = pub.retransmissions_received
        current = (expected, rs.received, rtx, rs.octets, pub.frames, pub.freeze_time)
        last = self._last or (0, 0, 0, 0, 0, 0.0)
        self._last = current
        d_expected = current[0] - last[0]
        d_fresh = (current[1] - last[1]) - (current[2] - last[2])
        d_lost = max(0, d_expected - d_fresh)
        loss = d_lost / d_expected if d_expected > 0 else 0.0
        self._loss.add(max(0, d_expected), loss)
        lost_total = max(0, expected - (rs.received - rtx))
        self.delta = (current[3] - last[3], current[1] - last[1], d_lost)
        out = UpStats(
            track_id=pub.id,
            kind=pub.kind,
            source=pub.source,
            codec=pub.mime_type,
            bitrate=int(8 * (current[3] - last[3]) / dt) if dt > 0 else 0,
            packets=rs.received,
            packets_lost=lost_total,
            loss=loss,
            loss_window=self._loss.mean(),
            loss_total=lost_total / expected if expected > 0 else 0.0,
            jitter_ms=1000.0 * rs.jitter / pub.clock_rate,
            nacks=pub.nacks_sent,
            plis=pub.keyframe_requests,
            retransmissions=rtx,
            subscribers=len(pub.downtracks),
        )
        if pub.kind == "video":
            frames = current[4] - last[4]
            frozen = pub.freeze_time - last[5]
            if pub.last_frame_at is not None and now - pub.last_frame_at > FREEZE_S:
                out.frozen_s = now - pub.last_frame_at
                frozen += min(dt, out.frozen_s)
            self._frames.add(dt, frames / dt if dt > 0 else 0.0)
            self._frozen.add(dt, min(1.0, frozen / dt) if dt > 0 else 0.0)
            out.fps = frames / dt if dt > 0 else 0.0
            out.fps_window = self._frames.mean()
            out.freeze_ratio = self._frozen.mean()
            out.width, out.height = pub.width, pub.height
            out.freezes = pub.freezes + (1 if out.frozen_s else 0)
            out.freeze_s = pub.freeze_time + out.frozen_s
        else:
            out.audio_level = pub.audio_level()
        return out


class DownSampler:
    """Turns one DownTrack's counters and the subscriber's reports into DownStats."""

    def __init__(self, downtrack: DownTrack, window_ticks: int) -> None:
        self.downtrack = downtrack
        self._loss = _Window(window_ticks)
        self._octets = 0
        self._packets = 0
        self._frames = 0
        self.delta = (0, 0, 0)  # this tick's octets, packets and frames sent
        self._report_at = 0.0
        self.loss_ewma = 0.0

    def sample(self, now: float, dt: float) -> DownStats:
        d = self.downtrack
        pub = d.publication
        out = DownStats(
            track_id=pub.id,
            kind=d.kind,
            publisher_id=pub.participant_id,
            bitrate=int(8 * (d.octets - self._octets) / dt) if dt > 0 else 0,
            packets=d.packets,
            nacks=d.nacks_received,
            plis=d.keyframe_requests,
            retransmits=d.retransmits,
            tier=d.tier,
        )
        self.take_delta()
        report = d.last_report
        if report is not None:
            out.loss = report.fraction_lost / 256
            out.packets_lost = report.packets_lost
            out.jitter_ms = 1000.0 * report.jitter / pub.clock_rate
            if d.report_at > self._report_at:  # a new report since the last tick
                self._report_at = d.report_at
                self._loss.add(1.0, out.loss)
                self.loss_ewma += 0.5 * (out.loss - self.loss_ewma)
            elif now - d.report_at > 5.0:  # reports stopped: say nothing rather than stale
                self._loss.add(1.0, 0.0)
        out.loss_window = self._loss.mean()
        if d.rtt is not None:
            out.rtt_ms = 1000.0 * d.rtt
        if d.remb_bitrate and now - d.remb_at < 5.0:
            out.remb = d.remb_bitrate
        return out

    def take_delta(self) -> tuple[int, int, int]:
        """What was sent since the last call; also the last word on a downtrack that ended
        between ticks, so the totals miss none of its packets."""
        d = self.downtrack
        self.delta = (d.octets - self._octets, d.packets - self._packets, d.frames - self._frames)
        self._octets, self._packets, self._frames = d.octets, d.packets, d.frames
        return self.delta
