"""The locust load test (loadtests/locustfile.py) against a real `teller serve`.

One short headless run (20 users: customers and agents with media, signalling-only
users) is shared by the tests: it must pass with no failure and write a JSON summary
with every figure, and what its media users counted must agree with what the server
says it forwarded (`teller_video_frames_sent` on /metrics).
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loadtests.locust_media import delivery
from loadtests.media import FrameCounter

from .conftest import Server, start_process, stop_process

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
TAG = "TELLER_LOCUST_TEST_RUN"

pytestmark = [pytest.mark.media, pytest.mark.timeout(300)]


def metric(server: Server, name: str) -> float:
    """A node metric's value (a counter may be exposed with the `_total` suffix)."""
    text = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()
    match = re.search(rf"^{name}(?:_total)?\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{name} is not on /metrics"
    return float(match.group(1))


def settled_frames(server: Server) -> tuple[float, float]:
    """(forwarded-frame counter, participants) once every peer has gone and the quality
    ticks that count the ends of subscriptions (about one a second) have run."""
    deadline = time.monotonic() + 30
    while metric(server, "teller_participants") > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2.5)  # two ticks
    value = metric(server, "teller_video_frames_sent")
    while time.monotonic() < deadline:
        time.sleep(1.2)
        again = metric(server, "teller_video_frames_sent")
        if again == value:
            break
        value = again
    return value, metric(server, "teller_participants")


def tagged_processes(tag: str) -> list[int]:
    """Processes of this user whose environment carries `tag` (the helper would)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"{TAG}={tag}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


@dataclass
class Run:
    returncode: int
    stderr: str
    summary: dict[str, Any]
    csv_prefix: Path
    frames_before: float
    frames_after: float
    participants_after: float
    leftover: list[int]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("locust")
    server = start_process(workdir / "server")
    try:
        before = metric(server, "teller_video_frames_sent")
        tag = uuid.uuid4().hex
        out = workdir / "out"
        done = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "20", "-r", "5", "-t", "30s",
             "--host", server.url, "--csv", str(out / "run"), "--summary-json", str(out / "summary.json"),
             "--call-seconds", "8", "--wrap-up-seconds", "1", "--only-summary"],
            cwd=ROOT, capture_output=True, text=True, timeout=200, check=False,
            env={**os.environ, TAG: tag, "PYTHONPATH": str(ROOT)},
        )
        leftover = tagged_processes(tag)
        summary_path = out / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        after, participants = settled_frames(server)
        yield Run(done.returncode, done.stderr, summary, out / "run", before, after, participants, leftover)
    finally:
        stop_process(server)


def test_a_short_run_passes_and_reports_every_figure(run: Run) -> None:
    assert run.returncode == 0, run.stderr[-4000:]
    summary = run.summary
    # Every kind of user ran.
    users = summary["users"]
    assert users["CustomerUser"] > 0 and users["AgentUser"] > 0 and users["SignallingUser"] > 0
    assert sum(users.values()) == 20
    # Calls went through from queue to hang-up, with media both ways.
    assert summary["calls_completed"] > 0 and summary["calls_queued"] >= summary["calls_completed"]
    assert summary["subscriptions"] >= 2 * summary["calls_completed"]
    assert summary["video_frames_received"] > 0 and summary["audio_frames_received"] > 0
    assert summary["media_frames_received"] == summary["video_frames_received"] + summary["audio_frames_received"]
    assert summary["join_count"] > 0 and summary["join_p95_ms"] > 0
    assert summary["first_frame_count"] > 0 and summary["first_frame_p95_ms"] > 0
    assert summary["delivery_count"] > 0 and 0.95 <= summary["delivery_ratio_min"] <= summary["delivery_ratio_mean"] <= 1
    assert summary["queue_wait_p95_ms"] is not None
    # No failure anywhere: HTTP or media.
    assert summary["errors"] == [] and summary["error_count"] == 0
    assert summary["total"]["failures"] == 0 and summary["total"]["count"] > 0
    requests = summary["requests"]
    for key in ("customer join", "agent join", "customer first frame", "agent first frame", "customer delivery",
                "agent delivery", "customer call", "agent call", "customer queue wait", "POST /v1/calls",
                "GET /v1/calls/[call]", "DELETE /v1/calls/[call]", "POST /v1/calls/[call]/accept",
                "POST /v1/agents/me/wrap-up", "GET /v1/catalogue"):
        assert requests[key]["count"] > 0 and requests[key]["failures"] == 0, key
        assert set(requests[key]) >= {"count", "failures", "p50_ms", "p95_ms", "max_ms"}
    assert requests["customer call"]["count"] == summary["calls_completed"]
    # Signalling users queue calls too, beside the media customers' ones.
    assert requests["POST /v1/calls"]["count"] > summary["calls_queued"]
    # locust's own CSVs, with the media events in them.
    with open(f"{run.csv_prefix}_stats.csv", newline="") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    assert int(rows[("customer", "join")]["Request Count"]) == requests["customer join"]["count"]
    assert int(rows[("agent", "delivery")]["Failure Count"]) == 0
    # Everything was closed: no peer left on the server, no helper process left behind.
    assert run.participants_after == 0
    assert run.leftover == []


def test_frames_counted_by_media_users_match_the_server(run: Run) -> None:
    assert run.returncode == 0, run.stderr[-4000:]
    forwarded = run.frames_after - run.frames_before
    counted = run.summary["video_frames_received"]
    assert forwarded > 0
    assert abs(counted - forwarded) <= 0.01 * forwarded, (counted, forwarded)
    print(f"video frames: counted by the media users {counted}, forwarded by the server {forwarded:.0f}")


def test_delivery_counts_distinct_frames_against_the_timestamp_span() -> None:
    counter = FrameCounter(joined_at=0.0)
    assert delivery(counter) == (0, 0, None)
    counter.frames = [(0.1 * i, 1000 + 3000 * i) for i in range(100) if i % 10 != 5]  # 10 of 100 lost
    counter.frames.append(counter.frames[-1])  # a duplicate counts once
    assert delivery(counter) == (90, 100, 0.9)
    wrapped = [(0.0, 0xFFFFFFFF - 2999), (0.1, 0xFFFFFFFF - 2999 + 3000 - 2**32)]  # the timestamp wraps
    counter.frames = wrapped
    assert delivery(counter) == (2, 2, 1.0)
