"""The tamper-evident audit log of access to recordings.

Every search, view, play, download, export, legal-hold change, deletion and refused access
of recordings is one JSON line of an append-only chain. Each entry carries the hash of the
entry before it, so editing, removing or reordering a line breaks the chain from there on,
and an HMAC of its own hash under the server's secret, so that rewriting a whole chain with
fresh hashes is caught as well (by anyone holding the secret).

Each writing process (one signalling node of a cluster) keeps a chain of its own in
``audit-<writer>.jsonl``: chains never interleave, so ordering needs no lock across
processes. An append still takes an flock on the file and re-reads the tail when the file
grew behind its back, so two processes misconfigured with one writer id take turns on one
valid chain instead of forking it.

Limit: losing the last entries of a chain (truncation at a line boundary) leaves a shorter
chain that is still valid; only a copy kept elsewhere, or the entry counts seen earlier, can
show that.
"""

from __future__ import annotations

import asyncio
import datetime
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from ..errors import Unavailable

log = logging.getLogger("teller.recording.audit")

GENESIS = "0" * 64
OUTCOMES = ("ok", "denied", "error")
Outcome = Literal["ok", "denied", "error"]
BrokenReason = Literal["hash", "mac", "prev", "seq", "json"]

_SEALS = ("hash", "mac")
_TAIL_BLOCK = 64 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9_.]")
# The stem never holds "-" (see _stem), so "-<n>" always is the chain number.
_CHAIN_FILE = re.compile(r"^audit-([A-Za-z0-9_.]+)(?:-(\d+))?\.jsonl$")


class AuditUnavailable(Unavailable):
    """The entry could not be made durable: access that must be audited should be refused."""

    code = "audit_unavailable"


def canonical(value: Any) -> str:
    """The one serialisation that is hashed and written: a byte-exact form, so any edit shows."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(prev: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev + canonical(body)).encode("utf-8")).hexdigest()


def entry_mac(secret: bytes, digest: str) -> str:
    return hmac.new(secret, digest.encode("ascii", "replace"), hashlib.sha256).hexdigest()


@dataclass
class AuditEntry:
    """One line of a chain; `hash` and `mac` seal every other field."""

    seq: int
    prev: str
    ts: float
    iso: str
    writer: str
    subject: str
    role: str
    name: str
    action: str
    target: str | None
    file: str | None
    outcome: str
    details: dict[str, Any]
    ip: str | None
    user_agent: str | None
    hash: str = ""
    mac: str = ""

    def body(self) -> dict[str, Any]:
        data = asdict(self)
        for key in _SEALS:
            del data[key]
        return data

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditEntry:
        """Keys a later version may add are ignored; a missing one raises TypeError."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class AuditReport:
    ok: bool
    chains: int
    # Lines in all chain files, including any after a break.
    entries: int
    # {file, line (1-based), seq (None when unreadable), reason}: the first by file, then line.
    first_broken: dict[str, Any] | None = None


def _stem(writer_id: str) -> str:
    stem = _UNSAFE.sub("_", writer_id)
    if not stem:
        raise ValueError("an audit writer id must not be empty")
    return stem


def _check_line(raw: bytes, secret: bytes) -> tuple[dict[str, Any] | None, BrokenReason | None]:
    """The entry of one line (without its newline) and what is wrong with it on its own."""
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
        return None, "json"
    if not isinstance(data, dict):
        return None, "json"
    try:
        exact = canonical(data) == text
    except ValueError:
        exact = False
    if not exact:
        return data, "json"
    body = {k: v for k, v in data.items() if k not in _SEALS}
    prev = body.get("prev")
    digest = entry_hash(prev if isinstance(prev, str) else "", body)
    stored = data.get("hash")
    if not isinstance(stored, str) or not hmac.compare_digest(stored, digest):
        return data, "hash"
    mac = data.get("mac")
    if not isinstance(mac, str) or not hmac.compare_digest(mac, entry_mac(secret, digest)):
        return data, "mac"
    seq = body.get("seq")
    if not isinstance(prev, str) or not isinstance(seq, int) or isinstance(seq, bool):
        return data, "json"
    return data, None


