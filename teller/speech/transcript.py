"""A session's transcript, built from its timeline when the recording is finalised.

The ASR stage writes each final line into the timeline (masked text, the original
sealed beside it when it had personal numbers), so the transcript of a session
that moved between nodes is whole, like its timeline. The sealed originals go
into transcript.json only; what any reader is served has them removed.
"""

from __future__ import annotations

from typing import Any

# Sealed originals live apart from what readers get, under a prefix the file download
# and the export refuse: they open only through the audited reveal.
SEALED_PREFIX = "sealed/"
SEALED_TRANSCRIPT = SEALED_PREFIX + "transcript.json"
RISK_EVENTS = ("fraud_risk", "content_risk")
PLAYED_EVENTS = ("tts_played",)


def build_transcript(sid: str, started_at: float, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    lines = []
    for e in events:
        if e.get("type") != "transcript" or not isinstance(e.get("text"), str):
            continue
        start = float(e.get("start") or e.get("ts") or started_at)
        end = float(e.get("end") or start)
        line = {
            "start_s": round(max(0.0, start - started_at), 3), "end_s": round(max(0.0, end - started_at), 3),
            "ts": round(start, 3), "participant_id": e.get("participant_id"), "role": e.get("role"),
            "name": e.get("name"), "text": e["text"], "language": e.get("language"), "pii": bool(e.get("pii")),
        }
        if e.get("sealed"):
            line["sealed"] = e["sealed"]
        lines.append(line)
    lines.sort(key=lambda line: line["start_s"])
    risk = [
        {"ts": e.get("ts"), "offset_s": e.get("t"), "category": e.get("category"), "severity": e.get("severity"),
         "rule": e.get("rule"), "phrase": e.get("phrase"), "role": e.get("role"), "source": e.get("source")}
        for e in events if e.get("type") in RISK_EVENTS
    ]
    played = [
        {"ts": e.get("ts"), "offset_s": e.get("t"), "kind": e.get("kind"), "text": e.get("text"),
         "language": e.get("language"), "duration_s": e.get("duration_s")}
        for e in events if e.get("type") in PLAYED_EVENTS
    ]
    if not lines and not risk and not played:
        return None
    return {"session_id": sid, "started_at": round(started_at, 3), "lines": lines, "risk": risk, "played": played}


def public(transcript: dict[str, Any]) -> dict[str, Any]:
    """What a reader is served: no sealed originals."""
    return {**transcript, "lines": [{k: v for k, v in line.items() if k != "sealed"} for line in transcript.get("lines", [])]}


def sealed_lines(transcript: dict[str, Any]) -> dict[str, str]:
    """Line index -> its sealed original, for the lines that have one."""
    return {str(i): line["sealed"] for i, line in enumerate(transcript.get("lines", [])) if line.get("sealed")}


def strip_sealed(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "sealed"} if "sealed" in event else event


def _stamp(seconds: float) -> str:
    ms = round(max(0.0, seconds) * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


ROLE_NAMES = {"customer": "Customer", "agent": "Agent", "service": "Voice", "officer": "Officer", "reviewer": "Reviewer"}


def to_vtt(transcript: dict[str, Any]) -> str:
    """WebVTT with the speaker as a voice span (<v Agent>), masked text only."""
    out = ["WEBVTT", f"NOTE session {transcript.get('session_id', '')}", ""]
    for i, line in enumerate(transcript.get("lines", []), 1):
        end = max(line["end_s"], line["start_s"] + 0.5)
        speaker = ROLE_NAMES.get(str(line.get("role")), str(line.get("role") or "Speaker"))
        text = str(line["text"]).replace("-->", "->").replace("\n", " ")
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        out += [str(i), f"{_stamp(line['start_s'])} --> {_stamp(end)}", f"<v {speaker}>{text}", ""]
    return "\n".join(out)
