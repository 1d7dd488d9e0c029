"""A subscriber's peer connection and the DownTracks it carries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from . import rtcp
from .forwarder import DownTrack
from .track import Publication
from .transport import MediaLeg, PeerTransport


class Subscription:
    def __init__(
        self,
        participant_id: str,
        transport: PeerTransport,
        bindings: dict[str, Publication],
        on_all_ended: Callable[[Subscription], None],
    ) -> None:
        """`bindings` maps each sending m-line's MID to the publication it carries."""
        self.participant_id = participant_id
        self.transport = transport
        self.downtracks: dict[int, DownTrack] = {}
        self._on_all_ended = on_all_ended
        self._loop = asyncio.get_running_loop()
        self._publications: list[Publication] = []
        for media in transport.media:
            publication = bindings.get(media.mid)
            if publication is None or media.codec is None:
                continue
            downtrack = DownTrack(publication, media)
            self.downtracks[downtrack.ssrc] = downtrack
            self._publications.append(publication)
            publication.on_ended.append(self._publication_ended)
        transport.on_rtcp = self._on_rtcp
        transport.on_connected = self._on_connected

    @property
    def id(self) -> str:
        return self.transport.id

    def tracks(self) -> list[dict[str, str]]:
        return [
            {
                "mid": d.mid,
                "track_id": d.publication.id,
                "participant_id": d.publication.participant_id,
                "kind": d.kind,
            }
            for d in self.downtracks.values()
        ]

    def _on_connected(self) -> None:
        for downtrack in self.downtracks.values():
            downtrack.start()

    def _publication_ended(self, publication: Publication) -> None:
        if all(p.ended for p in self._publications):
            self._on_all_ended(self)

    def _on_rtcp(self, leg: MediaLeg, data: bytes) -> None:
        downtracks = self.downtracks
        now = self._loop.time()
        for packet in rtcp.parse(data):
            if isinstance(packet, (rtcp.RtcpRrPacket, rtcp.RtcpSrPacket)):
                for report in packet.reports:
                    downtrack = downtracks.get(report.ssrc)
                    if downtrack is not None:
                        downtrack.on_report(report, now)
            elif isinstance(packet, rtcp.RtcpRtpfbPacket):
                downtrack = downtracks.get(packet.media_ssrc)
                if downtrack is not None and packet.fmt == rtcp.RTCP_RTPFB_NACK:
                    downtrack.on_nack(packet.lost)
            elif isinstance(packet, rtcp.RtcpPsfbPacket):
                if packet.fmt == rtcp.RTCP_PSFB_APP:
                    remb = rtcp.remb_of(packet)
                    if remb is not None:
                        for ssrc in remb[1]:
                            downtrack = downtracks.get(ssrc)
                            if downtrack is not None:
                                downtrack.on_remb(remb[0], now)
                else:  # PLI, or FIR whose FCI names the SSRC: a keyframe either way
                    ssrc = packet.media_ssrc
                    if packet.fmt == rtcp.RTCP_PSFB_FIR and len(packet.fci) >= 4:
                        ssrc = int.from_bytes(packet.fci[:4], "big")
                    downtrack = downtracks.get(ssrc)
                    if downtrack is not None:
                        downtrack.on_keyframe_request()

    def rtcp_tick(self, now: float) -> None:
        if self.transport.state != "connected":
            return
        for downtrack in self.downtracks.values():
            downtrack.send_sender_report(now)

    def stop(self) -> None:
        for downtrack in self.downtracks.values():
            downtrack.stop()
        for publication in self._publications:
            if self._publication_ended in publication.on_ended:
                publication.on_ended.remove(self._publication_ended)
        self._publications.clear()
