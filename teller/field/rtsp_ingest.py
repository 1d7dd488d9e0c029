"""RTSP pull ingest: a camera that only serves RTSP becomes a participant of a room.

One FFmpeg (PyAV) reader thread pulls the source; the event loop only paces and
publishes through the client SDK (`RoomClient`). H.264 a browser can decode is passed
through as packets: aiortc's sender packetises an `av.Packet` (`H264Encoder.pack`)
instead of encoding a frame, so nothing is decoded or encoded. Anything else is
decoded in the thread and aiortc encodes VP8 from the frames. Audio is decoded and
resampled to 48 kHz in the thread; aiortc encodes Opus.

Why the details: many cameras send SPS/PPS only in the SDP (`sprop-parameter-sets`,
which FFmpeg turns into extradata), and a browser that gets an IDR without them shows
nothing, so every IDR is made self-sufficient here. A source that drops is reopened
with backoff while the room publication stays up; its timestamps are mapped onto one
continuous clock so that viewers see a pause, not a jump.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..client.room import ClientError, LocalPublication, RoomClient

log = logging.getLogger("teller.field")

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_RATE = 48000
AUDIO_SAMPLES = 960  # 20 ms: what the Opus encoder sends per packet
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
START_CODE = b"\x00\x00\x00\x01"
NAL_IDR, NAL_SPS, NAL_PPS, NAL_AUD = 5, 7, 8, 9
# H.264 profiles browsers decode (8-bit 4:2:0). High 10, 4:2:2 and 4:4:4 are transcoded.
PASSTHROUGH_PROFILES = {"Baseline", "Constrained Baseline", "Main", "High", "Constrained High", "Progressive High", None}
PASSTHROUGH_PIX_FMTS = {"yuv420p", "yuvj420p", None}
# A timestamp this far from the last one is a discontinuity (camera restart, 32-bit wrap).
JUMP_BACK_S, JUMP_AHEAD_S = 1.0, 5.0

Emit = Callable[[dict[str, Any]], None]


class IngestError(Exception):
    """A failure the operator must fix; `exit_code` 2 for usage, 1 for the rest."""

    def __init__(self, code: str, message: str, exit_code: int = 1) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.exit_code = code, message, exit_code


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("rtsp", "rtsps") or not parts.hostname:
        raise IngestError("bad_url", f"not an rtsp:// URL: {redact(url)!r}", 2)


def redact(url: str) -> str:
    """The URL without its password: camera credentials never reach logs or status lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


