"""`teller impair`: real UDP on loopback through the relay, measured at the far end.

The assertions are on what the relay does to packets (share lost, delay added,
throughput let through), measured from timestamps carried in the packets, never on
how long a test took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from teller.client import RoomClient, TestPatternTrack, ToneTrack
from teller.errors import BadRequest
from teller.impair import Impairment, ImpairRelay
from teller.impair.cli import add_parser, impairments_from_args, parse_address

from .conftest import start_in_process
from .media import receive
from .turn import force_configuration, impaired_turn, requires_coturn

HEADER = struct.Struct("!Id")  # sequence number, send time (time.monotonic)


class Udp(asyncio.DatagramProtocol):
    """A loopback UDP socket that records what arrives, and echoes it if asked."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.transport: asyncio.DatagramTransport | None = None
        self.received: list[tuple[float, bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((time.monotonic(), data))
        if self.echo:
            assert self.transport is not None
            self.transport.sendto(data, addr)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, seq: int, size: int = 100) -> None:
        assert self.transport is not None
        self.transport.sendto(HEADER.pack(seq, time.monotonic()).ljust(size, b"\0"))

    def sequence(self) -> list[int]:
        return [HEADER.unpack_from(data)[0] for _, data in self.received]

    def delays_ms(self) -> list[float]:
        """Arrival minus send time of each packet (a round trip when it was echoed)."""
        return [(at - HEADER.unpack_from(data)[1]) * 1000 for at, data in self.received]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def udp(echo: bool = False, remote: tuple[str, int] | None = None) -> Udp:
    loop = asyncio.get_running_loop()
    local = None if remote else ("127.0.0.1", 0)
    _, protocol = await loop.create_datagram_endpoint(lambda: Udp(echo), local_addr=local, remote_addr=remote)
    return protocol


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


def counters(relay: ImpairRelay, direction: str = "up") -> dict[str, Any]:
    return relay.stats()["counters"][direction]


async def send_all(client: Udp, relay: ImpairRelay, count: int, *sinks: tuple[Udp, str], first: int = 0, batch: int = 50) -> None:
    """Sends in batches, each once the last has reached every sink, so no socket buffer
    on the way overflows: every loss measured is the relay's."""
    for start in range(first, first + count, batch):
        target = counters(relay)["packets_in"] + min(batch, first + count - start)
        for seq in range(start, min(start + batch, first + count)):
            client.send(seq)
        await until(lambda: counters(relay)["packets_in"] >= target)
        await settled(relay, *sinks)


async def settled(relay: ImpairRelay, *sinks: tuple[Udp, str]) -> None:
    """Until nothing is scheduled and every delivered packet has arrived."""
    await until(lambda: all(counters(relay, d)["in_flight"] == 0 for d in ("up", "down")))
    await until(lambda: all(len(sink.received) >= counters(relay, d)["delivered"] for sink, d in sinks))


@pytest.fixture
async def echo() -> Any:
    server = await udp(echo=True)
    yield server
    server.close()


# -- the model


def test_partial_updates_merge_onto_the_current_value() -> None:
    base = Impairment(loss=0.05, delay_ms=100)
    changed = base.merged({"jitter_ms": 10, "rate_kbps": 300})
    assert changed.to_json() == {"loss": 0.05, "delay_ms": 100, "jitter_ms": 10, "rate_kbps": 300, "queue_ms": 200, "loss_burst": 0}
    assert Impairment.from_json(changed.to_json()) == changed
    assert base.delay_ms == 100 and base.jitter_ms == 0


@pytest.mark.parametrize(
    "body",
    [
        {"loss": 2.0},
        {"loss": -0.1},
        {"loss": True},
        {"delay_ms": "100"},
        {"delay_ms": float("nan")},
        {"jitter_ms": 1e9},
        {"rate_kbps": 0.5},
        {"queue_ms": -1},
        {"loss_burst": 0.5},
        {"loss": 0.9, "loss_burst": 2},
        {"los": 0.1},
        [0.1],
    ],
)
def test_bad_values_are_refused_with_a_code(body: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        Impairment().merged(body)
    assert caught.value.code == "invalid_impairment"
    assert caught.value.message


# -- the relay, measured


async def run_loss(target: Udp, loss: Impairment, seed: int, count: int = 4000) -> tuple[dict[str, Any], list[int]]:
    target.received.clear()
    async with ImpairRelay(("127.0.0.1", 0), target.address, up=loss, seed=seed) as relay:
        client = await udp(remote=("127.0.0.1", relay.port))
        try:
            await send_all(client, relay, count, (target, "up"))
        finally:
            client.close()
        return counters(relay), target.sequence()


async def test_loss_lands_near_the_setting_and_replays_with_the_seed() -> None:
    sink = await udp()
    try:
        up, received = await run_loss(sink, Impairment(loss=0.05), seed=7)
        assert up["packets_in"] == 4000
        assert 0.04 <= up["dropped_loss"] / 4000 <= 0.06, up
        assert len(received) == up["delivered"] == 4000 - up["dropped_loss"]
        assert received == sorted(received), "without jitter the order is kept"
        again, received_again = await run_loss(sink, Impairment(loss=0.05), seed=7)
        assert received_again == received, "the same seed loses the same packets"
    finally:
        sink.close()


async def test_burst_loss_keeps_the_average_and_loses_in_runs() -> None:
    sink = await udp()
    try:
        up, received = await run_loss(sink, Impairment(loss=0.1, loss_burst=4), seed=3)
    finally:
        sink.close()
    lost = sorted(set(range(4000)) - set(received))
    runs = [len(run) for run in _runs(lost)]
    assert 0.06 <= len(lost) / 4000 <= 0.14, up
    assert 3.0 <= statistics.mean(runs) <= 5.5, runs


def _runs(numbers: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for n in numbers:
        if out and out[-1][-1] == n - 1:
            out[-1].append(n)
        else:
            out.append([n])
    return out


@pytest.mark.parametrize(("up_ms", "down_ms"), [(100, 100), (0, 200)])
async def test_delay_adds_up_on_the_round_trip(echo: Udp, up_ms: float, down_ms: float) -> None:
    async with ImpairRelay(("127.0.0.1", 0), echo.address, up=Impairment(delay_ms=up_ms), down=Impairment(delay_ms=down_ms)) as relay:
        client = await udp(remote=("127.0.0.1", relay.port))
        try:
            for seq in range(40):
                client.send(seq)
                await asyncio.sleep(0.01)
            await until(lambda: len(client.received) == 40)
        finally:
            client.close()
    rtt = statistics.median(client.delays_ms())
    assert 180 <= rtt <= 220, rtt
    assert client.sequence() == list(range(40))


async def test_jitter_spreads_the_delay_and_reorders(echo: Udp) -> None:
    async with ImpairRelay(("127.0.0.1", 0), echo.address, up=Impairment(delay_ms=50, jitter_ms=20), seed=1) as relay:
        client = await udp(remote=("127.0.0.1", relay.port))
        try:
            for seq in range(200):
                client.send(seq)
                if seq % 5 == 4:
                    await asyncio.sleep(0.002)
            await until(lambda: len(client.received) == 200)
        finally:
            client.close()
    delays = client.delays_ms()
    assert 28 <= min(delays) and max(delays) <= 80, (min(delays), max(delays))
    assert 40 <= statistics.median(delays) <= 60
    assert statistics.stdev(delays) > 5
    assert client.sequence() != list(range(200)), "jitter reorders, as netem does"


async def test_rate_cap_limits_throughput_and_tail_drops_the_excess() -> None:
    sink = await udp()
    size = 1000
    async with ImpairRelay(("127.0.0.1", 0), sink.address, up=Impairment(rate_kbps=300, queue_ms=200)) as relay:
        client = await udp(remote=("127.0.0.1", relay.port))
        queue_delays = []
        try:
            # About 1 Mbit/s for 1.5 s: more than three times the cap.
            for seq in range(0, 190, 5):
                for n in range(seq, seq + 5):
                    client.send(n, size)
                await asyncio.sleep(0.04)
                queue_delays.append(counters(relay)["queue_delay_ms"])
            await settled(relay, (sink, "up"))
        finally:
            client.close()
        up = counters(relay)
    arrivals = [at for at, _ in sink.received]
    throughput_kbps = (len(arrivals) - 1) * size * 8 / (arrivals[-1] - arrivals[0]) / 1000
    assert 250 <= throughput_kbps <= 330, throughput_kbps
    assert up["dropped_queue"] > 0
    assert up["delivered"] + up["dropped_queue"] == up["packets_in"] == 190
    assert max(queue_delays) <= 230, queue_delays
    assert max(queue_delays) >= 150, "a sender above the cap builds a standing queue"


async def test_a_change_while_running_takes_effect(echo: Udp) -> None:
    async with ImpairRelay(("127.0.0.1", 0), echo.address, seed=11) as relay:
        client = await udp(remote=("127.0.0.1", relay.port))
        try:
            await send_all(client, relay, 500, (echo, "up"), (client, "down"))
            assert len(client.received) == 500
            relay.set(up={"loss": 0.5})
            assert relay.up.loss == 0.5 and relay.down == Impairment()
            await send_all(client, relay, 1000, (echo, "up"), (client, "down"), first=500)
        finally:
            client.close()
        up = counters(relay)
    assert up["dropped_loss"] == 1000 + 500 - up["delivered"]
    assert 0.4 <= up["dropped_loss"] / 1000 <= 0.6, up
    assert set(range(500)) <= set(client.sequence())


async def test_each_client_gets_its_own_upstream_address(echo: Udp) -> None:
    async with ImpairRelay(("127.0.0.1", 0), echo.address) as relay:
        a, b = await udp(remote=("127.0.0.1", relay.port)), await udp(remote=("127.0.0.1", relay.port))
        try:
            a.send(1)
            b.send(2)
            await until(lambda: len(a.received) == 1 and len(b.received) == 1)
            assert (a.sequence(), b.sequence()) == ([1], [2]), "answers go back to their own client"
            assert relay.stats()["clients"] == 2
        finally:
            a.close()
            b.close()


async def test_clients_over_the_limit_are_dropped_and_counted(echo: Udp) -> None:
    async with ImpairRelay(("127.0.0.1", 0), echo.address, max_clients=1) as relay:
        a, b = await udp(remote=("127.0.0.1", relay.port)), await udp(remote=("127.0.0.1", relay.port))
        try:
            a.send(1)
            await until(lambda: len(a.received) == 1)
            b.send(2)
            await until(lambda: counters(relay)["dropped_other"] == 1)
            assert relay.stats()["clients"] == 1 and b.received == []
        finally:
            a.close()
            b.close()


async def test_idle_mappings_expire(echo: Udp) -> None:
    async with ImpairRelay(("127.0.0.1", 0), echo.address, idle_timeout_s=0.2) as relay:
        client = await udp(remote=("127.0.0.1", relay.port))
        try:
            client.send(1)
            await until(lambda: len(client.received) == 1)
            assert relay.stats()["clients"] == 1
            await until(lambda: relay.stats()["clients"] == 0, timeout=3)
            client.send(2)
            await until(lambda: len(client.received) == 2)
        finally:
            client.close()


# -- the control API


async def test_control_api_reads_changes_and_refuses_bad_bodies(echo: Udp) -> None:
    from teller.impair.control import start_control

    async with ImpairRelay(("127.0.0.1", 0), echo.address) as relay:
        runner, url = await start_control(relay)
        client = await udp(remote=("127.0.0.1", relay.port))
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/impair") as response:
                    state = await response.json()
                assert response.status == 200
                assert state["settings"]["up"] == Impairment().to_json()
                assert state["listen"] == relay.address and state["counters"]["up"]["delivered"] == 0

                change = {"up": {"delay_ms": 20}, "down": {"delay_ms": 10, "jitter_ms": 5}}
                async with http.put(f"{url}/impair", json=change) as response:
                    assert response.status == 200
                    state = await response.json()
                assert state["settings"]["up"]["delay_ms"] == 20 and state["settings"]["up"]["loss"] == 0
                assert state["settings"]["down"]["jitter_ms"] == 5
                settings = state["settings"]

                bad = [
                    ('{"up": {"loss": 2.0}}', "invalid_impairment"),
                    ('{"up": {"los": 0.1}}', "invalid_impairment"),
                    ('{"up": {"loss": 0.2}, "down": {"delay_ms": -1}}', "invalid_impairment"),
                    ('{"sideways": {}}', "invalid_impairment"),
                    ('{"up": 5}', "invalid_impairment"),
                    ("[1, 2]", "invalid_impairment"),
                    ("loss=5", "invalid_json"),
                    ("", "invalid_json"),
                ]
                for body, code in bad:
                    async with http.put(f"{url}/impair", data=body) as response:
                        error = await response.json()
                    assert response.status == 400, body
                    assert error["error"]["code"] == code, (body, error)
                    assert error["error"]["message"]
                async with http.get(f"{url}/impair") as response:
                    assert (await response.json())["settings"] == settings, "a refused change changes nothing"

            for seq in range(20):
                client.send(seq)
            await until(lambda: len(client.received) == 20)
            # The accepted change is in force: 20 ms up + 10 ± 5 ms down on every packet.
            assert min(client.delays_ms()) >= 24
        finally:
            client.close()
            await runner.cleanup()


# -- the command line


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="teller")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_options_map_onto_both_directions_or_one() -> None:
    args = parse(["impair", "--listen", "127.0.0.1:3479", "--target", "127.0.0.1:3478", "--loss", "5", "--up-delay", "100", "--down-rate", "300", "--burst", "3", "--up-loss", "1"])
    assert args.impair_action is None
    assert impairments_from_args(args) == {
        "up": {"loss": 0.01, "delay_ms": 100, "loss_burst": 3},
        "down": {"loss": 0.05, "rate_kbps": 300, "loss_burst": 3},
    }
    args = parse(["impair", "set", "--control", "http://127.0.0.1:7899", "--down-jitter", "10"])
    assert args.impair_action == "set" and args.control == "http://127.0.0.1:7899"
    assert impairments_from_args(args) == {"up": {}, "down": {"jitter_ms": 10}}
    assert parse(["impair", "show", "--control", "127.0.0.1:7899"]).impair_action == "show"
    assert parse_address("[::1]:3479") == ("::1", 3479) and parse_address(":0") == ("127.0.0.1", 0)
    with pytest.raises(SystemExit):
        parse(["impair", "--loss", "150"])


async def teller(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "teller", "impair", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_runs_the_relay_and_talks_to_its_control_api(echo: Udp, tmp_path: Path) -> None:
    log = open(tmp_path / "impair.log", "wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "teller", "impair", "--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{echo.address[1]}",
        "--control", "127.0.0.1:0", "--up-delay", "30", "--seed", "1", "--stats-interval", "0.3",
        stdout=asyncio.subprocess.PIPE, stderr=log,
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert line, (tmp_path / "impair.log").read_text()
        ready = json.loads(line)
        assert ready["event"] == "ready" and ready["settings"]["up"]["delay_ms"] == 30
        client = await udp(remote=parse_address(ready["listen"]))
        try:
            for seq in range(5):
                client.send(seq)
            await until(lambda: len(client.received) == 5)
            assert min(client.delays_ms()) >= 28
        finally:
            client.close()

        rc, out, err = await teller("set", "--control", ready["control"], "--down-loss", "10", "--down-delay", "20")
        assert rc == 0, err
        assert json.loads(out)["settings"]["down"] == {**Impairment().to_json(), "loss": 0.1, "delay_ms": 20}
        rc, out, err = await teller("set", "--control", ready["control"], "--rate", "0.5")
        assert rc == 1 and json.loads(err)["error"]["code"] == "invalid_impairment"
        rc, out, err = await teller("show", "--control", ready["control"])
        assert rc == 0, err
        shown = json.loads(out)
        assert shown["counters"]["up"]["delivered"] == 5 and shown["settings"]["down"]["delay_ms"] == 20

        stats = json.loads(await asyncio.wait_for(process.stdout.readline(), 5))
        assert stats["event"] == "stats" and stats["counters"]["up"]["packets_in"] == 5
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()


# -- end to end: aiortc, relay-only ICE, coturn behind the relay


@requires_coturn
@pytest.mark.media
async def test_media_through_turn_behind_the_relay(tmp_path: Path, room_name: str) -> None:
    up, down = Impairment(delay_ms=20), Impairment(delay_ms=20, jitter_ms=2, loss=0.01)
    async with impaired_turn(tmp_path, seed=5, up=up, down=down) as network:
        srv, runner = await start_in_process(tmp_path, ice={"servers": network.ice_servers()}, sfu={"bind_addresses": ["127.0.0.1"]})
        host = RoomClient(srv.url, srv.token(room_name, "officer"))
        guest = RoomClient(srv.url, srv.token(room_name, "reviewer"))
        try:
            await host.connect()
            await guest.connect()
            force_configuration((host, guest), network.relay_only_configuration())
            publication = await host.publish([ToneTrack(), TestPatternTrack(320, 240, 30)])
            subscription = await guest.subscribe(host.participant_id)
            video = await receive(subscription.track("video"), 1.5, first_timeout=10)
            assert video.frames > 10
            for pc in (publication.pc, subscription.pc):
                local = pc.getTransceivers()[0].sender.transport.transport.iceGatherer.getLocalCandidates()
                assert local and all(c.type == "relay" for c in local)
            stats = network.relay.stats()
            # The publisher's media goes up through the relay, the subscriber's comes down.
            assert stats["counters"]["up"]["delivered"] > 100, stats
            assert stats["counters"]["down"]["delivered"] > 100, stats
            assert stats["clients"] >= 2, stats
        finally:
            await host.leave()
            await guest.leave()
            await runner.cleanup()
