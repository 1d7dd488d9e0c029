"""GPS from a field device: the fix's checks, the simulated walk, and the body-cam
simulator (`teller client bodycam`, a real subprocess) whose video and fixes reach a
reviewer and the session timeline, while a bad fix from another device reaches nobody."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import subprocess
import sys
from typing import Any

import pytest

from teller.client import RoomClient
from teller.client.room import ClientError
from teller.errors import BadRequest
from teller.field.gps import GpsFix, distance_m, normalise, parse_fix, walk

from .conftest import Server, wait_until

NOW = 1_800_000_000.0


def test_a_fix_is_checked_and_normalised() -> None:
    fix = parse_fix({"lat": 30.57281234567, "lon": 114.2719, "ts": NOW - 5, "accuracy_m": 4.567, "extra": "x"}, now=NOW)
    assert fix == GpsFix(30.57281234567, 114.2719, NOW - 5, accuracy_m=4.567)
    assert fix.to_json() == {"lat": 30.5728123, "lon": 114.2719, "ts": NOW - 5, "accuracy_m": 4.57}
    assert parse_fix({"lat": 0, "lon": 0}, now=NOW).ts == NOW  # no device time: the server's
    assert "extra" not in normalise({"lat": 1, "lon": 2, "extra": [1, 2, 3]})


@pytest.mark.parametrize("payload, field", [
    ({"lat": 300, "lon": 1}, "lat"),
    ({"lat": 1}, "lon"),
    ({"lat": "30.1", "lon": 1}, "lat"),
    ({"lat": True, "lon": 1}, "lat"),
    ({"lat": math.nan, "lon": 1}, "lat"),
    ({"lat": 1, "lon": 1, "ts": NOW + 3 * 86400}, "ts"),
    ({"lat": 1, "lon": 1, "speed_mps": -1}, "speed_mps"),
    ({"lat": 1, "lon": 1, "heading_deg": 400}, "heading_deg"),
])
def test_bad_fixes_are_refused_with_the_field_named(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_fix(payload, now=NOW)
    assert err.value.code == "invalid_gps" and err.value.details["field"] == field


def test_not_an_object_is_refused() -> None:
    for payload in ("30.1,114.2", [30.1, 114.2], None):
        with pytest.raises(BadRequest):
            parse_fix(payload, now=NOW)


def test_the_simulated_walk_moves_at_walking_pace_and_repeats_for_a_seed() -> None:
    first = list(itertools.islice(walk(30.5728, 114.2719, speed_mps=1.2, interval_s=2.0, seed=7), 20))
    again = list(itertools.islice(walk(30.5728, 114.2719, speed_mps=1.2, interval_s=2.0, seed=7), 20))
    assert [(f.lat, f.lon) for f in first] == [(f.lat, f.lon) for f in again]
    steps = [distance_m(a, b) for a, b in itertools.pairwise(first)]
    assert all(abs(step - 2.4) < 0.05 for step in steps), steps
    assert distance_m(first[0], first[-1]) > 5  # it goes somewhere, not round in place


async def test_the_body_cam_simulator_reaches_the_reviewer_and_the_timeline(server: Server) -> None:
    room = "field-visit-1"
    timeline: list[dict[str, Any]] = []
    server.node.timeline_listeners.append(lambda _room, event: timeline.append(event) if event["type"] == "gps" else None)
    reviewer = RoomClient(server.url, server.token(room, "reviewer", "Reviewer Wu"))
    other = RoomClient(server.url, server.token(room, "officer", "second device"))
    fixes: list[dict[str, Any]] = []
    reviewer.on("data", lambda m: fixes.append(m) if m.get("topic") == "gps" else None)
    cam = subprocess.Popen(  # noqa: ASYNC220 (started once; read after it ends)
        [sys.executable, "-m", "teller", "client", "--url", server.url, "--token", server.token(room, "officer", "Officer Li"),
         "bodycam", "--gps-interval", "0.3", "--duration", "30", "--seed", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        await reviewer.connect()
        await wait_until(lambda: any(p.get("tracks") for p in reviewer.participants.values()), timeout=30)
        cam_pid = next(pid for pid, p in reviewer.participants.items() if p.get("tracks"))
        subscription = await reviewer.subscribe(cam_pid)
        frame = await asyncio.wait_for(subscription.track("video").recv(), 15)
        assert (frame.width, frame.height) == (640, 480)
        await wait_until(lambda: len(fixes) >= 3, timeout=15)
        first = fixes[0]
        assert first["from_participant_id"] == cam_pid
        fix = parse_fix(first["payload"])  # what the reviewer got is a fix
        assert abs(fix.lat - 30.5728) < 0.01 and abs(fix.lon - 114.2719) < 0.01
        await wait_until(lambda: len(timeline) >= 3, timeout=5)
        assert timeline[0]["participant_id"] == cam_pid and timeline[0]["payload"] == first["payload"]

        # A bad fix from another device: refused to it, seen by no one, the walk goes on.
        await other.connect()
        with pytest.raises(ClientError) as refused:
            await other.request({"type": "data", "topic": "gps", "payload": {"lat": 300, "lon": 114.27}})
        assert refused.value.code == "invalid_gps"
        seen = len(fixes)
        await wait_until(lambda: len(fixes) >= seen + 2, timeout=10)
        assert all(abs(m["payload"]["lat"]) <= 90 for m in fixes)
        assert all(e["payload"]["lat"] != 300 for e in timeline)
        more = await asyncio.wait_for(subscription.track("video").recv(), 5)
        assert more.pts > frame.pts
    finally:
        cam.terminate()
        out, _ = cam.communicate(timeout=15)
        await reviewer.close()
        await other.close()
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert [e["event"] for e in lines[:2]] == ["joined", "publishing"]
    assert sum(1 for e in lines if e["event"] == "gps") >= 3
