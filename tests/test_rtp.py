"""RTP on raw bytes (teller/sfu/rtp.py) and SDP offers (teller/sfu/negotiation.py).

Packets are built by hand from the RFCs (3550, 8285, 4588, 7741, 6184) and, for the
keyframe detectors, also from real encoder output via aiortc.
"""

from __future__ import annotations

import fractions
import re
import struct
from collections.abc import AsyncIterator, Callable

import av
import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from teller.errors import BadRequest
from teller.sfu.negotiation import MAX_MEDIA_SECTIONS, MAX_SDP_BYTES, announce, parse_offer
from teller.sfu.rtp import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    ExtensionMap,
    ExtensionRewriter,
    h264_keyframe_start,
    is_rtcp,
    keyframe_detector,
    payload_end,
    payload_offset,
    unwrap_rtx,
    vp8_keyframe_start,
    wrap_rtx,
)

# -- packet building ----------------------------------------------------------------------------


def one_byte_block(*elements: tuple[int, bytes], gap: int = 0) -> tuple[int, bytes]:
    """RFC 8285 one-byte-header elements; `gap` zero bytes of padding after each one."""
    body = b"".join(bytes([(ext_id << 4) | (len(value) - 1)]) + value + b"\x00" * gap for ext_id, value in elements)
    return 0xBEDE, body + b"\x00" * (-len(body) % 4)


def two_byte_block(*elements: tuple[int, bytes]) -> tuple[int, bytes]:
    body = b"".join(bytes([ext_id, len(value)]) + value for ext_id, value in elements)
    return 0x1000, body + b"\x00" * (-len(body) % 4)


