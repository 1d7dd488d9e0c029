"""A UDP relay that impairs what crosses it: loss, delay, jitter and a bandwidth cap.

Put in front of a TURN server, it degrades every packet of the clients that use it,
with no privileges and for any client (browser, SDK, CLI), which kernel tools such as
netem cannot offer without root. It behaves like a NAT: each client address gets its
own upstream socket, so the target sees one distinct source per client and answers
each on its own; a mapping idle for `idle_timeout_s` is closed.

Each direction ("up": client → target, "down": target → client) has its own
`Impairment`, counters and schedule, shared by all clients as one link is (one relay
per client gives clients different networks). A packet first meets loss, then the
rate cap (a FIFO serialising at `rate_kbps`, tail-dropping what would wait longer
than `queue_ms`), then delay plus a uniform jitter. Jitter is drawn per packet, so it
reorders packets, as netem does; without jitter the order is kept. Random draws come
from generators seeded per direction and purpose, so a seed replays the same losses
for the same packet sequence whatever the delays do.

Sockets are plain non-blocking ones read with `loop.add_reader`: everything runs in
the callbacks, a packet is never awaited, and a new client needs no coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import socket
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self

from ..errors import BadRequest
from .model import Impairment

log = logging.getLogger("teller.impair")

# IPv4 + UDP headers: what a real link carries besides the payload, and so counted
# by the rate cap (netem counts them too).
HEADER_BYTES = 28
READ_BATCH = 64
MAX_DATAGRAM = 65535
# Room for bursts while the event loop is busy elsewhere (the kernel caps it at
# net.core.rmem_max/wmem_max, no privilege needed): an overflow there is a loss the
# counters cannot see.
SOCKET_BUFFER = 1 << 20
# Timers may fire a little early or late; packets due within this are sent together.
SEND_AHEAD_S = 0.0005

Address = tuple[Any, ...]


@dataclass
class Counters:
    packets_in: int = 0
    bytes_in: int = 0
    delivered: int = 0
    bytes_delivered: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    # Send failures, packets for a mapping that expired meanwhile, clients over the limit.
    dropped_other: int = 0


class Direction:
    """One direction's impairment, schedule and counters."""

    def __init__(self, name: str, impairment: Impairment, seed: int | str | None, send: Callable[[bytes, Any], bool]) -> None:
        self.name = name
        self.impairment = impairment
        self.counters = Counters()
        self._send = send
        self._loss_random = random.Random(None if seed is None else f"{seed}/{name}/loss")
        self._jitter_random = random.Random(None if seed is None else f"{seed}/{name}/jitter")
        self._bad = False  # the Gilbert–Elliott state
        self._busy_until = 0.0  # when the capped link has sent everything queued
        self._heap: list[tuple[float, int, bytes, Any]] = []
        self._order = itertools.count()  # FIFO among packets due at the same instant
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def packet(self, data: bytes, destination: Any) -> None:
        assert self._loop is not None
        counters = self.counters
        counters.packets_in += 1
        counters.bytes_in += len(data)
        impairment = self.impairment
        if self._lost(impairment):
            counters.dropped_loss += 1
            return
        now = self._loop.time()
        due = now
        if impairment.rate_kbps > 0:
            backlog = max(0.0, self._busy_until - now)
            if backlog * 1000.0 > impairment.queue_ms:
                counters.dropped_queue += 1
                return
            due = max(now, self._busy_until) + (len(data) + HEADER_BYTES) * 8 / (impairment.rate_kbps * 1000.0)
            self._busy_until = due
        delay_ms = impairment.delay_ms
        if impairment.jitter_ms > 0:
            delay_ms = max(0.0, delay_ms + self._jitter_random.uniform(-impairment.jitter_ms, impairment.jitter_ms))
        due += delay_ms / 1000.0
        if due <= now and not self._heap:
            self._deliver(data, destination)
            return
        heapq.heappush(self._heap, (due, next(self._order), data, destination))
        if self._timer is None or due < self._timer_at:
            self._arm(due)

    def _lost(self, impairment: Impairment) -> bool:
        if impairment.loss <= 0.0:
            self._bad = False
            return False
        if impairment.loss >= 1.0:
            return True
        if not impairment.bursty:
            return self._loss_random.random() < impairment.loss
        to_bad, to_good = impairment.transitions
        if self._bad:
            self._bad = self._loss_random.random() >= to_good
        else:
            self._bad = self._loss_random.random() < to_bad
        return self._bad

    def _arm(self, due: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(due, self._fire)
        self._timer_at = due

    def _fire(self) -> None:
        assert self._loop is not None
        self._timer = None
        horizon = self._loop.time() + SEND_AHEAD_S
        heap = self._heap
        while heap and heap[0][0] <= horizon:
            _, _, data, destination = heapq.heappop(heap)
            self._deliver(data, destination)
        if heap:
            self._arm(heap[0][0])

    def _deliver(self, data: bytes, destination: Any) -> None:
        if self._send(data, destination):
            self.counters.delivered += 1
            self.counters.bytes_delivered += len(data)
        else:
            self.counters.dropped_other += 1

    def queue_delay_ms(self) -> float:
        if self._loop is None or self.impairment.rate_kbps <= 0:
            return 0.0
        return round(max(0.0, self._busy_until - self._loop.time()) * 1000.0, 1)

    def stats(self) -> dict[str, Any]:
        return {**asdict(self.counters), "in_flight": len(self._heap), "queue_delay_ms": self.queue_delay_ms()}

    def stop(self) -> None:
        """Packets still scheduled are lost, as on a link that goes down."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()


class _Mapping:
    """One client's upstream socket: its address as the target sees it."""

    def __init__(self, client: Address, sock: socket.socket, now: float) -> None:
        self.client = client
        self.sock = sock
        self.last_seen = now
        self.closed = False

    @property
    def upstream(self) -> Address:
        return self.sock.getsockname()


class ImpairRelay:
    """Relays UDP between clients on `listen` and the service at `target`, impaired.

    `listen` port 0 picks a free port (see `port` once started). `set()` changes take
    effect for the next packet; packets already scheduled keep their times.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        *,
        up: Impairment | None = None,
        down: Impairment | None = None,
        seed: int | str | None = None,
        idle_timeout_s: float = 60.0,
        max_clients: int = 1024,
    ) -> None:
        if idle_timeout_s <= 0:
            raise ValueError("idle_timeout_s must be positive")
        self.listen = listen
        self.target = target
        self.seed = seed
        self.idle_timeout_s = idle_timeout_s
        self.max_clients = max_clients
        self._up = Direction("up", up or Impairment(), seed, self._send_up)
        self._down = Direction("down", down or Impairment(), seed, self._send_down)
        self._mappings: dict[Address, _Mapping] = {}
        self._sock: socket.socket | None = None
        self._target_address: Address | None = None
        self._family = socket.AF_INET
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._warned_full = False

    # -- lifecycle

    async def start(self) -> Self:
        loop = self._loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(*self.target, type=socket.SOCK_DGRAM)
        self._family, _, _, _, self._target_address = infos[0]
        listen = await loop.getaddrinfo(*self.listen, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = listen[0]
        sock = _socket(family)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        for direction in (self._up, self._down):
            direction.bind(loop)
        loop.add_reader(sock, self._read_clients)
        self._sweeper = asyncio.create_task(self._sweep(), name="impair-sweeper")
        log.info("impairment relay started", extra={"listen": self.address, "target": _format(self.target), "seed": self.seed})
        return self

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for direction in (self._up, self._down):
            direction.stop()
        for mapping in list(self._mappings.values()):
            self._drop_mapping(mapping)
        if self._sock is not None:
            assert self._loop is not None
            self._loop.remove_reader(self._sock)
            self._sock.close()
            self._sock = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- settings and state

    @property
    def port(self) -> int:
        assert self._sock is not None, "start() first"
        return int(self._sock.getsockname()[1])

    @property
    def address(self) -> str:
        """host:port clients send to."""
        assert self._sock is not None, "start() first"
        return _format(self._sock.getsockname())

    @property
    def up(self) -> Impairment:
        return self._up.impairment

    @property
    def down(self) -> Impairment:
        return self._down.impairment

    def set(self, up: Impairment | Mapping[str, Any] | None = None, down: Impairment | Mapping[str, Any] | None = None) -> None:
        """Changes one or both directions; a mapping is a partial update merged onto the
        current settings. Both are validated before either is applied."""
        new: dict[str, Impairment] = {}
        for direction, change in ((self._up, up), (self._down, down)):
            if change is None:
                continue
            if isinstance(change, Impairment):
                new[direction.name] = change
                continue
            try:
                new[direction.name] = direction.impairment.merged(dict(change) if isinstance(change, Mapping) else change)
            except BadRequest as exc:
                raise BadRequest(f"{direction.name}: {exc.message}", code=exc.code, direction=direction.name, **exc.details) from exc
        for direction in (self._up, self._down):
            if direction.name in new:
                direction.impairment = new[direction.name]
        if new:
            log.info("impairment changed", extra={"settings": self.settings()})

    def settings(self) -> dict[str, dict[str, float | int]]:
        return {"up": self.up.to_json(), "down": self.down.to_json()}

    def stats(self) -> dict[str, Any]:
        return {
            "listen": self.address if self._sock is not None else _format(self.listen),
            "target": _format(self.target),
            "clients": len(self._mappings),
            "settings": self.settings(),
            "counters": {"up": self._up.stats(), "down": self._down.stats()},
        }

    # -- packets

    def _read_clients(self) -> None:
        assert self._sock is not None and self._loop is not None
        for _ in range(READ_BATCH):
            try:
                data, client = self._sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            mapping = self._mappings.get(client)
            if mapping is None:
                mapping = self._open_mapping(client)
                if mapping is None:
                    self._up.counters.packets_in += 1
                    self._up.counters.bytes_in += len(data)
                    self._up.counters.dropped_other += 1
                    continue
            mapping.last_seen = self._loop.time()
            self._up.packet(data, mapping)

    def _read_target(self, mapping: _Mapping) -> None:
        assert self._loop is not None
        for _ in range(READ_BATCH):
            try:
                data = mapping.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP port unreachable from a target that is down: nothing to relay.
                continue
            mapping.last_seen = self._loop.time()
            self._down.packet(data, mapping)

    def _send_up(self, data: bytes, mapping: _Mapping) -> bool:
        if mapping.closed:
            return False
        try:
            mapping.sock.send(data)
        except OSError:
            return False
        return True

    def _send_down(self, data: bytes, mapping: _Mapping) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.sendto(data, mapping.client)
        except OSError:
            return False
        return True

    # -- mappings

    def _open_mapping(self, client: Address) -> _Mapping | None:
        assert self._loop is not None and self._target_address is not None
        if len(self._mappings) >= self.max_clients:
            if not self._warned_full:
                self._warned_full = True
                log.warning("too many clients; packets of new ones are dropped", extra={"max_clients": self.max_clients})
            return None
        try:
            sock = _socket(self._family)
        except OSError as exc:
            log.warning("cannot open an upstream socket", extra={"client": _format(client), "reason": str(exc)})
            return None
        try:
            # Connected: only the target's answers come in, and the kernel picks the source.
            sock.connect(self._target_address)
        except OSError as exc:
            sock.close()
            log.warning("cannot open an upstream socket", extra={"client": _format(client), "reason": str(exc)})
            return None
        mapping = _Mapping(client, sock, self._loop.time())
        self._mappings[client] = mapping
        self._loop.add_reader(sock, self._read_target, mapping)
        log.info("new client", extra={"client": _format(client), "upstream": _format(mapping.upstream)})
        return mapping

    def _drop_mapping(self, mapping: _Mapping) -> None:
        assert self._loop is not None
        mapping.closed = True
        self._mappings.pop(mapping.client, None)
        self._loop.remove_reader(mapping.sock)
        mapping.sock.close()

    async def _sweep(self) -> None:
        assert self._loop is not None
        interval = min(5.0, self.idle_timeout_s / 2)
        while True:
            await asyncio.sleep(interval)
            cutoff = self._loop.time() - self.idle_timeout_s
            for mapping in [m for m in self._mappings.values() if m.last_seen < cutoff]:
                log.info("client idle; mapping closed", extra={"client": _format(mapping.client)})
                self._drop_mapping(mapping)


def _socket(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    return sock


def _format(address: Address) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
