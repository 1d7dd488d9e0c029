"""The "asr" stage: one speaker's decoded audio in, captions and transcript lines out.

On the event loop it only resamples a frame and measures its level (tens of
microseconds); decoding runs in the hub's worker threads. A speaker whose frames
stop (muted, gone) has stopped speaking: what they said so far becomes final.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ..sfu.stages.base import FrameStream, Stage, StageContext, StageSpec
from .hub import FRAME_GAP_S


class AsrStage(Stage):
    name = "asr"
    spec = StageSpec(kinds=frozenset({"audio"}), form="decoded")

    @classmethod
    def wants(cls, kind: str, role: str, services: Mapping[str, Any]) -> bool:
        hub = services.get("speech")
        return kind == "audio" and hub is not None and hub.transcribes(role)

    async def run(self, ctx: StageContext, frames: FrameStream[Any]) -> None:
        hub = ctx.services["speech"]
        stream = hub.open_stream(ctx)
        iterator = frames.__aiter__()
        try:
            while True:
                try:
                    frame = await asyncio.wait_for(iterator.__anext__(), FRAME_GAP_S)
                except TimeoutError:
                    stream.pause()
                    continue
                except StopAsyncIteration:
                    return
                stream.feed(frame)
        finally:
            hub.close_stream(stream)
