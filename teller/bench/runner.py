"""`teller bench`: run the benchmark scripts one after another and collect their JSON.

Each benchmark runs as its own process (`python loadtests/bench_X.py ...` from the
repository root), as a person would run it, so the suite measures what the scripts
measure, and a crash, hang or leaked child of one cannot spoil the next: each
gets its own process group, a timeout, and its output in <out>/logs/<name>.log. The
scripts print JSON lines; the last one (progress events aside) is the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .suite import EXCLUDED, SUITE, BenchSpec, names, select, uncovered


class SuiteError(Exception):
    """A problem with how the suite was asked for (exit code 2); nothing has run."""


@dataclass
class BenchResult:
    """One benchmark's outcome, as results.json holds it."""

    status: str  # "ok" | "failed" | "skipped"
    command: list[str]
    seconds: float = 0.0
    summary: dict[str, Any] | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    reason: str | None = None  # why it was skipped
    log: str | None = None
    exit_code: int | None = None
    env: dict[str, str] | None = None  # variables the suite set for it
    imported: str | None = None  # the output of an earlier run this result was read from

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def repo_root() -> Path:
    """The source checkout teller is imported from: the suite needs its loadtests/."""
    import teller

    root = Path(teller.__file__).resolve().parent.parent
    if not (root / "loadtests").is_dir():
        raise SuiteError(
            f"no loadtests/ folder next to the teller package (looked in {root}): "
            "`teller bench` runs from a source checkout, not an installed wheel"
        )
    return root


def machine_info() -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model or platform.processor() or None,
            "python": platform.python_version(), "platform": platform.platform()}


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects a benchmark printed, one per line; other output is ignored."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    out.append(value)
    return out


def summary_of(lines: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last JSON line, passing over progress events ({"event": ...}) printed after
    it: bench_field.py's body camera reports "stopped" once its figures are out."""
    results = [line for line in lines if "event" not in line]
    return (results or lines or [None])[-1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """Stop the benchmark and whatever it started (servers, peers, redis) that is left:
    SIGTERM first, so servers shut down as they would, then SIGKILL."""
    if not _group_alive(proc.pid):
        proc.wait()
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Expired)\b:?")


def error_line(stderr: str, limit: int = 300) -> str:
    """Why a benchmark died: the exception of its last uncaught traceback, not the
    "Exception ignored in ..." noise asyncio and aiohttp print while shutting down."""
    found: list[tuple[bool, str]] = []
    ignored = previous = ""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            ignored = previous if previous.startswith("Exception ignored") else ""
        elif EXCEPTION.match(line):
            more = lines[i + 1].strip() if line.rstrip().endswith(":") and i + 1 < len(lines) else ""
            found.append((bool(ignored), f"{line.strip()} {more}".strip()))
        previous = line
    real = [text for was_ignored, text in found if not was_ignored] or [text for _, text in found]
    if real:
        return real[-1][:limit]
    return " | ".join(stderr.strip().splitlines()[-3:])[:limit]


def shell_line(spec: BenchSpec, command: list[str]) -> str:
    """The command as it can be pasted into a shell, the suite's variables included."""
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in spec.env), shlex.join(command)])


