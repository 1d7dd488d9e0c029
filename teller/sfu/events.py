"""What happens in a room, one dataclass per kind, as the signalling layer sends it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    type: ClassVar[str] = "event"

    def to_message(self) -> dict[str, Any]:
        # Shallow: the fields are JSON values already, and dataclasses.asdict's deep
        # copy of a data payload cost more than encoding it.
        return {"type": self.type, **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(frozen=True)
class ParticipantJoined(Event):
    type: ClassVar[str] = "participant_joined"
    participant: dict[str, Any]


@dataclass(frozen=True)
class ParticipantLeft(Event):
    type: ClassVar[str] = "participant_left"
    participant_id: str
    reason: str


@dataclass(frozen=True)
class TrackPublished(Event):
    type: ClassVar[str] = "track_published"
    participant_id: str
    track: dict[str, Any]


@dataclass(frozen=True)
class TrackUnpublished(Event):
    type: ClassVar[str] = "track_unpublished"
    participant_id: str
    track_id: str


@dataclass(frozen=True)
class TransportClosed(Event):
    """One of the participant's own peer connections ended (failed, timed out, unpublished)."""

    type: ClassVar[str] = "transport_closed"
    transport_id: str
    reason: str


@dataclass(frozen=True)
class DataReceived(Event):
    type: ClassVar[str] = "data"
    from_participant_id: str | None
    from_identity: str | None
    topic: str | None
    payload: Any


@dataclass(frozen=True)
class Removed(Event):
    """This participant is out of the room: removed, replaced, or the room closed."""

    type: ClassVar[str] = "left"
    reason: str


@dataclass(frozen=True)
class Reconnect(Event):
    """The room is moving to another node: reconnect and resume with the resume token."""

    type: ClassVar[str] = "reconnect"
    reason: str
