"""One client's peer connection on the server, with the media plane taken over.

aiortc still runs ICE, DTLS and SCTP (data channels). Its RTP receivers and senders
are never started: once DTLS is up, SRTP and SRTCP are read straight off the UDP
socket, decrypted once and handed on as bytes, and forwarded packets are encrypted
and written straight back. No jitter buffer, decoder or encoder exists on this path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidStateError
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.sdp import candidate_from_sdp

from ..config import SfuSettings
from ..errors import BadRequest, Unprocessable
from . import ports
from .negotiation import ParsedOffer, announce
from .rtp import ExtensionMap

log = logging.getLogger("teller.sfu.transport")

RtpHandler = Callable[["MediaLeg", bytes, float], None]

# asyncio reads every datagram into a 256 KiB buffer and shrinks it. glibc then carves
# each packet from the top of its heap, and packets kept for retransmission pin the top:
# under call churn the heap grew ~1.7 MB per call with most of it free. WebRTC datagrams
# stay under the path MTU (~1500 bytes), so a small buffer loses nothing.
MAX_DATAGRAM = 4096


class MediaLeg:
    """The SRTP plane of one DTLS transport: decrypt in, encrypt out, on the socket."""

    def __init__(self, dtls: RTCDtlsTransport, owner: PeerTransport) -> None:
        self._dtls = dtls
        self._owner = owner
        self._rx: pylibsrtp.Session | None = None
        self._tx: pylibsrtp.Session | None = None
        self._sendto: Callable[[bytes, Any], Any] | None = None
        self._addr: Any = None
        self._loop = asyncio.get_running_loop()
        self.packets_in = 0
        self.packets_out = 0
        self.bytes_out = 0
        self.unprotect_errors = 0
        self.send_errors = 0

    def hook(self) -> None:
        """Put the SRTP fast path in front of aioice on every socket of this transport."""
        connection = self._dtls.transport._connection
        for protocol in connection._protocols:
            if getattr(protocol, "_teller_hooked", False):
                continue
            original = protocol.datagram_received

            def datagram_received(data: bytes, addr: Any, _original: Any = original) -> None:
                # RFC 7983: 128-191 is RTP/RTCP; STUN (0-3) and DTLS (20-63) go to aiortc.
                if self._rx is not None and 127 < data[0] < 192:
                    self._on_srtp(data)
                else:
                    _original(data, addr)

            protocol.datagram_received = datagram_received
            protocol._teller_hooked = True
            transport = getattr(protocol, "transport", None)
            if getattr(transport, "max_size", 0) > MAX_DATAGRAM:
                transport.max_size = MAX_DATAGRAM  # type: ignore[union-attr]

    def activate(self) -> bool:
        if self._tx is not None:
            return True
        if self._dtls.state != "connected":
            return False
        pair = self._dtls.transport._connection._nominated.get(1)
        if pair is None:
            return False
        transport = pair.protocol.transport
        # The socket itself: asyncio's transport.sendto adds checks and buffering that
        # UDP media does not want (a datagram the kernel refuses is dropped, not queued).
        sock = getattr(transport, "_sock", None)
        self._sendto = sock.sendto if sock is not None else transport.sendto
        self._addr = pair.remote_addr
        self._tx = self._dtls._tx_srtp
        self._rx = self._dtls._rx_srtp
        return True

    @property
    def active(self) -> bool:
        """SRTP is up: RTCP sent now reaches the peer."""
        return self._tx is not None

    def deactivate(self) -> None:
        self._rx = self._tx = None
        self._sendto = None

    def _on_srtp(self, data: bytes) -> None:
        self.packets_in += 1
        try:
            if 192 <= data[1] <= 223:
                self._owner.on_rtcp(self, self._rx.unprotect_rtcp(data))  # type: ignore[union-attr]
            else:
                self._owner.on_rtp(self, self._rx.unprotect(data), self._loop.time())  # type: ignore[union-attr]
        except pylibsrtp.Error:
            self.unprotect_errors += 1

    def send_rtp(self, packet: bytes) -> None:
        tx = self._tx
        if tx is None:
            return
        data = tx.protect(packet)
        try:
            self._sendto(data, self._addr)  # type: ignore[misc]
        except OSError:  # a full socket buffer or a vanished route: the datagram is lost
            self.send_errors += 1
            return
        self.packets_out += 1
        self.bytes_out += len(data)

    def send_rtcp(self, packet: bytes) -> None:
        tx = self._tx
        if tx is None:
            return
        try:
            self._sendto(tx.protect_rtcp(packet), self._addr)  # type: ignore[misc]
        except pylibsrtp.Error:
            log.debug("cannot protect RTCP", exc_info=True)
        except OSError:
            self.send_errors += 1


@dataclass
class MediaPlan:
    """What the server does with one offered m-line: its direction and codecs."""

    direction: str
    codecs: list[RTCRtpCodecCapability] = field(default_factory=list)


@dataclass
class NegotiatedMedia:
    """One m-line after the answer: what both ends agreed, as the forwarder needs it."""

    mid: str
    kind: str
    direction: str
    codec: RTCRtpCodecParameters | None
    rtx_payload_type: int | None
    extensions: ExtensionMap
    local_ssrc: int
    local_rtx_ssrc: int
    leg: MediaLeg
    remote_ssrcs: list[int]
    remote_rtx_ssrcs: dict[int, int]


async def _not_started(*_: Any, **__: Any) -> None:
    """Stands in for aiortc's RTCRtpSender.send and RTCRtpReceiver.receive."""


