"""Signalling protocol 1: client messages are read into dataclasses or refused by code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from teller.errors import BadRequest
from teller.signaling.protocol import (
    MAX_REQUEST_ID,
    PROTOCOL_VERSION,
    IceCandidate,
    Join,
    Leave,
    Ping,
    Publish,
    SendData,
    Subscribe,
    Unpublish,
    Unsubscribe,
    parse,
)

SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


def msg(**fields: Any) -> str:
    return json.dumps(fields)


def refused(raw: str) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse(raw)
    assert info.value.status == 400
    return info.value


# -- each type ---------------------------------------------------------------------------


def test_join() -> None:
    m = parse(msg(type="join", protocol=1, token="tok", room="r1", request_id="q1"))
    assert m == Join("q1", 1, "tok", "r1")
    assert m.type == "join"


def test_join_defaults() -> None:
    assert parse(msg(type="join")) == Join(None, PROTOCOL_VERSION, None, None)


def test_publish() -> None:
    tracks = [
        {"source": "camera", "name": "front", "extra": "dropped"},
        {"source": "microphone", "name": 5},
        {"name": "n" * 100},
    ]
    m = parse(msg(type="publish", sdp=SDP, tracks=tracks, request_id="p"))
    assert isinstance(m, Publish)
    assert m.sdp == SDP and m.request_id == "p"
    # Only source/name strings survive, each cut at 64 characters.
    assert m.tracks == [{"source": "camera", "name": "front"}, {"source": "microphone"}, {"name": "n" * 64}]


def test_publish_without_tracks() -> None:
    assert parse(msg(type="publish", sdp=SDP)) == Publish(None, SDP, [])


def test_subscribe() -> None:
    m = parse(msg(type="subscribe", sdp=SDP, participant_id="PA_1", track_ids=["TR_1", "TR_2"]))
    assert m == Subscribe(None, SDP, "PA_1", ["TR_1", "TR_2"])
    assert parse(msg(type="subscribe", sdp=SDP)) == Subscribe(None, SDP, None, None)


@pytest.mark.parametrize(("kind", "cls"), [("unpublish", Unpublish), ("unsubscribe", Unsubscribe)])
def test_unpublish_unsubscribe(kind: str, cls: type) -> None:
    m = parse(msg(type=kind, transport_id="PC_1", request_id="x"))
    assert m == cls("x", "PC_1")
    assert m.type == kind


def test_ice_candidate() -> None:
    cand = "candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host"
    m = parse(msg(type="ice_candidate", transport_id="PC_1", candidate=cand, sdp_mid="0", sdp_mline_index=0))
    assert m == IceCandidate(None, "PC_1", cand, "0", 0)


def test_ice_candidate_end_of_candidates() -> None:
    m = parse(msg(type="ice_candidate", transport_id="PC_1", candidate=""))
    assert m == IceCandidate(None, "PC_1", "", None, None)


@pytest.mark.parametrize("payload", [{"a": [1, 2]}, "text", 0, None, [], False])
def test_data(payload: Any) -> None:
    m = parse(msg(type="data", payload=payload, topic="chat", to=["PA_1", "alice"]))
    assert m == SendData(None, payload, "chat", ["PA_1", "alice"])


def test_data_minimal() -> None:
    assert parse(msg(type="data", payload=1)) == SendData(None, 1, None, None)


@pytest.mark.parametrize(("kind", "cls"), [("leave", Leave), ("ping", Ping)])
def test_leave_ping(kind: str, cls: type) -> None:
    assert parse(msg(type=kind, request_id="r")) == cls("r")
    assert parse(msg(type=kind)) == cls(None)


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["", "{", "not json", "{'type': 'ping'}", "[" * 100_000])
def test_invalid_json(raw: str) -> None:
    assert refused(raw).code == "invalid_json"


@pytest.mark.parametrize("raw", ["[]", "1", '"ping"', "null"])
def test_not_an_object(raw: str) -> None:
    assert refused(raw).code == "invalid_message"


@pytest.mark.parametrize("kind", [None, "", "JOIN", "pong", "joined", 5, ["join"]])
def test_unknown_type(kind: Any) -> None:
    body = {} if kind is None else {"type": kind}
    assert refused(json.dumps(body)).code == "unknown_type"


@pytest.mark.parametrize("protocol", [0, 2, "1", None])
def test_unsupported_protocol(protocol: Any) -> None:
    exc = refused(msg(type="join", protocol=protocol))
    assert exc.code == "unsupported_protocol"
    assert exc.details == {"field": "protocol"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "ping", "request_id": 1}, "request_id"),
        ({"type": "ping", "request_id": ""}, "request_id"),
        ({"type": "ping", "request_id": "r" * (MAX_REQUEST_ID + 1)}, "request_id"),
        ({"type": "join", "token": 5}, "token"),
        ({"type": "join", "token": "t" * 4097}, "token"),
        ({"type": "join", "room": "r" * 65}, "room"),
        ({"type": "join", "room": ""}, "room"),
        ({"type": "publish"}, "sdp"),
        ({"type": "publish", "sdp": ""}, "sdp"),
        ({"type": "publish", "sdp": {"sdp": SDP}}, "sdp"),
        ({"type": "publish", "sdp": "v" * 65537}, "sdp"),
        ({"type": "publish", "sdp": SDP, "tracks": {"source": "camera"}}, "tracks"),
        ({"type": "publish", "sdp": SDP, "tracks": ["camera"]}, "tracks"),
        ({"type": "publish", "sdp": SDP, "tracks": [{}] * 9}, "tracks"),
        ({"type": "subscribe"}, "sdp"),
        ({"type": "subscribe", "sdp": "v" * 65537}, "sdp"),
        ({"type": "subscribe", "sdp": SDP, "participant_id": 7}, "participant_id"),
        ({"type": "subscribe", "sdp": SDP, "participant_id": "p" * 129}, "participant_id"),
        ({"type": "subscribe", "sdp": SDP, "track_ids": "TR_1"}, "track_ids"),
        ({"type": "subscribe", "sdp": SDP, "track_ids": [1]}, "track_ids"),
        ({"type": "subscribe", "sdp": SDP, "track_ids": [""]}, "track_ids"),
        ({"type": "subscribe", "sdp": SDP, "track_ids": ["t" * 129]}, "track_ids"),
        ({"type": "subscribe", "sdp": SDP, "track_ids": ["t"] * 33}, "track_ids"),
        ({"type": "unpublish"}, "transport_id"),
        ({"type": "unsubscribe", "transport_id": 3}, "transport_id"),
        ({"type": "unpublish", "transport_id": "p" * 129}, "transport_id"),
        ({"type": "ice_candidate", "transport_id": "PC_1"}, "candidate"),
        ({"type": "ice_candidate", "transport_id": "PC_1", "candidate": None}, "candidate"),
        ({"type": "ice_candidate", "transport_id": "PC_1", "candidate": "c" * 1025}, "candidate"),
        ({"type": "ice_candidate", "candidate": ""}, "transport_id"),
        ({"type": "ice_candidate", "transport_id": "PC_1", "candidate": "", "sdp_mid": 0}, "sdp_mid"),
        ({"type": "ice_candidate", "transport_id": "PC_1", "candidate": "", "sdp_mid": "m" * 33}, "sdp_mid"),
        ({"type": "ice_candidate", "transport_id": "PC_1", "candidate": "", "sdp_mline_index": -1}, "sdp_mline_index"),
        ({"type": "ice_candidate", "transport_id": "PC_1", "candidate": "", "sdp_mline_index": 1024}, "sdp_mline_index"),
        ({"type": "ice_candidate", "transport_id": "PC_1", "candidate": "", "sdp_mline_index": "0"}, "sdp_mline_index"),
        ({"type": "ice_candidate", "transport_id": "PC_1", "candidate": "", "sdp_mline_index": True}, "sdp_mline_index"),
        ({"type": "ice_candidate", "transport_id": "PC_1", "candidate": "", "sdp_mline_index": 0.5}, "sdp_mline_index"),
        ({"type": "data"}, "payload"),
        ({"type": "data", "payload": 1, "topic": "t" * 65}, "topic"),
        ({"type": "data", "payload": 1, "topic": 5}, "topic"),
        ({"type": "data", "payload": 1, "to": "alice"}, "to"),
        ({"type": "data", "payload": 1, "to": [1]}, "to"),
        ({"type": "data", "payload": 1, "to": [None]}, "to"),
        ({"type": "data", "payload": 1, "to": ["a"] * 101}, "to"),
        ({"type": "data", "payload": 1, "to": ["a" * 129]}, "to"),
    ],
)
def test_invalid_message_names_the_field(body: dict[str, Any], field: str) -> None:
    exc = refused(json.dumps(body))
    assert exc.code == "invalid_message"
    assert exc.details == {"field": field}
    assert exc.to_json()["details"] == {"field": field}


@pytest.mark.parametrize(
    "body",
    [
        {"type": "ping", "request_id": "r" * MAX_REQUEST_ID},
        {"type": "join", "token": "t" * 4096, "room": "r" * 64},
        {"type": "publish", "sdp": "v" * 65536, "tracks": [{}] * 8},
        {"type": "subscribe", "sdp": SDP, "track_ids": ["t" * 128] * 32},
        {"type": "ice_candidate", "transport_id": "p" * 128, "candidate": "c" * 1024, "sdp_mid": "m" * 32, "sdp_mline_index": 1023},
        {"type": "data", "payload": 1, "topic": "t" * 64, "to": ["a" * 128] * 100},
    ],
)
def test_limits_are_inclusive(body: dict[str, Any]) -> None:
    assert parse(json.dumps(body)).type == body["type"]


def test_request_id_is_checked_before_the_body() -> None:
    exc = refused(msg(type="publish", request_id=["x"]))
    assert exc.details == {"field": "request_id"}


def test_boolean_protocol_is_unsupported() -> None:
    assert refused(msg(type="join", protocol=True)).code == "unsupported_protocol"
