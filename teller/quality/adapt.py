"""Adaptive downgrade: a subscriber whose downlink cannot carry a video gets a lower tier.

The ladder is the publisher's own stream ("full", forwarded untouched), then each
configured tier (a shared re-encode, teller/sfu/tiers.py), then audio only. A
subscriber steps down one rung when the loss its receiver reports stays above
`down_loss` for `down_after_s`; it tries the rung above after `up_after_s` of a
clean link. If that try fails the wait doubles (up to `up_max_s`), so a link that
can carry only a low tier does not bounce every few seconds; once a try holds,
the wait is back to `up_after_s` and the climb goes on at the normal pace.

The signal is reported loss, not REMB: an estimator fed a 60 kbps tier estimates
little more than that, so waiting for it to allow a higher tier would never end;
trying the rung above and stepping back on loss is the probe. The publisher's own
bitrate follows the best subscriber (Publication.remb_policy "max"), so one weak
subscriber never lowers what everyone else receives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import QualitySettings

if TYPE_CHECKING:
    from ..sfu.forwarder import DownTrack
    from ..sfu.stages import StageHost
    from ..sfu.tiers import TierSet
    from ..sfu.track import Publication

log = logging.getLogger("teller.quality.adapt")

FULL = "full"
AUDIO_ONLY = "audio_only"
# After a change, feedback still describes the old stream for about one RTCP interval.
SETTLE_S = 1.5
# A step up with a clean link this long after it has held.
PROVEN_S = 4.0


@dataclass
class TierChange:
    participant_id: str
    old: str
    new: str
    reason: str
    loss: float


def validate_tiers(settings: QualitySettings) -> None:
    """At start-up, not when the first weak subscriber needs a tier."""
    from ..config import ConfigError
    from ..sfu.tiers import TierSpec

    names = [t.name for t in settings.tiers]
    if len(set(names)) != len(names) or any(not n or n in (FULL, AUDIO_ONLY) for n in names):
        raise ConfigError(f"quality.tiers: names must be unique, non-empty and not {FULL!r} or {AUDIO_ONLY!r}: {names}")
    for tier in settings.tiers:
        try:
            TierSpec(tier.name, tier.scale, tier.bitrate, tier.fps)
        except ValueError as exc:
            raise ConfigError(f"quality.tiers: {exc}") from exc


class TierRegistry:
    """The tier encoders of a node, per publication, made on first use."""

    def __init__(self, stages: StageHost, settings: QualitySettings) -> None:
        self._stages = stages
        self._settings = settings
        self._sets: dict[str, TierSet] = {}
        validate_tiers(settings)

    def source(self, publication: Publication, tier: str) -> Any:
        if tier == FULL:
            return publication
        if tier == AUDIO_ONLY:
            return None
        from ..sfu.tiers import (  # the encoders load only when first needed
            TierSet,
            TierSpec,
        )

        tiers = self._sets.get(publication.id)
        if tiers is None:
            tiers = self._sets[publication.id] = TierSet(
                publication,
                open_frames=lambda: self._stages.open_decoded(publication),
                close_frames=lambda stream: self._stages.close_decoded(publication, stream),
            )
            publication.on_ended.append(self._publication_ended)
        spec = next(t for t in self._settings.tiers if t.name == tier)
        return tiers.encoder(TierSpec(spec.name, spec.scale, spec.bitrate, spec.fps))

    def _publication_ended(self, publication: Publication) -> None:
        tiers = self._sets.pop(publication.id, None)
        if tiers is not None:
            asyncio.ensure_future(tiers.close())

    @property
    def encoders(self) -> int:
        return sum(t.encoders for t in self._sets.values())

    def stats(self) -> list[dict[str, Any]]:
        return [{"track_id": track_id, **s} for track_id, tiers in self._sets.items() for s in tiers.stats()]

    async def close(self) -> None:
        sets, self._sets = list(self._sets.values()), {}
        await asyncio.gather(*(t.close() for t in sets), return_exceptions=True)


class Adaptation:
    """One subscribing participant's rung on the ladder, for all its video downtracks."""

    def __init__(self, participant_id: str, settings: QualitySettings, registry: TierRegistry) -> None:
        self.participant_id = participant_id
        self._settings = settings
        self._registry = registry
        ladder = [FULL, *(t.name for t in settings.tiers)]
        if settings.audio_only:
            ladder.append(AUDIO_ONLY)
        self.ladder = ladder
        self.level = 0
        self.changed_at = -1e9
        self._bad_since: float | None = None
        self._good_since: float | None = None
        self._up_wait = settings.up_after_s
        self._last_up_at = -1e9
        self._probing = False  # a step up not yet proven
        self.changes = 0
        self.time_below = 0.0
        self.on_change: Callable[[TierChange], None] = lambda change: None

    @property
    def tier(self) -> str:
        return self.ladder[self.level]

    def evaluate(self, loss: float, downtracks: list[DownTrack], now: float, dt: float) -> TierChange | None:
        """`loss`: the subscriber's downlink loss now (smoothed). Moves its video if due."""
        if self.level:
            self.time_below += dt
        if now - self.changed_at < SETTLE_S:
            return None
        s = self._settings
        if loss >= s.down_loss and self.level < len(self.ladder) - 1:
            self._good_since = None
            if self._bad_since is None:
                self._bad_since = now
            if now - self._bad_since >= s.down_after_s:
                if self._probing:  # the last step up failed: wait longer before the next
                    self._up_wait = min(s.up_max_s, self._up_wait * 2)
                self._probing = False
                return self._move(self.level + 1, downtracks, now, "loss", loss)
            return None
        self._bad_since = None
        if self._probing and loss <= s.up_loss and now - self._last_up_at >= PROVEN_S:
            self._probing = False  # the step up held: the link is back, climb at the normal pace
            self._up_wait = s.up_after_s
        if loss <= s.up_loss and self.level > 0:
            if self._good_since is None:
                self._good_since = now
            if now - self._good_since >= self._up_wait:
                self._last_up_at = now
                self._probing = True
                return self._move(self.level - 1, downtracks, now, "recovered", loss)
        else:
            self._good_since = None
        return None

    def _move(self, level: int, downtracks: list[DownTrack], now: float, reason: str, loss: float) -> TierChange:
        old = self.tier
        self.level = level
        self.changed_at = now
        self._bad_since = self._good_since = None
        self.changes += 1
        self.apply(downtracks)  # an encoder left without subscribers stops after a grace period
        change = TierChange(self.participant_id, old, self.tier, reason, round(loss, 4))
        log.info("subscriber moved to another tier", extra={"participant": self.participant_id, "from": old, "to": self.tier, "loss": round(loss, 4)})
        self.on_change(change)
        return change

    def apply(self, downtracks: list[DownTrack]) -> None:
        """Put each video downtrack on the current rung (also for one that just arrived)."""
        tier = self.tier
        for downtrack in downtracks:
            if downtrack.ended or downtrack.closed or downtrack.tier == tier:
                continue
            try:
                source = self._registry.source(downtrack.publication, tier)
            except ValueError:  # no encoder for this codec: video stops, audio goes on
                log.warning("no tier encoder for this track", extra={"track_id": downtrack.publication.id, "tier": tier})
                source, tier = None, AUDIO_ONLY
            downtrack.switch(source, tier)
