"""The proofs an auditor runs by hand: `teller audit verify`, `teller recording verify`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from teller.recording.audit import AuditLog
from teller.recording.manifest import build_manifest, session_prefix, sha256_file
from teller.recording.objects import LocalObjectStore

from .conftest import SECRET


def teller(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "teller", *args], capture_output=True, text=True, timeout=60)


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "teller.toml"
    path.write_text(f'[auth]\nsecret = "{SECRET}"\n[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    return path


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


async def test_audit_verify_names_the_first_broken_entry(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    log = AuditLog(tmp_path / "data" / "audit", "cli-test", SECRET)
    for i in range(5):
        await log.append("play", subject=f"auditor-{i}", role="compliance", target="RM_1", ip="10.0.0.1")
    log.close()
    ok = teller("audit", "verify", "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["entries"] == 5

    chain = next((tmp_path / "data" / "audit").glob("*.jsonl"))
    lines = chain.read_bytes().split(b"\n")
    offset = sum(len(line) + 1 for line in lines[:2]) + lines[2].index(b"auditor-2") + len("auditor-")
    flip_byte(chain, offset)  # "auditor-2" becomes "auditor-3" in the third entry
    broken = teller("audit", "verify", "--config", str(config))
    assert broken.returncode == 1
    first = json.loads(broken.stdout)["first_broken"]
    assert first["line"] == 3 and first["seq"] == 3 and first["reason"] == "hash"
    assert "FAILED" in broken.stderr

    missing = teller("audit", "verify", "--dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no audit log" in missing.stderr


async def test_recording_verify_checks_files_against_the_signed_manifest(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    store = LocalObjectStore(tmp_path / "data" / "objects")
    sid = "RM_cli"
    files = []
    for name, data in (("tracks/N/a.webm", b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 40), ("timeline.json", b"{}")):
        source = tmp_path / name.replace("/", "_")
        source.write_bytes(data)
        info = await store.put_file(session_prefix(sid) + name, source, sha256=sha256_file(source))
        files.append({"key": info.key, "name": name, "size": info.size, "sha256": info.sha256, "kind": "track"})
    manifest = build_manifest(sid, files, {"session_id": sid}, SECRET)
    await store.put_bytes(session_prefix(sid) + "manifest.json", json.dumps(manifest).encode())

    ok = teller("recording", "verify", sid, "--config", str(config))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["checked"] == 2

    flip_byte(tmp_path / "data" / "objects" / "recordings" / sid / "tracks" / "N" / "a.webm", 100)
    broken = teller("recording", "verify", sid, "--config", str(config))
    assert broken.returncode == 1
    problems = json.loads(broken.stdout)["problems"]
    assert [(p["key"], p["problem"]) for p in problems] == [(f"recordings/{sid}/tracks/N/a.webm", "sha256")]
