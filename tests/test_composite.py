"""The composite replay file, built from real encoded segments and checked by decoding it.

Participants are told apart by colour (video) and tone frequency (audio), so what the
composite shows and plays at a given instant can be read back from the MP4 itself.
"""

from __future__ import annotations

import fractions
import math
import pickle
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from teller.recording.composite import (
    Clip,
    CompositeEmpty,
    CompositeOptions,
    CompositeResult,
    _layout,
    build_composite,
)

T0 = 1_700_000_000.0  # 2023-11-15 06:13:20 +08:00
A_RGB = (210, 40, 40)
B_RGB = (40, 70, 210)
A_HZ, B_HZ = 440.0, 1000.0
HEIGHT, FPS = 180, 10
TILE_W = 320  # 16:9 of HEIGHT


def write_video(path: Path, codec: str, rgb: tuple[int, int, int], seconds: float, fps: int = 12) -> None:
    """A solid colour with a darker square moving across it (so frames really differ)."""
    w, h = 160, 120
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.codec_context.options = {"preset": "ultrafast"}
        base = np.empty((h, w, 3), np.uint8)
        base[...] = rgb
        dark = tuple(c // 2 for c in rgb)
        for i in range(round(seconds * fps)):
            image = base.copy()
            x = (i * 6) % (w - 16)
            image[h - 20 : h - 4, x : x + 16] = dark
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            frame.time_base = fractions.Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_audio(path: Path, hz: float, seconds: float, silent: tuple[float, float] = (0.0, 0.0)) -> None:
    """A tone; packets in `silent` (seconds) are left out, as WebRTC's DTX does."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        n = 960
        for i in range(round(seconds * 50)):
            if silent[0] <= i / 50 < silent[1]:
                continue
            t = (np.arange(n) + i * n) / 48000
            frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * math.pi * hz * t)).astype(np.float32).reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * n
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def truncate(path: Path, keep: float) -> float:
    """Cuts the file as a crash would; returns the time of the last frame that still decodes."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    last = 0.0
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(video=0):
                last = float(frame.time or 0)
        except av.FFmpegError:
            pass
    return last


@dataclass
class Decoded:
    a_video_until: float
    result: CompositeResult
    codecs: list[tuple[str, str]]
    duration: float
    width: int
    frames: list[tuple[float, np.ndarray]]  # (seconds, rgb)
    audio: np.ndarray  # mono float32 at 48 kHz, index = time * 48000
    head: bytes

    def frame_at(self, t: float) -> np.ndarray:
        return min(self.frames, key=lambda f: abs(f[0] - t))[1]

    def spectrum_at(self, t: float, hz: float) -> float:
        """Magnitude at `hz` relative to the strongest component, over 0.2 s around t."""
        window = self.audio[int((t - 0.1) * 48000) : int((t + 0.1) * 48000)]
        mags = np.abs(np.fft.rfft(window * np.hanning(len(window))))
        freqs = np.fft.rfftfreq(len(window), 1 / 48000)
        peak = mags.max()
        return 0.0 if peak < 1e-3 else float(mags[np.abs(freqs - hz) < 15].max() / peak)


def decode(path: Path, result: CompositeResult, a_video_until: float = 0.0) -> Decoded:
    with av.open(str(path)) as container:
        codecs = [(str(s.type), s.codec_context.name) for s in container.streams]
        duration = (container.duration or 0) / 1e6
        frames = [(float(f.time or 0), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    pieces = []
    with av.open(str(path)) as container:
        for f in container.decode(audio=0):
            pieces.append((round(float(f.time or 0) * 48000), f.to_ndarray()[0]))
    audio = np.zeros(max(p + len(a) for p, a in pieces), np.float32)
    for p, a in pieces:
        if p >= 0:
            audio[p : p + len(a)] = a
    return Decoded(a_video_until, result, codecs, duration, frames[0][1].shape[1], frames, audio, path.read_bytes()[:200_000])


def mean_rgb(image: np.ndarray, x: int, y: int, w: int = 40, h: int = 40) -> np.ndarray:
    mean: np.ndarray = image[y : y + h, x : x + w].reshape(-1, 3).mean(axis=0)
    return mean


def close_to(actual: np.ndarray, expected: tuple[int, int, int], tolerance: float = 25) -> bool:
    return bool(np.abs(actual - np.array(expected)).max() <= tolerance)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Decoded:
    """A: video 0-~6 s (a 9 s segment cut to its first two thirds, as a crash leaves it),
    audio 0-6 s. B: video in two segments from 2 s (H.264 .mkv 2-5 s, VP8 .webm 5-7 s),
    audio in two segments 2-4.5 s and 5.5-8 s. The union is 0-8 s."""
    d = tmp_path_factory.mktemp("composite")
    write_video(d / "a.webm", "libvpx", A_RGB, 9.0)
    a_video_until = truncate(d / "a.webm", 2 / 3)
    assert 3 < a_video_until < 8
    write_audio(d / "a-audio.webm", A_HZ, 6.0)
    write_video(d / "b1.mkv", "libx264", B_RGB, 3.0)
    write_video(d / "b2.webm", "libvpx", B_RGB, 2.0)
    write_audio(d / "b-audio1.webm", B_HZ, 2.5)
    write_audio(d / "b-audio2.webm", B_HZ, 2.5)
    clips = [
        Clip(d / "a.webm", "video", "a", "Agent 王丽", T0),
        Clip(d / "a-audio.webm", "audio", "a", "Agent 王丽", T0),
        Clip(d / "b1.mkv", "video", "b", "Customer", T0 + 2),
        Clip(d / "b2.webm", "video", "b", "Customer", T0 + 5),
        Clip(d / "b-audio1.webm", "audio", "b", "Customer", T0 + 2),
        Clip(d / "b-audio2.webm", "audio", "b", "Customer", T0 + 5.5),
    ]
    out = d / "session.mp4"
    result = build_composite(clips, out, CompositeOptions("S-2024-0001", height=HEIGHT, fps=FPS))
    return decode(out, result, a_video_until)


def test_one_h264_and_one_aac_stream_over_the_union_span(session: Decoded) -> None:
    assert sorted(session.codecs) == [("audio", "aac"), ("video", "h264")]
    assert session.duration == pytest.approx(8.0, abs=0.3)
    assert session.result.duration_s == pytest.approx(8.0, abs=0.1)
    assert (session.result.width, session.result.height) == (2 * TILE_W, HEIGHT) == (session.width, HEIGHT)
    assert (session.result.video_clips, session.result.audio_clips) == (3, 3)
    assert len(session.frames) == session.result.video_frames == math.ceil(session.result.duration_s * FPS)


def test_faststart_puts_the_index_before_the_media(session: Decoded) -> None:
    assert 0 <= session.head.find(b"moov") < session.head.find(b"mdat")


def test_each_tile_shows_its_participant_only_while_they_have_video(session: Decoded) -> None:
    centre_a, centre_b = (TILE_W // 2 - 20, HEIGHT // 2 - 20), (TILE_W + TILE_W // 2 - 20, HEIGHT // 2 - 20)
    at1, at4, at6, at7_5 = (session.frame_at(t) for t in (1.0, 4.0, 6.2, 7.5))
    assert close_to(mean_rgb(at1, *centre_a), A_RGB)
    assert mean_rgb(at1, *centre_b).max() < 50  # B has not joined: a dark tile
    assert close_to(mean_rgb(at4, *centre_a), A_RGB)
    assert close_to(mean_rgb(at4, *centre_b), B_RGB)  # the H.264 segment
    assert close_to(mean_rgb(at6, *centre_b), B_RGB)  # the VP8 segment after it
    # A's segment was cut at two thirds of its bytes: used up to its last good frame, then dark.
    assert close_to(mean_rgb(session.frame_at(session.a_video_until - 0.1), *centre_a), A_RGB)
    assert mean_rgb(session.frame_at(session.a_video_until + 0.4), *centre_a).max() < 50
    assert mean_rgb(at7_5, *centre_a).max() < 50
    assert mean_rgb(at7_5, *centre_b).max() < 50


def test_the_mix_has_each_participant_where_they_spoke(session: Decoded) -> None:
    assert session.spectrum_at(1.0, A_HZ) > 0.5
    assert session.spectrum_at(1.0, B_HZ) < 0.05
    assert session.spectrum_at(4.0, A_HZ) > 0.5
    assert session.spectrum_at(4.0, B_HZ) > 0.5
    assert session.spectrum_at(5.0, B_HZ) < 0.05  # B's gap between segments
    assert session.spectrum_at(7.0, B_HZ) > 0.5
    assert session.spectrum_at(7.0, A_HZ) < 0.05
    assert np.abs(session.audio[int(8.2 * 48000) :]).max(initial=0.0) < 0.01


def white_pixels(image: np.ndarray) -> int:
    return int((image.min(axis=2) > 180).sum())


def test_every_frame_is_watermarked_and_tiles_are_labelled(session: Decoded) -> None:
    for t in (0.0, 1.0, 4.0, 7.9):
        image = session.frame_at(t)
        assert white_pixels(image[:20, :240]) > 30  # the watermark's text, top left
        assert white_pixels(image[:20, TILE_W : TILE_W + 240]) == 0  # the same band without it
    at1 = session.frame_at(1.0)
    assert white_pixels(at1[HEIGHT - 25 :, :120]) > 20  # A's label (CJK)
    assert white_pixels(at1[HEIGHT - 25 :, TILE_W : TILE_W + 120]) > 20  # B's label on its empty tile
    # The clock moves: the watermark differs between seconds.
    assert not np.array_equal(session.frame_at(1.0)[:20, :240], session.frame_at(2.0)[:20, :240])


def test_audio_only_session_still_has_a_picture(tmp_path: Path) -> None:
    write_audio(tmp_path / "a.webm", A_HZ, 1.5)
    clips = [Clip(tmp_path / "a.webm", "audio", "a", "Customer 张三", T0)]
    out = tmp_path / "audio-only.mp4"
    # In a worker process, as the recording service runs it.
    with ProcessPoolExecutor(1) as pool:
        result = pool.submit(build_composite, clips, out, CompositeOptions("S2", height=144, fps=5)).result()
    decoded = decode(out, result)
    assert sorted(decoded.codecs) == [("audio", "aac"), ("video", "h264")]
    assert decoded.duration == pytest.approx(1.5, abs=0.3)
    assert (result.video_clips, result.audio_clips, result.width) == (0, 1, 256)
    assert white_pixels(decoded.frames[0][1]) > 30
    assert decoded.spectrum_at(0.7, A_HZ) > 0.5


def test_pip_puts_later_participants_in_a_corner(tmp_path: Path) -> None:
    write_video(tmp_path / "a.webm", "libvpx", A_RGB, 1.0)
    write_video(tmp_path / "b.webm", "libvpx", B_RGB, 1.0)
    clips = [
        Clip(tmp_path / "b.webm", "video", "b", "Customer", T0 + 0.2),
        Clip(tmp_path / "a.webm", "video", "a", "Agent", T0),
    ]
    result = build_composite(clips, tmp_path / "pip.mp4", CompositeOptions("S3", layout="pip", height=180, fps=5))
    decoded = decode(tmp_path / "pip.mp4", result)
    assert (result.width, result.height) == (320, 180)
    image = decoded.frame_at(0.6)
    assert close_to(mean_rgb(image, 60, 60), A_RGB)  # first to appear: full frame
    assert mean_rgb(image, 4, 60, 10, 40).max() < 50  # 4:3 in 16:9: letterboxed
    assert close_to(mean_rgb(image, 320 - 6 - 60, 180 - 6 - 40, 20, 12), B_RGB)  # small, bottom right


def test_audio_gaps_inside_a_clip_stay_silent(tmp_path: Path) -> None:
    write_audio(tmp_path / "dtx.webm", A_HZ, 3.0, silent=(1.0, 2.0))
    clips = [Clip(tmp_path / "dtx.webm", "audio", "a", "A", T0)]
    result = build_composite(clips, tmp_path / "dtx.mp4", CompositeOptions("S6", height=144, fps=5))
    decoded = decode(tmp_path / "dtx.mp4", result)
    assert decoded.duration == pytest.approx(3.0, abs=0.3)
    assert decoded.spectrum_at(0.5, A_HZ) > 0.5
    assert np.abs(decoded.audio[int(1.2 * 48000) : int(1.8 * 48000)]).max() < 0.01
    assert decoded.spectrum_at(2.5, A_HZ) > 0.5


def test_unreadable_clips_are_skipped_and_nothing_readable_is_an_error(tmp_path: Path) -> None:
    write_audio(tmp_path / "a.webm", A_HZ, 1.0)
    (tmp_path / "junk.webm").write_bytes(b"\x1a\x45\xdf\xa3 not really matroska")
    (tmp_path / "empty.mkv").write_bytes(b"")
    good = Clip(tmp_path / "a.webm", "audio", "a", "A", T0)
    junk = [Clip(tmp_path / "junk.webm", "video", "b", "B", T0), Clip(tmp_path / "empty.mkv", "video", "c", "C", T0)]
    result = build_composite([good, *junk], tmp_path / "out.mp4", CompositeOptions("S4", height=144, fps=5))
    assert (result.audio_clips, result.video_clips) == (1, 0)
    with pytest.raises(CompositeEmpty):
        build_composite(junk, tmp_path / "none.mp4", CompositeOptions("S5"))
    assert not (tmp_path / "none.mp4").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_layout_sizes() -> None:
    assert _layout(1, "side_by_side", 360)[:2] == (640, 360)
    assert _layout(3, "side_by_side", 360)[:2] == (1920, 360)
    width, height, rects = _layout(4, "side_by_side", 360)
    assert (width, height) == (960, 360) and rects[3].x == 320 and rects[3].y == 180  # last row centred
    width, _, rects = _layout(3, "pip", 360)
    assert width == 640 and rects[0].w == 640 and rects[1].x > rects[2].x
    assert all(v % 2 == 0 for r in rects for v in (r.x, r.y, r.w, r.h))


def test_arguments_pickle() -> None:
    clip = Clip(Path("/x.webm"), "video", "p", "王丽", T0)
    assert pickle.loads(pickle.dumps((clip, CompositeOptions("S")))) == (clip, CompositeOptions("S"))
