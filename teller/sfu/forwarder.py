"""DownTrack: one subscriber's copy of a publication.

Per packet: rewrite SSRC, payload type and sequence number (the timestamp is kept,
so the publisher's sender reports stay valid), re-map header extensions only when
the two legs negotiated different ones, encrypt and send. A video DownTrack starts
on a keyframe; until then it drops packets the subscriber could not decode anyway.

Its source is the publication itself (the transcode-free path) or, for a subscriber
whose downlink cannot carry that, a shared lower-tier encoder with the same
interface (teller/sfu/tiers.py); `switch` moves it between the two on a keyframe.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from . import rtcp
from .rtp import HEADER, ExtensionRewriter, wrap_rtx
from .transport import NegotiatedMedia

if TYPE_CHECKING:
    from .track import Publication


class DownTrack:
    def __init__(
        self,
        publication: Publication,
        media: NegotiatedMedia,
    ) -> None:
        assert media.codec is not None
        self.publication = publication
        self.mid = media.mid
        self.kind = media.kind
        self.ssrc = media.local_ssrc
        self.rtx_ssrc = media.local_rtx_ssrc
        self.payload_type = media.codec.payloadType
        self.rtx_payload_type = media.rtx_payload_type
        self._leg = media.leg
        self.media_leg = media.leg
        source, target = publication.extensions, media.extensions
        self._publication_rewriter: ExtensionRewriter | None = (
            None if source.key() == target.key() else ExtensionRewriter(source, target)
        )
        self._rewriter = self._publication_rewriter
        # The publication, or a tier encoder; None while paused (audio only).
        self.source: Any = publication
        self.tier = "full"
        self._seq_offset = 0
        self._max_out_seq = random.randrange(0x8000)
        self._rtx_seq = random.randrange(0x8000)
        self._resync = True
        self._waiting = False
        self.started = False
        self.ended = False
        self.closed = False
        self.packets = 0
        self.octets = 0
        self.frames = 0  # marker bits: the end of each video frame sent
        self.retransmits = 0
        self.replayed = 0
        self.remb_bitrate = 0
        self.remb_at = 0.0
        self.last_report: rtcp.RtcpReceiverInfo | None = None
        self.report_at = 0.0
        self.reports = 0
        self.nacks_received = 0
        self.keyframe_requests = 0
        self.rtt: float | None = None
        # Middle 32 bits of the NTP time in each recent SR we sent -> when we sent it.
        self._sr_sent: dict[int, float] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """The subscriber's DTLS is up: join the fan-out, starting video on a keyframe.

        A keyframe that arrived moments ago is replayed from the history at once;
        otherwise the subscriber waits for the one its keyframe request brings.
        """
        if self.started or self.ended or self.closed or self.publication.ended or self.source is None:
            return
        publication = self.source
        self.started = True
        self._resync = True
        if self.kind == "video":
            self._waiting = True
            publication.waiting += 1
            replay = publication.recent_keyframe()
            if replay:
                first = replay[0]
                self.write(first, (first[2] << 8) | first[3], _ts(first), True)
                for pkt in replay[1:]:
                    self.write(pkt, (pkt[2] << 8) | pkt[3], _ts(pkt), False)
                self.replayed = len(replay)
        publication.attach(self)
        if self._waiting:
            publication.request_keyframe()

    def stop(self) -> None:
        """The subscription is closing: for good."""
        self.closed = True
        self._detach_source()

    def _detach_source(self) -> None:
        if not self.started:
            return
        self.started = False
        if self._waiting:
            self._waiting = False
            self.source.waiting -= 1
        self.source.detach(self)

    def switch(self, source: Any, tier: str) -> None:
        """Take packets from `source` (None: pause), starting on its next keyframe.

        Sequence numbers continue without a jump the subscriber would read as loss;
        timestamps are the publisher's on every source, so sender reports stay valid.
        """
        self.tier = tier
        if source is self.source:
            return
        running = self.started
        self._detach_source()
        self.source = source
        self._rewriter = self._publication_rewriter if source is self.publication else None
        if running or self._leg.active:
            self.start()

    def restart_on_keyframe(self) -> None:
        """The source lost more than NACKs can repair: go on at its next keyframe, with
        sequence numbers that continue without the hole (a subscriber's jitter buffer
        reads a jump of hundreds as a loss to wait out)."""
        if not self.started or self.kind != "video" or self.source is None:
            return
        self._resync = True
        if not self._waiting:
            self._waiting = True
            self.source.waiting += 1

    def publication_ended(self) -> None:
        """Called by the publication; tells the subscriber with an RTCP BYE."""
        if self._waiting:
            self._waiting = False
            if self.source is not None:
                self.source.waiting -= 1
        if self.started and self.source is not None and self.source is not self.publication:
            self.source.detach(self)
        self.started = False
        if not self.ended:
            self.ended = True
            self._leg.send_rtcp(rtcp.bye([self.ssrc]))

    # -- the per-packet path ------------------------------------------------------------

    def write(self, pkt: bytes, seq: int, ts: int, keyframe: bool) -> None:
        if self._resync:
            if self._waiting:
                if not keyframe:
                    return
                self._waiting = False
                self.source.waiting -= 1
            self._resync = False
            self._seq_offset = (self._max_out_seq + 1 - seq) & 0xFFFF
        out_seq = (seq + self._seq_offset) & 0xFFFF
        if ((out_seq - self._max_out_seq) & 0xFFFF) < 0x8000:
            self._max_out_seq = out_seq
        if self._rewriter is None:
            out = HEADER.pack(pkt[0], (pkt[1] & 0x80) | self.payload_type, out_seq, ts, self.ssrc) + pkt[12:]
        else:
            out = self._rewrite(pkt, out_seq, ts)
        self._leg.send_rtp(out)
        self.packets += 1
        self.octets += len(pkt) - 12
        self.frames += pkt[1] >> 7

    def _rewrite(self, pkt: bytes, out_seq: int, ts: int) -> bytes:
        rewriter = self._rewriter
        if rewriter is None:
            return HEADER.pack(pkt[0], (pkt[1] & 0x80) | self.payload_type, out_seq, ts, self.ssrc) + pkt[12:]
        first, middle, offset = rewriter.rewrite(pkt)
        header = HEADER.pack(first, (pkt[1] & 0x80) | self.payload_type, out_seq, ts, self.ssrc)
        return header + middle + pkt[offset:]

    # -- feedback from the subscriber ---------------------------------------------------

    def on_nack(self, lost: list[int]) -> None:
        """Answer from the publication's history, as RTX where the subscriber has it."""
        if not self.started:
            return
        self.nacks_received += 1
        publication = self.source
        for out_seq in lost:
            in_seq = (out_seq - self._seq_offset) & 0xFFFF
            pkt = publication.history_packet(in_seq)
            if pkt is None:
                continue
            out = self._rewrite(pkt, out_seq, _ts(pkt))
            if self.rtx_payload_type is not None:
                out = wrap_rtx(out, self.rtx_payload_type, self._rtx_seq, self.rtx_ssrc)
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            self._leg.send_rtp(out)
            self.retransmits += 1

    def on_keyframe_request(self) -> None:
        self.keyframe_requests += 1
        if self.source is not None:
            self.source.request_keyframe()

    def on_remb(self, bitrate: int, now: float) -> None:
        self.remb_bitrate = bitrate
        self.remb_at = now

    def on_report(self, report: rtcp.RtcpReceiverInfo, now: float) -> None:
        self.last_report = report
        self.report_at = now
        self.reports += 1
        sent = self._sr_sent.get(report.lsr) if report.lsr else None
        if sent is not None:
            rtt = now - sent - report.dlsr / 65536
            if 0 <= rtt < 10:
                self.rtt = rtt

    def send_sender_report(self, now: float) -> None:
        """Our SSRC, the publisher's NTP/RTP mapping (timestamps are not rewritten)."""
        if not self.started or self.packets == 0:
            return
        mapping = self.publication.extrapolated_sr(now)
        if mapping is None:
            return
        ntp, rtp_ts = mapping
        sent = self._sr_sent
        if len(sent) >= 8:
            del sent[next(iter(sent))]
        sent[(ntp >> 16) & 0xFFFFFFFF] = now
        self._leg.send_rtcp(rtcp.sr(self.ssrc, ntp, rtp_ts, self.packets, self.octets))


def _ts(pkt: bytes) -> int:
    return (pkt[4] << 24) | (pkt[5] << 16) | (pkt[6] << 8) | pkt[7]
