"""JSON logs, one object a line, carrying the room, participant and session ids.

The ids live in context variables, so a log call deep inside a handler or a
peer-connection callback picks up the ids of the session it serves.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

room_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("room_id", default=None)
participant_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "participant_id", default=None
)
session_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)

_CONTEXT = {"room": room_id, "participant": participant_id, "session": session_id}
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@contextlib.contextmanager
def bind(**ids: str | None) -> Iterator[None]:
    """Set room/participant/session ids for the code inside the block."""
    tokens = [( _CONTEXT[k], _CONTEXT[k].set(v)) for k, v in ids.items() if k in _CONTEXT]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def set_ids(**ids: str | None) -> None:
    """Set ids for the rest of the current task (a task copies the context it was made in)."""
    for key, value in ids.items():
        _CONTEXT[key].set(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, var in _CONTEXT.items():
            value = getattr(record, key, None) or var.get()
            if value:
                out[key] = value
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in out and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{k}={v.get()}" for k, v in _CONTEXT.items() if v.get())
        base = super().format(record)
        return f"{base} [{ids}]" if ids else base


def configure(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiortc and aioice are chatty at INFO about every candidate pair.
    for name in ("aioice", "aiortc"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
