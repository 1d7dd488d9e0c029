"""Alerts with hysteresis: a condition must hold a while to raise, and be gone a while to clear.

A 1-second sample of a rural link flickers; an agent who sees "network poor" come
and go every second learns to ignore it. So a condition must hold
`alert_after_s` before the alert is raised, and be absent `clear_after_s` before
it is cleared. A rise in severity is announced at once.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import QualitySettings

SEVERITIES = ("warning", "critical")
_ids = itertools.count(1)


@dataclass
class Condition:
    """What one evaluation found for one participant: kind -> (severity, values)."""

    kind: str
    severity: str
    message: str
    suggestion: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class Alert:
    alert_id: str
    kind: str
    severity: str
    state: str  # "raised" or "cleared"
    message: str
    suggestion: str | None
    participant_id: str
    identity: str
    role: str
    raised_at: float
    values: dict[str, Any]
    cleared_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Track:
    since: float | None = None  # the condition has held since
    absent_since: float | None = None
    alert: Alert | None = None


def conditions(role: str, who: str, figures: dict[str, Any], settings: QualitySettings) -> list[Condition]:
    """The alert conditions one participant's figures meet now.

    `figures` holds loss (the worse of up- and downlink, windowed), rtt_ms,
    jitter_ms, mos, and for its video: fps, expected_fps, frozen_s.
    """
    out: list[Condition] = []
    loss = figures.get("loss") or 0.0
    if loss >= settings.loss_warning:
        severity = "critical" if loss >= settings.loss_critical else "warning"
        out.append(Condition(
            "network_poor", severity, f"{who}'s network is poor: suggest audio only",
            "audio_only", {"loss": round(loss, 4)},
        ))
    rtt = figures.get("rtt_ms")
    if rtt is not None and rtt >= settings.rtt_warning_ms:
        out.append(Condition(
            "high_latency", "warning", f"{who}'s connection is slow (round trip {rtt:.0f} ms): pause between turns",
            None, {"rtt_ms": round(rtt, 1)},
        ))
    jitter = figures.get("jitter_ms")
    if jitter is not None and jitter >= settings.jitter_warning_ms:
        out.append(Condition(
            "high_jitter", "warning", f"{who}'s connection is unsteady (jitter {jitter:.0f} ms)",
            None, {"jitter_ms": round(jitter, 1)},
        ))
    mos = figures.get("mos")
    if mos is not None and mos < settings.mos_warning:
        severity = "critical" if mos < settings.mos_critical else "warning"
        out.append(Condition(
            "audio_poor", severity, f"{who}'s voice may break up (MOS {mos:.1f}): ask them to repeat key facts",
            None, {"mos": mos},
        ))
    frozen = figures.get("frozen_s") or 0.0
    fps = figures.get("fps")
    expected = figures.get("expected_fps")
    if frozen >= settings.freeze_warning_s:
        out.append(Condition(
            "video_frozen", "critical", f"{who}'s picture is frozen ({frozen:.0f} s): suggest audio only",
            "audio_only", {"frozen_s": round(frozen, 1)},
        ))
    elif fps is not None and expected and fps < settings.fps_warning <= expected:
        out.append(Condition(
            "video_poor", "warning", f"{who}'s picture is choppy ({fps:.0f} fps)",
            "audio_only", {"fps": round(fps, 1)},
        ))
    return out


class AlertBook:
    """The alerts of one participant: which are raised, and what changed this tick."""

    def __init__(self, participant_id: str, identity: str, role: str, settings: QualitySettings) -> None:
        self.participant_id = participant_id
        self.identity = identity
        self.role = role
        self._settings = settings
        self._tracks: dict[str, _Track] = {}
        self.raised_count = 0

    @property
    def active(self) -> list[Alert]:
        return [t.alert for t in self._tracks.values() if t.alert is not None]

    def update(self, found: list[Condition], now: float) -> list[Alert]:
        """Feed this tick's conditions; returns alerts raised, escalated or cleared now."""
        changed: list[Alert] = []
        seen = {c.kind: c for c in found}
        for kind, condition in seen.items():
            track = self._tracks.setdefault(kind, _Track())
            track.absent_since = None
            if track.since is None:
                track.since = now
            alert = track.alert
            if alert is None:
                if now - track.since >= self._settings.alert_after_s:
                    track.alert = self._raise(condition)
                    changed.append(track.alert)
            else:
                alert.values = condition.values
                if SEVERITIES.index(condition.severity) > SEVERITIES.index(alert.severity):
                    alert.severity = condition.severity
                    alert.message = condition.message
                    changed.append(alert)
        for kind, track in list(self._tracks.items()):
            if kind in seen:
                continue
            track.since = None
            if track.alert is None:
                del self._tracks[kind]
                continue
            if track.absent_since is None:
                track.absent_since = now
            if now - track.absent_since >= self._settings.clear_after_s:
                alert = track.alert
                alert.state = "cleared"
                alert.cleared_at = round(time.time(), 3)
                changed.append(alert)
                del self._tracks[kind]
        return changed

    def clear_all(self) -> list[Alert]:
        """Clear every raised alert now (its participant left)."""
        cleared = []
        for track in self._tracks.values():
            if track.alert is not None:
                track.alert.state = "cleared"
                track.alert.cleared_at = round(time.time(), 3)
                cleared.append(track.alert)
        self._tracks.clear()
        return cleared

    def _raise(self, condition: Condition) -> Alert:
        self.raised_count += 1
        return Alert(
            alert_id=f"QA_{next(_ids):x}{int(time.time() * 1000) % 0xFFFFFF:06x}",
            kind=condition.kind,
            severity=condition.severity,
            state="raised",
            message=condition.message,
            suggestion=condition.suggestion,
            participant_id=self.participant_id,
            identity=self.identity,
            role=self.role,
            raised_at=round(time.time(), 3),
            values=condition.values,
        )
