"""The `teller` command line: `teller token` and `teller serve`, as real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from teller.errors import Unauthorized
from teller.signaling.tokens import Grants, TokenIssuer

from .conftest import SECRET, start_process, stop_process

CLI_SECRET = "cli-test-secret-0123456789abcdefgh"


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TELLER_")}


def write_config(tmp_path: Path, secret: str | None = CLI_SECRET, extra: str = "") -> Path:
    lines = []
    if secret is not None:
        lines += ["[auth]", f'secret = "{secret}"']
    lines += ["[storage]", f'data_dir = "{tmp_path / "data"}"']
    path = tmp_path / "teller.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def teller(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teller", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env() if env is None else env,
    )


def token_cmd(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return teller("token", "--config", str(config), *args, env=env)


# -- teller token ---------------------------------------------------------------------------------


def test_token_prints_a_verifiable_token(tmp_path: Path) -> None:
    before = int(time.time())
    result = token_cmd(write_config(tmp_path), "--room", "branch-1", "--role", "agent", "--name", "Ann", "--identity", "agent-7", "--ttl", "120")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    claims = TokenIssuer(CLI_SECRET).verify(lines[0])
    assert (claims.room, claims.role, claims.name, claims.subject) == ("branch-1", "agent", "Ann", "agent-7")
    assert claims.grants == Grants.for_role("agent")
    assert before + 120 <= claims.expires_at <= int(time.time()) + 120


def test_token_defaults(tmp_path: Path) -> None:
    result = token_cmd(write_config(tmp_path), "--room", "r1", "--role", "customer")
    assert result.returncode == 0, result.stderr
    claims = TokenIssuer(CLI_SECRET).verify(result.stdout.strip())
    assert claims.subject.startswith("customer-")
    assert claims.name == claims.subject
    assert claims.expires_at - claims.issued_at == 3600  # auth.default_ttl_s


def test_token_is_refused_by_another_secret(tmp_path: Path) -> None:
    result = token_cmd(write_config(tmp_path), "--room", "r1", "--role", "customer")
    with pytest.raises(Unauthorized) as info:
        TokenIssuer(SECRET).verify(result.stdout.strip())
    assert info.value.code == "token_invalid"


def test_token_admin_for_every_room(tmp_path: Path) -> None:
    result = token_cmd(write_config(tmp_path), "--room", "*", "--role", "service", "--grants", "admin")
    assert result.returncode == 0, result.stderr
    claims = TokenIssuer(CLI_SECRET).verify(result.stdout.strip())
    assert claims.room == "*"
    assert claims.grants == Grants(admin=True)
    assert claims.allows_room("anything")


def test_token_explicit_grants(tmp_path: Path) -> None:
    result = token_cmd(write_config(tmp_path), "--room", "r1", "--role", "agent", "--grants", "subscribe, data")
    assert result.returncode == 0, result.stderr
    assert TokenIssuer(CLI_SECRET).verify(result.stdout.strip()).grants == Grants(subscribe=True, data=True)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--room", "r1", "--role", "king"], "role"),
        (["--room", "*", "--role", "agent"], "admin"),
        (["--room", "r1", "--role", "agent", "--grants", "root"], "root"),
        (["--room", "r1", "--role", "agent", "--ttl", "999999"], "ttl"),
        (["--room", "r1", "--role", "agent", "--ttl", "-5"], "ttl"),
        (["--room", "", "--role", "agent"], "room"),
    ],
)
def test_token_refusals_exit_2(tmp_path: Path, args: list[str], words: str) -> None:
    result = token_cmd(write_config(tmp_path), *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("teller: ")
    assert words in result.stderr


def test_token_ttl_zero_is_refused(tmp_path: Path) -> None:
    result = token_cmd(write_config(tmp_path), "--room", "r1", "--role", "agent", "--ttl", "0")
    assert result.returncode == 2
    assert "ttl" in result.stderr


def test_token_needs_room_and_role(tmp_path: Path) -> None:
    result = token_cmd(write_config(tmp_path), "--role", "agent")
    assert result.returncode == 2
    assert "--room" in result.stderr


def test_token_bad_config_exits_2(tmp_path: Path) -> None:
    result = token_cmd(write_config(tmp_path, extra="[server]\nprot = 1\n"), "--room", "r1", "--role", "agent")
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "prot" in result.stderr
    missing = token_cmd(tmp_path / "missing.toml", "--room", "r1", "--role", "agent")
    assert missing.returncode == 2
    assert "missing.toml" in missing.stderr


def test_token_reads_environment_overrides(tmp_path: Path) -> None:
    env = {**clean_env(), "TELLER_AUTH__SECRET": "env-secret-0123456789abcdefghijkl"}
    result = token_cmd(write_config(tmp_path), "--room", "r1", "--role", "agent", env=env)
    assert result.returncode == 0, result.stderr
    TokenIssuer("env-secret-0123456789abcdefghijkl").verify(result.stdout.strip())


def test_token_with_generated_secret_is_stable(tmp_path: Path) -> None:
    """Without a configured secret, the one generated in data_dir signs every token."""
    config = write_config(tmp_path, secret=None)
    first = token_cmd(config, "--room", "r1", "--role", "agent")
    second = token_cmd(config, "--room", "r1", "--role", "agent")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    key = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    issuer = TokenIssuer(key.read_text().strip())
    issuer.verify(first.stdout.strip())
    issuer.verify(second.stdout.strip())


def test_version() -> None:
    from teller import __version__

    result = teller("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == __version__


# -- teller serve ---------------------------------------------------------------------------------


def test_serve_starts_prints_its_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    server = start_process(tmp_path)
    assert server.process is not None
    try:
        assert server.url.startswith("http://127.0.0.1:")
        port = int(server.url.rsplit(":", 1)[1])
        assert port != 0
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read())["status"] == "ok"
        # The secret of the config file signs what the server accepts.
        stats = server.node_stats()
        assert stats["rooms"] == 0

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(10) == 0
    finally:
        if server.process.poll() is None:
            stop_process(server)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server.url}/healthz", timeout=2)


def test_serve_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = \"high\"\n")
    result = teller("serve", "--config", str(path))
    assert result.returncode == 2
    assert "server.port" in result.stderr