# -- H.264 -----------------------------------------------------------------------------


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B buffer (3- or 4-byte start codes)."""
    out: list[bytes] = []
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for n, start in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else len(data)
        nal = data[start:end].rstrip(b"\x00") if n + 1 < len(starts) else data[start:end]
        if nal:
            out.append(nal)
    return out


def split_length_prefixed(data: bytes, size: int) -> list[bytes]:
    out, i = [], 0
    while i + size <= len(data):
        length = int.from_bytes(data[i : i + size], "big")
        out.append(data[i + size : i + size + length])
        i += size + length
    return [n for n in out if n]


def parse_extradata(extradata: bytes | None) -> tuple[list[bytes], int | None]:
    """(parameter-set NAL units, NAL length size or None for Annex B) from avcC or Annex B."""
    if not extradata:
        return [], None
    if extradata[0] != 1:
        return split_annexb(extradata), None
    size = (extradata[4] & 3) + 1
    nals, i = [], 5
    for mask in (0x1F, 0xFF):  # SPS count (low 5 bits), then PPS count
        if i >= len(extradata):
            break
        count, i = extradata[i] & mask, i + 1
        for _ in range(count):
            length = int.from_bytes(extradata[i : i + 2], "big")
            nals.append(extradata[i + 2 : i + 2 + length])
            i += 2 + length
    return [n for n in nals if n], size


class H264AccessUnits:
    """Makes each access unit something a browser can start from: Annex B, SPS/PPS before IDR."""

    def __init__(self, extradata: bytes | None) -> None:
        nals, self.length_size = parse_extradata(extradata)
        self.params: dict[int, bytes] = {n[0] & 0x1F: n for n in nals if n[0] & 0x1F in (NAL_SPS, NAL_PPS)}
        self.inserted = 0
        self.missing_warned = False

    def __call__(self, data: bytes) -> tuple[bytes, bool]:
        """(Annex B access unit, whether it holds an IDR slice)."""
        nals = split_annexb(data) if self.length_size is None or data.startswith((b"\x00\x00\x01", START_CODE)) \
            else split_length_prefixed(data, self.length_size)
        types = [n[0] & 0x1F for n in nals]
        for nal, kind in zip(nals, types):
            if kind in (NAL_SPS, NAL_PPS):
                self.params[kind] = nal  # a camera may change them; the newest win
        idr = NAL_IDR in types
        if idr and not (NAL_SPS in types and NAL_PPS in types):
            if NAL_SPS in self.params and NAL_PPS in self.params:
                at = 1 if types and types[0] == NAL_AUD else 0
                nals[at:at] = [self.params[NAL_SPS], self.params[NAL_PPS]]
                self.inserted += 1
            elif not self.missing_warned:
                self.missing_warned = True
                log.warning("the source sent an IDR without SPS/PPS, in-band or in the SDP: viewers may stay black")
        return b"".join(START_CODE + n for n in nals), idr


def passthrough_ok(stream: Any) -> bool:
    ctx = stream.codec_context
    return ctx.name == "h264" and ctx.profile in PASSTHROUGH_PROFILES and ctx.pix_fmt in PASSTHROUGH_PIX_FMTS


# -- from the thread to the sender -------------------------------------------------------


@dataclass
class IngestStats:
    connects: int = 0
    reconnects: int = 0
    video_packets: int = 0  # H.264 packets passed through untouched (but for SPS/PPS)
    video_frames_transcoded: int = 0  # decoded frames handed to aiortc's encoder
    audio_frames: int = 0
    keyframes: int = 0
    parameter_sets_inserted: int = 0
    skipped_to_keyframe: int = 0  # packets dropped until a viewer can start (IDR)
    dropped: int = 0  # queue overflow: the sender fell behind
    missing_pts: int = 0
    discontinuities: int = 0
    decode_errors: int = 0
    keyframe_requests: int = 0  # PLIs from the SFU; RTSP cannot ask a camera for one


class Pacer:
    """Releases media at its timestamps, on one clock for audio and video.

    A live source still arrives in bursts (FFmpeg's probe, a TCP stall, a reconnect);
    sent as they come, a burst floods the viewers' jitter buffers. Re-anchors when the
    source is far behind or ahead of the clock (drift, a jump) instead of waiting.
    """

    def __init__(self, max_behind_s: float = 0.5, max_ahead_s: float = 1.0) -> None:
        self.max_behind_s, self.max_ahead_s = max_behind_s, max_ahead_s
        self._wall0: float | None = None
        self._media0 = 0.0

    async def wait(self, media_s: float) -> None:
        now = time.monotonic()
        if self._wall0 is None:
            self._wall0, self._media0 = now, media_s
            return
        due = self._wall0 + media_s - self._media0
        if now - due > self.max_behind_s or due - now > self.max_ahead_s:
            self._wall0, self._media0 = now, media_s
        elif due > now:
            await asyncio.sleep(due - now)


class IngestTrack(MediaStreamTrack):
    """What the reader thread produced, handed to aiortc's sender in time.

    Bounded: a sender that falls behind loses media (counted), the reader never waits
    for it. Until the sender first asks (the peer connection is not up yet) nothing
    is kept, and passed-through video then starts at a keyframe.
    """

    def __init__(self, kind: str, pacer: Pacer, stats: IngestStats, maxsize: int, keyframes: bool) -> None:
        super().__init__()
        self.kind = kind
        self._pacer, self._stats = pacer, stats
        self._queue: asyncio.Queue[tuple[float, Any]] = asyncio.Queue(maxsize)
        self._keyframes = keyframes  # packets that need a keyframe to start from
        self._need_keyframe = keyframes
        self.started = False

    def offer(self, media_s: float, item: Any, keyframe: bool = True) -> None:
        """Loop side of the hand-over (call_soon_threadsafe from the reader)."""
        if not self.started or self.readyState != "live":
            self._need_keyframe = self._keyframes
            return
        if self._queue.full():
            if self._keyframes:  # a gap in H.264 breaks every frame until the next IDR
                self._stats.dropped += self._queue.qsize()
                while not self._queue.empty():
                    self._queue.get_nowait()
                self._need_keyframe = True
            else:
                self._queue.get_nowait()
                self._stats.dropped += 1
        if self._need_keyframe and not keyframe:
            self._stats.skipped_to_keyframe += 1
            return
        self._need_keyframe = False
        self._queue.put_nowait((media_s, item))

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        self.started = True
        media_s, item = await self._queue.get()
        await self._pacer.wait(media_s)
        return item


class PacketTrack(IngestTrack):
    """Passed-through H.264: the SDK relays a viewer's PLI here (see RoomClient.publish)."""

    def request_keyframe(self) -> None:
        self._stats.keyframe_requests += 1


@dataclass
class SourceInfo:
    codec: str
    width: int
    height: int
    profile: str | None
    passthrough: bool
    audio: str | None  # the source's audio codec, None when there is none (or it is off)


# -- the reader thread -------------------------------------------------------------------


class RtspSource:
    """Reads one RTSP URL in a thread, reconnecting, and feeds the tracks."""

    def __init__(
        self,
        url: str,
        *,
        transport: str = "tcp",
        audio: bool = True,
        transcode: bool = False,
        io_timeout_s: float = 5.0,
        backoff_s: tuple[float, float] = (0.5, 10.0),
        queue_s: float = 2.0,
        emit: Emit | None = None,
    ) -> None:
        self.url, self.transport, self.want_audio, self.transcode = url, transport, audio, transcode
        self.io_timeout_s, self.backoff_s, self.queue_s = io_timeout_s, backoff_s, queue_s
        self.stats = IngestStats()
        self.pacer = Pacer()
        self.info: SourceInfo | None = None
        self.video: IngestTrack | None = None
        self.audio: IngestTrack | None = None
        self.connected = False
        self.failure: BaseException | None = None
        self._emit_cb = emit or (lambda body: None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._container: Any = None
        # One continuous clock across sessions (seconds), see _media_time.
        self._offset: float | None = None
        self._last_video: float | None = None
        self._last_audio: float | None = None
        self._video_step = 1 / 30
        self._audio_out = 0  # 48 kHz samples handed on: the audio RTP clock
        self._audio_base: float | None = None
        self._last_wall = 0.0  # time.monotonic() of the last packet read

    # -- lifecycle (loop side) -----------------------------------------------------------

    async def open(self) -> SourceInfo:
        """Connects once (in a thread) and makes the tracks; IngestError when it cannot."""
        check_url(self.url)
        self._loop = asyncio.get_running_loop()
        self._container = await asyncio.to_thread(self._open)
        try:
            self.info = self._describe(self._container)
        except IngestError:
            await asyncio.to_thread(self._container.close)
            raise
        pt = self.info.passthrough
        fps_queue = max(8, int(self.queue_s / self._video_step))
        self.video = (PacketTrack if pt else IngestTrack)("video", self.pacer, self.stats, fps_queue, keyframes=pt)
        if self.info.audio:
            self.audio = IngestTrack("audio", self.pacer, self.stats, int(self.queue_s / 0.02), keyframes=False)
        return self.info

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="teller-rtsp-ingest", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self.io_timeout_s + 2)
        elif self._container is not None:
            await asyncio.to_thread(self._container.close)
        for track in (self.video, self.audio):
            if track is not None:
                track.stop()

    @property
    def tracks(self) -> list[MediaStreamTrack]:
        return [t for t in (self.audio, self.video) if t is not None]

    # -- thread side --------------------------------------------------------------------

    def _open(self) -> Any:
        options = {"rtsp_transport": self.transport, "timeout": str(int(self.io_timeout_s * 1e6)),
                   "analyzeduration": "1000000", "fflags": "nobuffer"}
        try:
            return av.open(self.url, options=options, timeout=(self.io_timeout_s, self.io_timeout_s))
        except PermissionError as exc:
            raise IngestError("source_unauthorized", f"{redact(self.url)}: {exc.strerror or exc}") from exc
        except FileNotFoundError as exc:
            raise IngestError("source_not_found", f"{redact(self.url)}: {exc.strerror or exc}") from exc
        except (av.FFmpegError, OSError) as exc:
            raise IngestError("source_unreachable", f"{redact(self.url)}: {getattr(exc, 'strerror', None) or exc}") from exc

    def _describe(self, container: Any) -> SourceInfo:
        if not container.streams.video:
            raise IngestError("no_video", f"{redact(self.url)} has no video stream")
        video = container.streams.video[0]
        ctx = video.codec_context
        rate = video.guessed_rate or video.average_rate
        if rate:
            self._video_step = 1 / float(rate)
        audio = self._audio_stream(container)
        return SourceInfo(
            codec=ctx.name, width=ctx.width, height=ctx.height, profile=ctx.profile,
            passthrough=not self.transcode and passthrough_ok(video),
            audio=audio.codec_context.name if audio is not None else None,
        )

    def _audio_stream(self, container: Any) -> Any:
        if not self.want_audio:
            return None
        for stream in container.streams.audio:
            if stream.codec_context.name:  # FFmpeg has a decoder for it
                return stream
        return None

    def _emit(self, body: dict[str, Any]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._emit_cb, body)

    def _hand(self, track: IngestTrack | None, media_s: float, item: Any, keyframe: bool = True) -> None:
        if track is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: we are stopping
                self._loop.call_soon_threadsafe(track.offer, media_s, item, keyframe)

    def _run(self) -> None:
        """Sessions until stopped: read one, and on a drop wait (backoff) and reopen."""
        delay = self.backoff_s[0]
        container = self._container
        try:
            while not self._stop.is_set():
                if container is None:
                    try:
                        container = self._open()
                    except IngestError as exc:
                        self._emit({"event": "source_retry", "error": exc.code, "retry_in_s": round(delay, 2)})
                        self._stop.wait(delay)
                        delay = min(self.backoff_s[1], delay * 2)
                        continue
                    self.stats.reconnects += 1
                self.stats.connects += 1
                self._set_connected(True)
                try:
                    if self._session(container):
                        delay = self.backoff_s[0]  # it worked for a while: start the backoff over
                    reason = "the source ended the stream"
                except av.error.ExitError:  # PyAV's read timeout interrupted FFmpeg
                    reason = f"no data for {self.io_timeout_s:g} s"
                except (av.FFmpegError, OSError) as exc:
                    reason = str(getattr(exc, "strerror", None) or exc)
                finally:
                    with contextlib.suppress(Exception):
                        container.close()
                    container = self._container = None
                    self._set_connected(False)
                if self._stop.is_set():
                    break
                log.warning("RTSP source lost (%s); reconnecting in %.1f s", reason, delay)
                self._emit({"event": "source_lost", "reason": reason, "retry_in_s": round(delay, 2)})
                self._stop.wait(delay)
                delay = min(self.backoff_s[1], delay * 2)
        except Exception as exc:  # a bug: say so and stop rather than spin
            log.exception("the RTSP reader failed")
            self.failure = exc
            self._emit({"event": "failed"})

    def _set_connected(self, value: bool) -> None:
        self.connected = value
        if value and self.stats.connects > 1:
            self._emit({"event": "source_back", "reconnects": self.stats.reconnects})

    def _session(self, container: Any) -> bool:
        """Demuxes one connection; True when it delivered video."""
        video = container.streams.video[0] if container.streams.video else None
        if video is None:
            raise OSError("the source has no video stream any more")
        audio = self._audio_stream(container) if self.audio is not None else None
        passthrough = self.info is not None and self.info.passthrough
        if passthrough and not passthrough_ok(video):
            log.warning("the source is no longer browser-safe H.264; transcoding from now on")
            passthrough = False  # frames now: aiortc's H.264 encoder takes over
        units = H264AccessUnits(video.codec_context.extradata) if passthrough else None
        resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE, frame_size=AUDIO_SAMPLES)
        self._offset = None  # this session's clock starts where the last one stopped
        self._audio_base = None
        seen_idr = False
        delivered = False
        streams = [s for s in (video, audio) if s is not None]
        for packet in container.demux(streams):
            if self._stop.is_set():
                return delivered
            if not packet.size:
                continue  # a flush packet: the stream is ending
            if packet.stream is video:
                if units is not None:
                    before = units.inserted
                    data, idr = units(bytes(packet))
                    self.stats.parameter_sets_inserted += units.inserted - before
                    seen_idr = seen_idr or idr
                    if not seen_idr:
                        self.stats.skipped_to_keyframe += 1
                        continue
                    media_s = self._media_time(packet, "video")
                    out = av.Packet(data)
                    out.pts = out.dts = round(media_s * VIDEO_CLOCK)
                    out.time_base = VIDEO_TIME_BASE
                    self.stats.video_packets += 1
                    self.stats.keyframes += idr
                    self._hand(self.video, media_s, out, idr)
                else:
                    self._decode_video(packet)
                delivered = True
            elif audio is not None:
                self._decode_audio(packet, resampler)
        return delivered

    def _media_time(self, packet: Any, kind: str) -> float:
        """Seconds on the ingest's own continuous clock, from a packet's (or frame's) pts or dts.

        A new session (reconnect) continues the clock by the wall time the source was
        away, so the RTP timestamps a viewer gets match how late the media arrives.
        Inside a session a jump (a 32-bit RTP wrap FFmpeg did not unwrap, a camera
        restart) is closed to one frame. A packet without a timestamp follows the last.
        """
        ts = packet.pts if packet.pts is not None else packet.dts
        last = self._last_video if kind == "video" else self._last_audio
        step = self._video_step if kind == "video" else 0.02
        if ts is None or packet.time_base is None:
            self.stats.missing_pts += 1
            media = (last + step) if last is not None else 0.0
        else:
            t = float(ts * packet.time_base)
            if self._offset is None:
                known = [x for x in (self._last_video, self._last_audio) if x is not None]
                start = 0.0
                if known:
                    gap = max(step, time.monotonic() - self._last_wall)
                    start = max(known) + gap
                    self._audio_out += round(gap * AUDIO_RATE / AUDIO_SAMPLES) * AUDIO_SAMPLES
                self._offset = start - t
            media = t + self._offset
            if kind == "video" and last is not None and not (last - JUMP_BACK_S <= media <= last + JUMP_AHEAD_S):
                self.stats.discontinuities += 1
                self._offset += last + step - media
                media = last + step
        if kind == "video":
            self._last_video = media
        else:
            self._last_audio = media
        self._last_wall = time.monotonic()
        return media

    def _decode_video(self, packet: Any) -> None:
        try:
            frames = packet.decode()
        except av.FFmpegError:
            self.stats.decode_errors += 1
            return
        for frame in frames:
            media_s = self._media_time(frame, "video")  # the frame's own time: decoders reorder
            if frame.format.name != "yuv420p":
                frame = frame.reformat(format="yuv420p")  # here, not on the loop
            frame.pts = round(media_s * VIDEO_CLOCK)
            frame.time_base = VIDEO_TIME_BASE
            self.stats.video_frames_transcoded += 1
            self._hand(self.video, media_s, frame)

    def _decode_audio(self, packet: Any, resampler: av.AudioResampler) -> None:
        media_s = self._media_time(packet, "audio")
        try:
            frames = packet.decode()
        except av.FFmpegError:
            self.stats.decode_errors += 1
            return
        for frame in frames:
            for out in resampler.resample(frame):
                # The audio RTP clock counts samples (it moves on by a reconnect's gap
                # only); its pacing time follows the source, re-synced if they drift.
                at = (self._audio_base or 0.0) + self._audio_out / AUDIO_RATE
                if self._audio_base is None or abs(at - media_s) > 0.2:
                    self._audio_base = media_s - self._audio_out / AUDIO_RATE
                    at = media_s
                out.pts, out.time_base = self._audio_out, AUDIO_TIME_BASE
                self._audio_out += out.samples
                self.stats.audio_frames += 1
                self._hand(self.audio, at, out)


