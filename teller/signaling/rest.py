"""REST: rooms and participants for operators and back-office services."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import BadRequest, Forbidden, UnsupportedMediaType
from ..sfu import validate_room_name
from .auth import authenticate
from .keys import CONFIG, DIRECTORY, ISSUER, STORE
from .tokens import ANY_ROOM, ROLES, AccessToken

routes = web.RouteTableDef()
MAX_METADATA_BYTES = 4096


def _admin(request: web.Request, room: str | None = None) -> AccessToken:
    token = authenticate(request)
    token.require("admin")
    if room is not None:
        token.require_room(room)
    return token


async def json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object; with `optional`, no body at all reads as {}."""
    if optional and not request.can_read_body:
        return {}
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send application/json", code="unsupported_media_type")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest("the body is not valid JSON", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_message")
    return body


def _directory(request: web.Request) -> Any:
    return request.app[DIRECTORY]


@routes.get("/livez")
async def livez(request: web.Request) -> web.Response:
    """200 while the process answers: a liveness probe that a Redis outage cannot fail,
    since restarting a node would cut the media it still carries."""
    return web.json_response({"status": "alive", "role": _directory(request).role})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """200 while this process can do its work; 503 while the shared state is unreachable."""
    directory = _directory(request)
    stats = directory.process_stats()
    body = {"status": "ok", "role": directory.role, "node_id": stats.get("node_id"), "signal_id": stats.get("signal_id")}
    body = {k: v for k, v in body.items() if v is not None}
    if not await request.app[STORE].ping():
        body.update(status="degraded", state_store="unreachable")
        return web.json_response(body, status=503)
    return web.json_response(body)


@routes.get("/v1/rooms")
async def list_rooms(request: web.Request) -> web.Response:
    token = _admin(request)
    rooms = [r for r in await _directory(request).list_rooms() if token.allows_room(r["name"])]
    return web.json_response({"rooms": rooms})


@routes.post("/v1/rooms")
async def create_room(request: web.Request) -> web.Response:
    token = _admin(request)
    body = await json_body(request)
    name = body.get("name")
    if not isinstance(name, str):
        raise BadRequest("name is required", code="invalid_room_name", field="name")
    token.require_room(name)
    max_participants = body.get("max_participants")
    empty_timeout = body.get("empty_timeout_s")
    metadata = body.get("metadata", {})
    if max_participants is not None and (
        isinstance(max_participants, bool) or not isinstance(max_participants, int) or not 1 <= max_participants <= 1000
    ):
        raise BadRequest("max_participants must be 1-1000", code="invalid_message", field="max_participants")
    if empty_timeout is not None and (
        isinstance(empty_timeout, bool) or not isinstance(empty_timeout, (int, float)) or not 0 <= empty_timeout <= 86400
    ):
        raise BadRequest("empty_timeout_s must be 0-86400", code="invalid_message", field="empty_timeout_s")
    if not isinstance(metadata, dict) or len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        raise BadRequest("metadata must be an object under 4 KiB", code="invalid_message", field="metadata")
    room = await _directory(request).create_room(
        name, {"max_participants": max_participants, "empty_timeout_s": empty_timeout, "metadata": metadata}
    )
    return web.json_response(room, status=201)


@routes.get("/v1/rooms/{room}")
async def get_room(request: web.Request) -> web.Response:
    name = request.match_info["room"]
    _admin(request, name)
    return web.json_response(await _directory(request).get_room(name))


@routes.delete("/v1/rooms/{room}")
async def close_room(request: web.Request) -> web.Response:
    name = request.match_info["room"]
    _admin(request, name)
    await _directory(request).close_room(name, "closed_by_api")
    return web.json_response({"name": name, "closed": True})


@routes.get("/v1/rooms/{room}/participants")
async def list_participants(request: web.Request) -> web.Response:
    name = request.match_info["room"]
    _admin(request, name)
    return web.json_response({"participants": await _directory(request).list_participants(name)})


@routes.delete("/v1/rooms/{room}/participants/{participant}")
async def remove_participant(request: web.Request) -> web.Response:
    name = request.match_info["room"]
    _admin(request, name)
    participant_id = request.match_info["participant"]
    await _directory(request).remove_participant(name, participant_id, "removed_by_api")
    return web.json_response({"participant_id": participant_id, "removed": True})


@routes.get("/v1/node")
async def node_stats(request: web.Request) -> web.Response:
    token = _admin(request)
    if token.room != ANY_ROOM:
        raise Forbidden("node statistics need a token for every room", code="room_forbidden")
    return web.json_response(_directory(request).process_stats())


@routes.get("/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    """The SFU node registry: every node whose heartbeat is live, with its load."""
    token = _admin(request)
    if token.room != ANY_ROOM:
        raise Forbidden("the node registry needs a token for every room", code="room_forbidden")
    return web.json_response({"nodes": await _directory(request).list_nodes()})


@routes.post("/v1/dev/token")
async def dev_token(request: web.Request) -> web.Response:
    """Tokens for the embedded demo page; off unless auth.dev_tokens is true."""
    config = request.app[CONFIG]
    if not config.auth.dev_tokens:
        raise Forbidden("development tokens are disabled", code="dev_tokens_disabled")
    body = await json_body(request)
    room = body.get("room")
    name = body.get("name") or "guest"
    role = body.get("role") or "customer"
    if not isinstance(room, str) or room == ANY_ROOM:
        raise BadRequest("room is required", code="invalid_room_name", field="room")
    validate_room_name(room)
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise BadRequest("name must be 1-64 characters", code="invalid_message", field="name")
    if role not in ROLES or role in ("service", "supervisor", "compliance"):
        raise BadRequest("role must be a caller role", code="invalid_message", field="role")
    token = request.app[ISSUER].issue(room=room, role=role, name=name, ttl_s=config.auth.default_ttl_s)
    return web.json_response({"token": token, "room": room, "role": role})
