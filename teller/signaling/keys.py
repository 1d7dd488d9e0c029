"""Typed keys for what the aiohttp application shares with its handlers."""

from __future__ import annotations

from aiohttp import web

from ..config import Config
from ..sfu import Node
from ..state import StateStore
from .tokens import TokenIssuer

CONFIG = web.AppKey("config", Config)
NODE = web.AppKey("node", Node)
ISSUER = web.AppKey("issuer", TokenIssuer)
STORE = web.AppKey("store", StateStore)
# teller.cluster.directory.Directory: typed loosely to keep signaling free of a cluster import cycle.
DIRECTORY = web.AppKey("directory", object)