# -- the ingest: source + room -----------------------------------------------------------


class RtspIngest:
    """An RTSP source published into a room as one participant, until stopped."""

    def __init__(
        self,
        source_url: str,
        server_url: str,
        token: str,
        *,
        room: str | None = None,
        emit: Emit | None = None,
        stats_interval_s: float = 5.0,
        **source_options: Any,
    ) -> None:
        self.server_url, self.token, self.room = server_url, token, room
        self.emit: Emit = emit or (lambda body: log.info("%s", body))
        self.stats_interval_s = stats_interval_s
        self.source = RtspSource(source_url, emit=self.emit, **source_options)
        self.client: RoomClient | None = None
        self.publication: LocalPublication | None = None
        self.ingesting = asyncio.Event()

    @property
    def stats(self) -> IngestStats:
        return self.source.stats

    def status(self) -> dict[str, Any]:
        return {"connected": self.source.connected, **asdict(self.stats)}

    async def run(self, duration: float = 0, stop: asyncio.Event | None = None) -> None:
        """Ingests until `stop` is set, `duration` seconds pass (0: forever) or the room
        closes; IngestError for a bad URL, a source that cannot be read, or a refused join."""
        stop = stop or asyncio.Event()
        try:
            info = await self.source.open()
            self.source.start()  # reading now; nothing is kept until the tracks are sent
            self.client = RoomClient(self.server_url, self.token)
            try:
                await self.client.connect(self.room)
                names = [{"source": "microphone", "name": "rtsp audio"}] if self.source.audio else []
                names.append({"source": "camera", "name": "rtsp camera"})
                codec = "H264" if info.passthrough else "VP8"
                self.publication = await self.client.publish(self.source.tracks, video_codec=codec, sources=names)
                await self.publication.wait_connected()
            except (ClientError, TimeoutError) as exc:
                code, message = (exc.code, exc.message) if isinstance(exc, ClientError) else ("timeout", str(exc))
                raise IngestError(code, message) from exc
            if not info.passthrough:
                log.info("%s video is %s (profile %s): decoding it and publishing VP8", redact(self.source.url), info.codec, info.profile)
            self.emit({
                "event": "ingesting", "source": redact(self.source.url), "room": self.client.joined["room"]["name"],
                "participant_id": self.client.participant_id, "codec": info.codec, "profile": info.profile,
                "passthrough": info.passthrough, "published_codec": codec, "width": info.width, "height": info.height,
                "audio": info.audio,
            })
            self.ingesting.set()
            await self._until(stop, duration)
        finally:
            await self.source.close()
            if self.client is not None:
                await self.client.leave()
            if self.ingesting.is_set():
                self.emit({"event": "stopped", **self.status()})

    async def _until(self, stop: asyncio.Event, duration: float) -> None:
        assert self.client is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + duration if duration > 0 else None
        closed = self.client.closed
        while not stop.is_set():
            timeout = self.stats_interval_s if end is None else min(self.stats_interval_s, end - loop.time())
            if timeout <= 0:
                return
            waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(closed.wait())}
            _, pending = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if closed.is_set():
                raise IngestError("room_closed", self.client.close_reason or "the room connection closed")
            if self.source.failure is not None:
                raise IngestError("internal", f"the RTSP reader failed: {self.source.failure!r}")
            if not stop.is_set():
                self.emit({"event": "stats", **self.status()})
