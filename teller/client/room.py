"""The Python client: join a room, publish, subscribe, exchange data messages.

It speaks signalling protocol 1 (docs/protocol.md) over a WebSocket and opens one
aiortc peer connection per publish or subscribe, offering each time. Tests, load
tests, the body-cam simulator and out-of-process stages all use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy

log = logging.getLogger("teller.client")


class ClientError(Exception):
    """An `error` message from the server, or a failure to reach it."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass
class LocalPublication:
    """One publish. After a move to another node it is the same object, re-published."""

    transport_id: str
    pc: RTCPeerConnection
    tracks: list[dict[str, Any]]
    data_channel: Any = None
    sources: list[MediaStreamTrack] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await _wait_connected(self.pc, timeout)


@dataclass
class RemoteSubscription:
    """One subscribe. After a move to another node it is the same object with new
    tracks: listen for `resubscribed` and read `track(kind)` again."""

    transport_id: str
    pc: RTCPeerConnection
    info: list[dict[str, Any]]
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)  # by kind
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    participant_id: str | None = None
    track_ids: list[str] | None = None
    kinds: list[str] | None = None

    def track(self, kind: str) -> MediaStreamTrack:
        return self.tracks[kind]

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await _wait_connected(self.pc, timeout)


async def _wait_connected(pc: RTCPeerConnection, timeout: float) -> None:
    if pc.connectionState == "connected":
        return
    done = asyncio.get_running_loop().create_future()

    def changed() -> None:
        if pc.connectionState in ("connected", "failed", "closed") and not done.done():
            done.set_result(pc.connectionState)

    pc.on("connectionstatechange", changed)
    try:
        state = await asyncio.wait_for(done, timeout)
    finally:
        pc.remove_listener("connectionstatechange", changed)
    if state != "connected":
        raise ClientError("connection_failed", f"peer connection {state}")


# Close codes after which reconnecting cannot help.
FINAL_CLOSE_CODES = {4401, 4403, 4008}
# Join errors after which reconnecting cannot help either.
CLOSE_WAIT_S = 2.0
FINAL_ERRORS = {"token_invalid", "token_expired", "token_missing", "room_forbidden", "grant_missing", "room_full", "room_not_found"}


