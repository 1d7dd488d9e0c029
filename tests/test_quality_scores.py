"""E-model MOS and video tiers against numbers worked out by hand from G.107.

Every expected value below comes from the formulas in docs/quality.md with the
default constants (Ro 94.77, Is 1.41, No -61.18, RLR 2, TELR 65, WEPL 110,
Opus Ie 0, Bpl 20, codec delay 26.5 ms), not from the code under test.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from teller.quality.scores import (
    OPUS,
    VideoThresholds,
    audio_mos,
    idd,
    idle,
    idte,
    ie_eff,
    mos_from_r,
    mouth_to_ear_ms,
    r_factor,
    video_tier,
    worst,
)

# -- audio: the E-model ------------------------------------------------------------------


def test_perfect_path_is_93_2_minus_ie() -> None:
    # Ta = 0: Idte = 0 (factor 1 - e^0), Idd = 0, and
    # Idle = 169 / (1133.73 + sqrt(1133.73^2 + 4 * 169)) * 2 = 0.149, with
    # Rle = 10.5 * 117 = 1228.5 and Ro - Rle = -1133.73. R = 94.77 - 1.41 - 0.149 = 93.21.
    assert r_factor(0.0, 0.0) == pytest.approx(93.21, abs=0.005)
    assert r_factor(0.0, 0.0, params=replace(OPUS, ie=10.0)) == pytest.approx(83.21, abs=0.005)
    assert r_factor(0.0, 0.0, params=replace(OPUS, ie=11.0)) == pytest.approx(93.2 - 11.0, abs=0.02)


def test_mos_of_the_reference_connection() -> None:
    # 1 + 0.035 * 93.2 + 93.2 * 33.2 * 6.8 * 7e-6 = 1 + 3.262 + 0.14729 = 4.4093
    assert mos_from_r(93.2) == pytest.approx(4.4093, abs=1e-4)
    # R = 50: 1 + 1.75 + 50 * (-10) * 50 * 7e-6 = 2.575
    assert mos_from_r(50.0) == pytest.approx(2.575, abs=1e-9)
    # R = 70: 1 + 2.45 + 70 * 10 * 30 * 7e-6 = 3.597
    assert mos_from_r(70.0) == pytest.approx(3.597, abs=1e-9)


def test_mos_bounds() -> None:
    assert mos_from_r(-5.0) == 1.0
    assert mos_from_r(0.0) == 1.0
    assert mos_from_r(3.0) == 1.0  # the cubic gives 0.9889 here; the scale stops at 1
    assert mos_from_r(100.0) == 4.5
    assert mos_from_r(130.0) == 4.5
    assert audio_mos(1.0, 4000.0, 500.0) == 1.0
    assert r_factor(1.0, 5000.0) == 0.0
    assert r_factor(0.0, 0.0, params=replace(OPUS, advantage=20.0)) == 100.0
    assert 4.3 < audio_mos(0.0, 0.0, 0.0) <= 4.5


def test_idd_follows_g107() -> None:
    assert idd(0.0) == 0.0
    assert idd(100.0) == 0.0
    # Ta = 200: X = 1; 25 * (2^(1/6) - 3 * (1 + 3^-6)^(1/6) + 2)
    #         = 25 * (1.122462 - 3.000686 + 2) = 3.044
    assert idd(200.0) == pytest.approx(3.044, abs=0.002)
    # Ta = 300: X = log2(3) = 1.58496, X^6 = 15.8496, (X/3)^6 = 0.021660
    #   16.8496^(1/6) = 1.601143, 1.021660^(1/6) = 1.003578
    #   25 * (1.601143 - 3.010735 + 2) = 14.760
    assert idd(300.0) == pytest.approx(14.760, abs=0.002)
    # Ta = 400: X = 2; 65^(1/6) = 2.005170, (1 + (2/3)^6)^(1/6) = 1.014124
    #   25 * (2.005170 - 3.042373 + 2) = 24.070
    assert idd(400.0) == pytest.approx(24.070, abs=0.002)


def test_idd_is_flat_for_less_sensitive_uses() -> None:
    # G.107 (2015) mT: nothing below the minimum perceivable delay.
    assert idd(300.0, replace(OPUS, min_delay_ms=300.0)) == 0.0
    assert idd(400.0, replace(OPUS, delay_sensitivity=0.5)) < idd(400.0)


def test_echo_terms_with_default_telr_and_wepl() -> None:
    # T = 150: TERV = 65 - 40 log10(16 / 2) + 0 = 28.876; Re = 80 + 2.5 * 14.876 = 117.19
    #   Roe = -1.5 * (-61.18 - 2) = 94.77; Roe - Re = -22.42
    #   Idte = -11.21 + sqrt(125.67 + 100) - 1 = 2.81
    assert idte(150.0) == pytest.approx(2.81, abs=0.01)
    assert idte(0.0) == 0.0
    # Tr = 300: Rle = 1228.5 / 301^0.25 = 294.94; Ro - Rle = -200.17
    #   Idle = -100.09 + sqrt(10017.0 + 169) = 0.84
    assert idle(300.0) == pytest.approx(0.84, abs=0.01)


def test_loss_impairment() -> None:
    # 5 % random: Ie,eff = 0 + 95 * 5 / (5 / 1 + 20) = 19.0
    assert ie_eff(0.05) == pytest.approx(19.0)
    # the same loss in bursts twice as long as random: 95 * 5 / (2.5 + 20) = 21.11
    assert ie_eff(0.05, burst_ratio=2.0) == pytest.approx(21.111, abs=0.001)
    # 100 %: 95 * 100 / (100 + 20) = 79.17
    assert ie_eff(1.0) == pytest.approx(79.167, abs=0.001)
    assert ie_eff(0.0, params=replace(OPUS, ie=11.0)) == 11.0
    # R moves by exactly Ie,eff at equal delay
    assert r_factor(0.0, 0.0) - r_factor(0.05, 0.0) == pytest.approx(19.0)


def test_bursty_loss_hurts_more_than_random() -> None:
    for loss in (0.01, 0.03, 0.1):
        assert r_factor(loss, 80.0, burst_ratio=2.0) < r_factor(loss, 80.0, burst_ratio=1.0)
        assert audio_mos(loss, 100.0, 10.0, burst_ratio=3.0) < audio_mos(loss, 100.0, 10.0)
    with pytest.raises(ValueError):
        r_factor(0.01, 80.0, burst_ratio=0.0)


def test_r_falls_with_loss_and_with_delay() -> None:
    by_loss = [r_factor(loss / 100, 80.0) for loss in range(0, 31)]
    assert all(a > b for a, b in zip(by_loss, by_loss[1:]))
    by_delay = [r_factor(0.01, ms) for ms in range(10, 801, 10)]
    assert all(a > b for a, b in zip(by_delay, by_delay[1:]))
    by_rtt = [audio_mos(0.0, rtt, 5.0) for rtt in (20, 200, 400, 600, 800)]
    assert all(a > b for a, b in zip(by_rtt, by_rtt[1:]))


def test_mouth_to_ear_delay() -> None:
    # RTT / 2 + max(20, 2 * jitter) + 26.5
    assert mouth_to_ear_ms(100.0, 10.0) == pytest.approx(50 + 20 + 26.5)
    assert mouth_to_ear_ms(100.0, 30.0) == pytest.approx(50 + 60 + 26.5)
    assert mouth_to_ear_ms(300.0, 0.0) == pytest.approx(150 + 20 + 26.5)
    # RTT unknown: 50 ms one way
    assert mouth_to_ear_ms(None, 5.0) == pytest.approx(50 + 20 + 26.5)
    assert mouth_to_ear_ms(None, 5.0, replace(OPUS, default_one_way_ms=80.0)) == pytest.approx(126.5)


def test_plausible_call() -> None:
    # 5 % random loss, RTT 100 ms, jitter 10 ms: Ta = 50 + 20 + 26.5 = 96.5 ms, Idd = 0.
    #   Idte(96.5): TERV = 65 - 40 log10(10.65 / 1.6433) = 32.535; Re = 126.34;
    #     Roe - Re = -31.57; Idte = -15.78 + sqrt(249.2 + 100) - 1 = 1.90
    #   Idle(193): Rle = 1228.5 / 194^0.25 = 329.17; Ro - Rle = -234.40;
    #     Idle = -117.20 + sqrt(13735.8 + 169) = 0.72
    #   R = 94.77 - 1.41 - 1.90 - 0.72 - 19.0 = 71.74
    #   MOS = 1 + 2.5109 + 71.74 * 11.74 * 28.26 * 7e-6 = 3.678: "fair", as a listener
    #   hearing a clipped word every couple of seconds would say.
    assert r_factor(0.05, 96.5) == pytest.approx(71.74, abs=0.02)
    assert audio_mos(0.05, 100.0, 10.0) == pytest.approx(3.68, abs=0.011)
    # Clean path, RTT unknown: R = 93.36 - 1.90 - 0.72 = 90.74;
    #   MOS = 1 + 3.1759 + 90.74 * 30.74 * 9.26 * 7e-6 = 4.357
    assert audio_mos(0.0, None, 0.0) == pytest.approx(4.36, abs=0.011)
    # 1 % loss over a long path (RTT 500 ms, jitter 20 ms): Ta = 250 + 40 + 26.5 = 316.5.
    #   Ie,eff = 95 / 21 = 4.524; Idd(316.5): X = 1.66224, X^6 = 21.1117,
    #   22.1117^(1/6) = 1.675; (X/3)^6 = 0.029089, 1.029089^(1/6) = 1.004790;
    #   Idd = 25 * (1.67509 - 3.01437 + 2) = 16.52
    #   Idte(316.5): TERV = 65 - 40 log10(32.65 / 3.11) = 24.156, Re = 105.39,
    #     Roe - Re = -10.62, Idte = -5.31 + sqrt(28.20 + 100) - 1 = 5.01
    #   Idle(633): Rle = 1228.5 / 633^0.25 = 244.21, Ro - Rle = -149.44,
    #     Idle = -74.72 + sqrt(5583.1 + 169) = 1.12
    #   R = 93.36 - 5.01 - 1.12 - 16.52 - 4.52 = 66.19
    #   MOS = 1 + 2.3167 + 66.19 * 6.19 * 33.81 * 7e-6 = 3.41
    assert audio_mos(0.01, 500.0, 20.0) == pytest.approx(3.41, abs=0.011)


# -- video tiers ---------------------------------------------------------------------------


def test_video_tier_boundaries() -> None:
    assert video_tier(30.0, None, 0.0, 0.0) == "good"
    assert video_tier(15.0, None, 0.0, 0.0) == "good"
    assert video_tier(14.9, None, 0.0, 0.0) == "fair"
    assert video_tier(8.0, None, 0.0, 0.0) == "fair"
    assert video_tier(7.9, None, 0.0, 0.0) == "poor"
    assert video_tier(30.0, None, 0.0, 0.02) == "good"
    assert video_tier(30.0, None, 0.0, 0.021) == "fair"
    assert video_tier(30.0, None, 0.0, 0.08) == "fair"
    assert video_tier(30.0, None, 0.0, 0.081) == "poor"
    assert video_tier(30.0, None, 0.01, 0.0) == "good"
    assert video_tier(30.0, None, 0.17, 0.0) == "fair"  # one 0.5 s freeze in 3 s
    assert video_tier(30.0, None, 0.2, 0.0) == "fair"
    assert video_tier(30.0, None, 0.34, 0.0) == "poor"


def test_video_tier_is_the_worst_criterion() -> None:
    assert video_tier(30.0, None, 0.0, 0.09) == "poor"
    assert video_tier(10.0, None, 0.0, 0.0) == "fair"
    assert video_tier(10.0, None, 0.5, 0.0) == "poor"
    assert video_tier(30.0, None, 0.1, 0.05) == "fair"


def test_video_tier_expected_fps() -> None:
    # A 10 fps tier: good from 0.8 * 10 = 8 fps, fair from 8 * 8 / 15 = 4.27 fps.
    assert video_tier(8.0, 10.0, 0.0, 0.0) == "good"
    assert video_tier(7.9, 10.0, 0.0, 0.0) == "fair"
    assert video_tier(4.3, 10.0, 0.0, 0.0) == "fair"
    assert video_tier(4.2, 10.0, 0.0, 0.0) == "poor"
    # A 5 fps slide share: good from 4, fair from 2.13.
    assert video_tier(4.0, 5.0, 0.0, 0.0) == "good"
    assert video_tier(3.0, 5.0, 0.0, 0.0) == "fair"
    assert video_tier(2.0, 5.0, 0.0, 0.0) == "poor"
    # 30 fps expected: 0.8 * 30 = 24 is above 15, so the threshold stands.
    assert video_tier(15.0, 30.0, 0.0, 0.0) == "good"
    assert video_tier(14.0, 30.0, 0.0, 0.0) == "fair"
    # Unknown or nonsense expectations change nothing.
    assert video_tier(7.0, 0.0, 0.0, 0.0) == "poor"
    assert video_tier(7.0, None, 0.0, 0.0) == "poor"


def test_video_thresholds_are_configurable() -> None:
    strict = VideoThresholds(good_fps=25.0, fair_fps=15.0)
    assert video_tier(20.0, None, 0.0, 0.0, strict) == "fair"
    assert video_tier(14.0, None, 0.0, 0.0, strict) == "poor"


def test_worst() -> None:
    assert worst([]) == "good"
    assert worst(["good", "good"]) == "good"
    assert worst(["good", "fair"]) == "fair"
    assert worst(iter(["fair", "poor", "good"])) == "poor"
    with pytest.raises(ValueError):
        worst(["bad"])
