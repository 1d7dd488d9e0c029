"""REST for the contact centre: customers queue, agents take calls, supervisors watch.

Who may do what comes from the access token: a customer acts on calls it made
(from its token's room, which becomes the call's room), an agent or reviewer acts as
the agent named by its token's subject, a supervisor (or a service token) sees
everything and registers agents. Accepting a call hands the agent a token for the
call's room, so one agent login opens exactly the calls it is given.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from ...errors import BadRequest, Forbidden, PayloadTooLarge
from ...quality.service import live_quality
from ...state import Record
from ..auth import authenticate
from ..keys import CONFIG, ISSUER
from ..rest import json_body
from ..tokens import ANY_ROOM, AccessToken
from .materials import MAX_PDF_BYTES, page_png, store_material
from .routing import Router
from .stats import operations, parse_time, to_csv

ROUTER = web.AppKey("router", Router)
AGENT_ROLES = ("agent", "reviewer")
SUPERVISOR_ROLES = ("supervisor", "service")

routes = web.RouteTableDef()


async def _body(request: web.Request) -> dict[str, Any]:
    return await json_body(request, optional=True)


def _role(request: web.Request, roles: tuple[str, ...]) -> AccessToken:
    token = authenticate(request)
    if token.role not in roles:
        raise Forbidden(f"this needs a {' or '.join(roles)} token", code="role_forbidden")
    return token


def _supervisor(request: web.Request) -> AccessToken:
    token = _role(request, SUPERVISOR_ROLES)
    if token.room != ANY_ROOM:
        raise Forbidden("supervision needs a token for every room", code="room_forbidden")
    return token


def _router(request: web.Request) -> Router:
    return request.app[ROUTER]


async def _own_call(request: web.Request) -> tuple[AccessToken, Record]:
    """The call in the path, if this token may see it: its customer, an agent in it, a supervisor."""
    token = authenticate(request)
    call = await _router(request).call(request.match_info["call"])
    if token.role in SUPERVISOR_ROLES and token.room == ANY_ROOM:
        return token, call
    if token.role == "customer" and call.get("room") == token.room and call["customer"].get("identity") == token.subject:
        return token, call
    if token.role in AGENT_ROLES and token.subject in (*call["parties"], call.get("offered_to"), call.get("transferred_from")):
        return token, call
    raise Forbidden("this call is not yours", code="call_forbidden")


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false", code="invalid_message", field=key)
    return value


@routes.get("/v1/catalogue")
async def catalogue(request: web.Request) -> web.Response:
    """Public: what a customer can come for, in the language asked."""
    language = request.query.get("lang")
    if language is not None and not 0 < len(language) <= 16:
        raise BadRequest("lang is a language code", code="invalid_message", field="lang")
    router = _router(request)
    return web.json_response({"businesses": [b.to_json(language) for b in router.catalogue.businesses.values()]})


@routes.post("/v1/calls")
async def request_call(request: web.Request) -> web.Response:
    token = _role(request, ("customer",))
    token.require("publish")
    body = await _body(request)
    business = body.get("business")
    if not isinstance(business, str):
        raise BadRequest("business is required", code="invalid_message", field="business")
    call = await _router(request).request(
        {"identity": token.subject, "name": token.name},
        business,
        language=body.get("language", "zh"),
        elderly=_flag(body, "elderly"),
        vip=False,  # VIP status is the bank's to say, not the customer's: a service token sets it
        channel=str(body.get("channel", "h5")),
        room=token.room,
        target=body.get("target", "agent"),
    )
    return web.json_response(call, status=201)


@routes.post("/v1/calls/{call}/handover")
async def handover(request: web.Request) -> web.Response:
    """A bot (ours, or the bank's own through a service token) hands its call to a person."""
    _supervisor(request)
    body = await _body(request)
    skill = body.get("skill")
    if skill is not None and not isinstance(skill, str):
        raise BadRequest("skill is a skill name", code="invalid_message", field="skill")
    call = await _router(request).handover(
        request.match_info["call"], body.get("reason", "bot"), body.get("conversation", []), skill=skill,
    )
    return web.json_response(call)


@routes.get("/v1/calls/{call}")
async def get_call(request: web.Request) -> web.Response:
    _token, call = await _own_call(request)
    return web.json_response({**call, "queue": await _router(request).position(call["call_id"])})


@routes.delete("/v1/calls/{call}")
async def end_call(request: web.Request) -> web.Response:
    """The customer cancels a waiting call or hangs up; an agent in the call hangs up."""
    token, call = await _own_call(request)
    router = _router(request)
    if call["state"] in ("queued", "ringing"):
        if token.role != "customer" and token.role not in SUPERVISOR_ROLES:
            raise Forbidden("only the customer cancels a waiting call", code="call_forbidden")
        return web.json_response(await router.cancel(call["call_id"]))
    role = "supervisor" if token.role in SUPERVISOR_ROLES else token.role
    reason = request.query.get("reason")
    if reason is not None and not 0 < len(reason) <= 256:
        raise BadRequest("reason is 1-256 characters", code="invalid_message", field="reason")
    if role == "supervisor" and not reason:
        raise BadRequest("a supervisor ending a call gives a reason (?reason=)", code="reason_required", field="reason")
    return web.json_response(await router.hang_up(call["call_id"], by=f"{role}:{token.subject}", reason=reason))


@routes.get("/v1/calls")
async def list_calls(request: web.Request) -> web.Response:
    _supervisor(request)
    state = request.query.get("state")
    router = _router(request)
    calls = await router.store.list_docs("call")
    if state:
        calls = [c for c in calls if c["state"] == state]
    quality = await live_quality(router.store)
    for call in calls:  # the supervisors' live list shows each session's quality beside it
        doc = quality.get(call.get("room") or "")
        if doc is not None and call.get("state") == "connected":
            call["quality"] = {k: doc[k] for k in ("level", "mos_min", "alerts", "participants", "updated_at")}
    speech = {d.get("room"): d for d in await router.store.list_docs("speech") if isinstance(d, dict)}
    for call in calls:  # and the risk cues heard in it (teller/speech)
        doc = speech.get(call.get("room") or "")
        if doc is not None and call.get("state") == "connected" and (doc.get("risk_summary") or {}).get("hits"):
            call["risk"] = doc["risk_summary"]
    return web.json_response({"calls": calls})


@routes.put("/v1/agents/{agent}")
async def register_agent(request: web.Request) -> web.Response:
    """A supervisor says who an agent is: skills with levels, languages."""
    _supervisor(request)
    body = await _body(request)
    agent = await _router(request).register(
        request.match_info["agent"], str(body.get("name", ""))[:64], body.get("skills"), body.get("languages")
    )
    return web.json_response(agent)


@routes.get("/v1/agents")
async def list_agents(request: web.Request) -> web.Response:
    _supervisor(request)
    return web.json_response({"agents": await _router(request).store.list_agents()})


@routes.get("/v1/agents/me")
async def me(request: web.Request) -> web.Response:
    token = _role(request, AGENT_ROLES)
    return web.json_response(await _router(request).agent(token.subject))


@routes.post("/v1/agents/me/state")
async def set_state(request: web.Request) -> web.Response:
    token = _role(request, AGENT_ROLES)
    body = await _body(request)
    state, reason = body.get("state"), body.get("reason")
    if not isinstance(state, str) or (reason is not None and not isinstance(reason, str)):
        raise BadRequest("state (and an optional reason) are strings", code="invalid_message", field="state")
    return web.json_response(await _router(request).set_state(token.subject, state, reason))


@routes.post("/v1/agents/me/wrap-up")
async def wrap_up(request: web.Request) -> web.Response:
    token = _role(request, AGENT_ROLES)
    body = await _body(request)
    notes = body.get("notes", "")
    if not isinstance(notes, str):
        raise BadRequest("notes is text", code="invalid_message", field="notes")
    return web.json_response(await _router(request).wrap_up(token.subject, body.get("code"), notes))  # type: ignore[arg-type]


@routes.post("/v1/calls/{call}/accept")
async def accept(request: web.Request) -> web.Response:
    """The agent takes the call offered to it, and gets a token for the call's room."""
    token = _role(request, AGENT_ROLES)
    call = await _router(request).accept(token.subject, request.match_info["call"])
    media = request.app[ISSUER].issue(
        room=call["room"], role=token.role, subject=token.subject, name=token.name,
        ttl_s=request.app[CONFIG].auth.default_ttl_s,
    )
    return web.json_response({**call, "token": media})


@routes.post("/v1/calls/{call}/decline")
async def decline(request: web.Request) -> web.Response:
    token = _role(request, AGENT_ROLES)
    return web.json_response(await _router(request).decline(token.subject, request.match_info["call"]))


@routes.post("/v1/calls/{call}/leave")
async def leave(request: web.Request) -> web.Response:
    token = _role(request, AGENT_ROLES)
    return web.json_response(await _router(request).leave(request.match_info["call"], token.subject))


@routes.post("/v1/calls/{call}/invite")
async def invite(request: web.Request) -> web.Response:
    token = _role(request, AGENT_ROLES)
    target = (await _body(request)).get("agent_id")
    if not isinstance(target, str):
        raise BadRequest("agent_id is required", code="invalid_message", field="agent_id")
    return web.json_response(await _router(request).invite(request.match_info["call"], token.subject, target))


@routes.post("/v1/calls/{call}/transfer")
async def transfer(request: web.Request) -> web.Response:
    token = _role(request, AGENT_ROLES)
    body = await _body(request)
    to_agent, to_skill = body.get("agent_id"), body.get("skill")
    if (to_agent is not None and not isinstance(to_agent, str)) or (to_skill is not None and not isinstance(to_skill, str)):
        raise BadRequest("agent_id or skill is text", code="invalid_message")
    call = await _router(request).transfer(
        request.match_info["call"], token.subject, to_agent=to_agent, to_skill=to_skill, warm=_flag(body, "warm")
    )
    return web.json_response(call)


@routes.post("/v1/calls/{call}/confirmations")
async def request_confirmation(request: web.Request) -> web.Response:
    """An agent in the call asks the customer to confirm (what, amount, account)."""
    token = _role(request, AGENT_ROLES)
    body = await _body(request)
    confirmation = await _router(request).request_confirmation(
        request.match_info["call"], token.subject, body.get("what"), body.get("amount"), body.get("account")  # type: ignore[arg-type]
    )
    return web.json_response(confirmation, status=201)


@routes.post("/v1/calls/{call}/confirmations/{request}")
async def answer_confirmation(request: web.Request) -> web.Response:
    """The customer confirms (or refuses), with a signature where the business needs one."""
    token, call = await _own_call(request)
    if token.role != "customer":
        raise Forbidden("only the customer answers a confirmation", code="role_forbidden")
    body = await _body(request)
    answer = await _router(request).answer_confirmation(
        call["call_id"], request.match_info["request"], body.get("accepted"), body.get("signature")  # type: ignore[arg-type]
    )
    return web.json_response(answer)


@routes.post("/v1/dev/agent")
async def dev_agent(request: web.Request) -> web.Response:
    """Demo only (auth.dev_tokens): an agent with every skill, and its token."""
    config = request.app[CONFIG]
    if not config.auth.dev_tokens:
        raise Forbidden("development tokens are disabled", code="dev_tokens_disabled")
    body = await _body(request)
    name = body.get("name") or "Agent"
    role = body.get("role") or "agent"
    if not isinstance(name, str) or not 0 < len(name) <= 64 or role not in AGENT_ROLES:
        raise BadRequest("name is 1-64 characters; role is agent or reviewer", code="invalid_message")
    router = _router(request)
    agent_id = f"{role}-{secrets.token_hex(4)}"
    await router.register(agent_id, name, {skill: 5 for skill in router.catalogue.skills()}, ["zh", "en"])
    token = request.app[ISSUER].issue(room=f"desk-{agent_id}", role=role, subject=agent_id, name=name, ttl_s=config.auth.default_ttl_s)
    return web.json_response({"token": token, "agent_id": agent_id})


@routes.post("/v1/dev/supervisor")
async def dev_supervisor(request: web.Request) -> web.Response:
    """Demo only (auth.dev_tokens): a supervisor token for the wallboard."""
    config = request.app[CONFIG]
    if not config.auth.dev_tokens:
        raise Forbidden("development tokens are disabled", code="dev_tokens_disabled")
    body = await _body(request)
    name = body.get("name") or "Supervisor"
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise BadRequest("name is 1-64 characters", code="invalid_message", field="name")
    token = request.app[ISSUER].issue(room=ANY_ROOM, role="supervisor", name=name, ttl_s=config.auth.default_ttl_s)
    return web.json_response({"token": token})


@routes.get("/v1/stats")
async def stats(request: web.Request) -> web.Response:
    """Operations figures by hour, day, business or agent; ?format=csv for a spreadsheet."""
    _supervisor(request)
    query = request.query
    rows = operations(
        await _router(request).store.list_docs("call"),
        query.get("by", "day"),
        parse_time(query.get("from"), "from"),
        parse_time(query.get("to"), "to"),
    )
    if query.get("format") == "csv":
        return web.Response(
            text=to_csv(rows), content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="teller-stats-{query.get("by", "day")}.csv"'},
        )
    return web.json_response({"by": query.get("by", "day"), "rows": rows})


@routes.post("/v1/materials")
async def upload_material(request: web.Request) -> web.Response:
    """An agent uploads a PDF (rendered to page images) or an image to show customers."""
    token = _role(request, (*AGENT_ROLES, *SUPERVISOR_ROLES))
    if request.content_length is not None and request.content_length > MAX_PDF_BYTES:
        raise PayloadTooLarge("a material is at most 10 MB", code="material_too_large")
    data = await request.content.read(MAX_PDF_BYTES + 1)
    if len(data) > MAX_PDF_BYTES:
        raise PayloadTooLarge("a material is at most 10 MB", code="material_too_large")
    material = await store_material(_router(request).store, request.content_type, data, token.subject)
    return web.json_response(material, status=201)


@routes.get("/v1/materials/{material}/{page}.png")
async def material_page(request: web.Request) -> web.Response:
    """Public by capability: the random material id in the URL is the permission."""
    png = await page_png(_router(request).store, request.match_info["material"], request.match_info["page"])
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@routes.get("/v1/queues")
async def queues(request: web.Request) -> web.Response:
    _supervisor(request)
    return web.json_response({"queues": await _router(request).queue_stats()})
