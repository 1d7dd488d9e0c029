"""Counts every media decoder and encoder built in this process.

Forwarding must build none. The SFU's own shared decoder (for stages) counts
itself here; aiortc's codec factories are wrapped so that a decoder or encoder
made anywhere else in the process is counted and logged too.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("teller.sfu.codecs")


@dataclass
class CodecCounters:
    decoders_created: int = 0
    encoders_created: int = 0
    decoders_active: int = 0

    def snapshot(self) -> dict[str, int]:
        return {
            "decoders_created": self.decoders_created,
            "encoders_created": self.encoders_created,
            "decoders_active": self.decoders_active,
        }


_lock = threading.Lock()
_counters = CodecCounters()
_installed = False


def counters() -> CodecCounters:
    """The process-wide counters (a process holds one SFU node)."""
    return _counters


def make_decoder(codec: Any) -> Any:
    """A decoder for the SFU's own use (stage taps): counted, and active until released."""
    import aiortc.codecs

    factory = getattr(aiortc.codecs.get_decoder, "__wrapped__", aiortc.codecs.get_decoder)
    decoder = factory(codec)
    with _lock:
        _counters.decoders_created += 1
        _counters.decoders_active += 1
    return decoder


def release_decoder() -> None:
    with _lock:
        _counters.decoders_active -= 1


def install() -> CodecCounters:
    """Wrap aiortc's get_decoder/get_encoder where aiortc looks them up. Idempotent."""
    global _installed
    with _lock:
        if _installed:
            return _counters
        _installed = True
    import aiortc.codecs
    import aiortc.rtcrtpreceiver
    import aiortc.rtcrtpsender

    original_decoder = aiortc.codecs.get_decoder
    original_encoder = aiortc.codecs.get_encoder

    def get_decoder(codec: Any) -> Any:
        with _lock:
            _counters.decoders_created += 1
        log.warning("a decoder was built by aiortc", extra={"codec": codec.mimeType})
        return original_decoder(codec)

    def get_encoder(codec: Any) -> Any:
        with _lock:
            _counters.encoders_created += 1
        log.warning("an encoder was built by aiortc", extra={"codec": codec.mimeType})
        return original_encoder(codec)

    get_decoder.__wrapped__ = original_decoder  # type: ignore[attr-defined]
    get_encoder.__wrapped__ = original_encoder  # type: ignore[attr-defined]
    aiortc.codecs.get_decoder = get_decoder
    aiortc.codecs.get_encoder = get_encoder
    aiortc.rtcrtpreceiver.get_decoder = get_decoder  # type: ignore[attr-defined]
    aiortc.rtcrtpsender.get_encoder = get_encoder  # type: ignore[attr-defined]
    return _counters
