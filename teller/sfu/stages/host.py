"""The stage host: runs the configured stages on every publication they match."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ... import logs
from ...config import StageSettings
from .base import FrameStream, Stage, StageContext
from .frame_counter import FrameCounter
from .tap import TrackTap

if TYPE_CHECKING:
    from ..participant import Participant
    from ..room import Room
    from ..track import Publication

log = logging.getLogger("teller.sfu.stages")

BUILTIN_STAGES: dict[str, type[Stage]] = {FrameCounter.name: FrameCounter}


def builtin_stages() -> dict[str, type[Stage]]:
    """The stages an operator can name; imported here, late, because they import this package."""
    from ...identity.stage import LivenessStage
    from ...speech.asr_stage import AsrStage

    return {**BUILTIN_STAGES, AsrStage.name: AsrStage, LivenessStage.name: LivenessStage}


class UnknownStage(ValueError):
    pass


@dataclass
class _Attached:
    tap: TrackTap
    runs: list[tuple[FrameStream[Any], asyncio.Task[None]]] = field(default_factory=list)
    # Streams handed out by open_decoded.
    extra: list[FrameStream[Any]] = field(default_factory=list)


class StageHost:
    def __init__(self, settings: StageSettings, registry: dict[str, type[Stage]] | None = None) -> None:
        registry = dict(builtin_stages() if registry is None else registry)
        unknown = [n for n in settings.enabled if n not in registry]
        if unknown:
            raise UnknownStage(f"unknown stage(s) {unknown}; known: {sorted(registry)}")
        self._settings = settings
        self._stages = [registry[n] for n in settings.enabled]
        self._attached: dict[str, _Attached] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # Shared services the stages of this process use, by name (see StageContext).
        self.services: dict[str, Any] = {}

    def publication_added(self, room: Room, participant: Participant, publication: Publication) -> None:
        for stage_cls in self._stages:
            if not stage_cls.wants(publication.kind, participant.role, self.services):
                continue
            if stage_cls.spec.sources is not None and publication.source not in stage_cls.spec.sources:
                continue
            attached = self._attached.get(publication.id)
            if attached is None:
                attached = self._attached[publication.id] = _Attached(TrackTap(publication))
            stream: FrameStream[Any] = FrameStream()
            attached.tap.add(stream, decoded=stage_cls.spec.form == "decoded")
            ctx = StageContext(
                room=room.name,
                track=publication.info(),
                participant=participant.info(),
                options=dict(self._settings.options.get(stage_cls.name, {})),
                send_data=lambda topic, payload, room=room: self._send(room, topic, payload),
                request_keyframe=publication.request_keyframe,
                services=self.services,
            )
            with logs.bind(room=room.name, participant=participant.id):
                task = asyncio.create_task(self._run(stage_cls(), ctx, stream), name=f"stage:{stage_cls.name}")
            attached.runs.append((stream, task))
            task.add_done_callback(lambda t, p=publication, a=attached, s=stream: self._stage_ended(p, a, s, t))

    def _stage_ended(self, publication: Publication, attached: _Attached, stream: FrameStream[Any],
                     task: asyncio.Task[None]) -> None:
        """A stage that returns before its publication ends (it has nothing to do there)
        stops consuming: the decoder, then the tap, go when nobody else reads them."""
        if self._attached.get(publication.id) is not attached:
            return  # the publication ended: _detach is closing everything
        stream.close()
        attached.tap.remove(stream)
        attached.runs = [(s, t) for s, t in attached.runs if t is not task]
        if not attached.runs and not attached.extra:
            self.publication_removed(None, publication)

    def open_decoded(self, publication: Publication) -> FrameStream[Any]:
        """Decoded frames of `publication` for a consumer outside the stages (a tier
        encoder), from the same tap and decoder the stages use: one decode per track."""
        attached = self._attached.get(publication.id)
        if attached is None:
            attached = self._attached[publication.id] = _Attached(TrackTap(publication))
        stream: FrameStream[Any] = FrameStream(maxsize=4)
        attached.tap.add(stream, decoded=True)
        attached.extra.append(stream)
        return stream

    def close_decoded(self, publication: Publication, stream: FrameStream[Any]) -> None:
        attached = self._attached.get(publication.id)
        stream.close()
        if attached is None:
            return
        attached.tap.remove(stream)
        if stream in attached.extra:
            attached.extra.remove(stream)
        if not attached.runs and not attached.extra:
            self.publication_removed(None, publication)

    @staticmethod
    def _send(room: Room, topic: str, payload: Any) -> None:
        if not room.closed:
            room.send_data(None, payload, topic, None)

    @staticmethod
    async def _run(stage: Stage, ctx: StageContext, stream: FrameStream[Any]) -> None:
        try:
            await stage.run(ctx, stream)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stage failed", extra={"stage": stage.name, "track_id": ctx.track["track_id"]})

    def publication_removed(self, room: Room | None, publication: Publication) -> None:
        attached = self._attached.pop(publication.id, None)
        if attached is not None:
            task = asyncio.create_task(self._detach(attached))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _detach(self, attached: _Attached) -> None:
        await attached.tap.close()  # closes every stream: stages see the end and return
        tasks = [task for _, task in attached.runs]
        done, pending = await asyncio.wait(tasks, timeout=2.0) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        return {
            "enabled": [s.name for s in self._stages],
            "services": {name: svc.stats() for name, svc in self.services.items() if callable(getattr(svc, "stats", None))},
            "taps": len(self._attached),
            "frames_dropped": sum(s.dropped for a in self._attached.values() for s, _ in a.runs),
            "queues": [
                {
                    "track_id": track_id,
                    "packet_queue": a.tap.queue_depth,
                    "packet_drops": a.tap.packet_drops,
                    "decode_errors": a.tap.decode_errors,
                    "consumers": [
                        {"depth": s.depth, "delivered": s.delivered, "dropped": s.dropped}
                        for s in [s for s, _ in a.runs] + a.extra
                    ],
                }
                for track_id, a in self._attached.items()
            ],
        }

    async def close(self) -> None:
        attached, self._attached = list(self._attached.values()), {}
        await asyncio.gather(*(self._detach(a) for a in attached), return_exceptions=True)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
