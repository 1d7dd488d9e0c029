"""Typed keys for what the aiohttp application shares with its handlers."""

from __future__ import annotations

from aiohttp import web

from ..config import Config
from ..sfu import Node
from .tokens import TokenIssuer

CONFIG = web.AppKey("config", Config)
NODE = web.AppKey("node", Node)
ISSUER = web.AppKey("issuer", TokenIssuer)
