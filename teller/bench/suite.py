"""Every benchmark of the project, with its full-length and quick arguments.

The scripts in loadtests/ stay the source of truth for what is measured and how; this
list only says how `teller bench` runs each one. A script with parts that one run
cannot combine (bench_quality.py, bench_speech.py) has one entry per part, grouped
under one name so `--only speech` still selects them all. Every loadtests/bench_*.py
must be either here or in EXCLUDED with a reason: tests/test_bench_suite.py checks it,
so a new benchmark cannot be left out of the suite unnoticed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# A check run just before a benchmark: the reason it cannot run here, or None.
Requirement = Callable[[], "str | None"]


def needs_binary(*names: str) -> Requirement:
    """The benchmark starts this program (redis-server, coturn, janus): skip without it."""

    def check() -> str | None:
        for name in names:
            if shutil.which(name) is None and not Path("/usr/bin", name).exists():
                return f"{name} is not installed"
        return None

    return check


@dataclass(frozen=True)
class BenchSpec:
    """How to run one benchmark: `python <script> <args>` from the repository root.

    Quick arguments shorten windows and repetitions so the whole suite takes minutes;
    their numbers are indicative only. Timeouts are generous (a shared 2-core machine
    is slow) but finite, so one hung benchmark cannot stall the suite.
    """

    name: str
    script: str  # relative to the repository root (an absolute path also works)
    full_args: tuple[str, ...]
    quick_args: tuple[str, ...]
    timeout_s: float = 900.0
    quick_timeout_s: float = 240.0
    group: str = ""  # a second name that selects this entry; default: its own name
    about: str = ""
    requires: tuple[Requirement, ...] = field(default=(), compare=False)
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables for the run

    @property
    def group_name(self) -> str:
        return self.group or self.name

    def args(self, quick: bool) -> tuple[str, ...]:
        return self.quick_args if quick else self.full_args

    def timeout(self, quick: bool) -> float:
        return self.quick_timeout_s if quick else self.timeout_s

    def skip_reason(self, root: Path) -> str | None:
        """Why it cannot run here (missing script or program), or None."""
        if not (root / self.script).is_file():
            return f"missing script {self.script}"
        for check in self.requires:
            reason = check()
            if reason:
                return reason
        return None


REDIS = needs_binary("redis-server")
COTURN = needs_binary("turnserver")

SUITE: tuple[BenchSpec, ...] = (
    BenchSpec("forward", "loadtests/bench_forward.py",
              ("--subscribers", "1,5,15", "--duration", "20"),
              ("--subscribers", "1,5", "--duration", "5", "--warmup", "1"),
              timeout_s=600, about="one publisher, N subscribers: server CPU per stream-second"),
    BenchSpec("janus", "loadtests/bench_janus.py",
              ("--subscribers", "1,5,15", "--duration", "20"),
              ("--subscribers", "1,5", "--duration", "5", "--warmup", "1"),
              timeout_s=600, requires=(needs_binary("janus"),),
              about="the forwarding workload against Janus's VideoRoom, for comparison"),
    BenchSpec("capacity", "loadtests/bench_capacity.py",
              ("--calls", "10,20,30,40,50,60", "--duration", "20"),
              ("--calls", "4,8", "--duration", "8"),
              timeout_s=1200, quick_timeout_s=300,
              about="concurrent 1:1 calls one node carries, stepped"),
    BenchSpec("soak", "loadtests/bench_capacity.py",
              ("--soak", "1800", "--calls", "37", "--call-seconds", "120"),
              ("--soak", "60", "--soak-window", "15", "--soak-settle", "15", "--calls", "4", "--call-seconds", "10"),
              timeout_s=2400, quick_timeout_s=300,
              about="30 minutes at half a core's capacity, calls coming and going: RSS, fds, tasks, delivery"),
    BenchSpec("failover", "loadtests/bench_failover.py",
              ("--kills", "10", "--calls", "10"),
              ("--kills", "2", "--calls", "2", "--give-up", "15"),
              requires=(REDIS,), about="media gap when an SFU node is killed"),
    BenchSpec("recording", "loadtests/bench_recording.py",
              ("--calls", "10", "--duration", "20", "--repeat", "5"),
              ("--calls", "2", "--duration", "5", "--warmup", "2", "--repeat", "1"),
              timeout_s=1200, about="server CPU with recording off and on"),
    BenchSpec("composite", "loadtests/bench_composite.py", (), ("--duration", "10"),
              timeout_s=600, quick_timeout_s=120, about="composite MP4 build speed"),
    BenchSpec("search", "loadtests/bench_search.py",
              ("--sessions", "100000"), ("--sessions", "20000", "--runs", "20"),
              timeout_s=900, quick_timeout_s=120, about="recording index searches"),
    BenchSpec("routing", "loadtests/bench_routing.py", (), ("--calls", "20,50", "--agents", "5"),
              timeout_s=600, quick_timeout_s=120, requires=(REDIS,),
              about="ACD decision cost, memory and Redis"),
    BenchSpec("wakeup", "loadtests/bench_wakeup.py", (), ("--seconds", "3"),
              timeout_s=120, quick_timeout_s=60, about="CPU per received datagram (calibration)"),
    BenchSpec("quality_cpu", "loadtests/bench_quality.py",
              ("cpu", "--calls", "10", "--duration", "20"), ("cpu", "--calls", "2", "--duration", "5"),
              timeout_s=600, group="quality", about="what live statistics cost"),
    BenchSpec("quality_alert", "loadtests/bench_quality.py",
              ("alert", "--repeat", "5"), ("alert", "--repeat", "1"),
              timeout_s=600, group="quality", requires=(COTURN,), about="impairment to network_poor alert"),
    BenchSpec("quality_adapt", "loadtests/bench_quality.py",
              ("adapt", "--repeat", "3"), ("adapt", "--repeat", "1", "--capped", "10"),
              timeout_s=900, group="quality", requires=(COTURN,), about="downgrade and recovery times"),
    BenchSpec("speech_rtf", "loadtests/bench_speech.py", ("rtf",), ("rtf", "--repeat", "1"),
              timeout_s=600, group="speech", about="Whisper real-time factor"),
    BenchSpec("speech_tts", "loadtests/bench_speech.py", ("tts",), ("tts", "--repeat", "3"),
              timeout_s=600, group="speech", about="TTS time to first audio"),
    BenchSpec("speech_latency", "loadtests/bench_speech.py",
              ("latency", "--sentences", "12"), ("latency", "--sentences", "2"),
              timeout_s=900, group="speech", about="final caption and alert latency (two 31 s alert waits)"),
    BenchSpec("speech_capacity", "loadtests/bench_speech.py",
              ("capacity",), ("capacity", "--seconds", "5"),
              timeout_s=1800, quick_timeout_s=300, group="speech", about="speakers one machine transcribes"),
    BenchSpec("avatar_render", "loadtests/bench_avatar_render.py",
              ("--seconds", "10"), ("--seconds", "3", "--counts", "1,2", "--frames", "120"),
              timeout_s=600, group="avatar", about="avatar drawing and encoding time"),
    BenchSpec("digital_human", "loadtests/bench_digital_human.py",
              ("all", "--counts", "1,2,4", "--seconds", "15", "--repeat", "6"),
              ("all", "--counts", "1", "--seconds", "5", "--repeat", "1"),
              timeout_s=1200, quick_timeout_s=400, group="avatar",
              about="the digital human through the SFU: CPU, answer start, barge-in"),
    BenchSpec("liveness", "loadtests/bench_liveness.py",
              ("--seconds", "15", "--repeat", "5"), ("--seconds", "3", "--repeat", "1", "--streams", "1"),
              timeout_s=900, about="liveness analysis per frame and per stream, time to decision"),
    BenchSpec("field", "loadtests/bench_field.py",
              ("--seconds", "8", "--repeat", "5"), ("--seconds", "3", "--repeat", "2", "--drop-s", "10"),
              timeout_s=900, quick_timeout_s=300, about="device recording, uploads, snapshots, link drop"),
)

# loadtests/bench_*.py scripts deliberately not run by `teller bench`: file name -> why.
EXCLUDED: dict[str, str] = {}


def names(suite: Iterable[BenchSpec]) -> list[str]:
    """Every name --only/--skip accept: entry names, then group names."""
    suite = list(suite)
    out = [s.name for s in suite]
    out += sorted({s.group_name for s in suite} - set(out))
    return out


def select(suite: Iterable[BenchSpec], only: list[str], skip: list[str]) -> list[BenchSpec]:
    """The entries `--only`/`--skip` pick, in suite order; ValueError names the unknown ones."""
    suite = list(suite)
    valid = set(names(suite))
    unknown = [n for n in [*only, *skip] if n not in valid]
    if unknown:
        raise ValueError(f"unknown benchmark(s): {', '.join(unknown)}; valid names: {', '.join(names(suite))}")

    def hit(spec: BenchSpec, wanted: list[str]) -> bool:
        return spec.name in wanted or spec.group_name in wanted

    return [s for s in suite if (not only or hit(s, only)) and not hit(s, skip)]


def uncovered(root: Path, suite: Iterable[BenchSpec]) -> list[str]:
    """loadtests/bench_*.py files neither in the suite nor in EXCLUDED."""
    listed = {Path(s.script).name for s in suite} | set(EXCLUDED)
    return sorted(p.name for p in (root / "loadtests").glob("bench_*.py") if p.name not in listed)
