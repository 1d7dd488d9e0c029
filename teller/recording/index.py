"""The search index of recorded sessions: one SQLite file per process, fed by one log.

The object store's manifests are the truth; this index is derived from them and can be
rebuilt. In a cluster every signalling process serves search from its own file, so no
process writes an index directly: every change is an op appended to one log in the
state store (key ``recording-index``), and each process tails that log into its file.
Applying an op twice, or replaying the log from its start, ends in the same rows.

SQLite calls block, so they all run on one worker thread that owns the connection;
the event loop only awaits them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import datetime
import functools
import json
import logging
import math
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BadRequest, Unavailable
from ..state import StateStore, StateUnavailable

log = logging.getLogger("teller.recording.index")

LOG_KEY = "recording-index"
STATUSES = ("recording", "finalizing", "ready", "failed", "deleted")
OPS = ("upsert", "hold", "evaluation", "deleted")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_FILTER_FLAGS = 8
MAX_TEXT = 200
SCHEMA_VERSION = 1

T = TypeVar("T")


class IndexClosed(Unavailable):
    code = "recording_index_closed"


@dataclass
class SessionEntry:
    """One recorded session as search shows it.

    retention_until is None while no retention is decided: such a session never
    expires, so a partial first upsert cannot make the sweeper delete a recording.
    """

    session_id: str
    room: str = ""
    started_at: float = 0.0
    ended_at: float | None = None
    duration_s: float = 0.0
    business: str | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    customer_id: str | None = None
    customer_name: str | None = None
    outcome: str | None = None
    flags: list[str] = field(default_factory=list)
    status: str = "recording"
    call_id: str | None = None
    node_id: str | None = None
    size_bytes: int = 0
    retention_until: float | None = None
    legal_hold: bool = False
    hold_reason: str | None = None
    composite: bool = False
    tracks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionEntry:
        """Checks every field's type; unknown fields are ignored (a newer producer)."""
        return cls(**_checked_fields(data, partial=False))


# Field name -> (type without "| None", whether None is allowed), from the annotations.
_FIELD_TYPES = {
    f.name: (str(f.type).removesuffix(" | None"), str(f.type).endswith(" | None"))
    for f in dataclasses.fields(SessionEntry)
}
_COLUMNS = tuple(_FIELD_TYPES)


def _bad_entry(name: str, why: str) -> BadRequest:
    return BadRequest(f"session entry field {name!r} {why}", code="invalid_entry", field=name)


def _check_value(name: str, base: str, optional: bool, value: Any) -> Any:
    if value is None:
        if optional:
            return None
        raise _bad_entry(name, "may not be null")
    if base == "str":
        if not isinstance(value, str):
            raise _bad_entry(name, "must be a string")
        if name == "status" and value not in STATUSES:
            raise _bad_entry(name, f"must be one of {', '.join(STATUSES)}")
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _bad_entry(name, "must be a finite number")
        return float(value)
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _bad_entry(name, "must be a non-negative integer")
        return value
    if base == "bool":
        if not isinstance(value, bool):
            raise _bad_entry(name, "must be true or false")
        return value
    if base == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise _bad_entry(name, "must be a list of non-empty strings")
        return list(dict.fromkeys(value))
    if not isinstance(value, dict):
        raise _bad_entry(name, "must be an object")
    return dict(value)


def _checked_fields(data: Mapping[str, Any], *, partial: bool) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise BadRequest("a session entry must be an object", code="invalid_entry")
    sid = data.get("session_id")
    if not isinstance(sid, str) or not sid:
        raise _bad_entry("session_id", "must be a non-empty string")
    out = {k: _check_value(k, *_FIELD_TYPES[k], v) for k, v in data.items() if k in _FIELD_TYPES}
    if not partial:
        return {**_fields(SessionEntry(session_id=sid)), **out}
    return out


def _fields(entry: SessionEntry) -> dict[str, Any]:
    """A field dict whose flags and extra may be changed without touching the entry
    (asdict's deep copy is most of an upsert's cost)."""
    out = {name: getattr(entry, name) for name in _COLUMNS}
    out["flags"] = list(entry.flags)
    out["extra"] = dict(entry.extra)
    return out


# -- queries -------------------------------------------------------------------------------


