"""Frames for stages: assembled, and decoded once, off the event loop.

A TrackTap exists only while a stage consumes a publication. On the event loop it
costs one queue put per packet; reassembly and decoding run in its own thread. The
decoder is built when the first decoded consumer arrives and released with the
last one, and it is shared by every consumer of that publication.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any

import av
from aiortc.codecs import depayload
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from .. import codec_guard
from ..rtp import keyframe_detector, payload_offset
from ..track import Publication
from .base import EncodedFrame, FrameStream

log = logging.getLogger("teller.sfu.stages")

QUEUE_PACKETS = 2048


class TrackTap:
    def __init__(self, publication: Publication) -> None:
        self.publication = publication
        self._loop = asyncio.get_running_loop()
        self._packets: queue.Queue[bytes | None] = queue.Queue(QUEUE_PACKETS)
        self._encoded: list[FrameStream[EncodedFrame]] = []
        self._decoded: list[FrameStream[Any]] = []
        self._want_decoded = False
        self.packet_drops = 0
        self.decode_errors = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"tap-{publication.id}", daemon=True)
        self._thread.start()
        publication.add_tap(self._on_packet)

    @property
    def queue_depth(self) -> int:
        return self._packets.qsize()

    @property
    def consumers(self) -> int:
        return len(self._encoded) + len(self._decoded)

    def add(self, stream: FrameStream[Any], decoded: bool) -> None:
        (self._decoded if decoded else self._encoded).append(stream)
        self._want_decoded = bool(self._decoded)
        if decoded:
            self.publication.request_keyframe()  # the decoder starts on a keyframe

    def remove(self, stream: FrameStream[Any]) -> None:
        for streams in (self._encoded, self._decoded):
            if stream in streams:
                streams.remove(stream)
        self._want_decoded = bool(self._decoded)

    def _on_packet(self, pkt: bytes) -> None:
        try:
            self._packets.put_nowait(pkt)
        except queue.Full:
            self.packet_drops += 1

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.publication.remove_tap(self._on_packet)
        while True:
            try:
                self._packets.put_nowait(None)
                break
            except queue.Full:
                self._packets.get_nowait()
        await asyncio.to_thread(self._thread.join)
        for stream in self._encoded + self._decoded:
            stream.close()
        self._encoded.clear()
        self._decoded.clear()

    # -- the worker thread ------------------------------------------------------------

    def _work(self) -> None:
        publication = self.publication
        codec = publication.codec
        video = publication.kind == "video"
        jitter = JitterBuffer(capacity=128, is_video=True) if video else JitterBuffer(capacity=16, prefetch=4)
        detector = keyframe_detector(publication.mime_type) if video else None
        extensions = HeaderExtensionsMap()
        keyframe_timestamps: set[int] = set()
        decoder: Any = None
        try:
            while True:
                pkt = self._packets.get()
                if pkt is None:
                    return
                try:
                    packet = RtpPacket.parse(pkt, extensions)
                    packet._data = depayload(codec, packet.payload) if packet.payload else b""  # type: ignore[attr-defined]
                except ValueError:
                    continue
                if detector is not None and detector(pkt, payload_offset(pkt)):
                    keyframe_timestamps.add(packet.timestamp)
                pli, frame = jitter.add(packet)
                if pli:
                    self._loop.call_soon_threadsafe(publication.request_keyframe)
                if frame is None:
                    continue
                keyframe = not video or frame.timestamp in keyframe_timestamps
                keyframe_timestamps.discard(frame.timestamp)
                if len(keyframe_timestamps) > 64:
                    keyframe_timestamps.clear()
                if self._encoded:
                    encoded = EncodedFrame(publication.kind, publication.mime_type, frame.timestamp, frame.data, keyframe)
                    self._loop.call_soon_threadsafe(self._deliver, self._encoded, encoded)
                if self._want_decoded:
                    if decoder is None:
                        decoder = codec_guard.make_decoder(codec)
                    try:
                        frames = decoder.decode(frame)
                    except av.FFmpegError:
                        self.decode_errors += 1
                        self._loop.call_soon_threadsafe(publication.request_keyframe)
                        continue
                    for decoded in frames:
                        self._loop.call_soon_threadsafe(self._deliver, self._decoded, decoded)
                elif decoder is not None:
                    decoder = None
                    codec_guard.release_decoder()
        finally:
            if decoder is not None:
                codec_guard.release_decoder()

    @staticmethod
    def _deliver(streams: list[FrameStream[Any]], frame: Any) -> None:
        for stream in streams:
            stream.offer(frame)
