"""The "liveness" stage: a customer's decoded video into the node's identity watch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..sfu.stages.base import FrameStream, Stage, StageContext, StageSpec


class LivenessStage(Stage):
    name = "liveness"
    # The camera: a shared screen has no face to watch.
    spec = StageSpec(kinds=frozenset({"video"}), form="decoded", roles=frozenset({"customer"}),
                     sources=frozenset({"camera"}))

    @classmethod
    def wants(cls, kind: str, role: str, services: Mapping[str, Any]) -> bool:
        return cls.spec.matches(kind, role) and services.get("identity") is not None

    async def run(self, ctx: StageContext, frames: FrameStream[Any]) -> None:
        await ctx.services["identity"].watch(ctx, frames)
