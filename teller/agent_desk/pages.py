"""Serves the static pages; they talk to the platform through its public APIs only."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

routes = web.RouteTableDef()
STATIC = resources.files("teller.agent_desk").joinpath("static")


def _page(name: str) -> web.Response:
    return web.Response(
        text=STATIC.joinpath(name).read_text("utf-8"), content_type="text/html", headers={"Cache-Control": "no-store"}
    )


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    """Where the README's first command sends a person: one link per part to play."""
    return _page("index.html")


@routes.get("/call")
async def call_page(request: web.Request) -> web.Response:
    return _page("call.html")


@routes.get("/customer")
async def customer_page(request: web.Request) -> web.Response:
    """The customer's H5 / VTM / PC page: pick a business, queue, talk, confirm."""
    return _page("customer.html")


@routes.get("/desk")
async def desk_page(request: web.Request) -> web.Response:
    """The agent desk."""
    return _page("desk.html")


@routes.get("/wallboard")
async def wallboard_page(request: web.Request) -> web.Response:
    """The supervisor's wallboard."""
    return _page("wallboard.html")


@routes.get("/static/{name}")
async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    types = {".js": "application/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in types:
        raise web.HTTPNotFound()
    path = STATIC.joinpath(name)
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.Response(text=path.read_text("utf-8"), content_type=types[suffix])
