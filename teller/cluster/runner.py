"""`teller cluster up`: a whole cluster on one machine, for trying it and for tests.

It starts Redis when the configured one does not answer and a `redis-server`
binary is installed, then the signalling processes and the nodes, each with its
own port, node URL and UDP range, and prefixes their output with their name.
Ctrl-C stops them all; a node stopped this way drains first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from urllib.parse import urlparse

from ..config import ConfigError, load_config
from ..signaling.tokens import resolve_secret

UDP_PORTS_PER_NODE = 1000
FIRST_UDP_PORT = 40000


@dataclass
class Member:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None


def plan(
    config_path: str | None, signals: int, nodes: int, port: int, redis_url: str, secret: str, data_dir: str
) -> list[Member]:
    """The processes of a local cluster, with the environment each one needs."""
    base = [sys.executable, "-m", "teller"]
    config_args = ["--config", config_path] if config_path else []
    common = {
        "TELLER_STATE__BACKEND": "redis",
        "TELLER_STATE__REDIS_URL": redis_url,
        "TELLER_SERVER__HOST": "127.0.0.1",
        "TELLER_AUTH__SECRET": secret,
        "TELLER_STORAGE__DATA_DIR": data_dir,
        # One machine, one browser: the demo page's development tokens stay on.
        "TELLER_AUTH__DEV_TOKENS": "true",
    }
    members = []
    for i in range(signals):
        env = {
            **common,
            "TELLER_SERVER__PORT": str(port + i),
            "TELLER_SERVER__PUBLIC_URL": f"http://127.0.0.1:{port + i}",
            "TELLER_SERVER__TLS_CERT": "",
            "TELLER_SERVER__TLS_KEY": "",
        }
        members.append(Member(f"signal-{i + 1}", base + ["signal", *config_args], env))
    for i in range(nodes):
        node_port = port + 100 + i
        udp = FIRST_UDP_PORT + i * UDP_PORTS_PER_NODE
        env = {
            **common,
            "TELLER_SERVER__PORT": str(node_port),
            "TELLER_SERVER__PUBLIC_URL": "",
            "TELLER_SERVER__TLS_CERT": "",
            "TELLER_SERVER__TLS_KEY": "",
            "TELLER_SFU__ANNOUNCED_ADDRESS": "",
            "TELLER_CLUSTER__NODE_URL": f"http://127.0.0.1:{node_port}",
            "TELLER_SFU__UDP_PORT_MIN": str(udp),
            "TELLER_SFU__UDP_PORT_MAX": str(udp + UDP_PORTS_PER_NODE - 1),
        }
        members.append(Member(f"node-{i + 1}", base + ["node", *config_args], env))
    return members


def _redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _pump(name: str, stream: object) -> None:
    for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
        sys.stdout.write(f"{name:>9} | {line.decode(errors='replace')}")
        sys.stdout.flush()


def up(args: argparse.Namespace) -> int:
    """Everything on loopback: the config's Redis URL, TLS and public URL are for a real
    deployment; here Redis is --redis-url (started if nothing answers there)."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"teller: configuration error: {exc}", file=sys.stderr)
        return 2
    redis_url = args.redis_url
    data_dir = args.data_dir
    os.makedirs(data_dir, exist_ok=True)
    secret = config.auth.secret or resolve_secret(replace(config, storage=replace(config.storage, data_dir=data_dir)))
    parsed = urlparse(redis_url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    redis: subprocess.Popen[bytes] | None = None
    if not _redis_answers(host, port):
        binary = shutil.which("redis-server")
        if binary is None or host not in ("127.0.0.1", "localhost"):
            print(f"teller: no Redis answers at {redis_url}, and none can be started here", file=sys.stderr)
            return 1
        workdir = tempfile.mkdtemp(prefix="teller-redis-")
        redis = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _redis_answers(host, port):
            if time.monotonic() > deadline or redis.poll() is not None:
                print("teller: redis-server did not start", file=sys.stderr)
                return 1
            time.sleep(0.1)
        print(f"    redis | started redis-server on {host}:{port}", flush=True)
    members = plan(args.config, args.signals, args.nodes, args.port, redis_url, secret, data_dir)
    clean_env = dict(os.environ)
    for member in members:
        member.process = subprocess.Popen(
            member.argv, env={**clean_env, **member.env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        threading.Thread(target=_pump, args=(member.name, member.process.stdout), daemon=True).start()
    print(f"  cluster | signalling at http://127.0.0.1:{args.port}/ .. :{args.port + args.signals - 1}; Ctrl-C stops", flush=True)
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    status = 0
    while not stopping.is_set():
        for member in members:
            if member.process is not None and member.process.poll() is not None:
                print(f"  cluster | {member.name} exited with {member.process.returncode}; stopping", flush=True)
                status = 1
                stopping.set()
        stopping.wait(0.5)
    for member in members:
        if member.process is not None and member.process.poll() is None:
            member.process.terminate()
    deadline = time.monotonic() + config.cluster.drain_timeout_s + 5
    for member in members:
        if member.process is not None:
            try:
                member.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                member.process.kill()
    if redis is not None:
        redis.terminate()
        redis.wait(10)
    return status
