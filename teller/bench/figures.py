"""The figures of a suite run: for each PNG, the panels drawn from the benchmarks' JSON.

Each function returns its panels, None for one whose figures are missing (see
plots.panel); plots.make_plots draws those present and writes nothing for a figure
with none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .plots import (
    GREY,
    ORANGE,
    RED,
    TEAL,
    Missing,
    Panel,
    Results,
    bars,
    line_where,
    lines_of,
    num,
    panel,
    summary_of,
    target,
    whole_numbers,
)


def forward(results: Results) -> list[Panel | None]:
    def cpu() -> Panel:
        servers = {"Teller": summary_of(results, "forward")["summary"]}
        try:
            servers["Janus"] = summary_of(results, "janus")["summary"]
        except Missing:
            pass
        ns = sorted({int(num(row["subscribers"])) for rows in servers.values() for row in rows})
        series = {}
        for server, rows in servers.items():
            by_n = {int(num(row["subscribers"])): num(row["server_cpu_ms_per_stream_s"]) for row in rows}
            series[server] = [by_n.get(n, 0.0) for n in ns]

        def draw(ax: Any) -> None:
            bars(ax, [str(n) for n in ns], series)
            ax.set(title="Server CPU per stream-second", xlabel="subscribers", ylabel="ms CPU per stream-second")
        return draw

    return [panel(cpu)]


def capacity(results: Results) -> list[Panel | None]:
    def curve() -> Panel:
        summary = summary_of(results, "capacity")
        steps = summary["steps"]
        calls = [num(s["calls"]) for s in steps]
        cpu = [num(s["server_cpu_percent"]) for s in steps]
        delivery = [100 * num(s["video_delivery_ratio_min"]) for s in steps]
        best = summary.get("capacity_calls")

        def draw(ax: Any) -> None:
            ax.plot(calls, cpu, "o-", color=TEAL, label="server CPU %")
            ax.set(title="Capacity: concurrent 1:1 calls", xlabel="concurrent calls", ylabel="server CPU % (100 = one core)")
            ax.set_ylim(bottom=0)
            whole_numbers(ax)
            right = ax.twinx()
            right.plot(calls, delivery, "s--", color=ORANGE, label="video delivered, worst subscriber %")
            right.set_ylabel("video delivered, worst subscriber (%)")
            right.set_ylim(min(90.0, *delivery) - 1, 100.5)
            right.axhline(99, color=ORANGE, linewidth=0.8, linestyle=":", label="delivery target 99 %")
            if isinstance(best, int | float):
                ax.axvline(best, color=RED, linestyle="--", label=f"capacity: {best:g} calls")
            handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
            ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
        return draw

    def joins() -> Panel:
        steps = summary_of(results, "capacity")["steps"]
        calls = [num(s["calls"]) for s in steps]

        def draw(ax: Any) -> None:
            ax.plot(calls, [num(s["join_p50_ms"]) for s in steps], "o-", color=TEAL, label="join p50")
            ax.plot(calls, [num(s["join_p95_ms"]) for s in steps], "s-", color=ORANGE, label="join p95")
            target(ax, 1000, "p95 target 1 s")
            ax.set(title="Capacity: join to first frame under load", xlabel="concurrent calls", ylabel="ms")
            ax.set_ylim(bottom=0)
            whole_numbers(ax)
        return draw

    return [panel(curve), panel(joins)]


def soak(results: Results) -> list[Panel | None]:
    def process() -> Panel:
        windows = summary_of(results, "soak")["windows"]
        minutes = [num(w["elapsed_s"]) / 60 for w in windows]

        def draw(ax: Any) -> None:
            ax.plot(minutes, [num(w["rss_mb"]) for w in windows], "o-", color=TEAL, label="RSS (MB)")
            ax.plot(minutes, [num(w["fds"]) for w in windows], "s-", color=ORANGE, label="open file descriptors")
            ax.plot(minutes, [num(w.get("tasks", 0)) for w in windows], "^-", color=GREY, label="event-loop tasks")
            ax.set(title="Soak: the server process over time", xlabel="minutes", ylabel="MB / count")
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=8)
        return draw

    def delivery() -> Panel:
        windows = summary_of(results, "soak")["windows"]
        minutes = [num(w["elapsed_s"]) / 60 for w in windows]

        def draw(ax: Any) -> None:
            ax.plot(minutes, [100 * num(w["video_delivery_ratio_mean"]) for w in windows], "o-", color=TEAL, label="mean")
            ax.plot(minutes, [100 * num(w["video_delivery_ratio_min"]) for w in windows], "s--", color=ORANGE, label="worst subscriber")
            target(ax, 99, "99 %")
            ax.set(title="Soak: video delivered per window", xlabel="minutes", ylabel="%")
            ax.legend(fontsize=8)
        return draw

    return [panel(process), panel(delivery)]


def recording(results: Results) -> list[Panel | None]:
    def cpu() -> Panel:
        lines = lines_of(results, "recording")
        summary = summary_of(results, "recording")
        off, on = num(summary["server_cpu_percent_off"]), num(summary["server_cpu_percent_on"])
        runs = [(bool(r["recording"]), num(r["server_cpu_percent"])) for r in lines if "recording" in r]

        def draw(ax: Any) -> None:
            bars(ax, ["recording off", "recording on"], {"mean": [off, on]}, colors=(TEAL,))
            ax.scatter([int(rec) for rec, _ in runs], [v for _, v in runs], color=ORANGE, zorder=3, s=14, label="runs")
            ax.set(title=f"Recording: server CPU ({summary.get('overhead_percent', '?')} % overhead)",
                   ylabel="server CPU % (100 = one core)")
            ax.legend(fontsize=8)
        return draw

    return [panel(cpu)]


def speech(results: Results) -> list[Panel | None]:
    def rtf() -> Panel:
        line = line_where(lines_of(results, "speech_rtf"), "bench", "asr_rtf")
        value = num(line["real_time_factor"])

        def draw(ax: Any) -> None:
            bars(ax, [line.get("model", "whisper")], {"RTF": [value]})
            target(ax, 1.0, "real time")
            ax.set(title="ASR real-time factor (lower is faster)", ylabel="decode time / audio time")
        return draw

    def tts() -> Panel:
        line = line_where(lines_of(results, "speech_tts"), "bench", "tts_first_audio")
        warm = line["in_session_first_audio_s"]
        labels, p50, p95 = ["piper alone"], [1000 * num(line["first_audio_s_p50"])], [1000 * num(line["first_audio_s_p95"])]
        if isinstance(warm.get("warm_p50"), int | float):
            labels.append("in a session")
            p50.append(1000 * num(warm["warm_p50"]))
            p95.append(1000 * num(warm["warm_p95"]))

        def draw(ax: Any) -> None:
            bars(ax, labels, {"p50": p50, "p95": p95})
            target(ax, 1000 * num(line.get("target_s", 0.3)), "target")
            ax.set(title="TTS time to first audio", ylabel="ms")
        return draw

    def latency() -> Panel:
        line = line_where(lines_of(results, "speech_latency"), "bench", "caption_latency")
        values = [num(line["final_caption_s_p50"]), num(line["final_caption_s_p95"]), num(line["final_caption_s_max"])]
        alerts = [num(a) for a in line.get("alert_s", [])]

        def draw(ax: Any) -> None:
            bars(ax, ["caption\np50", "caption\np95", "caption\nmax", *[f"alert\n{i + 1}" for i in range(len(alerts))]],
                 {"measured": values + alerts})
            target(ax, num(line["target_caption_s"]), "caption target")
            ax.set(title="End of speech -> final caption / alert", ylabel="seconds")
        return draw

    def asr_capacity() -> Panel:
        line = line_where(lines_of(results, "speech_capacity"), "bench", "asr_capacity")
        curves: dict[str, list[tuple[float, float]]] = {}
        for step in line["steps"]:
            key = f"{step['workers']} x {step['threads']} threads"
            curves.setdefault(key, []).append((num(step["speakers"]), num(step["final_lag_s_p95"])))
        if not curves:
            raise Missing("steps")

        def draw(ax: Any) -> None:
            for (key, points), color in zip(curves.items(), (TEAL, ORANGE, GREY)):
                ax.plot(*zip(*points), "o-", color=color, label=f"decoders {key}")
            target(ax, 3.0, "keeps up (p95 <= 3 s)")
            whole_numbers(ax)
            ax.set(title=f"ASR capacity: {line.get('max_conversational_speakers')} speakers",
                   xlabel="conversational speakers", ylabel="final caption lag p95 (s)")
        return draw

    return [panel(rtf), panel(tts), panel(latency), panel(asr_capacity)]


def avatar(results: Results) -> list[Panel | None]:
    def render() -> Panel:
        line = line_where(lines_of(results, "avatar_render"), "benchmark", "avatar_render")
        rows = line["results"]
        series = {"wall p50": [num(r["render_ms_p50"]) for r in rows], "wall p99": [num(r["render_ms_p99"]) for r in rows],
                  "CPU per frame": [num(r["cpu_ms_per_frame"]) for r in rows]}

        def draw(ax: Any) -> None:
            bars(ax, [r["size"] for r in rows], series)
            ax.set(title="Avatar frame time", ylabel="ms per frame")
        return draw

    def cores() -> Panel:
        curves = {}
        try:
            tracks = line_where(lines_of(results, "avatar_render"), "benchmark", "avatar_tracks")
            curves["drawing + VP8 (no network)"] = [(num(r["avatars"]), num(r["cores_per_avatar"])) for r in tracks["runs"]]
        except (Missing, KeyError):
            pass
        try:
            dh = line_where(lines_of(results, "digital_human"), "benchmark", "digital_human_avatars")
            curves["digital human through the SFU"] = [(num(r["avatars"]), num(r["cores_per_avatar"])) for r in dh["runs"]]
        except (Missing, KeyError):
            pass
        if not curves:
            raise Missing("avatar runs")

        def draw(ax: Any) -> None:
            for (name, points), color in zip(curves.items(), (TEAL, ORANGE)):
                ax.plot(*zip(*points), "o-", color=color, label=name)
            target(ax, 0.3, "target 0.3 core")
            ax.set(title="CPU per avatar at 30 fps", xlabel="avatars", ylabel="cores per avatar")
            ax.set_ylim(bottom=0)
            whole_numbers(ax)
        return draw

    return [panel(render), panel(cores)]


def liveness(results: Results) -> list[Panel | None]:
    def frame() -> Panel:
        rows = [r for r in lines_of(results, "liveness") if r.get("part") == "frame"]
        if not rows:
            raise Missing("frame")
        series = {q: [num(r["cpu_ms"][q]) for r in rows] for q in ("p50", "p95", "max")}

        def draw(ax: Any) -> None:
            bars(ax, [str(r["picture"]) for r in rows], series)
            target(ax, 10.0, "target 10 ms")
            ax.set(title="Liveness analysis, 640x480", ylabel="CPU ms per analysed frame")
        return draw

    def stream() -> Panel:
        rows = [r for r in lines_of(results, "liveness") if r.get("part") == "stream"]
        if not rows:
            raise Missing("stream")
        values = [num(r["liveness_cores_per_stream"]) for r in rows]

        def draw(ax: Any) -> None:
            bars(ax, [str(r["streams"]) for r in rows], {"cores per stream": values})
            ax.set(title="Liveness watch per customer stream", xlabel="customers", ylabel="cores")
        return draw

    return [panel(frame), panel(stream)]


def field(results: Results) -> list[Panel | None]:
    def local() -> Panel:
        rows = [r for r in lines_of(results, "field") if r.get("part") == "local"]
        if not rows:
            raise Missing("local")
        series = {"source only": [num(r["source_only_core"]) for r in rows],
                  "with the recorder": [num(r["with_recorder_core"]) for r in rows]}

        def draw(ax: Any) -> None:
            bars(ax, [str(r["size"]) for r in rows], series)
            ax.set(title="Body camera: recording on the device", ylabel="process CPU (cores)")
        return draw

    return [panel(local)]


def routing(results: Results) -> list[Panel | None]:
    def ops() -> Panel:
        curves: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for row in lines_of(results, "routing"):
            if row.get("benchmark") != "routing":
                continue
            for op, label in (("available", "agent available (dispatch)"), ("request", "queue a call")):
                curves.setdefault((str(row["backend"]), label), []).append((num(row["queued_calls"]), num(row[f"{op}_ms_mean"])))
        if not curves:
            raise Missing("routing rows")

        def draw(ax: Any) -> None:
            colors = {"memory": TEAL, "redis": ORANGE}
            for (backend, label), points in curves.items():
                style = "o-" if "dispatch" in label else "s--"
                ax.plot(*zip(*sorted(points)), style, color=colors.get(backend, GREY), label=f"{backend}: {label}")
            ax.set(title="Routing decision cost (mean)", xlabel="calls queued", ylabel="ms")
            ax.legend(fontsize=8)
        return draw

    return [panel(ops)]


def search(results: Results) -> list[Panel | None]:
    def queries() -> Panel:
        summary = summary_of(results, "search")
        rows = list(summary["queries"].items())
        if not rows:
            raise Missing("queries")
        p50, p95 = [num(q["p50_ms"]) for _, q in rows], [num(q["p95_ms"]) for _, q in rows]

        def draw(ax: Any) -> None:
            ys = range(len(rows))
            ax.barh([y + 0.2 for y in ys], p50, 0.4, color=TEAL, label="p50")
            ax.barh([y - 0.2 for y in ys], p95, 0.4, color=ORANGE, label="p95")
            ax.set_yticks(list(ys), [name.replace("_", " ") for name, _ in rows], fontsize=8)
            ax.invert_yaxis()
            ax.set(title=f"Recording search over {summary.get('sessions', '?')} sessions", xlabel="ms per search")
            ax.legend(fontsize=8)
        return draw

    return [panel(queries)]


def failover(results: Results) -> list[Panel | None]:
    def recovery() -> Panel:
        summary = summary_of(results, "failover")
        rec = summary["recovery_s"]
        values = [num(rec["p50"]), num(rec["p95"]), num(rec["max"])]

        def draw(ax: Any) -> None:
            bars(ax, ["p50", "p95", "max"], {"measured": values})
            ax.set(title=f"Failover ({summary.get('mode', 'kill')}): {summary.get('calls_lost', '?')} of "
                         f"{summary.get('calls_moved', '?')} calls lost", ylabel="seconds to the first frame")
        return draw

    return [panel(recovery)]


def quality(results: Results) -> list[Panel | None]:
    def cpu() -> Panel:
        line = line_where(lines_of(results, "quality_cpu"), "benchmark", "quality_stats_cpu")
        share = num(line["stats_share_of_server_cpu_percent"])

        def draw(ax: Any) -> None:
            bars(ax, ["statistics"], {"% of server CPU": [share]})
            target(ax, num(line.get("target_percent", 2.0)), "target")
            ax.set(title="Live statistics: share of server CPU", ylabel="%")
        return draw

    def times() -> Panel:
        points: dict[str, list[float]] = {}
        for name, key, label in (("quality_alert", "impairment_to_alert_s", "loss -> alert"),
                                 ("quality_adapt", "cap_to_downgrade_s", "cap -> downgrade"),
                                 ("quality_adapt", "lift_to_full_s", "lift -> full")):
            try:
                values = [num(r[key]) for r in lines_of(results, name) if key in r]
            except Missing:
                continue
            if values:
                points[label] = values
        if not points:
            raise Missing("quality runs")

        def draw(ax: Any) -> None:
            for i, (label, values) in enumerate(points.items()):
                ax.scatter([i] * len(values), values, color=TEAL, zorder=3)
            ax.set_xticks(range(len(points)), list(points))
            ax.set(title="Quality: reaction times (each run)", ylabel="seconds")
        return draw

    return [panel(cpu), panel(times)]


FIGURES: dict[str, tuple[str, Callable[[Results], list[Panel | None]]]] = {
    "forward.png": ("Forwarding: server CPU per stream-second (Janus beside it when it ran)", forward),
    "capacity.png": ("Capacity: server CPU and video delivery against concurrent calls", capacity),
    "soak.png": ("Soak: the server's memory, descriptors, tasks and delivery over time", soak),
    "recording.png": ("Recording: server CPU off and on", recording),
    "failover.png": ("Failover: seconds without video when a node dies", failover),
    "routing.png": ("Routing: ACD decision cost as queues grow", routing),
    "search.png": ("Recording search times", search),
    "quality.png": ("Live quality: statistics cost, alert and adaptation times", quality),
    "speech.png": ("Speech: ASR real-time factor, TTS first audio, caption latency, ASR capacity", speech),
    "avatar.png": ("Avatar: frame times and CPU per avatar", avatar),
    "liveness.png": ("Liveness: CPU per analysed frame and per stream", liveness),
    "field.png": ("Field devices: CPU of recording on the device", field),
}
