"""REST for field visits (docs/field.md): officers start them, reviewers join and decide."""

from __future__ import annotations

import secrets

from aiohttp import web

from ..config import Config
from ..errors import BadRequest, Forbidden, NotFound
from ..signaling.auth import authenticate
from ..signaling.keys import CONFIG, DIRECTORY, ISSUER, NODE
from ..signaling.rest import json_body
from ..state import StateStore
from . import sessions
from .service import SNAPSHOT_OP, FieldService

FIELD = web.AppKey("field", FieldService)
routes = web.RouteTableDef()
DEV_ROLES = ("officer", "reviewer")


def _service(request: web.Request) -> FieldService:
    return request.app[FIELD]


def _field_id(request: web.Request) -> str:
    field_id = request.match_info["field"]
    if not sessions.FIELD_ID.match(field_id):
        raise NotFound("no such field session", code="field_session_not_found")
    return field_id


@routes.post("/v1/dev/field")
async def dev_login(request: web.Request) -> web.Response:
    """Demo only (auth.dev_tokens): an officer's or a reviewer's token for /officer and /review."""
    config = request.app[CONFIG]
    if not config.auth.dev_tokens:
        raise Forbidden("development tokens are disabled", code="dev_tokens_disabled")
    body = await json_body(request, optional=True)
    role = body.get("role") or "officer"
    name = body.get("name") or ("Officer" if role == "officer" else "Reviewer")
    if role not in DEV_ROLES:
        raise BadRequest("role is officer or reviewer", code="invalid_message", field="role")
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise BadRequest("name is 1-64 characters", code="invalid_message", field="name")
    person = f"{role}-{secrets.token_hex(4)}"
    token = request.app[ISSUER].issue(room=f"desk-{person}", role=role, subject=person, name=name,
                                      ttl_s=config.auth.default_ttl_s)
    return web.json_response({"token": token, "id": person, "role": role})


@routes.post("/v1/field/sessions")
async def start_visit(request: web.Request) -> web.Response:
    token = authenticate(request)
    body = await json_body(request)
    return web.json_response(await _service(request).start_visit(token, body), status=201)


@routes.get("/v1/field/sessions")
async def list_visits(request: web.Request) -> web.Response:
    return web.json_response({"sessions": await _service(request).list(authenticate(request))})


@routes.get("/v1/field/sessions/{field}")
async def get_visit(request: web.Request) -> web.Response:
    return web.json_response(await _service(request).get(authenticate(request), _field_id(request)))


@routes.post("/v1/field/sessions/{field}/join")
async def join_visit(request: web.Request) -> web.Response:
    return web.json_response(await _service(request).join(authenticate(request), _field_id(request)))


@routes.post("/v1/field/sessions/{field}/gps")
async def post_fix(request: web.Request) -> web.Response:
    token = authenticate(request)
    body = await json_body(request)
    fix = await _service(request).post_fix(token, _field_id(request), body)
    return web.json_response(fix, status=202)


@routes.post("/v1/field/sessions/{field}/snapshots")
async def take_snapshot(request: web.Request) -> web.Response:
    token = authenticate(request)
    body = await json_body(request, optional=True)
    return web.json_response(await _service(request).snapshot(token, _field_id(request), body), status=201)


@routes.get("/v1/field/sessions/{field}/snapshots/{snapshot}")
async def get_snapshot(request: web.Request) -> web.Response:
    service = _service(request)
    field_id = _field_id(request)
    record = await service.visible(authenticate(request), field_id)
    snapshot_id = request.match_info["snapshot"]
    if not any(s.get("snapshot_id") == snapshot_id for s in record.get("snapshots") or []):
        raise NotFound("no such snapshot", code="snapshot_not_found")
    jpeg = await service.snapshot_jpeg(field_id, snapshot_id)
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@routes.post("/v1/field/sessions/{field}/decision")
async def decide(request: web.Request) -> web.Response:
    token = authenticate(request)
    body = await json_body(request)
    return web.json_response(await _service(request).decide(token, _field_id(request), body))


@routes.post("/v1/field/sessions/{field}/end")
async def end_visit(request: web.Request) -> web.Response:
    return web.json_response(await _service(request).end(authenticate(request), _field_id(request)))


def install_field(app: web.Application, store: StateStore, config: Config, *, rest: bool = True) -> FieldService | None:
    """Field visits' REST (`rest`); where this process runs a node, also the node side
    (GPS, link state, snapshots) for the visits whose rooms it holds."""
    if not config.field.enabled:
        return None
    from ..recording.service import OBJECTS, RECORDER
    from ..signaling.app import AGENT

    service = FieldService(config, store, app[ISSUER], app[DIRECTORY], objects=app.get(OBJECTS),
                           node=app.get(NODE), recorder=app.get(RECORDER))
    app[FIELD] = service
    agent = app.get(AGENT)
    if agent is not None:
        agent.handlers[SNAPSHOT_OP] = service.on_node_command  # type: ignore[attr-defined]
    if rest:
        app.add_routes(routes)

    async def stop(app: web.Application) -> None:
        await service.close()

    app.on_shutdown.append(stop)
    return service
