"""A real redis-server for tests, which can be stopped, killed, paused and restarted.

Cluster tests need the failures a fake cannot give: refused connections, a server
that hangs (SIGSTOP), and one that comes back on the same port with no data.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from typing import Self

from .loopback import LoopbackProcess, free_port

__all__ = ["RedisServer", "free_port", "redis_binary"]


def redis_binary() -> str | None:
    fallback = "/usr/bin/redis-server"
    return shutil.which("redis-server") or (fallback if os.path.exists(fallback) else None)


class RedisServer(LoopbackProcess):
    """One redis-server process on 127.0.0.1, keeping its port across restarts."""

    name = "redis"
    poll_s = 0.02

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        found = binary or redis_binary()
        if found is None:
            raise RuntimeError("redis-server is not installed")
        super().__init__(found, port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir)]

    def start(self, timeout: float = 10.0) -> Self:
        """Starts (or restarts, on the same port, with no data) and waits for PING."""
        return super().start(timeout)

    def before_terminate(self) -> None:
        self.resume()  # a stopped process cannot handle SIGTERM

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
