"""How much of a participant's time the recording holds, and where segments a device
uploaded later filled the holes its dropped link left.

A live segment spans [start, end] less the gaps the recorder saw inside it (no media for
more than segments.GAP_S). A device segment spans its whole length. Per participant and
kind, the union of the live spans leaves holes; a device segment over a hole fills it.
What no segment covers stays a gap, reported so that compliance sees it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

Span = tuple[float, float]
# Holes shorter than this are jitter in segment boundaries, not missing media.
TOLERANCE_S = 1.0


def _union(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1] + TOLERANCE_S:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _holes(spans: list[Span], start: float, end: float) -> list[Span]:
    holes, at = [], start
    for a, b in spans:
        if a - at > TOLERANCE_S:
            holes.append((at, a))
        at = max(at, b)
    if end - at > TOLERANCE_S:
        holes.append((at, end))
    return holes


def _minus(span: Span, cuts: list[list[float]]) -> list[Span]:
    pieces, at = [], span[0]
    for a, b in sorted((float(c[0]), float(c[1])) for c in cuts):
        if a > at:
            pieces.append((at, min(a, span[1])))
        at = max(at, b)
    if at < span[1]:
        pieces.append((at, span[1]))
    return pieces


def coverage(tracks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`tracks`: segments as {participant_id, track_kind, start_wall, end_wall, device, gaps}.

    Returns {"<participant>/<kind>": {start, end, live_s, device_s, filled: [[a, b]], gaps: [[a, b]]}}
    for every participant and kind that has a device segment or a hole.
    """
    live: dict[str, list[Span]] = defaultdict(list)
    device: dict[str, list[Span]] = defaultdict(list)
    for track in tracks:
        start, end = track.get("start_wall"), track.get("end_wall")
        if start is None or end is None:
            continue
        key = f"{track.get('participant_id', '')}/{track.get('track_kind', '')}"
        span = (float(start), float(end))
        if track.get("device"):
            device[key].append(span)
        else:
            live[key].extend(_minus(span, track.get("gaps") or []))
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(set(live) | set(device)):
        live_spans, device_spans = _union(live[key]), _union(device[key])
        every = _union(live_spans + device_spans)
        if not every:  # only segments of no length (one frame; a crash sealed at 0 s)
            continue
        start, end = every[0][0], every[-1][1]
        holes = _holes(live_spans, start, end)
        gaps = _holes(every, start, end)
        filled = [(max(h[0], d[0]), min(h[1], d[1])) for h in holes for d in device_spans if d[0] < h[1] and h[0] < d[1]]
        if not holes and not device_spans:
            continue
        out[key] = {
            "start": round(start, 3), "end": round(end, 3),
            "live_s": round(sum(b - a for a, b in live_spans), 3),
            "device_s": round(sum(b - a for a, b in device_spans), 3),
            "filled": [[round(a, 3), round(b, 3)] for a, b in sorted(filled)],
            "gaps": [[round(a, 3), round(b, 3)] for a, b in gaps],
        }
    return out


def gap_events(cover: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Timeline events: where a device segment filled a hole, and where one remains."""
    events = []
    for key, entry in cover.items():
        participant, kind = key.rsplit("/", 1)
        for kind_of, spans in (("gap_filled", entry["filled"]), ("recording_gap", entry["gaps"])):
            for a, b in spans:
                events.append({"type": kind_of, "ts": a, "end": b, "duration_s": round(b - a, 3),
                               "participant_id": participant, "kind": kind})
    return events
