"""A published track: its packets arrive once and fan out to every DownTrack.

Per packet this does bookkeeping that needs only integers (receive statistics, a
slot in the NACK history, gap detection) and then calls each DownTrack. Keyframe
detection runs only while a subscriber waits for one; taps run only while attached.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import rtcp
from .rtp import (
    ExtensionMap,
    audio_level,
    keyframe_detector,
    payload_offset,
    unwrap_rtx,
    vp8_dimensions,
)
from .transport import MediaLeg, NegotiatedMedia

if TYPE_CHECKING:
    from .forwarder import DownTrack

log = logging.getLogger("teller.sfu.track")

NTP_EPOCH_OFFSET = 2208988800
MAX_NACK_GAP = 128
# A gap between two frames longer than this is a freeze a viewer notices.
FREEZE_S = 0.5
NACK_RETRY_S = 0.04
NACK_MAX_TRIES = 5
REMB_FRESH_S = 5.0

_ids = itertools.count(1)


def ntp_now() -> int:
    now = time.time() + NTP_EPOCH_OFFSET
    return (int(now) << 32) | int((now % 1) * (1 << 32))


def packets_since(
    history_packet: Callable[[int], bytes | None], start: int, last: int, limit: int
) -> list[bytes] | None:
    """Packets `start`..`last` from a history, or None if more than `limit` or any is gone."""
    count = ((last - start) & 0xFFFF) + 1
    if count > limit:
        return None
    packets = []
    for i in range(count):
        pkt = history_packet((start + i) & 0xFFFF)
        if pkt is None:
            return None
        packets.append(pkt)
    return packets


class ReceiveStats:
    """RFC 3550 appendix A.3 and A.8: what an RR reports about one incoming stream."""

    __slots__ = (
        "clock_rate",
        "base_seq",
        "max_seq",
        "cycles",
        "received",
        "octets",
        "jitter",
        "_transit",
        "_expected_prior",
        "_received_prior",
    )

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.base_seq = -1
        self.max_seq = -1
        self.cycles = 0
        self.received = 0
        self.octets = 0
        self.jitter = 0.0
        self._transit: int | None = None
        self._expected_prior = 0
        self._received_prior = 0

    def update(self, seq: int, ts: int, now: float, size: int) -> int:
        """Count one packet; return how many are missing right before it, or -1 if late."""
        self.received += 1
        self.octets += size
        transit = int(now * self.clock_rate) - ts
        last = self._transit
        self._transit = transit
        if last is not None:
            d = (transit - last) & 0xFFFFFFFF
            if d > 0x7FFFFFFF:
                d = 0x100000000 - d
            self.jitter += (d - self.jitter) / 16.0
        if self.max_seq < 0:
            self.base_seq = self.max_seq = seq
            return 0
        delta = (seq - self.max_seq) & 0xFFFF
        if delta == 0 or delta >= 0x8000:
            return -1
        if seq < self.max_seq:
            self.cycles += 0x10000
        self.max_seq = seq
        return delta - 1

    def report(self, ssrc: int, last_sr: tuple[int, int, float] | None, now: float) -> rtcp.RtcpReceiverInfo:
        extended = self.cycles + self.max_seq
        expected = extended - self.base_seq + 1 if self.max_seq >= 0 else 0
        lost = max(0, expected - self.received)
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lsr = dlsr = 0
        if last_sr is not None:
            lsr = (last_sr[0] >> 16) & 0xFFFFFFFF
            dlsr = min(0xFFFFFFFF, int((now - last_sr[2]) * 65536))
        return rtcp.RtcpReceiverInfo(
            ssrc=ssrc,
            fraction_lost=fraction,
            packets_lost=min(lost, 0x7FFFFF),
            highest_sequence=extended & 0xFFFFFFFF,
            jitter=int(self.jitter),
            lsr=lsr,
            dlsr=dlsr,
        )


class Publication:
    """One published track of one participant."""

    def __init__(
        self,
        *,
        participant_id: str,
        media: NegotiatedMedia,
        source: str,
        name: str,
        history_packets: int,
        keyframe_interval_s: float,
        max_bitrate: int,
        replay_max_age_s: float = 0.0,
    ) -> None:
        assert media.codec is not None
        self.id = f"TR_{next(_ids):x}{int(time.time() * 1000) % 0xFFFFFF:06x}"
        self.participant_id = participant_id
        self.kind = media.kind
        self.source = source
        self.name = name
        self.mid = media.mid
        self.codec = media.codec
        self.mime_type = media.codec.mimeType
        self.clock_rate = media.codec.clockRate
        self.payload_type = media.codec.payloadType
        self.rtx_payload_type = media.rtx_payload_type
        self.extensions: ExtensionMap = media.extensions
        self.ssrc: int | None = media.remote_ssrcs[0] if media.remote_ssrcs else None
        self.rtx_ssrc: int | None = media.remote_rtx_ssrcs.get(self.ssrc) if self.ssrc else None
        self.ended = False
        self.stats = ReceiveStats(self.clock_rate)
        self.last_sr: tuple[int, int, float] | None = None  # (ntp, rtp ts, arrival)
        self.keyframe_requests = 0
        self.nacks_sent = 0
        self.retransmissions_received = 0
        self.waiting = 0
        self._leg: MediaLeg = media.leg
        self._rtcp_ssrc = media.local_ssrc
        self._loop = asyncio.get_running_loop()
        self._downtracks: list[DownTrack] = []
        self._taps: list[Callable[[bytes], None]] = []
        self._keyframe_start = keyframe_detector(self.mime_type) if self.kind == "video" else None
        self._keyframe_interval = keyframe_interval_s
        self._replay_max_age = replay_max_age_s
        self.last_keyframe_seq: int | None = None
        self.last_keyframe_at = -1e9
        self._last_keyframe_request = -1e9
        # Losses too long to repair with NACKs (a dropped link whose peer connection lived).
        self.restarts = 0
        self._keyframe_timer: asyncio.TimerHandle | None = None
        self._keyframe_pending = False
        self._max_bitrate = max_bitrate
        size = 1 << max(6, (history_packets - 1).bit_length())
        self._history: list[bytes | None] | None = [None] * size if self.kind == "video" else None
        self._history_mask = size - 1
        self._missing: dict[int, int] = {}
        self._nack_timer: asyncio.TimerHandle | None = None
        self.on_ended: list[Callable[[Publication], None]] = []
        self.created_at = self._loop.time()
        # Frame arrival, for fps and freezes: one comparison per video packet.
        self.frames = 0
        self.freezes = 0
        self.freeze_time = 0.0
        self.last_frame_at: float | None = None
        self._frame_ts = -1
        self.width = 0
        self.height = 0
        self._last_audio: bytes | None = None
        # "max": the publisher may send what the best subscriber takes (the others get
        # a lower tier); "min": what the weakest takes (no tiers to fall back on).
        self.remb_policy = "min"

    # -- the per-packet path -------------------------------------------------------------

    def on_rtp(self, pkt: bytes, now: float) -> None:
        seq = (pkt[2] << 8) | pkt[3]
        ts = (pkt[4] << 24) | (pkt[5] << 16) | (pkt[6] << 8) | pkt[7]
        gap = self.stats.update(seq, ts, now, len(pkt))
        history = self._history
        keyframe = False
        if history is not None:
            history[seq & self._history_mask] = pkt
            if gap:
                self._on_gap(seq, gap)
            if ts != self._frame_ts and gap >= 0:
                self._new_frame(ts, now)
            if self._keyframe_start is not None and self._keyframe_start(pkt, payload_offset(pkt)):
                keyframe = True
                if gap >= 0:  # not a late retransmission of an older keyframe
                    self.last_keyframe_seq = seq
                    self.last_keyframe_at = now
                    self._keyframe_seen(pkt)
        else:
            self._last_audio = pkt
        for downtrack in self._downtracks:
            downtrack.write(pkt, seq, ts, keyframe)
        if self._taps:
            for tap in self._taps:
                tap(pkt)

    def _new_frame(self, ts: int, now: float) -> None:
        self._frame_ts = ts
        last = self.last_frame_at
        if last is not None and now - last > FREEZE_S:
            self.freezes += 1
            self.freeze_time += now - last
        self.last_frame_at = now
        self.frames += 1

    def _keyframe_seen(self, pkt: bytes) -> None:
        if self.mime_type.lower() == "video/vp8":
            size = vp8_dimensions(pkt, payload_offset(pkt))
            if size is not None:
                self.width, self.height = size

    def audio_level(self) -> int | None:
        """The last packet's RFC 6464 level in -dBov (0 loudest, 127 silence), if sent."""
        pkt = self._last_audio
        ext_id = self.extensions.audio_level_id
        if pkt is None or not ext_id:
            return None
        return audio_level(pkt, ext_id)

    def on_rtx(self, pkt: bytes, now: float) -> None:
        if self.ssrc is None:
            return
        original = unwrap_rtx(pkt, self.payload_type, self.ssrc)
        if original is not None:  # None: a padding-only bandwidth probe
            self.retransmissions_received += 1
            self.on_rtp(original, now)

    def _on_gap(self, seq: int, gap: int) -> None:
        if gap < 0:
            self._missing.pop(seq, None)
            return
        if gap > MAX_NACK_GAP:
            # Too much is lost to repair: every subscriber goes on at the next keyframe, with
            # sequence numbers that hide the hole. A subscriber shown the hole waits for the
            # missing packets until its jitter buffer overflows (aiortc's holds 512 packets:
            # over half a minute of video at 15 a second) before it asks for a keyframe.
            self._missing.clear()
            self.restarts += 1
            for downtrack in self._downtracks:
                downtrack.restart_on_keyframe()
            self.request_keyframe()
            return
        for back in range(gap, 0, -1):
            self._missing[(seq - back) & 0xFFFF] = 0
        self._send_nacks()

    def _send_nacks(self) -> None:
        self._nack_timer = None
        if self.ended or not self._missing or self.ssrc is None:
            return
        lost = []
        for seq, tries in list(self._missing.items()):
            if tries >= NACK_MAX_TRIES:
                del self._missing[seq]
            else:
                self._missing[seq] = tries + 1
                lost.append(seq)
        if lost:
            self.nacks_sent += 1
            self._leg.send_rtcp(rtcp.nack(self._rtcp_ssrc, self.ssrc, lost))
            self._nack_timer = self._loop.call_later(NACK_RETRY_S, self._send_nacks)

    def recent_keyframe(self) -> list[bytes] | None:
        """Every packet from the latest keyframe on, if it is recent and all are held.

        A subscriber that starts with these shows video at once instead of waiting for
        the keyframe its request will bring; the age limit bounds the catch-up burst.
        """
        start = self.last_keyframe_seq
        if start is None or self._history is None or self.stats.max_seq < 0:
            return None
        if self._loop.time() - self.last_keyframe_at > self._replay_max_age:
            return None
        return packets_since(self.history_packet, start, self.stats.max_seq, len(self._history) // 2)

    def history_packet(self, seq: int) -> bytes | None:
        if self._history is None:
            return None
        pkt = self._history[seq & self._history_mask]
        if pkt is None or ((pkt[2] << 8) | pkt[3]) != seq:
            return None
        return pkt

    # -- subscribers and taps ---------------------------------------------------------------

    def attach(self, downtrack: DownTrack) -> None:
        self._downtracks.append(downtrack)

    def detach(self, downtrack: DownTrack) -> None:
        if downtrack in self._downtracks:
            self._downtracks.remove(downtrack)

    @property
    def downtracks(self) -> list[DownTrack]:
        return list(self._downtracks)

    def add_tap(self, tap: Callable[[bytes], None]) -> None:
        self._taps.append(tap)

    def remove_tap(self, tap: Callable[[bytes], None]) -> None:
        if tap in self._taps:
            self._taps.remove(tap)

    def replace_tap(self, old: Callable[[bytes], None], new: Callable[[bytes], None]) -> None:
        """In place, so that a tap may swap itself while the packet loop runs over the list."""
        for i, tap in enumerate(self._taps):
            if tap == old:
                self._taps[i] = new

    # -- RTCP ---------------------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, at most once per keyframe interval."""
        if self.kind != "video" or self.ended:
            return
        wait = self._last_keyframe_request + self._keyframe_interval - self._loop.time()
        if wait <= 0:
            self._send_pli()
        elif self._keyframe_timer is None:
            self._keyframe_timer = self._loop.call_later(wait, self._send_pli)

    def _send_pli(self) -> None:
        self._keyframe_timer = None
        if self.ended or self.ssrc is None or not self._leg.active:
            # Not sent, so not counted against the interval: the publisher's leg
            # comes up and asks again at once (leg_ready), not an interval later.
            self._keyframe_pending = True
            return
        self._keyframe_pending = False
        self._last_keyframe_request = self._loop.time()
        self.keyframe_requests += 1
        # Always the media SSRC: a PLI to the RTX SSRC is ignored by Chromium.
        self._leg.send_rtcp(rtcp.pli(self._rtcp_ssrc, self.ssrc))

    def on_sender_report(self, packet: rtcp.RtcpSrPacket) -> None:
        info = packet.sender_info
        self.last_sr = (info.ntp_timestamp, info.rtp_timestamp, self._loop.time())

    def extrapolated_sr(self, now: float) -> tuple[int, int] | None:
        """(NTP, RTP timestamp) the publisher's clocks read now, from its last SR."""
        if self.last_sr is None:
            return None
        ntp, rtp_ts, at = self.last_sr
        elapsed = max(0.0, now - at)
        return ntp + int(elapsed * (1 << 32)), (rtp_ts + int(elapsed * self.clock_rate)) & 0xFFFFFFFF

    def send_receiver_report(self) -> None:
        if self.ssrc is None or self.ended:
            return
        now = self._loop.time()
        data = rtcp.rr(self._rtcp_ssrc, [self.stats.report(self.ssrc, self.last_sr, now)])
        if self.kind == "video":
            data += rtcp.remb(self._rtcp_ssrc, self.target_bitrate(now), [self.ssrc])
        self._leg.send_rtcp(data)
        if self.waiting and now - self._last_keyframe_request > 1.0:
            self.request_keyframe()  # the first request may have been lost


    def target_bitrate(self, now: float) -> int:
        """What the publisher may send, from the estimates its subscribers reported.

        Without tiers, the lowest one: every subscriber must be able to take it.
        With tiers ("max"), the highest: a subscriber who cannot take it moves to a
        lower tier instead of holding everyone else down.
        """
        estimates = [
            d.remb_bitrate for d in self._downtracks if d.remb_bitrate and now - d.remb_at < REMB_FRESH_S
        ]
        if not estimates:
            return self._max_bitrate
        best = max(estimates) if self.remb_policy == "max" else min(estimates)
        return max(min(best, self._max_bitrate), 50_000)

    # -- lifecycle ---------------------------------------------------------------------

    def leg_ready(self) -> None:
        """The publisher's DTLS is up: send the keyframe request that could not go yet."""
        if self._keyframe_pending:
            self._send_pli()

    def learn_ssrc(self, ssrc: int) -> None:
        if self.ssrc is None:
            self.ssrc = ssrc
            self.leg_ready()

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        for timer in (self._keyframe_timer, self._nack_timer):
            if timer is not None:
                timer.cancel()
        self._keyframe_timer = self._nack_timer = None
        downtracks, self._downtracks = self._downtracks, []
        for downtrack in downtracks:
            downtrack.publication_ended()
        self._taps.clear()
        self._history = None
        self._missing.clear()
        callbacks, self.on_ended = self.on_ended, []
        for callback in callbacks:
            callback(self)

    def info(self) -> dict[str, Any]:
        return {
            "track_id": self.id,
            "participant_id": self.participant_id,
            "kind": self.kind,
            "source": self.source,
            "name": self.name,
            "codec": self.mime_type,
            "mid": self.mid,
        }
