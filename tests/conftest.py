"""Servers for tests: in-process (to look inside) or a real `teller serve` subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from teller.config import Config, load_config
from teller.sfu import Node
from teller.signaling import create_app
from teller.signaling.keys import NODE
from teller.signaling.tokens import Grants, TokenIssuer

# The state store on both backends (`backend`, `store`, `peer`, `redis_server`).
pytest_plugins = ["tests.state_backends"]

SECRET = "tests-only-secret-0123456789abcdef"


@dataclass
class Server:
    url: str
    issuer: TokenIssuer
    config: Config
    app: web.Application | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def node(self) -> Node:
        assert self.app is not None, "only an in-process server exposes its node"
        return self.app[NODE]

    def token(self, room: str = "r1", role: str = "customer", name: str | None = None, **kwargs: Any) -> str:
        return self.issuer.issue(room=room, role=role, name=name, **kwargs)

    def admin_token(self, room: str = "*") -> str:
        return self.issuer.issue(room=room, role="service", grants=Grants(True, True, True, True))

    def node_stats(self) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/v1/node", headers={"Authorization": f"Bearer {self.admin_token()}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""


def test_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    overrides: dict[str, Any] = {
        "storage": {"data_dir": str(tmp_path / "data")},
        "auth": {"secret": SECRET},
        "server": {"host": "127.0.0.1", "port": 0},
        "log": {"level": "WARNING"},
        # Tests that are about recording or speech turn them on; the rest stay light.
        "recording": {"enabled": False},
        "stages": {"enabled": []},
        "speech": {"prompt_on_answer": False},
        "digital_human": {"prepare": False},
    }
    for key, value in sections.items():
        overrides.setdefault(key, {}).update(value)
    return load_config(overrides=overrides, env={})


test_config.__test__ = False  # type: ignore[attr-defined]


async def start_in_process(tmp_path: Path, **sections: dict[str, Any]) -> tuple[Server, web.AppRunner]:
    config = test_config(tmp_path, **sections)
    app = create_app(config, issuer=TokenIssuer(SECRET))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return Server(f"http://127.0.0.1:{port}", TokenIssuer(SECRET), config, app=app), runner


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A server in the test's own process and event loop."""
    srv, runner = await start_in_process(tmp_path)
    try:
        yield srv
    finally:
        await runner.cleanup()


def _toml_value(value: Any) -> str:
    return json.dumps(value)


def start_process(tmp_path: Path, **sections: dict[str, Any]) -> Server:
    """`python -m teller serve` with a config file written for the test."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_sections: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "auth": {"secret": SECRET},
        "storage": {"data_dir": str(tmp_path / "data")},
        "log": {"level": "INFO"},
        "recording": {"enabled": False},
        "stages": {"enabled": []},
        "speech": {"prompt_on_answer": False},
        "digital_human": {"prepare": False},
    }
    for key, value in sections.items():
        config_sections.setdefault(key, {}).update(value)
    lines = []
    for section, values in config_sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    path = tmp_path / "teller.toml"
    path.write_text("\n".join(lines) + "\n")
    log_path = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELLER_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "teller", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=open(log_path, "wb"),
        env=env,
    )
    deadline = time.monotonic() + 30
    assert process.stdout is not None
    url = None
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode()
        if not line:
            break
        if "is running at" in line:
            url = line.split("is running at", 1)[1].strip().rstrip("/")
            break
    if url is None:
        process.kill()
        raise RuntimeError(f"teller serve did not start:\n{log_path.read_text()}")
    return Server(url, TokenIssuer(SECRET), load_config(path, env={}), process=process, log_path=log_path)


def stop_process(server: Server) -> None:
    assert server.process is not None
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="module")
def server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real `teller serve` process shared by a test module."""
    srv = start_process(tmp_path_factory.mktemp("serve"))
    try:
        yield srv
    finally:
        stop_process(srv)


@pytest.fixture
def room_name(request: pytest.FixtureRequest) -> str:
    """A room name unique to the test, so tests sharing a server never meet."""
    return "t-" + request.node.name.replace("[", "-").replace("]", "")[:50].replace("_", "-")


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    """A real local cluster: redis-server, two signalling processes, two SFU nodes."""
    from .cluster import LocalCluster

    c = LocalCluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def clients() -> AsyncIterator[list[Any]]:
    """RoomClients a test opens; all closed at the end."""
    opened: list[Any] = []
    yield opened
    for client in opened:
        await client.close()


@pytest.fixture(scope="module")
def voice() -> Any:
    """Piper, for the customer's side: speech as a real microphone would send it."""
    import numpy as np

    from teller.speech.tts import TtsEngine

    engine = TtsEngine(load_config(env={}).speech)
    cache: dict[str, Any] = {}

    async def speech(text: str) -> np.ndarray:
        if text not in cache:
            cache[text] = np.concatenate([p async for p in engine.stream(text, "en")])
        return cache[text]

    yield speech
    engine.close()


@pytest.fixture
async def bot_server(tmp_path: Path) -> AsyncIterator[Server]:
    """A server whose digital human hears English (the ASR stage on, its model loaded)."""
    srv, runner = await start_in_process(
        tmp_path, stages={"enabled": ["asr"]}, speech={"asr_language": "en"},
        digital_human={"greet_delay_s": 0.5},
    )
    try:
        from teller.speech.service import HUB

        hub = srv.app[HUB]
        await wait_until(lambda: hub.ready, timeout=60)
        yield srv
    finally:
        await runner.cleanup()
