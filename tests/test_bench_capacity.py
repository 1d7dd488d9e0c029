"""The capacity benchmark and the soak, run small: real calls through a real server.

The figures themselves belong to docs/performance.md; these tests hold the tool to
what it claims to measure (every subscriber counted, joins timed, the server's
figures read), so a change cannot quietly break the capacity figure's source.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "loadtests" / "bench_capacity.py"

pytestmark = pytest.mark.timeout(300)


def run(args: list[str], workdir: Path) -> tuple[list[dict], dict]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--workdir", str(workdir)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return lines[:-1], lines[-1]


def test_capacity_steps_count_every_subscriber(tmp_path: Path) -> None:
    events, summary = run(["--calls", "1,3", "--duration", "3", "--warmup", "1", "--generators", "2"], tmp_path)
    steps = summary["steps"]
    assert summary["benchmark"] == "capacity"
    assert [s["calls"] for s in steps] == [1, 3]
    assert [e for e in events if e["event"] == "step"] == [{"event": "step", **s} for s in steps]
    for step in steps:
        # Both parties of every call subscribe, and each one's video is counted.
        assert step["subscribers"] == 2 * step["calls"]
        assert step["joins_failed"] == 0 and step["generator_errors"] == 0
        assert step["frames_counted"] > 0
        assert 0 < step["video_delivery_ratio_min"] <= 1
        assert step["join_p95_ms"] is not None and step["join_p95_ms"] > 0
        assert step["server_cpu_percent"] > 0 and step["generators_cpu_percent"] > 0
        # The server's own view, from /metrics and /proc.
        assert step["rooms"] == step["calls"] and step["participants"] == 2 * step["calls"]
        assert step["rss_mb"] > 0 and step["fds"] > 0 and step["tasks"] > 0
    assert summary["server_cpu_ms_per_call_s"] is None or summary["calls_per_core"] > 0
    # Every call was recorded: two parties, two tracks each.
    recorded = list((tmp_path / "data").rglob("*.webm"))
    assert len({p.parent for p in recorded}) >= 3


def test_soak_replaces_calls_and_reports_the_process(tmp_path: Path) -> None:
    events, summary = run(
        ["--soak", "9", "--soak-window", "3", "--soak-settle", "0", "--calls", "2", "--call-seconds", "2",
         "--generators", "1", "--warmup", "1"],
        tmp_path,
    )
    windows = [e for e in events if e["event"] == "soak_window"]
    assert summary["benchmark"] == "soak" and len(windows) == len(summary["windows"]) >= 2
    # Calls of about 2 s over 9 s: more joins than the two concurrent calls' first four.
    assert summary["joins"] > 4 and summary["joins_failed"] == 0
    for window in windows:
        assert window["frames_counted"] > 0
        assert window["rss_mb"] > 0 and window["fds"] > 0 and window["tasks"] > 0
        assert window["participants"] <= 4
        if sys.platform == "linux":  # glibc's mallinfo2, read from /metrics
            assert 0 < window["heap_in_use_mb"] <= window["heap_mb"]
    for key in ("rss_growth_percent", "fds_first", "fds_last", "tasks_first", "tasks_last",
                "delivery_mean_first_half", "delivery_mean_second_half", "heap_in_use_growth_percent"):
        assert summary[key] is not None, key


def test_a_window_across_an_rtp_timestamp_wrap_is_full_delivery() -> None:
    """Soak windows once read 0.1 % for a subscriber whose timestamps wrapped past 2**32."""
    sys.path.insert(0, str(ROOT))
    from loadtests.bench_capacity import Generator
    from loadtests.media import FrameCounter

    generator = Generator.__new__(Generator)
    generator.calls, generator.errors = {}, []
    start = 0xFFFFFFFF - 3000 * 30 + 1
    wrapping = FrameCounter(joined_at=0.0)
    wrapping.frames = [(0.033 * i, (start + 3000 * i) & 0xFFFFFFFF) for i in range(60)]
    lossy = FrameCounter(joined_at=0.0)
    lossy.frames = [(0.033 * i, 1000 + 3000 * i) for i in range(60) if i % 6 != 0]  # 10 of 60 lost
    generator.retired = [wrapping, lossy]
    window = generator.window(0.0, 10.0)
    assert window["ratios"] == [1.0, pytest.approx(50 / 59)]
    assert window["frames"] == 110
