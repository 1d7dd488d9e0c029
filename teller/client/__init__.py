"""Python client SDK for Teller rooms."""

from .room import ClientError, LocalPublication, RemoteSubscription, RoomClient
from .sources import FrameQueueTrack, TestPatternTrack, ToneTrack, file_tracks

__all__ = [
    "ClientError",
    "FrameQueueTrack",
    "LocalPublication",
    "RemoteSubscription",
    "RoomClient",
    "TestPatternTrack",
    "ToneTrack",
    "file_tracks",
]
