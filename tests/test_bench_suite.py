"""`teller bench`: the suite runner, its results file, plots and docs section.

Real runs use only the cheapest benchmarks in --quick form (search and wakeup: a few
seconds each); failures, timeouts and skips use scripts made here, passed to the
runner as its suite. The last test keeps the suite complete: a new loadtests/bench_*.py
must be added to teller/bench/suite.py (or excluded there with a reason).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from teller.bench import runner
from teller.bench.headlines import headline
from teller.bench.plots import make_plots
from teller.bench.report import END, START
from teller.bench.suite import EXCLUDED, SUITE, BenchSpec

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DOC = """# Performance

Measured on the development machine. Every number below was printed by the commands shown.

<!-- bench:start -->
an old section
<!-- bench:end -->

## The forwarding benchmark

Hand-written analysis stays as it is.
"""


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELLER_")}
    return subprocess.run([sys.executable, "-m", "teller", "bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=150, check=False)


def image_links(doc: Path) -> list[Path]:
    return [doc.parent / target for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc.read_text())]


def test_cheap_benchmarks_give_results_plots_and_one_docs_section(tmp_path: Path) -> None:
    doc, out = tmp_path / "performance.md", tmp_path / "bench"
    doc.write_text(DOC)
    done = bench("--only", "search,wakeup", "--quick", "--out", str(out), "--docs", str(doc))
    assert done.returncode == 0, done.stdout + done.stderr

    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True
    assert {"cpus", "cpu_model", "python", "platform"} <= set(results["machine"])
    assert list(results["benchmarks"]) == ["search", "wakeup"]
    for name, result in results["benchmarks"].items():
        assert result["status"] == "ok", (name, result)
        assert result["summary"] and result["summary"] == result["lines"][-1]
        assert result["command"][1] == f"loadtests/bench_{name}.py"
        assert result["seconds"] > 0
        assert (out / result["log"]).is_file()
    assert results["benchmarks"]["search"]["summary"]["queries"]

    pngs = sorted(out.glob("*.png"))
    assert pngs and set(results["plots"]) == {p.name for p in pngs}
    from PIL import Image

    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC
        with Image.open(png) as image:
            image.verify()
            assert image.size[0] > 200 and image.size[1] > 200

    text = doc.read_text()
    assert text.count(START) == 1 and text.count(END) == 1 and "an old section" not in text
    assert text.endswith("## The forwarding benchmark\n\nHand-written analysis stays as it is.\n")
    section = text.split(START)[1].split(END)[0]
    assert "| search | ok |" in section and "| wakeup | ok |" in section and "--quick" in section
    links = image_links(doc)
    assert links and all(p.is_file() for p in links)
    assert {p.resolve() for p in links} == {p.resolve() for p in pngs}

    again = bench("--only", "search", "--quick", "--out", str(out), "--docs", str(doc))
    assert again.returncode == 0, again.stdout + again.stderr
    text = doc.read_text()
    assert text.count(START) == 1 and text.count(END) == 1
    assert "| wakeup |" not in text and all(p.is_file() for p in image_links(doc))


def test_an_unknown_name_runs_nothing_and_names_the_valid_ones(tmp_path: Path) -> None:
    doc, out = tmp_path / "performance.md", tmp_path / "out"
    doc.write_text(DOC)
    done = bench("--only", "search,no_such_bench", "--quick", "--out", str(out), "--docs", str(doc))
    assert done.returncode == 2
    assert "no_such_bench" in done.stderr and "valid names" in done.stderr
    for name in ("forward", "capacity", "search", "speech", "quality"):
        assert name in done.stderr
    assert not out.exists() and doc.read_text() == DOC


def test_outside_a_source_checkout_it_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import teller

    monkeypatch.setattr(teller, "__file__", str(tmp_path / "site-packages" / "teller" / "__init__.py"))
    assert runner.main(["--quick", "--no-docs", "--out", str(tmp_path / "out")]) == 2
    assert "source checkout" in capsys.readouterr().err and not (tmp_path / "out").exists()


def script(path: Path, body: str) -> str:
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_a_failing_benchmark_is_recorded_and_the_rest_still_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    child_pid = tmp_path / "child.pid"
    suite = [
        BenchSpec("broken", script(tmp_path / "broken.py", """
            import json, sys
            print(json.dumps({"benchmark": "broken", "step": 1}), flush=True)
            print("boom: something went wrong", file=sys.stderr)
            sys.exit(1)
            """), (), ()),
        BenchSpec("hangs", script(tmp_path / "hangs.py", f"""
            import subprocess, time
            child = subprocess.Popen(["sleep", "60"])
            open({str(child_pid)!r}, "w").write(str(child.pid))
            time.sleep(60)
            """), (), (), quick_timeout_s=2),
        BenchSpec("missing", "loadtests/bench_not_written_yet.py", (), ()),
        BenchSpec("needs_tool", script(tmp_path / "tool.py", "print('{}')\n"), (), (),
                  requires=(lambda: "frobnicator is not installed",)),
        BenchSpec("fine", script(tmp_path / "fine.py", """
            import json, sys
            print("warming up")
            print(json.dumps({"benchmark": "fine", "ms": 1.5}))
            print(json.dumps({"benchmark": "fine", "summary": True, "argv": sys.argv[1:]}))
            """), ("--full",), ("--quick",)),
    ]
    doc, out = tmp_path / "performance.md", tmp_path / "out"
    doc.write_text(DOC)
    code = runner.main(["--quick", "--out", str(out), "--docs", str(doc)], suite=suite, root=ROOT)
    assert code == 1
    assert "failed: broken, hangs" in capsys.readouterr().err

    results = json.loads((out / "results.json").read_text())["benchmarks"]
    assert results["broken"]["status"] == "failed" and "exit code 1" in results["broken"]["error"]
    assert "boom" in results["broken"]["error"] and results["broken"]["summary"] == {"benchmark": "broken", "step": 1}
    assert "boom" in (out / "logs" / "broken.log").read_text()
    assert results["hangs"]["status"] == "failed" and "timed out" in results["hangs"]["error"]
    pid = int(child_pid.read_text())  # what the hung benchmark started went with it
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert results["missing"] == {"status": "skipped", "command": results["missing"]["command"], "seconds": 0.0,
                                  "lines": [], "reason": "missing script loadtests/bench_not_written_yet.py"}
    assert results["needs_tool"]["status"] == "skipped" and results["needs_tool"]["reason"] == "frobnicator is not installed"
    assert results["fine"]["status"] == "ok" and results["fine"]["summary"]["argv"] == ["--quick"]
    assert len(results["fine"]["lines"]) == 2
    section = doc.read_text().split(START)[1]
    assert "| broken | failed | exit code 1" in section and "| fine | ok |" in section


def test_list_names_every_benchmark_script() -> None:
    done = bench("--list")
    assert done.returncode == 0, done.stderr
    scripts = sorted(p.name for p in (ROOT / "loadtests").glob("bench_*.py"))
    in_suite = {Path(s.script).name for s in SUITE}
    for name in scripts:
        assert name in done.stdout, f"--list does not show {name}"
        # A new benchmark must be run by the suite, or excluded with a reason.
        assert name in in_suite or EXCLUDED.get(name), f"loadtests/{name} is not in teller/bench/suite.py"
    assert "NOT IN THE SUITE" not in done.stdout
    assert all(reason.strip() for reason in EXCLUDED.values())
    assert len({s.name for s in SUITE}) == len(SUITE)
    for spec in SUITE:
        assert spec.name in done.stdout and spec.timeout_s >= spec.quick_timeout_s


def test_plots_and_headlines_survive_missing_or_odd_figures(tmp_path: Path) -> None:
    odd = {
        "forward": {"status": "ok", "lines": [{"summary": [{"subscribers": 1}]}]},
        "capacity": {"status": "ok", "lines": [{"benchmark": "capacity", "steps": "none"}]},
        "recording": {"status": "failed", "error": "exit code 1", "lines": []},
        "speech_rtf": {"status": "ok", "lines": [{"bench": "asr_rtf", "real_time_factor": None}]},
        "search": {"status": "ok", "lines": [{"benchmark": "search", "queries": {}}]},
        "liveness": {"status": "ok", "lines": [{"part": "frame", "cpu_ms": {"p50": "fast"}}]},
    }
    assert make_plots({"benchmarks": odd, "quick": True}, tmp_path) == {}
    assert list(tmp_path.iterdir()) == []
    for name, result in odd.items():
        assert isinstance(headline(name, result), str)
    assert headline("recording", odd["recording"]) == "exit code 1"


def test_a_long_run_made_by_hand_is_imported_instead_of_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ran = tmp_path / "ran"
    suite = [
        BenchSpec("soak", script(tmp_path / "soak.py", f"""
            open({str(ran)!r}, "w").write("ran")
            """), ("--soak", "1800"), ("--soak", "60")),
        BenchSpec("fine", script(tmp_path / "fine.py", "import json; print(json.dumps({'ms': 2}))\n"), (), ()),
    ]
    output = tmp_path / "soak-output.txt"
    output.write_text('{"event": "soak_window", "elapsed_s": 60}\nnoise\n{"benchmark": "soak", "rss_growth_percent": 1.5}\n')
    doc, out = tmp_path / "performance.md", tmp_path / "out"
    doc.write_text(DOC)
    code = runner.main(["--quick", "--only", "fine", "--import", f"soak={output}", "--out", str(out), "--docs", str(doc)],
                       suite=suite, root=ROOT)
    assert code == 0
    assert not ran.exists()  # the script itself never ran
    document = json.loads((out / "results.json").read_text())
    soak = document["benchmarks"]["soak"]
    assert soak["status"] == "ok" and soak["imported"] == "soak-output.txt"
    assert soak["summary"] == {"benchmark": "soak", "rss_growth_percent": 1.5} and len(soak["lines"]) == 2
    assert document["benchmarks"]["fine"]["summary"] == {"ms": 2}
    assert "--import" in document["command"]
    assert "| soak | ok |" in doc.read_text() and "full run, imported" in doc.read_text()

    capsys.readouterr()
    assert runner.main(["--import", "nothing=x", "--out", str(tmp_path / "o2"), "--no-docs"], suite=suite, root=ROOT) == 2
    assert "unknown benchmark 'nothing'" in capsys.readouterr().err
    assert runner.main(["--import", f"soak={tmp_path / 'absent.txt'}", "--only", "fine", "--out", str(tmp_path / "o3"),
                        "--no-docs"], suite=suite, root=ROOT) == 2
    assert "cannot read" in capsys.readouterr().err