def rtp(
    payload: bytes = b"",
    *,
    pt: int = 96,
    seq: int = 1000,
    ts: int = 90000,
    ssrc: int = 0x11223344,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    ext: tuple[int, bytes] | None = None,
    padding: int = 0,
) -> bytes:
    """An RTP packet (RFC 3550) with optional CSRCs, extension block and padding."""
    assert len(csrcs) < 16
    first = 0x80 | len(csrcs) | (0x10 if ext else 0) | (0x20 if padding else 0)
    out = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext:
        profile, body = ext
        assert len(body) % 4 == 0
        out += struct.pack("!HH", profile, len(body) // 4) + body
    out += payload
    if padding:
        out += b"\x00" * (padding - 1) + bytes([padding])
    return out


def elements(block: bytes) -> list[tuple[int, bytes]]:
    """Parse a one-byte-header extension block (profile and length included)."""
    assert block[:2] == b"\xbe\xde"
    (words,) = struct.unpack_from("!H", block, 2)
    assert len(block) == 4 + 4 * words
    out, i = [], 4
    while i < len(block):
        b = block[i]
        if b == 0:
            i += 1
            continue
        size = (b & 0x0F) + 1
        out.append((b >> 4, block[i + 1 : i + 1 + size]))
        i += 1 + size
    return out


# -- header arithmetic ---------------------------------------------------------------------------


PAYLOAD = b"\x10\x02\x03\x04\x05"


@pytest.mark.parametrize(
    ("kwargs", "offset"),
    [
        ({}, 12),
        ({"csrcs": (1,)}, 16),
        ({"csrcs": tuple(range(15))}, 72),
        ({"ext": one_byte_block((1, b"0"))}, 12 + 4 + 4),
        ({"ext": one_byte_block((1, b"0"), (3, b"abc"), (5, b"x" * 16))}, 12 + 4 + 24),
        ({"ext": two_byte_block((1, b"mid"))}, 12 + 4 + 8),
        ({"ext": (0xBEDE, b"")}, 16),
        ({"csrcs": (1, 2), "ext": one_byte_block((2, b"\x01\x02\x03"))}, 12 + 8 + 4 + 4),
    ],
)
def test_payload_offset(kwargs: dict, offset: int) -> None:
    pkt = rtp(PAYLOAD, **kwargs)
    assert payload_offset(pkt) == offset
    assert pkt[offset:] == PAYLOAD


@pytest.mark.parametrize("padding", [0, 1, 4, 255])
def test_payload_end(padding: int) -> None:
    pkt = rtp(PAYLOAD, csrcs=(7,), ext=one_byte_block((1, b"0")), padding=padding)
    assert pkt[payload_offset(pkt) : payload_end(pkt)] == PAYLOAD
    assert payload_end(pkt) == len(pkt) - padding


def test_payload_end_ignores_trailing_byte_without_p_bit() -> None:
    pkt = rtp(b"\x01\x02\x03")
    assert payload_end(pkt) == len(pkt)


@pytest.mark.parametrize(("second", "rtcp"), [(200, True), (201, True), (192, True), (223, True), (96, False), (96 | 0x80, False), (111, False), (224, False)])
def test_is_rtcp(second: int, rtcp: bool) -> None:
    assert is_rtcp(bytes([0x80, second]) + b"\x00" * 10) is rtcp


# -- VP8 (RFC 7741) ---------------------------------------------------------------------------------

KEY_HEADER = b"\x10\x02\x00\x9d\x01\x2a"  # VP8 payload header: P bit (0x01) clear, then the start code
DELTA_HEADER = b"\x11\x02\x00"


def vp8_descriptor(
    *,
    start: bool = True,
    pid: int = 0,
    non_ref: bool = False,
    picture_id: int | None = None,
    long_picture_id: bool = False,
    tl0picidx: int | None = None,
    tid: int | None = None,
    keyidx: int | None = None,
) -> bytes:
    """The VP8 payload descriptor: |X|R|N|S|R|PID| then |I|L|T|K|RSV| and its fields."""
    x = 0
    fields = b""
    if picture_id is not None:
        x |= 0x80
        if long_picture_id:
            fields += struct.pack("!H", 0x8000 | (picture_id & 0x7FFF))
        else:
            fields += bytes([picture_id & 0x7F])
    if tl0picidx is not None:
        x |= 0x40
        fields += bytes([tl0picidx])
    if tid is not None or keyidx is not None:
        x |= (0x20 if tid is not None else 0) | (0x10 if keyidx is not None else 0)
        fields += bytes([((tid or 0) << 6) | (keyidx or 0)])
    first = (0x80 if x else 0) | (0x20 if non_ref else 0) | (0x10 if start else 0) | pid
    return bytes([first]) + (bytes([x]) if x else b"") + fields


DESCRIPTOR_SHAPES = {
    "minimal": {},
    "short-picture-id": {"picture_id": 0x45},
    # A 15-bit picture id whose second byte has the low bit set: a parser that skips
    # only one byte would read it as an interframe header.
    "long-picture-id": {"picture_id": 0x1FFF, "long_picture_id": True},
    "long-picture-id-high-bit": {"picture_id": 0x7F81, "long_picture_id": True},
    "tl0picidx": {"tl0picidx": 0x01},
    "tid": {"tid": 1},
    "keyidx": {"keyidx": 1},
    "everything": {"picture_id": 0x1235, "long_picture_id": True, "tl0picidx": 0xFF, "tid": 2, "keyidx": 5},
    "picture-id-and-tl0": {"picture_id": 0x01, "tl0picidx": 0x81},
}


@pytest.mark.parametrize("shape", list(DESCRIPTOR_SHAPES))
def test_vp8_keyframe_vs_interframe(shape: str) -> None:
    descriptor = vp8_descriptor(**DESCRIPTOR_SHAPES[shape])
    key = rtp(descriptor + KEY_HEADER)
    delta = rtp(descriptor + DELTA_HEADER)
    assert vp8_keyframe_start(key, 12) is True
    assert vp8_keyframe_start(delta, 12) is False


def test_vp8_x_byte_with_no_fields() -> None:
    """X set but I, L, T, K all clear: the header follows the X byte directly."""
    assert vp8_keyframe_start(rtp(b"\x90\x00" + KEY_HEADER), 12) is True
    assert vp8_keyframe_start(rtp(b"\x90\x00" + DELTA_HEADER), 12) is False


@pytest.mark.parametrize(
    "kwargs",
    [{"start": False}, {"pid": 1}, {"pid": 7}, {"start": False, "picture_id": 3}, {"pid": 2, "picture_id": 0x100, "long_picture_id": True}],
)
def test_vp8_not_a_partition_start(kwargs: dict) -> None:
    assert vp8_keyframe_start(rtp(vp8_descriptor(**kwargs) + KEY_HEADER), 12) is False


def test_vp8_non_reference_bit_does_not_matter() -> None:
    assert vp8_keyframe_start(rtp(vp8_descriptor(non_ref=True) + KEY_HEADER), 12) is True


def test_vp8_at_payload_offset() -> None:
    pkt = rtp(vp8_descriptor(picture_id=9) + KEY_HEADER, csrcs=(1,), ext=one_byte_block((1, b"0")))
    assert vp8_keyframe_start(pkt, payload_offset(pkt)) is True
    assert vp8_keyframe_start(pkt, 12) is False  # the extension bytes are not a descriptor


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x10",  # descriptor with nothing after it
        b"\x90",  # X set, X byte missing
        b"\x90\x80",  # I set, picture id missing
        b"\x90\x80\x81",  # 15-bit picture id cut short
        b"\x90\x40",  # L set, TL0PICIDX missing
        b"\x90\x20",  # T set, byte missing
    ],
)
def test_vp8_truncated(payload: bytes) -> None:
    assert vp8_keyframe_start(rtp(payload), 12) is False


