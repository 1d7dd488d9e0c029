"""The REST side of identity checks: what the desk asks for, and the gate on confirmations.

Starting a challenge and capturing a frame need the customer's video, so they go to
the node that holds the call's room: directly when that is this process (embedded),
else as a command over the bus. Comparison and override need no media and run here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from ..cluster.ask import ask_node, tell_node
from ..config import Config
from ..errors import BadRequest, Conflict, Forbidden, NotFound, TellerError, Unavailable
from ..recording.objects import ObjectNotFound, ObjectStore
from ..recording.service import publish_session_event
from ..signaling.tokens import ANY_ROOM
from ..state import Record, StateStore, StateUnavailable
from . import status as st
from .compare import Comparison, FaceComparer
from .node import IdentityNode, LivenessUnavailable, check_available, evidence_key

if TYPE_CHECKING:
    from ..recording.audit import AuditLog
    from ..signaling.contact.routing import Router
    from ..signaling.tokens import AccessToken

log = logging.getLogger("teller.identity")

COMMAND_OP = "identity"
IDENTITY_STEP = "identity_check"
MAX_REASON = 500
ASK_TIMEOUT_S = 10.0
AGENT_ROLES = ("agent", "reviewer")
SUPERVISOR_ROLES = ("supervisor", "service")


class IdentityRequired(Conflict):
    code = "identity_required"


class NodeTimeout(Unavailable):
    code = "node_timeout"


class IdentityService:
    def __init__(self, config: Config, store: StateStore, secret: str, router: Router, comparer: FaceComparer,
                 objects: ObjectStore | None = None, audit: AuditLog | None = None, local: IdentityNode | None = None) -> None:
        self.config = config
        self.settings = config.identity
        self.store = store
        self.secret = secret
        self.router = router
        self.comparer = comparer
        self.objects = objects
        self.audit = audit
        self.local = local
        self.enabled = "liveness" in config.stages.enabled
        self.available = self.enabled and _mediapipe_installed()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- who may -------------------------------------------------------------------------------

    async def own_call(self, token: AccessToken, call_id: str) -> Record:
        """The call, if this token is an agent in it or a supervisor."""
        call = await self.router.call(call_id)
        if token.role in SUPERVISOR_ROLES and token.room == ANY_ROOM:
            return call
        if token.role in AGENT_ROLES and token.subject in (*call["parties"], call.get("transferred_from")):
            return call
        raise Forbidden("identity checks are for the agents in the call", code="call_forbidden")

    def required(self, call: Record) -> bool:
        business = self.router.catalogue.get(call["business"]) if call.get("business") else None
        return business is not None and IDENTITY_STEP in business.steps

    # -- what the desk asks for -------------------------------------------------------------------

    async def status(self, token: AccessToken, call_id: str) -> dict[str, Any]:
        call = await self.own_call(token, call_id)
        return await self._shown(call)

    async def _shown(self, call: Record) -> dict[str, Any]:
        doc = await self.store.get_doc(st.IDENTITY, call["call_id"]) or st.blank(call["call_id"], call["room"])
        return st.shown(doc, self.secret, self.required(call), self.available)

    async def start_liveness(self, token: AccessToken, call_id: str) -> dict[str, Any]:
        call = await self._connected(token, call_id)
        if not self.enabled:
            raise LivenessUnavailable('the "liveness" stage is not enabled on this server')
        check_available()
        await self._on_node(call, {"action": "start", "by": token.subject, "by_name": token.name})
        return await self._shown(call)

    async def capture(self, token: AccessToken, call_id: str, body: dict[str, Any]) -> dict[str, Any]:
        kind = body.get("kind", "id_document")
        if kind not in st.EVIDENCE_KINDS:
            raise BadRequest(f"kind is one of {', '.join(st.EVIDENCE_KINDS)}", code="invalid_message", field="kind")
        call = await self._connected(token, call_id)
        if not self.enabled:
            raise LivenessUnavailable('the "liveness" stage is not enabled on this server')
        entry = await self._on_node(call, {"action": "capture", "kind": kind, "by": token.subject, "by_name": token.name})
        return entry

    async def evidence_jpeg(self, token: AccessToken, call_id: str, evidence_id: str) -> bytes:
        await self.own_call(token, call_id)
        if self.objects is None:
            raise NotFound("evidence is kept in the object store, which this process has not", code="evidence_not_found")
        try:
            return await self.objects.get_bytes(evidence_key(call_id, evidence_id))
        except ObjectNotFound:
            raise NotFound("no such evidence", code="evidence_not_found") from None

    async def compare(self, token: AccessToken, call_id: str) -> dict[str, Any]:
        call = await self.own_call(token, call_id)
        doc = await self.store.get_doc(st.IDENTITY, call_id) or st.blank(call_id, call["room"])
        evidence = doc.get("evidence") or {}
        missing = [k for k in st.EVIDENCE_KINDS if not evidence.get(k)]
        if missing:
            raise Conflict(f"capture the {' and the '.join(m.replace('_', ' ') for m in missing)} first",
                           code="evidence_missing", missing=missing)
        face = await self.evidence_jpeg(token, call_id, evidence["face"]["evidence_id"])
        id_image = await self.evidence_jpeg(token, call_id, evidence["id_document"]["evidence_id"])
        result: Comparison = await self.comparer.compare(face, id_image, session_id=str(call.get("room")), call_id=call_id)
        comparison = {**result.to_json(), "at": round(time.time(), 3), "by": token.subject,
                      "face": evidence["face"]["evidence_id"], "id_document": evidence["id_document"]["evidence_id"]}
        await self._change(call, lambda d: {**d, "comparison": comparison})
        await self._event(call, {"type": "face_compared", **comparison})
        return comparison

    async def override(self, token: AccessToken, call_id: str, body: dict[str, Any]) -> dict[str, Any]:
        reason = body.get("reason")
        if not isinstance(reason, str) or not 0 < len(reason.strip()) <= MAX_REASON:
            raise BadRequest(f"reason is 1-{MAX_REASON} characters", code="invalid_message", field="reason")
        call = await self._connected(token, call_id)
        reason = reason.strip()
        entry = {"by": token.subject, "by_name": token.name, "reason": reason, "at": round(time.time(), 3)}
        if self.audit is not None:  # refused, not done, when it cannot be made durable
            await self.audit.append("identity_override", subject=token.subject, role=token.role, name=token.name,
                                    target=call_id, details={"reason": reason, "room": call.get("room")})
        doc = await self._change(call, lambda d: {**d, "override": entry})
        await self._event(call, {"type": "identity_override", **entry})
        log.info("identity overridden", extra={"call_id": call_id, "by": token.subject})
        return st.shown(doc, self.secret, self.required(call), self.available)

    # -- the gate -------------------------------------------------------------------------------

    async def gate(self, call: Record) -> None:
        """Called by the router before a transaction confirmation of a business that needs identity."""
        doc = await self.store.get_doc(st.IDENTITY, call["call_id"])
        if not st.satisfied(doc, self.secret):
            raise IdentityRequired("identity must pass, or be overridden with a reason, before a confirmation",
                                   state=st.overall(doc, self.secret) if doc else "not_started")

    def on_call_event(self, kind: str, call: Record, extra: Record) -> None:
        """The call's document starts when it is answered, knowing whether identity is required."""
        if kind != "answered":
            return
        required = self.required(call)

        async def start() -> None:
            with contextlib.suppress(StateUnavailable):
                await self.store.update_doc(st.IDENTITY, call["call_id"], lambda d: {
                    **(d or st.blank(call["call_id"], call["room"])), "required": required})

        self._spawn(start())

    async def prune(self, call_ids: list[str]) -> None:
        for call_id in call_ids:
            await self.store.update_doc(st.IDENTITY, call_id, lambda _d: None)

    # -- helpers ------------------------------------------------------------------------------

    async def _connected(self, token: AccessToken, call_id: str) -> Record:
        call = await self.own_call(token, call_id)
        if call["state"] != "connected":
            raise Conflict("the call is not connected", code="not_in_call")
        return call

    async def _change(self, call: Record, change: Any) -> dict[str, Any]:
        required = self.required(call)
        doc = await self.store.update_doc(st.IDENTITY, call["call_id"], lambda d: change(
            {**(d or st.blank(call["call_id"], call["room"])), "required": required}))
        assert doc is not None
        self._spawn(self._push(call))
        return doc

    async def _push(self, call: Record) -> None:
        """The agents' desks see the change (through the node that holds the room)."""
        with contextlib.suppress(TellerError, StateUnavailable):
            await self._on_node(call, {"action": "push", "by": "", "by_name": ""}, wait=False)

    async def _event(self, call: Record, event: dict[str, Any]) -> None:
        event = {"ts": round(time.time(), 3), "call_id": call["call_id"], **event}
        with contextlib.suppress(StateUnavailable):
            await self.store.append_event(call["call_id"], event)
        await publish_session_event(self.store, call["room"], event)

    async def _on_node(self, call: Record, command: dict[str, Any], wait: bool = True) -> dict[str, Any]:
        """Here when this process holds the call's room, else on the node that does."""
        message = {**command, "call_id": call["call_id"]}
        if self.local is not None and self.local.serves(call["room"]):
            return await self.local.command({**message, "room": call["room"]})
        if not wait:
            await tell_node(self.store, call["room"], {"op": COMMAND_OP, **message})
            return {}
        return await ask_node(self.store, call["room"], {"op": COMMAND_OP, **message}, ASK_TIMEOUT_S, NodeTimeout)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.comparer.close()


def _mediapipe_installed() -> bool:
    try:
        check_available()
    except LivenessUnavailable:
        return False
    return True
