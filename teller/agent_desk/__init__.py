"""Browser pages. For now the embedded two-party call page served at /."""

from .pages import routes

__all__ = ["routes"]