def run_one(spec: BenchSpec, root: Path, out: Path, quick: bool) -> BenchResult:
    """Run one benchmark to completion or timeout; never raises for the benchmark's faults."""
    command = [sys.executable, spec.script, *spec.args(quick)]
    reason = spec.skip_reason(root)
    if reason:
        return BenchResult("skipped", command, reason=reason)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{spec.name}.log"
    stdout_path, stderr_path = logs / f"{spec.name}.stdout", logs / f"{spec.name}.stderr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", **dict(spec.env)}
    timeout = spec.timeout(quick)
    started = time.monotonic()
    error = None
    # Files, not pipes: a grandchild that outlives the benchmark cannot block us on a pipe.
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(command, cwd=root, env=env, stdout=stdout, stderr=stderr,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
            error = f"timed out after {timeout:.0f} s"
        except KeyboardInterrupt:
            _kill_group(proc)
            raise
        finally:
            _kill_group(proc)
    seconds = round(time.monotonic() - started, 1)
    text, err = stdout_path.read_text(errors="replace"), stderr_path.read_text(errors="replace")
    log.write_text(f"$ {shell_line(spec, command)}\n# cwd {root}\n# exit {code}, {seconds} s\n\n--- stdout ---\n{text}"
                   f"\n--- stderr ---\n{err}")
    stdout_path.unlink()
    stderr_path.unlink()
    lines = json_lines(text)
    if error is None and code != 0:
        cause = error_line(err)
        error = f"exit code {code}" + (f": {cause}" if cause else "")
    if error is None and not lines:
        error = "it printed no JSON line"
    return BenchResult("failed" if error else "ok", command, seconds, summary_of(lines), lines,
                       error=error, log=str(log.relative_to(out)), exit_code=code, env=dict(spec.env) or None)


def imported_result(spec: BenchSpec, path: Path, quick: bool) -> BenchResult:
    """A benchmark run by hand earlier (a 30-minute soak, a capacity run on a quiet
    machine): its printed JSON lines stand for a run now."""
    try:
        lines = json_lines(path.read_text(errors="replace"))
    except OSError as exc:
        raise SuiteError(f"--import {spec.name}: cannot read {path}: {exc.strerror}") from exc
    if not lines:
        raise SuiteError(f"--import {spec.name}: {path} has no JSON line")
    return BenchResult("ok", [sys.executable, spec.script, *spec.args(quick)], 0.0, summary_of(lines), lines,
                       imported=path.name)


def _imports(values: list[str], suite: Sequence[BenchSpec]) -> dict[str, Path]:
    known = {spec.name for spec in suite}
    found = {}
    for value in values:
        name, sep, file = value.partition("=")
        if not sep or not file:
            raise SuiteError(f"--import takes NAME=FILE, not {value!r}")
        if name not in known:
            raise SuiteError(f"--import: unknown benchmark {name!r}; valid names: {', '.join(sorted(known))}")
        if not Path(file).is_file():
            raise SuiteError(f"--import {name}: cannot read {file}: no such file")
        found[name] = Path(file)
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", default="", help="comma-separated benchmark or group names (see --list)")
    parser.add_argument("--skip", default="", help="comma-separated benchmark or group names to leave out")
    parser.add_argument("--quick", action="store_true", help="short runs (minutes in all); indicative numbers only")
    parser.add_argument("--out", type=Path, help="results, plots and logs (default: docs/bench of the checkout)")
    parser.add_argument("--docs", type=Path, help="the Markdown file whose bench section is rewritten "
                                                  "(default: docs/performance.md of the checkout)")
    parser.add_argument("--no-docs", action="store_true", help="leave the Markdown file alone")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="NAME=FILE",
                        help="take NAME's results from FILE (what an earlier run of its script printed) "
                             "instead of running it; repeatable")


