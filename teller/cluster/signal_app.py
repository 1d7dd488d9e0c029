"""`teller signal`: stateless signalling in front of the SFU nodes.

It holds no room state of its own: the store says where each room lives, clients'
WebSockets and WHIP/WHEP requests are relayed to that node, REST reads the store
and sends commands over the bus. Any number of these run behind a load balancer,
and a client may use a different one after every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import aiohttp
from aiohttp import web

from .. import logs
from ..agent_desk import routes as page_routes
from ..config import Config
from ..errors import NotFound, Unauthorized, Unavailable
from ..recording.archive import install_archive
from ..sfu import validate_room_name
from ..signaling.app import base_app
from ..signaling.auth import authenticate, bearer
from ..quality.metrics import SignalMetrics, metrics_handler
from ..quality.service import routes as quality_routes
from ..signaling.contact.service import install as install_contact_centre
from ..digital_human.service import install_digital_human
from ..field.rest import install_field
from ..identity.rest import install_identity
from ..speech.service import install_voice
from ..signaling.keys import CONFIG, DIRECTORY, ISSUER, STORE
from ..signaling.openapi import routes as openapi_routes
from ..signaling.rest import routes as rest_routes
from ..signaling.tokens import TokenIssuer, issuer_for, resolve_secret
from ..signaling.whip import preflight
from ..state import StateStore, StateUnavailable, open_store
from .directory import ClusterDirectory
from .node_agent import SIGNALS_CHANNEL
from .placement import place_room
from .proxy import Relay, SignalState
from .reaper import Reaper

log = logging.getLogger("teller.cluster.signal")

SIGNAL = web.AppKey("signal_state", SignalState)
# Headers a WHIP/WHEP answer carries back to the client unchanged.
WHIP_HEADERS = ("Content-Type", "Location", "ETag", "Link", "Accept-Patch", "Access-Control-Expose-Headers")


async def relay_handler(request: web.Request) -> web.WebSocketResponse:
    state = request.app[SIGNAL]
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4 * state.config.signaling.max_message_bytes)
    try:
        url_token = bearer(request)
    except Unauthorized:
        url_token = None
    await ws.prepare(request)
    relay = Relay(state, ws, url_token)
    with logs.bind(session=relay.id):
        try:
            await relay.run()
        except StateUnavailable:
            pass
        finally:
            if relay.upstream is not None and not relay.upstream.closed:
                await relay.upstream.close()
    return ws


async def whip_proxy(request: web.Request) -> web.StreamResponse:
    """WHIP/WHEP go to the room's node as they are; its answer comes back as it is."""
    state = request.app[SIGNAL]
    room = request.match_info["room"]
    # Checked here as well as on the node, so that a request without a valid token
    # for this room places nothing and learns nothing about the room.
    validate_room_name(room)
    authenticate(request).require_room(room)
    if "resource" in request.match_info:
        record = await state.store.get_room(room)
        if record is None or not record.get("node_url"):
            raise NotFound("no such session", code="session_not_found")
        url = record["node_url"]
    else:
        _record, node = await place_room(state.store, room, auto_create=state.config.rooms.auto_create)
        url = node["url"]
    assert state.http is not None
    headers = {k: v for k, v in request.headers.items() if k in ("Authorization", "Content-Type", "If-Match")}
    body = await request.read()
    try:
        async with state.http.request(
            request.method, url.rstrip("/") + request.path_qs, headers=headers, data=body,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as upstream:
            payload = await upstream.read()
            response = web.Response(status=upstream.status, body=payload)
            for name in WHIP_HEADERS:
                for value in upstream.headers.getall(name, []):
                    response.headers.add(name, value)
            return response
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise Unavailable("the media node did not answer; try again", code="node_unreachable") from exc


def create_signal_app(config: Config, *, issuer: TokenIssuer | None = None, store: StateStore | None = None) -> web.Application:
    app = base_app(config)
    app[CONFIG] = config
    app[ISSUER] = issuer or issuer_for(config)
    app[STORE] = store or open_store(config.state)
    state = SignalState(f"SG_{secrets.token_hex(6)}", config, app[STORE], app[ISSUER])
    app[SIGNAL] = state
    app[DIRECTORY] = ClusterDirectory(app[STORE], config, state.id, state)
    tasks: list[asyncio.Task[None]] = []

    async def start(app: web.Application) -> None:
        await app[STORE].start()
        state.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=config.cluster.upstream_connect_timeout_s)
        )
        tasks.append(asyncio.create_task(Reaper(app[STORE], config, state.id).run(), name="reaper"))
        tasks.append(asyncio.create_task(_listen(state), name="signal-bus"))

    async def stop(app: web.Application) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if state.http is not None:
            await state.http.close()

    async def close_store(app: web.Application) -> None:
        await app[STORE].close()  # last: the contact centre and the archive stop first

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    app.on_cleanup.append(close_store)
    install_contact_centre(app, app[STORE], config)
    install_archive(app, app[STORE], config, resolve_secret(config))
    install_voice(app, app[STORE], config, app[ISSUER])
    install_digital_human(app, app[STORE], config)
    install_field(app, app[STORE], config)
    install_identity(app, app[STORE], config)
    app.router.add_get("/v1/rtc", relay_handler)
    for kind in ("whip", "whep"):
        app.router.add_post(f"/{kind}/{{room}}", whip_proxy)
        app.router.add_patch(f"/{kind}/{{room}}/{{resource}}", whip_proxy)
        app.router.add_delete(f"/{kind}/{{room}}/{{resource}}", whip_proxy)
        app.router.add_options(f"/{kind}/{{room}}", preflight)
        app.router.add_options(f"/{kind}/{{room}}/{{resource}}", preflight)
    app.add_routes(rest_routes)
    app.add_routes(quality_routes)
    app.router.add_get("/metrics", metrics_handler(SignalMetrics(app[DIRECTORY].process_stats), config.quality.metrics_token))
    app.add_routes(openapi_routes)
    app.add_routes(page_routes)
    return app


async def _listen(state: SignalState) -> None:
    """Cluster notices for this process: a node is gone, so its clients move now."""
    delay = 0.1
    while True:
        try:
            subscription = await state.store.subscribe(SIGNALS_CHANNEL)
            break
        except StateUnavailable:
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)
    try:
        async for _channel, message in subscription:
            if message.get("op") == "node_down":
                moved = state.node_lost(str(message.get("node_id")))
                if moved:
                    log.info("node down; clients told to reconnect", extra={"node_id": message.get("node_id"), "clients": moved})
    finally:
        await subscription.close()
