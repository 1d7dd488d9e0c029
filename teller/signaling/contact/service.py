"""The contact centre inside a signalling process: routing, its timers, its events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable

from aiohttp import web

from ...config import Config
from ...recording.service import publish_session_event
from ...state import Record, StateStore, StateUnavailable
from ..webhooks import Webhooks
from .catalogue import load_catalogue
from .rest import ROUTER, routes
from .routing import Router

log = logging.getLogger("teller.contact")

TICK_S = 1.0


class ContactCentre:
    def __init__(self, store: StateStore, config: Config) -> None:
        self.store = store
        self.webhooks = Webhooks(config.webhooks)
        self.router = Router(store, config.contact, load_catalogue(config.contact.catalogue or None), on_event=self._event)
        self._owner = f"acd-{secrets.token_hex(6)}"
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        # Called with every call event (the voice plays the risk prompt on "answered").
        self.listeners: list[Callable[[str, Record, Record], None]] = []

    def _event(self, kind: str, call: Record, extra: Record) -> None:
        """Every call event goes to the webhooks and into the call's timeline; a
        signature goes only into the timeline, the evidence store."""
        for listener in self.listeners:
            try:
                listener(kind, call, extra)
            except Exception:
                log.exception("call event listener failed", extra={"event": kind})
        self.webhooks.send(f"call.{kind}", {**call, **{k: v for k, v in extra.items() if k != "signature"}})
        event = {
            "type": f"call_{kind}", "ts": round(time.time(), 3), "call_id": call["call_id"], "state": call["state"],
            "agent_id": call.get("agent_id"), "offered_to": call.get("offered_to"), **extra,
        }
        task = asyncio.ensure_future(self._append(call, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _append(self, call: Record, event: Record) -> None:
        with contextlib.suppress(StateUnavailable):
            await self.store.append_event(call["call_id"], event)
        await publish_session_event(self.store, call["room"], event)

    async def _tick_loop(self) -> None:
        """One process at a time runs the timers (ring timeouts, wrap-up, max wait)."""
        while True:
            try:
                if await self.store.try_lease("acd-tick", self._owner, 3 * TICK_S):
                    await self.router.tick()
            except StateUnavailable:
                pass
            except Exception:
                log.exception("routing timers failed")
            await asyncio.sleep(TICK_S)

    async def start(self) -> None:
        await self.webhooks.start()
        self._ticker = asyncio.create_task(self._tick_loop(), name="acd-tick")

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
        await self.webhooks.close()


CENTRE = web.AppKey("contact_centre", ContactCentre)


def install(app: web.Application, store: StateStore, config: Config) -> ContactCentre:
    centre = ContactCentre(store, config)
    app[CENTRE] = centre
    app[ROUTER] = centre.router
    app.add_routes(routes)

    async def start(app: web.Application) -> None:
        await centre.start()

    async def stop(app: web.Application) -> None:
        await centre.close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return centre
