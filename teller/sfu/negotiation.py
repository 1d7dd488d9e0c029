"""Reading a client's SDP offer and shaping the server's answer.

Clients always offer; the server always answers. A publish offer carries send-only
media, a subscribe offer receive-only media; either may carry a data channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc import RTCRtpSender
from aiortc import sdp as aiosdp
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from ..errors import BadRequest

MAX_SDP_BYTES = 64 * 1024
MAX_MEDIA_SECTIONS = 8


@dataclass
class OfferedMedia:
    index: int
    mid: str
    kind: str
    direction: str
    ssrcs: list[int] = field(default_factory=list)
    # media SSRC -> RTX SSRC, from a=ssrc-group:FID
    rtx_ssrcs: dict[int, int] = field(default_factory=dict)


@dataclass
class ParsedOffer:
    sdp: str
    media: list[OfferedMedia]
    has_data_channel: bool

    def media_of(self, kind: str) -> list[OfferedMedia]:
        return [m for m in self.media if m.kind == kind]


def parse_offer(text: object) -> ParsedOffer:
    """Validate an offer enough that aiortc will not choke on it; raise invalid_sdp."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("the SDP offer is empty", code="invalid_sdp")
    if len(text.encode("utf-8", "replace")) > MAX_SDP_BYTES:
        raise BadRequest("the SDP offer is too large", code="invalid_sdp")
    if not text.lstrip().startswith("v=0"):
        raise BadRequest("the SDP offer must start with v=0", code="invalid_sdp")
    text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    try:
        description = aiosdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises anything from ValueError to KeyError
        raise BadRequest(f"the SDP offer cannot be parsed: {exc}", code="invalid_sdp") from exc
    if not description.media:
        raise BadRequest("the SDP offer has no media sections", code="invalid_sdp")
    if len(description.media) > MAX_MEDIA_SECTIONS:
        raise BadRequest(
            f"the SDP offer has more than {MAX_MEDIA_SECTIONS} media sections",
            code="invalid_sdp",
        )
    media: list[OfferedMedia] = []
    has_data = False
    for index, m in enumerate(description.media):
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise BadRequest("the SDP offer lacks ICE credentials", code="invalid_sdp")
        if m.dtls is None or not m.dtls.fingerprints:
            raise BadRequest("the SDP offer lacks a DTLS fingerprint", code="invalid_sdp")
        if m.kind == "application":
            has_data = True
            continue
        if m.kind not in ("audio", "video"):
            raise BadRequest(f"unsupported media kind {m.kind!r}", code="invalid_sdp")
        if not m.rtcp_mux:
            raise BadRequest("the SDP offer must use rtcp-mux", code="invalid_sdp")
        if not m.rtp.muxId:
            raise BadRequest("every media section needs a=mid", code="invalid_sdp")
        fid: dict[int, int] = {}
        for group in m.ssrc_group:
            if group.semantic == "FID" and len(group.items) == 2:
                fid[int(group.items[0])] = int(group.items[1])
        rtx = set(fid.values())
        media.append(
            OfferedMedia(
                index=index,
                mid=m.rtp.muxId,
                kind=m.kind,
                direction=m.direction or "sendrecv",
                ssrcs=[s.ssrc for s in m.ssrc if s.ssrc not in rtx],
                rtx_ssrcs=fid,
            )
        )
    return ParsedOffer(sdp=text, media=media, has_data_channel=has_data)


def codec_preferences(kind: str, names: list[str]) -> list[RTCRtpCodecCapability]:
    """aiortc codec capabilities for the configured names, in that order, plus RTX."""
    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    wanted = [n.lower() for n in names]
    chosen = sorted(
        (c for c in capabilities if c.name.lower() in wanted),
        key=lambda c: wanted.index(c.name.lower()),
    )
    if kind == "video":
        chosen += [c for c in capabilities if c.name.lower() == "rtx"]
    return chosen


def matching_preferences(kind: str, mime_type: str, parameters: dict) -> list[RTCRtpCodecCapability]:
    """Capabilities that let a subscriber leg negotiate exactly the publisher's codec."""
    out = []
    for c in RTCRtpSender.getCapabilities(kind).codecs:
        if c.mimeType.lower() != mime_type.lower():
            continue
        if c.name.lower() == "h264":
            wanted = str(parameters.get("profile-level-id", "42e01f")).lower()
            mode = str(parameters.get("packetization-mode", "0"))
            if (
                str(c.parameters.get("profile-level-id", "")).lower() != wanted
                or str(c.parameters.get("packetization-mode", "0")) != mode
            ):
                continue
        out.append(c)
    if not out:  # an H.264 profile aiortc has no capability for: offer every H.264
        out = [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType.lower() == mime_type.lower()]
    if kind == "video":
        out += [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.name.lower() == "rtx"]
    return out


def announce(answer: str, address: str) -> str:
    """Write the announced address into every candidate of the answer (1:1 NAT)."""
    if not address:
        return answer
    lines = []
    for line in answer.split("\r\n"):
        if line.startswith("a=candidate:"):
            parts = line.split(" ")
            if len(parts) > 5:
                parts[4] = address
                line = " ".join(parts)
        elif line.startswith("c=IN IP4 ") or line.startswith("c=IN IP6 "):
            family = "IP6" if ":" in address else "IP4"
            line = f"c=IN {family} {address}"
        lines.append(line)
    return "\r\n".join(lines)
