"""Object storage for recordings."""

from .base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreUnavailable,
    check_key,
    sha256_file,
)
from .factory import open_object_store
from .local import LocalObjectStore
from .s3 import S3ObjectStore

__all__ = [
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreUnavailable",
    "S3ObjectStore",
    "check_key",
    "open_object_store",
    "sha256_file",
]
