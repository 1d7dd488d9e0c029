"""`teller bench`: every benchmark in loadtests/ in one run, with plots and a docs section.

suite.py lists the benchmarks and how to run them (full and --quick), runner.py runs
them as subprocesses and writes results.json, plots.py draws the PNGs that figures.py
lays out, and report.py (with headlines.py) rewrites the section of docs/performance.md.
"""

from .runner import main

__all__ = ["main"]
