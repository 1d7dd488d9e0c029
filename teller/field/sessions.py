"""Field sessions in the state store: who is on site, for which case, where, decided how.

One document per visit (kind `field_session`), shared by every process: the officer's
page or body camera starts it, the node where its room lives keeps the location and the
officer's link state up to date, the reviewer desk lists and decides it. The room is
`field-<field id>`, so a node can tell a field room from its name alone.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from ..errors import BadRequest, NotFound
from ..recording.session_info import FIELD_SESSION
from ..state import StateStore

ROOM_PREFIX = "field-"
FIELD_ID = re.compile(r"^FS_[0-9a-f]{8}$")
BUSINESS = "field_visit"
MAX_TEXT = 200
MAX_NOTE = 2000


def room_of(field_id: str) -> str:
    return ROOM_PREFIX + field_id


def field_id_of(room: str) -> str | None:
    """The visit a room serves, or None for any other room."""
    if room.startswith(ROOM_PREFIX) and FIELD_ID.match(room[len(ROOM_PREFIX):]):
        return room[len(ROOM_PREFIX):]
    return None


def new_field_id() -> str:
    return f"FS_{secrets.token_hex(4)}"


def text(body: dict[str, Any], key: str, *, required: bool, limit: int = MAX_TEXT) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        what = "is required: " if required else "is "
        raise BadRequest(f"{key} {what}text of 1-{limit} characters", code="invalid_message", field=key)
    return value.strip()


def new_record(field_id: str, officer: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    case_number = text(body, "case_number", required=True, limit=64)
    customer = {"name": text(body, "customer_name", required=True), "id": text(body, "customer_id", required=False, limit=64)}
    return {
        "field_id": field_id, "room": room_of(field_id), "session_id": None, "state": "live",
        "officer": officer, "customer": customer, "case_number": case_number,
        "note": text(body, "note", required=False, limit=MAX_NOTE),
        "started_at": round(time.time(), 3), "ended_at": None, "officer_participant": None,
        "officer_connected": False, "last_fix": None, "fixes": 0, "track": [], "snapshots": [], "decision": None,
    }


async def get(store: StateStore, field_id: str) -> dict[str, Any]:
    record = await store.get_doc(FIELD_SESSION, field_id) if FIELD_ID.match(field_id) else None
    if record is None:
        raise NotFound("no such field session", code="field_session_not_found")
    return record


def public(record: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    """What the desk shows; `detail` adds the GPS track and the snapshots."""
    end = record.get("ended_at") or time.time()
    out = {k: v for k, v in record.items() if k not in ("track", "snapshots")}
    out["duration_s"] = round(max(0.0, end - record["started_at"]), 1)
    out["snapshots"] = len(record.get("snapshots") or [])
    if detail:
        out["track"] = list(record.get("track") or [])
        out["snapshots"] = [
            {**s, "url": f"/v1/field/sessions/{record['field_id']}/snapshots/{s['snapshot_id']}"}
            for s in record.get("snapshots") or []
        ]
    return out


def add_fix(record: dict[str, Any] | None, fix: dict[str, Any], keep: int) -> dict[str, Any] | None:
    if record is None:
        return None
    track = list(record.get("track") or [])
    track.append(fix)
    del track[:-keep]
    return {**record, "track": track, "last_fix": fix, "fixes": int(record.get("fixes") or 0) + 1}
