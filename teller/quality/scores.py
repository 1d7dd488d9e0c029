"""Scores staff can read at a glance: an E-model MOS for audio, a tier for video.

The SFU never decodes audio, so a perceptual model (P.863) is out of reach; the
ITU-T G.107 E-model (06/2015) needs only what RTCP already gives us (loss, its
burstiness, round-trip time, jitter) plus constants for the codec. It is a
planning model: it says how a typical listener would rate such a path, not how
this call sounded. docs/quality.md ("Scores") has the formulas and sources.

Video has no equivalent standard that works on RTP counters alone, so it gets a
coarse tier from frame rate, freezes and loss: the things a customer notices.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

LEVELS = ("good", "fair", "poor")


@dataclass(frozen=True)
class EModelParams:
    """G.107 terms for an Opus call between two WebRTC endpoints.

    The terms a browser does not report (loudness ratings, room noise, sidetone,
    echo losses) stay at the G.107 Table 3 defaults, evaluated once here:

    - ``ro`` = 94.77: basic signal-to-noise ratio Ro = 15 - 1.5 (SLR + No) with
      SLR 8 dB, RLR 2 dB, Ds = Dr = 3, Ps = Pr = 35 dB(A), LSTR 18 dB,
      Nc -70 dBm0p, Nfor -64 dBmp, which give No = -61.18 dBm0p.
    - ``is_`` = 1.41: simultaneous impairments Is = Iolr 0.44 (OLR 10 dB)
      + Ist 0.00 (STMR 15 dB) + Iq 0.97 (qdu 1).
    - ``no_db`` and ``rlr_db`` feed the echo terms; ``telr_db`` 65 dB and ``wepl_db``
      110 dB are the G.107 defaults for talker echo loudness and weighted echo path
      loss: echo is assumed controlled as well as G.107's reference connection,
      since no endpoint tells us how well its echo canceller does.

    Ro - Is = 93.36, and the listener-echo term at zero delay (Idle 0.15) brings a
    perfect, delay-free G.711 path to the familiar R = 93.2.

    ``delay_sensitivity`` (sT) and ``min_delay_ms`` (mT) are the 2015 edition's
    delay-sensitivity parameters; their defaults (1, 100 ms) are the classic Idd
    curve that G.107 prescribes for carrier- and enterprise-grade telephony,
    which a bank's customer line is.

    Opus is in neither G.107 nor G.113, so ``ie`` and ``bpl`` are our choice:

    - ``ie`` = 0: wideband Opus at WebRTC's 32 kbit/s or so rates at least as well
      as G.711 in listening tests, and the narrowband scale cannot credit more
      than G.711 (Ie 0). Published fits for Opus (0 to about 11) run higher only
      for narrowband or low bit rates, which a browser chooses under congestion.
    - ``bpl`` = 20: no fit for Opus is authoritative, so it sits between G.113's
      G.729A+VAD (Bpl 19, 10 ms frames, model-based concealment) and G.711 with
      Appendix I concealment (25.1). Opus hides a lost 20 ms frame about as well
      as those, and a 20 ms loss removes more speech than a 10 ms one. It assumes
      in-band FEC is off. Browsers offer FEC and turn it on once loss is
      reported, so the score then errs low, the safe side for an alert.

    The delay terms build the mouth-to-ear delay Ta (see ``audio_mos``):
    ``codec_delay_ms`` 26.5 is Opus's algorithmic delay at 20 ms frames
    (RFC 6716: the frame plus 6.5 ms look-ahead); a receiver's jitter buffer
    holds ``jitter_buffer_factor`` x the RFC 3550 jitter, at least
    ``jitter_buffer_min_ms``; ``default_one_way_ms`` stands in for the network
    when no RTT has been measured yet.
    """

    ro: float = 94.77
    is_: float = 1.41
    no_db: float = -61.18
    rlr_db: float = 2.0
    telr_db: float = 65.0
    wepl_db: float = 110.0
    delay_sensitivity: float = 1.0
    min_delay_ms: float = 100.0
    advantage: float = 0.0
    ie: float = 0.0
    bpl: float = 20.0
    codec_delay_ms: float = 26.5
    jitter_buffer_factor: float = 2.0
    jitter_buffer_min_ms: float = 20.0
    default_one_way_ms: float = 50.0


OPUS = EModelParams()


def idd(ta_ms: float, params: EModelParams = OPUS) -> float:
    """G.107 impairment from absolute delay alone (conversational interactivity)."""
    mt = params.min_delay_ms
    if ta_ms <= mt:
        return 0.0
    x = math.log2(ta_ms / mt)
    e = 6.0 * params.delay_sensitivity
    return 25.0 * ((1.0 + x**e) ** (1.0 / e) - 3.0 * (1.0 + (x / 3.0) ** e) ** (1.0 / e) + 2.0)


def idte(t_ms: float, params: EModelParams = OPUS) -> float:
    """G.107 talker-echo impairment, with the echo path delay T taken as Ta."""
    t = max(0.0, t_ms)
    terv = params.telr_db - 40.0 * math.log10((1.0 + t / 10.0) / (1.0 + t / 150.0))
    terv += 6.0 * math.exp(-0.3 * t * t)
    re = 80.0 + 2.5 * (terv - 14.0)
    roe = -1.5 * (params.no_db - params.rlr_db)
    d = roe - re
    return (d / 2.0 + math.sqrt(d * d / 4.0 + 100.0) - 1.0) * (1.0 - math.exp(-t))


def idle(tr_ms: float, params: EModelParams = OPUS) -> float:
    """G.107 listener-echo impairment; Tr is the round trip, 2 Ta here."""
    rle = 10.5 * (params.wepl_db + 7.0) * (max(0.0, tr_ms) + 1.0) ** -0.25
    d = params.ro - rle
    return d / 2.0 + math.sqrt(d * d / 4.0 + 169.0)


def ie_eff(loss: float, burst_ratio: float = 1.0, params: EModelParams = OPUS) -> float:
    """G.107 effective equipment impairment under packet loss (a fraction, 0-1)."""
    if burst_ratio <= 0:
        raise ValueError("burst_ratio must be positive")
    ppl = 100.0 * min(1.0, max(0.0, loss))
    return params.ie + (95.0 - params.ie) * ppl / (ppl / burst_ratio + params.bpl)


def r_factor(
    loss: float,
    one_way_delay_ms: float,
    burst_ratio: float = 1.0,
    params: EModelParams = OPUS,
) -> float:
    """R = Ro - Is - Id - Ie,eff + A, clipped to 0-100.

    `loss` is a fraction (0.05 is 5 %), as teller.quality.stats reports it;
    `burst_ratio` is G.107's BurstR (1 for random loss, above 1 for bursts).
    """
    ta = max(0.0, one_way_delay_ms)
    delay = idte(ta, params) + idle(2.0 * ta, params) + idd(ta, params)
    r = params.ro - params.is_ - delay - ie_eff(loss, burst_ratio, params) + params.advantage
    return min(100.0, max(0.0, r))


def mos_from_r(r: float) -> float:
    """G.107 Annex B: R to the MOS a listening-quality test would give (1-4.5).

    The cubic dips to 0.99 just above R = 0; it is held at 1, the bottom of the scale.
    """
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return max(1.0, 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6)


def mouth_to_ear_ms(rtt_ms: float | None, jitter_ms: float, params: EModelParams = OPUS) -> float:
    """Ta: half the RTT, the receiver's jitter buffer and the codec's own delay.

    Pass the RTT of the whole media path: through the SFU that is the sum of the
    publisher's and the subscriber's legs.
    """
    network = params.default_one_way_ms if rtt_ms is None or rtt_ms < 0 else rtt_ms / 2.0
    buffer = max(params.jitter_buffer_min_ms, params.jitter_buffer_factor * max(0.0, jitter_ms))
    return network + buffer + params.codec_delay_ms


def audio_mos(
    loss: float,
    rtt_ms: float | None,
    jitter_ms: float,
    params: EModelParams = OPUS,
    *,
    burst_ratio: float = 1.0,
) -> float:
    """Estimated MOS of an Opus stream from its RTCP figures, to 2 decimals."""
    ta = mouth_to_ear_ms(rtt_ms, jitter_ms, params)
    return round(mos_from_r(r_factor(loss, ta, burst_ratio, params)), 2)


@dataclass(frozen=True)
class VideoThresholds:
    """Where a video stops being good, then fair; each is judged over quality.window_s.

    - fps: motion in a talking head turns visibly jerky below about 15 fps and
      lips no longer follow speech below about 8 (quality.fps_warning).
    - loss (network loss before NACK repair): up to 2 % is repaired unseen and is
      where GCC still raises the rate (and quality.up_loss); above 8 % the SFU moves
      a subscriber down a tier (quality.down_loss), short of GCC's 10 % cut.
    - freeze_ratio, the share of the window without a new frame: a freeze lasts at
      least FREEZE_S (0.5 s), so "good" means no freeze at all; one short freeze in
      the default 3 s window (up to 0.6 s) is fair, more is poor.
    """

    good_fps: float = 15.0
    fair_fps: float = 8.0
    good_loss: float = 0.02
    fair_loss: float = 0.08
    good_freeze_ratio: float = 0.01
    fair_freeze_ratio: float = 0.2


VIDEO = VideoThresholds()


def _level(value: float, good: float, fair: float, higher_is_better: bool) -> str:
    if higher_is_better:
        return "good" if value >= good else "fair" if value >= fair else "poor"
    return "good" if value <= good else "fair" if value <= fair else "poor"


def video_tier(
    fps: float,
    expected_fps: float | None,
    freeze_ratio: float,
    loss: float,
    thresholds: VideoThresholds = VIDEO,
) -> str:
    """The tier, "good", "fair" or "poor": the worst of frame rate, freezes and loss.

    A publisher may send fewer frames by design (a 5 fps slide share, a 10 fps
    low tier): with `expected_fps` known, the fps bar is 0.8 x that when it is
    lower than good_fps, and the fair bar moves down in the same proportion, so
    such a stream is judged against what it should deliver.
    """
    good_fps, fair_fps = thresholds.good_fps, thresholds.fair_fps
    if expected_fps is not None and expected_fps > 0 and 0.8 * expected_fps < good_fps:
        good_fps = 0.8 * expected_fps
        fair_fps *= good_fps / thresholds.good_fps
    return worst(
        (
            _level(fps, good_fps, fair_fps, higher_is_better=True),
            _level(
                freeze_ratio, thresholds.good_freeze_ratio, thresholds.fair_freeze_ratio, higher_is_better=False
            ),
            _level(loss, thresholds.good_loss, thresholds.fair_loss, higher_is_better=False),
        )
    )


def worst(levels: Iterable[str]) -> str:
    """The worst of "good" < "fair" < "poor"; "good" when there is nothing to judge."""
    rank = 0
    for level in levels:
        if level not in LEVELS:
            raise ValueError(f"unknown quality level {level!r}")
        rank = max(rank, LEVELS.index(level))
    return LEVELS[rank]
