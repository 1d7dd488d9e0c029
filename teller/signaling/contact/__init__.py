"""The contact centre: what customers come for (the catalogue) and who serves them (routing)."""

from .catalogue import Business, Catalogue, load_catalogue
from .routing import Router

__all__ = ["Business", "Catalogue", "Router", "load_catalogue"]
