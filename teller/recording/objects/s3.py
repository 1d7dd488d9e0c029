"""The object store on S3 (MinIO, Ceph, AWS) through the minio SDK.

Recordings are large and the store is remote, so this backend is built for failure:

- every SDK call runs in a thread and is retried with exponential backoff on connection
  errors, timeouts and 5xx; the HTTP pool itself never retries (an outage fails each
  attempt fast, and the backoff here is the only one);
- a file larger than one part is uploaded in parts, and the multipart state is kept
  beside the local file (``<path>.upload.json``). A later `put_file` of the same path,
  in this process or after a restart, asks the server which parts it holds (ListParts:
  the server, not the sidecar, is the truth) and sends only the others;
- nothing counts as stored until a HEAD confirms size, the SHA-256 metadata and, when
  SSE is configured, that the server encrypted it.

An upload abandoned for good (its sidecar deleted) leaves parts on the server: the
bucket should have a lifecycle rule that aborts incomplete multipart uploads.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import http.client
import io
import json
import logging
import os
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.sse import SseS3

from ...config.loader import ConfigError
from ...config.settings import ObjectStoreSettings
from ...errors import Conflict
from .base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreUnavailable,
    check_key,
    check_prefix,
    check_range,
    sha256_file,
)
from .local import write_atomic

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000
SHA256_META = "x-amz-meta-sha256"
SIDECAR_SUFFIX = ".upload.json"
# Codes that mean "the thing named is not there": a missing object, or an upload that
# was completed or aborted meanwhile.
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchUpload", "NoSuchObject", "NotFound"})
TRANSIENT_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "OperationAborted", "XMinioServerNotInitialized"}
)
TRANSIENT_STATUS = frozenset({408, 429})
# What an SDK call raises about the store or the network. Other OSErrors (a full local
# disk under get_file) are ours, not the store's, and propagate as they are.
SDK_ERRORS = (MinioException, urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError)


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


@dataclass
class UploadState:
    """What survives a crash mid-upload: enough to find the upload again, and to tell
    whether the local file is still the one it was started for."""

    bucket: str
    key: str
    upload_id: str
    part_size: int
    size: int
    mtime_ns: int
    sha256: str
    content_type: str
    # part number (as a string: JSON keys) -> ETag, as acknowledged by the server
    parts: dict[str, str] = field(default_factory=dict)
    version: int = 1

    def save(self, path: Path) -> None:
        write_atomic(path, [json.dumps(asdict(self), sort_keys=True).encode()])

    @classmethod
    def load(cls, path: Path) -> UploadState | None:
        try:
            raw = json.loads(path.read_bytes())
            state = cls(**raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring unreadable upload state %s: %s", path, exc)
            return None
        return state if state.version == 1 else None


def _status(exc: Exception) -> int:
    if isinstance(exc, S3Error):
        return int(exc.response.status)
    if isinstance(exc, ServerError):
        return exc.status_code
    if isinstance(exc, InvalidResponseError):
        return int(getattr(exc, "_code", 0) or 0)
    return 0


def _transient(exc: Exception) -> bool:
    """Worth another attempt: the network or the server failed, not the request."""
    if isinstance(exc, (urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, S3Error) and exc.code in TRANSIENT_CODES:
        return True
    status = _status(exc)
    return status >= 500 or status in TRANSIENT_STATUS


def _pool(settings: ObjectStoreSettings) -> urllib3.PoolManager:
    """No retries in the pool (ours are the only ones), and a timeout per attempt."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=settings.timeout_s, read=settings.timeout_s),
        retries=False,
        maxsize=16,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )


