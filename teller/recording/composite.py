"""The composite replay file of a recorded session: one MP4 (H.264 + AAC) from per-track segments.

Recording never transcodes; compliance replay wants one file a browser can play. This
module is the offline step between the two and runs in a worker process
(`build_composite` is a module-level function over plain frozen dataclasses, so a
`ProcessPoolExecutor` can pickle the call).

Invariants:
- Streaming: after one demux-only pass that finds each clip's extent, a clip is opened
  for decoding only when the timeline reaches it and closed when it ends; video keeps at
  most two decoded frames per open clip, audio is mixed 1024 samples at a time. Memory
  does not grow with the session's length.
- A clip that stops decoding (a segment cut short by a crash) counts up to its last good
  frame and never fails the composite.
- The timeline runs from the earliest `start_wall` to the last readable moment of any
  clip. Video is resampled to the output rate by holding/dropping frames (the latest frame
  at or before each output instant), never by interpolation.
- Composition happens in yuv420p planes, the encoder's own format: a decoded frame is
  scaled once, when it is first shown, and no output frame is converted from RGB.
- Every output frame carries the watermark (session id and wall clock in the bank's zone).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import logging
import math
import os
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageDraw, ImageFont

from ..errors import Unprocessable

log = logging.getLogger("teller.recording.composite")

AUDIO_RATE = 48_000
AUDIO_BLOCK = 1024  # one AAC frame
# Gaps shorter than this between consecutive decoded audio frames are timestamp rounding
# (WebM stores milliseconds), not silence; longer ones (DTX, lost packets) are kept.
AUDIO_SNAP_SAMPLES = AUDIO_RATE // 100

# A segment boundary (rotation, node move) leaves a gap of a few frames between a
# participant's clips; holding the last frame that long avoids a dark flash in the tile.
GAP_HOLD_S = 0.2

BACKGROUND_RGB = (24, 26, 31)
CARD_RGB = (36, 39, 46)

# CJK-capable fonts first: labels carry names such as "Agent 王丽".
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)

_DECODE_ERRORS = (av.FFmpegError, EOFError, OSError, ValueError)


class CompositeEmpty(Unprocessable):
    code = "composite_empty"


@dataclass(frozen=True)
class Clip:
    path: Path
    kind: str  # "audio" | "video"
    participant_id: str
    label: str
    start_wall: float  # epoch seconds of the clip's pts 0


@dataclass(frozen=True)
class CompositeOptions:
    session_id: str
    layout: str = "side_by_side"  # or "pip"
    height: int = 360
    fps: int = 15
    utc_offset_minutes: int = 480


@dataclass
class CompositeResult:
    duration_s: float
    video_frames: int
    audio_clips: int
    video_clips: int
    encode_seconds: float
    width: int
    height: int


def build_composite(clips: list[Clip], out: Path, options: CompositeOptions) -> CompositeResult:
    """Builds the replay MP4 at `out` (written to a temp file beside it, then renamed).

    CPU-bound and synchronous: run it in a worker process. Raises `CompositeEmpty` when
    no clip has a readable frame.
    """
    started = time.perf_counter()
    if options.layout not in ("side_by_side", "pip"):
        raise ValueError(f"unknown layout {options.layout!r}")
    if options.fps < 1 or options.height < 16:
        raise ValueError("fps must be >= 1 and height >= 16")
    placed = _place(clips)
    if not placed:
        raise CompositeEmpty("no clip of the session has a readable stream")
    t0 = min(p.clip.start_wall for p in placed)
    duration = max(p.end for p in placed) - t0
    videos = [p for p in placed if p.clip.kind == "video"]
    audios = [p for p in placed if p.clip.kind == "audio"]

    participants: dict[str, list[_Placed]] = {}
    for p in sorted(videos, key=lambda p: p.start):
        participants.setdefault(p.clip.participant_id, []).append(p)
    width, height, rects = _layout(len(participants), options.layout, _even(options.height))
    labels = {p.clip.participant_id: p.clip.label for p in reversed(placed)}
    feeds = [
        _VideoFeed(group, t0, _Tile(rect, labels[pid], small=options.layout == "pip" and i > 0))
        for i, ((pid, group), rect) in enumerate(zip(participants.items(), rects, strict=True))
    ]
    background = _Planes.solid(width, height, BACKGROUND_RGB)
    if not feeds:
        names = list(dict.fromkeys(labels[p.clip.participant_id] for p in audios))
        _name_card(width, height, names).blend(background, 0, 0)
    canvas = _Canvas(background, rects)
    watermark = _Watermark(options.session_id, options.utc_offset_minutes, height)
    mixer = _AudioMixer(audios, t0)

    frames = max(1, math.ceil(duration * options.fps - 1e-6))
    samples = round(duration * AUDIO_RATE)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        with av.open(str(tmp), mode="w", format="mp4", container_options={"movflags": "+faststart"}) as container:
            vstream = container.add_stream("libx264", rate=options.fps)
            vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
            vstream.codec_context.gop_size = 2 * options.fps
            vstream.codec_context.options = {"preset": "veryfast", "crf": "26"}
            # Tagged BT.601 limited range: what VP8 carries and what the overlays are converted
            # with, so that players do not guess BT.709 and shift the colours.
            vstream.codec_context.color_range = 1  # AVCOL_RANGE_MPEG
            vstream.codec_context.colorspace = 6  # AVCOL_SPC_SMPTE170M
            vstream.codec_context.color_primaries = 6  # AVCOL_PRI_SMPTE170M
            vstream.codec_context.color_trc = 6  # AVCOL_TRC_SMPTE170M
            astream = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
            astream.codec_context.bit_rate = 96_000
            audio_pos = 0
            for i in range(frames):
                t = i / options.fps
                tiles = [(feed.at(t), feed.tile.rect) for feed in feeds]
                frame = canvas.compose(tiles, watermark.at(t0 + t), watermark.margin)
                frame.pts = i
                container.mux(vstream.encode(frame))
                # Audio kept abreast of video, so the muxer interleaves without buffering much.
                until = min(samples, round((i + 1) * AUDIO_RATE / options.fps))
                while audio_pos < until:
                    n = min(AUDIO_BLOCK, until - audio_pos)
                    container.mux(astream.encode(_audio_frame(mixer.mix(audio_pos, n), audio_pos)))
                    audio_pos += n
            while audio_pos < samples:
                n = min(AUDIO_BLOCK, samples - audio_pos)
                container.mux(astream.encode(_audio_frame(mixer.mix(audio_pos, n), audio_pos)))
                audio_pos += n
            container.mux(vstream.encode(None))
            container.mux(astream.encode(None))
        os.replace(tmp, out)
    finally:
        for feed in feeds:
            feed.close()
        mixer.close()
        tmp.unlink(missing_ok=True)
    return CompositeResult(
        duration_s=duration,
        video_frames=frames,
        audio_clips=len(audios),
        video_clips=len(videos),
        encode_seconds=time.perf_counter() - started,
        width=width,
        height=height,
    )


# -- where each clip lies on the timeline ---------------------------------------------------


@dataclass(frozen=True)
class _Placed:
    clip: Clip
    start: float  # wall seconds of the first packet
    end: float  # wall seconds where the last readable packet ends


def _place(clips: list[Clip]) -> list[_Placed]:
    """Demuxes (never decodes) every clip to learn its readable extent, so the timeline
    is known before encoding starts; clips without a readable packet are left out."""
    placed = []
    for clip in clips:
        if clip.kind not in ("audio", "video"):
            raise ValueError(f"clip kind must be audio or video, not {clip.kind!r}")
        extent = _extent(clip.path, clip.kind)
        if extent is None:
            log.warning("composite: no readable %s in %s", clip.kind, clip.path)
            continue
        placed.append(_Placed(clip, clip.start_wall + extent[0], clip.start_wall + extent[1]))
    return placed


def _extent(path: Path, kind: str) -> tuple[float, float] | None:
    first = last_end = None
    step = 0.0
    try:
        with av.open(str(path)) as container:
            streams = container.streams.video if kind == "video" else container.streams.audio
            if not streams:
                return None
            stream = streams[0]
            tb = stream.time_base or Fraction(1, 1000)
            previous = None
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                t = float(packet.pts * tb)
                if previous is not None and t != previous:
                    # The frame interval, for packets without a duration (B-frames reorder pts).
                    step = min(step or math.inf, abs(t - previous))
                previous = t
                end = t + (float(packet.duration * tb) if packet.duration else step)
                first = t if first is None else min(first, t)
                last_end = end if last_end is None else max(last_end, end)
    except _DECODE_ERRORS as e:
        log.info("composite: %s readable up to %s s (%s)", path, last_end, e)
    if first is None or last_end is None:
        return None
    return max(0.0, first), max(last_end, first + step)


# -- video ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rect:
    x: int
    y: int
    w: int
    h: int


def _even(x: float) -> int:
    return int(x) // 2 * 2


def _even_size(x: float) -> int:
    return max(2, _even(x))


def _layout(tiles: int, layout: str, height: int) -> tuple[int, int, list[_Rect]]:
    """Output size and one rect per tile; every coordinate even, as 4:2:0 chroma needs."""
    if tiles == 0:
        return _even_size(height * 16 / 9), height, []
    if layout == "pip":
        width = _even_size(height * 16 / 9)
        rects = [_Rect(0, 0, width, height)]
        sh = _even_size(height / 4)
        sw = _even_size(sh * 16 / 9)
        margin = _even_size(height / 30)
        per_row = max(1, (width - margin) // (sw + margin))
        for k in range(tiles - 1):
            row, col = divmod(k, per_row)
            rects.append(_Rect(width - (col + 1) * (sw + margin), height - (row + 1) * (sh + margin), sw, sh))
        return width, height, rects
    cols = min(tiles, 3)
    rows = math.ceil(tiles / cols)
    th = _even_size(height / rows)
    tw = _even_size(th * 16 / 9)
    width = cols * tw
    rects = []
    for k in range(tiles):
        row, col = divmod(k, cols)
        in_row = min(cols, tiles - row * cols)
        x0 = _even((width - in_row * tw) / 2) if in_row < cols else 0
        rects.append(_Rect(x0 + col * tw, row * th, tw, th))
    return width, height, rects


@dataclass
class _Planes:
    """An I420 picture as three numpy views (luma full size, chroma halved)."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @classmethod
    def solid(cls, w: int, h: int, rgb: tuple[int, int, int]) -> _Planes:
        y, u, v = _yuv(rgb)
        return cls(
            np.full((h, w), y, np.uint8),
            np.full((h // 2, w // 2), u, np.uint8),
            np.full((h // 2, w // 2), v, np.uint8),
        )

    @classmethod
    def of_frame(cls, frame: av.VideoFrame) -> _Planes:
        """Views into a yuv420p frame's buffers (no copy), trimmed of line padding."""
        w, h = frame.width, frame.height
        views = []
        for plane, (pw, ph) in zip(frame.planes, ((w, h), (w // 2, h // 2), (w // 2, h // 2)), strict=True):
            views.append(np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)[:ph, :pw])
        return cls(*views)

    def copy(self) -> _Planes:
        return _Planes(self.y.copy(), self.u.copy(), self.v.copy())

    def put(self, src: _Planes, x: int, y: int) -> None:
        h, w = src.y.shape
        self.y[y : y + h, x : x + w] = src.y
        self.u[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = src.u
        self.v[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = src.v


def _yuv(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """BT.601 limited range: swscale's default, and what the output is tagged with."""
    r, g, b = rgb
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return round(y), round(u), round(v)


class _Overlay:
    """An RGBA image prepared once for repeated alpha blending onto I420 planes."""

    def __init__(self, image: Image.Image) -> None:
        w, h = _even_size(image.width + 1), _even_size(image.height + 1)
        if (w, h) != image.size:
            padded = Image.new("RGBA", (w, h), (0, 0, 0, 0))
            padded.paste(image, (0, 0))
            image = padded
        rgba = np.asarray(image)
        yuv = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba[..., :3]), format="rgb24").reformat(format="yuv420p")
        planes = _Planes.of_frame(yuv)
        alpha = rgba[..., 3].astype(np.uint16)
        alpha_c = (alpha[0::2, 0::2] + alpha[1::2, 0::2] + alpha[0::2, 1::2] + alpha[1::2, 1::2] + 2) // 4
        self.w, self.h = w, h
        self._inv = (255 - alpha, 255 - alpha_c, 255 - alpha_c)
        self._premul = (
            planes.y.astype(np.uint16) * alpha,
            planes.u.astype(np.uint16) * alpha_c,
            planes.v.astype(np.uint16) * alpha_c,
        )

    def blend(self, dst: _Planes, x: int, y: int) -> None:
        for plane, premul, inv, (px, py) in zip(
            (dst.y, dst.u, dst.v), self._premul, self._inv, ((x, y), (x // 2, y // 2), (x // 2, y // 2)), strict=True
        ):
            ph, pw = premul.shape
            ph, pw = min(ph, plane.shape[0] - py), min(pw, plane.shape[1] - px)
            if ph <= 0 or pw <= 0:
                continue
            region = plane[py : py + ph, px : px + pw]
            mixed = (premul[:ph, :pw] + region * inv[:ph, :pw] + 127) // 255
            region[...] = mixed


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in FONT_CANDIDATES:
        if Path(path).exists():
            try:
                return ImageFont.truetype(path, size)
            except OSError:
                continue
    return ImageFont.load_default(size=size)


def _text_box(text: str, size: int, box_alpha: int = 150) -> Image.Image:
    """White text on a semi-transparent dark box."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    if isinstance(font, ImageFont.FreeTypeFont):
        # The font's line height, not the text's: labels of any script get the same box.
        ascent, descent = font.getmetrics()
        top, bottom = 0, ascent + descent
    pad = max(3, size // 3)
    image = Image.new("RGBA", (int(right - left) + 2 * pad, int(bottom - top) + 2 * pad), (0, 0, 0, box_alpha))
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=font, fill=(255, 255, 255, 255))
    return image


def _name_card(width: int, height: int, names: list[str]) -> _Overlay:
    """The picture of a session without video: who was heard."""
    size = max(12, height // 14)
    font = _font(size)
    image = Image.new("RGBA", (width, height), (*CARD_RGB, 255))
    draw = ImageDraw.Draw(image)
    lines = ["Audio only", *names]
    step = int(size * 1.6)
    y = (height - step * len(lines)) // 2
    for line in lines:
        left, _, right, _ = font.getbbox(line)
        draw.text(((width - (right - left)) // 2, y), line, font=font, fill=(230, 230, 230, 255))
        y += step
    return _Overlay(image)


class _Tile:
    """A participant's fixed place in the frame: a dark card with the label until video shows."""

    def __init__(self, rect: _Rect, label: str, small: bool) -> None:
        self.rect = rect
        size = max(10, rect.h // (8 if small else 20))
        self._label = _Overlay(_text_box(label, size))
        margin = _even(max(2, rect.h // 40))
        self._label_at = (margin, max(0, _even(rect.h - self._label.h - margin)))
        self.empty = _Planes.solid(rect.w, rect.h, BACKGROUND_RGB)
        self._label.blend(self.empty, *self._label_at)
        self._blank = _Planes.solid(rect.w, rect.h, BACKGROUND_RGB)
        # One reformatter keeps its scaler between frames: a new one per frame costs
        # 1-2 ms of set-up, about five times the scaling itself.
        self._scaler = VideoReformatter()
        self._fit: dict[tuple[int, int], tuple[int, int, int, int]] = {}

    def compose(self, frame: av.VideoFrame) -> _Planes:
        """The tile showing `frame`, letterboxed; scaled here, so only frames shown are scaled."""
        sw, sh, x, y = self._fit_of(frame.width, frame.height)
        scaled = self._scaler.reformat(frame, sw, sh, format="yuv420p", interpolation="AREA", threads=1)
        image = self._blank.copy()
        image.put(_Planes.of_frame(scaled), x, y)
        self._label.blend(image, *self._label_at)
        return image

    def _fit_of(self, fw: int, fh: int) -> tuple[int, int, int, int]:
        fit = self._fit.get((fw, fh))
        if fit is None:
            scale = min(self.rect.w / fw, self.rect.h / fh)
            sw = min(self.rect.w, _even_size(fw * scale + 0.5))
            sh = min(self.rect.h, _even_size(fh * scale + 0.5))
            fit = self._fit[(fw, fh)] = (sw, sh, _even((self.rect.w - sw) / 2), _even((self.rect.h - sh) / 2))
        return fit


class _ClipFrames:
    """One video clip decoded on demand; `advance(t)` moves to the latest frame at or before t."""

    def __init__(self, placed: _Placed, t0: float) -> None:
        self.end = placed.end - t0
        self._offset = placed.clip.start_wall - t0
        self._frames = self._decode(placed.clip.path)
        self._next: tuple[float, av.VideoFrame] | None = None
        self.current: tuple[float, av.VideoFrame] | None = None
        self.done = False
        self._pull()

    def advance(self, t: float) -> None:
        while self._next is not None and self._next[0] <= t:
            self.current = self._next
            self._pull()

    def _pull(self) -> None:
        self._next = next(self._frames, None)
        if self._next is None:
            self.done = True

    def _decode(self, path: Path) -> Generator[tuple[float, av.VideoFrame], None, None]:
        try:
            container = av.open(str(path))
        except _DECODE_ERRORS as e:
            log.warning("composite: cannot open %s: %s", path, e)
            return
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = float(stream.time_base or Fraction(1, 1000))
            try:
                for packet in container.demux(stream):
                    for frame in packet.decode():
                        if frame.pts is not None:
                            yield self._offset + frame.pts * tb, frame
            except _DECODE_ERRORS as e:
                log.info("composite: %s stops decoding: %s", path, e)

    def close(self) -> None:
        self._frames.close()


class _VideoFeed:
    """What one participant's tile shows over time, across that participant's clips."""

    def __init__(self, clips: list[_Placed], t0: float, tile: _Tile) -> None:
        self.tile = tile
        self._pending = sorted(clips, key=lambda p: p.start)
        self._t0 = t0
        self._active: list[_ClipFrames] = []
        self._shown: av.VideoFrame | None = None
        self._image = tile.empty

    def at(self, t: float) -> _Planes:
        while self._pending and self._pending[0].start - self._t0 <= t:
            self._active.append(_ClipFrames(self._pending.pop(0), self._t0))
        best: tuple[float, av.VideoFrame] | None = None
        for clip in list(self._active):
            clip.advance(t)
            if clip.done and t >= clip.end + GAP_HOLD_S:
                clip.close()
                self._active.remove(clip)
                continue
            # A reconnect may overlap the segment it replaces: the newest frame wins.
            if clip.current is not None and t < clip.end + GAP_HOLD_S and (best is None or clip.current[0] > best[0]):
                best = clip.current
        if best is None:
            self._shown, self._image = None, self.tile.empty
        elif best[1] is not self._shown:
            self._shown, self._image = best[1], self.tile.compose(best[1])
        return self._image

    def close(self) -> None:
        for clip in self._active:
            clip.close()
        self._active.clear()


class _Canvas:
    """Builds each output frame in a fresh VideoFrame's own buffers: no full-frame copy,
    and no buffer is reused while the encoder may still hold it for lookahead."""

    def __init__(self, background: _Planes, rects: list[_Rect]) -> None:
        self.height, self.width = background.y.shape
        self._background = background
        # Side-by-side tiles never overlap and pip's first tile is the whole frame.
        self._covered = sum(r.w * r.h for r in rects) >= self.width * self.height or any(
            (r.w, r.h) == (self.width, self.height) for r in rects
        )

    def compose(self, tiles: list[tuple[_Planes, _Rect]], overlay: _Overlay, at: int) -> av.VideoFrame:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        planes = _Planes.of_frame(frame)
        if not self._covered:
            planes.put(self._background, 0, 0)
        for image, rect in tiles:
            planes.put(image, rect.x, rect.y)
        overlay.blend(planes, at, at)
        return frame


class _Watermark:
    """Session id and wall clock, rendered once per second of wall time."""

    def __init__(self, session_id: str, utc_offset_minutes: int, height: int) -> None:
        self._session_id = session_id
        self._zone = datetime.timezone(datetime.timedelta(minutes=utc_offset_minutes))
        sign = "+" if utc_offset_minutes >= 0 else "-"
        hours, minutes = divmod(abs(utc_offset_minutes), 60)
        self._suffix = f"{sign}{hours:02d}:{minutes:02d}"
        self._size = max(11, round(height / 22))
        self.margin = _even(max(4, height // 45))
        self._second: int | None = None
        self._overlay: _Overlay | None = None

    def text(self, wall: float) -> str:
        stamp = datetime.datetime.fromtimestamp(math.floor(wall), self._zone).strftime("%Y-%m-%d %H:%M:%S")
        return f"{self._session_id}  {stamp} {self._suffix}"

    def at(self, wall: float) -> _Overlay:
        second = math.floor(wall)
        if self._overlay is None or second != self._second:
            self._second, self._overlay = second, _Overlay(_text_box(self.text(wall), self._size, box_alpha=120))
        return self._overlay


# -- audio ------------------------------------------------------------------------------------


class _ClipPcm:
    """One audio clip as (timeline sample index, mono float32) pieces, decoded on demand."""

    def __init__(self, placed: _Placed, t0: float) -> None:
        self.start = round((placed.start - t0) * AUDIO_RATE)
        self._offset = placed.clip.start_wall - t0
        self._pieces = self._decode(placed.clip.path)
        self._piece: tuple[int, np.ndarray] | None = None
        self.done = False

    def add_into(self, out: np.ndarray, start: int) -> None:
        """Adds this clip's samples falling in [start, start + len(out))."""
        stop = start + len(out)
        while not self.done:
            if self._piece is None:
                self._piece = next(self._pieces, None)
                if self._piece is None:
                    self.done = True
                    return
            pos, pcm = self._piece
            if pos >= stop:
                return
            lo, hi = max(pos, start), min(pos + len(pcm), stop)
            if hi > lo:
                out[lo - start : hi - start] += pcm[lo - pos : hi - pos]
            if pos + len(pcm) > stop:
                return
            self._piece = None

    def _decode(self, path: Path) -> Generator[tuple[int, np.ndarray], None, None]:
        try:
            container = av.open(str(path))
        except _DECODE_ERRORS as e:
            log.warning("composite: cannot open %s: %s", path, e)
            return
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
        expected: int | None = None
        with container:
            stream = container.streams.audio[0]

            def decoded() -> Iterator[av.AudioFrame | None]:
                for packet in container.demux(stream):
                    yield from packet.decode()
                yield None  # flushes the resampler

            try:
                for chunk in decoded():
                    for frame in resampler.resample(chunk):
                        pcm = frame.to_ndarray()[0].astype(np.float32, copy=False)
                        if frame.pts is not None and frame.time_base is not None:
                            pos = round((self._offset + float(frame.pts * frame.time_base)) * AUDIO_RATE)
                            if expected is not None and abs(pos - expected) <= AUDIO_SNAP_SAMPLES:
                                pos = expected
                        else:
                            pos = expected if expected is not None else self.start
                        yield pos, pcm
                        expected = pos + len(pcm)
            except _DECODE_ERRORS as e:
                log.info("composite: %s stops decoding: %s", path, e)

    def close(self) -> None:
        self._pieces.close()


class _AudioMixer:
    """Sums the clips block by block; only clips overlapping the block are open."""

    def __init__(self, clips: list[_Placed], t0: float) -> None:
        self._pending = sorted(clips, key=lambda p: p.start)
        self._t0 = t0
        self._active: list[_ClipPcm] = []

    def mix(self, start: int, n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        while self._pending and round((self._pending[0].start - self._t0) * AUDIO_RATE) < start + n:
            self._active.append(_ClipPcm(self._pending.pop(0), self._t0))
        for clip in list(self._active):
            clip.add_into(out, start)
            if clip.done:
                clip.close()
                self._active.remove(clip)
        return np.clip(out, -1.0, 1.0, out=out)

    def close(self) -> None:
        for clip in self._active:
            clip.close()
        self._active.clear()


def _audio_frame(pcm: np.ndarray, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="fltp", layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = pts
    frame.time_base = Fraction(1, AUDIO_RATE)
    return frame


def build_composite_at_low_priority(clips: list[Clip], out: Path, options: CompositeOptions) -> dict[str, Any]:
    """The entry point of the finaliser's worker process: niced, so live calls on the
    same machine keep the CPU they need."""
    with contextlib.suppress(OSError):
        os.nice(10)
    return dataclasses.asdict(build_composite(clips, out, options))
