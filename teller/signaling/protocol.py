"""The WebSocket signalling protocol, version 1 (docs/protocol.md), client side in.

Each client message is a JSON object with a `type`; it is read into one of the
dataclasses below or refused with a BadRequest naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import BadRequest

PROTOCOL_VERSION = 1
MAX_REQUEST_ID = 64


@dataclass(frozen=True)
class ClientMessage:
    type: ClassVar[str]
    request_id: str | None


@dataclass(frozen=True)
class Join(ClientMessage):
    type: ClassVar[str] = "join"
    protocol: int
    token: str | None
    room: str | None
    resume: str | None = None
    hidden: bool = False


@dataclass(frozen=True)
class Publish(ClientMessage):
    type: ClassVar[str] = "publish"
    sdp: str
    tracks: list[dict[str, str]]


@dataclass(frozen=True)
class Subscribe(ClientMessage):
    type: ClassVar[str] = "subscribe"
    sdp: str
    participant_id: str | None
    track_ids: list[str] | None


@dataclass(frozen=True)
class Unpublish(ClientMessage):
    type: ClassVar[str] = "unpublish"
    transport_id: str


@dataclass(frozen=True)
class Unsubscribe(ClientMessage):
    type: ClassVar[str] = "unsubscribe"
    transport_id: str


@dataclass(frozen=True)
class IceCandidate(ClientMessage):
    type: ClassVar[str] = "ice_candidate"
    transport_id: str
    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None


@dataclass(frozen=True)
class SendData(ClientMessage):
    type: ClassVar[str] = "data"
    payload: Any
    topic: str | None
    to: list[str] | None


@dataclass(frozen=True)
class Leave(ClientMessage):
    type: ClassVar[str] = "leave"


@dataclass(frozen=True)
class Reveal(ClientMessage):
    """A hidden (monitoring) participant shows itself to everyone: barge-in."""

    type: ClassVar[str] = "reveal"


@dataclass(frozen=True)
class Ping(ClientMessage):
    type: ClassVar[str] = "ping"


def parse(raw: str) -> ClientMessage:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest("the message is not valid JSON", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise BadRequest("a message is a JSON object", code="invalid_message")
    kind = body.get("type")
    reader = _READERS.get(kind) if isinstance(kind, str) else None
    if reader is None:
        raise BadRequest(f"unknown message type {kind!r}", code="unknown_type")
    request_id = _opt_str(body, "request_id", MAX_REQUEST_ID)
    return reader(body, request_id)


def _str(body: dict[str, Any], key: str, limit: int = 256) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key} must be a non-empty string", code="invalid_message", field=key)
    if len(value) > limit:
        raise BadRequest(f"{key} is longer than {limit} characters", code="invalid_message", field=key)
    return value


def _opt_str(body: dict[str, Any], key: str, limit: int = 256) -> str | None:
    if body.get(key) is None:
        return None
    return _str(body, key, limit)


def _opt_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1024:
        raise BadRequest(f"{key} must be a small non-negative integer", code="invalid_message", field=key)
    return value


def _str_list(body: dict[str, Any], key: str, limit: int = 32) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) > limit
        or not all(isinstance(v, str) and 0 < len(v) <= 128 for v in value)
    ):
        raise BadRequest(f"{key} must be a list of at most {limit} strings", code="invalid_message", field=key)
    return list(value)


def _join(body: dict[str, Any], rid: str | None) -> Join:
    protocol = body.get("protocol", PROTOCOL_VERSION)
    if isinstance(protocol, bool) or protocol != PROTOCOL_VERSION:
        raise BadRequest(
            f"this server speaks protocol {PROTOCOL_VERSION}", code="unsupported_protocol", field="protocol"
        )
    hidden = body.get("hidden", False)
    if not isinstance(hidden, bool):
        raise BadRequest("hidden must be true or false", code="invalid_message", field="hidden")
    return Join(
        rid, protocol, _opt_str(body, "token", 4096), _opt_str(body, "room", 64), _opt_str(body, "resume", 4096), hidden
    )


def _publish(body: dict[str, Any], rid: str | None) -> Publish:
    tracks = body.get("tracks", [])
    if tracks is None:
        tracks = []
    if not isinstance(tracks, list) or len(tracks) > 8 or not all(isinstance(t, dict) for t in tracks):
        raise BadRequest("tracks must be a list of objects", code="invalid_message", field="tracks")
    clean = [
        {k: str(v)[:64] for k, v in t.items() if k in ("source", "name") and isinstance(v, str)}
        for t in tracks
    ]
    return Publish(rid, _str(body, "sdp", 65536), clean)


def _subscribe(body: dict[str, Any], rid: str | None) -> Subscribe:
    return Subscribe(
        rid,
        _str(body, "sdp", 65536),
        _opt_str(body, "participant_id", 128),
        _str_list(body, "track_ids"),
    )


def _ice(body: dict[str, Any], rid: str | None) -> IceCandidate:
    candidate = body.get("candidate")
    if not isinstance(candidate, str) or len(candidate) > 1024:
        raise BadRequest("candidate must be a string", code="invalid_message", field="candidate")
    return IceCandidate(
        rid,
        _str(body, "transport_id", 128),
        candidate,
        _opt_str(body, "sdp_mid", 32),
        _opt_int(body, "sdp_mline_index"),
    )


def _data(body: dict[str, Any], rid: str | None) -> SendData:
    if "payload" not in body:
        raise BadRequest("a data message needs a payload", code="invalid_message", field="payload")
    return SendData(rid, body["payload"], _opt_str(body, "topic", 64), _str_list(body, "to", 100))


_READERS = {
    "join": _join,
    "publish": _publish,
    "subscribe": _subscribe,
    "unpublish": lambda b, r: Unpublish(r, _str(b, "transport_id", 128)),
    "unsubscribe": lambda b, r: Unsubscribe(r, _str(b, "transport_id", 128)),
    "ice_candidate": _ice,
    "data": _data,
    "leave": lambda b, r: Leave(r),
    "reveal": lambda b, r: Reveal(r),
    "ping": lambda b, r: Ping(r),
}
