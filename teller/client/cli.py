"""`teller client`: publish a test pattern or a file, be a body camera, watch a participant, send data."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .bodycam import BodyCam
from .room import ClientError, RoomClient
from .sources import media_tracks


def add_parser(sub: Any) -> None:
    client = sub.add_parser("client", help="join a room from the command line")
    client.add_argument("--url", default="http://127.0.0.1:7880", help="server base URL")
    client.add_argument("--token", required=True)
    actions = client.add_subparsers(dest="action", required=True)

    publish = actions.add_parser("publish", help="publish a test pattern with a tone, or a file")
    publish.add_argument("--file", help="a media file to play instead of the test pattern")
    publish.add_argument("--loop", action="store_true", help="loop the file")
    publish.add_argument("--width", type=int, default=640)
    publish.add_argument("--height", type=int, default=480)
    publish.add_argument("--fps", type=int, default=30)
    publish.add_argument("--video-codec", choices=["VP8", "H264"], default=None)
    publish.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until interrupted")

    bodycam = actions.add_parser("bodycam", help="a field officer's body camera: test pattern (or a file) and GPS fixes")
    bodycam.add_argument("--file", help="a media file to play instead of the test pattern")
    bodycam.add_argument("--loop", action="store_true", help="loop the file")
    bodycam.add_argument("--width", type=int, default=640)
    bodycam.add_argument("--height", type=int, default=480)
    bodycam.add_argument("--fps", type=int, default=30)
    bodycam.add_argument("--lat", type=float, default=30.5728, help="where the walk starts (default: a farm near Wuhan)")
    bodycam.add_argument("--lon", type=float, default=114.2719)
    bodycam.add_argument("--gps-interval", type=float, default=2.0, help="seconds between fixes")
    bodycam.add_argument("--seed", type=int, default=0, help="the simulated walk's seed")
    bodycam.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until interrupted")
    bodycam.add_argument("--local-dir", help="record on the device into this folder and upload what a dropped link missed")
    bodycam.add_argument("--segment-s", type=float, default=5.0, help="length of the device's own segments")
    bodycam.add_argument("--lookback-s", type=float, default=22.0,
                         help="how far before a detected drop the upload starts (a stalled link is noticed late)")
    bodycam.add_argument("--reconnect-s", type=float, default=120.0, help="how long to try to resume before joining afresh")
    bodycam.add_argument("--relay-only", action="store_true", help="media through TURN only (e.g. behind `teller impair`)")
    bodycam.add_argument("--whip", action="store_true", help="publish over WHIP (GPS then goes over REST)")
    bodycam.add_argument("--case", help="start a field visit for this case number (the token is then the officer's own)")
    bodycam.add_argument("--customer", default="Customer", help="the customer's name, with --case")

    subscribe = actions.add_parser("subscribe", help="receive and decode a participant's tracks")
    subscribe.add_argument("--participant", help="participant id; default: the first one publishing")
    subscribe.add_argument("--duration", type=float, default=0)

    data = actions.add_parser("data", help="send a data message, or print those that arrive")
    data.add_argument("--send", help="JSON payload (or plain text) to send once")
    data.add_argument("--topic")
    data.add_argument("--listen", type=float, default=0, help="seconds to print incoming messages")


async def run(args: argparse.Namespace) -> int:
    if args.action == "bodycam":
        try:
            return await BodyCam.main(args)
        except ClientError as exc:
            print(json.dumps({"error": exc.code, "message": exc.message}), file=sys.stderr)
            return 1
        except (KeyboardInterrupt, asyncio.CancelledError):
            return 0
    client = RoomClient(args.url, args.token)
    try:
        joined = await client.connect()
        _print({"event": "joined", "room": joined["room"]["name"], "participant_id": client.participant_id})
        if args.action == "publish":
            await _publish(client, args)
        elif args.action == "subscribe":
            await _subscribe(client, args)
        else:
            await _data(client, args)
        return 0
    except ClientError as exc:
        print(json.dumps({"error": exc.code, "message": exc.message}), file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
    finally:
        await client.leave()


def _print(body: dict[str, Any]) -> None:
    print(json.dumps(body), flush=True)


async def _until(client: RoomClient, duration: float) -> None:
    if duration > 0:
        try:
            await asyncio.wait_for(client.closed.wait(), duration)
        except asyncio.TimeoutError:
            pass
    else:
        await client.closed.wait()


def _tracks(args: argparse.Namespace) -> list[MediaStreamTrack]:
    return media_tracks(args.file, args.loop, args.width, args.height, args.fps)


async def _publish(client: RoomClient, args: argparse.Namespace) -> None:
    publication = await client.publish(_tracks(args), video_codec=args.video_codec)
    await publication.wait_connected()
    _print({"event": "publishing", "transport_id": publication.transport_id, "tracks": publication.tracks})
    await _until(client, args.duration)


async def _subscribe(client: RoomClient, args: argparse.Namespace) -> None:
    target = args.participant
    if target is None:
        if not any(p.get("tracks") for p in client.participants.values()):
            await client.wait_for("track_published", timeout=3600)
        target = next(pid for pid, p in client.participants.items() if p.get("tracks"))
    subscription = await client.subscribe(target)
    counts = {kind: 0 for kind in subscription.tracks}
    size: dict[str, Any] = {}

    async def pump(kind: str, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                counts[kind] += 1
                if kind == "video":
                    size["width"], size["height"] = frame.width, frame.height
        except MediaStreamError:
            return

    pumps = [asyncio.create_task(pump(k, t)) for k, t in subscription.tracks.items()]
    started = time.monotonic()
    try:
        while args.duration <= 0 or time.monotonic() - started < args.duration:
            await asyncio.sleep(1)
            _print({"event": "stats", "frames": dict(counts), **size})
            if subscription.ended.is_set() or client.closed.is_set():
                break
    finally:
        for task in pumps:
            task.cancel()


async def _data(client: RoomClient, args: argparse.Namespace) -> None:
    client.on("data", lambda m: _print({"event": "data", **{k: v for k, v in m.items() if k != "type"}}))
    if args.send is not None:
        try:
            payload: Any = json.loads(args.send)
        except json.JSONDecodeError:
            payload = args.send
        await client.send_data(payload, topic=args.topic)
    if args.listen:
        await _until(client, args.listen)