def _last_line(fd: int, size: int) -> bytes | None:
    """The final line without its newline; None when the file does not end in one (a torn write)."""
    if os.pread(fd, 1, size - 1) != b"\n":
        return None
    start = size - 1
    chunk = b""  # the bytes from start up to the final newline
    while start > 0:
        step = min(_TAIL_BLOCK, start)
        start -= step
        chunk = os.pread(fd, step, start) + chunk
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return chunk[cut + 1 :]
    return chunk


def _chain_order(path: Path) -> tuple[str, int, str]:
    match = _CHAIN_FILE.match(path.name)
    if match is None:
        return (path.name, 0, path.name)
    return (match.group(1), int(match.group(2) or 1), path.name)


def _chain_files(directory: Path) -> list[Path]:
    return sorted((p for p in directory.glob("audit-*.jsonl") if p.is_file()), key=_chain_order)


class AuditLog:
    """The chain this process writes. Opening reads only the tail of the current chain file.

    A tail that does not verify is never appended to: a new chain file is started and the
    broken one stays as evidence (an error is logged).
    """

    def __init__(self, directory: Path, writer_id: str, secret: str) -> None:
        if not secret:
            raise ValueError("the audit log needs a secret for its MACs")
        self.directory = Path(directory)
        self.writer_id = writer_id
        self._secret = secret.encode("utf-8")
        self._stem = _stem(writer_id)
        self._lock = asyncio.Lock()
        self._fd: int | None = None
        self._seq = 0
        self._prev = GENESIS
        self._size = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._number = max((n for n, _ in self._chains()), default=1)
        self._open_current()

    @property
    def path(self) -> Path:
        suffix = "" if self._number == 1 else f"-{self._number}"
        return self.directory / f"audit-{self._stem}{suffix}.jsonl"

    @property
    def seq(self) -> int:
        """The seq of the last entry of the current chain (0: none yet)."""
        return self._seq

    def _chains(self) -> Iterator[tuple[int, Path]]:
        for path in self.directory.glob(f"audit-{self._stem}*.jsonl"):
            match = _CHAIN_FILE.match(path.name)
            if match is not None and match.group(1) == self._stem:
                yield int(match.group(2) or 1), path

    def _open_current(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                intact = self._read_tail(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._fd = fd
            if intact:
                return
            self._start_new_chain()

    def _read_tail(self, fd: int) -> bool:
        """Takes seq and prev from the file's last entry; False when that entry does not verify."""
        size = os.fstat(fd).st_size
        if size == 0:
            self._seq, self._prev, self._size = 0, GENESIS, 0
            return True
        line = _last_line(fd, size)
        data, reason = _check_line(line, self._secret) if line is not None else (None, "json")
        if data is None or reason is not None:
            log.error("audit chain %s ends in a broken entry (%s); it is kept as evidence", self.path, reason)
            return False
        self._seq, self._prev, self._size = data["seq"], data["hash"], size
        return True

    def _start_new_chain(self) -> None:
        self._close_fd()
        self._number = max((n for n, _ in self._chains()), default=1) + 1
        self._seq, self._prev, self._size = 0, GENESIS, 0
        log.error("audit: starting a new chain %s for writer %s", self.path, self.writer_id)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _file(self) -> int:
        """The open chain file; reopened (keeping seq and prev) when it was removed or replaced,
        so the new file's first line shows the gap to a verifier instead of hiding it."""
        if self._fd is not None:
            try:
                same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return self._fd
            log.error("audit chain %s was removed or replaced while open", self.path)
            self._close_fd()
            self._size = 0
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        return self._fd

    def _write(self, fields_: dict[str, Any]) -> AuditEntry:
        while True:
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size == self._size or self._read_tail(fd):
                    return self._write_locked(fd, fields_)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._start_new_chain()

    def _write_locked(self, fd: int, fields_: dict[str, Any]) -> AuditEntry:
        entry = AuditEntry(seq=self._seq + 1, prev=self._prev, writer=self.writer_id, **fields_)
        entry.hash = entry_hash(entry.prev, entry.body())
        entry.mac = entry_mac(self._secret, entry.hash)
        data = (canonical(entry.to_json()) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        self._seq, self._prev, self._size = entry.seq, entry.hash, self._size + len(data)
        return entry

    async def append(
        self,
        action: str,
        *,
        subject: str,
        role: str,
        name: str = "",
        target: str | None = None,
        file: str | None = None,
        outcome: Outcome = "ok",
        details: Mapping[str, Any] | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> AuditEntry:
        """Returns once the entry is on disk (fsync); raises AuditUnavailable when it cannot be."""
        if not action:
            raise ValueError("an audit entry needs an action")
        if outcome not in OUTCOMES:
            raise ValueError(f"audit outcome must be one of {OUTCOMES}, not {outcome!r}")
        ts = time.time()
        fields_ = {
            "ts": ts,
            "iso": datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds"),
            "subject": subject,
            "role": role,
            "name": name,
            "action": action,
            "target": target,
            "file": file,
            "outcome": outcome,
            "details": dict(details or {}),
            "ip": ip,
            "user_agent": user_agent,
        }
        canonical(fields_)  # not JSON: the caller's mistake, raised here rather than in the thread
        async with self._lock:
            try:
                return await asyncio.to_thread(self._write, fields_)
            except OSError as exc:
                log.error("audit: cannot write to %s: %s", self.path, exc)
                raise AuditUnavailable("the audit log cannot be written", path=str(self.path)) from exc

    def close(self) -> None:
        self._close_fd()


def _verify_chain(path: Path, secret: bytes) -> tuple[int, dict[str, Any] | None]:
    lines = 0
    broken: dict[str, Any] | None = None
    prev, seq = GENESIS, 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            lines = number
            if broken is not None:
                continue
            data, reason = _check_line(raw[:-1], secret) if raw.endswith(b"\n") else (None, "json")
            if data is not None and reason is None:
                if data["prev"] != prev:
                    reason = "prev"
                elif data["seq"] != seq + 1:
                    reason = "seq"
            if reason is not None:
                written = data.get("seq") if data is not None else None
                broken = {
                    "file": path.name,
                    "line": number,
                    "seq": written if isinstance(written, int) and not isinstance(written, bool) else None,
                    "reason": reason,
                }
                continue
            assert data is not None
            prev, seq = data["hash"], data["seq"]
    return lines, broken


def verify_audit(directory: Path, secret: str) -> AuditReport:
    """Checks every chain in `directory` from its first line (blocking: run it in a thread)."""
    key = secret.encode("utf-8")
    report = AuditReport(ok=True, chains=0, entries=0)
    for path in _chain_files(Path(directory)):
        lines, broken = _verify_chain(path, key)
        report.chains += 1
        report.entries += lines
        if broken is not None and report.first_broken is None:
            report.ok = False
            report.first_broken = broken
    return report


def read_entries(
    directory: Path,
    *,
    action: str | None = None,
    target: str | None = None,
    actor: str | None = None,
    outcome: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries of all chains, newest first, for an audit viewer; `actor` matches the subject or
    the name. Reading does not verify (verify_audit does); unreadable lines are skipped.
    Blocking, and it reads every chain: run it in a thread."""
    found: list[AuditEntry] = []
    for path in _chain_files(Path(directory)):
        skipped = 0
        with path.open("rb") as f:
            for raw in f:
                try:
                    entry = AuditEntry.from_json(json.loads(raw))
                except (ValueError, TypeError):
                    skipped += 1
                    continue
                if action is not None and entry.action != action:
                    continue
                if target is not None and entry.target != target:
                    continue
                if actor is not None and actor not in (entry.subject, entry.name):
                    continue
                if outcome is not None and entry.outcome != outcome:
                    continue
                if since is not None and entry.ts < since:
                    continue
                if until is not None and entry.ts >= until:
                    continue
                found.append(entry)
        if skipped:
            log.warning("audit: skipped %d unreadable line(s) of %s", skipped, path.name)
    found.sort(key=lambda e: (e.ts, e.writer, e.seq), reverse=True)
    return found[: max(0, limit)]
