"""Python client SDK for Teller rooms."""

from .room import ClientError, LocalPublication, RemoteSubscription, RoomClient
from .sources import (
    FrameQueueTrack,
    SpeechTrack,
    TestPatternTrack,
    ToneTrack,
    file_tracks,
)

__all__ = [
    "ClientError",
    "FrameQueueTrack",
    "LocalPublication",
    "RemoteSubscription",
    "RoomClient",
    "SpeechTrack",
    "TestPatternTrack",
    "ToneTrack",
    "file_tracks",
]
