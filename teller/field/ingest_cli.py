"""`teller ingest rtsp://…`: bring a camera that only serves RTSP into a room.

Prints JSON lines like `teller client` (ingesting, stats, source_lost, source_back,
stopped). A bad URL, an unreachable source or a refused join ends it with one JSON
line on stderr (`{"error": code, "message": ...}`), exit status 2 for usage errors
and 1 for the rest; SIGINT and SIGTERM stop it cleanly with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

from .rtsp_ingest import IngestError, RtspIngest, check_url


def add_parser(sub: Any) -> None:
    ingest = sub.add_parser("ingest", help="pull an RTSP camera into a room (H.264 passed through)")
    ingest.add_argument("source", help="rtsp://[user:password@]host[:port]/path")
    ingest.add_argument("--url", default="http://127.0.0.1:7880", help="server base URL")
    ingest.add_argument("--token", required=True, help="access token with the publish grant for the room")
    ingest.add_argument("--room", help="room to join (default: the token's room)")
    ingest.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until interrupted")
    ingest.add_argument("--transport", choices=["tcp", "udp"], default="tcp", help="RTSP media transport")
    ingest.add_argument("--transcode", action="store_true", help="decode and publish VP8 even for H.264")
    ingest.add_argument("--no-audio", action="store_true", help="publish the video only")
    ingest.add_argument("--timeout", type=float, default=5.0, help="seconds without data before the source counts as lost")
    ingest.add_argument("--stats-interval", type=float, default=5.0, help="seconds between stats lines")


def _print(body: dict[str, Any]) -> None:
    print(json.dumps(body), flush=True)


def _fail(code: str, message: str, status: int) -> int:
    print(json.dumps({"error": code, "message": message}), file=sys.stderr, flush=True)
    return status


async def run(args: argparse.Namespace) -> int:
    # FFmpeg's own RTSP chatter would otherwise go to stderr; our lines say what matters.
    logging.getLogger("libav").setLevel(logging.CRITICAL)
    try:
        check_url(args.source)
    except IngestError as exc:
        return _fail(exc.code, exc.message, exc.exit_code)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ingest = RtspIngest(
        args.source, args.url, args.token, room=args.room, emit=_print, stats_interval_s=args.stats_interval,
        transport=args.transport, audio=not args.no_audio, transcode=args.transcode, io_timeout_s=args.timeout,
    )
    try:
        await ingest.run(duration=args.duration, stop=stop)
    except IngestError as exc:
        return _fail(exc.code, exc.message, exc.exit_code)
    return 0
