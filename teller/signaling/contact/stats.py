"""Operations statistics from the call records: requests, connected, abandoned,
wait, talk and handle times, businesses done; by hour, day, business or agent.

Computed from the records on demand: the store holds every call, and a supervisor
asks rarely enough that no running counters are needed (or can drift).
"""

from __future__ import annotations

import csv
import io
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ...errors import BadRequest
from ...state import Record

GROUPINGS = ("hour", "day", "business", "agent")
COLUMNS = (
    "group", "requests", "connected", "abandoned", "overflowed", "businesses_done",
    "avg_wait_s", "max_wait_s", "avg_talk_s", "avg_handle_s",
)


def _key(call: Record, by: str) -> str:
    if by == "hour":
        return time.strftime("%Y-%m-%dT%H:00Z", time.gmtime(call["queued_at"]))
    if by == "day":
        return time.strftime("%Y-%m-%d", time.gmtime(call["queued_at"]))
    if by == "business":
        return call["business"]
    return call.get("agent_id") or "(none)"


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def operations(calls: Iterable[Record], by: str, since: float | None = None, until: float | None = None) -> list[Record]:
    if by not in GROUPINGS:
        raise BadRequest(f"by is one of {', '.join(GROUPINGS)}", code="invalid_message", field="by")
    groups: dict[str, list[Record]] = defaultdict(list)
    for call in calls:
        if (since is not None and call["queued_at"] < since) or (until is not None and call["queued_at"] >= until):
            continue
        groups[_key(call, by)].append(call)
    rows = []
    for group in sorted(groups):
        members = groups[group]
        answered = [c for c in members if c["answered_at"] is not None]
        waits = [c["answered_at"] - c["queued_at"] for c in answered]
        talks = [c["ended_at"] - c["answered_at"] for c in answered if c["state"] == "ended" and c["ended_at"]]
        handles = []
        for c in answered:
            if c["state"] != "ended" or not c["ended_at"]:
                continue
            wrapped = [w["at"] for w in c.get("wrap_ups", [])]
            handles.append((max(wrapped) if wrapped else c["ended_at"]) - c["answered_at"])
        rows.append({
            "group": group,
            "requests": len(members),
            "connected": len(answered),
            "abandoned": sum(1 for c in members if c["state"] == "abandoned"),
            "overflowed": sum(1 for c in members if c["state"] == "overflowed"),
            "businesses_done": sum(1 for c in answered if c["state"] == "ended" and c.get("wrap_ups")),
            "avg_wait_s": _mean(waits),
            "max_wait_s": round(max(waits), 1) if waits else None,
            "avg_talk_s": _mean(talks),
            "avg_handle_s": _mean(handles),
        })
    return rows


def to_csv(rows: list[Record]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in COLUMNS})
    return out.getvalue()


def parse_time(raw: str | None, field: str) -> Any:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise BadRequest(f"{field} is a Unix time in seconds", code="invalid_message", field=field) from exc
