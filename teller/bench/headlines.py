"""One line of headline numbers per benchmark, for the table in docs/performance.md.

Like the plots, each reads only what the summary printed: a missing figure gives a
shorter line (or "see results.json"), never an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .runner import summary_of

Lines = list[dict[str, Any]]


def fmt(value: Any, unit: str = "", digits: int = 3) -> str | None:
    """A number as text, or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if abs(value) >= 1000:
        return f"{value:,.0f}{unit}"
    return f"{value:.{digits}g}{unit}"


def join(*parts: str | None) -> str:
    return "; ".join(p for p in parts if p)


def both(label: str, *values: str | None, sep: str = " / ") -> str | None:
    """'label a / b' when every value is there."""
    present = [v for v in values if v]
    return f"{label} {sep.join(present)}" if values and len(present) == len(values) else None


def last(lines: Lines) -> dict[str, Any]:
    """The summary: the last line that is not a progress event."""
    return summary_of(lines) or {}


def find(lines: Lines, key: str, value: Any) -> dict[str, Any]:
    return next((line for line in lines if line.get(key) == value), {})


def forward(lines: Lines) -> str:
    rows = last(lines).get("summary") or []
    cpu = ", ".join(f"N={r.get('subscribers')}: {fmt(r.get('server_cpu_ms_per_stream_s'))}" for r in rows)
    worst = [r["video_delivery_ratio_min"] for r in rows if isinstance(r.get("video_delivery_ratio_min"), int | float)]
    return join(f"ms CPU per stream-second {cpu}" if rows else None,
                both("video delivered (worst)", fmt(100 * min(worst), " %")) if worst else None)


def capacity(lines: Lines) -> str:
    s = last(lines)
    calls = s.get("capacity_calls")
    why = str(s.get("limited_by") or "")
    limited = f" ({why.split(': ', 1)[-1]})" if why.startswith("none") else f" (limited by {why})" if why else ""
    return join((f"capacity {calls} calls" if calls is not None else "no step passed") + limited,
                both("calls per core", fmt(s.get("calls_per_core"))),
                both("server CPU per call", fmt(s.get("server_cpu_ms_per_call_s"), " ms/s")))


def failover(lines: Lines) -> str:
    s, rec = last(lines), last(lines).get("recovery_s") or {}
    return join(both("recovery p50 / p95 / max", fmt(rec.get("p50"), " s"), fmt(rec.get("p95"), " s"), fmt(rec.get("max"), " s")),
                f"{s.get('calls_lost')} of {s.get('calls_moved')} calls lost" if "calls_lost" in s else None)


def recording(lines: Lines) -> str:
    s = last(lines)
    off, on = fmt(s.get("server_cpu_percent_off"), " %"), fmt(s.get("server_cpu_percent_on"), " %")
    overhead = fmt(s.get("overhead_percent"), " %")
    return join(f"server CPU {off} → {on}" if off and on else None,
                f"overhead {overhead} (target ≤ {s.get('target_overhead_percent', 10)} %)" if overhead else None)


def composite(lines: Lines) -> str:
    s = last(lines)
    length, took = fmt(s.get("duration_s"), " s"), fmt(s.get("encode_seconds"), " s")
    return join(fmt(s.get("x_realtime"), "× real time"), f"a {length} session built in {took}" if length and took else None)


def search(lines: Lines) -> str:
    s = last(lines)
    queries = s.get("queries") or {}
    p95 = {name: q.get("p95_ms") for name, q in queries.items() if isinstance(q.get("p95_ms"), int | float)}
    slowest = max(p95, key=p95.__getitem__) if p95 else None
    return join(f"{s.get('sessions')} sessions" if s.get("sessions") else None,
                f"slowest p95 {fmt(p95[slowest], ' ms')} ({slowest})" if slowest else None,
                both("loaded at", fmt(s.get("load_sessions_per_s"), "/s"), sep=""))


def routing(lines: Lines) -> str:
    parts = []
    for backend in ("memory", "redis"):
        rows = [r for r in lines if r.get("backend") == backend]
        if rows:
            big = max(rows, key=lambda r: r.get("queued_calls", 0))
            parts.append(both(f"{backend}, {big.get('queued_calls')} queued: dispatch", fmt(big.get("available_ms_mean"), " ms mean"), sep=""))
    return join(*parts)


def wakeup(lines: Lines) -> str:
    s = last(lines)
    return join(fmt(s.get("receiver_cpu_ms_per_s"), " ms CPU per second"), fmt(s.get("us_per_datagram"), " µs per datagram"),
                f"at {s['datagrams_per_s']:g} datagrams/s" if isinstance(s.get("datagrams_per_s"), int | float) else None)


def quality_cpu(lines: Lines) -> str:
    s = find(lines, "benchmark", "quality_stats_cpu")
    share = fmt(s.get("stats_share_of_server_cpu_percent"), " %")
    return join(f"statistics {share} of server CPU (target ≤ {s.get('target_percent', 2)} %)" if share else None,
                both("server CPU", fmt(s.get("server_cpu_percent"), " %")))


def quality_alert(lines: Lines) -> str:
    s = last(lines)
    return join(both("loss → alert median / max", fmt(s.get("impairment_to_alert_s_median"), " s"), fmt(s.get("impairment_to_alert_s_max"), " s")),
                f"target {s['target_s']} s" if "target_s" in s else None)


def quality_adapt(lines: Lines) -> str:
    s = last(lines)
    return join(both("cap → downgrade median", fmt(s.get("cap_to_downgrade_s_median"), " s")),
                both("lift → full median", fmt(s.get("lift_to_full_s_median"), " s")))


