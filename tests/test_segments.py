"""The recorder's RTP-to-Matroska path on its own: real encoders, real packetisers,
packets lost, reordered and wrapped; every file must decode frame for frame."""

from __future__ import annotations

import fractions
import random
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from teller.recording.segments import RecordingWorker, TrackMeta, TrackRecorder

CODECS = {
    "VP8": RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96),
    "H264": RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102,
                                  parameters={"packetization-mode": "1", "profile-level-id": "42e01f"}),
    "opus": RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111),
}


def rtp_packets(codec: str, frames: int, *, ts_start: int = 0, keyframe_every: int = 30) -> list[bytes]:
    """Encoded with aiortc's own encoders and packetisers, as a browser-like peer would."""
    params = CODECS[codec]
    encoder = get_encoder(params)
    out, seq = [], 1000
    for i in range(frames):
        if codec == "opus":
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1920), np.int16), format="s16", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = 48000, i * 960, fractions.Fraction(1, 48000)
        else:
            image = np.random.default_rng(i).integers(0, 255, (240, 320, 3), dtype=np.uint8)  # big: many packets
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=codec != "opus" and i % keyframe_every == 0)
        for j, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=params.payloadType, sequence_number=seq & 0xFFFF,
                               timestamp=(timestamp + ts_start) & 0xFFFFFFFF, ssrc=1, marker=int(j == len(payloads) - 1))
            packet.payload = payload
            out.append(packet.serialize())
            seq += 1
    return out


async def record(tmp_path: Path, codec: str, packets: list[bytes]) -> tuple[TrackRecorder, list[Path]]:
    kind = "audio" if codec == "opus" else "video"
    meta = TrackMeta("RM_t", "room", "ND_t", "PA_t", "who", "Who", "customer", f"TR_{codec}", kind, kind,
                     f"{kind}/{codec}", CODECS[codec].clockRate)
    worker = RecordingWorker(0.02)
    recorder = TrackRecorder(meta, tmp_path, flush_interval_s=0.5, segment_max_s=600, request_keyframe=lambda: None)
    worker.add(recorder)
    for pkt in packets:
        recorder.tap(pkt)
    segments = await worker.finish(recorder)
    worker.stop()
    return recorder, [tmp_path / s.path for s in segments]


def decode(path: Path) -> tuple[str, int, float]:
    with av.open(str(path)) as container:
        stream = container.streams[0]
        pts = [f.pts for f in container.decode(stream) if f.pts is not None]
        return stream.codec_context.name, len(pts), float((pts[-1] - pts[0]) * stream.time_base) if pts else 0.0


@pytest.mark.parametrize("codec", ["VP8", "H264", "opus"])
async def test_every_frame_is_written_and_decodes(tmp_path: Path, codec: str) -> None:
    frames = 60 if codec != "opus" else 150
    recorder, files = await record(tmp_path, codec, rtp_packets(codec, frames, ts_start=0xFFFFFFFF - 40000))
    assert len(files) == 1 and recorder.frames_dropped == 0
    name, decoded, seconds = decode(files[0])
    assert name == {"VP8": "vp8", "H264": "h264", "opus": "opus"}[codec]
    assert decoded == frames  # across a 32-bit RTP timestamp wrap
    assert seconds == pytest.approx((frames - 1) * (0.02 if codec == "opus" else 1 / 30), abs=0.01)


async def test_reordered_packets_are_put_back_and_a_loss_waits_for_the_next_keyframe(tmp_path: Path) -> None:
    packets = rtp_packets("VP8", 60, keyframe_every=30)
    rng = random.Random(7)
    shuffled = list(packets)
    for i in range(5, len(shuffled) - 3, 9):  # local reordering, as networks do
        j = i + rng.randint(1, 3)
        shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
    (tmp_path / "reordered").mkdir()
    recorder, files = await record(tmp_path / "reordered", "VP8", shuffled)
    assert recorder.frames_dropped == 0 and decode(files[0])[1] == 60

    lost_at = len(packets) // 4  # inside the first group of pictures
    recorder, files = await record(tmp_path, "VP8", packets[:lost_at] + packets[lost_at + 1 :])
    _, decoded, _ = decode(files[0])
    # Frames from the loss to the next keyframe are left out (they would not decode).
    assert recorder.frames_dropped > 0 and 30 <= decoded < 60
    assert decoded + recorder.frames_dropped == 60


async def test_a_file_cut_at_any_cluster_still_plays(tmp_path: Path) -> None:
    _, files = await record(tmp_path, "VP8", rtp_packets("VP8", 90))
    data = files[0].read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # as a SIGKILL leaves it: no cues, no size
    name, decoded, seconds = decode(cut)
    assert name == "vp8" and 30 <= decoded < 90 and seconds > 0.9
