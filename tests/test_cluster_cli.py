"""The documented ways to run a cluster: `teller cluster up` and `teller node --drain`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from teller.client import RoomClient
from teller.signaling.tokens import Grants, TokenIssuer

from .cluster import LocalCluster
from .redis_server import free_port, redis_binary

pytestmark = [
    pytest.mark.skipif(redis_binary() is None, reason="redis-server is not installed"),
    pytest.mark.timeout(180),
]
ROOT = Path(__file__).resolve().parent.parent


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_cluster_up_runs_the_example_config_on_loopback(tmp_path: Path) -> None:
    port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELLER_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "teller", "cluster", "up", "--config", str(ROOT / "teller/config/cluster.example.toml"),
         "--signals", "1", "--nodes", "1", "--port", str(port),
         "--redis-url", f"redis://127.0.0.1:{redis_port}/0", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(l.decode()) for l in iter(process.stdout.readline, b"")], daemon=True).start()  # type: ignore[union-attr]
    try:
        base = f"http://127.0.0.1:{port}"
        secret = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            secret_file = tmp_path / "data" / "secret.key"
            if secret_file.exists():
                secret = secret_file.read_text().strip()
                issuer = TokenIssuer(secret)
                admin = issuer.issue(room="*", role="service", grants=Grants(True, True, True, True))
                try:
                    status, body = _get(f"{base}/v1/nodes", admin)
                except OSError:
                    status, body = 0, {}
                if status == 200 and len(body["nodes"]) == 1:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("".join(lines))
        assert any("started redis-server" in line for line in lines)
        client = RoomClient(base, issuer.issue(room="up-room", role="customer"))
        joined = await client.connect()
        assert joined["room"]["name"] == "up-room"
        await client.close()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0, "".join(lines)
    assert any("node-1" in line and "drained" in line for line in lines), "".join(lines)


async def test_drain_command_moves_a_nodes_rooms(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, signals=1, nodes=2)
    try:
        client = RoomClient(cluster.signal_urls, cluster.token("drain-cli", "one"))
        await client.connect()
        before = cluster.rooms()["drain-cli"]["node_id"]
        victim = next(n for n in cluster.nodes if n.node_id == before)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELLER_")}
        result = subprocess.run(
            [sys.executable, "-m", "teller", "node", "--config", str(cluster.config_path), "--drain", before],
            capture_output=True, text=True, timeout=60, env=env,
        )
        assert result.returncode == 0, result.stderr
        assert "drained" in result.stdout
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (client.migrations < 1 or cluster.rooms().get("drain-cli", {}).get("node_id") in (None, before)):
            await __import__("asyncio").sleep(0.1)
        assert client.migrations == 1 and not client.closed.is_set()
        assert cluster.rooms()["drain-cli"]["node_id"] not in (None, before)
        assert victim.process.wait(20) == 0
        unknown = subprocess.run(
            [sys.executable, "-m", "teller", "node", "--config", str(cluster.config_path), "--drain", "ND_nope"],
            capture_output=True, text=True, timeout=60, env=env,
        )
        assert unknown.returncode == 1 and "no live node" in unknown.stderr
        await client.close()
    finally:
        cluster.close()
