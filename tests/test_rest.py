"""The REST API and the application around it, through a real in-process server."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from teller.client import ClientError, RoomClient
from teller.signaling.tokens import Grants

from .conftest import Server, start_in_process, wait_until

Response = tuple[int, Any]


async def call(
    http: aiohttp.ClientSession,
    server: Server,
    method: str,
    path: str,
    *,
    token: str | None = None,
    json: Any = None,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with http.request(method, server.url + path, json=json, data=data, headers=headers) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


def error_code(response: Response, status: int) -> str:
    assert response[0] == status, response
    return response[1]["error"]["code"]


async def create(http: aiohttp.ClientSession, server: Server, name: str, **fields: Any) -> Response:
    return await call(http, server, "POST", "/v1/rooms", token=server.admin_token(), json={"name": name, **fields})


async def join(server: Server, clients: list[RoomClient], room: str, name: str, role: str = "customer", **kwargs: Any) -> RoomClient:
    client = RoomClient(server.url, server.token(room, role, name, **kwargs))
    clients.append(client)
    await client.connect()
    return client


def record(client: RoomClient, kind: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    client.on(kind, seen.append)
    return seen


# -- health, errors, CORS ----------------------------------------------------------------------


async def test_healthz(http: aiohttp.ClientSession, server: Server) -> None:
    assert await call(http, server, "GET", "/healthz") == (200, {"status": "ok", "role": "embedded", "node_id": server.node.id})


@pytest.mark.parametrize("path", ["/nope", "/v1/rooms/a/b/c/d", "/v2/rooms"])
async def test_unknown_path_is_json_404(http: aiohttp.ClientSession, server: Server, path: str) -> None:
    status, body = await call(http, server, "GET", path)
    assert status == 404
    assert body["error"]["code"] == "not_found"
    assert body["error"]["message"]


async def test_wrong_method_is_json_405(http: aiohttp.ClientSession, server: Server) -> None:
    async with http.put(server.url + "/v1/rooms", headers={"Authorization": f"Bearer {server.admin_token()}"}) as response:
        assert response.status == 405
        assert (await response.json())["error"]["code"] == "method_not_allowed"
        assert {"GET", "POST"} <= {m.strip() for m in response.headers["Allow"].split(",")}


async def test_cors_header(http: aiohttp.ClientSession, server: Server) -> None:
    async with http.get(server.url + "/healthz", headers={"Origin": "https://desk.example"}) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "*"


# -- auth on the REST API -----------------------------------------------------------------------


async def test_rest_needs_a_token(http: aiohttp.ClientSession, server: Server) -> None:
    assert error_code(await call(http, server, "GET", "/v1/rooms"), 401) == "token_missing"
    assert error_code(await call(http, server, "GET", "/v1/rooms", token="not-a-jwt"), 401) == "token_invalid"
    headers = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert error_code(await call(http, server, "GET", "/v1/rooms", headers=headers), 401) == "token_invalid"


@pytest.mark.parametrize(("data", "content_type"), [(b"{}", "application/json"), (b"x", "text/plain")])
async def test_create_room_authenticates_first(http: aiohttp.ClientSession, server: Server, data: bytes, content_type: str) -> None:
    response = await call(http, server, "POST", "/v1/rooms", data=data, headers={"Content-Type": content_type})
    assert error_code(response, 401) == "token_missing"


async def test_rest_accepts_access_token_query(http: aiohttp.ClientSession, server: Server) -> None:
    status, body = await call(http, server, "GET", f"/v1/rooms?access_token={server.admin_token()}")
    assert status == 200 and body == {"rooms": []}


async def test_rest_needs_the_admin_grant(http: aiohttp.ClientSession, server: Server) -> None:
    await create(http, server, "r1")
    for token in (server.token("r1", "agent"), server.token("r1", "compliance")):
        assert error_code(await call(http, server, "GET", "/v1/rooms", token=token), 403) == "grant_missing"
        assert error_code(await call(http, server, "GET", "/v1/rooms/r1", token=token), 403) == "grant_missing"
        assert error_code(await call(http, server, "DELETE", "/v1/rooms/r1", token=token), 403) == "grant_missing"
    assert "r1" in server.node.rooms


# -- creating rooms --------------------------------------------------------------------------------


async def test_create_room(http: aiohttp.ClientSession, server: Server) -> None:
    status, body = await create(http, server, "branch-7.desk:1", max_participants=3, empty_timeout_s=12.5, metadata={"branch": 7})
    assert status == 201
    assert body["name"] == "branch-7.desk:1"
    assert body["sid"].startswith("RM")
    assert body["max_participants"] == 3
    assert body["empty_timeout_s"] == 12.5
    assert body["metadata"] == {"branch": 7}
    assert body["num_participants"] == 0 and body["num_tracks"] == 0
    assert isinstance(body["created_at"], float)
    room = server.node.rooms["branch-7.desk:1"]
    assert (room.sid, room.max_participants, room.empty_timeout_s) == (body["sid"], 3, 12.5)


async def test_create_room_defaults(http: aiohttp.ClientSession, server: Server) -> None:
    status, body = await create(http, server, "plain")
    assert status == 201
    assert body["max_participants"] == server.config.rooms.max_participants
    assert body["empty_timeout_s"] == server.config.rooms.empty_timeout_s
    assert body["metadata"] == {}


async def test_create_room_with_admin_token_for_that_room(http: aiohttp.ClientSession, server: Server) -> None:
    token = server.admin_token("mine")
    status, _ = await call(http, server, "POST", "/v1/rooms", token=token, json={"name": "mine"})
    assert status == 201
    response = await call(http, server, "POST", "/v1/rooms", token=token, json={"name": "other"})
    assert error_code(response, 403) == "room_forbidden"
    assert "other" not in server.node.rooms


async def test_duplicate_room(http: aiohttp.ClientSession, server: Server) -> None:
    first = await create(http, server, "dup")
    assert first[0] == 201
    assert error_code(await create(http, server, "dup"), 409) == "room_exists"
    assert server.node.rooms["dup"].sid == first[1]["sid"]


@pytest.mark.parametrize("name", ["", "has space", "-leading-dash", "_x", "a" * 65, "é", "a/b", None, 5, ["a"]])
async def test_invalid_room_name(http: aiohttp.ClientSession, server: Server, name: Any) -> None:
    body = {} if name is None else {"name": name}
    response = await call(http, server, "POST", "/v1/rooms", token=server.admin_token(), json=body)
    assert error_code(response, 400) == "invalid_room_name"
    assert server.node.rooms == {}


async def test_longest_room_name(http: aiohttp.ClientSession, server: Server) -> None:
    assert (await create(http, server, "a" * 64))[0] == 201


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"max_participants": 0}, "max_participants"),
        ({"max_participants": 1001}, "max_participants"),
        ({"max_participants": -1}, "max_participants"),
        ({"max_participants": "3"}, "max_participants"),
        ({"max_participants": 2.5}, "max_participants"),
        ({"max_participants": True}, "max_participants"),
        ({"empty_timeout_s": -1}, "empty_timeout_s"),
        ({"empty_timeout_s": 86401}, "empty_timeout_s"),
        ({"empty_timeout_s": "1"}, "empty_timeout_s"),
        ({"empty_timeout_s": False}, "empty_timeout_s"),
        ({"metadata": [1]}, "metadata"),
        ({"metadata": "x"}, "metadata"),
        ({"metadata": {"k": "v" * 5000}}, "metadata"),
    ],
)
async def test_invalid_room_fields(http: aiohttp.ClientSession, server: Server, fields: dict[str, Any], field: str) -> None:
    status, body = await create(http, server, "r1", **fields)
    assert status == 400
    assert body["error"]["code"] == "invalid_message"
    assert body["error"]["details"] == {"field": field}
    assert server.node.rooms == {}


@pytest.mark.parametrize("fields", [{"max_participants": 1}, {"max_participants": 1000}, {"empty_timeout_s": 0}, {"empty_timeout_s": 86400}])
async def test_room_field_bounds_inclusive(http: aiohttp.ClientSession, server: Server, fields: dict[str, Any]) -> None:
    status, body = await create(http, server, "r1", **fields)
    assert status == 201
    for key, value in fields.items():
        assert body[key] == value


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/sdp"])
async def test_create_room_wrong_content_type(http: aiohttp.ClientSession, server: Server, content_type: str) -> None:
    response = await call(
        http, server, "POST", "/v1/rooms", token=server.admin_token(), data=b'{"name": "r1"}', headers={"Content-Type": content_type}
    )
    assert error_code(response, 415) == "unsupported_media_type"
    assert server.node.rooms == {}


async def test_body_too_large(http: aiohttp.ClientSession, server: Server) -> None:
    body = {"name": "r1", "metadata": {"blob": "x" * 300_000}}
    response = await call(http, server, "POST", "/v1/rooms", token=server.admin_token(), json=body)
    assert error_code(response, 413) == "message_too_large"
    assert server.node.rooms == {}


@pytest.mark.parametrize(("data", "code"), [(b"{", "invalid_json"), (b"\xff\xfe", "invalid_json"), (b"[]", "invalid_message"), (b'"r1"', "invalid_message")])
async def test_create_room_bad_body(http: aiohttp.ClientSession, server: Server, data: bytes, code: str) -> None:
    response = await call(
        http, server, "POST", "/v1/rooms", token=server.admin_token(), data=data, headers={"Content-Type": "application/json"}
    )
    assert error_code(response, 400) == code


# -- listing and reading rooms ------------------------------------------------------------------


async def test_list_rooms(http: aiohttp.ClientSession, server: Server) -> None:
    for name in ("a", "b", "c"):
        await create(http, server, name, metadata={"n": name})
    status, body = await call(http, server, "GET", "/v1/rooms", token=server.admin_token())
    assert status == 200
    assert sorted(r["name"] for r in body["rooms"]) == ["a", "b", "c"]
    assert {r["name"]: r["metadata"] for r in body["rooms"]} == {"a": {"n": "a"}, "b": {"n": "b"}, "c": {"n": "c"}}

    status, body = await call(http, server, "GET", "/v1/rooms", token=server.admin_token("b"))
    assert status == 200
    assert [r["name"] for r in body["rooms"]] == ["b"]

    status, body = await call(http, server, "GET", "/v1/rooms", token=server.admin_token("zzz"))
    assert (status, body) == (200, {"rooms": []})


async def test_get_room(http: aiohttp.ClientSession, server: Server, clients: list[RoomClient]) -> None:
    created = (await create(http, server, "r1", max_participants=4))[1]
    await join(server, clients, "r1", "ann")
    status, body = await call(http, server, "GET", "/v1/rooms/r1", token=server.admin_token())
    assert status == 200
    assert body["sid"] == created["sid"]
    assert body["max_participants"] == 4
    assert body["num_participants"] == 1
    assert (await call(http, server, "GET", "/v1/rooms/r1", token=server.admin_token("r1")))[0] == 200


async def test_get_room_refusals(http: aiohttp.ClientSession, server: Server) -> None:
    await create(http, server, "r1")
    assert error_code(await call(http, server, "GET", "/v1/rooms/nope", token=server.admin_token()), 404) == "room_not_found"
    assert error_code(await call(http, server, "GET", "/v1/rooms/r1", token=server.admin_token("r2")), 403) == "room_forbidden"


# -- closing rooms ---------------------------------------------------------------------------------


async def test_close_room_disconnects_everyone(http: aiohttp.ClientSession, server: Server, clients: list[RoomClient]) -> None:
    await create(http, server, "r1")
    ann = await join(server, clients, "r1", "ann", "agent")
    bob = await join(server, clients, "r1", "bob")
    left = {c.participant_id: record(c, "left") for c in (ann, bob)}
    bystander = await join(server, clients, "r2", "carl")

    assert await call(http, server, "DELETE", "/v1/rooms/r1", token=server.admin_token()) == (200, {"name": "r1", "closed": True})
    for client in (ann, bob):
        await asyncio.wait_for(client.closed.wait(), 5)
        assert client.close_reason == "closed_by_api"
        assert [m["reason"] for m in left[client.participant_id]] == ["closed_by_api"]

    assert "r1" not in server.node.rooms
    assert error_code(await call(http, server, "GET", "/v1/rooms/r1", token=server.admin_token()), 404) == "room_not_found"
    assert not bystander.closed.is_set()
    assert len(server.node.rooms["r2"].participants) == 1


async def test_close_room_refusals(http: aiohttp.ClientSession, server: Server) -> None:
    await create(http, server, "r1")
    assert error_code(await call(http, server, "DELETE", "/v1/rooms/nope", token=server.admin_token()), 404) == "room_not_found"
    assert error_code(await call(http, server, "DELETE", "/v1/rooms/r1", token=server.admin_token("r2")), 403) == "room_forbidden"
    assert "r1" in server.node.rooms
    assert (await call(http, server, "DELETE", "/v1/rooms/r1", token=server.admin_token("r1")))[0] == 200
    assert "r1" not in server.node.rooms


async def test_room_can_be_created_again_after_closing(http: aiohttp.ClientSession, server: Server) -> None:
    first = (await create(http, server, "r1"))[1]
    await call(http, server, "DELETE", "/v1/rooms/r1", token=server.admin_token())
    status, second = await create(http, server, "r1")
    assert status == 201 and second["sid"] != first["sid"]


# -- participants ------------------------------------------------------------------------------


async def test_list_participants(http: aiohttp.ClientSession, server: Server, clients: list[RoomClient]) -> None:
    ann = await join(server, clients, "r1", "Ann", "agent", subject="agent-ann")
    bob = await join(server, clients, "r1", "Bob", "customer", subject="cust-bob")
    status, body = await call(http, server, "GET", "/v1/rooms/r1/participants", token=server.admin_token("r1"))
    assert status == 200
    by_id = {p["participant_id"]: p for p in body["participants"]}
    assert set(by_id) == {ann.participant_id, bob.participant_id}
    assert {k: by_id[ann.participant_id][k] for k in ("identity", "name", "role", "kind", "tracks")} == {
        "identity": "agent-ann",
        "name": "Ann",
        "role": "agent",
        "kind": "websocket",
        "tracks": [],
    }
    assert by_id[bob.participant_id]["role"] == "customer"
    assert error_code(await call(http, server, "GET", "/v1/rooms/nope/participants", token=server.admin_token()), 404) == "room_not_found"


async def test_remove_participant(http: aiohttp.ClientSession, server: Server, clients: list[RoomClient]) -> None:
    ann = await join(server, clients, "r1", "ann", "agent")
    bob = await join(server, clients, "r1", "bob")
    bob_left = record(bob, "left")
    ann_saw = record(ann, "participant_left")

    status, body = await call(http, server, "DELETE", f"/v1/rooms/r1/participants/{bob.participant_id}", token=server.admin_token())
    assert (status, body) == (200, {"participant_id": bob.participant_id, "removed": True})

    await asyncio.wait_for(bob.closed.wait(), 5)
    assert bob.close_reason == "removed_by_api"
    assert [m["reason"] for m in bob_left] == ["removed_by_api"]
    await wait_until(lambda: ann_saw, timeout=5)
    assert [(m["participant_id"], m["reason"]) for m in ann_saw] == [(bob.participant_id, "removed_by_api")]
    assert bob.participant_id not in ann.participants
    assert not ann.closed.is_set()
    assert list(server.node.rooms["r1"].participants) == [ann.participant_id]


async def test_remove_participant_refusals(http: aiohttp.ClientSession, server: Server, clients: list[RoomClient]) -> None:
    ann = await join(server, clients, "r1", "ann")
    path = f"/v1/rooms/r1/participants/{ann.participant_id}"
    assert error_code(await call(http, server, "DELETE", "/v1/rooms/r1/participants/PA_nope", token=server.admin_token()), 404) == "participant_not_found"
    assert error_code(await call(http, server, "DELETE", f"/v1/rooms/r2/participants/{ann.participant_id}", token=server.admin_token()), 404) == "room_not_found"
    assert error_code(await call(http, server, "DELETE", path, token=server.admin_token("r2")), 403) == "room_forbidden"
    assert error_code(await call(http, server, "DELETE", path, token=server.token("r1", "agent")), 403) == "grant_missing"
    assert list(server.node.rooms["r1"].participants) == [ann.participant_id]
    assert not ann.closed.is_set()


# -- joining: capacity and identity ----------------------------------------------------------


async def test_room_full(http: aiohttp.ClientSession, server: Server, clients: list[RoomClient]) -> None:
    await create(http, server, "small", max_participants=2)
    await join(server, clients, "small", "one")
    await join(server, clients, "small", "two")
    with pytest.raises(ClientError) as info:
        await join(server, clients, "small", "three")
    assert info.value.code == "room_full"
    assert info.value.status == 409
    assert len(server.node.rooms["small"].participants) == 2


async def test_duplicate_identity_replaces_the_earlier_participant(server: Server, clients: list[RoomClient]) -> None:
    first = RoomClient(server.url, server.issuer.issue(room="r1", role="agent", subject="same", name="first"))
    second = RoomClient(server.url, server.issuer.issue(room="r1", role="agent", subject="same", name="second"))
    watcher = await join(server, clients, "r1", "watcher")
    clients += [first, second]
    await first.connect()
    watcher_saw = record(watcher, "participant_left")
    await second.connect()

    await asyncio.wait_for(first.closed.wait(), 5)
    assert first.close_reason == "duplicate_identity"
    room = server.node.rooms["r1"]
    assert set(room.participants) == {watcher.participant_id, second.participant_id}
    assert room.participants[second.participant_id].name == "second"
    await wait_until(lambda: watcher_saw, timeout=5)
    assert [(m["participant_id"], m["reason"]) for m in watcher_saw] == [(first.participant_id, "duplicate_identity")]
    assert not second.closed.is_set()


async def test_duplicate_identity_can_rejoin_a_full_room(http: aiohttp.ClientSession, server: Server, clients: list[RoomClient]) -> None:
    await create(http, server, "solo", max_participants=1)
    first = await join(server, clients, "solo", "me", subject="me")
    second = await join(server, clients, "solo", "me", subject="me")
    await asyncio.wait_for(first.closed.wait(), 5)
    assert list(server.node.rooms["solo"].participants) == [second.participant_id]


# -- /v1/node -------------------------------------------------------------------------------------


async def test_node_stats(http: aiohttp.ClientSession, server: Server, clients: list[RoomClient]) -> None:
    await join(server, clients, "r1", "ann")
    status, body = await call(http, server, "GET", "/v1/node", token=server.admin_token())
    assert status == 200
    assert body["node_id"] == server.node.id
    assert body["rooms"] == 1 and body["participants"] == 1


async def test_node_registry_lists_the_embedded_node(http: aiohttp.ClientSession, server: Server, clients: list[RoomClient]) -> None:
    await join(server, clients, "r1", "ann")
    await wait_until(lambda: server.node.stats()["participants"] == 1)
    status, body = await call(http, server, "GET", "/v1/nodes", token=server.admin_token())
    assert status == 200
    assert [n["node_id"] for n in body["nodes"]] == [server.node.id]
    assert body["nodes"][0]["draining"] is False
    assert error_code(await call(http, server, "GET", "/v1/nodes", token=server.admin_token("r1")), 403) == "room_forbidden"
    assert error_code(await call(http, server, "GET", "/v1/nodes", token=server.token("r1", "agent")), 403) == "grant_missing"
    assert (await call(http, server, "GET", "/livez"))[0] == 200


async def test_node_stats_needs_admin_for_every_room(http: aiohttp.ClientSession, server: Server) -> None:
    assert error_code(await call(http, server, "GET", "/v1/node", token=server.admin_token("r1")), 403) == "room_forbidden"
    assert error_code(await call(http, server, "GET", "/v1/node", token=server.token("r1", "agent")), 403) == "grant_missing"
    assert error_code(await call(http, server, "GET", "/v1/node"), 401) == "token_missing"
    # A hand-made admin token for one room with every grant still is not enough.
    token = server.issuer.issue(room="r1", role="supervisor", grants=Grants(True, True, True, True))
    assert error_code(await call(http, server, "GET", "/v1/node", token=token), 403) == "room_forbidden"


# -- OpenAPI ------------------------------------------------------------------------------------

UNDOCUMENTED = {"/", "/call", "/customer", "/desk", "/wallboard", "/replay", "/officer", "/review", "/static/{name}"}


async def test_openapi_document(http: aiohttp.ClientSession, server: Server) -> None:
    status, doc = await call(http, server, "GET", "/openapi.json")
    assert status == 200
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert isinstance(doc["paths"], dict) and doc["paths"]
    for path, item in doc["paths"].items():
        assert path.startswith("/")
        operations = {k: v for k, v in item.items() if k in ("get", "post", "put", "patch", "delete")}
        assert operations, path
        for method, operation in operations.items():
            assert operation["responses"], f"{method} {path}"
            for code in operation["responses"]:
                assert code.isdigit() and 100 <= int(code) < 600


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_openapi_references_resolve(http: aiohttp.ClientSession, server: Server) -> None:
    doc = (await call(http, server, "GET", "/openapi.json"))[1]
    refs = _refs(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/")
        node: Any = doc
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, ref
            node = node[part]


async def test_openapi_covers_every_route(http: aiohttp.ClientSession, server: Server) -> None:
    doc = (await call(http, server, "GET", "/openapi.json"))[1]
    assert server.app is not None
    registered: set[tuple[str, str]] = set()
    for route in server.app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        path = route.resource.canonical if route.resource is not None else ""
        if path in UNDOCUMENTED:
            continue
        registered.add((path, route.method.lower()))
    assert ("/v1/rooms", "post") in registered and ("/whip/{room}/{resource}", "patch") in registered
    missing = sorted(f"{m.upper()} {p}" for p, m in registered if m not in doc["paths"].get(p, {}))
    assert not missing, f"routes missing from /openapi.json: {missing}"
    # And the document describes nothing the server does not serve.
    documented = {(p, m) for p, item in doc["paths"].items() for m in item if m in ("get", "post", "put", "patch", "delete")}
    assert documented == registered


async def test_openapi_path_parameters_are_declared(http: aiohttp.ClientSession, server: Server) -> None:
    doc = (await call(http, server, "GET", "/openapi.json"))[1]
    for path, item in doc["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        declared = {p["name"] for p in item.get("parameters", []) if p.get("in") == "path"}
        assert names == declared, path


# -- development tokens -------------------------------------------------------------------------


async def test_dev_token(http: aiohttp.ClientSession, server: Server, clients: list[RoomClient]) -> None:
    status, body = await call(http, server, "POST", "/v1/dev/token", json={"room": "demo", "name": "Ann", "role": "agent"})
    assert status == 200
    assert (body["room"], body["role"]) == ("demo", "agent")
    claims = server.issuer.verify(body["token"])
    assert (claims.room, claims.role, claims.name) == ("demo", "agent", "Ann")
    assert not claims.grants.admin

    client = RoomClient(server.url, body["token"])
    clients.append(client)
    joined = await client.connect()
    assert joined["room"]["name"] == "demo"
    assert joined["participant"]["name"] == "Ann"


async def test_dev_token_defaults(http: aiohttp.ClientSession, server: Server) -> None:
    status, body = await call(http, server, "POST", "/v1/dev/token", json={"room": "demo"})
    assert status == 200 and body["role"] == "customer"
    claims = server.issuer.verify(body["token"])
    assert (claims.role, claims.name) == ("customer", "guest")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"room": "demo", "role": "supervisor"}, "invalid_message"),
        ({"room": "demo", "role": "service"}, "invalid_message"),
        ({"room": "demo", "role": "compliance"}, "invalid_message"),
        ({"room": "demo", "role": "king"}, "invalid_message"),
        ({"room": "*"}, "invalid_room_name"),
        ({"room": "bad room"}, "invalid_room_name"),
        ({}, "invalid_room_name"),
        ({"room": "demo", "name": "n" * 65}, "invalid_message"),
        ({"room": "demo", "name": 5}, "invalid_message"),
    ],
)
async def test_dev_token_refusals(http: aiohttp.ClientSession, server: Server, body: dict[str, Any], code: str) -> None:
    assert error_code(await call(http, server, "POST", "/v1/dev/token", json=body), 400) == code


async def test_dev_token_wrong_content_type(http: aiohttp.ClientSession, server: Server) -> None:
    response = await call(http, server, "POST", "/v1/dev/token", data=b"room=demo", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert error_code(response, 415) == "unsupported_media_type"


async def test_dev_tokens_disabled(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    srv, runner = await start_in_process(tmp_path, auth={"dev_tokens": False})
    try:
        response = await call(http, srv, "POST", "/v1/dev/token", json={"room": "demo"})
        assert error_code(response, 403) == "dev_tokens_disabled"
        assert (await call(http, srv, "GET", "/healthz"))[0] == 200
    finally:
        await runner.cleanup()


async def test_every_page_is_served_and_the_index_links_them(http: aiohttp.ClientSession, server: Server) -> None:
    async with http.get(server.url + "/") as r:
        assert r.status == 200 and r.content_type == "text/html"
        index = await r.text()
    for page in ("/customer", "/desk", "/wallboard", "/call", "/replay", "/officer", "/review"):
        assert f'href="{page}' in index
        async with http.get(server.url + page) as r:
            assert r.status == 200 and r.content_type == "text/html", page
            html = await r.text()
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            async with http.get(server.url + asset) as r:
                assert r.status == 200, asset
