"""The state store: one interface for everything processes share.

The embedded server keeps it in memory; a cluster keeps it in Redis. Callers see
plain JSON-able dicts and never a backend type, so every behaviour is tested on
both backends with the same contract tests.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from ..errors import Unavailable

Record = dict[str, Any]


class StateUnavailable(Unavailable):
    """The store cannot be reached; the request is refused, nothing is half-done."""

    code = "state_unavailable"


class LockLost(Unavailable):
    code = "lock_lost"


class BusSubscription(abc.ABC):
    """Messages published on one or more channels after the subscription started."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[tuple[str, Record]]:
        """Yields (channel, message); reconnects by itself after a store outage."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class StateStore(abc.ABC):
    """Every method raises StateUnavailable when the backend cannot be reached."""

    backend: str = ""

    async def start(self) -> None:
        """Connect (a no-op in memory); failing to connect is not an error here."""

    async def close(self) -> None:
        """Release connections and subscriptions."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers; never raises."""

    # -- rooms -----------------------------------------------------------------------
    @abc.abstractmethod
    async def get_room(self, name: str) -> Record | None: ...

    @abc.abstractmethod
    async def list_rooms(self) -> list[Record]: ...

    @abc.abstractmethod
    async def put_room(self, name: str, record: Record) -> None: ...

    @abc.abstractmethod
    async def update_room(self, name: str, change: Callable[[Record | None], Record | None]) -> Record | None:
        """Read-modify-write without lost updates across processes.

        `change` gets the current record (None if absent) and returns the new one,
        or None to delete it. It may be called more than once (optimistic retry),
        so it must not have side effects. Returns what was stored.
        """

    @abc.abstractmethod
    async def delete_room(self, name: str) -> None:
        """Deletes the room and its participants."""

    # -- participants (per room) -----------------------------------------------------
    @abc.abstractmethod
    async def put_participant(self, room: str, participant_id: str, record: Record) -> None: ...

    @abc.abstractmethod
    async def remove_participant(self, room: str, participant_id: str) -> None: ...

    @abc.abstractmethod
    async def list_participants(self, room: str) -> list[Record]: ...

    @abc.abstractmethod
    async def remove_participants_where(self, room: str, field: str, value: Any) -> int:
        """Atomically removes the room's participants whose record[field] == value.

        A record written concurrently with a different value survives; returns the count.
        """

    # -- node registry ---------------------------------------------------------------
    @abc.abstractmethod
    async def heartbeat(self, node_id: str, record: Record, ttl_s: float) -> bool:
        """Registers or refreshes a node for ttl_s seconds.

        Returns False when no live entry existed before (first heartbeat, an expired
        one, or a store that lost its data): the node then re-publishes its state.
        """

    @abc.abstractmethod
    async def get_node(self, node_id: str) -> Record | None:
        """The node's record while its heartbeat is live, else None."""

    @abc.abstractmethod
    async def list_nodes(self) -> list[Record]:
        """Live nodes only."""

    @abc.abstractmethod
    async def remove_node(self, node_id: str) -> None: ...

    # -- locks -------------------------------------------------------------------------
    @abc.abstractmethod
    def lock(self, name: str, ttl_s: float = 5.0, wait_s: float = 5.0) -> AbstractAsyncContextManager[None]:
        """A mutual-exclusion lock shared by every process; raises LockLost after wait_s."""

    @abc.abstractmethod
    async def try_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Takes or renews a named lease (leader election); True while `owner` holds it."""

    # -- message bus -----------------------------------------------------------------
    @abc.abstractmethod
    async def publish(self, channel: str, message: Record) -> None: ...

    @abc.abstractmethod
    async def subscribe(self, *channels: str) -> BusSubscription: ...

    # -- session timeline --------------------------------------------------------------
    @abc.abstractmethod
    async def append_event(self, session_id: str, event: Record) -> int:
        """Appends to the session's timeline; returns its 1-based sequence number."""

    @abc.abstractmethod
    async def read_events(self, session_id: str, after: int = 0, limit: int = 1000) -> list[Record]:
        """Events with sequence > after, oldest first, each with its `seq`."""

    @abc.abstractmethod
    async def expire_events(self, session_id: str, ttl_s: float) -> None:
        """Forgets the session's timeline ttl_s from now (at once when ttl_s <= 0).

        A timeline is working state: once its session is over and what reads it has
        (the recording keeps its own copy), it would only grow the store. A later
        expiry replaces an earlier one; appends do not extend it.
        """

    # -- sessions (resume) ---------------------------------------------------------------
    @abc.abstractmethod
    async def put_session(self, session_id: str, record: Record, ttl_s: float) -> None: ...

    @abc.abstractmethod
    async def get_session(self, session_id: str) -> Record | None: ...

    @abc.abstractmethod
    async def delete_session(self, session_id: str) -> None: ...

    # -- queues (contact centre) -------------------------------------------------------
    @abc.abstractmethod
    async def enqueue(self, queue: str, item_id: str, record: Record, priority: int = 0) -> int:
        """Adds or re-prioritises an item; higher priority first, then first come.

        Returns its 1-based position.
        """

    @abc.abstractmethod
    async def dequeue(self, queue: str) -> Record | None:
        """Removes and returns the head, atomically: two callers never get one item."""

    @abc.abstractmethod
    async def queue_position(self, queue: str, item_id: str) -> int | None: ...

    @abc.abstractmethod
    async def remove_from_queue(self, queue: str, item_id: str) -> bool: ...

    @abc.abstractmethod
    async def queue_items(self, queue: str) -> list[Record]:
        """In service order, each with its `item_id`, `priority` and `enqueued_at`."""

    # -- agents (contact centre) -------------------------------------------------------
    @abc.abstractmethod
    async def get_agent(self, agent_id: str) -> Record | None: ...

    @abc.abstractmethod
    async def list_agents(self) -> list[Record]: ...

    @abc.abstractmethod
    async def update_agent(self, agent_id: str, change: Callable[[Record | None], Record | None]) -> Record | None:
        """Same contract as update_room."""

    # -- documents (calls and other contact-centre records) -------------------------------
    @abc.abstractmethod
    async def get_doc(self, kind: str, key: str) -> Record | None: ...

    @abc.abstractmethod
    async def list_docs(self, kind: str) -> list[Record]: ...

    @abc.abstractmethod
    async def update_doc(self, kind: str, key: str, change: Callable[[Record | None], Record | None]) -> Record | None:
        """Same contract as update_room, for a document of `kind` (e.g. "call")."""
