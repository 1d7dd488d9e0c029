"""A minimal RTSP camera for tests (a test tool, not a product RTSP server).

No RTSP server package is available here, so this plays the part of an IP camera
closely enough for FFmpeg's RTSP client: OPTIONS, DESCRIBE (SDP with H.264 and,
optionally, PCMU audio), SETUP over TCP interleaved only (UDP gets 461, so a client
must ask for `rtsp_transport=tcp`), PLAY, GET_PARAMETER (keep-alive) and TEARDOWN.

Like many real cameras it sends SPS/PPS only in the SDP (`sprop-parameter-sets`),
never in-band, so a receiver must put them before each IDR itself. The video is a
moving test pattern encoded once at start (libx264 constrained baseline, no B-frames,
a keyframe every second) and replayed in a loop with increasing timestamps, so many
sessions cost no encoding; it is packetised per RFC 6184 (single NAL, STAP-A, FU-A)
and paced in real time. `cut()` drops every session and stops listening (a camera
that goes away); `restore()` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fractions
import itertools
import math
import random
import struct
import time

import av
import numpy as np
from aiortc.codecs.h264 import H264Encoder

PAYLOAD_H264 = 96
PAYLOAD_PCMU = 0
AUDIO_RATE = 8000
AUDIO_PACKET = 160  # 20 ms of PCMU


def _split_annexb(data: bytes) -> list[bytes]:
    return [nal for nal in H264Encoder._split_bitstream(data) if nal]


def _encode_loop(width: int, height: int, fps: int, seconds: int) -> tuple[list[list[bytes]], bytes, bytes]:
    """(NAL units of each frame without SPS/PPS, SPS, PPS) for `seconds` of pattern."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base, codec.framerate = fractions.Fraction(1, fps), fractions.Fraction(fps, 1)
    codec.options = {"profile": "baseline", "preset": "ultrafast", "tune": "zerolatency", "g": str(fps), "bf": "0"}
    codec.flags |= av.codec.context.Flags.global_header  # parameter sets go to extradata only
    ramp = np.linspace(16, 235, width, dtype=np.uint8)
    frames: list[list[bytes]] = []
    count = fps * seconds
    for i in range(count):
        image = np.empty((height, width, 3), np.uint8)
        image[..., 0] = np.roll(ramp, i * 6)
        image[..., 1] = ramp[::-1]
        image[..., 2] = 128
        block = max(8, height // 8)
        x = (i * block) % max(block, width - block)
        image[height // 2 - block // 2 : height // 2 + block // 2, x : x + block] = 255
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        packets = list(codec.encode(frame)) + (list(codec.encode(None)) if i == count - 1 else [])
        for packet in packets:
            frames.append([n for n in _split_annexb(bytes(packet)) if n[0] & 0x1F not in (7, 8)])
    params = {n[0] & 0x1F: n for n in _split_annexb(bytes(codec.extradata or b""))}
    return frames, params[7], params[8]


def _tone(seconds: int) -> list[bytes]:
    """20 ms PCMU packets of a 440 Hz tone."""
    codec = av.CodecContext.create("pcm_mulaw", "w")
    codec.sample_rate, codec.format, codec.layout = AUDIO_RATE, "s16", "mono"
    t = np.arange(AUDIO_RATE * seconds) / AUDIO_RATE
    pcm = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = AUDIO_RATE
    data = b"".join(bytes(p) for p in codec.encode(frame))
    return [data[i : i + AUDIO_PACKET] for i in range(0, len(data) - AUDIO_PACKET + 1, AUDIO_PACKET)]


class _Session:
    """One RTSP client connection."""

    def __init__(self, server: RtspTestServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server, self.reader, self.writer = server, reader, writer
        self.id = f"{random.getrandbits(48):012x}"
        self.channels: dict[str, int] = {}  # "video"/"audio" -> interleaved RTP channel
        self.streamer: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        try:
            while True:
                first = await self.reader.readexactly(1)
                if first == b"$":  # the client's interleaved RTCP: read and ignore
                    _, size = struct.unpack("!BH", await self.reader.readexactly(3))
                    await self.reader.readexactly(size)
                    continue
                head = first + await self.reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, uri, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                if int(headers.get("content-length", 0)):
                    await self.reader.readexactly(int(headers["content-length"]))
                self.server.requests.append(method)
                if not await self._answer(method, uri, headers):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return
        finally:
            self.close()

    async def _answer(self, method: str, uri: str, headers: dict[str, str]) -> bool:
        cseq = headers.get("cseq", "0")
        extra: dict[str, str] = {}
        body = b""
        status = "200 OK"
        if method == "OPTIONS":
            extra["Public"] = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"
        elif method == "DESCRIBE":
            body = self.server.sdp().encode()
            extra.update({"Content-Type": "application/sdp", "Content-Base": self.server.url + "/"})
        elif method == "SETUP":
            transport = headers.get("transport", "")
            kind = "audio" if uri.rstrip("/").endswith("trackID=1") else "video"
            if "TCP" not in transport.upper() or not getattr(self.server, kind):
                status = "461 Unsupported Transport"
            else:
                low = int(transport.split("interleaved=")[1].split("-")[0]) if "interleaved=" in transport else 2 * len(self.channels)
                self.channels[kind] = low
                extra["Transport"] = f"RTP/AVP/TCP;unicast;interleaved={low}-{low + 1}"
        elif method == "PLAY":
            if self.streamer is None and self.channels:
                self.streamer = asyncio.create_task(self._stream())
                self.server.plays += 1
            extra["Range"] = "npt=0.000-"
        elif method == "TEARDOWN":
            await self._reply("200 OK", cseq, {}, b"")
            return False
        elif method != "GET_PARAMETER":
            status = "405 Method Not Allowed"
        if method != "OPTIONS":
            extra["Session"] = f"{self.id};timeout=60"
        await self._reply(status, cseq, extra, body)
        return True

    async def _reply(self, status: str, cseq: str, extra: dict[str, str], body: bytes) -> None:
        lines = [f"RTSP/1.0 {status}", f"CSeq: {cseq}", "Server: teller-test-camera"]
        lines += [f"{k}: {v}" for k, v in extra.items()] + [f"Content-Length: {len(body)}", "", ""]
        self.writer.write("\r\n".join(lines).encode() + body)
        await self.writer.drain()

    def _rtp(self, channel: int, pt: int, seq: int, ts: int, ssrc: int, marker: bool, payload: bytes) -> None:
        header = struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
        self.writer.write(struct.pack("!cBH", b"$", channel, len(header) + len(payload)) + header + payload)

    async def _stream(self) -> None:
        """Real-time video (and audio): both clocks start at random values, like a camera's."""
        srv = self.server
        video_ts, audio_ts = random.getrandbits(32), random.getrandbits(32)
        video_seq, audio_seq = itertools.count(random.getrandbits(16)), itertools.count(random.getrandbits(16))
        ssrc_v, ssrc_a = random.getrandbits(32), random.getrandbits(32)
        start = time.monotonic()
        frame_i = audio_i = 0
        try:
            while True:
                now = time.monotonic() - start
                while frame_i / srv.fps <= now and "video" in self.channels:
                    payloads = H264Encoder._packetize(srv.frames[frame_i % len(srv.frames)])
                    ts = video_ts + frame_i * 90000 // srv.fps
                    for n, payload in enumerate(payloads):
                        self._rtp(self.channels["video"], PAYLOAD_H264, next(video_seq), ts, ssrc_v, n == len(payloads) - 1, payload)
                    frame_i += 1
                while audio_i * 0.02 <= now and "audio" in self.channels:
                    payload = srv.tone[audio_i % len(srv.tone)]
                    self._rtp(self.channels["audio"], PAYLOAD_PCMU, next(audio_seq), audio_ts + audio_i * AUDIO_PACKET, ssrc_a, False, payload)
                    audio_i += 1
                srv.frames_sent = max(srv.frames_sent, frame_i)
                await self.writer.drain()
                await asyncio.sleep(0.01)
        except (ConnectionError, asyncio.CancelledError):
            return

    def close(self) -> None:
        if self.streamer is not None:
            self.streamer.cancel()
        self.writer.close()
        self.server.sessions.discard(self)


class RtspTestServer:
    """An RTSP camera on 127.0.0.1; `url` is what a client opens."""

    def __init__(self, width: int = 320, height: int = 240, fps: int = 15, audio: bool = True, video: bool = True) -> None:
        """`video=False` makes a source without video (a microphone only): bad input."""
        self.width, self.height, self.fps, self.audio, self.video = width, height, fps, audio, video
        self.frames, self.sps, self.pps = _encode_loop(width, height, fps, seconds=2)
        self.tone = _tone(1)
        self.port = 0
        self.sessions: set[_Session] = set()
        self.requests: list[str] = []
        self.plays = 0  # PLAYs answered: a client that reconnected played again
        self.frames_sent = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def sdp(self) -> str:
        sprop = ",".join(base64.b64encode(n).decode() for n in (self.sps, self.pps))
        lines = ["v=0", "o=- 0 0 IN IP4 127.0.0.1", "s=Teller test camera", "c=IN IP4 0.0.0.0", "t=0 0", "a=control:*"]
        video = [
            f"m=video 0 RTP/AVP {PAYLOAD_H264}", f"a=rtpmap:{PAYLOAD_H264} H264/90000",
            f"a=fmtp:{PAYLOAD_H264} packetization-mode=1;profile-level-id={self.sps[1:4].hex()};sprop-parameter-sets={sprop}",
            f"a=framerate:{self.fps}", "a=control:trackID=0",
        ]
        lines += video if self.video else []
        if self.audio:
            lines += [f"m=audio 0 RTP/AVP {PAYLOAD_PCMU}", f"a=rtpmap:{PAYLOAD_PCMU} PCMU/{AUDIO_RATE}", "a=control:trackID=1"]
        return "\r\n".join(lines) + "\r\n"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        self.sessions.add(session)
        await session.serve()

    async def cut(self) -> None:
        """The camera goes away: sessions dropped, connections refused."""
        if self._server is not None:
            self._server.close()
            for session in list(self.sessions):
                session.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def restore(self) -> None:
        """The camera is back on the same port."""
        if self._server is None:
            await self.start()

    async def stop(self) -> None:
        await self.cut()