def _read_part(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise Conflict(f"{path} changed during upload (short read at {offset})", code="upload_source_changed")
    return data


class S3ObjectStore(ObjectStore):
    """One bucket on an S3 API, created at first use."""

    name = "s3"

    def __init__(self, settings: ObjectStoreSettings) -> None:
        if settings.sse not in ("s3", "none"):
            raise ConfigError(f"objects.sse: {settings.sse!r} is not 's3' or 'none'")
        if settings.part_size < MIN_PART_SIZE:
            raise ConfigError(f"objects.part_size: S3 parts are at least {MIN_PART_SIZE} bytes")
        if settings.max_attempts < 1:
            raise ConfigError("objects.max_attempts: at least 1")
        self.settings = settings
        self.bucket = settings.bucket
        self._sse = SseS3() if settings.sse == "s3" else None
        self._http = _pool(settings)
        try:
            self._client = Minio(
                settings.endpoint,
                access_key=settings.access_key or None,
                secret_key=settings.secret_key or None,
                secure=settings.secure,
                region=settings.region or None,
                http_client=self._http,
            )
        except ValueError as exc:
            raise ConfigError(f"objects.endpoint: {exc}") from exc
        self._bucket_ready = False
        self._bucket_lock = asyncio.Lock()
        # One upload per local file at a time: two would fight over its sidecar.
        self._path_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def close(self) -> None:
        self._http.clear()

    # -- the interface --------------------------------------------------------------

    async def put_file(
        self, key: str, path: Path, *, sha256: str | None = None, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        check_key(key)
        path = Path(path)
        await self._ensure_bucket()
        lock = self._path_locks.get(str(path))
        if lock is None:
            lock = self._path_locks[str(path)] = asyncio.Lock()
        async with lock:
            st = await asyncio.to_thread(path.stat)
            sidecar = sidecar_path(path)
            state = await asyncio.to_thread(UploadState.load, sidecar)
            if sha256 is None:
                same_file = state is not None and (state.size, state.mtime_ns) == (st.st_size, st.st_mtime_ns)
                sha256 = state.sha256 if state is not None and same_file else await asyncio.to_thread(sha256_file, path)
            sha256 = sha256.lower()
            if st.st_size <= self.settings.part_size:
                if state is not None:  # left from a larger version of this file
                    await self._abort_quietly(state)
                data = await asyncio.to_thread(_read_part, path, 0, st.st_size)
                await self._call(f"put {key}", self._put_sync, key, data, sha256, content_type)
            else:
                await self._multipart(key, path, st, sha256, content_type, state)
            info = await self._confirm(key, st.st_size, sha256)
            await asyncio.to_thread(sidecar.unlink, True)
            return info

    async def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ObjectInfo:
        check_key(key)
        await self._ensure_bucket()
        sha256 = hashlib.sha256(data).hexdigest()
        await self._call(f"put {key}", self._put_sync, key, data, sha256, content_type)
        return await self._confirm(key, len(data), sha256)

    async def get_bytes(self, key: str) -> bytes:
        check_key(key)
        await self._ensure_bucket()
        return await self._call(f"get {key}", self._get_sync, key, 0, 0)

    async def get_file(self, key: str, path: Path) -> None:
        check_key(key)
        await self._ensure_bucket()
        await self._call(f"get {key}", self._download_sync, key, Path(path))

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        check_key(key)
        check_range(offset, length)
        if length == 0:
            return b""
        await self._ensure_bucket()
        return await self._call(f"get {key}", self._get_sync, key, offset, length)

    async def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        await self._ensure_bucket()
        try:
            return await self._call(f"stat {key}", self._stat_sync, key)
        except ObjectNotFound:
            return None

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        check_prefix(prefix)
        await self._ensure_bucket()
        for info in await self._call(f"list {prefix}", self._list_sync, prefix):
            yield info

    async def delete(self, key: str) -> None:
        check_key(key)
        await self._ensure_bucket()
        await self._call(f"delete {key}", self._client.remove_object, self.bucket, key)

    # -- multipart ------------------------------------------------------------------

    async def _multipart(
        self, key: str, path: Path, st: os.stat_result, sha256: str, content_type: str, state: UploadState | None
    ) -> None:
        size = st.st_size
        part_size = max(self.settings.part_size, -(-size // MAX_PARTS))
        count = -(-size // part_size)
        wanted = (self.bucket, key, part_size, size, st.st_mtime_ns, sha256)
        sidecar = sidecar_path(path)
        done: dict[int, str] = {}
        if state is not None:
            if (state.bucket, state.key, state.part_size, state.size, state.mtime_ns, state.sha256) == wanted:
                try:
                    done = await self._server_parts(key, state.upload_id, part_size, size)
                except ObjectNotFound:
                    log.info("upload %s of %s is gone from the store; starting over", state.upload_id, key)
                    state = None
            else:
                log.info("%s changed since its upload began; starting over", path)
                await self._abort_quietly(state)
                state = None
        if state is None:
            headers = {"Content-Type": content_type or "application/octet-stream", SHA256_META: sha256}
            if self._sse is not None:
                headers.update(self._sse.headers())
            upload_id = await self._call(
                f"create upload {key}", self._client._create_multipart_upload, self.bucket, key, headers
            )
            state = UploadState(
                bucket=self.bucket, key=key, upload_id=upload_id, part_size=part_size, size=size,
                mtime_ns=st.st_mtime_ns, sha256=sha256, content_type=content_type,
            )
            await asyncio.to_thread(state.save, sidecar)
        state.parts = {str(n): etag for n, etag in sorted(done.items())}
        for number in range(1, count + 1):
            if number in done:
                continue
            offset = (number - 1) * part_size
            data = await asyncio.to_thread(_read_part, path, offset, min(part_size, size - offset))
            etag = await self._call(
                f"upload part {number}/{count} of {key}",
                self._client._upload_part, self.bucket, key, data, None, state.upload_id, number,
            )
            done[number] = etag
            state.parts[str(number)] = etag
            await asyncio.to_thread(state.save, sidecar)
        parts = [Part(n, done[n]) for n in range(1, count + 1)]
        try:
            await self._call(
                f"complete upload {key}",
                self._client._complete_multipart_upload, self.bucket, key, state.upload_id, parts,
            )
        except ObjectNotFound:
            # The upload is gone: most likely our completion went through and only the
            # answer was lost, which _confirm will tell. If not, the next try starts over.
            await asyncio.to_thread(sidecar.unlink, True)

    async def _server_parts(self, key: str, upload_id: str, part_size: int, size: int) -> dict[int, str]:
        """The parts the server holds, of the size each part must have."""
        parts = await self._call(f"list parts {key}", self._list_parts_sync, key, upload_id)
        done: dict[int, str] = {}
        for part in parts:
            expected = min(part_size, size - (part.part_number - 1) * part_size)
            if part.size is None or part.size == expected:
                done[part.part_number] = part.etag
        return done

    async def _abort_quietly(self, state: UploadState) -> None:
        try:
            await asyncio.to_thread(self._client._abort_multipart_upload, state.bucket, state.key, state.upload_id)
        except SDK_ERRORS as exc:  # best effort: a lifecycle rule cleans up what is left
            log.info("could not abort upload %s of %s: %s", state.upload_id, state.key, exc)

    async def _confirm(self, key: str, size: int, sha256: str) -> ObjectInfo:
        info = await self.stat(key)
        if info is None or info.size != size or info.sha256 != sha256:
            raise ObjectStoreUnavailable(
                f"the store did not confirm {key!r}: expected {size} bytes sha256 {sha256}, got {info}", key=key
            )
        if self._sse is not None and not info.encrypted:
            raise ObjectStoreUnavailable(f"the store did not encrypt {key!r} although SSE was requested", key=key)
        return info

    # -- retries --------------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a thread, retried while the failure is transient. Missing keys
        become ObjectNotFound; anything else, or running out of attempts, becomes
        ObjectStoreUnavailable (503)."""
        s = self.settings
        attempt = 0
        while True:
            attempt += 1
            try:
                return await asyncio.to_thread(fn, *args)
            except S3Error as exc:
                if exc.code in MISSING_CODES:
                    raise ObjectNotFound(f"{what}: {exc.code}", s3_code=exc.code) from exc
                if exc.code == "NoSuchBucket":
                    self._bucket_ready = False
                if not _transient(exc):
                    raise ObjectStoreUnavailable(f"{what}: {exc.code}: {exc.message}", s3_code=exc.code) from exc
                error: Exception = exc
            except SDK_ERRORS as exc:
                if not _transient(exc):
                    raise ObjectStoreUnavailable(f"{what}: {exc}") from exc
                error = exc
            if attempt >= s.max_attempts:
                raise ObjectStoreUnavailable(f"{what}: failed {attempt} times, last: {error}") from error
            delay = min(s.retry_max_s, s.retry_base_s * 2 ** (attempt - 1))
            log.warning("%s failed (attempt %d of %d), retrying in %.2f s: %s", what, attempt, s.max_attempts,
                        delay, error)
            await asyncio.sleep(delay)

    async def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        async with self._bucket_lock:
            if not self._bucket_ready:
                await self._call(f"create bucket {self.bucket}", self._create_bucket_sync)
                self._bucket_ready = True

    # -- blocking SDK calls (run in threads by _call) -------------------------------

    def _create_bucket_sync(self) -> None:
        if self._client.bucket_exists(self.bucket):
            return
        try:
            self._client.make_bucket(self.bucket, location=self.settings.region or None)
        except S3Error as exc:
            if exc.code != "BucketAlreadyOwnedByYou":  # another node won the race
                raise

    def _put_sync(self, key: str, data: bytes, sha256: str, content_type: str) -> None:
        self._client.put_object(
            self.bucket, key, io.BytesIO(data), len(data),
            content_type=content_type or "application/octet-stream",
            metadata={SHA256_META: sha256}, sse=self._sse, num_parallel_uploads=1,
        )

    def _get_sync(self, key: str, offset: int, length: int) -> bytes:
        try:
            response = self._client.get_object(self.bucket, key, offset=offset, length=length)
        except S3Error as exc:
            if exc.code == "InvalidRange":  # at or past the end: nothing there
                return b""
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def _download_sync(self, key: str, path: Path) -> None:
        response = self._client.get_object(self.bucket, key)
        try:
            write_atomic(path, response.stream(1024 * 1024))
        finally:
            response.close()
            response.release_conn()

    def _stat_sync(self, key: str) -> ObjectInfo:
        obj = self._client.stat_object(self.bucket, key)
        headers = obj.metadata or {}
        return ObjectInfo(
            key=key,
            size=int(obj.size or 0),
            sha256=headers.get(SHA256_META),
            modified=obj.last_modified.timestamp() if obj.last_modified else 0.0,
            encrypted=bool(headers.get("x-amz-server-side-encryption")),
        )

    def _list_sync(self, prefix: str) -> builtins.list[ObjectInfo]:
        return [
            ObjectInfo(
                key=str(obj.object_name),
                size=int(obj.size or 0),
                modified=obj.last_modified.timestamp() if obj.last_modified else 0.0,
            )
            for obj in self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
            if not obj.is_dir
        ]

    def _list_parts_sync(self, key: str, upload_id: str) -> builtins.list[Part]:
        parts: builtins.list[Part] = []
        marker: str | None = None
        while True:
            result = self._client._list_parts(self.bucket, key, upload_id, part_number_marker=marker)
            parts.extend(result.parts)
            if not result.is_truncated or not result.next_part_number_marker:
                return parts
            marker = result.next_part_number_marker

