"""GPS fixes from a field device: checked before anyone sees them, kept in the timeline.

A fix travels as a data message with topic "gps" (the officer page, the SDK, the
body-cam simulator). The room checks it like any other bad input: a fix with a
latitude of 300 is refused to its sender and never reaches the reviewer or the
recording. What passes is normalised (rounded to about 1 cm, unknown keys dropped),
so the timeline holds one shape whatever the device sent.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest

TOPIC = "gps"
# A device clock this far from the server's is wrong; the fix is refused, not trusted.
MAX_CLOCK_SKEW_S = 24 * 3600
EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True)
class GpsFix:
    lat: float
    lon: float
    ts: float  # when the device took the fix (epoch seconds)
    accuracy_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    altitude_m: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lat": round(self.lat, 7), "lon": round(self.lon, 7), "ts": round(self.ts, 3)}
        for key in ("accuracy_m", "speed_mps", "heading_deg", "altitude_m"):
            value = getattr(self, key)
            if value is not None:
                out[key] = round(value, 2)
        return out


def _number(payload: dict[str, Any], key: str, low: float, high: float, required: bool = False) -> float | None:
    value = payload.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
        raise BadRequest(f"gps {key} must be a number from {low:g} to {high:g}", code="invalid_gps", field=key)
    return float(value)


def parse_fix(payload: Any, now: float | None = None) -> GpsFix:
    """A fix from a data message's payload, or BadRequest (code invalid_gps)."""
    if not isinstance(payload, dict):
        raise BadRequest("a gps message is an object {lat, lon, ts?, accuracy_m?, ...}", code="invalid_gps")
    now = time.time() if now is None else now
    lat = _number(payload, "lat", -90.0, 90.0, required=True)
    lon = _number(payload, "lon", -180.0, 180.0, required=True)
    ts = _number(payload, "ts", now - MAX_CLOCK_SKEW_S, now + MAX_CLOCK_SKEW_S)
    assert lat is not None and lon is not None
    return GpsFix(
        lat=lat, lon=lon, ts=now if ts is None else ts,
        accuracy_m=_number(payload, "accuracy_m", 0.0, 100_000.0),
        speed_mps=_number(payload, "speed_mps", 0.0, 150.0),
        heading_deg=_number(payload, "heading_deg", 0.0, 360.0),
        altitude_m=_number(payload, "altitude_m", -500.0, 10_000.0),
    )


def normalise(payload: Any) -> dict[str, Any]:
    """The room's check for topic "gps": the payload others receive instead."""
    return parse_fix(payload).to_json()


def distance_m(a: GpsFix, b: GpsFix) -> float:
    """Great-circle distance (haversine): how far the officer walked between fixes."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def walk(lat: float, lon: float, *, speed_mps: float = 1.2, interval_s: float = 2.0, seed: int = 0,
         accuracy_m: float = 5.0) -> Iterator[GpsFix]:
    """An officer walking around a farm: a slowly turning path from (lat, lon), with
    the jitter a phone's GPS has. Deterministic for a seed (the body-cam simulator)."""
    rng = random.Random(seed)
    heading = rng.uniform(0, 360)
    while True:
        yield GpsFix(lat, lon, time.time(), accuracy_m=accuracy_m * rng.uniform(0.6, 1.4),
                     speed_mps=speed_mps, heading_deg=heading % 360)
        step = speed_mps * interval_s
        heading += rng.uniform(-25, 25)
        lat += step * math.cos(math.radians(heading)) / 111_320.0
        lon += step * math.sin(math.radians(heading)) / (111_320.0 * max(0.01, math.cos(math.radians(lat))))
