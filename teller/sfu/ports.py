"""ICE host candidates on chosen addresses and a fixed UDP port range.

Firewalls in front of a bank's media servers open one port range; aioice binds
ephemeral ports on every interface. This replaces its gathering for server-side
connections only, when an operator configured addresses or a range.
"""

from __future__ import annotations

import asyncio
import random
import socket
from types import MethodType
from typing import Any

from aioice import ice as aioice_ice
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

from ..config import SfuSettings


class PortRangeExhausted(OSError):
    pass


def needs_custom_gathering(settings: SfuSettings) -> bool:
    return bool(settings.bind_addresses) or bool(settings.udp_port_min and settings.udp_port_max)


def install(connection: aioice_ice.Connection, settings: SfuSettings) -> None:
    """Make `connection` gather host candidates on the configured addresses and ports."""
    configured = list(settings.bind_addresses)
    low, high = settings.udp_port_min, settings.udp_port_max

    async def get_component_candidates(
        self: aioice_ice.Connection, component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        loop = asyncio.get_running_loop()
        candidates: list[Candidate] = []
        for address in configured or addresses:
            transport, protocol = await _bind(loop, self, address, low, high)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            host, port = transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            candidates.append(protocol.local_candidate)
            self._protocols.append(protocol)
        return candidates

    connection.get_component_candidates = MethodType(get_component_candidates, connection)  # type: ignore[method-assign]


async def _bind(
    loop: asyncio.AbstractEventLoop,
    connection: aioice_ice.Connection,
    address: str,
    low: int,
    high: int,
) -> tuple[asyncio.DatagramTransport, Any]:
    if not (low and high):
        return await loop.create_datagram_endpoint(  # type: ignore[return-value]
            lambda: aioice_ice.StunProtocol(connection), local_addr=(address, 0)
        )
    span = high - low + 1
    start = random.randrange(span)
    for i in range(span):
        port = low + (start + i) % span
        try:
            return await loop.create_datagram_endpoint(  # type: ignore[return-value]
                lambda: aioice_ice.StunProtocol(connection), local_addr=(address, port)
            )
        except OSError:
            continue
    raise PortRangeExhausted(f"no free UDP port in {low}-{high} on {address}")
