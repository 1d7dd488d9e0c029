"""The forwarding benchmark of bench_forward.py, run against Janus's VideoRoom plugin.

    python loadtests/bench_janus.py [--subscribers 1,5,15] [--duration 10] [--join batch|staggered]

Same workload and measurement as bench_forward.py, so the two can be compared: one
publisher loops pre-encoded VP8 (about 1 Mbps, 30 fps) and Opus from an aiortc peer
connection; N subscribers (aiortc peer connections) count complete frames from RTP
headers, never decoding; Janus's CPU time (every thread, from /proc schedstat) is read
over a window that starts `--warmup` seconds after every subscriber received its first
keyframe. Publisher and subscribers run as child processes, so the CPU measured is
Janus's alone. Prints one JSON object per N (bench_forward's keys plus "server"), then
a summary.

Janus (1.x, multistream VideoRoom API) runs with a configuration generated under the
work directory: only the VideoRoom plugin and the plain HTTP transport (on a free
localhost port) are loaded, no STUN, warnings-only logging to a file, Janus's defaults
for everything about media (including a media thread per handle; `--event-loops N`
sets Janus's fixed pool of N loops instead). The publisher creates the room (VP8, Opus,
3 Mbps, so no real bitrate cap). Clients speak the Janus API over HTTP: requests are
POSTed, events arrive by long poll, sessions get a keepalive every 20 s. A subscriber
joins as Janus 1.x has it: Janus offers, aiortc answers, "start" carries the answer.

Janus's join times have a tail: now and then an aiortc subscriber's first DTLS
ClientHello reaches Janus before Janus's side of ICE is up, is dropped, and is only
sent again by aiortc's 1 s DTLS retransmission timer (join ~1050 ms instead of ~50).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.bench_forward import Child, cpu_seconds  # noqa: E402
from loadtests.media import (  # noqa: E402
    AUDIO_TIME_BASE,
    VIDEO_TIME_BASE,
    FrameCounter,
    PreEncodedTrack,
    count_frames,
    encode_audio,
    encode_video,
    measure_window,
    report,
)

ROOM = 4242
JANUS_BIN = "/usr/bin/janus"
JANUS_LIB = "/usr/lib/x86_64-linux-gnu/janus"  # Debian's plugins/, transports/, events/, loggers/
KEEPALIVE_S = 20.0

# -- Janus configuration (written to the work directory at run time) ----------------------

JANUS_JCFG = """\
general: {{
	configs_folder = "{configs}"
	plugins_folder = "{lib}/plugins"
	transports_folder = "{lib}/transports"
	events_folder = "{lib}/events"
	loggers_folder = "{lib}/loggers"
	debug_level = 3                 # warnings and errors
	debug_colors = false
	log_to_stdout = false
	log_to_file = "{log}"
	session_timeout = 60
{extra_general}}}
certificates: {{
}}
media: {{
}}
nat: {{
	nice_debug = false
	ice_ignore_list = "vmnet"
}}
plugins: {{
	disable = "{disable_plugins}"
}}
transports: {{
	disable = "{disable_transports}"
}}
loggers: {{
	disable = "{disable_loggers}"
}}
events: {{
	broadcast = false
	disable = "{disable_events}"
}}
"""

HTTP_JCFG = """\
general: {{
	json = "compact"
	base_path = "/janus"
	http = true
	port = {port}
	ip = "127.0.0.1"
	https = false
}}
admin: {{
	admin_http = false
	admin_https = false
}}
cors: {{
}}
"""

VIDEOROOM_JCFG = """\
general: {
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_janus_config(folder: Path, lib: Path, port: int, log: Path, event_loops: int | None = None) -> None:
    def others(sub: str, keep: str | None = None) -> str:
        names = sorted(p.name for p in (lib / sub).glob("*.so")) if (lib / sub).is_dir() else []
        return ",".join(n for n in names if n != keep)

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "janus.jcfg").write_text(
        JANUS_JCFG.format(
            configs=folder,
            lib=lib,
            log=log,
            extra_general="" if event_loops is None else f"\tevent_loops = {event_loops}\n",
            disable_plugins=others("plugins", "libjanus_videoroom.so"),
            disable_transports=others("transports", "libjanus_http.so"),
            disable_loggers=others("loggers"),
            disable_events=others("events"),
        )
    )
    (folder / "janus.transport.http.jcfg").write_text(HTTP_JCFG.format(port=port))
    (folder / "janus.plugin.videoroom.jcfg").write_text(VIDEOROOM_JCFG)


def wait_janus(url: str, proc: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"janus exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/info", timeout=1) as response:
                info = json.loads(response.read())
            if info.get("janus") == "server_info":
                return info
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("janus did not answer on its HTTP transport")


