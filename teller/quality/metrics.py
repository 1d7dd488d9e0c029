"""GET /metrics in the Prometheus text format, one registry per process.

Gauges are read from the node when Prometheus scrapes, so serving them costs
nothing between scrapes. Counters come from the quality monitor's per-tick
totals (monotonic while the process lives). Histograms are fed once per tick and
track (loss, jitter) and once per join and per connected peer connection.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ..errors import Unauthorized
from ..sfu.node import Node
from .heap import read_heap
from .monitor import QualityMonitor

LOSS_BUCKETS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.2, 0.5, 1.0)
JITTER_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.2, 0.5)
JOIN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _NodeCollector:
    """What is true now: rooms, participants, tracks, queues, backlog."""

    def __init__(self, node: Node, monitor: QualityMonitor, extra: Callable[[], dict[str, Any]]) -> None:
        self.node = node
        self.monitor = monitor
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        node = self.node
        labels = ["node_id"]
        ids = [node.id]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(ids, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(ids, value)
            return c

        rooms = [r for r in node.rooms.values() if not r.closed]
        participants = [p for r in rooms for p in r.participants.values()]
        yield gauge("teller_rooms", "Rooms open on this node.", len(rooms))
        yield gauge("teller_participants", "Participants in rooms on this node.", len(participants))
        tracks = GaugeMetricFamily("teller_tracks", "Published tracks, by kind.", labels=[*labels, "kind"])
        for kind in ("audio", "video"):
            tracks.add_metric([*ids, kind], sum(1 for r in rooms for p in r.publications.values() if p.kind == kind))
        yield tracks
        yield gauge("teller_subscriptions", "Subscriber peer connections.", sum(len(p.subscriptions) for p in participants))
        yield gauge("teller_peer_connections", "Peer connections of all participants.", sum(p.transport_count for p in participants))
        downtracks = [d for p in participants for s in p.subscriptions.values() for d in s.downtracks.values()]
        tiers = GaugeMetricFamily("teller_downtracks", "Subscribed copies of tracks, by tier.", labels=[*labels, "tier"])
        by_tier: dict[str, int] = {}
        for d in downtracks:
            by_tier[d.tier] = by_tier.get(d.tier, 0) + 1
        for tier, count in sorted(by_tier.items()) or [("full", 0)]:
            tiers.add_metric([*ids, tier], count)
        yield tiers
        yield gauge("teller_tier_encoders", "Shared lower-tier re-encoders running.", self.monitor.tiers.encoders)
        totals = self.monitor.totals
        yield counter("teller_media_bytes_received", "RTP bytes received from publishers.", totals.bytes_in)
        yield counter("teller_media_bytes_sent", "RTP bytes forwarded to subscribers.", totals.bytes_out)
        yield counter("teller_media_packets_received", "RTP packets received from publishers.", totals.packets_in)
        yield counter("teller_media_packets_sent", "RTP packets forwarded to subscribers.", totals.packets_out)
        yield counter("teller_video_frames_sent", "Complete video frames forwarded to subscribers (RTP marker bits).", totals.video_frames_out)
        yield counter("teller_media_packets_lost", "Packets lost on publishers' uplinks, before repair.", totals.packets_lost)
        yield counter("teller_tier_changes", "Subscribers moved between tiers.", totals.tier_changes)
        alerts = CounterMetricFamily("teller_quality_alerts", "Quality alerts raised, by kind.", labels=[*labels, "kind"])
        for kind, count in sorted(totals.alerts.items()):
            alerts.add_metric([*ids, kind], count)
        yield alerts
        quality = self.monitor.stats()
        yield gauge("teller_quality_alerts_active", "Quality alerts raised and not yet cleared.", quality["alerts_active"])
        yield gauge("teller_quality_tick_seconds", "CPU time of the last statistics tick.", self.monitor.tick_seconds)
        yield counter("teller_quality_cpu_seconds", "CPU time of all statistics ticks.", self.monitor.cpu_seconds)
        stages = node.stages.stats()
        depth = sum(q["packet_queue"] + sum(c["depth"] for c in q["consumers"]) for q in stages["queues"])
        drops = sum(q["packet_drops"] + sum(c["dropped"] for c in q["consumers"]) for q in stages["queues"])
        yield gauge("teller_stage_taps", "Tracks a stage or tier encoder reads.", stages["taps"])
        yield gauge("teller_stage_queue_depth", "Packets and frames waiting in stage queues.", depth)
        yield gauge("teller_stage_queue_drops", "Packets and frames stage queues dropped (of taps open now).", drops)
        yield gauge("teller_event_loop_tasks", "Asyncio tasks alive in this process (a leak shows as growth).", _task_count())
        yield gauge("teller_threads", "Threads of this process.", threading.active_count())
        heap = read_heap()
        if heap is not None:
            yield gauge("teller_malloc_heap_bytes", "Bytes glibc's heap holds (main and thread arenas).", heap.heap_bytes)
            yield gauge("teller_malloc_in_use_bytes", "Bytes allocated in glibc's heap; flat while the heap grows is fragmentation.", heap.in_use_bytes)
            yield gauge("teller_malloc_mmap_bytes", "Bytes in large blocks glibc maps one by one.", heap.mmap_bytes)
        for name, (doc, value) in self.extra().items():
            yield gauge(name, doc, value)


def _task_count() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # scraped from outside the event loop
        return 0


class Metrics:
    def __init__(self, node: Node, monitor: QualityMonitor, extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self.registry.register(_NodeCollector(node, monitor, extra or (lambda: {})))  # type: ignore[arg-type]
        self.loss = Histogram("teller_track_loss_ratio", "Per-track uplink loss, sampled each second.",
                              buckets=LOSS_BUCKETS, registry=self.registry)
        self.jitter = Histogram("teller_track_jitter_seconds", "Per-track uplink jitter, sampled each second.",
                                buckets=JITTER_BUCKETS, registry=self.registry)
        self.join = Histogram("teller_join_seconds", "Time to handle a join, from the request to `joined`.",
                              buckets=JOIN_BUCKETS, registry=self.registry)
        self.connect = Histogram("teller_connect_seconds", "Time from an offer to a connected peer connection.",
                                 buckets=JOIN_BUCKETS, registry=self.registry)
        monitor.observers.append(self._tick_value)
        node.observers.append(self._node_value)

    def _tick_value(self, name: str, value: float) -> None:
        (self.loss if name == "loss" else self.jitter).observe(value)

    def _node_value(self, name: str, value: float) -> None:
        if name == "join_seconds":
            self.join.observe(value)
        elif name == "connect_seconds":
            self.connect.observe(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SignalCollector:
    """A signalling process relays; its own figures are the relays it holds and made."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        labels, ids = ["signal_id"], [str(stats.get("signal_id", ""))]
        relays = GaugeMetricFamily("teller_signal_relays", "WebSocket relays open to nodes.", labels=labels)
        relays.add_metric(ids, stats.get("relays", 0))
        yield relays
        total = CounterMetricFamily("teller_signal_relayed", "WebSockets relayed since start.", labels=labels)
        total.add_metric(ids, stats.get("relayed_total", 0))
        yield total
        moved = CounterMetricFamily("teller_signal_moved", "Clients told to move to another node.", labels=labels)
        moved.add_metric(ids, stats.get("moved_total", 0))
        yield moved


class SignalMetrics:
    """/metrics of a cluster's signalling process: the process, and its relays."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self.registry.register(_SignalCollector(stats))  # type: ignore[arg-type]

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_handler(metrics: Metrics | SignalMetrics, token: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        if token:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise Unauthorized("GET /metrics needs the metrics token", code="invalid_token")
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler
