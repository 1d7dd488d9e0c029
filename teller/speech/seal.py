"""Sealing the unmasked text of a transcript line, for the compliance reveal only.

Every stored and shown transcript is masked. The original of a line that had
personal numbers in it travels beside it sealed (AES-GCM, a key derived from the
deployment secret), so only the server opens it, and only for the audited reveal.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CONTEXT = b"teller transcript seal v1"


class SealError(ValueError):
    pass


class Sealer:
    def __init__(self, secret: str) -> None:
        self._aead = AESGCM(hmac.new(secret.encode(), CONTEXT, hashlib.sha256).digest())

    def seal(self, text: str, bound_to: str) -> str:
        """`bound_to` (the session) must be given again to open it: a sealed line copied
        into another session's transcript does not open there."""
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, text.encode(), bound_to.encode())).decode()

    def open(self, sealed: str, bound_to: str) -> str:
        try:
            raw = base64.b64decode(sealed, validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], bound_to.encode()).decode()
        except Exception as exc:
            raise SealError("the sealed text does not open with this key and session") from exc
