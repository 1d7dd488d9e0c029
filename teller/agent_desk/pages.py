"""Serves the static pages; they talk to the platform through its public APIs only."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

routes = web.RouteTableDef()
STATIC = resources.files("teller.agent_desk").joinpath("static")


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/call")


@routes.get("/call")
async def call_page(request: web.Request) -> web.Response:
    return web.Response(
        text=STATIC.joinpath("call.html").read_text("utf-8"),
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


@routes.get("/static/{name}")
async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    types = {".js": "application/javascript", ".css": "text/css"}
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in types:
        raise web.HTTPNotFound()
    path = STATIC.joinpath(name)
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.Response(text=path.read_text("utf-8"), content_type=types[suffix])
