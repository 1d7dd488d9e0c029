"""Stages: recording, quality, speech, liveness, digital human... attached to tracks."""

from .base import EncodedFrame, FrameStream, Stage, StageContext, StageSpec
from .host import BUILTIN_STAGES, StageHost, UnknownStage

__all__ = [
    "BUILTIN_STAGES",
    "EncodedFrame",
    "FrameStream",
    "Stage",
    "StageContext",
    "StageHost",
    "StageSpec",
    "UnknownStage",
]