# -- a minimal Janus API client (HTTP transport) -----------------------------------------


class JanusError(Exception):
    pass


class JanusSession:
    """One Janus session: requests by POST, events by long poll, keepalives."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http: aiohttp.ClientSession | None = None
        self.session_id: int | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.post(self.url + path, json=body) as response:
            data = await response.json(content_type=None)
        if data.get("janus") == "error":
            raise JanusError(data.get("error"))
        return data

    async def create(self) -> None:
        self.http = aiohttp.ClientSession()
        data = await self._post("", {"janus": "create", "transaction": secrets.token_hex(8)})
        self.session_id = data["data"]["id"]
        self._tasks = [asyncio.create_task(self._poll()), asyncio.create_task(self._keepalive())]

    async def attach(self, plugin: str = "janus.plugin.videoroom") -> int:
        data = await self._post(f"/{self.session_id}", {"janus": "attach", "plugin": plugin, "transaction": secrets.token_hex(8)})
        return data["data"]["id"]

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, str] | None = None, timeout: float = 15.0
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A plugin request; returns the plugin's data and its jsep (from the reply or the event)."""
        transaction = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = future  # before the POST: the event may beat its ack
        message: dict[str, Any] = {"janus": "message", "transaction": transaction, "body": body}
        if jsep is not None:
            message["jsep"] = jsep
        try:
            reply = await self._post(f"/{self.session_id}/{handle}", message)
            if reply.get("janus") != "ack":
                event = reply
            else:
                event = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(transaction, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data.get('error_code')} {data['error']}")
        return data, event.get("jsep")

    async def _poll(self) -> None:
        assert self.http is not None
        while True:
            try:
                async with self.http.get(f"{self.url}/{self.session_id}", params={"maxev": "10"}) as response:
                    data = await response.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.1)
                continue
            for event in data if isinstance(data, list) else [data]:
                future = self._pending.get(event.get("transaction", ""))
                if future is not None and not future.done() and event.get("janus") == "event":
                    future.set_result(event)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            try:
                await self._post(f"/{self.session_id}", {"janus": "keepalive", "transaction": secrets.token_hex(8)})
            except asyncio.CancelledError:
                raise
            except Exception:
                pass

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.http is None:
            return
        try:
            if self.session_id is not None:
                await self._post(f"/{self.session_id}", {"janus": "destroy", "transaction": secrets.token_hex(8)})
        except Exception:
            pass
        await self.http.close()


def rtc_configuration() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[])  # as Teller's clients get in the benchmark: no STUN


