"""A participant: who joined, what they may do, and the peer connections they hold."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .events import DataReceived, Event
from .publisher import Publisher
from .subscription import Subscription

if TYPE_CHECKING:
    from .room import Room

log = logging.getLogger("teller.sfu.participant")


# Bank staff: they see a hidden (monitoring) participant; customers never do.
STAFF_ROLES = frozenset({"agent", "reviewer", "supervisor", "service", "officer", "compliance"})


@dataclass(frozen=True)
class Permissions:
    publish: bool = True
    subscribe: bool = True
    data: bool = True


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(9)}"


class Participant:
    def __init__(
        self,
        *,
        identity: str,
        name: str,
        role: str,
        permissions: Permissions,
        kind: str = "websocket",
        notify: Callable[[Event], None] | None = None,
        participant_id: str | None = None,
        hidden: bool = False,
    ) -> None:
        self.id = participant_id or new_id("PA")
        # A supervisor monitoring or whispering: listed to staff only, and no customer
        # may subscribe to its tracks, until it reveals itself (barge-in).
        self.hidden = hidden
        self.identity = identity
        self.name = name
        self.role = role
        self.permissions = permissions
        self.kind = kind
        self.joined_at = time.time()
        self.notify = notify
        # The signalling session that speaks for this participant now; None while it
        # is disconnected and may still resume.
        self.session: object | None = None
        self.detach_timer: Any = None
        self.publishers: dict[str, Publisher] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._data_channels: list[Any] = []
        self.left = False

    @property
    def staff(self) -> bool:
        return self.role in STAFF_ROLES

    def sees(self, other: Participant) -> bool:
        return not other.hidden or self.staff or other is self

    @property
    def transport_count(self) -> int:
        return len(self.publishers) + len(self.subscriptions)

    def publications(self) -> list[Any]:
        return [p for pub in self.publishers.values() for p in pub.publications if not p.ended]

    def info(self) -> dict[str, Any]:
        return {
            "participant_id": self.id,
            "identity": self.identity,
            "name": self.name,
            "role": self.role,
            "kind": self.kind,
            "joined_at": round(self.joined_at, 3),
            "connected": self.notify is not None or self.kind != "websocket",
            "hidden": self.hidden,
            "tracks": [p.info() for p in self.publications()],
        }

    def send_event(self, event: Event) -> None:
        if self.notify is not None and not self.left:
            try:
                self.notify(event)
            except Exception:  # a broken client connection must not break the room
                log.warning("cannot notify participant", exc_info=True)

    # -- data channels --------------------------------------------------------------

    def add_data_channel(self, channel: Any, room: Room) -> None:
        self._data_channels.append(channel)

        @channel.on("message")
        def on_message(message: Any) -> None:
            room.on_data_channel_message(self, channel, message)

        @channel.on("close")
        def on_close() -> None:
            if channel in self._data_channels:
                self._data_channels.remove(channel)

    def deliver_data(self, event: DataReceived) -> None:
        """Over an open data channel if there is one, else over signalling."""
        for channel in self._data_channels:
            if channel.readyState == "open":
                channel.send(json.dumps(event.to_message(), separators=(",", ":")))
                return
        self.send_event(event)

    def drop_data_channels(self) -> None:
        self._data_channels.clear()
