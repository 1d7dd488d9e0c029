"""A helper process for tests on 127.0.0.1 (redis-server, moto's S3 server): started,
awaited until it answers, stopped, killed, its logs kept for the failure message."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (racy, but fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoopbackProcess(ABC):
    """One server process, keeping its port across restarts."""

    name = "server"
    poll_s = 0.05

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"teller-{self.name}-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @abstractmethod
    def args(self) -> list[str]: ...

    @abstractmethod
    def answers(self) -> bool:
        """True once the server serves requests."""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 20.0) -> Self:
        """Starts (or restarts, on the same port) and waits until it answers."""
        if self.running:
            return self
        self._starts += 1
        with open(self.dir / f"{self.name}-{self._starts}.log", "wb") as log:
            self.process = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.logs()}")
            if self.answers():
                return self
            time.sleep(self.poll_s)
        self.kill()
        raise RuntimeError(f"{self.name} did not answer within {timeout} s:\n{self.logs()}")

    def before_terminate(self) -> None:
        """A chance to make the process able to handle SIGTERM (e.g. SIGCONT)."""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit in time."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.before_terminate()
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything cleanly."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def close(self) -> None:
        """Stops the server and removes its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.dir.glob(f"{self.name}-*.log")))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
