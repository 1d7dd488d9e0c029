"""Lower quality tiers: one shared re-encode per tier, for subscribers who need one.

A subscriber whose downlink cannot carry a publisher's video moves to a tier; the
rest stay on the transcode-free packet path. The publication is decoded once (the
stage tap) and each tier encodes once, for every subscriber on it. A TierEncoder
offers the same source interface a DownTrack uses on a Publication (attach, detach,
waiting, history_packet, request_keyframe, recent_keyframe), so a DownTrack can hold
either.

Scaling and encoding run in one thread per tier, never on the event loop; the loop
only stores the packets in the NACK history and hands them to the DownTracks.
Timestamps are the publisher's RTP timestamps, so its sender reports stay valid.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import aiortc.codecs
import av
from av.video.frame import PictureType

from .rtp import HEADER, keyframe_detector
from .track import packets_since

if TYPE_CHECKING:
    from .stages.base import FrameStream

log = logging.getLogger("teller.sfu.tiers")

VIDEO_TIME_BASE = Fraction(1, 90000)
SUPPORTED = frozenset({"video/vp8", "video/h264"})
MIN_SIDE = 16
KEYFRAME_MIN_INTERVAL_S = 0.5
IDLE_GRACE_S = 5.0
# A timestamp this far behind the last one is a new timeline, not a late frame.
TIMELINE_RESET_TICKS = 90000 * 2
NOMINAL_FRAME_TICKS = 3000


@dataclass(frozen=True)
class TierSpec:
    """One rung of the ladder; a tier is known by its name."""

    name: str
    scale: float  # of the source width and height
    bitrate: int  # bits per second
    fps: float  # at most; frames beyond it are skipped

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 1:
            raise ValueError(f"tier {self.name!r}: scale must be in (0, 1], not {self.scale}")
        if self.bitrate <= 0 or self.fps <= 0:
            raise ValueError(f"tier {self.name!r}: bitrate and fps must be positive")

    def size(self, width: int, height: int) -> tuple[int, int]:
        """Output size for a source size: scaled, rounded down to even, at least 16."""
        return (
            max(MIN_SIDE, int(width * self.scale) & ~1),
            max(MIN_SIDE, int(height * self.scale) & ~1),
        )


def _make_encoder(codec: Any, bitrate: int) -> Any:
    """aiortc's encoder for `codec`, at `bitrate` even where aiortc would clamp it.

    aiortc clamps its target (VP8 250k-1.5M, H.264 500k-3M bps) for a camera it
    owns; a low tier exists to go below that. The setter is all that is in the way:
    the encoder builds its codec from the private value, and libvpx/x264 take any.
    """
    factory = getattr(aiortc.codecs.get_encoder, "__wrapped__", aiortc.codecs.get_encoder)
    encoder = factory(codec)
    encoder.target_bitrate = bitrate
    if encoder.target_bitrate != bitrate:
        for cls in type(encoder).__mro__:
            private = f"_{cls.__name__}__target_bitrate"
            if hasattr(encoder, private):
                setattr(encoder, private, bitrate)
                break
    return encoder


def _copy(frame: av.VideoFrame) -> av.VideoFrame:
    """A private copy of a yuv420p frame: the encoder mutates the frame it is given."""
    return av.VideoFrame.from_numpy_buffer(frame.to_ndarray(), format="yuv420p")


class TierEncoder:
    """One tier of one publication: decoded frames in, RTP to every DownTrack on it."""

    kind = "video"

    def __init__(
        self,
        publication: Any,
        spec: TierSpec,
        frames: FrameStream[av.VideoFrame],
        *,
        history_packets: int = 512,
        replay_max_age_s: float = 0.5,
        idle_grace_s: float = IDLE_GRACE_S,
        on_release: Callable[[TierEncoder], None] | None = None,
        scale_lock: threading.Lock | None = None,
    ) -> None:
        if publication.kind != "video" or publication.codec.mimeType.lower() not in SUPPORTED:
            raise ValueError(f"no tier encoder for {publication.kind} {publication.codec.mimeType}")
        self.publication = publication
        self.spec = spec
        self.frames = frames
        self.waiting = 0
        self.closed = False
        self.finished = False  # the frames ended: the publication is gone
        self.width = 0
        self.height = 0
        self.frames_in = 0
        self.frames_skipped = 0
        self.frames_idle = 0
        self.frames_encoded = 0
        self.keyframes = 0
        self.packets = 0
        self.octets = 0
        self.encode_seconds = 0.0
        self.encode_errors = 0
        # aiortc's VP8 encoder returns the frame's timestamp after a round trip through
        # 1/1000000 that can lose a tick; the source's is used, mismatches are counted.
        self.timestamps_corrected = 0
        self._loop = asyncio.get_running_loop()
        self._codec = publication.codec
        self._payload_type = publication.payload_type
        self._detector = keyframe_detector(publication.codec.mimeType)
        self._ssrc = random.randrange(1, 1 << 32)
        self._downtracks: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        self._on_release = on_release
        self._idle_grace = idle_grace_s
        self._idle_timer: asyncio.TimerHandle | None = None
        self._replay_max_age = replay_max_age_s
        size = 1 << max(6, (history_packets - 1).bit_length())
        self._history: list[bytes | None] = [None] * size
        self._history_mask = size - 1
        self._max_seq = -1
        self.last_keyframe_seq: int | None = None
        self.last_keyframe_at = -1e9
        # Keyframe requests cross threads as two counters: the loop only raises
        # `_keyframes_requested`, the encode thread only copies it to `_served`.
        self._keyframes_requested = 0
        self._keyframes_served = 0
        self._last_keyframe_request = -1e9
        self._keyframe_timer: asyncio.TimerHandle | None = None
        # Owned by the encode thread.
        self._encoder: Any = None
        self._seq = random.randrange(0x10000)
        self._retry_keyframe = False
        self._scale_lock = scale_lock or threading.Lock()
        # Owned by the loop: the fps cap and the unwrapped timeline the encoder sees.
        self._last_ts: int | None = None
        self._ext_ts = 0
        self._next_due: float | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"tier-{publication.id}-{spec.name}")

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None and not self.closed:
            self._task = asyncio.create_task(self._run(), name=f"tier:{self.publication.id}:{self.spec.name}")

    async def close(self) -> None:
        """Stop encoding and free the encoder (in its own thread); the stream is not ours."""
        if self.closed:
            return
        self.closed = True
        for timer in (self._idle_timer, self._keyframe_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._keyframe_timer = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._end_downtracks()
        # Queued behind any encode still running: the encoder dies in the thread it lived in.
        await self._loop.run_in_executor(self._executor, self._release_encoder)
        self._executor.shutdown(wait=False)
        self._history = [None] * len(self._history)
        log.info("tier encoder closed", extra={"track_id": self.publication.id, "tier": self.spec.name})

    def _end_downtracks(self) -> None:
        """Once the publication is over, tell the DownTracks still here; else just let go."""
        downtracks, self._downtracks = self._downtracks, []
        if getattr(self.publication, "ended", False):
            for downtrack in downtracks:
                downtrack.publication_ended()

    async def _run(self) -> None:
        loop = self._loop
        try:
            async for frame in self.frames:
                self.frames_in += 1
                ts = frame.pts & 0xFFFFFFFF
                ext = self._unwrap(ts)
                if ext is None or not self._due(ext):
                    self.frames_skipped += 1
                    continue
                if not self._downtracks:
                    self.frames_idle += 1  # in the grace period: kept, but idle
                    continue
                result = await loop.run_in_executor(self._executor, self._encode, frame, ts, ext)
                if result is not None:
                    self._send(*result)
        finally:
            if not self.closed:
                self.finished = True
                self._end_downtracks()
                if self._on_release is not None:
                    self._on_release(self)

    def _unwrap(self, ts: int) -> int | None:
        """The timestamp on a timeline that never wraps (libvpx rejects pts going back).

        None for a frame not newer than the last one. A jump far back is the publisher
        restarting its clock: the timeline carries on one frame later.
        """
        last = self._last_ts
        if last is None:
            self._last_ts = self._ext_ts = ts
            return ts
        delta = (ts - last) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        if delta <= 0:
            if delta > -TIMELINE_RESET_TICKS:
                return None
            delta = NOMINAL_FRAME_TICKS
        self._last_ts = ts
        self._ext_ts += delta
        return self._ext_ts

    def _due(self, ext: int) -> bool:
        """The fps cap, by timestamp: a frame is taken once its slot has come.

        The slack (an eighth of a slot) absorbs capture jitter; the next slot never
        trails the frame by more than half a slot, so a pause is not followed by a burst.
        """
        interval = 90000 / self.spec.fps
        due = self._next_due
        if due is not None and ext < due - interval / 8:
            return False
        self._next_due = ext + interval if due is None else max(due + interval, ext + interval / 2)
        return True

    # -- the encode thread ----------------------------------------------------------------

    def _encode(self, frame: av.VideoFrame, ts: int, ext: int) -> tuple[list[bytes], int, int, bool] | None:
        started = time.perf_counter()
        requested = self._keyframes_requested
        force = requested != self._keyframes_served or self._retry_keyframe
        self._keyframes_served = requested
        try:
            width, height = self.spec.size(frame.width, frame.height)
            # The source frame is shared with every consumer of the tap, and reformat
            # briefly rewrites its colour tags: one tier of a publication scales at a time.
            with self._scale_lock:
                out = frame.reformat(width=width, height=height, format="yuv420p")
            if out is frame:
                out = _copy(frame)
            self.width, self.height = width, height
            out.pts = ext
            out.time_base = VIDEO_TIME_BASE
            # A decoded picture type survives reformat (FFmpeg's H.264 decoder marks I
            # frames) and libvpx turns an I into a keyframe: set it, never inherit it.
            out.pict_type = PictureType.I if force else PictureType.NONE
            if self._encoder is None:
                self._encoder = _make_encoder(self._codec, self.spec.bitrate)
            payloads, returned = self._encoder.encode(out, force_keyframe=force)
        except Exception:  # one bad frame must not end the tier: the next is a keyframe
            self.encode_errors += 1
            self._retry_keyframe = True
            if self.encode_errors == 1 or self.encode_errors % 100 == 0:
                log.warning(
                    "tier encode failed",
                    exc_info=True,
                    extra={"track_id": self.publication.id, "tier": self.spec.name, "errors": self.encode_errors},
                )
            return None
        finally:
            self.encode_seconds += time.perf_counter() - started
        self._retry_keyframe = False
        if not payloads:
            return None
        if (returned & 0xFFFFFFFF) != ts:
            self.timestamps_corrected += 1
        first = seq = self._seq
        pt = self._payload_type
        ssrc = self._ssrc
        last = len(payloads) - 1
        packets = []
        for i, payload in enumerate(payloads):
            packets.append(HEADER.pack(0x80, (0x80 | pt) if i == last else pt, seq, ts, ssrc) + payload)
            seq = (seq + 1) & 0xFFFF
        self._seq = seq
        detector = self._detector
        keyframe = detector is not None and any(detector(pkt, 12) for pkt in packets)
        return packets, first, ts, keyframe

    def _release_encoder(self) -> None:
        self._encoder = None

    # -- on the loop: fan-out ---------------------------------------------------------------

    def _send(self, packets: list[bytes], first: int, ts: int, keyframe: bool) -> None:
        self.frames_encoded += 1
        if keyframe:
            self.keyframes += 1
            self.last_keyframe_seq = first
            self.last_keyframe_at = self._loop.time()
        history, mask = self._history, self._history_mask
        downtracks = self._downtracks
        seq = first
        for pkt in packets:
            history[seq & mask] = pkt
            self._max_seq = seq
            for downtrack in downtracks:
                downtrack.write(pkt, seq, ts, keyframe)
            keyframe = False  # only the first packet starts the keyframe
            self.packets += 1
            self.octets += len(pkt) - 12
            seq = (seq + 1) & 0xFFFF

    # -- the source interface of a DownTrack ----------------------------------------------

    def attach(self, downtrack: Any) -> None:
        """A subscriber joins the tier; it gets a keyframe with the next frame.

        Not rate-limited like PLIs: the controller moves subscribers, not the network.
        """
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._downtracks.append(downtrack)
        self._force_keyframe()

    def detach(self, downtrack: Any) -> None:
        if downtrack in self._downtracks:
            self._downtracks.remove(downtrack)
        if not self._downtracks and not (self.closed or self.finished) and self._on_release and not self._idle_timer:
            # Not at once: a subscriber flapping between tiers must not restart it.
            self._idle_timer = self._loop.call_later(self._idle_grace, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if not self._downtracks and not self.closed and self._on_release is not None:
            self._on_release(self)

    @property
    def downtracks(self) -> list[Any]:
        return list(self._downtracks)

    def history_packet(self, seq: int) -> bytes | None:
        pkt = self._history[seq & self._history_mask]
        if pkt is None or ((pkt[2] << 8) | pkt[3]) != seq:
            return None
        return pkt

    def recent_keyframe(self) -> list[bytes] | None:
        """Every packet from the latest keyframe on, if it is recent and all are held."""
        start = self.last_keyframe_seq
        if start is None or self._max_seq < 0 or self.closed:
            return None
        if self._loop.time() - self.last_keyframe_at > self._replay_max_age:
            return None
        return packets_since(self.history_packet, start, self._max_seq, len(self._history) // 2)

    def request_keyframe(self) -> None:
        """A keyframe on a coming frame: at most one per KEYFRAME_MIN_INTERVAL_S.

        Every keyframe costs every subscriber on the tier, so a burst of PLIs makes one.
        """
        if self.closed or self._keyframe_timer is not None or self._keyframe_pending:
            return
        wait = self._last_keyframe_request + KEYFRAME_MIN_INTERVAL_S - self._loop.time()
        if wait <= 0:
            self._force_keyframe()
        else:
            self._keyframe_timer = self._loop.call_later(wait, self._force_keyframe)

    @property
    def _keyframe_pending(self) -> bool:
        return self._keyframes_requested != self._keyframes_served

    def _force_keyframe(self) -> None:
        if self._keyframe_timer is not None:  # a deferred request is answered by this one
            self._keyframe_timer.cancel()
            self._keyframe_timer = None
        if self.closed or self._keyframe_pending:
            return
        self._last_keyframe_request = self._loop.time()
        self._keyframes_requested += 1

    # -- reporting ------------------------------------------------------------------------

    @property
    def frames_dropped(self) -> int:
        """Frames the stream dropped because this tier fell behind."""
        return self.frames.dropped

    def stats(self) -> dict[str, Any]:
        return {
            "tier": self.spec.name,
            "track_id": self.publication.id,
            "width": self.width,
            "height": self.height,
            "bitrate": self.spec.bitrate,
            "fps": self.spec.fps,
            "downtracks": len(self._downtracks),
            "waiting": self.waiting,
            "frames_in": self.frames_in,
            "frames_skipped": self.frames_skipped,
            "frames_idle": self.frames_idle,
            "frames_encoded": self.frames_encoded,
            "frames_dropped": self.frames_dropped,
            "keyframes": self.keyframes,
            "packets": self.packets,
            "octets": self.octets,
            "encode_seconds": round(self.encode_seconds, 4),
            "encode_errors": self.encode_errors,
            "timestamps_corrected": self.timestamps_corrected,
        }


class TierSet:
    """The running tier encoders of one publication, by tier name, made on demand."""

    def __init__(
        self,
        publication: Any,
        open_frames: Callable[[], FrameStream[av.VideoFrame]],
        close_frames: Callable[[FrameStream[av.VideoFrame]], None],
        *,
        idle_grace_s: float = IDLE_GRACE_S,
        history_packets: int = 512,
        replay_max_age_s: float = 0.5,
    ) -> None:
        self.publication = publication
        self._open_frames = open_frames
        self._close_frames = close_frames
        self._idle_grace = idle_grace_s
        self._history_packets = history_packets
        self._replay_max_age = replay_max_age_s
        self._encoders: dict[str, TierEncoder] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # The tiers of one publication scale the same shared frames.
        self._scale_lock = threading.Lock()
        self.closed = False

    def encoder(self, spec: TierSpec) -> TierEncoder:
        """The running encoder for the tier `spec.name`, started if there is none."""
        if self.closed:
            raise RuntimeError("the tier set is closed")
        encoder = self._encoders.get(spec.name)
        if encoder is not None:
            return encoder
        frames = self._open_frames()
        try:
            encoder = TierEncoder(
                self.publication,
                spec,
                frames,
                history_packets=self._history_packets,
                replay_max_age_s=self._replay_max_age,
                idle_grace_s=self._idle_grace,
                on_release=self._released,
                scale_lock=self._scale_lock,
            )
        except Exception:
            self._close_frames(frames)
            raise
        self._encoders[spec.name] = encoder
        encoder.start()
        log.info(
            "tier encoder started",
            extra={"track_id": self.publication.id, "tier": spec.name, "bitrate": spec.bitrate},
        )
        return encoder

    def release_if_idle(self, name: str) -> bool:
        """Close the tier `name` if no DownTrack is on it; True if it was closed."""
        encoder = self._encoders.get(name)
        if encoder is None or encoder.downtracks:
            return False
        self._release(encoder)
        return True

    def _released(self, encoder: TierEncoder) -> None:
        """An encoder's grace period ran out, or its frames ended."""
        if self._encoders.get(encoder.spec.name) is not encoder:
            return
        if encoder.finished or not encoder.downtracks:
            self._release(encoder)

    def _release(self, encoder: TierEncoder) -> None:
        del self._encoders[encoder.spec.name]
        task = asyncio.create_task(self._close_one(encoder))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_one(self, encoder: TierEncoder) -> None:
        try:
            await encoder.close()
        finally:
            self._close_frames(encoder.frames)

    @property
    def encoders(self) -> int:
        return len(self._encoders)

    def get(self, name: str) -> TierEncoder | None:
        return self._encoders.get(name)

    def stats(self) -> list[dict[str, Any]]:
        return [encoder.stats() for encoder in self._encoders.values()]

    async def close(self) -> None:
        self.closed = True
        for encoder in list(self._encoders.values()):
            self._release(encoder)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