# -- H.264 (RFC 6184) -----------------------------------------------------------------------------

SPS = b"\x67\x42\xc0\x1f\xda"
PPS = b"\x68\xce\x3c\x80"
IDR = b"\x65\x88\x84\x00"
SLICE = b"\x41\x9a\x02\x00"
SEI = b"\x06\x05\x01\x00"
AUD = b"\x09\xf0"


def stap_a(*nals: bytes) -> bytes:
    return b"\x78" + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def fu_a(nal: bytes, *, start: bool, end: bool = False) -> bytes:
    indicator = (nal[0] & 0xE0) | 28
    header = (0x80 if start else 0) | (0x40 if end else 0) | (nal[0] & 0x1F)
    return bytes([indicator, header]) + nal[1:]


@pytest.mark.parametrize(
    ("payload", "keyframe"),
    [
        (IDR, True),
        (SPS, True),
        (PPS, False),
        (SLICE, False),
        (SEI, False),
        (stap_a(SPS, PPS, IDR), True),
        (stap_a(IDR), True),
        (stap_a(SLICE), False),
        (fu_a(IDR, start=True), True),
        (fu_a(IDR, start=False), False),
        (fu_a(IDR, start=False, end=True), False),
        (fu_a(SLICE, start=True), False),
        (b"\x78\x00", False),  # STAP-A cut short
        (b"\x7c", False),  # FU-A without its header
        (b"", False),
    ],
    ids=lambda v: v.hex() if isinstance(v, bytes) else str(v),
)
def test_h264_keyframe_start(payload: bytes, keyframe: bool) -> None:
    pkt = rtp(payload, ext=one_byte_block((3, b"\x01\x02\x03")))
    assert h264_keyframe_start(pkt, payload_offset(pkt)) is keyframe


@pytest.mark.parametrize(
    "payload",
    [stap_a(AUD, SPS, PPS), stap_a(SEI, SPS, PPS, IDR), stap_a(PPS, IDR)],
    ids=["aud-sps-pps", "sei-sps-pps-idr", "pps-idr"],
)
def test_h264_stap_a_with_sps_or_idr_after_the_first_nal(payload: bytes) -> None:
    assert h264_keyframe_start(rtp(payload), 12) is True


def test_h264_stap_a_without_sps_or_idr() -> None:
    assert h264_keyframe_start(rtp(stap_a(AUD, SEI, PPS)), 12) is False
    assert h264_keyframe_start(rtp(stap_a(AUD, SLICE)), 12) is False


@pytest.mark.parametrize(
    ("mime", "detector"),
    [("video/VP8", vp8_keyframe_start), ("video/vp8", vp8_keyframe_start), ("video/H264", h264_keyframe_start), ("video/VP9", None), ("audio/opus", None)],
)
def test_keyframe_detector(mime: str, detector: Callable | None) -> None:
    assert keyframe_detector(mime) is detector


# -- real encoder output ------------------------------------------------------------------------


