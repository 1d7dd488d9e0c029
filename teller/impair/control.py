"""The relay's control API: read the settings and counters, change them while it runs.

`GET /impair` returns `ImpairRelay.stats()`; `PUT /impair` takes
`{"up": {...}, "down": {...}}`, each a partial `Impairment`, and answers like GET.
A bad body changes nothing (both directions are validated before either applies)
and gets a 400 `{"error": {"code", "message"}}`. The body is read as JSON whatever
its Content-Type, so a bare `curl -d` works. There is no authentication: it is a QA
tool, and it listens on loopback unless told otherwise.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import BadRequest, TellerError
from .relay import ImpairRelay

RELAY = web.AppKey("relay", ImpairRelay)
MAX_BODY = 64 * 1024


def create_control_app(relay: ImpairRelay) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_errors])
    app[RELAY] = relay
    app.router.add_get("/impair", _get)
    app.router.add_put("/impair", _put)
    return app


async def start_control(relay: ImpairRelay, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Serves the API; returns the runner (to clean up) and its base URL."""
    runner = web.AppRunner(create_control_app(relay), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"http://{shown}:{bound_port}"


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except TellerError as exc:
        return web.json_response({"error": exc.to_json()}, status=exc.status)


async def _get(request: web.Request) -> web.Response:
    return web.json_response(request.app[RELAY].stats())


async def _put(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest("the body is not valid JSON", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object like {"up": {...}, "down": {...}}', code="invalid_impairment")
    unknown = sorted(set(body) - {"up", "down"})
    if unknown:
        raise BadRequest(f"unknown direction(s) {unknown}; use \"up\" and \"down\"", code="invalid_impairment")
    relay.set(up=body.get("up"), down=body.get("down"))
    return web.json_response(relay.stats())
