"""A real local cluster for tests: redis-server, signalling processes and SFU nodes.

Every member is its own `python -m teller` process on loopback, so a test can kill
one with SIGKILL, freeze it with SIGSTOP or drain it with SIGTERM, exactly as a
failure or an operator would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teller.signaling.tokens import Grants, TokenIssuer

from .conftest import SECRET
from .redis_server import RedisServer, free_port


@dataclass
class Member:
    name: str
    role: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    node_id: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)


class LocalCluster:
    def __init__(self, tmp_path: Path, signals: int = 2, nodes: int = 2, **sections: dict[str, Any]) -> None:
        self.tmp_path = tmp_path
        self.redis = RedisServer().start()
        self.issuer = TokenIssuer(SECRET)
        config: dict[str, dict[str, Any]] = {
            "auth": {"secret": SECRET, "dev_tokens": True},
            "state": {"backend": "redis", "redis_url": self.redis.url, "op_timeout_s": 0.5},
            "storage": {"data_dir": str(tmp_path / "data")},
            "cluster": {"heartbeat_interval_s": 0.5, "node_ttl_s": 2.0, "reaper_interval_s": 0.25, "drain_timeout_s": 10},
            "log": {"level": "INFO"},
            "stages": {"enabled": []},
            "speech": {"prompt_on_answer": False},
            "digital_human": {"prepare": False},
        }
        for key, values in sections.items():
            config.setdefault(key, {}).update(values)
        self.config_path = tmp_path / "cluster.toml"
        self.config_path.write_text(
            "\n".join(f"[{s}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in vals.items()) for s, vals in config.items()) + "\n"
        )
        self.signals: list[Member] = []
        self.nodes: list[Member] = []
        pending = [self._spawn("signal", i) for i in range(signals)] + [self._spawn("node", i) for i in range(nodes)]
        for i, member in enumerate(pending):
            member = self._started(member, i if i < signals else i - signals)
            (self.signals if member.role == "signal" else self.nodes).append(member)
        self.wait_nodes(nodes)

    # -- processes ----------------------------------------------------------------------

    def _spawn(self, role: str, index: int) -> Member:
        port = free_port()
        name = f"{role}-{index + 1}-{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELLER_")}
        env.update({"TELLER_SERVER__HOST": "127.0.0.1", "TELLER_SERVER__PORT": str(port)})
        if role == "node":
            env["TELLER_CLUSTER__NODE_URL"] = f"http://127.0.0.1:{port}"
        log_path = self.tmp_path / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "teller", role, "--config", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=open(log_path, "wb"),
            env=env,
        )
        return Member(name, role, port, log_path, process)

    def _started(self, member: Member, index: int) -> Member:
        """Started, or started again on another port when another socket took the free one
        between choosing it and binding it."""
        for _ in range(3):
            try:
                self._wait_started(member)
                return member
            except RuntimeError:
                if "address already in use" not in member.log_path.read_text():
                    raise
                member = self._spawn(member.role, index)
        self._wait_started(member)
        return member

    def _wait_started(self, member: Member, timeout: float = 60) -> None:
        assert member.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = member.process.stdout.readline().decode()
            if not line:
                break
            member.lines.append(line)
            if "is running at" in line:
                if member.role == "node":
                    member.node_id = line.split("SFU node ", 1)[1].split()[0]
                # Keep reading so the pipe never fills up.
                threading.Thread(target=self._drain_stdout, args=(member,), daemon=True).start()
                return
        member.process.kill()
        raise RuntimeError(f"{member.name} did not start:\n{member.log_path.read_text()}")

    @staticmethod
    def _drain_stdout(member: Member) -> None:
        assert member.process.stdout is not None
        for line in iter(member.process.stdout.readline, b""):
            member.lines.append(line.decode(errors="replace"))

    def add_node(self) -> Member:
        member = self._spawn("node", len(self.nodes))
        self._wait_started(member)
        self.nodes.append(member)
        return member

    def close(self) -> None:
        for member in self.signals + self.nodes:
            if member.alive:
                member.process.send_signal(signal.SIGCONT)
                member.process.kill()
                member.process.wait(10)
        self.redis.close()

    def logs(self) -> str:
        return "\n".join(f"== {m.name}\n{m.log_path.read_text()[-4000:]}" for m in self.signals + self.nodes)

    # -- tokens and REST ------------------------------------------------------------------

    @property
    def signal_urls(self) -> list[str]:
        return [m.url for m in self.signals]

    def token(self, room: str, name: str, role: str = "customer") -> str:
        return self.issuer.issue(room=room, role=role, name=name, subject=f"{name}-{room}")

    def admin_token(self) -> str:
        return self.issuer.issue(room="*", role="service", grants=Grants(True, True, True, True))

    def rest(self, method: str, path: str, url: str | None = None, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            (url or next(m.url for m in self.signals if m.alive)) + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.admin_token()}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def live_nodes(self, url: str | None = None) -> set[str]:
        status, body = self.rest("GET", "/v1/nodes", url)
        return {n["node_id"] for n in body["nodes"]} if status == 200 else set()

    def wait_nodes(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.live_nodes()) == count:
                return
            time.sleep(0.1)
        raise AssertionError(f"expected {count} live nodes, have {self.live_nodes()}\n{self.logs()}")

    def rooms(self, url: str | None = None) -> dict[str, dict[str, Any]]:
        status, body = self.rest("GET", "/v1/rooms", url)
        assert status == 200, body
        return {r["name"]: r for r in body["rooms"]}

    def participants(self, room: str) -> list[dict[str, Any]]:
        status, body = self.rest("GET", f"/v1/rooms/{room}/participants")
        assert status == 200, body
        return body["participants"]
