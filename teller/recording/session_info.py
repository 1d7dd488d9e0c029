"""Who a recorded session was with: the call a room serves, read from the state store."""

from __future__ import annotations

from typing import Any

from ..state import StateStore

ROOM_CALL = "room_call"
CALL_SESSION = "call_session"
CALL = "call"
# A field visit (teller/field/sessions.py); its room is "field-<field id>".
FIELD_SESSION = "field_session"


async def link_room(store: StateStore, room: str, call_id: str) -> None:
    """The contact centre names the call a room serves, so the recorder can find it."""
    await store.update_doc(ROOM_CALL, room, lambda _: {"call_id": call_id})


async def room_call_id(store: StateStore, room: str) -> str | None:
    """The call a room serves, if the contact centre linked one."""
    link = await store.get_doc(ROOM_CALL, room)
    return str(link["call_id"]) if link and link.get("call_id") else None


async def lookup_session(store: StateStore, room: str) -> dict[str, Any] | None:
    link = await store.get_doc(ROOM_CALL, room)
    if not link:
        return await _field_visit(store, room) if room.startswith("field-") else None
    call = await store.get_doc(CALL, str(link.get("call_id")))
    if call is None:
        return None
    customer = call.get("customer") or {}
    agent_id = call.get("agent_id")
    agent = await store.get_agent(agent_id) if agent_id else None
    wrap_ups = call.get("wrap_ups") or []
    return {
        "call_id": call.get("call_id"),
        "business": call.get("business"),
        "customer_id": customer.get("identity") or customer.get("id"),
        "customer_name": customer.get("name"),
        "agent_id": agent_id,
        "agent_name": (agent or {}).get("name"),
        "outcome": wrap_ups[-1]["code"] if wrap_ups else call.get("state"),
        "channel": call.get("channel"),
    }


async def _field_visit(store: StateStore, room: str) -> dict[str, Any] | None:
    """A field visit is indexed like a call: the officer in the agent's place."""
    visit = await store.get_doc(FIELD_SESSION, room.removeprefix("field-"))
    if visit is None:
        return None
    customer, officer, decision = visit.get("customer") or {}, visit.get("officer") or {}, visit.get("decision")
    return {
        "call_id": None, "business": "field_visit", "customer_id": customer.get("id") or None,
        "customer_name": customer.get("name"), "agent_id": officer.get("id"), "agent_name": officer.get("name"),
        "outcome": f"{decision['decision']}d" if decision else "visited", "channel": "field",
        "case_number": visit.get("case_number"),
    }


async def link_session(store: StateStore, call_id: str, session_id: str) -> None:
    """The recorder names the recorded session of a call, for outcomes that come later."""
    await store.update_doc(CALL_SESSION, call_id, lambda _: {"session_id": session_id})


async def record_outcome(store: StateStore, call_id: str, outcome: str) -> None:
    """A wrap-up code arrives after the call, often after the recording is finalised."""
    from .index import publish_op

    link = await store.get_doc(CALL_SESSION, call_id)
    if link and link.get("session_id"):
        await publish_op(store, {"op": "upsert", "entry": {"session_id": link["session_id"], "outcome": outcome}})