async def wait_connected(pc: RTCPeerConnection, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            raise RuntimeError(f"peer connection {pc.connectionState}")
        await asyncio.sleep(0.01)


# -- roles run as child processes -------------------------------------------------------


async def run_publisher(url: str, room: int, bitrate: int) -> None:
    video = PreEncodedTrack("video", encode_video(bitrate=bitrate), 30, 3000, VIDEO_TIME_BASE)
    audio = PreEncodedTrack("audio", encode_audio(), 50, 960, AUDIO_TIME_BASE)
    janus = JanusSession(url)
    await janus.create()
    handle = await janus.attach()
    await janus.message(handle, {
        "request": "create", "room": room, "publishers": 2, "bitrate": 3_000_000,
        "videocodec": "vp8", "audiocodec": "opus",
    })
    pc = RTCPeerConnection(rtc_configuration())
    for track in (audio, video):  # what RoomClient.publish(..., video_codec="VP8") does
        transceiver = pc.addTransceiver(track, direction="sendonly")
        if track.kind == "video":
            transceiver.setCodecPreferences(
                [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name.lower() in ("vp8", "rtx")]
            )
    await pc.setLocalDescription(await pc.createOffer())
    joined, jsep = await janus.message(
        handle,
        {"request": "joinandconfigure", "room": room, "ptype": "publisher", "display": "publisher"},
        {"type": "offer", "sdp": pc.localDescription.sdp},
    )
    assert jsep is not None, joined
    await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video":
            transceiver.sender._send_keyframe = video.request_keyframe  # PLI -> loop restarts on its keyframe
    await wait_connected(pc)
    size = sum(len(p) for p in video._packets) * 8 / (len(video._packets) / 30)
    print(json.dumps({"event": "publishing", "video_bps": round(size), "feed": joined.get("id")}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print(json.dumps({"event": "stopped", "keyframes_forced": video.keyframes_forced}), flush=True)
    await pc.close()
    await janus.close()


async def run_subscribers(url: str, room: int, count: int, duration: float, warmup: float, join: str) -> None:
    sessions: list[JanusSession] = []
    pcs: list[RTCPeerConnection] = []
    counters: list[FrameCounter] = []

    async def join_one(i: int) -> None:
        # "connect": a session, a handle and the room's participants (Teller's join reply lists them)
        janus = JanusSession(url)
        sessions.append(janus)
        await janus.create()
        handle = await janus.attach()
        listing, _ = await janus.message(handle, {"request": "listparticipants", "room": room})
        feed = next(p["id"] for p in listing["participants"] if p.get("publisher"))
        counter = FrameCounter(joined_at=time.monotonic())
        counters.append(counter)
        # "subscribe": Janus offers, aiortc answers, "start" hands Janus the answer
        pc = RTCPeerConnection(rtc_configuration())
        pcs.append(pc)
        data, offer = await janus.message(handle, {"request": "join", "room": room, "ptype": "subscriber", "streams": [{"feed": feed}]})
        assert offer is not None, data
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
        for transceiver in pc.getTransceivers():
            count_frames(transceiver.receiver, counter, transceiver.kind)
        await pc.setLocalDescription(await pc.createAnswer())
        await janus.message(handle, {"request": "start", "room": room}, {"type": "answer", "sdp": pc.localDescription.sdp})

    if join == "batch":
        await asyncio.gather(*(join_one(i) for i in range(count)))
    else:
        for i in range(count):
            await join_one(i)
            await asyncio.sleep(0.25)
    await measure_window(counters, duration, warmup)
    await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


# -- the orchestrator ----------------------------------------------------------------------


def bench_one(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/janus"
    folder = workdir / f"janus-{n}"
    write_janus_config(folder, Path(args.janus_lib), port, workdir / f"server-{n}.log", args.event_loops)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = Child([args.janus, "--configs-folder", str(folder)], workdir / f"server-{n}.stderr", env)
    children = [server]
    try:
        wait_janus(url, server.proc)
        pid = server.proc.pid
        me = [sys.executable, str(Path(__file__).resolve())]
        publisher = Child(
            [*me, "--role", "publisher", "--url", url, "--room", str(ROOM), "--bitrate", str(args.bitrate)],
            workdir / f"publisher-{n}.log",
            env,
        )
        children.append(publisher)
        published = publisher.read_event("publishing")
        subscribers = Child(
            [*me, "--role", "subscribers", "--url", url, "--room", str(ROOM), "--count", str(n),
             "--duration", str(args.duration), "--warmup", str(args.warmup), "--join", args.join],
            workdir / f"subscribers-{n}.log",
            env,
        )
        children.append(subscribers)
        subscribers.read_event("window_start", timeout=60)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        subscribers.read_event("window_end", timeout=args.duration + 30)
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        result = subscribers.read_event("result")
        (workdir / f"result-{n}.json").write_text(json.dumps(result))
        line = report(n, args.join, published["video_bps"], cpu1 - cpu0, t1 - t0, result)
        line["server"] = "janus"
        return line
    finally:
        for child in reversed(children):
            child.stop()


def janus_version(binary: str) -> str:
    out = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("Janus version:")), "")
    return line.split("(", 1)[-1].rstrip(")") if "(" in line else line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["orchestrator", "publisher", "subscribers"], default="orchestrator")
    parser.add_argument("--subscribers", default="1,5,15")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--bitrate", type=int, default=1_000_000)
    parser.add_argument("--join", choices=["batch", "staggered"], default="staggered")
    parser.add_argument("--workdir", help="where Janus's generated config and the logs go (default: a temp dir)")
    parser.add_argument("--janus", default=JANUS_BIN, help="the janus binary")
    parser.add_argument("--janus-lib", default=JANUS_LIB, help="folder holding Janus's plugins/ and transports/")
    parser.add_argument(
        "--event-loops", type=int,
        help="Janus's general.event_loops (a fixed pool of media threads); default: Janus's own, a thread per handle",
    )
    parser.add_argument("--url")
    parser.add_argument("--room", type=int, default=ROOM)
    parser.add_argument("--count", type=int)
    args = parser.parse_args()
    if args.role == "publisher":
        asyncio.run(run_publisher(args.url, args.room, args.bitrate))
        return
    if args.role == "subscribers":
        asyncio.run(run_subscribers(args.url, args.room, args.count, args.duration, args.warmup, args.join))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="janus-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(x) for x in args.subscribers.split(",")):
        result = bench_one(n, args, workdir)
        results.append(result)
        print(json.dumps(result), flush=True)
    print(
        json.dumps({"summary": results, "workdir": str(workdir), "cpus": os.cpu_count(), "server": "janus",
                    "janus_version": janus_version(args.janus)}),
        flush=True,
    )


if __name__ == "__main__":
    main()
