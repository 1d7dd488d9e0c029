"""Shared state: in memory for one process, in Redis for a cluster."""

from __future__ import annotations

from ..config import ConfigError
from ..config.settings import StateSettings
from .base import BusSubscription, LockLost, Record, StateStore, StateUnavailable
from .memory import MemoryStore
from .redis_store import RedisStore

__all__ = [
    "BusSubscription",
    "LockLost",
    "MemoryStore",
    "Record",
    "RedisStore",
    "StateStore",
    "StateUnavailable",
    "open_store",
]


def open_store(settings: StateSettings) -> StateStore:
    """The configured backend, not yet connected: the caller awaits start()."""
    if settings.backend == "memory":
        return MemoryStore()
    if settings.backend == "redis":
        try:
            return RedisStore(
                settings.redis_url, key_prefix=settings.key_prefix, op_timeout_s=settings.op_timeout_s
            )
        except ValueError as exc:  # redis-py's verdict on the URL
            raise ConfigError(f"state.redis_url: {exc}") from exc
    raise ConfigError(f"state.backend: unknown backend {settings.backend!r} (use 'memory' or 'redis')")