def speech_rtf(lines: Lines) -> str:
    s = find(lines, "bench", "asr_rtf")
    return join(both("real-time factor", fmt(s.get("real_time_factor"))),
                both("per utterance p50", fmt(s.get("per_utterance_s_p50"), " s")))


def speech_tts(lines: Lines) -> str:
    s = find(lines, "bench", "tts_first_audio")
    warm = s.get("in_session_first_audio_s") or {}
    return join(both("first audio p50 / p95", fmt(s.get("first_audio_s_p50"), " s"), fmt(s.get("first_audio_s_p95"), " s")),
                both("in a session, warm p50", fmt(warm.get("warm_p50"), " s")))


def speech_latency(lines: Lines) -> str:
    s = find(lines, "bench", "caption_latency")
    alerts = s.get("alert_s") or []
    return join(both("final caption p50 / p95", fmt(s.get("final_caption_s_p50"), " s"), fmt(s.get("final_caption_s_p95"), " s")),
                f"alerts {', '.join(fmt(a, ' s') or '?' for a in alerts)}" if alerts else None)


def speech_capacity(lines: Lines) -> str:
    s = find(lines, "bench", "asr_capacity")
    return f"{s['max_conversational_speakers']} conversational speakers kept up with" if "max_conversational_speakers" in s else ""


def avatar_render(lines: Lines) -> str:
    render = find(lines, "benchmark", "avatar_render")
    small = next((r for r in render.get("results", []) if r.get("size") == "640x480"), {})
    tracks = find(lines, "benchmark", "avatar_tracks").get("runs") or []
    return join(both("640x480 frame p50", fmt(small.get("render_ms_p50"), " ms")),
                both("CPU per frame", fmt(small.get("cpu_ms_per_frame"), " ms")),
                ("cores per avatar with VP8 " + ", ".join(f"{r.get('avatars')}: {fmt(r.get('cores_per_avatar'))}" for r in tracks)) if tracks else None)


def digital_human(lines: Lines) -> str:
    answer = find(lines, "benchmark", "digital_human_answer")
    runs = find(lines, "benchmark", "digital_human_avatars").get("runs") or []
    return join(both("answer start p50", fmt(answer.get("answer_start_mouth_s_p50"), " s")),
                both("barge-in p50", fmt(answer.get("barge_in_ms_p50"), " ms")),
                ("cores per avatar " + ", ".join(f"{r.get('avatars')}: {fmt(r.get('cores_per_avatar'))}" for r in runs)) if runs else None)


def liveness(lines: Lines) -> str:
    face = next((r for r in lines if r.get("part") == "frame" and r.get("picture") == "face"), {})
    streams = [r for r in lines if r.get("part") == "stream"]
    decision = find(lines, "part", "decision").get("seconds_to_decision") or {}
    return join(both("face frame p50", fmt((face.get("cpu_ms") or {}).get("p50"), " ms CPU")),
                ("watch per stream " + ", ".join(f"{r.get('streams')}: {fmt(r.get('liveness_cores_per_stream'))} core" for r in streams)) if streams else None,
                both("decision p50", fmt(decision.get("p50"), " s")))


def field(lines: Lines) -> str:
    local = [r for r in lines if r.get("part") == "local"]
    upload, snap, drop = find(lines, "part", "upload"), find(lines, "part", "snapshot"), find(lines, "part", "drop")
    return join(("recorder " + ", ".join(f"{r.get('size')}: {fmt(r.get('recorder_core'))} core" for r in local)) if local else None,
                both("upload p50", fmt(upload.get("p50_s"), " s")),
                both("snapshot p50", fmt(snap.get("p50_ms"), " ms")),
                f"link drop: {drop['skipped']}" if "skipped" in drop else both("after a drop, first frame", fmt(drop.get("first_reviewer_frame_s"), " s")))


def soak(lines: Lines) -> str:
    s = last(lines)
    return join(both("calls", fmt(s.get("calls"))), both("minutes", fmt((s.get("seconds") or 0) / 60)),
                both("RSS growth", fmt(s.get("rss_growth_percent"), " %")),
                both("fds", fmt(s.get("fds_first")), fmt(s.get("fds_last")), sep=" → "),
                both("tasks", fmt(s.get("tasks_first")), fmt(s.get("tasks_last")), sep=" → "),
                both("delivery, first / second half", fmt(100 * s["delivery_mean_first_half"], " %", 4),
                     fmt(100 * s["delivery_mean_second_half"], " %", 4)) if "delivery_mean_first_half" in s else None)


HEADLINES: dict[str, Callable[[Lines], str]] = {
    "forward": forward, "janus": forward, "capacity": capacity, "soak": soak, "failover": failover, "recording": recording,
    "composite": composite, "search": search, "routing": routing, "wakeup": wakeup,
    "quality_cpu": quality_cpu, "quality_alert": quality_alert, "quality_adapt": quality_adapt,
    "speech_rtf": speech_rtf, "speech_tts": speech_tts, "speech_latency": speech_latency, "speech_capacity": speech_capacity,
    "avatar_render": avatar_render, "digital_human": digital_human, "liveness": liveness, "field": field,
}


def headline(name: str, result: dict[str, Any]) -> str:
    """The table cell for one benchmark: its numbers, or why there are none."""
    if result.get("status") == "skipped":
        return str(result.get("reason", ""))
    if result.get("status") != "ok":
        return str(result.get("error", "failed"))
    make = HEADLINES.get(name)
    lines = result.get("lines") or []
    if make is None or not lines:
        return "see results.json"
    try:
        return make(lines) or "see results.json"
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError):
        return "see results.json"
