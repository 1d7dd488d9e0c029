"""What a bad network does to one direction of traffic, as one validated value.

An `Impairment` is immutable: a change while the relay runs builds a new one (a
partial update merged onto the current value) and swaps it in whole, so a packet never
sees half of a change and a bad value never reaches the relay.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

from ..errors import BadRequest

CODE = "invalid_impairment"
MAX_MS = 60_000.0
MAX_RATE_KBPS = 10_000_000.0
MAX_BURST = 1000.0


def _invalid(message: str, field: str) -> BadRequest:
    return BadRequest(message, code=CODE, field=field)


@dataclass(frozen=True)
class Impairment:
    """One direction's settings; the defaults are a perfect network.

    `loss` is a fraction (0.05 is 5 %). `loss_burst` is the mean number of packets
    lost in a row: 0 (or 1) draws every packet independently; above 1 a two-state
    Gilbert–Elliott chain keeps the same average loss but loses packets in runs, as a
    fading radio link or an overflowing router does. `rate_kbps` caps the bandwidth
    (0: none) with a FIFO that drops new packets once they would wait more than
    `queue_ms`, so a sender above the cap sees a standing delay and then loss, as
    behind a real bottleneck.
    """

    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_kbps: float = 0.0
    queue_ms: float = 200.0
    loss_burst: float = 0.0

    FIELDS: ClassVar[tuple[str, ...]] = ("loss", "delay_ms", "jitter_ms", "rate_kbps", "queue_ms", "loss_burst")

    def __post_init__(self) -> None:
        for name in self.FIELDS:
            value = getattr(self, name)
            # bool is an int to Python, but `"loss": true` is a mistake, not 100 %.
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise _invalid(f"{name} must be a finite number, got {value!r}", name)
            object.__setattr__(self, name, float(value))
        if not 0.0 <= self.loss <= 1.0:
            raise _invalid(f"loss must be a fraction from 0 to 1 (0.05 is 5 %), got {self.loss:g}", "loss")
        for name in ("delay_ms", "jitter_ms", "queue_ms"):
            value = getattr(self, name)
            if not 0.0 <= value <= MAX_MS:
                raise _invalid(f"{name} must be from 0 to {MAX_MS:g} ms, got {value:g}", name)
        if self.rate_kbps != 0 and not 1.0 <= self.rate_kbps <= MAX_RATE_KBPS:
            raise _invalid(f"rate_kbps must be 0 (no cap) or from 1 to {int(MAX_RATE_KBPS)}, got {self.rate_kbps:g}", "rate_kbps")
        if self.loss_burst != 0 and not 1.0 <= self.loss_burst <= MAX_BURST:
            raise _invalid(f"loss_burst must be 0 (independent losses) or a mean burst length from 1 to {MAX_BURST:g} packets, got {self.loss_burst:g}", "loss_burst")
        if self.bursty and 0 < self.loss < 1 and self.loss > self.loss_burst / (self.loss_burst + 1):
            # The chain would have to leave the good state more than once a packet.
            limit = self.loss_burst / (self.loss_burst + 1)
            raise _invalid(
                f"loss {self.loss:g} cannot be reached with bursts of {self.loss_burst:g} packets on average: "
                f"at most {limit:.3g}; use longer bursts or less loss",
                "loss",
            )

    @property
    def bursty(self) -> bool:
        return self.loss_burst > 1.0

    @property
    def transitions(self) -> tuple[float, float]:
        """Gilbert–Elliott (good→bad, bad→good) probabilities per packet: the mean burst
        is 1/r and the stationary share of the bad state q/(q+r) is `loss`."""
        r = 1.0 / self.loss_burst
        q = self.loss * r / (1.0 - self.loss)
        return q, r

    def to_json(self) -> dict[str, float | int]:
        return {name: _number(value) for name, value in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Any, base: Impairment | None = None) -> Impairment:
        """`data` merged onto `base` (default: a perfect network); only the fields it
        names change. Unknown fields are refused, not ignored: a typo like `los` must
        not silently leave the network perfect."""
        if not isinstance(data, dict):
            raise BadRequest(f"an impairment must be a JSON object, got {type(data).__name__}", code=CODE)
        unknown = sorted(set(data) - set(cls.FIELDS))
        if unknown:
            raise BadRequest(
                f"unknown impairment field(s) {unknown}; known: {list(cls.FIELDS)}", code=CODE, field=unknown[0]
            )
        return replace(base or cls(), **data)

    def merged(self, data: Any) -> Impairment:
        return Impairment.from_json(data, self)


def _number(value: float) -> float | int:
    return int(value) if value.is_integer() else value