def video_frame(pts: int) -> av.VideoFrame:
    frame = av.VideoFrame(320, 240, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes([(pts // 3000 * 7) % 256]) * plane.buffer_size)
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, 90000)
    return frame


def packets(payloads: list[bytes], timestamp: int, seq: int) -> list[bytes]:
    out = []
    for i, payload in enumerate(payloads):
        packet = RtpPacket(payload_type=96, sequence_number=seq + i, timestamp=timestamp)
        packet.ssrc = 0x1234
        packet.marker = int(i == len(payloads) - 1)
        packet.payload = payload
        out.append(packet.serialize())
    return out


def detections(encoder: object, detector: Callable[[bytes, int], bool]) -> tuple[list[bool], list[bool]]:
    payloads, ts = encoder.encode(video_frame(0), force_keyframe=True)  # type: ignore[attr-defined]
    key = [detector(p, payload_offset(p)) for p in packets(payloads, ts, 1)]
    payloads, ts = encoder.encode(video_frame(3000))  # type: ignore[attr-defined]
    delta = [detector(p, payload_offset(p)) for p in packets(payloads, ts, 100)]
    return key, delta


def test_real_vp8_keyframe_detected() -> None:
    from aiortc.codecs.vpx import Vp8Encoder

    key, delta = detections(Vp8Encoder(), vp8_keyframe_start)
    assert key[0] is True
    assert not any(key[1:]), "only the first packet of a keyframe starts it"
    assert delta and not any(delta)


def test_real_h264_keyframe_detected() -> None:
    try:
        from aiortc.codecs.h264 import H264Encoder

        encoder = H264Encoder()
        encoder.encode(video_frame(0), force_keyframe=True)
    except Exception as exc:  # pragma: no cover - PyAV built without libx264
        pytest.skip(f"no H.264 encoder: {exc}")
    encoder = H264Encoder()
    key, delta = detections(encoder, h264_keyframe_start)
    assert key[0] is True
    assert delta and not any(delta)


# -- RTX (RFC 4588) -----------------------------------------------------------------------------

ORIGINAL_PT, RTX_PT = 96, 97
ORIGINAL_SSRC, RTX_SSRC = 0x11223344, 0x55667788


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"marker": True},
        {"csrcs": (1, 2, 3)},
        {"ext": one_byte_block((1, b"0"), (3, b"\x01\x02\x03"))},
        {"csrcs": (9,), "ext": two_byte_block((4, b"abcd")), "marker": True},
    ],
)
def test_rtx_round_trip(kwargs: dict) -> None:
    original = rtp(b"media-payload", pt=ORIGINAL_PT, seq=0xBEEF, ts=0xDEADBEEF, ssrc=ORIGINAL_SSRC, **kwargs)
    wrapped = wrap_rtx(original, RTX_PT, 7, RTX_SSRC)
    header = struct.unpack_from("!BBHII", wrapped)
    assert header[1] & 0x7F == RTX_PT
    assert bool(header[1] & 0x80) == bool(kwargs.get("marker"))
    assert header[2] == 7
    assert header[3] == 0xDEADBEEF
    assert header[4] == RTX_SSRC
    offset = payload_offset(wrapped)
    assert offset == payload_offset(original)
    assert wrapped[12:offset] == original[12:offset]  # CSRCs and extensions carried over
    assert wrapped[offset : offset + 2] == b"\xbe\xef"  # the original sequence number leads
    assert wrapped[offset + 2 :] == b"media-payload"
    assert unwrap_rtx(wrapped, ORIGINAL_PT, ORIGINAL_SSRC) == original


def test_wrap_rtx_strips_padding() -> None:
    original = rtp(b"abc", seq=5, padding=3)
    wrapped = wrap_rtx(original, RTX_PT, 1, RTX_SSRC)
    assert not wrapped[0] & 0x20
    assert wrapped[12:] == b"\x00\x05abc"
    assert unwrap_rtx(wrapped, ORIGINAL_PT, ORIGINAL_SSRC) == rtp(b"abc", seq=5)


def test_unwrap_rtx_by_hand() -> None:
    """An RTX packet built by hand: OSN first, then the payload, then padding."""
    rtx = rtp(b"\x12\x34" + b"payload", pt=RTX_PT, seq=1, ts=1234, ssrc=RTX_SSRC, marker=True, padding=4)
    original = unwrap_rtx(rtx, ORIGINAL_PT, ORIGINAL_SSRC)
    assert original == rtp(b"payload", pt=ORIGINAL_PT, seq=0x1234, ts=1234, ssrc=ORIGINAL_SSRC, marker=True)


@pytest.mark.parametrize(
    "rtx",
    [
        rtp(b"", pt=RTX_PT, padding=200),  # a bandwidth probe: padding only
        rtp(b"", pt=RTX_PT),
        rtp(b"\x01", pt=RTX_PT),
        rtp(b"\x01", pt=RTX_PT, padding=3),
        rtp(b"", pt=RTX_PT, ext=one_byte_block((1, b"0")), padding=10),
    ],
)
def test_unwrap_rtx_without_original_is_none(rtx: bytes) -> None:
    assert unwrap_rtx(rtx, ORIGINAL_PT, ORIGINAL_SSRC) is None


