"""Reading the access token off a request and checking it against the room."""

from __future__ import annotations

from aiohttp import web

from ..errors import Unauthorized
from ..sfu import Permissions
from .keys import ISSUER
from .tokens import AccessToken


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'", code="token_invalid")
        return value.strip()
    return request.query.get("access_token") or None


def authenticate(request: web.Request) -> AccessToken:
    return request.app[ISSUER].verify(bearer(request))


def authorize(request: web.Request, room: str, grant: str) -> AccessToken:
    token = authenticate(request)
    token.require_room(room)
    token.require(grant)
    return token


def permissions(token: AccessToken) -> Permissions:
    return Permissions(
        publish=token.grants.publish, subscribe=token.grants.subscribe, data=token.grants.data
    )
