"""`teller impair`: run the relay, or change and show a running one's settings.

    teller impair --listen 127.0.0.1:3479 --target 127.0.0.1:3478 --control 127.0.0.1:7899 --loss 2 --delay 80
    teller impair set --control http://127.0.0.1:7899 --down-rate 300 --down-loss 5
    teller impair show --control http://127.0.0.1:7899

Loss is given in percent here (as in `tc netem`) and as a fraction in the API.
`--loss/--delay/...` set both directions; `--up-*`/`--down-*` override one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

from .. import logs
from ..errors import BadRequest

# option suffix → (Impairment field, conversion from what the command line takes, help)
OPTIONS: dict[str, tuple[str, float, str]] = {
    "loss": ("loss", 0.01, "packet loss in percent"),
    "delay": ("delay_ms", 1.0, "one-way delay in ms"),
    "jitter": ("jitter_ms", 1.0, "delay varies uniformly by ± this many ms (reorders packets)"),
    "rate": ("rate_kbps", 1.0, "bandwidth cap in kbit/s (0: none)"),
    "queue": ("queue_ms", 1.0, "at the cap, drop packets that would queue longer than this (ms, default 200)"),
    "burst": ("loss_burst", 1.0, "mean number of packets lost in a row (0: independent losses)"),
}
DIRECTIONS = ("up", "down")


def add_parser(sub: Any) -> None:
    impair = sub.add_parser(
        "impair",
        help="a UDP relay that adds loss, delay, jitter and a bandwidth cap (put it in front of TURN)",
        description="Relay UDP from --listen to --target with impairments per direction "
        "(up: client to target, down: target to client). See docs/loadtest.md.",
    )
    impair.add_argument("--listen", metavar="HOST:PORT", help="where clients send (port 0 picks a free one)")
    impair.add_argument("--target", metavar="HOST:PORT", help="the UDP service behind the relay, e.g. coturn")
    impair.add_argument("--control", metavar="HOST:PORT", help="serve the control API (GET/PUT /impair) here")
    impair.add_argument("--seed", help="seed for the random draws, to replay the same losses")
    impair.add_argument("--stats-interval", type=float, default=0, metavar="S", help="print a JSON stats line every S seconds")
    impair.add_argument("--idle-timeout", type=float, default=60.0, metavar="S", help="close a client's mapping after S idle seconds")
    impair.add_argument("--log-level", default="INFO")
    _add_impairment_options(impair)
    actions = impair.add_subparsers(dest="impair_action", metavar="{set,show}")
    change = actions.add_parser("set", help="change a running relay's settings through its control API")
    change.add_argument("--control", required=True, metavar="URL", help="e.g. http://127.0.0.1:7899")
    _add_impairment_options(change)
    show = actions.add_parser("show", help="print a running relay's settings and counters")
    show.add_argument("--control", required=True, metavar="URL")


def _percent(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"a percentage from 0 to 100, not {text}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _add_impairment_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("impairment (--NAME for both directions, --up-NAME/--down-NAME for one)")
    for prefix in ("", "up-", "down-"):
        for suffix, (_, _, text) in OPTIONS.items():
            where = {"": "both directions", "up-": "client to target", "down-": "target to client"}[prefix]
            group.add_argument(
                f"--{prefix}{suffix}",
                dest=f"{prefix.replace('-', '_')}{suffix}",
                type=_percent if suffix == "loss" else _number,
                metavar="PCT" if suffix == "loss" else "N",
                help=f"{text}; {where}",
            )


def impairments_from_args(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """The partial settings the options name: {"up": {...}, "down": {...}}."""
    out: dict[str, dict[str, float]] = {direction: {} for direction in DIRECTIONS}
    for suffix, (field, scale, _) in OPTIONS.items():
        both = getattr(args, suffix, None)
        for direction in DIRECTIONS:
            value = getattr(args, f"{direction}_{suffix}", None)
            value = both if value is None else value
            if value is not None:
                out[direction][field] = value * scale
    return out


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT or :PORT (loopback)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


async def run(args: argparse.Namespace) -> int:
    if args.impair_action == "show":
        return await _request("GET", args.control, None)
    if args.impair_action == "set":
        body = {k: v for k, v in impairments_from_args(args).items() if v}
        if not body:
            return _fail("nothing to set: give at least one impairment option", "usage")
        return await _request("PUT", args.control, body)
    return await _serve(args)


async def _serve(args: argparse.Namespace) -> int:
    from .control import start_control
    from .model import Impairment
    from .relay import ImpairRelay

    logs.configure(args.log_level, "json")
    if not args.listen or not args.target:
        return _fail("teller impair needs --listen and --target (or the set/show commands)", "usage")
    try:
        listen, target = parse_address(args.listen), parse_address(args.target)
        control = parse_address(args.control) if args.control else None
    except ValueError as exc:
        return _fail(str(exc), "usage")
    seed: int | str | None = args.seed
    if seed is not None and seed.lstrip("-").isdigit():
        seed = int(seed)
    changes = impairments_from_args(args)
    settings: dict[str, Impairment] = {}
    for direction in DIRECTIONS:
        try:
            settings[direction] = Impairment.from_json(changes[direction])
        except BadRequest as exc:
            return _fail(f"{direction}: {exc.message}", exc.code)
    up, down = settings["up"], settings["down"]
    relay = ImpairRelay(listen, target, up=up, down=down, seed=seed, idle_timeout_s=args.idle_timeout)
    runner = None
    try:
        await relay.start()
        control_url = None
        if control is not None:
            runner, control_url = await start_control(relay, *control)
    except OSError as exc:
        await relay.close()
        return _fail(f"cannot listen: {exc}", "listen_failed")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    _print({"event": "ready", "listen": relay.address, "target": relay.stats()["target"], "control": control_url, "settings": relay.settings()})
    try:
        while not stop.is_set():
            timeout = args.stats_interval if args.stats_interval > 0 else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout)
            if not stop.is_set():
                _print({"event": "stats", **relay.stats()})
    finally:
        if runner is not None:
            await runner.cleanup()
        await relay.close()
    return 0


async def _request(method: str, control: str, body: dict[str, Any] | None) -> int:
    import aiohttp

    base = control if "://" in control else f"http://{control}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.request(method, base.rstrip("/") + "/impair", json=body) as response:
                reply = await response.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError, json.JSONDecodeError) as exc:
        return _fail(f"cannot reach the control API at {base}: {exc or type(exc).__name__}", "unreachable")
    if response.status != 200:
        print(json.dumps(reply), file=sys.stderr)
        return 1
    _print(reply)
    return 0


def _fail(message: str, code: str) -> int:
    print(json.dumps({"error": {"code": code, "message": message}}), file=sys.stderr)
    return 2 if code in ("usage", "invalid_impairment") else 1


def _print(body: dict[str, Any]) -> None:
    print(json.dumps(body), flush=True)