def test_unwrap_rtx_empty_original_payload() -> None:
    assert unwrap_rtx(rtp(b"\x00\x09", pt=RTX_PT), ORIGINAL_PT, ORIGINAL_SSRC) == rtp(b"", pt=ORIGINAL_PT, seq=9)


# -- header extensions (RFC 8285) -------------------------------------------------------------

SOURCE = ExtensionMap({URI_MID: 1, URI_AUDIO_LEVEL: 2, URI_ABS_SEND_TIME: 3}, "0")
TARGET = ExtensionMap({URI_MID: 4, URI_ABS_SEND_TIME: 9, URI_AUDIO_LEVEL: 10}, "7")
ABS = b"\x12\x34\x56"
LEVEL = b"\xaa"
TWCC = b"\x00\x2a"  # transport-wide-cc under id 5: not known to the rewriter


def rewritten(rewriter: ExtensionRewriter, pkt: bytes) -> bytes:
    """The packet as DownTrack assembles it from the rewriter's output."""
    first, middle, offset = rewriter.rewrite(pkt)
    return bytes([first]) + pkt[1:12] + middle + pkt[offset:]


def test_rewriter_remaps_ids_and_writes_target_mid() -> None:
    pkt = rtp(PAYLOAD, ext=one_byte_block((1, b"0"), (3, ABS), (2, LEVEL), (5, TWCC)))
    out = rewritten(ExtensionRewriter(SOURCE, TARGET), pkt)
    assert out[0] & 0x10
    offset = payload_offset(out)
    assert out[offset:] == PAYLOAD
    assert out[1:12] == pkt[1:12]
    found = elements(out[12:offset])
    assert found[0] == (4, b"7")  # the MID comes first
    assert sorted(found) == sorted([(4, b"7"), (9, ABS), (10, LEVEL)])
    assert (offset - 12) % 4 == 0


def test_rewriter_output_parses_with_aiortc() -> None:
    """aiortc, configured with the subscriber's ids, reads what the rewriter wrote."""
    source_map = HeaderExtensionsMap()
    source_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri=URI_MID),
                RTCRtpHeaderExtensionParameters(id=2, uri=URI_AUDIO_LEVEL),
                RTCRtpHeaderExtensionParameters(id=3, uri=URI_ABS_SEND_TIME),
            ]
        )
    )
    packet = RtpPacket(payload_type=111, sequence_number=77, timestamp=4800)
    packet.ssrc = 0xCAFE
    packet.payload = b"opus-bytes"
    packet.extensions.mid = "0"
    packet.extensions.abs_send_time = 0x123456
    packet.extensions.audio_level = (True, 42)
    pkt = packet.serialize(source_map)

    target_map = HeaderExtensionsMap()
    target_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=4, uri=URI_MID),
                RTCRtpHeaderExtensionParameters(id=9, uri=URI_ABS_SEND_TIME),
                RTCRtpHeaderExtensionParameters(id=10, uri=URI_AUDIO_LEVEL),
            ]
        )
    )
    parsed = RtpPacket.parse(rewritten(ExtensionRewriter(SOURCE, TARGET), pkt), target_map)
    assert parsed.extensions.mid == "7"
    assert parsed.extensions.abs_send_time == 0x123456
    assert parsed.extensions.audio_level == (True, 42)
    assert parsed.payload == b"opus-bytes"
    assert (parsed.sequence_number, parsed.timestamp, parsed.ssrc) == (77, 4800, 0xCAFE)


def test_rewriter_keeps_csrcs() -> None:
    pkt = rtp(PAYLOAD, csrcs=(0xA, 0xB), ext=one_byte_block((3, ABS)))
    first, middle, offset = ExtensionRewriter(SOURCE, TARGET).rewrite(pkt)
    assert first & 0x0F == 2
    assert middle[:8] == struct.pack("!II", 0xA, 0xB)
    out = rewritten(ExtensionRewriter(SOURCE, TARGET), pkt)
    assert sorted(elements(out[20 : payload_offset(out)])) == [(4, b"7"), (9, ABS)]
    assert out[payload_offset(out) :] == PAYLOAD


