"""REST for identity checks (docs/identity.md), and wiring them into a process."""

from __future__ import annotations

import logging

from aiohttp import web

from ..config import Config
from ..signaling.auth import authenticate
from ..signaling.keys import NODE
from ..signaling.rest import json_body
from ..signaling.tokens import resolve_secret
from ..state import StateStore
from .compare import make_comparer
from .node import IdentityNode, LivenessUnavailable, check_available
from .service import COMMAND_OP, IdentityService

log = logging.getLogger("teller.identity")
IDENTITY = web.AppKey("identity", IdentityService)
IDENTITY_NODE = web.AppKey("identity_node", IdentityNode)
routes = web.RouteTableDef()


def _service(request: web.Request) -> IdentityService:
    return request.app[IDENTITY]


@routes.get("/v1/calls/{call}/identity")
async def status(request: web.Request) -> web.Response:
    return web.json_response(await _service(request).status(authenticate(request), request.match_info["call"]))


@routes.post("/v1/calls/{call}/identity/liveness")
async def start_liveness(request: web.Request) -> web.Response:
    token = authenticate(request)
    await json_body(request, optional=True)
    return web.json_response(await _service(request).start_liveness(token, request.match_info["call"]), status=202)


@routes.post("/v1/calls/{call}/identity/capture")
async def capture(request: web.Request) -> web.Response:
    token = authenticate(request)
    body = await json_body(request, optional=True)
    return web.json_response(await _service(request).capture(token, request.match_info["call"], body), status=201)


@routes.get("/v1/calls/{call}/identity/evidence/{evidence}")
async def evidence(request: web.Request) -> web.Response:
    token = authenticate(request)
    jpeg = await _service(request).evidence_jpeg(token, request.match_info["call"], request.match_info["evidence"])
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


@routes.post("/v1/calls/{call}/identity/compare")
async def compare(request: web.Request) -> web.Response:
    token = authenticate(request)
    await json_body(request, optional=True)
    return web.json_response(await _service(request).compare(token, request.match_info["call"]))


@routes.post("/v1/calls/{call}/identity/override")
async def override(request: web.Request) -> web.Response:
    token = authenticate(request)
    body = await json_body(request)
    return web.json_response(await _service(request).override(token, request.match_info["call"], body))


def install_identity(app: web.Application, store: StateStore, config: Config, *, rest: bool = True) -> None:
    """The node side where this process runs a node with the "liveness" stage; the REST
    side where it runs the contact centre."""
    from ..recording.archive import ARCHIVE
    from ..recording.service import OBJECTS, RECORDER
    from ..signaling.app import AGENT
    from ..signaling.contact.rest import ROUTER
    from ..signaling.contact.service import CENTRE
    from ..speech.service import VOICE

    secret = resolve_secret(config)
    local: IdentityNode | None = None
    node = app.get(NODE)
    if node is not None:
        # Without the stage it still shows agents what the REST side changed (an override).
        local = IdentityNode(config, store, node, secret, objects=app.get(OBJECTS), recorder=app.get(RECORDER))
        local.voice = app.get(VOICE)
        if "liveness" in config.stages.enabled:
            try:
                check_available()
                node.stages.services["identity"] = local
            except LivenessUnavailable as exc:
                log.warning("the liveness stage is enabled but cannot run: %s", exc)
        app[IDENTITY_NODE] = local
        agent = app.get(AGENT)
        if agent is not None:
            agent.handlers[COMMAND_OP] = local.on_node_command  # type: ignore[attr-defined]
    service: IdentityService | None = None
    if rest and ROUTER in app:
        archive = app.get(ARCHIVE)
        service = IdentityService(config, store, secret, app[ROUTER], make_comparer(config.identity),
                                  objects=app.get(OBJECTS), audit=archive.audit if archive is not None else None, local=local)
        app[IDENTITY] = service
        app[ROUTER].identity_gate = service.gate
        app[ROUTER].on_prune.append(service.prune)
        if CENTRE in app:
            app[CENTRE].listeners.append(service.on_call_event)
        app.add_routes(routes)

    async def stop(app: web.Application) -> None:
        if service is not None:
            await service.close()
        if local is not None:
            await local.close()

    app.on_shutdown.append(stop)
