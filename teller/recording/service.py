"""Wiring recording into a process: the recorder on media nodes, the archive API on
signalling processes; the embedded server runs both against one object store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from ..config import Config, data_dir
from ..sfu import Node
from ..state import StateStore, StateUnavailable
from .finalize import Finalizer
from .objects import ObjectStore
from .objects.factory import open_object_store
from .recorder import Recorder
from .session_info import link_session, lookup_session

log = logging.getLogger("teller.recording")

# The contact centre publishes its call events for a room here; nodes recording that
# room write them into the session timeline.
SESSION_EVENTS = "session-events"

RECORDER = web.AppKey("recorder", Recorder)
FINALIZER = web.AppKey("finalizer", Finalizer)
OBJECTS = web.AppKey("objects", ObjectStore)


def spool_dir(config: Config) -> Path:
    return Path(config.recording.spool_dir) if config.recording.spool_dir else data_dir(config) / "spool"


def retention_by_business(config: Config) -> dict[str, float]:
    from ..signaling.contact.catalogue import load_catalogue

    try:
        catalogue = load_catalogue(config.contact.catalogue or None)
    except Exception:
        return {}
    return {b.id: b.retention_days for b in catalogue.businesses.values() if b.retention_days is not None}


def install_recorder(app: web.Application, node: Node, store: StateStore, config: Config, secret: str) -> None:
    """The media side: record, finalise, upload. Also on when recording is off, so that
    a restart with recording switched off still uploads what an earlier run left."""
    objects = app[OBJECTS] if OBJECTS in app else open_object_store(config)
    app[OBJECTS] = objects
    spool = spool_dir(config)
    finalizer = Finalizer(config, objects, store, spool, node_id=node.id, secret=secret,
                          retention_days=retention_by_business(config))
    async def lookup(room: str, sid: str) -> dict[str, Any] | None:
        info = await lookup_session(store, room)
        if info and info.get("call_id"):
            await link_session(store, info["call_id"], sid)
        return info

    recorder = Recorder(node, config.recording, spool, lookup=lookup,
                        part_started=finalizer.part_started, part_ended=finalizer.part_ended)
    app[FINALIZER] = finalizer
    app[RECORDER] = recorder
    listener: asyncio.Task[None] | None = None

    async def follow_session_events() -> None:
        while True:
            try:
                subscription = await store.subscribe(SESSION_EVENTS)
                try:
                    async for _channel, message in subscription:
                        room, event = message.get("room"), message.get("event")
                        if isinstance(room, str) and isinstance(event, dict):
                            recorder.session_event(room, event)
                finally:
                    await subscription.close()
            except asyncio.CancelledError:
                raise
            except (StateUnavailable, ConnectionError, OSError):
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("session events listener failed")
                await asyncio.sleep(1.0)

    async def start(app: web.Application) -> None:
        nonlocal listener
        await finalizer.start()
        listener = asyncio.create_task(follow_session_events(), name="recording-session-events")

    async def stop(app: web.Application) -> None:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        await recorder.close()
        await finalizer.close()
        await objects.close()

    app.on_startup.append(start)
    # After the node closed its rooms (their parts end and are queued), before exit.
    app.on_cleanup.append(stop)


async def publish_session_event(store: StateStore, room: str, event: dict[str, Any]) -> None:
    with contextlib.suppress(StateUnavailable):
        await store.publish(SESSION_EVENTS, {"room": room, "event": event})