def test_rewriter_adds_mid_to_a_packet_without_extensions() -> None:
    pkt = rtp(PAYLOAD, csrcs=(3,))
    out = rewritten(ExtensionRewriter(SOURCE, TARGET), pkt)
    assert out[0] & 0x10
    assert out[12:16] == pkt[12:16]
    assert elements(out[16 : payload_offset(out)]) == [(4, b"7")]
    assert out[payload_offset(out) :] == PAYLOAD


@pytest.mark.parametrize("mid", ["1", "ab", "abc", "abcd", "a" * 16])
def test_rewriter_pads_to_four_bytes(mid: str) -> None:
    target = ExtensionMap({URI_MID: 4}, mid)
    out = rewritten(ExtensionRewriter(SOURCE, target), rtp(PAYLOAD, ext=one_byte_block((1, b"0"))))
    offset = payload_offset(out)
    assert (offset - 12) % 4 == 0
    assert elements(out[12:offset]) == [(4, mid.encode())]
    assert out[offset:] == PAYLOAD


def test_rewriter_drops_what_the_target_did_not_negotiate() -> None:
    target = ExtensionMap({URI_MID: 4}, "2")  # no abs-send-time, no audio level
    pkt = rtp(PAYLOAD, ext=one_byte_block((1, b"0"), (3, ABS), (2, LEVEL), (5, TWCC)))
    out = rewritten(ExtensionRewriter(SOURCE, target), pkt)
    assert elements(out[12 : payload_offset(out)]) == [(4, b"2")]


def test_rewriter_without_anything_to_write_removes_the_block() -> None:
    target = ExtensionMap({}, None)
    pkt = rtp(PAYLOAD, csrcs=(5,), ext=one_byte_block((1, b"0"), (3, ABS)), padding=2, marker=True)
    first, middle, offset = ExtensionRewriter(SOURCE, target).rewrite(pkt)
    assert not first & 0x10
    assert first & 0x20  # padding stays
    assert middle == struct.pack("!I", 5)
    out = rewritten(ExtensionRewriter(SOURCE, target), pkt)
    assert out == rtp(PAYLOAD, csrcs=(5,), padding=2, marker=True)


@pytest.mark.parametrize("gap", [1, 3])
def test_rewriter_skips_padding_between_elements(gap: int) -> None:
    pkt = rtp(PAYLOAD, ext=one_byte_block((5, TWCC), (3, ABS), (2, LEVEL), gap=gap))
    out = rewritten(ExtensionRewriter(SOURCE, TARGET), pkt)
    assert sorted(elements(out[12 : payload_offset(out)])) == sorted([(4, b"7"), (9, ABS), (10, LEVEL)])


def test_rewriter_drops_two_byte_header_elements() -> None:
    pkt = rtp(PAYLOAD, ext=two_byte_block((3, ABS), (1, b"0")))
    out = rewritten(ExtensionRewriter(SOURCE, TARGET), pkt)
    assert out[12:14] == b"\xbe\xde"  # what goes out is a one-byte-header block
    found = elements(out[12 : payload_offset(out)])
    assert found[0] == (4, b"7")
    assert {ext_id for ext_id, _ in found} <= {4, 9}  # nothing under the publisher's ids
    assert out[payload_offset(out) :] == PAYLOAD


def test_rewriter_stops_at_id_15() -> None:
    """ID 15 is reserved: parsing stops there, so the audio level after it is not read."""
    # 0xF0 then one byte: read as an element of one byte, the audio level would follow it.
    block = bytes([(3 << 4) | (len(ABS) - 1)]) + ABS + b"\xf0\x00" + bytes([(2 << 4) | 0]) + LEVEL
    pkt = rtp(PAYLOAD, ext=(0xBEDE, block + b"\x00" * (-len(block) % 4)))
    out = rewritten(ExtensionRewriter(SOURCE, TARGET), pkt)
    assert sorted(elements(out[12 : payload_offset(out)])) == [(4, b"7"), (9, ABS)]
    assert out[payload_offset(out) :] == PAYLOAD


def test_rewriter_ignores_long_mid() -> None:
    target = ExtensionMap({URI_MID: 4, URI_ABS_SEND_TIME: 9}, "m" * 17)
    out = rewritten(ExtensionRewriter(SOURCE, target), rtp(PAYLOAD, ext=one_byte_block((3, ABS))))
    assert elements(out[12 : payload_offset(out)]) == [(9, ABS)]


