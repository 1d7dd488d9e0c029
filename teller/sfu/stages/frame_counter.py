"""A stage that counts decoded frames and reports them to the room once a second.

It proves the shared decoder end to end and is a cheap live probe for operators:
enable it for a role and every subscriber sees `stage.frame_counter` data messages.
"""

from __future__ import annotations

import time
from typing import Any

from .base import FrameStream, Stage, StageContext, StageSpec


class FrameCounter(Stage):
    name = "frame_counter"
    spec = StageSpec(kinds=frozenset({"video"}), form="decoded")

    def __init__(self) -> None:
        self.frames = 0
        self.width = 0
        self.height = 0

    async def run(self, ctx: StageContext, frames: FrameStream[Any]) -> None:
        interval = float(ctx.options.get("report_interval_s", 1.0))
        next_report = time.monotonic() + interval
        async for frame in frames:
            self.frames += 1
            self.width, self.height = frame.width, frame.height
            now = time.monotonic()
            if now >= next_report:
                next_report = now + interval
                ctx.send_data(
                    "stage.frame_counter",
                    {
                        "track_id": ctx.track["track_id"],
                        "participant_id": ctx.track["participant_id"],
                        "frames": self.frames,
                        "width": self.width,
                        "height": self.height,
                        "dropped": frames.dropped,
                    },
                )
