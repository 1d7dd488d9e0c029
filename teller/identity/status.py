"""The identity check of one call as the state store keeps it, and what is shown of it.

One document per call (kind "identity"), written by the node that watches the
customer's video (face state, liveness, evidence) and by the REST side (comparison,
override). Every write is a change function, so the two never overwrite each other.

A passed liveness result carries a seal: an HMAC under the deployment secret over the
call, the room's session, the attempt and its steps. `satisfied` checks it, so a
result copied from another call (or edited in the store) does not unblock this one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

IDENTITY = "identity"
MAX_CUES = 50
EVIDENCE_KINDS = ("face", "id_document")
STATES = ("not_started", "checking", "passed", "failed", "overridden")


def blank(call_id: str, room: str) -> dict[str, Any]:
    return {
        "call_id": call_id, "room": room, "state": "not_started",
        "face": {"state": "unknown", "faces": 0, "since": None},
        "liveness": None, "evidence": {"face": None, "id_document": None},
        "comparison": None, "override": None, "cues": [],
    }


def seal(secret: str, call_id: str, session_id: str, liveness: dict[str, Any]) -> str:
    body = json.dumps({"call_id": call_id, "session_id": session_id, "attempt_id": liveness["attempt_id"],
                       "steps": liveness["steps"], "state": liveness["state"], "ended_at": liveness["ended_at"]},
                      sort_keys=True, separators=(",", ":"))
    return hmac.new(secret.encode(), b"teller liveness v1\n" + body.encode(), hashlib.sha256).hexdigest()


def passed(doc: dict[str, Any], secret: str) -> bool:
    liveness = doc.get("liveness") or {}
    if liveness.get("state") != "passed" or not isinstance(liveness.get("seal"), str):
        return False
    expected = seal(secret, str(doc.get("call_id")), str(liveness.get("session_id")), liveness)
    return hmac.compare_digest(expected, liveness["seal"])


def satisfied(doc: dict[str, Any] | None, secret: str) -> bool:
    """Whether a transaction may be confirmed: liveness passed (sealed) or an agent overrode."""
    if doc is None:
        return False
    return bool(doc.get("override")) or passed(doc, secret)


def overall(doc: dict[str, Any], secret: str) -> str:
    if doc.get("override"):
        return "overridden"
    liveness = doc.get("liveness") or {}
    state = liveness.get("state")
    if state == "passed":
        return "passed" if passed(doc, secret) else "failed"
    if state == "failed":
        return "failed"
    if state in ("positioning", "challenge"):
        return "checking"
    return "not_started"


def shown(doc: dict[str, Any], secret: str, required: bool, available: bool) -> dict[str, Any]:
    """The status the desk gets (the seal and the session stay in the store). `available`:
    whether the liveness stage runs, so a challenge and a capture can be asked for."""
    liveness = doc.get("liveness")
    if liveness is not None:
        liveness = {k: v for k, v in liveness.items() if k not in ("seal", "session_id")}
    return {**{k: v for k, v in doc.items() if k != "room"}, "liveness": liveness,
            "state": overall(doc, secret), "satisfied": satisfied(doc, secret), "required": required,
            "available": available}
