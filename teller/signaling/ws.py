"""WebSocket signalling: one session per connection, one participant per session.

Messages are read in one loop and handled in order. Whatever a message does wrong
comes back as an `error` message; the session, its room and everyone else carry on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import WebSocketError, WSMsgType, web

from .. import logs
from ..config import Config
from ..errors import BadRequest, Forbidden, PayloadTooLarge, RateLimited, TellerError, Unauthorized
from ..ratelimit import TokenBucket
from ..sfu import Node, Participant, Room
from ..sfu.events import Event, Reconnect, Removed
from ..sfu.participant import new_id
from . import protocol
from .auth import bearer, permissions
from .keys import CONFIG, ISSUER, NODE
from .tokens import ANY_ROOM, AccessToken, TokenIssuer

log = logging.getLogger("teller.signaling.ws")

OUTBOX_LIMIT = 1000
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_POLICY = 4008


@dataclass(frozen=True)
class _Close:
    """Queued after the last message: the writer closes the socket once it is sent."""

    code: int = 1000
    reason: str = ""


class SignalSession:
    def __init__(self, ws: web.WebSocketResponse, config: Config, node: Node, issuer: TokenIssuer, url_token: str | None) -> None:
        self._ws = ws
        self._config = config
        self._node = node
        self._issuer = issuer
        self._url_token = url_token
        self._bucket = TokenBucket(config.signaling.messages_per_second, config.signaling.message_burst)
        self._violations = 0
        self._outbox: asyncio.Queue[dict[str, Any] | _Close] = asyncio.Queue()
        self._closing = False
        self._leaving = False
        self._close_code = 0
        self.id = new_id("SS")
        self.token: AccessToken | None = None
        self.room: Room | None = None
        self.participant: Participant | None = None

    async def run(self) -> None:
        writer = asyncio.create_task(self._write_loop())
        try:
            await self._read_loop()
        finally:
            await self._disconnected()
            self.close()
            try:
                await asyncio.wait_for(writer, 2.0)
            except (asyncio.TimeoutError, ConnectionError):
                writer.cancel()

    # -- I/O ------------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        if self._closing:
            return
        if self._outbox.qsize() >= OUTBOX_LIMIT:
            log.warning("client is not reading its messages; closing")
            self._closing = True
            asyncio.ensure_future(self._ws.close(code=CLOSE_POLICY, message=b"slow consumer"))
            return
        self._outbox.put_nowait(message)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket after every message queued so far has been sent."""
        if not self._closing:
            self._closing = True
            self._close_code = code
            self._outbox.put_nowait(_Close(code, reason))

    def _notify(self, event: Event) -> None:
        self.send(event.to_message())
        if isinstance(event, Removed):
            self.close()
        elif isinstance(event, Reconnect):
            self.close(1012, event.reason)

    async def _write_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            if isinstance(item, _Close):
                if not self._ws.closed:
                    await self._ws.close(code=item.code, message=item.reason.encode())
                return
            if not self._ws.closed:
                await self._ws.send_str(json.dumps(item, separators=(",", ":"), default=str))

    def _error(self, exc: TellerError, request_id: str | None = None) -> None:
        body = {"type": "error", "status": exc.status, **exc.to_json()}
        if request_id:
            body["request_id"] = request_id
        self.send(body)

    async def _read_loop(self) -> None:
        limit = self._config.signaling.max_message_bytes
        join_by = asyncio.get_running_loop().time() + self._config.signaling.join_timeout_s
        while True:
            timeout = None
            if self.participant is None:
                timeout = join_by - asyncio.get_running_loop().time()
            try:
                if timeout is not None and timeout <= 0:
                    raise asyncio.TimeoutError
                message = await self._ws.receive(timeout=timeout)
            except asyncio.TimeoutError:
                self._error(BadRequest("join right after connecting", code="join_timeout"))
                self.close(CLOSE_POLICY, "join_timeout")
                return
            if message.type == WSMsgType.TEXT:
                await self._on_text(message.data, limit)
            elif message.type == WSMsgType.BINARY:
                self._error(BadRequest("messages are JSON text", code="invalid_message"))
            elif message.type == WSMsgType.ERROR:
                error = self._ws.exception()
                log.info("websocket error", extra={"error": str(error)})
                if isinstance(error, WebSocketError):
                    self._leaving = True  # a protocol violation (oversized frame...) is no way to resume
                return
            else:  # CLOSE, CLOSING, CLOSED
                return
            if self._closing or self._ws.closed or (self.participant is not None and self.participant.left):
                return

    async def _on_text(self, data: str, limit: int) -> None:
        request_id = None
        try:
            if len(data) > limit // 4 and len(data.encode("utf-8")) > limit:
                raise PayloadTooLarge(f"messages are limited to {limit} bytes", code="message_too_large")
            if not self._bucket.take():
                raise RateLimited("too many messages", code="rate_limited")
            msg = protocol.parse(data)
            request_id = msg.request_id
            with logs.bind(
                room=self.room.name if self.room else None,
                participant=self.participant.id if self.participant else None,
            ):
                await self._dispatch(msg)
        except TellerError as exc:
            self._error(exc, request_id)
            if isinstance(exc, (Unauthorized, Forbidden)) and self.participant is None:
                self.close(CLOSE_UNAUTHORIZED if isinstance(exc, Unauthorized) else CLOSE_FORBIDDEN, exc.code)
                return
            if isinstance(exc, (RateLimited, PayloadTooLarge, BadRequest)):
                self._violations += 1
                if self._violations > self._config.signaling.max_violations:
                    self.close(CLOSE_POLICY, "too many bad messages")
        except Exception:
            log.exception("unexpected error handling a message")
            self._error(TellerError("internal error", code="internal"), request_id)

    # -- handlers -------------------------------------------------------------------------

    async def _dispatch(self, msg: protocol.ClientMessage) -> None:
        if isinstance(msg, protocol.Ping):
            self.send({"type": "pong", "request_id": msg.request_id})
            return
        if isinstance(msg, protocol.Join):
            await self._join(msg)
            return
        if self.participant is None or self.room is None:
            raise BadRequest("join first", code="not_joined")
        room, participant = self.room, self.participant
        if isinstance(msg, protocol.Publish):
            publisher, answer = await room.publish(participant, msg.sdp, msg.tracks)
            self.send(
                {
                    "type": "answer",
                    "request_id": msg.request_id,
                    "transport_id": publisher.id,
                    "sdp": answer,
                    "tracks": [p.info() for p in publisher.publications],
                }
            )
        elif isinstance(msg, protocol.Subscribe):
            subscription, answer = await room.subscribe(
                participant, msg.sdp, participant_id=msg.participant_id, track_ids=msg.track_ids
            )
            self.send(
                {
                    "type": "answer",
                    "request_id": msg.request_id,
                    "transport_id": subscription.id,
                    "sdp": answer,
                    "tracks": subscription.tracks(),
                }
            )
        elif isinstance(msg, (protocol.Unpublish, protocol.Unsubscribe)):
            own = participant.publishers if isinstance(msg, protocol.Unpublish) else participant.subscriptions
            if msg.transport_id not in own:
                raise BadRequest("no such transport", code="transport_not_found")
            await room.close_transport(participant, msg.transport_id, msg.type)
            if msg.request_id:
                self.send({"type": "ack", "request_id": msg.request_id})
        elif isinstance(msg, protocol.IceCandidate):
            transport = room.transport_of(participant, msg.transport_id)
            await transport.add_ice_candidate(msg.candidate, msg.sdp_mid, msg.sdp_mline_index)
        elif isinstance(msg, protocol.SendData):
            raw = json.dumps(msg.payload)
            if len(raw) > self._config.signaling.data_max_bytes:
                raise PayloadTooLarge("the data payload is too large", code="message_too_large")
            delivered = room.send_data(participant, msg.payload, msg.topic, msg.to)
            if msg.request_id:
                self.send({"type": "ack", "request_id": msg.request_id, "delivered": delivered})
        elif isinstance(msg, protocol.Reveal):
            room.reveal(participant)
            assert self.token is not None
            # The old resume token would bring it back hidden after a move.
            resume = self._issuer.issue_resume(self.token, room.name, participant.id, False)
            self.send({"type": "ack", "request_id": msg.request_id, "resume_token": resume})
        elif isinstance(msg, protocol.Leave):
            self._leaving = True
            await self._leave("left")

    async def _join(self, msg: protocol.Join) -> None:
        if self.participant is not None:
            raise BadRequest("already joined", code="already_joined")
        started = time.monotonic()
        resume_id: str | None = None
        hidden = msg.hidden
        if msg.resume:
            claims = self._issuer.verify_resume(msg.resume)
            token, room_name, resume_id = claims.token, claims.token.room, claims.participant_id
            hidden = claims.hidden  # a monitoring supervisor stays unseen on the new node
        else:
            token = self._issuer.verify(msg.token or self._url_token)
            room_name = msg.room or token.room
        if room_name == ANY_ROOM:
            raise BadRequest("name the room to join", code="invalid_room_name")
        token.require_room(room_name)
        room = await self._node.room_for_join(room_name)
        existing = room.participants.get(resume_id) if resume_id else None
        resumed = existing is not None and existing.identity == token.subject and not existing.left
        if resumed:
            assert existing is not None
            participant = existing
            previous = participant.session
            room.reattach(participant, self, self._notify)
            if isinstance(previous, SignalSession):
                previous.close(1000, "resumed_elsewhere")
        else:
            if hidden and not (token.role == "supervisor" or token.grants.admin):
                raise Forbidden("only a supervisor may join unseen", code="grant_missing")
            participant = Participant(
                identity=token.subject,
                name=token.name,
                role=token.role,
                permissions=permissions(token),
                kind="websocket",
                notify=self._notify,
                participant_id=resume_id if resume_id and resume_id not in room.participants else None,
                hidden=hidden,
            )
            participant.session = self
            await room.join(participant)
        self.token, self.room, self.participant = token, room, participant
        logs.set_ids(room=room.name, participant=participant.id)
        self.send(
            {
                "type": "joined",
                "request_id": msg.request_id,
                "protocol": protocol.PROTOCOL_VERSION,
                "session_id": self.id,
                "resumed": resumed,
                "resume_token": self._issuer.issue_resume(token, room.name, participant.id, participant.hidden),
                "room": room.info(),
                "participant": participant.info(),
                "participants": [p.info() for p in room.visible_to(participant)],
                "ice_servers": [s.to_json() for s in self._config.ice.servers],
                "expires_at": token.expires_at,
            }
        )
        self._node.observe("join_seconds", time.monotonic() - started)

    async def _leave(self, reason: str) -> None:
        room, participant = self.room, self.participant
        if room is None or participant is None or participant.left:
            return
        await room.remove(participant.id, reason)

    async def _disconnected(self) -> None:
        """The socket is gone: keep the participant for a resume unless it said goodbye."""
        room, participant = self.room, self.participant
        if room is None or participant is None or participant.left or participant.session is not self:
            return
        window = self._config.signaling.resume_window_s
        if participant.role == "officer" and self._config.field.enabled:
            window = max(window, self._config.field.resume_window_s)
        if self._leaving or window <= 0 or self._close_code == CLOSE_POLICY:
            await self._leave("disconnected")
        else:
            room.detach(participant, window)


async def rtc_handler(request: web.Request) -> web.WebSocketResponse:
    config = request.app[CONFIG]
    ws = web.WebSocketResponse(
        heartbeat=20.0,
        max_msg_size=4 * config.signaling.max_message_bytes,
        autoping=True,
    )
    try:
        url_token = bearer(request)
    except Unauthorized:
        url_token = None
    await ws.prepare(request)
    session = SignalSession(ws, config, request.app[NODE], request.app[ISSUER], url_token)
    with logs.bind(session=session.id):
        await session.run()
    return ws
