"""RTCP packets the SFU writes and reads (RFC 3550, RFC 4585, REMB draft).

RTCP arrives a few times a second per track, so aiortc's packet classes are fine
here; the per-packet RTP path never touches this module.
"""

from __future__ import annotations

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    pack_remb_fci,
    unpack_remb_fci,
)

__all__ = [
    "AnyRtcpPacket",
    "RtcpByePacket",
    "RtcpPsfbPacket",
    "RtcpReceiverInfo",
    "RtcpRrPacket",
    "RtcpRtpfbPacket",
    "RtcpSrPacket",
    "RTCP_PSFB_APP",
    "RTCP_PSFB_FIR",
    "RTCP_PSFB_PLI",
    "RTCP_RTPFB_NACK",
    "bye",
    "nack",
    "parse",
    "pli",
    "remb",
    "remb_of",
    "rr",
    "sr",
]


def parse(data: bytes) -> list[AnyRtcpPacket]:
    try:
        return RtcpPacket.parse(data)
    except (ValueError, IndexError):
        return []


def pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=sender_ssrc, media_ssrc=media_ssrc))


def nack(sender_ssrc: int, media_ssrc: int, lost: list[int]) -> bytes:
    packet = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=sender_ssrc, media_ssrc=media_ssrc)
    packet.lost = sorted(lost)
    return bytes(packet)


def remb(sender_ssrc: int, bitrate: int, ssrcs: list[int]) -> bytes:
    return bytes(
        RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=sender_ssrc, media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs)
        )
    )


def remb_of(packet: RtcpPsfbPacket) -> tuple[int, list[int]] | None:
    try:
        return unpack_remb_fci(packet.fci)
    except ValueError:
        return None


def rr(sender_ssrc: int, reports: list[RtcpReceiverInfo]) -> bytes:
    return bytes(RtcpRrPacket(ssrc=sender_ssrc, reports=reports))


def sr(ssrc: int, ntp: int, rtp_timestamp: int, packets: int, octets: int) -> bytes:
    return bytes(
        RtcpSrPacket(
            ssrc=ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp,
                rtp_timestamp=rtp_timestamp & 0xFFFFFFFF,
                packet_count=packets & 0xFFFFFFFF,
                octet_count=octets & 0xFFFFFFFF,
            ),
        )
    )


def bye(ssrcs: list[int]) -> bytes:
    return bytes(RtcpByePacket(sources=ssrcs))
