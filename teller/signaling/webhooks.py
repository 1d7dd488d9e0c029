"""Webhooks: events to a bank's systems, signed, retried, never in the caller's way.

Each URL has its own queue and sender, so a slow or failing endpoint delays only
its own deliveries. A delivery is a JSON POST signed with HMAC-SHA256 over
"<timestamp>.<body>" (header X-Teller-Signature: t=...,v1=...), retried with
exponential backoff up to `max_attempts`. Queues live in this process: events not
yet delivered when it stops are lost, and the count of those is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..config import ConfigError
from ..config.settings import WebhookSettings

log = logging.getLogger("teller.webhooks")

QUEUE_LIMIT = 10_000
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 60.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, tolerance_s: float = 300.0) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse old ones."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


@dataclass
class Delivery:
    event: str
    body: bytes
    delivery_id: str


class Webhooks:
    def __init__(self, settings: WebhookSettings) -> None:
        if settings.urls and len(settings.secret) < 16:
            raise ConfigError("webhooks.secret must be at least 16 characters when webhooks.urls are set")
        for url in settings.urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"webhooks.urls: {url!r} is not an http(s) URL")
        self.settings = settings
        self._queues = {url: asyncio.Queue[Delivery](QUEUE_LIMIT) for url in settings.urls}
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def send(self, event: str, data: dict[str, Any]) -> None:
        if not self._queues:
            return
        delivery_id = uuid.uuid4().hex
        body = json.dumps({"id": delivery_id, "event": event, "ts": round(time.time(), 3), "data": data}, separators=(",", ":"), default=str).encode()
        for url, queue in self._queues.items():
            if queue.full():
                self.dropped += 1
                log.warning("webhook queue full; dropping an event", extra={"url": url, "event": event})
                continue
            queue.put_nowait(Delivery(event, body, delivery_id))

    async def start(self) -> None:
        if not self._queues:
            return
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s))
        self._tasks = [asyncio.create_task(self._run(url, q), name=f"webhook:{url}") for url, q in self._queues.items()]

    async def _run(self, url: str, queue: asyncio.Queue[Delivery]) -> None:
        while True:
            delivery = await queue.get()
            await self._deliver(url, delivery)

    async def _deliver(self, url: str, delivery: Delivery) -> None:
        assert self._http is not None
        delay = BACKOFF_FIRST_S
        for attempt in range(1, self.settings.max_attempts + 1):
            headers = {
                "Content-Type": "application/json",
                "X-Teller-Event": delivery.event,
                "X-Teller-Delivery": delivery.delivery_id,
                "X-Teller-Attempt": str(attempt),
                "X-Teller-Signature": sign(self.settings.secret, int(time.time()), delivery.body),
            }
            try:
                async with self._http.post(url, data=delivery.body, headers=headers) as response:
                    if 200 <= response.status < 300:
                        self.delivered += 1
                        return
                    reason = f"status {response.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
            log.info("webhook delivery failed; retrying", extra={"url": url, "event": delivery.event, "attempt": attempt, "reason": reason})
            if attempt < self.settings.max_attempts:
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX_S, delay * 2)
        self.failed += 1
        log.warning("webhook given up", extra={"url": url, "event": delivery.event, "delivery": delivery.delivery_id})

    async def close(self) -> None:
        pending = sum(q.qsize() for q in self._queues.values())
        if pending:
            log.warning("webhook events not delivered at shutdown", extra={"count": pending})
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.close()
