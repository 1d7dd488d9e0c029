"""Wiring: the quality monitor, /metrics and the quality REST on an SFU process.

Every process that carries media (embedded, or a cluster node) runs a monitor on
its own rooms and serves its own /metrics; the supervisors' view reads the
`quality` docs the monitors keep in the shared state store, so any signalling
process can answer it.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..config import Config
from ..errors import Forbidden, NotFound
from ..sfu.node import Node
from ..signaling.auth import authenticate
from ..signaling.keys import STORE
from ..signaling.tokens import ANY_ROOM
from ..state import StateStore
from .metrics import Metrics, metrics_handler
from .monitor import DOC_KIND, QualityMonitor

MONITOR = web.AppKey("quality_monitor", QualityMonitor)
METRICS = web.AppKey("quality_metrics", Metrics)
# A doc older than this belongs to a node that stopped updating it (crashed): not live.
STALE_S = 15.0
VIEWER_ROLES = ("supervisor", "admin", "compliance")


def install_quality(app: web.Application, node: Node, store: StateStore, config: Config) -> None:
    from ..signaling.webhooks import Webhooks

    settings = config.quality
    webhooks = Webhooks(config.webhooks) if config.webhooks.urls else None
    monitor = QualityMonitor(node, settings, store=store, webhook=webhooks.send if webhooks else None)
    app[MONITOR] = monitor

    def extra() -> dict[str, Any]:
        out: dict[str, Any] = {}
        from ..recording.service import FINALIZER, RECORDER

        if FINALIZER in app:
            out["teller_recording_backlog"] = ("Sessions waiting to be finalised and uploaded.", app[FINALIZER].stats()["queued"])
        if RECORDER in app:
            out["teller_recording_sessions"] = ("Sessions being recorded now.", app[RECORDER].stats()["recording"])
        from ..speech.service import HUB

        if HUB in app:
            hub = app[HUB]
            out["teller_speech_streams"] = ("Microphones being transcribed now.", hub.streams)
            out["teller_speech_lines"] = ("Final transcript lines since start.", hub.lines)
            out["teller_speech_risk_hits"] = ("Risk cues raised since start.", hub.risk_hits)
            engine = hub.engine_stats()
            if engine is not None:
                out["teller_asr_partials_skipped"] = ("Partial decodes skipped under load since start.", engine.partials_skipped)
                out["teller_asr_finals_dropped"] = ("Final decodes dropped (backlog too long) since start.", engine.finals_dropped)
                out["teller_asr_decode_seconds"] = ("Seconds spent decoding speech since start.", round(engine.decode_s, 3))
                out["teller_asr_audio_seconds"] = ("Seconds of speech decoded since start.", round(engine.audio_s, 3))
        return out

    metrics = Metrics(node, monitor, extra)
    app[METRICS] = metrics

    async def start(app: web.Application) -> None:
        if webhooks is not None:
            await webhooks.start()
        if settings.enabled:
            monitor.start()

    async def stop(app: web.Application) -> None:
        await monitor.close()
        if webhooks is not None:
            await webhooks.close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    app.router.add_get("/metrics", metrics_handler(metrics, settings.metrics_token))


async def live_quality(store: StateStore) -> dict[str, dict[str, Any]]:
    """Room name -> its live quality doc, without those a dead node left behind."""
    now = time.time()
    docs = await store.list_docs(DOC_KIND)
    return {d["room"]: d for d in docs if isinstance(d, dict) and now - d.get("updated_at", 0) < STALE_S}


routes = web.RouteTableDef()


@routes.get("/v1/quality")
async def list_quality(request: web.Request) -> web.Response:
    """Every live session's quality, worst first: the supervisors' overview."""
    token = authenticate(request)
    if token.role not in VIEWER_ROLES and not token.grants.admin:
        raise Forbidden("this needs a supervisor or admin token", code="role_forbidden")
    if token.room != ANY_ROOM:
        raise Forbidden("the overview needs a token for every room", code="room_forbidden")
    rank = {"poor": 0, "fair": 1, "good": 2}
    rooms = sorted((await live_quality(request.app[STORE])).values(), key=lambda d: (rank.get(d.get("level"), 3), d["room"]))
    return web.json_response({"rooms": rooms})


@routes.get("/v1/rooms/{room}/quality")
async def room_quality(request: web.Request) -> web.Response:
    """One session's live quality, for staff in it (an agent's desk) or a supervisor."""
    token = authenticate(request)
    room = request.match_info["room"]
    token.require_room(room)
    if token.role == "customer":
        raise Forbidden("customers see their own quality in the call, not here", code="role_forbidden")
    doc = (await live_quality(request.app[STORE])).get(room)
    if doc is None:
        raise NotFound(f"no live quality for room {room!r}", code="room_not_found")
    return web.json_response(doc)
