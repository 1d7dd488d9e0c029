"""PNG plots of a suite run, drawn with matplotlib's Agg canvas (no display, no pyplot).

Each figure is made of panels, and each panel reads only what the benchmarks really
printed: a panel whose figures are missing (a part not run, a benchmark that failed or
changed its output) is left out, and a figure with no panel is not written. A plot must
never cost the results of a suite that took an hour to run, so every failure here is a
warning.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Results = dict[str, dict[str, Any]]
Panel = Callable[[Any], None]  # draws on one matplotlib Axes

TEAL, ORANGE, GREY, RED = "#1b7f79", "#e07b39", "#888888", "#c0392b"


class Missing(Exception):
    """A figure the panel needs is not in the results."""


def num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise Missing(repr(value))
    return float(value)


def lines_of(results: Results, name: str) -> list[dict[str, Any]]:
    """The JSON lines of a benchmark that succeeded."""
    result = results.get(name) or {}
    if result.get("status") != "ok" or not result.get("lines"):
        raise Missing(name)
    return list(result["lines"])


def summary_of(results: Results, name: str) -> dict[str, Any]:
    """The summary line of a benchmark that succeeded."""
    lines_of(results, name)
    summary = results[name].get("summary")
    if not isinstance(summary, dict):
        raise Missing(f"{name} summary")
    return summary


def line_where(lines: Iterable[dict[str, Any]], key: str, value: Any) -> dict[str, Any]:
    for line in lines:
        if line.get(key) == value:
            return line
    raise Missing(f"{key}={value}")


def panel(make: Callable[[], Panel]) -> Panel | None:
    """The panel, or None where its figures are missing or malformed."""
    try:
        return make()
    except (Missing, KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None


def bars(ax: Any, labels: list[str], series: dict[str, list[float]], colors: Iterable[str] = (TEAL, ORANGE, GREY)) -> None:
    """Grouped bars with their values written above them."""
    width = 0.8 / max(1, len(series))
    for k, ((name, values), color) in enumerate(zip(series.items(), colors)):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(values))]
        drawn = ax.bar(xs, values, width, label=name, color=color)
        ax.bar_label(drawn, fmt=lambda v: f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}", fontsize=7)
    ax.set_xticks(range(len(labels)), labels)
    if len(series) > 1:
        ax.legend(fontsize=8)


def whole_numbers(ax: Any) -> None:
    """Counts (calls, avatars, speakers) on the x axis: no 1.5 avatars."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def target(ax: Any, y: float, label: str) -> None:
    ax.axhline(y, color=RED, linestyle="--", linewidth=1, label=label)
    ax.legend(fontsize=8)


def stamp(document: dict[str, Any]) -> str:
    """What run the figure comes from, on the figure itself (PNGs travel without the doc)."""
    machine = document.get("machine") or {}
    quick = " --quick (indicative only)" if document.get("quick") else ""
    return (f"teller bench{quick}, {str(document.get('generated_at', ''))[:10]}, "
            f"{machine.get('cpus')} CPUs ({machine.get('cpu_model')})")


def draw_figure(panels: list[Panel], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    columns = min(len(panels), 2)
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(5.2 * columns, 4.0 * rows), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for draw, ax in zip(panels, axes):
        draw(ax)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.remove()
    figure.suptitle(title, fontsize=8, color=GREY)
    figure.savefig(path, dpi=100)


def make_plots(document: dict[str, Any], out: Path) -> dict[str, str]:
    """Write the PNGs whose figures are present; returns file name -> caption."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("teller bench: matplotlib is not installed (pip install 'teller[bench]'): no plots", file=sys.stderr)
        return {}
    from .figures import FIGURES

    results: Results = document["benchmarks"]
    written = {}
    for filename, (caption, build) in FIGURES.items():
        try:
            panels = [p for p in build(results) if p is not None]
            if not panels:
                continue
            draw_figure(panels, out / filename, stamp(document))
        except Exception as exc:  # noqa: BLE001  a plot must never lose the results
            print(f"teller bench: warning: {filename} not drawn: {exc!r}", file=sys.stderr)
            continue
        written[filename] = caption
    return written
