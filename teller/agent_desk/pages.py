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


# Path -> page. "/" links every part to play (where the README's first command sends a
# person); /customer is the H5 / VTM / PC page, /desk the agent's, /wallboard the
# supervisor's, /call a plain two-person call, /replay the compliance replay of recordings,
# /officer the field officer's phone and /review the risk reviewer's desk (on-site + remote).
PAGES = {
    "/": "index.html",
    "/customer": "customer.html",
    "/desk": "desk.html",
    "/wallboard": "wallboard.html",
    "/call": "call.html",
    "/replay": "replay.html",
    "/officer": "officer.html",
    "/review": "review.html",
}


def _page_handler(name: str):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        return _page(name)

    return handler


for _path, _name in PAGES.items():
    routes.get(_path)(_page_handler(_name))


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
