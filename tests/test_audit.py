"""The hash-chained audit log: real files, real edits, the verifier names the first break."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from teller.recording.audit import (
    GENESIS,
    AuditEntry,
    AuditLog,
    AuditUnavailable,
    canonical,
    entry_hash,
    entry_mac,
    read_entries,
    verify_audit,
)

SECRET = "audit-tests-secret"


async def fill(log: AuditLog, count: int, action: str = "view") -> list[AuditEntry]:
    return [
        await log.append(
            action, subject="u-ann", role="compliance", name="Ann", target=f"SE_{i % 3}",
            details={"i": i, "note": "回放 ok"}, ip="10.0.0.7", user_agent="pytest",
        )
        for i in range(count)
    ]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def broken(directory: Path, secret: str = SECRET) -> dict[str, Any] | None:
    report = verify_audit(directory, secret)
    assert report.ok == (report.first_broken is None)
    return report.first_broken


async def test_append_writes_a_sealed_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1", SECRET)
    first = await log.append(
        "download", subject="u-ann", role="compliance", name="Ann", target="SE_1", file="composite.mp4",
        details={"bytes": 10}, ip="10.0.0.7", user_agent="Firefox",
    )
    second = await log.append("legal_hold", subject="u-ann", role="compliance", outcome="denied")
    log.close()
    assert log.path == tmp_path / "audit-n1.jsonl"
    assert (first.seq, first.prev) == (1, GENESIS)
    assert (second.seq, second.prev) == (2, first.hash)
    assert first.hash == entry_hash(GENESIS, first.body())
    assert first.mac == entry_mac(SECRET.encode(), first.hash)
    assert first.iso.startswith("20") and abs(first.ts - second.ts) < 5
    written = [json.loads(line) for line in lines(log.path)]
    assert written[0] == first.to_json() and written[1] == second.to_json()
    assert lines(log.path)[0] == (canonical(first.to_json()) + "\n").encode()
    assert written[0]["file"] == "composite.mp4" and written[0]["ip"] == "10.0.0.7" and written[0]["user_agent"] == "Firefox"
    assert written[1]["outcome"] == "denied" and written[1]["writer"] == "n1"
    report = verify_audit(tmp_path, SECRET)
    assert (report.ok, report.chains, report.entries, report.first_broken) == (True, 1, 2, None)


async def test_a_reopened_log_continues_its_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1", SECRET)
    before = await fill(log, 3)
    log.close()
    log = AuditLog(tmp_path, "n1", SECRET)
    assert log.seq == 3
    after = await fill(log, 2)
    log.close()
    assert [e.seq for e in after] == [4, 5] and after[0].prev == before[-1].hash
    assert [p.name for p in tmp_path.iterdir()] == ["audit-n1.jsonl"]
    report = verify_audit(tmp_path, SECRET)
    assert (report.ok, report.chains, report.entries) == (True, 1, 5)


async def test_every_one_byte_edit_is_named_at_its_line(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1", SECRET)
    entries = await fill(log, 5)
    log.close()
    original = lines(log.path)
    line = original[2]
    seal_at = {key: line.index(f'"{key}":"'.encode()) + len(key) + 4 for key in ("hash", "mac")}
    for position in range(len(line) - 1):  # every byte but the newline
        edited = bytearray(line)
        edited[position] ^= 0x01
        log.path.write_bytes(b"".join(original[:2] + [bytes(edited)] + original[3:]))
        first = broken(tmp_path)
        assert first is not None, f"byte {position} edited unnoticed"
        assert first["file"] == "audit-n1.jsonl" and first["line"] == 3, position
        if seal_at["hash"] <= position < seal_at["hash"] + 64:
            assert first["reason"] == "hash", position
        elif seal_at["mac"] <= position < seal_at["mac"] + 64:
            assert first["reason"] == "mac", position
        else:
            assert first["reason"] in ("hash", "json"), position
        if first["seq"] is not None:
            assert first["seq"] in (entries[2].seq, entries[2].seq ^ 1), position
    log.path.write_bytes(b"".join(original))
    assert broken(tmp_path) is None


async def test_a_semantically_equal_rewrite_of_a_line_is_still_caught(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1", SECRET)
    await fill(log, 2)
    await log.append("view", subject="u", role="compliance", details={"raw": "\x1f"})
    log.close()
    text = log.path.read_text("utf-8")
    assert "\\u001f" in text
    log.path.write_text(text.replace("\\u001f", "\\u001F"), "utf-8")
    assert broken(tmp_path) == {"file": "audit-n1.jsonl", "line": 3, "seq": 3, "reason": "json"}
    data = [json.loads(line) for line in text.splitlines()]
    log.path.write_text("\n".join(json.dumps(d) for d in data) + "\n", "utf-8")  # spaces after ':'
    assert broken(tmp_path) == {"file": "audit-n1.jsonl", "line": 1, "seq": 1, "reason": "json"}


async def test_removed_or_reordered_lines_break_the_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1", SECRET)
    await fill(log, 5)
    log.close()
    original = lines(log.path)
    log.path.write_bytes(b"".join(original[:2] + original[3:]))
    assert broken(tmp_path) == {"file": "audit-n1.jsonl", "line": 3, "seq": 4, "reason": "prev"}
    log.path.write_bytes(b"".join(original[1:]))
    assert broken(tmp_path) == {"file": "audit-n1.jsonl", "line": 1, "seq": 2, "reason": "prev"}
    log.path.write_bytes(b"".join([original[0], original[2], original[1], *original[3:]]))
    assert broken(tmp_path) == {"file": "audit-n1.jsonl", "line": 2, "seq": 3, "reason": "prev"}
    log.path.write_bytes(b"".join(original[:4]) + original[4][:-7])
    assert broken(tmp_path) == {"file": "audit-n1.jsonl", "line": 5, "seq": None, "reason": "json"}


def forge(path: Path, bodies: list[dict[str, Any]], secret: str, *, chain: bool = True) -> None:
    prev = GENESIS
    out = []
    for body in bodies:
        body = {**body, "prev": prev}
        digest = entry_hash(prev, body)
        out.append(canonical({**body, "hash": digest, "mac": entry_mac(secret.encode(), digest)}) + "\n")
        if chain:
            prev = digest
    path.write_text("".join(out), "utf-8")


async def test_a_chain_rewritten_without_the_key_fails_its_mac(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1", SECRET)
    await fill(log, 4)
    log.close()
    bodies = [json.loads(line) for line in log.path.read_text("utf-8").splitlines()]
    for body in bodies:
        del body["hash"], body["mac"]
    bodies[1]["outcome"] = "ok"
    bodies[1]["subject"] = "someone-else"
    forge(log.path, bodies, "a-guessed-secret")
    assert broken(tmp_path) == {"file": "audit-n1.jsonl", "line": 1, "seq": 1, "reason": "mac"}
    forge(log.path, bodies, SECRET)  # only the key holder makes a chain that verifies
    assert broken(tmp_path) is None
    assert verify_audit(tmp_path, "another-secret").first_broken == {
        "file": "audit-n1.jsonl", "line": 1, "seq": 1, "reason": "mac"
    }


async def test_a_skipped_seq_with_intact_hashes_is_named(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1", SECRET)
    await fill(log, 3)
    log.close()
    bodies = [json.loads(line) for line in log.path.read_text("utf-8").splitlines()]
    for body in bodies:
        del body["hash"], body["mac"]
    bodies[2]["seq"] = 4
    forge(log.path, bodies, SECRET)
    assert broken(tmp_path) == {"file": "audit-n1.jsonl", "line": 3, "seq": 4, "reason": "seq"}


async def test_two_writers_keep_two_chains(tmp_path: Path) -> None:
    a, b = AuditLog(tmp_path, "node-a", SECRET), AuditLog(tmp_path, "node-b", SECRET)
    await asyncio.gather(fill(a, 5), fill(b, 7))
    a.close()
    b.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit-node_a.jsonl", "audit-node_b.jsonl"]
    report = verify_audit(tmp_path, SECRET)
    assert (report.ok, report.chains, report.entries) == (True, 2, 12)
    # Both broken: the first file (by name) is the one named.
    for path, at in ((b.path, 1), (a.path, 3)):
        original = lines(path)
        original[at] = original[at].replace(b'"view"', b'"play"')
        path.write_bytes(b"".join(original))
    assert broken(tmp_path) == {"file": "audit-node_a.jsonl", "line": 4, "seq": 4, "reason": "hash"}


async def test_concurrent_appends_keep_one_valid_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1", SECRET)
    entries = await asyncio.gather(*(log.append("search", subject=f"u{i}", role="supervisor", details={"i": i}) for i in range(200)))
    log.close()
    assert sorted(e.seq for e in entries) == list(range(1, 201))
    report = verify_audit(tmp_path, SECRET)
    assert (report.ok, report.chains, report.entries) == (True, 1, 200)


async def test_two_processes_with_one_writer_id_take_turns_on_one_chain(tmp_path: Path) -> None:
    # Two logs on one file: each its own open file, so the flock and the tail re-read matter.
    a, b = AuditLog(tmp_path, "n1", SECRET), AuditLog(tmp_path, "n1", SECRET)
    await asyncio.gather(fill(a, 60), fill(b, 60), *(x.append("view", subject="u", role="r") for x in (a, b) for _ in range(20)))
    a.close()
    b.close()
    report = verify_audit(tmp_path, SECRET)
    assert (report.ok, report.chains, report.entries) == (True, 1, 160)


async def test_a_corrupt_tail_starts_a_new_chain_and_keeps_the_old(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = AuditLog(tmp_path, "n1", SECRET)
    await fill(log, 3)
    log.close()
    damaged = log.path.read_bytes().replace(b'"i":2', b'"i":9')
    log.path.write_bytes(damaged)
    with caplog.at_level(logging.ERROR, logger="teller.recording.audit"):
        log = AuditLog(tmp_path, "n1", SECRET)
    assert log.path == tmp_path / "audit-n1-2.jsonl"
    assert any("audit-n1.jsonl" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    entry = (await fill(log, 1))[0]
    log.close()
    assert (entry.seq, entry.prev) == (1, GENESIS)
    assert (tmp_path / "audit-n1.jsonl").read_bytes() == damaged
    report = verify_audit(tmp_path, SECRET)
    assert (report.chains, report.entries) == (2, 4)
    assert report.first_broken == {"file": "audit-n1.jsonl", "line": 3, "seq": 3, "reason": "hash"}
    # The newest chain is the one continued; a torn last line counts as corrupt too.
    log = AuditLog(tmp_path, "n1", SECRET)
    assert log.path == tmp_path / "audit-n1-2.jsonl" and log.seq == 1
    await fill(log, 1)
    log.close()
    with log.path.open("ab") as f:
        f.write(b'{"seq":3,"prev"')
    log = AuditLog(tmp_path, "n1", SECRET)
    assert log.path == tmp_path / "audit-n1-3.jsonl" and log.seq == 0
    log.close()


async def test_a_chain_removed_while_open_shows_the_gap(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1", SECRET)
    await fill(log, 3)
    log.path.unlink()
    entry = (await fill(log, 1))[0]
    log.close()
    assert entry.seq == 4
    assert broken(tmp_path) == {"file": "audit-n1.jsonl", "line": 1, "seq": 4, "reason": "prev"}


async def test_bad_entries_are_refused_before_writing(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1", SECRET)
    with pytest.raises(ValueError):
        await log.append("view", subject="u", role="r", outcome="maybe")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await log.append("view", subject="u", role="r", details={"x": object()})
    with pytest.raises(ValueError):
        AuditLog(tmp_path, "n2", "")
    log.close()
    assert verify_audit(tmp_path, SECRET).entries == 0


async def test_an_unwritable_log_raises_a_teller_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog(tmp_path, "n1", SECRET)
    await fill(log, 1)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(AuditUnavailable) as caught:
        await log.append("view", subject="u", role="r")
    assert caught.value.status == 503 and caught.value.code == "audit_unavailable"
    monkeypatch.undo()
    # The entry that reached the file but was reported lost still chains on.
    assert (await fill(log, 1))[0].seq == 3
    log.close()
    report = verify_audit(tmp_path, SECRET)
    assert (report.ok, report.entries) == (True, 3)


async def test_read_entries_filters_newest_first(tmp_path: Path) -> None:
    a, b = AuditLog(tmp_path, "a", SECRET), AuditLog(tmp_path, "b", SECRET)
    await a.append("search", subject="u-ann", role="compliance", name="Ann", details={"q": "x"})
    await b.append("play", subject="u-bob", role="supervisor", name="Bob", target="SE_1", file="composite.mp4")
    await a.append("download", subject="u-ann", role="compliance", name="Ann", target="SE_1", outcome="denied")
    await b.append("export", subject="u-bob", role="supervisor", name="Bob", target="SE_2")
    a.close()
    b.close()
    everything = read_entries(tmp_path)
    assert [e.action for e in everything] == ["export", "download", "play", "search"]
    assert [e.action for e in read_entries(tmp_path, target="SE_1")] == ["download", "play"]
    assert [e.action for e in read_entries(tmp_path, actor="Ann")] == ["download", "search"]
    assert [e.action for e in read_entries(tmp_path, actor="u-bob", action="play")] == ["play"]
    assert [e.action for e in read_entries(tmp_path, outcome="denied")] == ["download"]
    assert [e.action for e in read_entries(tmp_path, since=everything[1].ts)] == ["export", "download"]
    assert [e.action for e in read_entries(tmp_path, limit=1)] == ["export"]
    with a.path.open("ab") as f:
        f.write(b"not json\n")
    assert len(read_entries(tmp_path)) == 4
