"""A question to the node that holds a room, and its answer, over the bus.

REST runs on any signalling process; work that needs a room's media (a snapshot, a
liveness challenge) runs on the node that holds the room. The asker publishes the
command on that node's channel with a reply channel of its own and waits; the node
runs the handler registered for the op (NodeAgent.handlers) and publishes the result,
or the error with its status and code, which the asker raises as it was.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import Conflict, TellerError
from ..state import StateStore
from .node_agent import node_channel


class NodeAnswerError(TellerError):
    """An error the node answered with, passed on as it was."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message, code=code)
        self.status = status  # type: ignore[misc]


async def ask_node(store: StateStore, room: str, command: dict[str, Any], timeout_s: float,
                   on_timeout: Callable[[str], TellerError]) -> dict[str, Any]:
    """The node's result for `command` (which carries its "op")."""
    record = await store.get_room(room)
    node_id = (record or {}).get("node_id")
    if not node_id:
        raise Conflict("the room is on no node now", code="room_not_local")
    reply = f"reply:{secrets.token_hex(8)}"
    subscription = await store.subscribe(reply)
    answer: dict[str, Any] | None = None
    try:
        await store.publish(node_channel(str(node_id)), {**command, "room": room, "reply": reply})
        try:
            async with asyncio.timeout(timeout_s):
                async for _channel, answer in subscription:
                    break
        except TimeoutError:
            raise on_timeout("the node holding the room did not answer in time") from None
    finally:
        await subscription.close()
    if answer is None:
        raise on_timeout("the node holding the room did not answer")
    if "error" in answer:
        error = answer["error"]
        raise NodeAnswerError(str(error.get("message", "")), int(error.get("status", 500)), str(error.get("code", "internal")))
    return dict(answer.get("result") or {})


async def tell_node(store: StateStore, room: str, command: dict[str, Any]) -> None:
    """A command that wants no answer; nothing happens when the room is on no node."""
    record = await store.get_room(room)
    node_id = (record or {}).get("node_id")
    if node_id:
        await store.publish(node_channel(str(node_id)), {**command, "room": room})


async def answer_node(store: StateStore, message: dict[str, Any], work: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """The node's side of ask_node: runs `work` and answers on the message's reply channel."""
    try:
        answer: dict[str, Any] = {"result": await work()}
    except TellerError as exc:
        answer = {"error": {"status": exc.status, **exc.to_json()}}
    reply = message.get("reply")
    if isinstance(reply, str):
        await store.publish(reply, answer)
