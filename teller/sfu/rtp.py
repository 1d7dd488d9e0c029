"""RTP on raw bytes, for the forwarding path.

Nothing here builds objects per packet: headers are read with one struct call and
written with another. RFC 3550 (RTP), RFC 8285 (header extensions), RFC 4588 (RTX),
RFC 7741 (VP8 payload) and RFC 6184 (H.264 payload).
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!BBHII")
SEQ_TS = struct.Struct("!HI")
U16 = struct.Struct("!H")
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 demultiplexing: RTCP packet types 192-223 sit where RTP has M+PT."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def payload_offset(pkt: bytes) -> int:
    """Offset of the payload: after the fixed header, CSRCs and the extension block."""
    offset = 12 + 4 * (pkt[0] & 0x0F)
    if pkt[0] & 0x10:
        offset += 4 + 4 * ((pkt[offset + 2] << 8) | pkt[offset + 3])
    return offset


def payload_end(pkt: bytes) -> int:
    """End of the payload, before any padding (P bit)."""
    if pkt[0] & 0x20:
        return len(pkt) - pkt[-1]
    return len(pkt)


def vp8_keyframe_start(pkt: bytes, offset: int) -> bool:
    """True for the first packet of a VP8 keyframe (S=1, PID=0 and the P bit clear)."""
    n = len(pkt)
    if offset >= n:
        return False
    b = pkt[offset]
    if not (b & 0x10) or (b & 0x07):
        return False
    i = offset + 1
    if b & 0x80:  # X: extension byte follows
        if i >= n:
            return False
        x = pkt[i]
        i += 1
        if x & 0x80:  # I: picture id, 7 or 15 bits
            if i >= n:
                return False
            i += 2 if pkt[i] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            i += 1
        if x & 0x30:  # T or K
            i += 1
    return i < n and not (pkt[i] & 0x01)


def _vp8_payload_start(pkt: bytes, offset: int) -> int:
    """Index of the VP8 payload header, after the payload descriptor (RFC 7741)."""
    n = len(pkt)
    b = pkt[offset]
    i = offset + 1
    if b & 0x80:
        if i >= n:
            return n
        x = pkt[i]
        i += 1
        if x & 0x80:
            if i >= n:
                return n
            i += 2 if pkt[i] & 0x80 else 1
        if x & 0x40:
            i += 1
        if x & 0x30:
            i += 1
    return i


def vp8_dimensions(pkt: bytes, offset: int) -> tuple[int, int] | None:
    """Width and height from the first packet of a VP8 keyframe (RFC 6386, 9.1)."""
    if offset >= len(pkt):
        return None
    i = _vp8_payload_start(pkt, offset)
    if i + 10 > len(pkt) or pkt[i + 3 : i + 6] != b"\x9d\x01\x2a":
        return None
    width = (pkt[i + 6] | (pkt[i + 7] << 8)) & 0x3FFF
    height = (pkt[i + 8] | (pkt[i + 9] << 8)) & 0x3FFF
    return width, height


def audio_level(pkt: bytes, ext_id: int) -> int | None:
    """The RFC 6464 level (0-127 -dBov) in `pkt`'s header extension `ext_id`, if there."""
    if not pkt[0] & 0x10:
        return None
    start = 12 + 4 * (pkt[0] & 0x0F)
    if start + 4 > len(pkt):
        return None
    profile = (pkt[start] << 8) | pkt[start + 1]
    end = min(len(pkt), start + 4 + 4 * ((pkt[start + 2] << 8) | pkt[start + 3]))
    i = start + 4
    if profile == ONE_BYTE_PROFILE:
        while i < end:
            b = pkt[i]
            if b == 0:
                i += 1
                continue
            element, length = b >> 4, (b & 0x0F) + 1
            if element == 15:
                return None
            if element == ext_id and i + 1 < end:
                return pkt[i + 1] & 0x7F
            i += 1 + length
    elif (profile & 0xFFF0) == TWO_BYTE_PROFILE:
        while i + 1 < end:
            element, length = pkt[i], pkt[i + 1]
            if element == 0:
                i += 1
                continue
            if element == ext_id and length and i + 2 < end:
                return pkt[i + 2] & 0x7F
            i += 2 + length
    return None


def h264_keyframe_start(pkt: bytes, offset: int) -> bool:
    """True for a packet that starts an IDR access unit (SPS, or an IDR slice start)."""
    n = len(pkt)
    if offset >= n:
        return False
    nal = pkt[offset] & 0x1F
    if nal in (5, 7):
        return True
    if nal == 24:  # STAP-A: any aggregated SPS or IDR slice (an AUD or SEI may lead)
        i = offset + 1
        while i + 2 < n:
            size = (pkt[i] << 8) | pkt[i + 1]
            if size == 0:
                break
            if (pkt[i + 2] & 0x1F) in (5, 7):
                return True
            i += 2 + size
        return False
    if nal == 28 and offset + 1 < n:  # FU-A start of an IDR slice
        fu = pkt[offset + 1]
        return bool(fu & 0x80) and (fu & 0x1F) == 5
    return False


