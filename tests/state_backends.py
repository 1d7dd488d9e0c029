"""Both state backends as pytest fixtures: every store test runs on memory and on Redis.

Redis is a real redis-server on a free loopback port, one per test module; each test
gets its own key prefix, so tests never see each other's keys.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from teller.config.settings import StateSettings
from teller.state import MemoryStore, StateStore, open_store

from .redis_server import RedisServer, redis_binary


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if redis_binary() is None:
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        yield server


class Backend:
    """Opens handles on one store's data: for Redis each is its own client, as in
    another process; in memory they are all the one store, as in the same process."""

    def __init__(self, name: str, settings: StateSettings) -> None:
        self.name = name
        self.settings = settings
        self._memory = MemoryStore() if name == "memory" else None
        self._opened: list[StateStore] = []

    async def open(self) -> StateStore:
        if self._memory is not None:
            return self._memory
        store = open_store(self.settings)
        await store.start()
        self._opened.append(store)
        return store

    async def close(self) -> None:
        for store in self._opened:
            await store.close()
        if self._memory is not None:
            await self._memory.close()


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        settings = StateSettings(backend="memory")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        # A prefix per test: tests share one Redis but never see each other's keys.
        settings = StateSettings(
            backend="redis", redis_url=server.url, key_prefix=f"t-{uuid.uuid4().hex[:12]}", op_timeout_s=2.0
        )
    backend = Backend(request.param, settings)
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def store(backend: Backend) -> StateStore:
    return await backend.open()


@pytest.fixture
async def peer(backend: Backend, store: StateStore) -> StateStore:
    """A second handle on the same data (another client for Redis)."""
    return await backend.open()
