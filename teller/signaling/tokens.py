"""Access tokens: HS256 JWTs carrying who someone is, what role they have and where.

A token names one room. Only a token with the admin grant may name "*" (every room),
which operators and back-office services use for the REST API.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jwt

from ..config import Config, data_dir
from ..errors import Forbidden, Unauthorized

ROLES = ("customer", "agent", "officer", "reviewer", "supervisor", "compliance", "service")
ANY_ROOM = "*"


@dataclass(frozen=True)
class Grants:
    publish: bool = False
    subscribe: bool = False
    data: bool = False
    admin: bool = False

    @classmethod
    def for_role(cls, role: str) -> Grants:
        """Least privilege by role; a token may carry other grants explicitly."""
        if role in ("customer", "agent", "officer", "reviewer"):
            return cls(publish=True, subscribe=True, data=True)
        if role == "supervisor":
            return cls(publish=True, subscribe=True, data=True, admin=True)
        if role == "compliance":
            return cls(subscribe=True)
        if role == "service":
            return cls(publish=True, subscribe=True, data=True, admin=True)
        raise ValueError(f"unknown role {role!r}")


@dataclass(frozen=True)
class AccessToken:
    subject: str
    name: str
    role: str
    room: str
    grants: Grants
    expires_at: int
    issued_at: int = 0
    token_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def allows_room(self, room: str) -> bool:
        return self.room == room or (self.room == ANY_ROOM and self.grants.admin)

    def require_room(self, room: str) -> None:
        if not self.allows_room(room):
            raise Forbidden("this token is for another room", code="room_forbidden")

    def require(self, grant: str) -> None:
        if not getattr(self.grants, grant):
            raise Forbidden(f"this token lacks the {grant} grant", code="grant_missing")


class TokenIssuer:
    """Signs and verifies access tokens with one shared secret."""

    ALGORITHM = "HS256"

    def __init__(self, secret: str, issuer: str = "teller", max_ttl_s: int = 86400) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 characters")
        self._secret = secret
        self._issuer = issuer
        self._max_ttl_s = max_ttl_s

    def issue(
        self,
        *,
        room: str,
        role: str,
        subject: str | None = None,
        name: str | None = None,
        ttl_s: int = 3600,
        grants: Grants | None = None,
    ) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not room:
            raise ValueError("room must not be empty")
        grants = grants or Grants.for_role(role)
        if room == ANY_ROOM and not (grants.admin or role == "compliance"):
            raise ValueError('only a token with the admin grant (or a compliance token) may name room "*"')
        if not 0 < ttl_s <= self._max_ttl_s:
            raise ValueError(f"ttl must be between 1 and {self._max_ttl_s} seconds")
        now = int(time.time())
        subject = subject or f"{role}-{secrets.token_hex(4)}"
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": subject,
            "name": name or subject,
            "role": role,
            "room": room,
            "grants": asdict(grants),
            "iat": now,
            "nbf": now - 5,
            "exp": now + ttl_s,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm=self.ALGORITHM)

    def issue_resume(self, token: AccessToken, room: str, participant_id: str, hidden: bool = False) -> str:
        """Lets a client take its place back after its connection or its node is lost.

        It carries the access token's identity and grants, for one room and one
        participant id, and expires with the access token it came from.
        """
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "typ": "resume",
            "sub": token.subject,
            "name": token.name,
            "role": token.role,
            "room": room,
            "pid": participant_id,
            "hid": hidden,
            "grants": asdict(token.grants),
            "iat": int(time.time()),
            "exp": token.expires_at,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm=self.ALGORITHM)

    def verify_resume(self, token: str) -> ResumeClaims:
        claims = self._decode(token)
        participant_id = claims.get("pid")
        if claims.get("typ") != "resume" or not isinstance(participant_id, str) or claims["room"] == ANY_ROOM:
            raise Unauthorized("the resume token is not valid", code="token_invalid")
        return ResumeClaims(self._access(claims), participant_id, claims.get("hid") is True)

    def verify(self, token: str | None) -> AccessToken:
        if not token:
            raise Unauthorized("an access token is required", code="token_missing")
        claims = self._decode(token)
        if claims.get("typ") is not None:
            raise Unauthorized("the access token is not valid", code="token_invalid")
        return self._access(claims)

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[self.ALGORITHM],
                issuer=self._issuer,
                options={"require": ["exp", "sub", "room", "role"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the access token has expired", code="token_expired") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthorized("the access token is not valid", code="token_invalid") from exc
        return claims

    def _access(self, claims: dict[str, Any]) -> AccessToken:
        role = claims.get("role")
        grants_raw = claims.get("grants") or {}
        if role not in ROLES or not isinstance(grants_raw, dict):
            raise Unauthorized("the access token is not valid", code="token_invalid")
        grants = Grants(**{k: bool(grants_raw.get(k, False)) for k in Grants.__annotations__})
        room = str(claims["room"])
        # A compliance token for "*" covers the whole archive, yet opens no live room:
        # allows_room still wants the admin grant.
        if room == ANY_ROOM and not (grants.admin or role == "compliance"):
            raise Unauthorized("the access token is not valid", code="token_invalid")
        return AccessToken(
            subject=str(claims["sub"]),
            name=str(claims.get("name") or claims["sub"])[:128],
            role=role,
            room=room,
            grants=grants,
            expires_at=int(claims["exp"]),
            issued_at=int(claims.get("iat", 0)),
            token_id=str(claims.get("jti", "")),
        )


@dataclass(frozen=True)
class ResumeClaims:
    """What a resume token proves: this token's holder was this participant of this room."""

    token: AccessToken
    participant_id: str
    hidden: bool = False


def resolve_secret(config: Config) -> str:
    """The configured secret, else one generated once and kept in the data directory."""
    if config.auth.secret:
        return config.auth.secret
    path = Path(data_dir(config)) / "secret.key"
    try:
        return path.read_text("utf-8").strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text("utf-8").strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret


def issuer_for(config: Config) -> TokenIssuer:
    return TokenIssuer(resolve_secret(config), config.auth.issuer, config.auth.max_ttl_s)
