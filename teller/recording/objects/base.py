"""One object-store interface for recordings: a local directory or S3 (MinIO).

Keys are '/'-separated paths such as ``recordings/<session>/manifest.json``. Every
method is a coroutine; blocking SDK calls run in a thread, never on the event loop.
Both backends accept exactly the same keys (`check_key`), so a key that works on a
laptop's local store also works against the bank's S3.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ...errors import BadRequest, NotFound, Unavailable

# S3's own limit on key length, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
HASH_CHUNK = 1024 * 1024


class ObjectStoreUnavailable(Unavailable):
    code = "object_store_unavailable"


class ObjectNotFound(NotFound):
    code = "object_not_found"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    # SHA-256 hex of the content, as recorded at upload (metadata), when known.
    sha256: str | None = None
    modified: float = 0.0
    # True when the store says the object is encrypted at rest.
    encrypted: bool = False


def _bad_key(key: str, why: str) -> BadRequest:
    return BadRequest(f"invalid object key {key!r}: {why}", code="invalid_object_key")


def _check_segments(key: str, segments: list[str]) -> None:
    if key.startswith("/"):
        raise _bad_key(key, "it starts with '/'")
    if "\\" in key:
        raise _bad_key(key, "it contains a backslash")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise _bad_key(key, "it contains a control character")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise _bad_key(key, f"it is longer than {MAX_KEY_BYTES} bytes")
    for segment in segments:
        if not segment:
            raise _bad_key(key, "it has an empty segment")
        if segment.startswith("."):
            # Covers '.' and '..' (no escaping the local root) and keeps dot-names free
            # for the local backend's sidecars and temp files.
            raise _bad_key(key, "a segment starts with '.'")


def check_key(key: str) -> str:
    """The key itself, or BadRequest (invalid_object_key). The local backend maps keys to
    paths, so anything that could step outside its root is refused on every backend."""
    if not key:
        raise _bad_key(key, "it is empty")
    _check_segments(key, key.split("/"))
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: a key, or a key's beginning ('' and a trailing '/' allowed)."""
    if not prefix:
        return prefix
    segments = prefix.split("/")
    last = segments.pop()
    _check_segments(prefix, segments + ([last] if last else []))
    return prefix


def check_range(offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise BadRequest(f"invalid range: offset {offset}, length {length}", code="invalid_range")


def sha256_file(path: Path) -> str:
    """SHA-256 hex of a file, read in chunks (recordings do not fit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ObjectStore(ABC):
    """What recording needs from storage; implementations must be safe to call concurrently."""

    name: str

    @abstractmethod
    async def put_file(self, key: str, path: Path, *, sha256: str | None = None, content_type: str = "application/octet-stream") -> ObjectInfo:
        """Stores a local file (multipart and resumable where the backend can). Returns
        only once the store has confirmed the object (size, and sha256 when given)."""

    @abstractmethod
    async def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo: ...

    @abstractmethod
    async def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    async def get_file(self, key: str, path: Path) -> None:
        """Downloads to `path` (written atomically: a temp file renamed into place)."""

    @abstractmethod
    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset`: HTTP range requests of the replay player."""

    @abstractmethod
    async def stat(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object under `prefix`, recursively, in key order."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Deleting a missing key is not an error."""

    async def close(self) -> None:
        return None
