"""coturn on loopback for tests, alone or behind the impairment relay.

Clients told to use only relay candidates send every packet through TURN, so a relay
in front of coturn's listening port impairs all of a client's media, in both
directions: the SFU reaches the client at coturn's relayed address, and coturn
answers the client through the relay's upstream socket.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from teller.impair import Impairment, ImpairRelay

USERNAME = "teller"
CREDENTIAL = "secret"
REALM = "teller.test"
RELAY_PORTS = 40

requires_coturn = pytest.mark.skipif(
    shutil.which("turnserver") is None, reason="coturn is not installed (apt-get install coturn)"
)


def free_udp_range(size: int) -> int:
    """A start port with `size` free UDP ports after it (best effort)."""
    for start in range(42000, 60000, 97):
        socks = []
        try:
            for port in range(start, start + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("0.0.0.0", port))
                socks.append(s)
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP range")


def ice_server(host: str, port: int) -> dict[str, Any]:
    return {"urls": [f"turn:{host}:{port}?transport=udp"], "username": USERNAME, "credential": CREDENTIAL}


def relay_only(servers: list[dict[str, Any]]) -> Any:
    """An aiortc configuration that gathers relay candidates only (like Chromium's
    `iceTransportPolicy: "relay"`)."""
    from aiortc import RTCConfiguration, RTCIceServer
    from aiortc.rtcconfiguration import RTCIceTransportPolicy

    return RTCConfiguration(
        iceServers=[RTCIceServer(urls=s["urls"], username=s["username"], credential=s["credential"]) for s in servers],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )


def force_configuration(clients: Any, configuration: Any) -> None:
    """Makes RoomClients open every peer connection with `configuration`."""
    for client in clients:
        client._rtc_configuration = lambda _c=configuration: _c


@dataclass
class TurnServer:
    host: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    username: str = USERNAME
    credential: str = CREDENTIAL

    @property
    def url(self) -> str:
        return f"turn:{self.host}:{self.port}?transport=udp"

    def ice_servers(self) -> list[dict[str, Any]]:
        return [ice_server(self.host, self.port)]

    def relay_only_configuration(self) -> Any:
        return relay_only(self.ice_servers())

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@asynccontextmanager
async def coturn(tmp_path: Path, timeout: float = 10.0) -> AsyncIterator[TurnServer]:
    """coturn on 127.0.0.1 (UDP only, long-term credentials, loopback peers allowed)."""
    port = free_udp_range(1)
    relay_low = free_udp_range(RELAY_PORTS)
    log_path = tmp_path / "turn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                "turnserver", "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}",
                "--relay-ip=127.0.0.1", f"--min-port={relay_low}", f"--max-port={relay_low + RELAY_PORTS - 1}",
                "--lt-cred-mech", f"--user={USERNAME}:{CREDENTIAL}", f"--realm={REALM}",
                "--no-tls", "--no-dtls", "--no-tcp", "--no-cli", "--allow-loopback-peers",
                f"--pidfile={tmp_path}/turn.pid", "--log-file=stdout", "--simple-log",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = TurnServer("127.0.0.1", port, log_path, process)
    try:
        deadline = time.monotonic() + timeout
        while not any(mark in log_path.read_bytes() for mark in (b"listener opened", b"Total General servers")):
            assert process.poll() is None, f"coturn exited:\n{server.logs()}"
            assert time.monotonic() < deadline, f"coturn did not start within {timeout} s:\n{server.logs()}"
            await asyncio.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class ImpairedTurn:
    turn: TurnServer
    relay: ImpairRelay

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.relay.port}?transport=udp"

    def ice_servers(self) -> list[dict[str, Any]]:
        """TURN servers for clients: coturn's credentials, the relay's port."""
        return [ice_server("127.0.0.1", self.relay.port)]

    def relay_only_configuration(self) -> Any:
        return relay_only(self.ice_servers())


@asynccontextmanager
async def impaired_turn(
    tmp_path: Path, seed: int | str | None = 0, up: Impairment | None = None, down: Impairment | None = None
) -> AsyncIterator[ImpairedTurn]:
    """coturn with an ImpairRelay in front of it; change the impairment with
    `.relay.set(...)` at any time."""
    async with coturn(tmp_path) as turn:
        async with ImpairRelay(("127.0.0.1", 0), (turn.host, turn.port), up=up, down=down, seed=seed) as relay:
            yield ImpairedTurn(turn, relay)
