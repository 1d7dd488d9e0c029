"""`teller`: serve, signal, node, cluster, token, client, ingest."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys

from aiohttp import web

from . import __version__, logs
from .config import ConfigError, load_config

log = logging.getLogger("teller")


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    overrides: dict[str, dict[str, object]] = {}
    if getattr(args, "host", None):
        overrides.setdefault("server", {})["host"] = args.host
    if getattr(args, "port", None):
        overrides.setdefault("server", {})["port"] = args.port
    try:
        return load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"teller: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def _built(factory, config):  # type: ignore[no-untyped-def]
    """The app, or a one-line error for a bad file that config names (an FAQ, a catalogue)."""
    try:
        return factory(config)
    except ConfigError as exc:
        print(f"teller: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


async def _start_site(app: web.Application, config) -> tuple[web.AppRunner, str]:  # type: ignore[no-untyped-def]
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    context = None
    if config.server.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config.server.tls_cert, config.server.tls_key or None)
    site = web.TCPSite(runner, config.server.host, config.server.port, ssl_context=context)
    await site.start()
    url = config.server.base_url()
    if config.server.port == 0:
        port = runner.addresses[0][1]
        url = url.rsplit(":", 1)[0] + f":{port}"
    return runner, url


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve(args: argparse.Namespace) -> None:
    from .signaling import create_app

    config = _load(args)
    logs.configure(config.log.level, config.log.format)
    runner, url = await _start_site(_built(create_app, config), config)
    print(f"Teller {__version__} is running at {url}/", flush=True)
    print(f"  customer: {url}/customer   agent desk: {url}/desk   wallboard: {url}/wallboard", flush=True)
    print(f"  two-person call page: {url}/call   API: {url}/openapi.json", flush=True)
    print(
        f"  embedded mode: in-memory state, data in {config.storage.data_dir}; Ctrl-C stops",
        flush=True,
    )
    if config.auth.dev_tokens and config.server.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("auth.dev_tokens is on while listening beyond localhost: anyone can get a token")
    await _stop_event().wait()
    log.info("shutting down")
    await runner.cleanup()


async def _signal(args: argparse.Namespace) -> None:
    from .cluster.signal_app import create_signal_app

    config = _load(args)
    logs.configure(config.log.level, config.log.format)
    runner, url = await _start_site(_built(create_signal_app, config), config)
    print(f"Teller {__version__} signalling is running at {url}/ (state: {config.state.backend})", flush=True)
    await _stop_event().wait()
    log.info("shutting down")
    await runner.cleanup()


async def _node(args: argparse.Namespace) -> None:
    from .signaling import create_app
    from .signaling.app import AGENT
    from .signaling.keys import NODE

    config = _load(args)
    logs.configure(config.log.level, config.log.format)
    if args.drain:
        raise SystemExit(await _drain_remote(config, args.drain))
    app = create_app(config, role="node")
    runner, url = await _start_site(app, config)
    agent = app[AGENT]
    print(f"Teller {__version__} SFU node {app[NODE].id} is running at {url}/ (advertised as {agent.url})", flush=True)  # type: ignore[attr-defined]
    stop = _stop_event()
    drained = asyncio.create_task(agent.drained.wait())  # type: ignore[attr-defined]
    await asyncio.wait({drained, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if not drained.done():
        # SIGTERM or Ctrl-C: move every room to another node first (a rolling upgrade);
        # a second signal stops at once. `teller node --drain` ends up here drained.
        stop.clear()
        drain = asyncio.create_task(agent.drain())  # type: ignore[attr-defined]
        await asyncio.wait({drain, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    await runner.cleanup()


async def _drain_remote(config, node_id: str) -> int:  # type: ignore[no-untyped-def]
    from .cluster.node_agent import node_channel
    from .state import StateUnavailable, open_store

    store = open_store(config.state)
    await store.start()
    try:
        if await store.get_node(node_id) is None:
            print(f"teller: no live node {node_id}", file=sys.stderr)
            return 1
        await store.publish(node_channel(node_id), {"op": "drain"})
        deadline = asyncio.get_running_loop().time() + config.cluster.drain_timeout_s + 10
        while asyncio.get_running_loop().time() < deadline:
            if await store.get_node(node_id) is None:
                print(f"node {node_id} drained and stopped")
                return 0
            await asyncio.sleep(0.5)
        print(f"teller: node {node_id} is still registered", file=sys.stderr)
        return 1
    except StateUnavailable as exc:
        print(f"teller: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await store.close()


def _token(args: argparse.Namespace) -> None:
    from .signaling.tokens import Grants, issuer_for

    config = _load(args)
    grants = None
    if args.grants is not None:
        names = {g.strip() for g in args.grants.split(",") if g.strip()}
        unknown = names - set(Grants.__annotations__)
        if unknown:
            print(f"teller: unknown grant(s) {sorted(unknown)}", file=sys.stderr)
            raise SystemExit(2)
        grants = Grants(**{name: True for name in names})
    try:
        token = issuer_for(config).issue(
            room=args.room,
            role=args.role,
            subject=args.identity,
            name=args.name,
            ttl_s=config.auth.default_ttl_s if args.ttl is None else args.ttl,
            grants=grants,
        )
    except ValueError as exc:
        print(f"teller: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    print(token)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="teller", description="Teller remote-teller platform")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run everything in one process (embedded mode)")
    serve.add_argument("--config", help="a TOML file layered over the defaults")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)

    sig = sub.add_parser("signal", help="run a stateless signalling process of a cluster")
    sig.add_argument("--config", help="a TOML file layered over the defaults (see cluster.example.toml)")
    sig.add_argument("--host")
    sig.add_argument("--port", type=int)

    node = sub.add_parser("node", help="run an SFU node of a cluster (SIGTERM drains it)")
    node.add_argument("--config", help="a TOML file layered over the defaults (see cluster.example.toml)")
    node.add_argument("--host")
    node.add_argument("--port", type=int)
    node.add_argument("--drain", metavar="NODE_ID", help="ask a running node to move its rooms away and exit")

    cluster = sub.add_parser("cluster", help="a local cluster on this machine")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    up = cluster_sub.add_parser("up", help="start Redis (if needed), signalling processes and nodes")
    up.add_argument("--config", help="a TOML file layered over the defaults (see cluster.example.toml)")
    up.add_argument("--signals", type=int, default=2)
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--port", type=int, default=7880, help="first signalling port; nodes use port+100 and up")
    up.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="started here if nothing answers")
    up.add_argument("--data-dir", default="./data/cluster", help="shared secret and data of the local cluster")

    token = sub.add_parser("token", help="print an access token")
    token.add_argument("--config")
    token.add_argument("--room", required=True, help='room name, or "*" with the admin grant')
    token.add_argument("--role", required=True)
    token.add_argument("--name")
    token.add_argument("--identity", help="subject; default: role plus a random suffix")
    token.add_argument("--ttl", type=int, help="seconds until it expires")
    token.add_argument("--grants", help="comma-separated: publish,subscribe,data,admin (default: by role)")

    from .bench.runner import add_parser as add_bench_parser
    from .client.cli import add_parser as add_client_parser
    from .field.ingest_cli import add_parser as add_ingest_parser
    from .impair.cli import add_parser as add_impair_parser
    from .recording.cli import add_parsers as add_recording_parsers

    add_client_parser(sub)
    add_ingest_parser(sub)
    add_impair_parser(sub)
    add_recording_parsers(sub)
    add_bench_parser(sub)

    args = parser.parse_args(argv)
    if args.command == "serve":
        import os
        if os.environ.get("TELLER_EXPERIMENT_UVLOOP"):
            import uvloop
            uvloop.run(_serve(args))
        else:
            asyncio.run(_serve(args))
    elif args.command == "signal":
        asyncio.run(_signal(args))
    elif args.command == "node":
        asyncio.run(_node(args))
    elif args.command == "cluster":
        from .cluster.runner import up as cluster_up

        raise SystemExit(cluster_up(args))
    elif args.command == "token":
        _token(args)
    elif args.command in ("audit", "recording"):
        from .recording.cli import run as run_recording

        raise SystemExit(run_recording(args, _load(args)))
    elif args.command == "client":
        from .client.cli import run as run_client

        raise SystemExit(asyncio.run(run_client(args)))
    elif args.command == "ingest":
        from .field.ingest_cli import run as run_ingest

        raise SystemExit(asyncio.run(run_ingest(args)))
    elif args.command == "impair":
        from .impair.cli import run as run_impair

        raise SystemExit(asyncio.run(run_impair(args)))
    elif args.command == "bench":
        from .bench.runner import run as run_bench

        raise SystemExit(run_bench(args))


if __name__ == "__main__":
    main()
