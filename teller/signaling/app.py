"""The aiohttp application: signalling, REST, WHIP/WHEP and the embedded pages."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..agent_desk import routes as page_routes
from ..config import Config
from ..errors import NotFound, TellerError
from ..quality.service import install_quality
from ..quality.service import routes as quality_routes
from ..recording.archive import install_archive
from ..recording.service import install_recorder
from ..sfu import Node
from ..digital_human.service import install_digital_human
from ..speech.service import install_hub, install_voice
from ..state import StateStore, open_store
from .keys import CONFIG, DIRECTORY, ISSUER, NODE, STORE
from .openapi import routes as openapi_routes
from .rest import routes as rest_routes
from .tokens import TokenIssuer, issuer_for, resolve_secret
from .whip import routes as whip_routes
from .ws import rtc_handler

log = logging.getLogger("teller.signaling.http")

# teller.cluster.node_agent.NodeAgent (typed loosely: cluster imports signaling).
AGENT = web.AppKey("node_agent", object)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(exc: TellerError) -> web.Response:
    return web.json_response({"error": exc.to_json()}, status=exc.status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    try:
        response = await handler(request)
    except TellerError as exc:
        log.info(
            "request refused",
            extra={"method": request.method, "path": request.path, "status": exc.status, "code": exc.code},
        )
        return _error_response(exc)
    except web.HTTPException as exc:
        if exc.status == 404:
            return _error_response(NotFound("no such endpoint", code="not_found"))
        if exc.status == 405:
            return web.json_response(
                {"error": {"code": "method_not_allowed", "message": "method not allowed"}},
                status=405,
                headers={k: v for k, v in exc.headers.items() if k == "Allow"},
            )
        if exc.status == 413:
            return web.json_response(
                {"error": {"code": "message_too_large", "message": "the request body is too large"}},
                status=413,
            )
        raise
    except Exception:
        log.exception("unexpected error", extra={"method": request.method, "path": request.path})
        return web.json_response({"error": {"code": "internal", "message": "internal error"}}, status=500)
    if request.path != "/healthz":
        log.debug(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "ms": round(1000 * (time.monotonic() - started), 1),
            },
        )
    return response


def cors_middleware(origins: list[str]):  # type: ignore[no-untyped-def]
    allow_any = "*" in origins

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        origin = request.headers.get("Origin")
        if origin and (allow_any or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin
            if not allow_any:
                response.headers["Vary"] = "Origin"
        return response

    return middleware


def base_app(config: Config) -> web.Application:
    return web.Application(
        # JSON bodies; material uploads read their own stream with their own cap.
        client_max_size=256 * 1024,
        middlewares=[cors_middleware(config.server.cors_origins), errors_middleware],
    )


def create_app(
    config: Config,
    *,
    node: Node | None = None,
    issuer: TokenIssuer | None = None,
    store: StateStore | None = None,
    role: str = "embedded",
) -> web.Application:
    """The embedded server, or (role "node") an SFU node of a cluster: the same app.

    Either way the node registers in the state store, mirrors its rooms into it and
    takes commands from the bus; embedded, that store is the in-memory one.
    """
    from ..cluster.directory import LocalDirectory
    from ..cluster.node_agent import NodeAgent

    app = base_app(config)
    app[CONFIG] = config
    app[ISSUER] = issuer or issuer_for(config)
    app[NODE] = node or Node(config)
    app[STORE] = store or open_store(config.state)
    directory = LocalDirectory(app[STORE], app[NODE])
    directory.role = role
    app[DIRECTORY] = directory
    agent = NodeAgent(app[NODE], app[STORE], config, config.cluster.node_url or config.server.base_url())
    app[AGENT] = agent

    async def start_agent(app: web.Application) -> None:
        await app[STORE].start()
        await agent.start()

    async def close_node(app: web.Application) -> None:
        await agent.stop()
        await app[NODE].close()

    async def close_store(app: web.Application) -> None:
        # After every shutdown handler: the recorder's and the quality monitor's last
        # writes and bus subscriptions need the store until they have stopped.
        await app[STORE].close()

    app.on_startup.append(start_agent)
    app.on_shutdown.append(close_node)
    app.on_cleanup.append(close_store)
    secret = resolve_secret(config)
    install_recorder(app, app[NODE], app[STORE], config, secret)
    install_quality(app, app[NODE], app[STORE], config)
    install_hub(app, app[NODE], app[STORE], config, secret)
    if role == "embedded":  # a cluster's signalling processes run these, not its nodes
        from .contact.service import install

        install(app, app[STORE], config)
        install_archive(app, app[STORE], config, secret)
        install_voice(app, app[STORE], config, app[ISSUER])
        install_digital_human(app, app[STORE], config)
    from ..field.rest import install_field

    install_field(app, app[STORE], config, rest=role == "embedded")
    from ..identity.rest import install_identity

    install_identity(app, app[STORE], config, rest=role == "embedded")
    app.router.add_get("/v1/rtc", rtc_handler)
    app.add_routes(rest_routes)
    app.add_routes(quality_routes)
    app.add_routes(whip_routes)
    app.add_routes(openapi_routes)
    app.add_routes(page_routes)
    return app
