"""The object store as a local directory: a single server, a laptop, the tests.

Every write lands in a temp file in the destination directory, is fsynced and renamed
into place, so a reader (or a crash) sees the old object or the new one, never half.
The SHA-256 given at upload is kept in a sidecar under ``<root>/.meta/<key>.json``,
together with the size and mtime of the file it describes: a sidecar that no longer
matches its file (a crash between the two renames, an edit on disk) is ignored.

Nothing is encrypted here (`encrypted` is always False): encryption at rest of a local
directory is the disk's job (LUKS, an encrypted volume), not this store's.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

from ...errors import Conflict, Unprocessable
from .base import (
    HASH_CHUNK,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    check_key,
    check_prefix,
    check_range,
)

META_DIR = ".meta"


def fsync_dir(path: Path) -> None:
    """Makes a rename in `path` durable (the directory entry, not just the data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(dest: Path, chunks: Iterable[bytes]) -> tuple[str, int]:
    """Writes `chunks` to a temp file beside `dest`, fsyncs, renames into place.
    Returns (sha256 hex, size) of what was written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)
    return digest.hexdigest(), size


def read_chunks(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            yield chunk


class LocalObjectStore(ObjectStore):
    """Objects as files under `root`; keys map one-to-one to relative paths."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._meta_root = self.root / META_DIR

    async def put_file(
        self, key: str, path: Path, *, sha256: str | None = None, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Copies `path` in; when `sha256` is given it is checked against the bytes copied."""
        check_key(key)
        return await asyncio.to_thread(self._put, key, lambda: read_chunks(Path(path)), sha256)

    async def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        check_key(key)
        return await asyncio.to_thread(self._put, key, lambda: [data], None)

    async def get_bytes(self, key: str) -> bytes:
        return await asyncio.to_thread(self._read, key, 0, None)

    async def get_file(self, key: str, path: Path) -> None:
        source = self._path(key)

        def copy() -> None:
            try:
                chunks = read_chunks(source)
                write_atomic(Path(path), chunks)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
                raise ObjectNotFound(f"no object {key!r}", key=key) from exc

        await asyncio.to_thread(copy)

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        check_range(offset, length)
        return await asyncio.to_thread(self._read, key, offset, length)

    async def stat(self, key: str) -> ObjectInfo | None:
        return await asyncio.to_thread(self._stat, self._path(key), key)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        check_prefix(prefix)
        for info in await asyncio.to_thread(self._list, prefix):
            yield info

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(self._delete, path, self._meta_path(key))

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _meta_path(self, key: str) -> Path:
        return self._meta_root / f"{key}.json"

    def _put(self, key: str, chunks: Callable[[], Iterable[bytes]], expected: str | None) -> ObjectInfo:
        dest = self._path(key)
        try:
            digest, size = write_atomic(dest, chunks())
        except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
            # S3 can hold both 'a' and 'a/b'; a directory tree cannot.
            raise Conflict(f"object key {key!r} clashes with another key's path", code="object_key_conflict") from exc
        if expected is not None and expected.lower() != digest:
            # The bytes are not what the caller hashed: do not keep them under its name.
            self._delete(dest, self._meta_path(key))
            raise Unprocessable(
                f"{key!r}: the file's sha256 is {digest}, not {expected}", code="object_sha256_mismatch"
            )
        st = dest.stat()
        meta = {"sha256": digest, "size": size, "mtime_ns": st.st_mtime_ns}
        write_atomic(self._meta_path(key), [json.dumps(meta).encode()])
        return ObjectInfo(key=key, size=size, sha256=digest, modified=st.st_mtime)

    def _read(self, key: str, offset: int, length: int | None) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                f.seek(offset)
                return f.read() if length is None else f.read(length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"no object {key!r}", key=key) from exc

    def _stat(self, path: Path, key: str) -> ObjectInfo | None:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        sha256: str | None = None
        try:
            meta = json.loads(self._meta_path(key).read_bytes())
            if meta.get("size") == st.st_size and meta.get("mtime_ns") == st.st_mtime_ns:
                sha256 = meta.get("sha256")
        except (OSError, ValueError):
            pass
        return ObjectInfo(key=key, size=st.st_size, sha256=sha256, modified=st.st_mtime)

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        base = prefix.rpartition("/")[0]
        start = self.root / base if base else self.root
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(start):
            # Dot-names are never keys: .meta sidecars, temp files of writes in flight.
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # deleted while we walked
                found.append(ObjectInfo(key=key, size=st.st_size, modified=st.st_mtime))
        found.sort(key=lambda info: info.key.encode())
        return found

    def _delete(self, path: Path, meta: Path) -> None:
        path.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        self._prune(path.parent, self.root)
        self._prune(meta.parent, self._meta_root)

    @staticmethod
    def _prune(directory: Path, stop: Path) -> None:
        """Removes directories left empty, up to (not including) `stop`."""
        while directory != stop and stop in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent
