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
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

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
    transport_id: str
    pc: RTCPeerConnection
    tracks: list[dict[str, Any]]
    data_channel: Any = None

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await _wait_connected(self.pc, timeout)


@dataclass
class RemoteSubscription:
    transport_id: str
    pc: RTCPeerConnection
    info: list[dict[str, Any]]
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)  # by kind
    ended: asyncio.Event = field(default_factory=asyncio.Event)

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


class RoomClient:
    def __init__(self, url: str, token: str, *, ice_servers: list[dict[str, Any]] | None = None) -> None:
        """`url` is the server's base URL (http[s]://host:port) or its ws[s]:// signalling URL."""
        self.url = _signal_url(url)
        self._token = token
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

    async def connect(self, room: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(self.url, timeout=aiohttp.ClientWSTimeout(ws_close=timeout), heartbeat=20)
        except (aiohttp.ClientError, OSError) as exc:
            await self._session.close()
            raise ClientError("unreachable", str(exc)) from exc
        self._reader = asyncio.create_task(self._read_loop())
        message: dict[str, Any] = {"type": "join", "protocol": 1, "token": self._token}
        if room:
            message["room"] = room
        self.joined = await self.request(message, timeout=timeout)
        self.participant_id = self.joined["participant"]["participant_id"]
        for p in self.joined.get("participants", []):
            self.participants[p["participant_id"]] = p
        return self.joined

    async def __aenter__(self) -> RoomClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _rtc_configuration(self) -> RTCConfiguration:
        servers = self._ice_override if self._ice_override is not None else self.joined.get("ice_servers", [])
        return RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
                for s in servers
            ]
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

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    body = json.loads(msg.data)
                except json.JSONDecodeError:
                    continue
                self._dispatch(body)
        finally:
            self.close_reason = self.close_reason or f"closed ({self._ws.close_code})"
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ClientError("disconnected", self.close_reason, self._ws.close_code))
            self.closed.set()

    def _dispatch(self, body: dict[str, Any]) -> None:
        kind = body.get("type", "")
        request_id = body.get("request_id")
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
        pc = RTCPeerConnection(self._rtc_configuration())
        for track in tracks:
            transceiver = pc.addTransceiver(track, direction="sendonly")
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
        publication = LocalPublication(answer["transport_id"], pc, answer.get("tracks", []), channel)
        self.publications[publication.transport_id] = publication
        return publication

    async def subscribe(
        self,
        participant_id: str | None = None,
        *,
        track_ids: list[str] | None = None,
        kinds: list[str] | None = None,
    ) -> RemoteSubscription:
        """Receive one participant's tracks (or the listed ones) on a new peer connection."""
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
        subscription = RemoteSubscription(answer["transport_id"], pc, answer.get("tracks", []))
        bound = {t["mid"] for t in subscription.info}
        for transceiver in pc.getTransceivers():
            if transceiver.mid in bound and transceiver.receiver.track is not None:
                subscription.tracks[transceiver.kind] = transceiver.receiver.track
        self.subscriptions[subscription.transport_id] = subscription
        return subscription

    async def unpublish(self, publication: LocalPublication) -> None:
        await self.request({"type": "unpublish", "transport_id": publication.transport_id})
        self.publications.pop(publication.transport_id, None)
        await publication.pc.close()

    async def unsubscribe(self, subscription: RemoteSubscription) -> None:
        await self.request({"type": "unsubscribe", "transport_id": subscription.transport_id})
        self.subscriptions.pop(subscription.transport_id, None)
        await subscription.pc.close()

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
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ClientError, ConnectionError, RuntimeError):
                await self.send({"type": "leave"})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closed.wait(), 5)
        await self.close()

    async def close(self) -> None:
        for item in list(self.publications.values()) + list(self.subscriptions.values()):
            await item.pc.close()
        self.publications.clear()
        self.subscriptions.clear()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._session is not None:
            await self._session.close()
            self._session = None


def _signal_url(url: str) -> str:
    url = url.rstrip("/")
    if url.startswith("http://"):
        url = "ws://" + url[len("http://"):]
    elif url.startswith("https://"):
        url = "wss://" + url[len("https://"):]
    if not url.endswith("/v1/rtc"):
        url += "/v1/rtc"
    return url
