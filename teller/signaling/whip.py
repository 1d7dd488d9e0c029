"""WHIP (RFC 9725) and WHEP: publish and play with one HTTP request each.

A WHIP or WHEP resource is a participant of its own with a single peer connection;
DELETE on its Location, or the connection failing, ends it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from aiohttp import web

from .. import logs
from ..errors import BadRequest, Forbidden, NotFound, UnsupportedMediaType
from ..sfu import Participant, Room
from ..sfu.events import Event, TransportClosed
from ..sfu.negotiation import parse_offer
from .auth import authorize, permissions
from .keys import CONFIG, NODE

log = logging.getLogger("teller.signaling.whip")

routes = web.RouteTableDef()
SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"
MAX_OFFER_BYTES = 64 * 1024


def _ice_links(request: web.Request) -> list[str]:
    links = []
    for server in request.app[CONFIG].ice.servers:
        for url in server.urls:
            link = f'<{url}>; rel="ice-server"'
            if server.username:
                link += f'; username="{server.username}"; credential="{server.credential}"; credential-type="password"'
            links.append(link)
    return links


async def _read_offer(request: web.Request) -> str:
    if request.content_type != SDP:
        raise UnsupportedMediaType(f"the offer must be sent as {SDP}", code="unsupported_media_type")
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
        raise BadRequest("the offer is too large", code="invalid_sdp")
    body = await request.content.read(MAX_OFFER_BYTES + 1)
    if len(body) > MAX_OFFER_BYTES:
        raise BadRequest("the offer is too large", code="invalid_sdp")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("the offer is not UTF-8 text", code="invalid_sdp") from exc


def _ends_with_transport(room: Room) -> Any:
    """A WHIP/WHEP participant lives exactly as long as its peer connection."""

    holder: dict[str, Participant] = {}

    def notify(event: Event) -> None:
        participant = holder.get("p")
        if isinstance(event, TransportClosed) and participant is not None and not participant.left:
            asyncio.ensure_future(room.remove(participant.id, event.reason))

    return holder, notify


async def _create(request: web.Request, kind: str) -> web.Response:
    room_name = request.match_info["room"]
    grant = "publish" if kind == "whip" else "subscribe"
    token = authorize(request, room_name, grant)
    offer = await _read_offer(request)
    parse_offer(offer)  # refuse a bad offer before anything is created
    node = request.app[NODE]
    created = room_name not in node.rooms
    room = await node.room_for_join(room_name)
    holder, notify = _ends_with_transport(room)
    # Re-publishing with the same token replaces the old WHIP session; viewers never collide.
    suffix = kind if kind == "whip" else f"whep-{secrets.token_hex(4)}"
    participant = Participant(
        identity=f"{token.subject}#{suffix}",
        name=token.name,
        role=token.role,
        permissions=permissions(token),
        kind=kind,
        notify=notify,
    )
    holder["p"] = participant
    with logs.bind(room=room.name, participant=participant.id):
        await room.join(participant)
        try:
            if kind == "whip":
                item, answer = await room.publish(participant, offer)
            else:
                item, answer = await room.subscribe(
                    participant, offer, participant_id=request.query.get("participant") or None
                )
        except BaseException:
            await room.remove(participant.id, "negotiation_failed")
            if created:
                await node.close_room_if_empty(room)
            raise
        log.info(f"{kind} session started", extra={"transport": item.id})
    location = f"/{kind}/{room.name}/{participant.id}"
    headers = {
        "Location": location,
        "ETag": f'"{item.id}"',
        "Accept-Patch": TRICKLE,
        "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch",
    }
    response = web.Response(status=201, text=answer, content_type=SDP, headers=headers)
    for link in _ice_links(request):
        response.headers.add("Link", link)
    return response


def _resource(request: web.Request, kind: str) -> tuple[Room, Participant]:
    room_name = request.match_info["room"]
    token = authorize(request, room_name, "publish" if kind == "whip" else "subscribe")
    room = request.app[NODE].room(room_name)
    participant = room.participants.get(request.match_info["resource"])
    if participant is None or participant.kind != kind:
        raise NotFound(f"no such {kind.upper()} session", code="session_not_found")
    owner = participant.identity.split("#", 1)[0]
    if owner != token.subject and not token.grants.admin:
        raise Forbidden(f"this {kind.upper()} session belongs to someone else", code="forbidden")
    return room, participant


async def _delete(request: web.Request, kind: str) -> web.Response:
    room, participant = _resource(request, kind)
    await room.remove(participant.id, "deleted")
    return web.Response(status=200)


async def _patch(request: web.Request, kind: str) -> web.Response:
    room, participant = _resource(request, kind)
    if request.content_type != TRICKLE:
        raise UnsupportedMediaType(f"send {TRICKLE}", code="unsupported_media_type")
    text = (await request.content.read(16384)).decode("utf-8", "replace")
    items = list(participant.publishers.values()) + list(participant.subscriptions.values())
    if not items:
        raise NotFound("the session has no peer connection", code="session_not_found")
    transport = items[0].transport
    mid = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("a=ice-ufrag:"):
            ufrag = line.split(":", 1)[1]
            current = transport.pc.remoteDescription.sdp if transport.pc.remoteDescription else ""
            if f"a=ice-ufrag:{ufrag}" not in current:
                raise BadRequest("ICE restarts are not supported", code="ice_restart_unsupported")
        elif line.startswith("a=mid:"):
            mid = line.split(":", 1)[1]
        elif line.startswith("a=candidate:"):
            await transport.add_ice_candidate(line, mid, None if mid else 0)
        elif line == "a=end-of-candidates":
            await transport.add_ice_candidate("", mid, None)
    return web.Response(status=204)


def _cors_preflight(request: web.Request) -> web.Response:
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "POST, PATCH, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
            "Accept-Post": SDP,
        },
    )


@routes.post("/whip/{room}")
async def whip_create(request: web.Request) -> web.Response:
    return await _create(request, "whip")


@routes.post("/whep/{room}")
async def whep_create(request: web.Request) -> web.Response:
    return await _create(request, "whep")


@routes.delete("/whip/{room}/{resource}")
async def whip_delete(request: web.Request) -> web.Response:
    return await _delete(request, "whip")


@routes.delete("/whep/{room}/{resource}")
async def whep_delete(request: web.Request) -> web.Response:
    return await _delete(request, "whep")


@routes.patch("/whip/{room}/{resource}")
async def whip_patch(request: web.Request) -> web.Response:
    return await _patch(request, "whip")


@routes.patch("/whep/{room}/{resource}")
async def whep_patch(request: web.Request) -> web.Response:
    return await _patch(request, "whep")


@routes.options("/whip/{room}")
@routes.options("/whep/{room}")
@routes.options("/whip/{room}/{resource}")
@routes.options("/whep/{room}/{resource}")
async def preflight(request: web.Request) -> web.Response:
    return _cors_preflight(request)