def encode_cursor(started_at: float, session_id: str) -> str:
    raw = json.dumps([started_at, session_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (started_at, session_id) of the last row of the previous page."""
    bad = BadRequest("the cursor is not one this server handed out", code="invalid_cursor")
    if not isinstance(cursor, str) or not 0 < len(cursor) <= 1024:
        raise bad
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise bad from exc
    if (
        not isinstance(value, list)
        or len(value) != 2
        or isinstance(value[0], bool)
        or not isinstance(value[0], int | float)
        or not math.isfinite(value[0])
        or not isinstance(value[1], str)
    ):
        raise bad
    return float(value[0]), value[1]


def _bad_query(name: str, why: str) -> BadRequest:
    return BadRequest(f"search parameter {name!r} {why}", code="invalid_query", field=name)


def _parse_time(name: str, text: str) -> float:
    """Epoch seconds or ISO-8601; an ISO time without a zone is UTC."""
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise _bad_query(name, "must be ISO-8601 or epoch seconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.timestamp()
    if not math.isfinite(value):
        raise _bad_query(name, "must be ISO-8601 or epoch seconds")
    return value


def _parse_count(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _bad_query(name, "must be an integer") from None
    if not low <= value <= high:
        raise _bad_query(name, f"must be between {low} and {high}")
    return value


_PARAMS = (
    "time_from", "time_to", "agent", "customer", "business", "outcome", "min_duration_s",
    "max_duration_s", "flags", "status", "legal_hold", "cursor", "limit",
)  # fmt: skip


@dataclass
class SearchQuery:
    """Filters ANDed together; newest first. time_from is inclusive, time_to exclusive.

    `customer` matches a customer id exactly or the start of a customer name, ignoring
    case; every flag in `flags` must be present.
    """

    time_from: float | None = None
    time_to: float | None = None
    agent: str | None = None
    customer: str | None = None
    business: str | None = None
    outcome: str | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    flags: list[str] = field(default_factory=list)
    status: str | None = None
    legal_hold: bool | None = None
    cursor: str | None = None
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise _bad_query("limit", f"must be between 1 and {MAX_LIMIT}")
        if len(self.flags) > MAX_FILTER_FLAGS:
            raise _bad_query("flags", f"may name at most {MAX_FILTER_FLAGS} flags")
        if self.status is not None and self.status not in STATUSES:
            raise _bad_query("status", f"must be one of {', '.join(STATUSES)}")
        if self.time_from is not None and self.time_to is not None and self.time_from > self.time_to:
            raise _bad_query("time_to", "must not be before time_from")
        if (
            self.min_duration_s is not None
            and self.max_duration_s is not None
            and self.min_duration_s > self.max_duration_s
        ):
            raise _bad_query("max_duration_s", "must not be below min_duration_s")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> SearchQuery:
        """Parses an HTTP query string. Empty values count as absent (HTML forms send
        them); an unknown name is an error, so a misspelt filter never silently widens
        a compliance search to everything."""
        for name in params:
            if name not in _PARAMS:
                raise _bad_query(name, "is not a search parameter")
        values: dict[str, str] = {}
        for name in _PARAMS:
            text = params.get(name)
            if text is None or not text.strip():
                continue
            if len(text) > (1024 if name == "cursor" else MAX_TEXT):
                raise _bad_query(name, "is too long")
            values[name] = text.strip()
        query: dict[str, Any] = {}
        for name in ("agent", "customer", "business", "outcome", "status"):
            if name in values:
                query[name] = values[name]
        for name in ("time_from", "time_to"):
            if name in values:
                query[name] = _parse_time(name, values[name])
        for name in ("min_duration_s", "max_duration_s"):
            if name in values:
                query[name] = float(_parse_count(name, values[name], 0, 10**9))
        if "limit" in values:
            query["limit"] = _parse_count("limit", values["limit"], 1, MAX_LIMIT)
        getall = getattr(params, "getall", None)
        raw_flags = getall("flags", []) if callable(getall) else [params.get("flags") or ""]
        flags = [f.strip() for text in raw_flags for f in text.split(",") if f.strip()]
        if any(len(f) > 64 for f in flags):
            raise _bad_query("flags", "names a flag that is too long")
        query["flags"] = list(dict.fromkeys(flags))
        if "legal_hold" in values:
            choice = values["legal_hold"].lower()
            if choice not in ("true", "false", "1", "0"):
                raise _bad_query("legal_hold", "must be true or false")
            query["legal_hold"] = choice in ("true", "1")
        if "cursor" in values:
            decode_cursor(values["cursor"])
            query["cursor"] = values["cursor"]
        return cls(**query)


@dataclass
class SearchPage:
    items: list[SessionEntry]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"items": [e.to_json() for e in self.items], "next_cursor": self.next_cursor}


# -- the SQLite file ---------------------------------------------------------------------------

# The equality filters' indexes end in (started_at, session_id), the page order, so
# they read rows already in order and stop after one page. The range filters' indexes
# (customer name, duration) cannot; _rare_filters decides when those are worth using.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL UNIQUE,
    room TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    duration_s REAL NOT NULL,
    business TEXT,
    agent_id TEXT,
    agent_name TEXT,
    customer_id TEXT,
    customer_name TEXT,
    outcome TEXT,
    flags TEXT NOT NULL,
    status TEXT NOT NULL,
    call_id TEXT,
    node_id TEXT,
    size_bytes INTEGER NOT NULL,
    retention_until REAL,
    legal_hold INTEGER NOT NULL,
    hold_reason TEXT,
    composite INTEGER NOT NULL,
    tracks INTEGER NOT NULL,
    extra TEXT NOT NULL,
    customer_key TEXT
);
CREATE INDEX IF NOT EXISTS sessions_time ON sessions (started_at, session_id);
CREATE INDEX IF NOT EXISTS sessions_agent ON sessions (agent_id, started_at, session_id);
CREATE INDEX IF NOT EXISTS sessions_customer ON sessions (customer_id, started_at, session_id);
CREATE INDEX IF NOT EXISTS sessions_customer_name ON sessions (customer_key);
CREATE INDEX IF NOT EXISTS sessions_business ON sessions (business, started_at, session_id);
CREATE INDEX IF NOT EXISTS sessions_outcome ON sessions (outcome, started_at, session_id);
CREATE INDEX IF NOT EXISTS sessions_status ON sessions (status, started_at, session_id);
CREATE INDEX IF NOT EXISTS sessions_duration ON sessions (duration_s);
CREATE INDEX IF NOT EXISTS sessions_held ON sessions (started_at, session_id) WHERE legal_hold = 1;
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (retention_until)
    WHERE legal_hold = 0 AND status != 'deleted';
CREATE TABLE IF NOT EXISTS session_flags (
    flag TEXT NOT NULL,
    started_at REAL NOT NULL,
    session_id TEXT NOT NULL,
    PRIMARY KEY (flag, started_at, session_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evaluations (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    at REAL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluations_session ON evaluations (session_id, at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_SELECT = ", ".join(f"s.{c}" for c in _COLUMNS)
_INSERT = (
    f"INSERT INTO sessions ({', '.join(_COLUMNS)}, customer_key) VALUES ({', '.join('?' * (len(_COLUMNS) + 1))}) "
    f"ON CONFLICT (session_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*_COLUMNS[1:], "customer_key"))
)
# Re-analyse once the table has grown this much since the last ANALYZE: the planner
# picks between the time index and a filter's index from these statistics.
_ANALYZE_GROWTH = 0.5
_ANALYZE_MIN_ROWS = 2000


def _customer_key(name: str | None) -> str | None:
    return None if name is None else name.casefold()


def _row_values(entry: SessionEntry) -> tuple[Any, ...]:
    values: list[Any] = []
    for name in _COLUMNS:
        value = getattr(entry, name)
        if name in ("flags", "extra"):
            value = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, bool):
            value = int(value)
        values.append(value)
    return (*values, _customer_key(entry.customer_name))


def _entry(row: tuple[Any, ...]) -> SessionEntry:
    data = dict(zip(_COLUMNS, row, strict=True))
    data["flags"] = json.loads(data["flags"])
    data["extra"] = json.loads(data["extra"])
    for name in ("legal_hold", "composite"):
        data[name] = bool(data[name])
    return SessionEntry(**data)


def _customer_terms(q: SearchQuery, indexed: bool) -> tuple[str, list[Any]]:
    # A unary + keeps SQLite off a column's index: then rows are read in page order.
    plus = "" if indexed else "+"
    prefix = (q.customer or "").casefold()
    term = f"({plus}s.customer_id = ? OR ({plus}s.customer_key >= ? AND {plus}s.customer_key < ?))"
    return term, [q.customer, prefix, prefix + "\U0010ffff"]


def _duration_terms(q: SearchQuery, indexed: bool) -> tuple[str, list[Any]]:
    plus = "" if indexed else "+"
    low = q.min_duration_s if q.min_duration_s is not None else -math.inf
    high = q.max_duration_s if q.max_duration_s is not None else math.inf
    return f"{plus}s.duration_s >= ? AND {plus}s.duration_s <= ?", [low, high]


def _rare_filters(db: sqlite3.Connection, q: SearchQuery) -> frozenset[str]:
    """The range filters (customer, duration) that match few enough rows to read them
    through their own index and sort them.

    SQLite cannot estimate a range's size without STAT4, and the two plans differ
    by orders of magnitude: a bare surname matches one session in fifteen (sort a
    year of them: seconds), while "over 90 minutes" matches almost none (scan a year
    in page order for them: seconds). So count, up to a bound, through the index.
    Below the bound sorting costs less than the page-order scan would.
    """
    probes = []
    if q.customer is not None:
        probes.append(("customer", _customer_terms(q, True)))
    if q.min_duration_s is not None or q.max_duration_s is not None:
        probes.append(("duration", _duration_terms(q, True)))
    if not probes:
        return frozenset()
    rows = db.execute("SELECT max(id) FROM sessions").fetchone()[0] or 0
    bound = max(1000, math.isqrt(50 * rows))
    rare = set()
    for name, (term, params) in probes:
        sql = f"SELECT count(*) FROM (SELECT 1 FROM sessions AS s WHERE {term} LIMIT ?)"
        if db.execute(sql, [*params, bound]).fetchone()[0] < bound:
            rare.add(name)
    return frozenset(rare)


def _where(
    q: SearchQuery, after: tuple[float, str] | None, rare: frozenset[str] = frozenset()
) -> tuple[str, list[Any], str]:
    """FROM and WHERE for a query, its parameters, and the alias that carries the order.

    With a flag filter the rows are read from session_flags, which repeats started_at
    so a rare flag is scanned in page order rather than sorted.
    """
    terms: list[str] = []
    params: list[Any] = []
    order = "s"
    source = "sessions AS s"
    if q.flags:
        order = "f"
        source = "session_flags AS f JOIN sessions AS s ON s.session_id = f.session_id"
        terms.append("f.flag = ?")
        params.append(q.flags[0])
        for flag in q.flags[1:]:
            terms.append(
                "EXISTS (SELECT 1 FROM session_flags AS g WHERE g.flag = ? "
                "AND g.started_at = s.started_at AND g.session_id = s.session_id)"
            )
            params.append(flag)
    # With a rare filter its index leads; the time terms would tempt SQLite back
    # onto the time index, scanning in page order for the few matches.
    started = f"+{order}.started_at" if rare else f"{order}.started_at"
    if q.time_from is not None:
        terms.append(f"{started} >= ?")
        params.append(q.time_from)
    if q.time_to is not None:
        terms.append(f"{started} < ?")
        params.append(q.time_to)
    equal = {"agent_id": q.agent, "business": q.business, "outcome": q.outcome, "status": q.status}
    for column, value in equal.items():
        if value is not None:
            terms.append(f"s.{column} = ?")
            params.append(value)
    if q.customer is not None:
        term, values = _customer_terms(q, "customer" in rare)
        terms.append(term)
        params += values
    if q.min_duration_s is not None or q.max_duration_s is not None:
        term, values = _duration_terms(q, "duration" in rare)
        terms.append(term)
        params += values
    if q.legal_hold is not None:
        terms.append("s.legal_hold = 1" if q.legal_hold else "s.legal_hold = 0")
    if after is not None:
        terms.append(f"({started}, {order}.session_id) < (?, ?)")
        params += [after[0], after[1]]
    where = " WHERE " + " AND ".join(terms) if terms else ""
    return source + where, params, order


def _search_sql(q: SearchQuery, after: tuple[float, str] | None, rare: frozenset[str]) -> tuple[str, list[Any]]:
    source, params, order = _where(q, after, rare)
    sql = f"SELECT {_SELECT} FROM {source} ORDER BY {order}.started_at DESC, {order}.session_id DESC LIMIT ?"
    # One row more than the page tells whether there is a next page.
    return sql, [*params, q.limit + 1]


class RecordingIndex:
    """The SQLite file. Safe to call from any task: calls queue for its one thread.

    Upserts never release a legal hold and never revive a deleted session; only the
    hold and deleted ops do those, so a stale full entry replayed late loses neither.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recording-index")
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self._analyzed_rows = 0

    # -- the worker thread -------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise IndexClosed("the recording index is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._in_thread, fn, *args))

    def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        if self._db is None:
            self._db = self._open()
        return fn(self._db, *args)

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("PRAGMA cache_size = -65536")
        db.execute("PRAGMA temp_store = MEMORY")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            # Derived data: rebuild from the log rather than migrate.
            log.warning("the recording index has schema %s, not %s; rebuilding it", version, SCHEMA_VERSION)
            for table in ("sessions", "session_flags", "evaluations", "meta"):
                db.execute(f"DROP TABLE IF EXISTS {table}")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._analyzed_rows = self._stat_rows(db)
        return db

    @staticmethod
    def _stat_rows(db: sqlite3.Connection) -> int:
        try:
            row = db.execute("SELECT stat FROM sqlite_stat1 WHERE tbl = 'sessions' LIMIT 1").fetchone()
        except sqlite3.OperationalError:
            return 0
        return int(row[0].split()[0]) if row else 0

    def _maybe_analyze(self, db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT max(id) FROM sessions").fetchone()[0] or 0
        if rows >= _ANALYZE_MIN_ROWS and rows > self._analyzed_rows * (1 + _ANALYZE_GROWTH):
            db.execute("PRAGMA analysis_limit = 2000")
            db.execute("ANALYZE")
            self._analyzed_rows = rows

    # -- writes -------------------------------------------------------------------------
    async def apply(self, op: Mapping[str, Any]) -> None:
        await self.apply_many([op])

    async def apply_many(self, ops: Iterable[Mapping[str, Any]], *, meta: Mapping[str, str] | None = None) -> int:
        """Applies ops, and sets `meta`, in one transaction; returns how many applied.

        A malformed or unknown op is logged and skipped (it would fail on every replay);
        a SQLite error rolls the whole batch back and raises, so the caller retries it.
        """
        return await self._call(self._apply_many, list(ops), dict(meta or {}))

    def _apply_many(self, db: sqlite3.Connection, ops: list[Mapping[str, Any]], meta: dict[str, str]) -> int:
        applied = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                try:
                    applied += self._apply_one(db, op)
                except BadRequest as exc:
                    seq = op.get("seq") if isinstance(op, Mapping) else None
                    log.warning("skipping a bad recording-index op (seq %s): %s", seq, exc.message)
            for key, value in meta.items():
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._maybe_analyze(db)
        return applied

    def _apply_one(self, db: sqlite3.Connection, op: Mapping[str, Any]) -> int:
        checked = check_op(op, known_only=False)
        kind = checked["op"]
        if kind == "upsert":
            self._upsert(db, checked["entry"], checked.get("add_flags", []))
        elif kind == "hold":
            self._hold(db, checked)
        elif kind == "evaluation":
            evaluation = checked["evaluation"]
            db.execute(
                "INSERT OR REPLACE INTO evaluations (id, session_id, at, body) VALUES (?, ?, ?, ?)",
                (evaluation["id"], checked["session_id"], evaluation.get("at"), json.dumps(evaluation)),
            )
        elif kind == "deleted":
            current = self._get(db, checked["session_id"])
            base = current or SessionEntry(session_id=checked["session_id"])
            extra = {**base.extra, "deleted_at": checked.get("at")}
            self._write(db, dataclasses.replace(base, status="deleted", extra=extra), current)
        else:
            log.warning("ignoring an unknown recording-index op %r", kind)
            return 0
        return 1

    def _upsert(self, db: sqlite3.Connection, change: dict[str, Any], add_flags: list[str]) -> None:
        current = self._get(db, change["session_id"])
        merged = _fields(current or SessionEntry(session_id=change["session_id"]))
        for name, value in change.items():
            if name == "extra":
                merged["extra"] = {**merged["extra"], **value}
            elif name == "legal_hold":
                merged["legal_hold"] = merged["legal_hold"] or value
            elif name == "hold_reason":
                if not (current and current.legal_hold):
                    merged["hold_reason"] = value
            elif name == "status":
                if merged["status"] != "deleted":
                    merged["status"] = value
            else:
                merged[name] = value
        merged["flags"] = list(dict.fromkeys([*merged["flags"], *add_flags]))
        self._write(db, SessionEntry(**merged), current)

    def _hold(self, db: sqlite3.Connection, op: dict[str, Any]) -> None:
        current = self._get(db, op["session_id"])
        if current is None and not op["hold"]:
            return
        # A hold for a session not indexed yet keeps a stub row, so the upsert that
        # arrives later merges into it and the hold is never lost.
        base = current or SessionEntry(session_id=op["session_id"])
        record = {"hold": op["hold"], "reason": op.get("reason"), "by": op.get("by"), "at": op.get("at")}
        updated = dataclasses.replace(
            base,
            legal_hold=op["hold"],
            hold_reason=op.get("reason") if op["hold"] else None,
            extra={**base.extra, "hold": record},
        )
        self._write(db, updated, current)

    def _write(self, db: sqlite3.Connection, entry: SessionEntry, current: SessionEntry | None) -> None:
        if entry == current:
            return
        db.execute(_INSERT, _row_values(entry))
        old = set(current.flags) if current else set()
        new = set(entry.flags)
        if current is not None and current.started_at != entry.started_at:
            old_keys, new_keys = old, new
        else:
            old_keys, new_keys = old - new, new - old
        if current is not None:
            db.executemany(
                "DELETE FROM session_flags WHERE flag = ? AND started_at = ? AND session_id = ?",
                [(f, current.started_at, entry.session_id) for f in old_keys],
            )
        db.executemany(
            "INSERT OR IGNORE INTO session_flags (flag, started_at, session_id) VALUES (?, ?, ?)",
            [(f, entry.started_at, entry.session_id) for f in new_keys],
        )

    async def meta_set(self, key: str, value: str) -> None:
        await self._call(self._meta_set, key, value)

    @staticmethod
    def _meta_set(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    async def optimize(self) -> None:
        """Refreshes the planner's statistics now (the index also does it as it grows)."""
        await self._call(lambda db: db.execute("ANALYZE"))

    # -- reads --------------------------------------------------------------------------
    @staticmethod
    def _get(db: sqlite3.Connection, session_id: str) -> SessionEntry | None:
        row = db.execute(f"SELECT {_SELECT} FROM sessions AS s WHERE s.session_id = ?", (session_id,)).fetchone()
        return None if row is None else _entry(row)

    async def get(self, session_id: str) -> SessionEntry | None:
        return await self._call(self._get, session_id)

    async def meta_get(self, key: str) -> str | None:
        return await self._call(self._meta_get, key)

    @staticmethod
    def _meta_get(db: sqlite3.Connection, key: str) -> str | None:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    async def search(self, q: SearchQuery) -> SearchPage:
        after = decode_cursor(q.cursor) if q.cursor is not None else None
        return await self._call(self._search, q, after)

    @staticmethod
    def _search(db: sqlite3.Connection, q: SearchQuery, after: tuple[float, str] | None) -> SearchPage:
        sql, params = _search_sql(q, after, _rare_filters(db, q))
        rows = db.execute(sql, params).fetchall()
        items = [_entry(row) for row in rows[: q.limit]]
        more = len(rows) > q.limit
        return SearchPage(items, encode_cursor(items[-1].started_at, items[-1].session_id) if more else None)

    async def explain(self, q: SearchQuery) -> list[str]:
        """SQLite's plan for a search: tests and benchmarks check no filter scans the table."""
        after = decode_cursor(q.cursor) if q.cursor is not None else None

        def plan(db: sqlite3.Connection) -> list[str]:
            sql, params = _search_sql(q, after, _rare_filters(db, q))
            return [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]

        return await self._call(plan)

    async def count(self, q: SearchQuery) -> int:
        """Every row the query matches, ignoring its cursor and limit: reads them all."""
        return await self._call(self._count, q)

    @staticmethod
    def _count(db: sqlite3.Connection, q: SearchQuery) -> int:
        source, params, _ = _where(q, None, _rare_filters(db, q))
        return int(db.execute(f"SELECT count(*) FROM {source}", params).fetchone()[0])

    async def expired(self, now: float, limit: int = 100) -> list[SessionEntry]:
        """Sessions past retention that may be deleted: not held, not deleted yet."""
        return await self._call(self._expired, now, limit)

    @staticmethod
    def _expired(db: sqlite3.Connection, now: float, limit: int) -> list[SessionEntry]:
        rows = db.execute(
            f"SELECT {_SELECT} FROM sessions AS s WHERE legal_hold = 0 AND status != 'deleted' "
            "AND retention_until < ? ORDER BY retention_until LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_entry(row) for row in rows]

    async def evaluations(self, session_id: str) -> list[dict[str, Any]]:
        return await self._call(self._evaluations, session_id)

    @staticmethod
    def _evaluations(db: sqlite3.Connection, session_id: str) -> list[dict[str, Any]]:
        rows = db.execute(
            "SELECT body FROM evaluations WHERE session_id = ? ORDER BY at, id", (session_id,)
        ).fetchall()
        return [json.loads(row[0]) for row in rows]

    async def sessions_for_spot_check(self, week_start: float, week_end: float) -> dict[str, list[str]]:
        """Ready sessions started in [week_start, week_end), by agent, oldest first."""
        return await self._call(self._spot_check, week_start, week_end)

    @staticmethod
    def _spot_check(db: sqlite3.Connection, week_start: float, week_end: float) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        rows = db.execute(
            "SELECT agent_id, session_id FROM sessions WHERE started_at >= ? AND started_at < ? "
            "AND status = 'ready' AND agent_id IS NOT NULL ORDER BY started_at, session_id",
            (week_start, week_end),
        )
        for agent_id, session_id in rows:
            out.setdefault(agent_id, []).append(session_id)
        return out

    async def close(self) -> None:
        if self._closed:
            return
        try:
            await self._call(self._close)
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)

    def _close(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA optimize")
        db.close()
        self._db = None


# -- ops and the log ----------------------------------------------------------------------------


def _bad_op(why: str, **details: Any) -> BadRequest:
    return BadRequest(f"recording-index op: {why}", code="invalid_op", **details)


def check_op(op: Mapping[str, Any], *, known_only: bool = True) -> dict[str, Any]:
    """The op with its fields checked; raises BadRequest (invalid_op, invalid_entry).

    Publishers check with known_only, so nothing malformed enters the log; the index
    lets unknown kinds through to ignore them (a newer process may write them).
    """
    if not isinstance(op, Mapping):
        raise _bad_op("an op must be an object")
    kind = op.get("op")
    if kind not in OPS:
        if known_only or not isinstance(kind, str):
            raise _bad_op(f"unknown op {kind!r}", field="op")
        return dict(op)
    out = dict(op)
    if kind == "upsert":
        out["entry"] = _checked_fields(op.get("entry"), partial=True)  # type: ignore[arg-type]
        if "add_flags" in op:
            out["add_flags"] = _check_value("add_flags", "list[str]", False, op["add_flags"])
        return out
    if not isinstance(op.get("session_id"), str) or not op["session_id"]:
        raise _bad_op("session_id must be a non-empty string", field="session_id")
    if kind == "hold" and not isinstance(op.get("hold"), bool):
        raise _bad_op("hold must be true or false", field="hold")
    if kind == "evaluation":
        evaluation = op.get("evaluation")
        if not isinstance(evaluation, Mapping) or not isinstance(evaluation.get("id"), str) or not evaluation["id"]:
            raise _bad_op("evaluation must be an object with a string id", field="evaluation")
        at = evaluation.get("at")
        if at is not None and (isinstance(at, bool) or not isinstance(at, int | float)):
            raise _bad_op("evaluation.at must be a number", field="evaluation.at")
        out["evaluation"] = dict(evaluation)
    return out


async def publish_op(store: StateStore, op: dict[str, Any]) -> int:
    """Appends a checked op to the log every process's index tails; returns its seq.

    Each op gets an op_id: a feeder compares the one at its cursor with the last it
    applied, so a log that was wiped and refilled (a Redis that lost its data) is
    replayed rather than resumed at a position that now holds other ops.
    """
    check_op(op)
    return await store.append_event(LOG_KEY, {**op, "op_id": uuid.uuid4().hex})


class IndexFeeder:
    """Tails the log into one index, in the background and on demand (sync()).

    With persist_cursor the position is stored in the index, in the same transaction
    as the ops it covers, so a restart resumes where it stopped; without it (the memory
    backend, whose log starts empty in every process) it starts at 0. If the log is
    shorter than the cursor, or holds another op there, the log was reset and the
    feeder replays it from 0.
    """

    def __init__(
        self,
        store: StateStore,
        index: RecordingIndex,
        *,
        persist_cursor: bool,
        batch: int = 500,
        poll_s: float = 0.2,
        check_every_s: float = 5.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._store = store
        self._index = index
        self._persist = persist_cursor
        self._batch = batch
        self._poll_s = poll_s
        self._check_every_s = check_every_s
        self._max_backoff_s = max_backoff_s
        self._cursor = 0
        self._last_op_id: str | None = None
        self._loaded = False
        self._checked_at = -math.inf
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def cursor(self) -> int:
        """The seq of the last op applied."""
        return self._cursor

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="recording-index-feeder")

    async def close(self) -> None:
        """Stops the background task. It also stops on the flag, not only on cancel:
        a store client may swallow a CancelledError that lands inside its call."""
        task, self._task = self._task, None
        self._stopping.set()
        if task is not None:
            task.cancel()
            await asyncio.wait({task})

    async def sync(self) -> int:
        """Applies every op up to the current end of the log; returns how many.

        Raises StateUnavailable when the log cannot be read.
        """
        async with self._lock:
            await self._load()
            return await self._drain()

    async def _run(self) -> None:
        delay = self._poll_s
        unavailable = False
        while not self._stopping.is_set():
            try:
                async with self._lock:
                    await self._load()
                    if time.monotonic() - self._checked_at >= self._check_every_s:
                        await self._check_log()
                    await self._drain()
                if unavailable:
                    log.info("the recording-index log is readable again")
                unavailable = False
                delay = self._poll_s
            except StateUnavailable as exc:
                if not unavailable:
                    log.warning("cannot read the recording-index log (%s); retrying", exc.message)
                unavailable = True
                delay = min(max(delay * 2, self._poll_s), self._max_backoff_s)
            except IndexClosed:
                return
            except Exception:  # the feeder outlives every failure
                log.exception("feeding the recording index failed; retrying")
                delay = min(max(delay * 2, self._poll_s), self._max_backoff_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _load(self) -> None:
        if self._loaded:
            return
        if self._persist:
            self._cursor = int(await self._index.meta_get("feeder.cursor") or 0)
            self._last_op_id = await self._index.meta_get("feeder.last_op_id") or None
            await self._check_log()
        self._loaded = True

    async def _check_log(self) -> None:
        self._checked_at = time.monotonic()
        if self._cursor == 0:
            return
        events = await self._store.read_events(LOG_KEY, after=self._cursor - 1, limit=1)
        if events and (self._last_op_id is None or events[0].get("op_id") == self._last_op_id):
            return
        log.warning("the recording-index log was reset (cursor %d is not in it); replaying it from 0", self._cursor)
        self._cursor = 0
        self._last_op_id = None

    async def _drain(self) -> int:
        total = 0
        while True:
            events = await self._store.read_events(LOG_KEY, after=self._cursor, limit=self._batch)
            if not events:
                return total
            seq = int(events[-1]["seq"])
            op_id = events[-1].get("op_id")
            meta = {"feeder.cursor": str(seq), "feeder.last_op_id": str(op_id or "")} if self._persist else None
            await self._index.apply_many(events, meta=meta)
            self._cursor = seq
            self._last_op_id = op_id if isinstance(op_id, str) else None
            total += len(events)
            if len(events) < self._batch:
                return total
