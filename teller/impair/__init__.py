"""`teller impair`: a UDP relay that makes a network worse on purpose (loss, delay,
jitter, a bandwidth cap), for tests and QA sessions. See docs/loadtest.md."""

from .model import Impairment
from .relay import ImpairRelay

__all__ = ["ImpairRelay", "Impairment"]