def keyframe_detector(mime_type: str):  # type: ignore[no-untyped-def]
    mime = mime_type.lower()
    if mime == "video/vp8":
        return vp8_keyframe_start
    if mime == "video/h264":
        return h264_keyframe_start
    return None


def unwrap_rtx(pkt: bytes, payload_type: int, ssrc: int) -> bytes | None:
    """Rebuild the original packet from an RTX packet; None for padding-only probes."""
    offset = payload_offset(pkt)
    end = payload_end(pkt)
    if end - offset < 2:
        return None
    (seq,) = U16.unpack_from(pkt, offset)
    first = pkt[0] & 0xDF  # the original carries no padding
    header = HEADER.pack(first, (pkt[1] & 0x80) | payload_type, seq, _ts(pkt), ssrc)
    return header + pkt[12:offset] + pkt[offset + 2 : end]


def wrap_rtx(pkt: bytes, payload_type: int, seq: int, ssrc: int) -> bytes:
    """RFC 4588: the original sequence number leads the RTX payload."""
    offset = payload_offset(pkt)
    end = payload_end(pkt)
    first = pkt[0] & 0xDF
    header = HEADER.pack(first, (pkt[1] & 0x80) | payload_type, seq, _ts(pkt), ssrc)
    return header + pkt[12:offset] + pkt[2:4] + pkt[offset:end]


def _ts(pkt: bytes) -> int:
    return (pkt[4] << 24) | (pkt[5] << 16) | (pkt[6] << 8) | pkt[7]


class ExtensionMap:
    """Header-extension ids one leg negotiated, by URI, and the m-line's MID."""

    __slots__ = ("mid", "mid_id", "abs_send_time_id", "audio_level_id")

    def __init__(self, ids: dict[str, int], mid: str | None) -> None:
        self.mid = mid
        self.mid_id = ids.get(URI_MID, 0)
        self.abs_send_time_id = ids.get(URI_ABS_SEND_TIME, 0)
        self.audio_level_id = ids.get(URI_AUDIO_LEVEL, 0)

    def key(self) -> tuple[object, ...]:
        return (self.mid, self.mid_id, self.abs_send_time_id, self.audio_level_id)


class ExtensionRewriter:
    """Re-writes the extension block of a publisher's packet for one subscriber leg.

    Only what both legs can use survives: abs-send-time and audio level are carried
    over under the subscriber's ids, and the MID becomes the subscriber's m-line.
    """

    __slots__ = ("_map", "_mid_element")

    def __init__(self, source: ExtensionMap, target: ExtensionMap) -> None:
        self._map: dict[int, int] = {}
        if source.abs_send_time_id and target.abs_send_time_id:
            self._map[source.abs_send_time_id] = target.abs_send_time_id
        if source.audio_level_id and target.audio_level_id:
            self._map[source.audio_level_id] = target.audio_level_id
        self._mid_element = b""
        if target.mid_id and target.mid and 0 < len(target.mid) <= 16:
            value = target.mid.encode("ascii")
            self._mid_element = bytes([(target.mid_id << 4) | (len(value) - 1)]) + value

    def rewrite(self, pkt: bytes) -> tuple[int, bytes, int]:
        """(first byte, CSRCs + new extension block, payload offset) for this packet."""
        first = pkt[0]
        start = 12 + 4 * (first & 0x0F)
        body = bytearray(self._mid_element)
        offset = start
        if first & 0x10:
            profile = (pkt[start] << 8) | pkt[start + 1]
            length = 4 * ((pkt[start + 2] << 8) | pkt[start + 3])
            offset = start + 4 + length
            if profile == ONE_BYTE_PROFILE:
                i = start + 4
                while i < offset:
                    b = pkt[i]
                    if b == 0:  # padding between elements
                        i += 1
                        continue
                    ext_id = b >> 4
                    size = (b & 0x0F) + 1
                    if ext_id == 15:
                        break
                    new_id = self._map.get(ext_id)
                    if new_id:
                        body.append((new_id << 4) | (b & 0x0F))
                        body += pkt[i + 1 : i + 1 + size]
                    i += 1 + size
            elif profile & 0xFFF0 == TWO_BYTE_PROFILE:
                i = start + 4
                while i + 1 < offset:
                    ext_id, size = pkt[i], pkt[i + 1]
                    if ext_id == 0:  # padding
                        i += 1
                        continue
                    new_id = self._map.get(ext_id)
                    if new_id and 0 < size <= 16:  # re-written in the one-byte form
                        body.append((new_id << 4) | (size - 1))
                        body += pkt[i + 2 : i + 2 + size]
                    i += 2 + size
        csrcs = pkt[12:start]
        if not body:
            return first & 0xEF, csrcs, offset
        pad = (-len(body)) % 4
        block = b"\xbe\xde" + U16.pack((len(body) + pad) // 4) + bytes(body) + b"\x00" * pad
        return first | 0x10, csrcs + block, offset
