"""The signalling process's side of a client: one relayed WebSocket per client.

The client speaks protocol 1 to any signalling process. The process reads the
`join`, finds (or picks) the room's node, opens a WebSocket to that node and then
relays messages both ways unchanged. Media never passes through here: it goes
between the client and the node. When the node is lost the client is sent
`reconnect` and resumes with its resume token, through whichever signalling
process it reaches next.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from .. import logs
from ..config import Config
from ..errors import BadRequest, Forbidden, TellerError, Unauthorized, Unavailable
from ..sfu import validate_room_name
from ..sfu.participant import new_id
from ..signaling import protocol
from ..signaling.tokens import ANY_ROOM, TokenIssuer
from ..state import StateStore
from .placement import place_room

log = logging.getLogger("teller.cluster.proxy")

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_POLICY = 4008
CLOSE_RESTART = 1012
CLOSE_TRY_LATER = 1013
# Errors from a node that mean "ask another one".
RETRY_ELSEWHERE = {"node_draining", "room_moved"}
ATTEMPTS = 4


@dataclass
class SignalState:
    """What one signalling process holds: its relays, by node, and their counters."""

    id: str
    config: Config
    store: StateStore
    issuer: TokenIssuer
    http: aiohttp.ClientSession | None = None
    relays: dict[str, set[Relay]] = field(default_factory=lambda: defaultdict(set))
    relayed_total: int = 0
    moved_total: int = 0

    def relay_count(self) -> int:
        return sum(len(r) for r in self.relays.values())

    def node_lost(self, node_id: str) -> int:
        """Sends every client relayed to a lost node a `reconnect` now."""
        relays = list(self.relays.get(node_id, ()))
        for relay in relays:
            relay.lose_node()
        return len(relays)


class Relay:
    def __init__(self, state: SignalState, client: web.WebSocketResponse, url_token: str | None) -> None:
        self.state = state
        self.client = client
        self.url_token = url_token
        self.id = new_id("SS")
        self.node_id: str | None = None
        self.upstream: aiohttp.ClientWebSocketResponse | None = None
        self._lost = False
        self._close_reason = ""

    async def run(self) -> None:
        config = self.state.config
        loop = asyncio.get_running_loop()
        join_by = loop.time() + config.signaling.join_timeout_s
        while True:
            try:
                first = await self.client.receive(timeout=max(0.0, join_by - loop.time()))
            except TimeoutError:
                await self._refuse(BadRequest("join right after connecting", code="join_timeout"), None, CLOSE_POLICY)
                return
            if first.type != WSMsgType.TEXT:
                return
            if _loads(first.data).get("type") == "ping":  # allowed before joining, as on a node
                await self.client.send_str(json.dumps({"type": "pong", "request_id": _request_id(first.data)}))
                continue
            break
        try:
            room_name, forward = self._read_join(first.data)
        except TellerError as exc:
            code = CLOSE_UNAUTHORIZED if isinstance(exc, Unauthorized) else CLOSE_FORBIDDEN if isinstance(exc, Forbidden) else CLOSE_POLICY
            await self._refuse(exc, _request_id(first.data), code)
            return
        with logs.bind(room=room_name):
            try:
                reply = await self._connect(room_name, forward)
            except TellerError as exc:
                await self._refuse(exc, _request_id(first.data), CLOSE_TRY_LATER if exc.status >= 500 else CLOSE_POLICY)
                return
            await self.client.send_str(reply)
            self.state.relayed_total += 1
            assert self.node_id is not None
            self.state.relays[self.node_id].add(self)
            try:
                await self._pump()
            finally:
                self.state.relays[self.node_id].discard(self)
                if not self.state.relays[self.node_id]:
                    self.state.relays.pop(self.node_id, None)

    def _read_join(self, data: str) -> tuple[str, str]:
        """The room a `join` is for, and the join to forward (with the URL's token in it)."""
        if len(data) > self.state.config.signaling.max_message_bytes:
            raise BadRequest("the join message is too large", code="message_too_large")
        message = protocol.parse(data)
        if not isinstance(message, protocol.Join):
            raise BadRequest("join first", code="not_joined")
        issuer = self.state.issuer
        if message.resume:
            token = issuer.verify_resume(message.resume).token
            room = token.room
        else:
            token = issuer.verify(message.token or self.url_token)
            room = message.room or token.room
        if room == ANY_ROOM:
            raise BadRequest("name the room to join", code="invalid_room_name")
        validate_room_name(room)  # before anything is placed for it
        token.require_room(room)
        body = json.loads(data)
        if not message.resume and not message.token and self.url_token:
            body["token"] = self.url_token
        return room, json.dumps(body)

    async def _connect(self, room: str, join: str) -> str:
        """Opens the relay to the room's node and returns the node's answer to the join."""
        state = self.state
        config = state.config
        exclude: set[str] = set()
        last_error: Unavailable | None = None
        for _ in range(ATTEMPTS):
            _record, node = await place_room(
                state.store, room, auto_create=config.rooms.auto_create, exclude=frozenset(exclude)
            )
            node_id = node["node_id"]
            assert state.http is not None
            try:
                upstream = await state.http.ws_connect(
                    node["url"].rstrip("/") + "/v1/rtc",
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    heartbeat=10.0,
                    max_msg_size=0,
                    autoping=True,
                )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.warning("node unreachable; placing the room elsewhere", extra={"node_id": node_id, "error": str(exc)})
                exclude.add(node_id)
                await self._forget_node(node_id)
                continue
            try:
                await upstream.send_str(join)
                first = await upstream.receive(timeout=config.signaling.join_timeout_s + 5)
            except (TimeoutError, aiohttp.ClientError, OSError, ConnectionError):
                await upstream.close()
                exclude.add(node_id)
                continue
            if first.type != WSMsgType.TEXT:
                await upstream.close()
                exclude.add(node_id)
                continue
            body = _loads(first.data)
            if body.get("type") == "error" and body.get("code") in RETRY_ELSEWHERE:
                await upstream.close()
                exclude.add(node_id)
                last_error = Unavailable(body.get("message", ""), code=body["code"])
                continue
            self.upstream, self.node_id = upstream, node_id
            return first.data
        raise last_error or Unavailable("no media node could take the room; try again", code="no_node_available")

    async def _forget_node(self, node_id: str) -> None:
        """A node that refuses connections is gone, whatever its heartbeat says."""
        with contextlib.suppress(TellerError):
            await self.state.store.remove_node(node_id)

    async def _pump(self) -> None:
        assert self.upstream is not None
        upstream, client = self.upstream, self.client
        up = asyncio.create_task(self._copy_up())
        down = asyncio.create_task(self._copy_down())
        done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if down in done and not client.closed:
            code = upstream.close_code
            if self._lost or code is None or code in (1006, 1011) or upstream.exception() is not None:
                self.state.moved_total += 1
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await client.send_str(json.dumps({"type": "reconnect", "reason": "node_lost"}))
                await client.close(code=CLOSE_RESTART, message=b"node_lost")
            else:
                await client.close(code=code, message=self._close_reason.encode()[:120])
        if not upstream.closed:
            await upstream.close()

    async def _copy_up(self) -> None:
        assert self.upstream is not None
        async for message in self.client:
            if message.type == WSMsgType.TEXT:
                await self.upstream.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await self.upstream.send_bytes(message.data)
            else:
                return

    async def _copy_down(self) -> None:
        assert self.upstream is not None
        while True:
            message = await self.upstream.receive()
            if message.type == WSMsgType.TEXT:
                await self.client.send_str(message.data)
            elif message.type == WSMsgType.CLOSE:
                self._close_reason = str(message.extra or "")
                return
            elif message.type != WSMsgType.BINARY:
                return

    def lose_node(self) -> None:
        self._lost = True
        if self.upstream is not None and not self.upstream.closed:
            asyncio.ensure_future(self.upstream.close())

    async def _refuse(self, exc: TellerError, request_id: str | None, code: int) -> None:
        body: dict[str, Any] = {"type": "error", "status": exc.status, **exc.to_json()}
        if request_id:
            body["request_id"] = request_id
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.client.send_str(json.dumps(body))
        await self.client.close(code=code, message=exc.code.encode())


def _loads(data: str) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except json.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _request_id(data: Any) -> str | None:
    if not isinstance(data, str):
        return None
    rid = _loads(data).get("request_id")
    return rid if isinstance(rid, str) and len(rid) <= protocol.MAX_REQUEST_ID else None