def test_extension_map_key() -> None:
    same = ExtensionMap({URI_MID: 1, URI_AUDIO_LEVEL: 2, URI_ABS_SEND_TIME: 3}, "0")
    assert same.key() == SOURCE.key()
    assert ExtensionMap({URI_MID: 1, URI_AUDIO_LEVEL: 2, URI_ABS_SEND_TIME: 3}, "1").key() != SOURCE.key()
    assert ExtensionMap({URI_MID: 1, URI_AUDIO_LEVEL: 4, URI_ABS_SEND_TIME: 3}, "0").key() != SOURCE.key()
    assert (SOURCE.mid_id, SOURCE.audio_level_id, SOURCE.abs_send_time_id) == (1, 2, 3)
    assert ExtensionMap({}, None).key() == (None, 0, 0, 0)


# -- SDP offers ------------------------------------------------------------------------------------


async def make_offer(*kinds: str, direction: str = "sendonly", data: bool = False) -> str:
    pc = RTCPeerConnection()
    try:
        for kind in kinds:
            pc.addTransceiver(kind, direction=direction)
        if data:
            pc.createDataChannel("teller")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


@pytest.fixture
async def offer() -> AsyncIterator[str]:
    yield await make_offer("audio", "video", data=True)


def ssrc_lines(sdp: str, section: int) -> tuple[list[int], list[tuple[int, int]]]:
    media = sdp.split("\r\nm=")[1 + section]
    ssrcs = sorted({int(s) for s in re.findall(r"a=ssrc:(\d+) ", media)})
    groups = [(int(a), int(b)) for a, b in re.findall(r"a=ssrc-group:FID (\d+) (\d+)", media)]
    return ssrcs, groups


async def test_parse_offer_from_aiortc(offer: str) -> None:
    parsed = parse_offer(offer)
    assert parsed.has_data_channel
    assert [(m.index, m.mid, m.kind, m.direction) for m in parsed.media] == [
        (0, "0", "audio", "sendonly"),
        (1, "1", "video", "sendonly"),
    ]
    audio_ssrcs, _ = ssrc_lines(offer, 0)
    video_ssrcs, groups = ssrc_lines(offer, 1)
    assert parsed.media[0].ssrcs == audio_ssrcs and len(audio_ssrcs) == 1
    assert parsed.media[0].rtx_ssrcs == {}
    # The video section carries a media SSRC and its RTX SSRC; only the first is media.
    assert len(groups) == 1
    media_ssrc, rtx_ssrc = groups[0]
    assert sorted(video_ssrcs) == sorted([media_ssrc, rtx_ssrc])
    assert parsed.media[1].ssrcs == [media_ssrc]
    assert parsed.media[1].rtx_ssrcs == {media_ssrc: rtx_ssrc}
    assert parsed.media_of("video") == [parsed.media[1]]
    assert parsed.media_of("audio") == [parsed.media[0]]


async def test_parse_offer_recvonly_and_no_data() -> None:
    parsed = parse_offer(await make_offer("video", "audio", direction="recvonly"))
    assert not parsed.has_data_channel
    assert [(m.kind, m.direction) for m in parsed.media] == [("video", "recvonly"), ("audio", "recvonly")]


async def test_parse_offer_data_only() -> None:
    parsed = parse_offer(await make_offer(data=True))
    assert parsed.has_data_channel and parsed.media == []


async def test_parse_offer_normalises_line_endings(offer: str) -> None:
    parsed = parse_offer(offer.replace("\r\n", "\n"))
    assert "\r\n" in parsed.sdp and "\n" not in parsed.sdp.replace("\r\n", "")
    assert len(parsed.media) == 2


async def test_parse_offer_accepts_session_level_fingerprint(offer: str) -> None:
    """Firefox writes a=fingerprint once at session level."""
    fingerprints = re.findall(r"a=fingerprint:[^\r]*\r\n", offer)[:3]
    moved = re.sub(r"a=fingerprint:[^\r]*\r\n", "", offer).replace("t=0 0\r\n", "t=0 0\r\n" + "".join(fingerprints), 1)
    assert len(parse_offer(moved).media) == 2


def invalid(text: object) -> str:
    with pytest.raises(BadRequest) as info:
        parse_offer(text)
    assert info.value.code == "invalid_sdp"
    return info.value.message


@pytest.mark.parametrize("text", [None, "", "   \r\n", 42, b"v=0\r\n"])
def test_parse_offer_rejects_empty(text: object) -> None:
    invalid(text)


