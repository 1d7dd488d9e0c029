"""Signalling: WebSocket protocol, REST, WHIP/WHEP, access tokens."""

from .app import create_app
from .tokens import AccessToken, Grants, TokenIssuer, issuer_for

__all__ = ["AccessToken", "Grants", "TokenIssuer", "create_app", "issuer_for"]