class PeerTransport:
    """A server-side peer connection answering one client offer."""

    def __init__(self, transport_id: str, settings: SfuSettings) -> None:
        self.id = transport_id
        self._settings = settings
        self.pc = RTCPeerConnection()
        self.state = "new"
        self.media: list[NegotiatedMedia] = []
        self._legs: dict[RTCDtlsTransport, MediaLeg] = {}
        self._closed = asyncio.Event()
        self._close_task: asyncio.Task[None] | None = None
        self.close_reason = ""
        self.has_data_channel = False
        self.created_at = asyncio.get_running_loop().time()
        self.connected_at: float | None = None
        self.connect_observed = False  # counted in teller_connect_seconds
        # Set by the owner (publisher or subscriber side).
        self.on_rtp: Callable[[MediaLeg, bytes, float], None] = lambda leg, pkt, now: None
        self.on_rtcp: Callable[[MediaLeg, bytes], None] = lambda leg, pkt: None
        self.on_connected: Callable[[], None] = lambda: None
        self.on_closed: Callable[[str], None] = lambda reason: None
        self.on_datachannel: Callable[[Any], None] = lambda channel: None
        self.pc.on("connectionstatechange", self._on_connection_state)
        self.pc.on("datachannel", lambda channel: self.on_datachannel(channel))

    # -- negotiation ---------------------------------------------------------------

    async def negotiate(self, offer: ParsedOffer, plans: list[MediaPlan]) -> str:
        """Answer `offer`; `plans` has one entry per audio/video m-line, in order."""
        transceivers: list[RTCRtpTransceiver] = []
        for media, plan in zip(offer.media, plans, strict=True):
            t = self.pc.addTransceiver(media.kind, direction=plan.direction)
            if plan.codecs:
                t.setCodecPreferences(plan.codecs)
            transceivers.append(t)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        except InvalidStateError as exc:
            raise BadRequest(str(exc), code="invalid_state") from exc
        except Exception as exc:
            if type(exc).__name__ == "OperationError":
                raise Unprocessable(
                    "no codec in the offer is one the server can forward",
                    code="codec_unsupported",
                ) from exc
            raise BadRequest(f"the SDP offer was refused: {exc}", code="invalid_sdp") from exc
        for t in self.pc.getTransceivers():
            t.receiver.receive = _not_started  # type: ignore[method-assign]
            t.sender.send = _not_started  # type: ignore[method-assign]
        if ports.needs_custom_gathering(self._settings):
            for dtls in self._dtls_transports():
                ports.install(dtls.transport._connection, self._settings)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        for dtls in self._dtls_transports():
            leg = MediaLeg(dtls, self)
            leg.hook()
            self._legs[dtls] = leg
            dtls.on("statechange", leg.activate)
        self.has_data_channel = offer.has_data_channel
        by_mid = {m.mid: m for m in offer.media}
        for t in self.pc.getTransceivers():
            offered = by_mid.get(t.mid or "")
            if offered is None:
                continue
            codec = next((c for c in t._codecs if c.name.lower() != "rtx"), None)
            rtx_pt = None
            if codec is not None:
                rtx_pt = next(
                    (
                        c.payloadType
                        for c in t._codecs
                        if c.name.lower() == "rtx" and c.parameters.get("apt") == codec.payloadType
                    ),
                    None,
                )
            self.media.append(
                NegotiatedMedia(
                    mid=t.mid or "",
                    kind=t.kind,
                    direction=t.direction,
                    codec=codec,
                    rtx_payload_type=rtx_pt,
                    extensions=ExtensionMap({e.uri: e.id for e in t._headerExtensions}, t.mid),
                    local_ssrc=t.sender._ssrc,
                    local_rtx_ssrc=t.sender._rtx_ssrc,
                    leg=self._legs[t.receiver.transport],
                    remote_ssrcs=offered.ssrcs,
                    remote_rtx_ssrcs=offered.rtx_ssrcs,
                )
            )
        self.state = "connecting"
        return announce(self.pc.localDescription.sdp, self._settings.announced_address)

    def _dtls_transports(self) -> list[RTCDtlsTransport]:
        out: list[RTCDtlsTransport] = []
        for t in self.pc.getTransceivers():
            if t.receiver.transport not in out:
                out.append(t.receiver.transport)
        if self.pc.sctp is not None and self.pc.sctp.transport not in out:
            out.append(self.pc.sctp.transport)
        return out

    async def add_ice_candidate(
        self, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        if self.state in ("closed", "failed"):
            return
        text = candidate.removeprefix("a=").removeprefix("candidate:")
        if not text:
            await self.pc.addIceCandidate(None)  # end of candidates
            return
        try:
            parsed = candidate_from_sdp(text)
        except (ValueError, IndexError) as exc:
            raise BadRequest("the ICE candidate cannot be parsed", code="invalid_candidate") from exc
        parsed.sdpMid = sdp_mid
        parsed.sdpMLineIndex = sdp_mline_index
        if sdp_mid is None and sdp_mline_index is None:
            parsed.sdpMLineIndex = 0
        try:
            await self.pc.addIceCandidate(parsed)
        except (ValueError, KeyError, AttributeError) as exc:
            raise BadRequest(str(exc) or "the ICE candidate was refused", code="invalid_candidate") from exc

    # -- lifecycle -----------------------------------------------------------------

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self.state == "connecting":
            for leg in self._legs.values():
                leg.activate()
            self.state = "connected"
            self.connected_at = asyncio.get_running_loop().time()
            self.on_connected()
        elif state in ("failed", "closed") and self.state not in ("closed", "failed"):
            self.close_soon("ice_failed" if state == "failed" else "closed")

    def close_soon(self, reason: str) -> None:
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self.close(reason))

    async def close(self, reason: str = "closed") -> None:
        if self.state == "closed":
            await self._closed.wait()
            return
        self.state = "closed"
        self.close_reason = reason
        for leg in self._legs.values():
            leg.deactivate()
        try:
            await self.pc.close()
        except Exception:  # closing must always finish; aiortc can raise mid-handshake
            log.warning("error while closing a peer connection", exc_info=True)
        self._legs.clear()
        self.media.clear()
        self._closed.set()
        callback, self.on_closed = self.on_closed, lambda reason: None
        self.on_rtp = lambda leg, pkt, now: None
        self.on_rtcp = lambda leg, pkt: None
        self.on_connected = lambda: None
        self.on_datachannel = lambda channel: None
        callback(reason)