class RoomClient:
    def __init__(
        self,
        url: str | list[str],
        token: str,
        *,
        ice_servers: list[dict[str, Any]] | None = None,
        reconnect: bool = True,
        reconnect_timeout_s: float = 30.0,
        relay_only: bool = False,
    ) -> None:
        """`url` is the server's base URL (http[s]://host:port) or its ws[s]:// signalling
        URL, or a list of them (a cluster's signalling processes, tried in turn).

        With `reconnect`, a lost connection is resumed with the resume token: on the
        same node the peer connections carry on untouched; on another node (the old
        one died or drained) publications and subscriptions are made again there.

        With `relay_only`, media goes only through the TURN servers (ICE policy
        "relay"): a client behind a strict firewall, or one QA puts behind
        `teller impair` in front of the TURN server.
        """
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("at least one URL is needed")
        self.urls = [_signal_url(u) for u in urls]
        self.url = self.urls[0]
        self._token = token
        self._reconnect = reconnect
        self._reconnect_timeout_s = reconnect_timeout_s
        self._relay_only = relay_only
        self._room: str | None = None
        self._resume_token: str | None = None
        self._closing = False
        self._left = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._restore_tasks: set[asyncio.Task[None]] = set()
        self.reconnects = 0
        self.migrations = 0
        self._ice_override = ice_servers
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: dict[str, list[Callable[[dict[str, Any]], Any]]] = defaultdict(list)
        self._waiters: list[tuple[str, Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        self.joined: dict[str, Any] = {}
        self.participant_id = ""
        self.participants: dict[str, dict[str, Any]] = {}
        self.publications: dict[str, LocalPublication] = {}
        self.subscriptions: dict[str, RemoteSubscription] = {}
        self.closed = asyncio.Event()
        self.close_reason = ""

    # -- connection -----------------------------------------------------------------

    async def connect(self, room: str | None = None, timeout: float = 10.0, *, hidden: bool = False) -> dict[str, Any]:
        """Join; `hidden` (supervisors only) joins unseen by customers, to monitor or whisper."""
        self._room = room
        self._session = aiohttp.ClientSession()
        message: dict[str, Any] = {"type": "join", "protocol": 1, "token": self._token}
        if room:
            message["room"] = room
        if hidden:
            message["hidden"] = True
        try:
            await self._open(self.url, message, timeout)
        except BaseException:
            await self._session.close()
            self._session = None
            raise
        return self.joined

    async def _open(self, url: str, join: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One signalling connection: socket, reader, join; state taken from the reply."""
        assert self._session is not None
        try:
            ws = await self._session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=timeout), heartbeat=20)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ClientError("unreachable", str(exc)) from exc
        self._ws, self.url = ws, url
        self._reader = asyncio.create_task(self._read_loop(ws))
        try:
            joined = await self.request(join, timeout=timeout)
        except BaseException:
            await ws.close()
            raise
        return joined

    def _take_joined(self, joined: dict[str, Any]) -> None:
        """Applied as the reply is read, before any event that follows it."""
        self.joined = joined
        self.participant_id = joined["participant"]["participant_id"]
        self._resume_token = joined.get("resume_token") or self._resume_token
        self.participants = {p["participant_id"]: p for p in joined.get("participants", [])}

    async def __aenter__(self) -> RoomClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _rtc_configuration(self) -> RTCConfiguration:
        servers = self._ice_override if self._ice_override is not None else self.joined.get("ice_servers", [])
        return RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
                for s in servers
            ],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY if self._relay_only else RTCIceTransportPolicy.ALL,
        )

    async def send(self, message: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            raise ClientError("disconnected", "the signalling connection is closed")
        await self._ws.send_str(json.dumps(message))

    async def request(self, message: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
        request_id = f"r{next(self._ids)}"
        message = {**message, "request_id": request_id}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.send(message)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        move = False
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    body = json.loads(msg.data)
                except json.JSONDecodeError:
                    continue
                if body.get("type") == "reconnect":
                    move = True
                self._dispatch(body)
        finally:
            reason = f"closed ({ws.close_code})"
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ClientError("disconnected", reason, ws.close_code))
            if ws is self._ws:
                self._connection_lost(ws.close_code, move, reason)

    def _connection_lost(self, code: int | None, move: bool, reason: str) -> None:
        final = self._closing or self._left or code in FINAL_CLOSE_CODES or not self.joined
        if final or not self._reconnect or self._resume_token is None:
            self.close_reason = self.close_reason or reason
            self.closed.set()
            return
        if self._reconnect_task is None or self._reconnect_task.done():
            self._emit("reconnecting", {"type": "reconnecting", "moving": move, "code": code})
            self._reconnect_task = asyncio.create_task(self._resume())

    async def _resume(self) -> None:
        """Reconnects through any signalling URL and takes the participant's place back."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._reconnect_timeout_s
        delay = 0.05
        start = self.urls.index(self.url) if self.url in self.urls else 0
        attempt = 0
        while not self._closing and loop.time() < deadline:
            url = self.urls[(start + attempt) % len(self.urls)]
            attempt += 1
            try:
                joined = await self._open(url, {"type": "join", "protocol": 1, "resume": self._resume_token}, 10.0)
            except (ClientError, TimeoutError) as exc:
                if isinstance(exc, ClientError) and exc.code in FINAL_ERRORS:
                    self.close_reason = exc.code
                    break
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
                continue
            self.reconnects += 1
            if joined.get("resumed"):
                self._emit("resumed", {"type": "resumed", "url": url})
            else:
                self.migrations += 1
                await self._restore_media()
                self._emit("migrated", {"type": "migrated", "url": url})
            return
        self.close_reason = self.close_reason or "reconnect_failed"
        self.closed.set()

    async def _restore_media(self) -> None:
        """The room moved to a fresh node: publish again, then subscribe again."""
        publications = list(self.publications.values())
        subscriptions = list(self.subscriptions.values())
        self.publications, self.subscriptions = {}, {}
        for item in publications + subscriptions:
            with contextlib.suppress(Exception):
                await item.pc.close()
        for publication in publications:
            try:
                await self._publish_into(publication)
            except ClientError:
                log.warning("could not publish again after moving", exc_info=True)
        for subscription in subscriptions:
            task = asyncio.create_task(self._resubscribe(subscription))
            self._restore_tasks.add(task)
            task.add_done_callback(self._restore_tasks.discard)

    async def _resubscribe(self, subscription: RemoteSubscription, timeout: float = 30.0) -> None:
        """Waits for the publisher to be back (it is moving too), then subscribes again."""
        target = subscription.participant_id
        try:
            if target is not None and not self.participants.get(target, {}).get("tracks"):
                await self.wait_for(
                    "track_published", lambda m: m.get("participant_id") == target, timeout=timeout
                )
            await self._subscribe_into(subscription)
        except (TimeoutError, ClientError):
            log.warning("could not subscribe again after moving", exc_info=True)
            subscription.ended.set()
            return
        self._emit("resubscribed", {"type": "resubscribed", "subscription": subscription})

    def _dispatch(self, body: dict[str, Any]) -> None:
        kind = body.get("type", "")
        request_id = body.get("request_id")
        if kind == "joined":
            self._take_joined(body)
        elif isinstance(body.get("resume_token"), str):
            self._resume_token = body["resume_token"]
        if request_id and request_id in self._pending:
            future = self._pending[request_id]
            if not future.done():
                if kind == "error":
                    future.set_exception(ClientError(body.get("code", "error"), body.get("message", ""), body.get("status")))
                else:
                    future.set_result(body)
            return
        if kind == "participant_joined":
            info = body["participant"]
            self.participants[info["participant_id"]] = info
        elif kind == "participant_left":
            self.participants.pop(body["participant_id"], None)
        elif kind == "track_published":
            owner = self.participants.get(body["participant_id"])
            if owner is not None:
                owner.setdefault("tracks", []).append(body["track"])
        elif kind == "track_unpublished":
            owner = self.participants.get(body["participant_id"])
            if owner is not None:
                owner["tracks"] = [t for t in owner.get("tracks", []) if t["track_id"] != body["track_id"]]
        elif kind == "transport_closed":
            subscription = self.subscriptions.pop(body["transport_id"], None)
            if subscription is not None:
                subscription.ended.set()
                asyncio.ensure_future(subscription.pc.close())
            self.publications.pop(body["transport_id"], None)
        elif kind == "left":
            self._left = True
            self.close_reason = body.get("reason", "left")
        self._emit(kind, body)

    def _emit(self, kind: str, body: dict[str, Any]) -> None:
        for callback in list(self._listeners.get(kind, [])) + list(self._listeners.get("*", [])):
            try:
                result = callback(body)
                if asyncio.iscoroutine(result):
                    asyncio.ensure_future(result)
            except Exception:
                log.exception("event listener failed")
        for entry in list(self._waiters):
            want, predicate, future = entry
            if (want == kind or want == "*") and not future.done() and predicate(body):
                future.set_result(body)
                self._waiters.remove(entry)

    def on(self, kind: str, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Call `callback(message)` for every message of `kind` ("*" for all)."""
        self._listeners[kind].append(callback)

    async def wait_for(
        self, kind: str, predicate: Callable[[dict[str, Any]], bool] = lambda m: True, timeout: float = 10.0
    ) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry = (kind, predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    # -- media ------------------------------------------------------------------------

    async def publish(
        self,
        tracks: list[MediaStreamTrack],
        *,
        data_channel: bool = True,
        sources: list[dict[str, str]] | None = None,
        video_codec: str | None = None,
    ) -> LocalPublication:
        publication = LocalPublication(
            "", None, [], None, list(tracks),  # type: ignore[arg-type]
            {"data_channel": data_channel, "sources": sources, "video_codec": video_codec},
        )
        await self._publish_into(publication)
        return publication

    async def _publish_into(self, publication: LocalPublication) -> None:
        tracks = publication.sources
        data_channel = publication.options["data_channel"]
        sources = publication.options["sources"]
        video_codec = publication.options["video_codec"]
        pc = RTCPeerConnection(self._rtc_configuration())
        for track in tracks:
            # Closing a peer connection stops its tracks; the caller's own track must
            # outlive it so that the same source can be published again after a move.
            transceiver = pc.addTransceiver(_Forward(track), direction="sendonly")
            if hasattr(track, "request_keyframe"):
                transceiver.sender._send_keyframe = track.request_keyframe  # pre-encoded: PLI restarts at a keyframe
            if video_codec and track.kind == "video":
                prefs = [
                    c for c in RTCRtpSender.getCapabilities("video").codecs
                    if c.name.lower() in (video_codec.lower(), "rtx")
                ]
                transceiver.setCodecPreferences(prefs)
        channel = pc.createDataChannel("teller") if data_channel else None
        if channel is not None:
            channel.on("message", self._on_channel_message)
        try:
            await pc.setLocalDescription(await pc.createOffer())
            answer = await self.request({"type": "publish", "sdp": pc.localDescription.sdp, "tracks": sources or []})
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        except BaseException:
            await pc.close()
            raise
        publication.transport_id, publication.pc = answer["transport_id"], pc
        publication.tracks, publication.data_channel = answer.get("tracks", []), channel
        self.publications[publication.transport_id] = publication

    async def subscribe(
        self,
        participant_id: str | None = None,
        *,
        track_ids: list[str] | None = None,
        kinds: list[str] | None = None,
    ) -> RemoteSubscription:
        """Receive one participant's tracks (or the listed ones) on a new peer connection."""
        subscription = RemoteSubscription("", None, [], participant_id=participant_id, track_ids=track_ids, kinds=kinds)  # type: ignore[arg-type]
        await self._subscribe_into(subscription)
        return subscription

    async def _subscribe_into(self, subscription: RemoteSubscription) -> None:
        participant_id, track_ids, kinds = subscription.participant_id, subscription.track_ids, subscription.kinds
        if subscription.info and participant_id is None:
            # It followed "whoever published last"; after a move it follows that person.
            participant_id = subscription.participant_id = subscription.info[0].get("participant_id")
            track_ids = subscription.track_ids = None
        if kinds is None:
            if track_ids:
                known = {t["track_id"]: t for p in self.participants.values() for t in p.get("tracks", [])}
                kinds = [known[t]["kind"] for t in track_ids if t in known] or ["audio", "video"]
            elif participant_id and participant_id in self.participants:
                kinds = [t["kind"] for t in self.participants[participant_id].get("tracks", [])]
            if not kinds:
                kinds = ["audio", "video"]
        pc = RTCPeerConnection(self._rtc_configuration())
        for kind in sorted(kinds):  # audio first, then video: a stable m-line order
            pc.addTransceiver(kind, direction="recvonly")
        try:
            await pc.setLocalDescription(await pc.createOffer())
            message: dict[str, Any] = {"type": "subscribe", "sdp": pc.localDescription.sdp}
            if participant_id:
                message["participant_id"] = participant_id
            if track_ids:
                message["track_ids"] = track_ids
            answer = await self.request(message)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        except BaseException:
            await pc.close()
            raise
        subscription.transport_id, subscription.pc = answer["transport_id"], pc
        subscription.info = answer.get("tracks", [])
        subscription.tracks = {}
        bound = {t["mid"] for t in subscription.info}
        for transceiver in pc.getTransceivers():
            if transceiver.mid in bound and transceiver.receiver.track is not None:
                subscription.tracks[transceiver.kind] = transceiver.receiver.track
        self.subscriptions[subscription.transport_id] = subscription

    async def unpublish(self, publication: LocalPublication) -> None:
        await self.request({"type": "unpublish", "transport_id": publication.transport_id})
        self.publications.pop(publication.transport_id, None)
        await publication.pc.close()

    async def unsubscribe(self, subscription: RemoteSubscription) -> None:
        await self.request({"type": "unsubscribe", "transport_id": subscription.transport_id})
        self.subscriptions.pop(subscription.transport_id, None)
        await subscription.pc.close()

    async def reveal(self) -> None:
        """A hidden supervisor shows itself to everyone (barge-in)."""
        await self.request({"type": "reveal"})

    # -- data ---------------------------------------------------------------------------

    async def send_data(self, payload: Any, *, topic: str | None = None, to: list[str] | None = None) -> None:
        """Over this client's data channel when one is open, else over signalling."""
        body: dict[str, Any] = {"payload": payload}
        if topic is not None:
            body["topic"] = topic
        if to is not None:
            body["to"] = to
        for publication in self.publications.values():
            channel = publication.data_channel
            if channel is not None and channel.readyState == "open":
                channel.send(json.dumps(body))
                return
        await self.send({"type": "data", **body})

    def _on_channel_message(self, message: Any) -> None:
        if not isinstance(message, str):
            return
        try:
            body = json.loads(message)
        except json.JSONDecodeError:
            return
        if isinstance(body, dict) and "type" in body:
            body["via"] = "datachannel"
            self._emit(body["type"], body)

    # -- leaving --------------------------------------------------------------------------

    async def leave(self) -> None:
        self._closing = True
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ClientError, ConnectionError, RuntimeError):
                await self.send({"type": "leave"})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closed.wait(), 5)
        await self.close()

    async def close(self) -> None:
        """Leaves (if still in the room) and releases everything; no reconnect after this."""
        if not self._closing and self._ws is not None and not self._ws.closed and not self._left:
            self._closing = True
            with contextlib.suppress(ClientError, ConnectionError, RuntimeError):
                await self.send({"type": "leave"})
        self._closing = True
        for task in [self._reconnect_task, *self._restore_tasks]:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for item in list(self.publications.values()) + list(self.subscriptions.values()):
            await item.pc.close()
        for publication in self.publications.values():
            for track in publication.sources:
                track.stop()
        self.publications.clear()
        self.subscriptions.clear()
        # The server's half of the closing handshake can be slow while it shuts down
        # itself; a client that is leaving does not wait long for it.
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(self._ws.close(), CLOSE_WAIT_S)
        if self._reader is not None:
            if not self._reader.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._reader), CLOSE_WAIT_S)
                self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Forward(MediaStreamTrack):
    """Hands on the source's frames; stopping it leaves the source running."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source

    async def recv(self) -> Any:
        return await self.source.recv()


def _signal_url(url: str) -> str:
    url = url.rstrip("/")
    if url.startswith("http://"):
        url = "ws://" + url[len("http://"):]
    elif url.startswith("https://"):
        url = "wss://" + url[len("https://"):]
    if not url.endswith("/v1/rtc"):
        url += "/v1/rtc"
    return url
