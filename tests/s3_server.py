"""A real S3 API server for tests: moto's standalone server from this venv, on loopback.

The object-store tests talk HTTP to it through the same minio SDK production uses, so
signing, multipart, ranges and error responses are the real thing, not a fake. moto
keeps everything in memory: an outage is simulated in front of it (tests/tcp_proxy.py),
never by restarting it.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from .loopback import LoopbackProcess


def moto_binary() -> str | None:
    path = Path(sys.executable).parent / "moto_server"
    return str(path) if path.exists() else None


class MotoServer(LoopbackProcess):
    """One moto_server process on 127.0.0.1 (moto imports a lot: it starts in about a second)."""

    name = "moto"
    # Any credentials are accepted; these only have to be well formed for SigV4.
    access_key = "teller-test"
    secret_key = "teller-test-secret"
    region = "us-east-1"

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        found = binary or moto_binary()
        if found is None:
            raise RuntimeError("moto_server is not installed (pip install 'moto[server]')")
        super().__init__(found, port)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def args(self) -> list[str]:
        return [self.binary, "-H", "127.0.0.1", "-p", str(self.port)]

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=0.5):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP status means it is serving
        except OSError:
            return False