def add_parser(sub: Any) -> None:
    """`teller bench` in the main command line."""
    bench = sub.add_parser("bench", help="run every benchmark in loadtests/; results, plots, docs section",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(bench)


def _split(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


def command_line(args: argparse.Namespace) -> list[str]:
    """The command as a person would type it again (for results.json and the docs)."""
    argv = ["teller", "bench"]
    argv += ["--only", args.only] if args.only else []
    argv += ["--skip", args.skip] if args.skip else []
    argv += ["--quick"] if args.quick else []
    for value in getattr(args, "imports", []):
        argv += ["--import", value]
    return argv


def list_suite(suite: Sequence[BenchSpec], root: Path) -> str:
    rows = []
    for spec in suite:
        reason = spec.skip_reason(root)
        group = f" [{spec.group_name}]" if spec.group_name != spec.name else ""
        rows.append(f"{spec.name}{group}: {spec.script} -- {spec.about}")
        if spec.env:
            rows.append(f"    environment: {' '.join(f'{k}={shlex.quote(v)}' for k, v in spec.env)}")
        rows.append(f"    full:  {shlex.join(spec.full_args) or '(defaults)'}  (timeout {spec.timeout_s:.0f} s)")
        rows.append(f"    quick: {shlex.join(spec.quick_args) or '(defaults)'}  (timeout {spec.quick_timeout_s:.0f} s)")
        if reason:
            rows.append(f"    would be skipped here: {reason}")
    for script, why in sorted(EXCLUDED.items()):
        rows.append(f"excluded: loadtests/{script} -- {why}")
    for script in uncovered(root, suite):
        rows.append(f"NOT IN THE SUITE: loadtests/{script} -- add it to teller/bench/suite.py")
    return "\n".join(rows)


def run(args: argparse.Namespace, suite: Sequence[BenchSpec] = SUITE, root: Path | None = None) -> int:
    """The `teller bench` command; returns the exit code (0 ok, 1 a benchmark failed, 2 usage)."""
    try:
        root = root or repo_root()
        if args.list:
            print(list_suite(suite, root))
            return 0
        chosen = select(suite, _split(args.only), _split(args.skip))
        imports = _imports(getattr(args, "imports", []), suite)
        chosen += [spec for spec in suite if spec.name in imports and spec not in chosen]
        if not chosen:
            raise SuiteError(f"nothing selected; valid names: {', '.join(names(suite))}")
        out = (args.out or root / "docs" / "bench").resolve()
        docs = None if args.no_docs else (args.docs or root / "docs" / "performance.md").resolve()
        if docs is not None and not docs.is_file():
            raise SuiteError(f"{docs} does not exist (give --docs PATH, or --no-docs)")
    except (SuiteError, ValueError) as exc:
        print(f"teller bench: {exc}", file=sys.stderr)
        return 2
    for script in uncovered(root, suite):
        print(f"teller bench: warning: loadtests/{script} is not in the suite (teller/bench/suite.py)", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    argv = command_line(args)
    document: dict[str, Any] = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(), "quick": bool(args.quick), "command": argv, "benchmarks": {},
    }
    interrupted = False
    width = max(len(s.name) for s in chosen)
    for i, spec in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {spec.name:<{width}} ...", end="", flush=True)
        try:
            if spec.name in imports:
                result = imported_result(spec, imports[spec.name], args.quick)
            else:
                result = run_one(spec, root, out, args.quick)
        except SuiteError as exc:
            print(f" teller bench: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(" interrupted")
            document["benchmarks"][spec.name] = BenchResult("failed", [], error="interrupted").to_json()
            interrupted = True
            break
        document["benchmarks"][spec.name] = result.to_json()
        detail = result.reason or result.error or (f"imported from {result.imported}" if result.imported else "")
        print(f" {result.status} {result.seconds:.1f} s" + (f" ({detail})" if detail else ""), flush=True)
    return _finish(document, out, docs, interrupted)


def _finish(document: dict[str, Any], out: Path, docs: Path | None, interrupted: bool) -> int:
    from .plots import make_plots
    from .report import update_doc

    results = out / "results.json"
    results.write_text(json.dumps(document, indent=1) + "\n")  # before plotting: the figures come first
    try:
        document["plots"] = make_plots(document, out)
    except Exception as exc:  # noqa: BLE001  make_plots guards each figure; this is the last line of defence
        print(f"teller bench: warning: no plots: {exc!r}", file=sys.stderr)
        document["plots"] = {}
    results.write_text(json.dumps(document, indent=1) + "\n")
    print(f"results: {out / 'results.json'}; plots: {', '.join(document['plots']) or 'none'}")
    if docs is not None and not interrupted:
        try:
            update_doc(docs, document, out)
        except (ValueError, OSError) as exc:
            print(f"teller bench: {docs} not updated: {exc}", file=sys.stderr)
            return 2
        print(f"updated the bench section of {docs}")
    if interrupted:
        return 130
    failed = [n for n, r in document["benchmarks"].items() if r["status"] == "failed"]
    if failed:
        print(f"teller bench: failed: {', '.join(failed)} (see {out / 'logs'})", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None, suite: Sequence[BenchSpec] = SUITE, root: Path | None = None) -> int:
    """Run as a library (tests pass their own suite and root); `teller bench` uses run()."""
    parser = argparse.ArgumentParser(prog="teller bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv), suite, root)
