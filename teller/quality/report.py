"""The per-session quality report: accumulated live, summarised per participant as
it leaves (a `quality_summary` timeline event), and written beside the recording
as quality.json from the session's timeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REPORT_EVENTS = ("quality_summary", "quality_alert", "tier_changed")


@dataclass
class ParticipantReport:
    participant_id: str
    identity: str
    role: str
    name: str
    seconds: float = 0.0
    mos_sum: float = 0.0
    mos_n: int = 0
    mos_min: float | None = None
    loss_up_sum: float = 0.0
    loss_up_max: float = 0.0
    loss_down_sum: float = 0.0
    loss_down_max: float = 0.0
    rtt_sum: float = 0.0
    rtt_n: int = 0
    rtt_max: float = 0.0
    jitter_max: float = 0.0
    fps_sum: float = 0.0
    fps_n: int = 0
    bitrate_up_sum: float = 0.0
    bitrate_down_sum: float = 0.0
    freezes: int = 0
    freeze_s: float = 0.0
    levels: dict[str, float] = field(default_factory=lambda: {"good": 0.0, "fair": 0.0, "poor": 0.0})
    tiers: dict[str, float] = field(default_factory=dict)
    tier_changes: int = 0
    alerts: int = 0

    def add(self, figures: dict[str, Any], dt: float) -> None:
        self.seconds += dt
        mos = figures.get("mos")
        if mos is not None:
            self.mos_sum += mos
            self.mos_n += 1
            self.mos_min = mos if self.mos_min is None else min(self.mos_min, mos)
        self.loss_up_sum += figures["loss_up"] * dt
        self.loss_up_max = max(self.loss_up_max, figures["loss_up"])
        self.loss_down_sum += figures["loss_down"] * dt
        self.loss_down_max = max(self.loss_down_max, figures["loss_down"])
        rtt = figures.get("rtt_ms")
        if rtt is not None:
            self.rtt_sum += rtt
            self.rtt_n += 1
            self.rtt_max = max(self.rtt_max, rtt)
        self.jitter_max = max(self.jitter_max, figures.get("jitter_ms") or 0.0)
        fps = figures.get("fps")
        if fps is not None:
            self.fps_sum += fps
            self.fps_n += 1
        self.bitrate_up_sum += figures.get("bitrate_up", 0) * dt
        self.bitrate_down_sum += figures.get("bitrate_down", 0) * dt
        if figures.get("freezes") is not None:
            self.freezes = max(self.freezes, figures["freezes"])
            self.freeze_s = max(self.freeze_s, figures.get("freeze_s") or 0.0)
        self.levels[figures["level"]] = self.levels.get(figures["level"], 0.0) + dt
        tier = figures.get("tier", "full")
        self.tiers[tier] = self.tiers.get(tier, 0.0) + dt

    def summary(self) -> dict[str, Any]:
        span = self.seconds or 1.0
        return {
            "participant_id": self.participant_id,
            "identity": self.identity,
            "role": self.role,
            "name": self.name,
            "seconds": round(self.seconds, 1),
            "mos_avg": round(self.mos_sum / self.mos_n, 2) if self.mos_n else None,
            "mos_min": self.mos_min,
            "loss_up_avg": round(self.loss_up_sum / span, 4),
            "loss_up_max": round(self.loss_up_max, 4),
            "loss_down_avg": round(self.loss_down_sum / span, 4),
            "loss_down_max": round(self.loss_down_max, 4),
            "rtt_avg_ms": round(self.rtt_sum / self.rtt_n, 1) if self.rtt_n else None,
            "rtt_max_ms": round(self.rtt_max, 1) if self.rtt_n else None,
            "jitter_max_ms": round(self.jitter_max, 1),
            "fps_avg": round(self.fps_sum / self.fps_n, 1) if self.fps_n else None,
            "bitrate_up_avg": int(self.bitrate_up_sum / span),
            "bitrate_down_avg": int(self.bitrate_down_sum / span),
            "freezes": self.freezes,
            "freeze_s": round(self.freeze_s, 1),
            "level_seconds": {k: round(v, 1) for k, v in self.levels.items()},
            "tier_seconds": {k: round(v, 1) for k, v in self.tiers.items()},
            "tier_changes": self.tier_changes,
            "alerts": self.alerts,
        }


def build_report(session_id: str, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """quality.json from a session's timeline; None when the session has no quality events."""
    summaries = [e for e in events if e.get("type") == "quality_summary"]
    alerts = [e for e in events if e.get("type") == "quality_alert"]
    changes = [e for e in events if e.get("type") == "tier_changed"]
    if not (summaries or alerts or changes):
        return None
    participants: dict[str, dict[str, Any]] = {}
    for event in summaries:  # a participant who moved nodes has one summary per node: keep the longest
        summary = {k: v for k, v in event.items() if k not in ("type", "room", "node_id", "seq")}
        pid = str(summary.get("participant_id"))
        if pid not in participants or summary.get("seconds", 0) > participants[pid].get("seconds", 0):
            participants[pid] = summary
    mos = [p["mos_min"] for p in participants.values() if p.get("mos_min") is not None]
    raised = [a for a in alerts if a.get("state") == "raised"]
    worst = "good"
    for p in participants.values():
        levels = p.get("level_seconds") or {}
        if levels.get("poor"):
            worst = "poor"
        elif levels.get("fair") and worst == "good":
            worst = "fair"
    return {
        "session_id": session_id,
        "level": worst,
        "mos_min": min(mos) if mos else None,
        "alerts_raised": len(raised),
        "tier_changes": len(changes),
        "participants": list(participants.values()),
        "alerts": [{k: v for k, v in a.items() if k not in ("room", "node_id")} for a in alerts],
        "tier_changes_log": [{k: v for k, v in c.items() if k not in ("room", "node_id")} for c in changes],
    }