@pytest.mark.parametrize(
    "text",
    [
        "o=- 1 1 IN IP4 0.0.0.0\r\nv=0\r\n",
        "hello",
        '{"type": "offer"}',
        "V=0\r\n",
    ],
)
def test_parse_offer_rejects_non_sdp(text: str) -> None:
    assert "v=0" in invalid(text)


@pytest.mark.parametrize(
    "text",
    [
        "v=0\r\nthis is garbage\r\n",
        "v=0\r\nm=video abc\r\n",
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
    ],
)
def test_parse_offer_rejects_garbage(text: str) -> None:
    invalid(text)


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        (r"a=ice-ufrag:[^\r]*\r\n", "ICE"),
        (r"a=ice-pwd:[^\r]*\r\n", "ICE"),
        (r"a=fingerprint:[^\r]*\r\n", "fingerprint"),
        (r"a=rtcp-mux\r\n", "rtcp-mux"),
    ],
)
async def test_parse_offer_rejects_missing_attributes(offer: str, pattern: str, words: str) -> None:
    assert words in invalid(re.sub(pattern, "", offer))


async def test_parse_offer_rejects_missing_mid(offer: str) -> None:
    stripped = re.sub(r"a=mid:[^\r]*\r\n", "", offer)
    stripped = re.sub(r"a=group:BUNDLE[^\r]*\r\n", "", stripped)
    assert "mid" in invalid(stripped)


async def test_parse_offer_rejects_unknown_media_kind(offer: str) -> None:
    assert "text" in invalid(offer.replace("m=audio", "m=text", 1))


async def test_parse_offer_media_section_limit() -> None:
    assert len(parse_offer(await make_offer(*["audio"] * MAX_MEDIA_SECTIONS)).media) == MAX_MEDIA_SECTIONS
    too_many = await make_offer(*["audio"] * MAX_MEDIA_SECTIONS, "video")
    assert str(MAX_MEDIA_SECTIONS) in invalid(too_many)


async def test_parse_offer_size_limit(offer: str) -> None:
    padding = "a=x-filler:" + "z" * 1000 + "\r\n"
    big = offer + padding * (MAX_SDP_BYTES // len(padding) + 1)
    assert "too large" in invalid(big)


# -- announce --------------------------------------------------------------------------------

ANSWER = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "m=audio 40000 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 10.0.0.5",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=candidate:abc 1 udp 2130706431 10.0.0.5 40000 typ host",
        "a=candidate:def 1 udp 1694498815 198.51.100.9 40001 typ srflx raddr 10.0.0.5 rport 40000",
        "a=end-of-candidates",
        "m=video 40002 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP6 fd00::5",
        "a=candidate:ghi 1 udp 2130706431 fd00::5 40002 typ host",
        "",
    ]
)


def test_announce_rewrites_candidates_and_connection_lines() -> None:
    out = announce(ANSWER, "203.0.113.7")
    lines = out.split("\r\n")
    assert lines.count("c=IN IP4 203.0.113.7") == 2
    assert "a=candidate:abc 1 udp 2130706431 203.0.113.7 40000 typ host" in lines
    assert "a=candidate:def 1 udp 1694498815 203.0.113.7 40001 typ srflx raddr 10.0.0.5 rport 40000" in lines
    assert "a=candidate:ghi 1 udp 2130706431 203.0.113.7 40002 typ host" in lines
    # Everything else is untouched, ports included, and the line count is the same.
    assert len(lines) == len(ANSWER.split("\r\n"))
    for before, after in zip(ANSWER.split("\r\n"), lines):
        if not before.startswith(("a=candidate:", "c=")):
            assert before == after


def test_announce_ipv6() -> None:
    out = announce(ANSWER, "2001:db8::1")
    assert out.split("\r\n").count("c=IN IP6 2001:db8::1") == 2
    assert "a=candidate:abc 1 udp 2130706431 2001:db8::1 40000 typ host" in out


def test_announce_nothing_to_do() -> None:
    assert announce(ANSWER, "") == ANSWER


async def test_announce_on_a_real_sdp(offer: str) -> None:
    out = announce(offer, "198.51.100.20")
    candidates = [line for line in out.split("\r\n") if line.startswith("a=candidate:")]
    assert candidates and all(line.split(" ")[4] == "198.51.100.20" for line in candidates)
    assert all(line == "c=IN IP4 198.51.100.20" for line in out.split("\r\n") if line.startswith("c="))
    assert len(parse_offer(out).media) == 2
