"""A participant's publishing peer connection and the Publications it carries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..config import SfuSettings
from . import rtcp
from .track import Publication
from .transport import MediaLeg, PeerTransport

log = logging.getLogger("teller.sfu.publisher")

MAX_LEARNED_SSRCS = 8


class Publisher:
    def __init__(
        self,
        participant_id: str,
        transport: PeerTransport,
        settings: SfuSettings,
        sources: list[dict[str, str]] | None = None,
    ) -> None:
        self.participant_id = participant_id
        self.transport = transport
        self.created_at = time.time()
        self.publications: list[Publication] = []
        self._handlers: dict[int, Callable[[bytes, float], None]] = {}
        self._by_pt: dict[int, Callable[[int], Callable[[bytes, float], None]]] = {}
        sources = sources or []
        for index, media in enumerate(m for m in transport.media if m.codec is not None):
            meta = sources[index] if index < len(sources) else {}
            default = "microphone" if media.kind == "audio" else "camera"
            publication = Publication(
                participant_id=participant_id,
                media=media,
                source=str(meta.get("source") or default)[:32],
                name=str(meta.get("name") or "")[:64],
                history_packets=settings.nack_history_packets,
                keyframe_interval_s=settings.keyframe_request_interval_s,
                max_bitrate=settings.max_publish_bitrate,
                replay_max_age_s=settings.keyframe_replay_max_age_s,
            )
            self.publications.append(publication)
            if publication.ssrc is not None:
                self._handlers[publication.ssrc] = publication.on_rtp
            if publication.rtx_ssrc is not None:
                self._handlers[publication.rtx_ssrc] = publication.on_rtx
            self._by_pt[publication.payload_type] = self._media_learner(publication)
            if publication.rtx_payload_type is not None:
                self._by_pt[publication.rtx_payload_type] = self._rtx_learner(publication)
        transport.on_rtp = self._on_rtp
        transport.on_rtcp = self._on_rtcp
        transport.on_connected = self._on_connected

    def _on_connected(self) -> None:
        for publication in self.publications:
            publication.leg_ready()

    @property
    def id(self) -> str:
        return self.transport.id

    def _on_rtp(self, leg: MediaLeg, pkt: bytes, now: float) -> None:
        handler = self._handlers.get((pkt[8] << 24) | (pkt[9] << 16) | (pkt[10] << 8) | pkt[11])
        if handler is None:
            handler = self._learn(pkt)
            if handler is None:
                return
        handler(pkt, now)

    def _learn(self, pkt: bytes) -> Callable[[bytes, float], None] | None:
        """An SSRC the offer did not name (no a=ssrc lines): match it by payload type."""
        if len(self._handlers) >= MAX_LEARNED_SSRCS:
            return None
        learner = self._by_pt.get(pkt[1] & 0x7F)
        if learner is None:
            return None
        ssrc = (pkt[8] << 24) | (pkt[9] << 16) | (pkt[10] << 8) | pkt[11]
        handler = learner(ssrc)
        self._handlers[ssrc] = handler
        return handler

    @staticmethod
    def _media_learner(publication: Publication) -> Callable[[int], Callable[[bytes, float], None]]:
        def learn(ssrc: int) -> Callable[[bytes, float], None]:
            publication.learn_ssrc(ssrc)
            return publication.on_rtp

        return learn

    @staticmethod
    def _rtx_learner(publication: Publication) -> Callable[[int], Callable[[bytes, float], None]]:
        def learn(ssrc: int) -> Callable[[bytes, float], None]:
            if publication.rtx_ssrc is None:
                publication.rtx_ssrc = ssrc
            return publication.on_rtx

        return learn

    def _on_rtcp(self, leg: MediaLeg, data: bytes) -> None:
        for packet in rtcp.parse(data):
            if isinstance(packet, rtcp.RtcpSrPacket):
                for publication in self.publications:
                    if publication.ssrc == packet.ssrc:
                        publication.on_sender_report(packet)
            elif isinstance(packet, rtcp.RtcpByePacket):
                for publication in self.publications:
                    if publication.ssrc in packet.sources:
                        log.info("publisher said BYE", extra={"track_id": publication.id})
                        publication.end()

    def rtcp_tick(self) -> None:
        if self.transport.state != "connected":
            return
        for publication in self.publications:
            publication.send_receiver_report()

    def end(self) -> None:
        for publication in self.publications:
            publication.end()
