"""Resumable, checksummed uploads of what a field device recorded while its link was down.

A rural mobile link that dropped once drops again, so a segment is not sent in one
request: the device declares it (meta, size, SHA-256), then appends chunks at an offset
it names. A chunk that fails is sent again from the offset the server reports; the
server keeps what it has for `field.upload_keep_s`. Only when every byte is there and
the digest matches does the segment join the session's recording (through the same
path as a whole-segment upload); a mismatch discards it and says so.

Uploads live in files beside the spool (bytes and a small JSON state), so a restart
resumes them. In a cluster the device resumes through the same signalling process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from ..config import FieldSettings
from ..errors import BadRequest, Conflict, NotFound, PayloadTooLarge, Unprocessable
from .segments import write_json_atomic

log = logging.getLogger("teller.recording")

UPLOAD_ID = re.compile(r"^UP_[0-9a-f]{16}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Upload:
    upload_id: str
    session_id: str
    room: str
    device: str
    meta: dict[str, Any]
    size: int
    sha256: str
    offset: int = 0
    created_at: float = field(default_factory=time.time)
    complete: bool = False
    result: dict[str, Any] | None = None

    def public(self) -> dict[str, Any]:
        return {"upload_id": self.upload_id, "session_id": self.session_id, "offset": self.offset,
                "size": self.size, "complete": self.complete, **({"result": self.result} if self.result else {})}


class UploadStore:
    def __init__(self, directory: Path, settings: FieldSettings) -> None:
        self.directory = directory
        self.settings = settings
        self._locks: dict[str, asyncio.Lock] = {}
        # Uploads whose bytes are being verified and added (their data file may be moved already).
        self._completing: set[str] = set()
        self.completed = 0
        self.checksum_failures = 0

    def _paths(self, upload_id: str) -> tuple[Path, Path]:
        return self.directory / f"{upload_id}.upload.json", self.directory / f"{upload_id}.bin"

    def create(self, session_id: str, room: str, device: str, meta: dict[str, Any], size: Any, sha256: Any) -> Upload:
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= self.settings.max_upload_bytes:
            raise BadRequest(f"size is the segment's byte count, 1-{self.settings.max_upload_bytes}",
                             code="invalid_message", field="size")
        if not isinstance(sha256, str) or not SHA256.match(sha256.lower()):
            raise BadRequest("sha256 is the segment's SHA-256, 64 hex digits", code="invalid_message", field="sha256")
        self.directory.mkdir(parents=True, exist_ok=True)
        upload = Upload(f"UP_{secrets.token_hex(8)}", session_id, room, device, meta, size, sha256.lower())
        self._paths(upload.upload_id)[1].touch()
        self._save(upload)
        return upload

    def get(self, session_id: str, upload_id: str) -> Upload:
        if not UPLOAD_ID.match(upload_id):
            raise NotFound("no such upload", code="upload_not_found")
        state, data = self._paths(upload_id)
        try:
            raw = json.loads(state.read_text("utf-8"))
        except (OSError, ValueError):
            raise NotFound("no such upload (finished long ago, expired or never made)", code="upload_not_found") from None
        upload = Upload(**raw)
        if upload.session_id != session_id:
            raise NotFound("no such upload", code="upload_not_found")
        if upload_id in self._completing:
            upload.offset = upload.size
        elif not upload.complete:
            upload.offset = data.stat().st_size if data.exists() else 0
        return upload

    async def append(self, upload: Upload, offset: int, body: web.StreamReader) -> Upload:
        """Appends at `offset`, which must be where the server's copy ends."""
        lock = self._locks.setdefault(upload.upload_id, asyncio.Lock())
        async with lock:
            upload = self.get(upload.session_id, upload.upload_id)
            if upload.complete:
                raise Conflict("the upload is complete", code="upload_complete", offset=upload.offset)
            if offset != upload.offset:
                raise Conflict(f"the server has {upload.offset} bytes; continue from there",
                               code="offset_mismatch", offset=upload.offset)
            data = self._paths(upload.upload_id)[1]
            written = 0
            with open(data, "ab") as out:
                try:
                    while True:
                        chunk = await body.readany()
                        if not chunk:
                            break
                        written += len(chunk)
                        if written > self.settings.chunk_max_bytes or offset + written > upload.size:
                            raise PayloadTooLarge(
                                f"a chunk is at most {self.settings.chunk_max_bytes} bytes and may not pass the declared size",
                                code="message_too_large")
                        await asyncio.to_thread(out.write, chunk)
                except BaseException:
                    # A chunk is all or nothing, so a retry from the reported offset is exact.
                    out.truncate(offset)
                    raise
            upload.offset = offset + written
            return upload

    async def complete(self, upload: Upload, ingest: Callable[[Path, dict[str, Any]], Awaitable[dict[str, Any]]]) -> Upload:
        """Verifies the finished bytes and hands them to `ingest`, once. A repeated last
        chunk (its answer was lost) gets the stored result, or `upload_completing` while
        the first is still being added, never a second segment."""
        if upload.upload_id in self._completing:
            raise Conflict("the upload is being added to the recording; ask for its status",
                           code="upload_completing", offset=upload.size)
        upload = self.get(upload.session_id, upload.upload_id)
        if upload.complete:
            return upload
        if upload.offset < upload.size:
            raise Conflict(f"the server has {upload.offset} bytes; continue from there",
                           code="offset_mismatch", offset=upload.offset)
        self._completing.add(upload.upload_id)
        try:
            data = await self.verify(upload)
            try:
                result = await ingest(data, {**upload.meta, "sha256": upload.sha256})
            except BadRequest:
                self.discard(upload.upload_id)
                raise
            self.finish(upload, result)
            return upload
        finally:
            self._completing.discard(upload.upload_id)

    async def verify(self, upload: Upload) -> Path:
        """The finished bytes, checked against the declared digest; a mismatch discards them."""
        data = self._paths(upload.upload_id)[1]
        digest = await asyncio.to_thread(_sha256, data)
        if digest != upload.sha256:
            self.checksum_failures += 1
            self.discard(upload.upload_id)
            raise Unprocessable("the bytes received do not match sha256; the upload was discarded, start again",
                                code="checksum_mismatch", received=digest)
        return data

    def finish(self, upload: Upload, result: dict[str, Any]) -> None:
        upload.complete, upload.result, upload.offset = True, result, upload.size
        self._save(upload)
        self._paths(upload.upload_id)[1].unlink(missing_ok=True)
        self.completed += 1

    def discard(self, upload_id: str) -> None:
        for path in self._paths(upload_id):
            path.unlink(missing_ok=True)
        self._locks.pop(upload_id, None)

    def sweep(self, now: float | None = None) -> int:
        """Forgets uploads older than upload_keep_s, finished or not."""
        now = time.time() if now is None else now
        removed = 0
        for state in self.directory.glob("UP_*.upload.json"):
            try:
                created = float(json.loads(state.read_text("utf-8"))["created_at"])
            except (OSError, ValueError, KeyError, TypeError):
                created = state.stat().st_mtime
            if now - created > self.settings.upload_keep_s:
                self.discard(state.name.split(".", 1)[0])
                removed += 1
        return removed

    def _save(self, upload: Upload) -> None:
        write_json_atomic(self._paths(upload.upload_id)[0], asdict(upload))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
