"""The configured object store."""

from __future__ import annotations

from pathlib import Path

from ...config.loader import ConfigError, data_dir
from ...config.settings import Config
from .base import ObjectStore
from .local import LocalObjectStore
from .s3 import S3ObjectStore


def open_object_store(config: Config) -> ObjectStore:
    """The backend `config.objects` names; S3 connects lazily, at its first call."""
    settings = config.objects
    if settings.backend == "local":
        root = Path(settings.local_dir).expanduser() if settings.local_dir else data_dir(config) / "objects"
        return LocalObjectStore(root)
    if settings.backend == "s3":
        return S3ObjectStore(settings)
    raise ConfigError(f"objects.backend: unknown backend {settings.backend!r} (use 'local' or 's3')")
