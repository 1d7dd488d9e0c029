"""The object store contract on both backends, and what only S3 has to survive.

S3 is moto's real HTTP server on loopback, reached through a TCP proxy that can cut
the line: outages happen in the network, as they would in production, while moto keeps
its state. No fakes of the SDK: the minio client sends real requests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from teller.config import Config, ConfigError
from teller.config.settings import ObjectStoreSettings
from teller.errors import BadRequest, Unprocessable
from teller.recording.manifest import (
    MANIFEST_NAME,
    build_manifest,
    manifest_key,
    session_prefix,
    sha256_file,
    verify_recording,
)
from teller.recording.objects import (
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreUnavailable,
    S3ObjectStore,
    open_object_store,
)
from teller.recording.objects.s3 import UploadState, sidecar_path

from .s3_server import MotoServer, moto_binary
from .tcp_proxy import TcpProxy

MiB = 1024 * 1024
SECRET = "manifest-secret-for-tests"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    if moto_binary() is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="module")
def proxy_server(moto: MotoServer) -> Iterator[TcpProxy]:
    with TcpProxy(("127.0.0.1", moto.port)) as proxy:
        yield proxy


@pytest.fixture
def proxy(proxy_server: TcpProxy) -> Iterator[TcpProxy]:
    yield proxy_server
    proxy_server.restore()  # a failed test must not leave the next one in an outage


def s3_settings(proxy: TcpProxy, **overrides: Any) -> ObjectStoreSettings:
    """Fast-failing settings, and a bucket of its own so tests never see each other."""
    values: dict[str, Any] = {
        "backend": "s3", "endpoint": proxy.endpoint, "access_key": MotoServer.access_key,
        "secret_key": MotoServer.secret_key, "bucket": f"teller-{uuid.uuid4().hex[:12]}",
        "region": MotoServer.region, "secure": False, "sse": "s3", "part_size": 5 * MiB,
        "max_attempts": 3, "retry_base_s": 0.05, "retry_max_s": 0.2, "timeout_s": 5.0,
    }
    values.update(overrides)
    return ObjectStoreSettings(**values)


@pytest.fixture
async def s3(proxy: TcpProxy) -> AsyncIterator[S3ObjectStore]:
    store = S3ObjectStore(s3_settings(proxy))
    yield store
    await store.close()


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "objects")
        return
    s3_store = S3ObjectStore(s3_settings(request.getfixturevalue("proxy")))
    yield s3_store
    await s3_store.close()


def raw_client(store: S3ObjectStore) -> Minio:
    s = store.settings
    return Minio(s.endpoint, access_key=s.access_key, secret_key=s.secret_key, secure=False, region=s.region)


async def overwrite_behind_its_back(store: ObjectStore, key: str, data: bytes) -> None:
    """Tampering as an attacker with write access would: not through our API. On S3
    the sha256 metadata is kept as it was, so only re-reading the content can tell."""
    if isinstance(store, LocalObjectStore):
        (store.root / key).write_bytes(data)
        return
    assert isinstance(store, S3ObjectStore)
    old = await store.stat(key)
    assert old is not None and old.sha256 is not None
    raw_client(store).put_object(
        store.bucket, key, io.BytesIO(data), len(data), metadata={"x-amz-meta-sha256": old.sha256}
    )


def write_random(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def record_parts(
    monkeypatch: pytest.MonkeyPatch, store: S3ObjectStore, *, cut: TcpProxy | None = None, after: int = 0
) -> list[int]:
    """The part numbers the store sends; with `cut`, the line goes down right after the
    server acknowledged part `after`."""
    sent: list[int] = []
    upload_part = store._client._upload_part

    def recording(bucket: str, key: str, data: bytes, headers: Any, upload_id: str, number: int) -> str:
        etag = upload_part(bucket, key, data, headers, upload_id, number)
        sent.append(number)
        if cut is not None and number == after:
            cut.cut()
        return etag

    monkeypatch.setattr(store._client, "_upload_part", recording)
    return sent


# -- the contract, on both backends ---------------------------------------------------


async def test_bytes_round_trip(store: ObjectStore) -> None:
    data = b"segment-bytes" * 1000
    info = await store.put_bytes("recordings/s1/a.webm", data, content_type="video/webm")
    assert info.key == "recordings/s1/a.webm"
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert await store.get_bytes("recordings/s1/a.webm") == data
    stat = await store.stat("recordings/s1/a.webm")
    assert stat is not None and stat.size == len(data) and stat.sha256 == info.sha256
    assert stat.modified > 0
    await store.delete("recordings/s1/a.webm")
    assert await store.stat("recordings/s1/a.webm") is None
    await store.delete("recordings/s1/a.webm")  # deleting twice is fine


async def test_file_round_trip_keeps_the_given_sha256(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "segment.webm"
    digest = write_random(source, 300_000)
    info = await store.put_file("recordings/s1/seg-0001.webm", source, sha256=digest)
    assert (info.size, info.sha256) == (300_000, digest)
    stat = await store.stat("recordings/s1/seg-0001.webm")
    assert stat is not None and stat.sha256 == digest
    target = tmp_path / "download" / "copy.webm"
    await store.get_file("recordings/s1/seg-0001.webm", target)
    assert target.read_bytes() == source.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["copy.webm"]  # no temp left behind


async def test_read_range(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40
    await store.put_bytes("recordings/s1/r", data)
    assert await store.read_range("recordings/s1/r", 0, 10) == data[:10]
    assert await store.read_range("recordings/s1/r", 1000, 300) == data[1000:1300]
    assert await store.read_range("recordings/s1/r", len(data) - 5, 100) == data[-5:]
    assert await store.read_range("recordings/s1/r", len(data), 10) == b""
    assert await store.read_range("recordings/s1/r", 3, 0) == b""
    with pytest.raises(BadRequest):
        await store.read_range("recordings/s1/r", -1, 10)


async def test_list_is_recursive_in_key_order_and_by_prefix(store: ObjectStore) -> None:
    keys = ["recordings/s1/b/c.webm", "recordings/s1/a.webm", "recordings/s10/x", "other/y"]
    for key in keys:
        await store.put_bytes(key, key.encode())

    async def listed(prefix: str) -> list[str]:
        return [info.key async for info in store.list(prefix)]

    assert await listed("recordings/s1/") == ["recordings/s1/a.webm", "recordings/s1/b/c.webm"]
    assert await listed("recordings/s1") == ["recordings/s1/a.webm", "recordings/s1/b/c.webm", "recordings/s10/x"]
    assert await listed("") == sorted(keys)
    assert await listed("nothing/") == []
    sizes = {info.key: info.size async for info in store.list("recordings/")}
    assert sizes["recordings/s10/x"] == len(b"recordings/s10/x")


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "a/../b", "..", "a\\b", "a/", "a/./b", ".meta/x", "a/\x00b", "x" * 1025]
)
async def test_invalid_keys_are_refused(store: ObjectStore, key: str) -> None:
    calls = [
        lambda: store.put_bytes(key, b"x"), lambda: store.get_bytes(key), lambda: store.stat(key),
        lambda: store.delete(key), lambda: store.read_range(key, 0, 1),
    ]
    for call in calls:
        with pytest.raises(BadRequest) as caught:
            await call()
        assert caught.value.code == "invalid_object_key"


async def test_invalid_prefixes_are_refused(store: ObjectStore) -> None:
    for prefix in ("/abs", "a//", "../", "a\\b"):
        with pytest.raises(BadRequest):
            _ = [info async for info in store.list(prefix)]


async def test_missing_objects(store: ObjectStore, tmp_path: Path) -> None:
    assert await store.stat("recordings/none") is None
    with pytest.raises(ObjectNotFound) as caught:
        await store.get_bytes("recordings/none")
    assert caught.value.status == 404 and caught.value.code == "object_not_found"
    with pytest.raises(ObjectNotFound):
        await store.read_range("recordings/none", 0, 10)
    with pytest.raises(ObjectNotFound):
        await store.get_file("recordings/none", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError):
        await store.put_file("recordings/none", tmp_path / "no-such-file")
    assert await store.stat("recordings/none") is None


async def test_encryption_is_reported_as_the_store_says(store: ObjectStore, tmp_path: Path) -> None:
    info = await store.put_bytes("recordings/s1/enc", b"secret")
    stat = await store.stat("recordings/s1/enc")
    assert stat is not None
    # SSE-S3 on S3; a local directory relies on the disk's encryption.
    assert info.encrypted is stat.encrypted is (store.name == "s3")


async def test_multipart_file_of_four_parts(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "big.webm"
    digest = write_random(source, 16 * MiB)
    sent = record_parts(monkeypatch, store) if isinstance(store, S3ObjectStore) else None
    info = await store.put_file("recordings/s1/big.webm", source, content_type="video/webm")
    assert (info.size, info.sha256) == (16 * MiB, digest)
    if sent is not None:
        assert sorted(sent) == [1, 2, 3, 4]
        assert not sidecar_path(source).exists()
    target = tmp_path / "big-copy.webm"
    await store.get_file("recordings/s1/big.webm", target)
    assert sha256_file(target) == digest
    assert await store.read_range("recordings/s1/big.webm", 5 * MiB - 3, 6) == source.read_bytes()[5 * MiB - 3:5 * MiB + 3]


async def test_verify_recording_detects_edits(store: ObjectStore) -> None:
    session = "sess-42"
    prefix = session_prefix(session)
    files = []
    for name, data in (("seg-0001.webm", os.urandom(40_000)), ("transcript.json", b'{"text": "hello"}')):
        info = await store.put_bytes(prefix + name, data)
        files.append({"key": info.key, "size": info.size, "sha256": info.sha256, "kind": name.split(".")[-1]})
    manifest = build_manifest(session, files, {"room": "r1", "agent": "a1"}, SECRET)
    assert [f["key"] for f in manifest["files"]] == sorted(f["key"] for f in files)

    report = await verify_recording(store, session, SECRET)
    assert report.problems == [{"key": manifest_key(session), "problem": "manifest_missing"}]
    assert not report.ok

    await store.put_bytes(prefix + MANIFEST_NAME, json.dumps(manifest).encode())
    report = await verify_recording(store, session, SECRET)
    assert (report.ok, report.checked, report.problems) == (True, 2, [])
    assert not (await verify_recording(store, session, "another-secret")).ok

    segment = prefix + "seg-0001.webm"
    original = await store.get_bytes(segment)
    edited = bytearray(original)
    edited[20_000] ^= 0x01
    await overwrite_behind_its_back(store, segment, bytes(edited))
    report = await verify_recording(store, session, SECRET)
    assert not report.ok and report.checked == 2
    assert [(p["key"], p["problem"]) for p in report.problems] == [(segment, "sha256")]

    await overwrite_behind_its_back(store, segment, original)
    forged = dict(manifest, session={"room": "r1", "agent": "someone-else"})
    await store.put_bytes(prefix + MANIFEST_NAME, json.dumps(forged).encode())
    report = await verify_recording(store, session, SECRET)
    assert [(p["key"], p["problem"]) for p in report.problems] == [(manifest_key(session), "manifest_mac")]

    await store.put_bytes(prefix + MANIFEST_NAME, json.dumps(manifest).encode())
    await store.delete(prefix + "transcript.json")
    report = await verify_recording(store, session, SECRET)
    assert [(p["key"], p["problem"]) for p in report.problems] == [(prefix + "transcript.json", "missing")]


# -- local only --------------------------------------------------------------------


async def test_local_sidecars_stay_hidden_and_a_wrong_sha256_is_refused(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    source = tmp_path / "f"
    digest = write_random(source, 1000)
    await store.put_file("recordings/s1/f", source, sha256=digest)
    assert (tmp_path / "objects" / ".meta" / "recordings" / "s1" / "f.json").exists()
    assert [info.key async for info in store.list("")] == ["recordings/s1/f"]
    (tmp_path / "objects" / "recordings" / "s1" / "f").write_bytes(b"x" * 1000)
    stat = await store.stat("recordings/s1/f")
    assert stat is not None and stat.sha256 is None  # the sidecar no longer describes it
    with pytest.raises(Unprocessable):
        await store.put_file("recordings/s1/g", source, sha256="0" * 64)
    assert await store.stat("recordings/s1/g") is None
    await store.delete("recordings/s1/f")
    assert not (tmp_path / "objects" / "recordings").exists()  # empty directories pruned


# -- S3 only: outages and resumption -------------------------------------------------


async def test_outage_mid_multipart_resumes_with_the_missing_parts(
    s3: S3ObjectStore, proxy: TcpProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "seg.webm"
    digest = write_random(source, 16 * MiB)
    sent = record_parts(monkeypatch, s3, cut=proxy, after=1)
    with pytest.raises(ObjectStoreUnavailable) as caught:
        await s3.put_file("recordings/s1/seg.webm", source, sha256=digest)
    assert caught.value.status == 503 and caught.value.code == "object_store_unavailable"
    assert sent == [1]
    state = UploadState.load(sidecar_path(source))
    assert state is not None and set(state.parts) == {"1"}

    proxy.restore()
    sent.clear()
    info = await s3.put_file("recordings/s1/seg.webm", source, sha256=digest)
    assert sorted(sent) == [2, 3, 4]
    assert (info.size, info.sha256, info.encrypted) == (16 * MiB, digest, True)
    assert not sidecar_path(source).exists()
    target = tmp_path / "copy.webm"
    await s3.get_file("recordings/s1/seg.webm", target)
    assert sha256_file(target) == digest


async def test_a_new_store_resumes_from_the_sidecar(
    proxy: TcpProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = s3_settings(proxy)
    source = tmp_path / "seg.webm"
    digest = write_random(source, 16 * MiB)
    first = S3ObjectStore(settings)
    record_parts(monkeypatch, first, cut=proxy, after=2)
    with pytest.raises(ObjectStoreUnavailable):
        await first.put_file("recordings/s1/seg.webm", source)  # hashes the file itself
    await first.close()
    proxy.restore()

    restarted = S3ObjectStore(settings)
    sent = record_parts(monkeypatch, restarted)
    info = await restarted.put_file("recordings/s1/seg.webm", source)
    assert sorted(sent) == [3, 4]
    assert info.sha256 == digest
    await restarted.close()


async def test_an_upload_gone_from_the_server_starts_over(
    s3: S3ObjectStore, proxy: TcpProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "seg.webm"
    digest = write_random(source, 11 * MiB)
    sent = record_parts(monkeypatch, s3, cut=proxy, after=1)
    with pytest.raises(ObjectStoreUnavailable):
        await s3.put_file("recordings/s1/seg.webm", source)
    proxy.restore()
    state = UploadState.load(sidecar_path(source))
    assert state is not None
    raw_client(s3)._abort_multipart_upload(s3.bucket, state.key, state.upload_id)  # e.g. a lifecycle rule

    monkeypatch.undo()
    sent = record_parts(monkeypatch, s3)
    info = await s3.put_file("recordings/s1/seg.webm", source)
    assert sorted(sent) == [1, 2, 3]
    assert info.sha256 == digest


async def test_retries_ride_out_a_short_outage(proxy: TcpProxy) -> None:
    store = S3ObjectStore(s3_settings(proxy, max_attempts=10, retry_base_s=0.1, retry_max_s=0.5))
    await store.put_bytes("recordings/s1/before", b"before")
    proxy.cut()
    timer = threading.Timer(1.0, proxy.restore)
    timer.start()
    try:
        info = await store.put_bytes("recordings/s1/during", b"during")
    finally:
        timer.cancel()
    assert info.size == 6
    assert await store.get_bytes("recordings/s1/during") == b"during"
    await store.close()


async def test_a_long_outage_is_unavailable(s3: S3ObjectStore, proxy: TcpProxy) -> None:
    await s3.put_bytes("recordings/s1/x", b"x")
    proxy.cut()
    calls = [
        lambda: s3.stat("recordings/s1/x"), lambda: s3.get_bytes("recordings/s1/x"),
        lambda: s3.put_bytes("recordings/s1/y", b"y"),
    ]
    for call in calls:
        with pytest.raises(ObjectStoreUnavailable):
            await call()
    proxy.restore()
    assert await s3.get_bytes("recordings/s1/x") == b"x"


async def test_without_sse_objects_are_not_reported_encrypted(proxy: TcpProxy) -> None:
    store = S3ObjectStore(s3_settings(proxy, sse="none"))
    info = await store.put_bytes("recordings/s1/plain", b"plain")
    assert info.encrypted is False
    await store.close()


# -- the factory ---------------------------------------------------------------------


def test_open_object_store(tmp_path: Path) -> None:
    config = Config()
    config.storage.data_dir = str(tmp_path / "data")
    store = open_object_store(config)
    assert isinstance(store, LocalObjectStore) and store.root == tmp_path / "data" / "objects"
    config.objects.local_dir = str(tmp_path / "elsewhere")
    assert open_object_store(config).root == tmp_path / "elsewhere"  # type: ignore[attr-defined]
    config.objects.backend = "s3"
    assert isinstance(open_object_store(config), S3ObjectStore)
    config.objects.sse = "kms"
    with pytest.raises(ConfigError):
        open_object_store(config)
    config.objects.backend = "tape"
    with pytest.raises(ConfigError):
        open_object_store(config)
