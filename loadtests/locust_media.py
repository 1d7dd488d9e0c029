"""The media side of the locust load test: real aiortc peer connections, off gevent.

    python loadtests/locust_media.py [--video-kbps 500]

locust monkey-patches the standard library with gevent, and aiortc needs a real
asyncio event loop, so a locust process (loadtests/locustfile.py) starts this helper
once and drives all of its media users through it: one asyncio loop here holds every
peer connection of that locust process. Commands arrive on stdin and events leave on
stdout, one JSON object a line; logs go to stderr.

The video and audio are encoded once at start-up (loadtests/media.py: VP8 640x480 at
30 fps and about `--video-kbps`, and Opus) and every publisher loops the same packets;
subscribers count complete VP8 frames from RTP headers (`FrameCounter`) and Opus
packets, and never decode.

Commands (`id` names one media session, a party in a call):

    {"cmd": "join", "id": ID, "url": URL, "token": TOKEN,
     "peer_roles": ["agent"], "peer_timeout": 120, "seconds": null,
     "relay_only": false, "ice_servers": null}
        join the token's room, publish audio and video, wait for a participant of one
        of `peer_roles` to publish (at most `peer_timeout` seconds), subscribe to it;
        with `seconds`, leave on its own that long after the media connected
    {"cmd": "leave", "id": ID}          close the session; answered by "left"
    {"cmd": "stats"}                    answered by "stats"
    {"cmd": "quit"}                     close every session ("left" for each), "bye", exit

Events (`at` is time.monotonic() here: the same clock as the locust process's on the
same machine):

    {"event": "ready", "video_kbps": ..., "video_packets": N, "audio_packets": N}
    {"event": "published", "id", "at"}           the publication's peer connection is up
    {"event": "subscribed", "id", "at", "peer"}  subscribe sent to `peer` (a participant id)
    {"event": "connected", "id", "at"}           publication and subscription both up
    {"event": "first_frame", "id", "at", "ms"}   first complete keyframe, `ms` after "subscribed"
    {"event": "peer_left", "id", "at"}           the subscribed participant unpublished or left
    {"event": "error", "id", "stage", "error"}   stage: join, publish, peer, subscribe, first_frame, media
    {"event": "left", "id", ...figures}          see Session.figures()
    {"event": "stats", ...}, {"event": "bye", ...}   totals over every session so far

Stdin closing (the locust process died) is a "quit".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtests.media import (
    AUDIO_TIME_BASE,
    VIDEO_TIME_BASE,
    FrameCounter,
    PreEncodedTrack,
    count_frames,
    encode_audio,
    encode_video,
    frame_delivery,
)
from teller.client import ClientError, RoomClient

log = logging.getLogger("loadtests.locust_media")

FIRST_FRAME_TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 20.0


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def delivery(counter: FrameCounter | None) -> tuple[int, int, float | None]:
    """(frames received, frames expected, ratio) over the subscription, as every benchmark
    counts them (loadtests/media.py, frame_delivery)."""
    if counter is None or not counter.frames:
        return 0, 0, None
    received, expected = frame_delivery(ts for _, ts in counter.frames)
    if received < 2:
        return received, received, None
    return received, expected, min(1.0, received / expected)


async def connected(transport: Any, what: str) -> None:
    try:
        await transport.wait_connected(CONNECT_TIMEOUT_S)
    except TimeoutError:
        raise TimeoutError(
            f"the {what}'s peer connection did not connect within {CONNECT_TIMEOUT_S:.0f} s "
            f"(ICE {transport.pc.iceConnectionState}, gathering {transport.pc.iceGatheringState})"
        ) from None


class Session:
    """One party: a RoomClient that publishes the shared media and subscribes to its peer."""

    def __init__(self, hub: Hub, command: dict[str, Any]) -> None:
        self.hub = hub
        self.id = str(command["id"])
        self.url = command["url"]
        self.token = command["token"]
        self.peer_roles = set(command.get("peer_roles") or ["customer", "agent"])
        self.peer_timeout = float(command.get("peer_timeout") or 60.0)
        self.seconds = command.get("seconds")
        self.client = RoomClient(
            self.url, self.token,
            ice_servers=command.get("ice_servers"), relay_only=bool(command.get("relay_only")),
        )
        self.counter: FrameCounter | None = None
        self.peer: str | None = None
        self.started_at = time.monotonic()
        self.connected_at: float | None = None
        self.errors: list[str] = []
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    def fail(self, stage: str, exc: BaseException | str) -> None:
        if isinstance(exc, str):
            text = exc
        else:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} ({stage})"
        self.errors.append(f"{stage}: {text}")
        emit({"event": "error", "id": self.id, "stage": stage, "error": text})

    async def run(self) -> None:
        stage = "join"
        try:
            await self.client.connect(timeout=CONNECT_TIMEOUT_S)
            stage = "publish"
            video = PreEncodedTrack("video", self.hub.video, 30, 3000, VIDEO_TIME_BASE)
            audio = PreEncodedTrack("audio", self.hub.audio, 50, 960, AUDIO_TIME_BASE)
            publication = await self.client.publish([audio, video], data_channel=False, video_codec="VP8")
            await connected(publication, "publication")
            self.watch(publication.pc, "publication")
            emit({"event": "published", "id": self.id, "at": time.monotonic()})
            stage = "peer"
            self.peer = await self.wait_for_peer()
            stage = "subscribe"
            self.counter = FrameCounter(joined_at=time.monotonic())
            emit({"event": "subscribed", "id": self.id, "at": self.counter.joined_at, "peer": self.peer})
            subscription = await self.client.subscribe(self.peer)
            for transceiver in subscription.pc.getTransceivers():
                count_frames(transceiver.receiver, self.counter, transceiver.kind)
            await connected(subscription, "subscription")
            self.watch(subscription.pc, "subscription")
            self.connected_at = time.monotonic()
            emit({"event": "connected", "id": self.id, "at": self.connected_at})
            self.client.on("participant_left", self._peer_gone)
            self.client.on("track_unpublished", self._peer_gone)
            stage = "first_frame"
            deadline = time.monotonic() + FIRST_FRAME_TIMEOUT_S
            while self.counter.first_keyframe_at is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no complete keyframe within {FIRST_FRAME_TIMEOUT_S:.0f} s of subscribing")
                await asyncio.sleep(0.01)
            emit({
                "event": "first_frame", "id": self.id, "at": self.counter.first_keyframe_at,
                "ms": round(1000 * (self.counter.first_keyframe_at - self.counter.joined_at), 1),
            })
            if self.seconds is not None:
                await asyncio.sleep(max(0.0, self.connected_at + float(self.seconds) - time.monotonic()))
                self.hub.create_task(self.hub.leave(self.id))
        except asyncio.CancelledError:
            raise
        except (ClientError, TimeoutError, OSError, RuntimeError, ValueError) as exc:
            self.fail(stage, exc)
        except Exception as exc:
            log.exception("media session failed", extra={"id": self.id})
            self.fail(stage, exc)

    async def wait_for_peer(self) -> str:
        deadline = time.monotonic() + self.peer_timeout
        while True:
            for pid, info in self.client.participants.items():
                if pid == self.client.participant_id or info.get("role") not in self.peer_roles:
                    continue
                kinds = {t.get("kind") for t in info.get("tracks", [])}
                if {"audio", "video"} <= kinds:
                    return pid
            if self.client.closed.is_set():
                raise ClientError("disconnected", self.client.close_reason or "the signalling connection closed")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {'/'.join(sorted(self.peer_roles))} published within {self.peer_timeout:.0f} s")
            await asyncio.sleep(0.02)

    def watch(self, pc: Any, what: str) -> None:
        def changed() -> None:
            if pc.connectionState == "failed" and not self.closed:
                self.fail("media", f"the {what} peer connection failed")

        pc.on("connectionstatechange", changed)

    def _peer_gone(self, message: dict[str, Any]) -> None:
        if message.get("participant_id") == self.peer and not self.closed:
            emit({"event": "peer_left", "id": self.id, "at": time.monotonic()})

    async def close(self) -> None:
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.close(), 10)

    def figures(self) -> dict[str, Any]:
        frames, expected, ratio = delivery(self.counter)
        counter = self.counter
        first = None
        if counter is not None and counter.first_keyframe_at is not None:
            first = round(1000 * (counter.first_keyframe_at - counter.joined_at), 1)
        span = 0.0
        if counter is not None and len(counter.frames) >= 2:
            span = counter.frames[-1][0] - counter.frames[0][0]
        return {
            "subscribed": counter is not None,
            "connected": self.connected_at is not None,
            "video_frames": frames,
            "expected_frames": expected,
            "delivery": ratio,
            "audio_frames": counter.audio_packets if counter is not None else 0,
            "first_frame_ms": first,
            "video_seconds": round(span, 2),
            "held_s": round(time.monotonic() - self.connected_at, 2) if self.connected_at is not None else 0.0,
            "errors": self.errors,
        }


class Hub:
    """Every session of one locust process, on one event loop."""

    def __init__(self, video_kbps: int) -> None:
        started = time.monotonic()
        self.video_kbps = video_kbps
        self.video = encode_video(bitrate=video_kbps * 1000)
        self.audio = encode_audio()
        self.encode_s = time.monotonic() - started
        self.sessions: dict[str, Session] = {}
        self.totals = {"sessions": 0, "subscriptions": 0, "video_frames": 0, "audio_frames": 0, "errors": 0}
        self._tasks: set[asyncio.Task[Any]] = set()

    def create_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def join(self, command: dict[str, Any]) -> None:
        key = str(command.get("id"))
        if key in self.sessions:
            emit({"event": "error", "id": key, "stage": "join", "error": "a session with this id is open"})
            return
        try:
            session = Session(self, command)
        except (KeyError, ValueError, TypeError) as exc:
            emit({"event": "error", "id": key, "stage": "join", "error": f"bad join command: {exc!r}"})
            return
        self.sessions[key] = session
        self.totals["sessions"] += 1
        session.task = asyncio.ensure_future(session.run())

    async def leave(self, key: str) -> None:
        session = self.sessions.pop(key, None)
        if session is None:
            emit({"event": "left", "id": key, "unknown": True})
            return
        await session.close()
        figures = session.figures()
        self.totals["subscriptions"] += int(figures["subscribed"])
        self.totals["video_frames"] += figures["video_frames"]
        self.totals["audio_frames"] += figures["audio_frames"]
        self.totals["errors"] += len(figures["errors"])
        emit({"event": "left", "id": key, **figures})

    def stats(self, event: str = "stats") -> dict[str, Any]:
        return {"event": event, "open": len(self.sessions), **self.totals}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        emit({
            "event": "ready", "video_kbps": self.video_kbps, "video_packets": len(self.video),
            "audio_packets": len(self.audio), "encode_s": round(self.encode_s, 2),
        })
        while line := await reader.readline():
            try:
                command = json.loads(line)
                name = command["cmd"]
            except (ValueError, KeyError, TypeError):
                emit({"event": "error", "id": None, "stage": "command", "error": f"bad command line: {line[:200]!r}"})
                continue
            if name == "join":
                self.join(command)
            elif name == "leave":
                self.create_task(self.leave(str(command.get("id"))))
            elif name == "stats":
                emit(self.stats())
            elif name == "quit":
                break
            else:
                emit({"event": "error", "id": command.get("id"), "stage": "command", "error": f"unknown command {name!r}"})
        await asyncio.gather(*(self.leave(k) for k in list(self.sessions)), return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        emit(self.stats("bye"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video-kbps", type=int, default=500, help="bitrate of the pre-encoded VP8 loop (default 500)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="locust_media %(levelname)s %(name)s: %(message)s")
    asyncio.run(Hub(args.video_kbps).run())


if __name__ == "__main__":
    main()
