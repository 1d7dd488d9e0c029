"""Live quality on impaired links: real loss, delay and a bandwidth cap, made by
`teller impair` in front of a TURN relay that the impaired client must use."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from teller.client import RoomClient
from teller.client.sources import TestPatternTrack, ToneTrack
from teller.impair.model import Impairment

from .conftest import Server, start_in_process, wait_until
from .media import receive
from .turn import impaired_turn

pytestmark = pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn is not installed (apt-get install coturn)")


def watch(client: RoomClient) -> dict[str, list[dict[str, Any]]]:
    """The quality messages the server sends this client, by topic."""
    seen: dict[str, list[dict[str, Any]]] = {"quality.stats": [], "quality.alert": [], "quality.tier": []}

    def on_data(message: dict[str, Any]) -> None:
        if message.get("topic") in seen and message.get("from_participant_id") is None:
            seen[message["topic"]].append(message["payload"])

    client.on("data", on_data)
    return seen


def latest(seen: dict[str, list[dict[str, Any]]], participant_id: str) -> dict[str, Any] | None:
    for payload in reversed(seen["quality.stats"]):
        for figures in payload["participants"]:
            if figures["participant_id"] == participant_id:
                return figures
    return None


async def start(tmp_path: Path, turn: Any, **sections: dict[str, Any]) -> tuple[Server, Any, list[dict[str, Any]]]:
    """The server, and the session timeline as it is written."""
    server, runner = await start_in_process(
        tmp_path, ice={"servers": turn.ice_servers()}, sfu={"bind_addresses": ["127.0.0.1"]}, **sections
    )
    timeline: list[dict[str, Any]] = []
    server.node.timeline_listeners.append(lambda room, event: timeline.append(event))
    return server, runner, timeline


async def test_five_percent_uplink_loss_shows_in_the_report_and_raises_an_alert(
    tmp_path: Path, room_name: str, clients: list[RoomClient]
) -> None:
    hooks: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        hooks.append({"event": request.headers["X-Teller-Event"], "body": await request.json()})
        return web.json_response({"ok": True})

    bank = web.Application()
    bank.router.add_post("/hook", hook)
    bank_runner = web.AppRunner(bank)
    await bank_runner.setup()
    await web.TCPSite(bank_runner, "127.0.0.1", 0).start()
    hook_url = f"http://127.0.0.1:{bank_runner.addresses[0][1]}/hook"
    async with impaired_turn(tmp_path, seed=5) as turn:
        server, runner, timeline = await start(
            tmp_path, turn, webhooks={"urls": [hook_url], "secret": "webhook-secret-0123456789abcdef"}
        )
        try:
            customer = RoomClient(server.url, server.token(room_name, "customer", name="Li Hua"), relay_only=True)
            agent = RoomClient(server.url, server.token(room_name, "agent", name="Wang Li"))
            clients += [customer, agent]
            seen = watch(agent)
            await customer.connect()
            await agent.connect()
            await customer.publish([TestPatternTrack(640, 480, 30), ToneTrack()])
            subscription = await agent.subscribe(customer.participant_id)
            asyncio.ensure_future(receive(subscription.track("video"), 40.0))
            await wait_until(lambda: (f := latest(seen, customer.participant_id)) is not None and f.get("fps", 0) > 10, timeout=20)
            assert not seen["quality.alert"]  # a clean link raises nothing
            turn.relay.set(up=Impairment(loss=0.05))
            await wait_until(lambda: any(
                a["kind"] == "network_poor" and a["participant_id"] == customer.participant_id for a in seen["quality.alert"]
            ), timeout=30)
            alert = next(a for a in seen["quality.alert"] if a["kind"] == "network_poor")
            assert alert["state"] == "raised" and alert["role"] == "customer"
            assert alert["message"] == "customer's network is poor: suggest audio only"
            assert alert["suggestion"] == "audio_only" and alert["session_id"]
            # The agent's own link is clean: nothing is said about it.
            assert all(a["participant_id"] == customer.participant_id for a in seen["quality.alert"])
            # Loss over a long enough stretch to measure 5 % (about 3000 packets).
            start_counts = _uplink_counts(latest(seen, customer.participant_id))
            await asyncio.sleep(20)
            end_counts = _uplink_counts(latest(seen, customer.participant_id))
            expected = end_counts[0] - start_counts[0]
            lost = end_counts[1] - start_counts[1]
            assert expected > 1500
            assert 0.04 <= lost / expected <= 0.06, (lost, expected)
            # The live figure is over a 3 s window, and losses there come in bursts when the
            # machine is busy (it read 9-15 % at times, before and after this change), so
            # the 20 s figure above is the measurement; this only checks the figure is live.
            figures = latest(seen, customer.participant_id)
            assert figures is not None and 0.02 <= figures["loss_up"] <= 0.25 and figures["level"] in ("fair", "poor")
            events = [e for e in timeline if e["type"] == "quality_alert"]
            assert events and events[0]["kind"] == "network_poor"
            # ...and the bank's systems hear of it, signed like every webhook.
            await wait_until(lambda: any(h["event"] == "quality.alert" for h in hooks), timeout=10)
            delivered = next(h["body"]["data"] for h in hooks if h["event"] == "quality.alert")
            assert delivered["kind"] == "network_poor" and delivered["participant_id"] == customer.participant_id
            assert delivered["room"] == room_name and delivered["session_id"] == alert["session_id"]
        finally:
            await runner.cleanup()
            await bank_runner.cleanup()


def _uplink_counts(figures: dict[str, Any] | None) -> tuple[int, int]:
    """(packets expected, packets lost) over the participant's published tracks."""
    assert figures is not None
    expected = lost = 0
    for track in figures["tracks"]["up"]:
        expected += track["packets"] - track["retransmissions"] + track["packets_lost"]
        lost += track["packets_lost"]
    return expected, lost


async def test_added_delay_shows_in_the_round_trip_time(tmp_path: Path, room_name: str, clients: list[RoomClient]) -> None:
    async with impaired_turn(tmp_path, seed=7) as turn:
        server, runner, timeline = await start(tmp_path, turn)
        try:
            customer = RoomClient(server.url, server.token(room_name, "customer"))
            agent = RoomClient(server.url, server.token(room_name, "agent"), relay_only=True)
            clients += [customer, agent]
            seen = watch(agent)
            await customer.connect()
            await agent.connect()
            await customer.publish([TestPatternTrack(320, 240, 15), ToneTrack()])
            subscription = await agent.subscribe(customer.participant_id)
            asyncio.ensure_future(receive(subscription.track("video"), 40.0))
            await wait_until(lambda: (f := latest(seen, agent.participant_id)) is not None and f["rtt_ms"] is not None, timeout=20)
            base = latest(seen, agent.participant_id)["rtt_ms"]  # type: ignore[index]
            assert base < 50
            turn.relay.set(down=Impairment(delay_ms=200))
            await wait_until(lambda: (f := latest(seen, agent.participant_id)) is not None and f["rtt_ms"] > 150, timeout=20)
            samples = []
            for _ in range(4):
                await asyncio.sleep(2.0)
                samples.append(latest(seen, agent.participant_id)["rtt_ms"])  # type: ignore[index]
            samples.sort()
            median = (samples[1] + samples[2]) / 2
            assert abs(median - base - 200) <= 20, samples
        finally:
            await runner.cleanup()


async def test_a_capped_subscriber_moves_down_and_back_up_while_others_stay_on_the_forwarded_stream(
    tmp_path: Path, room_name: str, clients: list[RoomClient]
) -> None:
    async with impaired_turn(tmp_path, seed=11) as turn:
        server, runner, timeline = await start(tmp_path, turn)
        try:
            customer = RoomClient(server.url, server.token(room_name, "customer"))
            weak = RoomClient(server.url, server.token(room_name, "agent", name="Weak"), relay_only=True)
            strong = RoomClient(server.url, server.token(room_name, "supervisor", name="Strong"))
            clients += [customer, weak, strong]
            seen = watch(weak)
            for client in (customer, weak, strong):
                await client.connect()
            await customer.publish([TestPatternTrack(640, 480, 30), ToneTrack()])
            weak_sub = await weak.subscribe(customer.participant_id)
            strong_sub = await strong.subscribe(customer.participant_id)
            asyncio.ensure_future(receive(weak_sub.track("video"), 120.0))
            asyncio.ensure_future(receive(weak_sub.track("audio"), 120.0))
            strong_video = asyncio.ensure_future(receive(strong_sub.track("video"), 120.0))
            asyncio.ensure_future(receive(strong_sub.track("audio"), 120.0))
            room = server.node.rooms[room_name]
            monitor = _monitor(server)

            def tier(client: RoomClient) -> str:
                downtracks = [d for s in room.participants[client.participant_id].subscriptions.values()
                              for d in s.downtracks.values() if d.kind == "video"]
                return downtracks[0].tier if downtracks else "?"

            await wait_until(lambda: (f := latest(seen, customer.participant_id)) is not None and f["bitrate_up"] > 350_000, timeout=30)
            assert tier(weak) == tier(strong) == "full" and monitor.tiers.encoders == 0
            turn.relay.set(down=Impairment(rate_kbps=300))
            await wait_until(lambda: tier(weak) != "full", timeout=30)
            # The news travels on the weak client's data channel, through the same capped link.
            await wait_until(lambda: bool(seen["quality.tier"]), timeout=15)
            assert seen["quality.tier"][0]["from"] == "full"
            # Everyone else stays on the publisher's own packets: no encoder on their path.
            strong_video_downtrack = _video_downtrack(room, strong)
            assert strong_video_downtrack.tier == "full"
            assert strong_video_downtrack.source is strong_video_downtrack.publication
            weak_downtrack = _video_downtrack(room, weak)
            if weak_downtrack.tier != "audio_only":
                assert weak_downtrack.source is not weak_downtrack.publication
                assert monitor.tiers.encoders >= 1
            turn.relay.set(down=Impairment(rate_kbps=0))
            await wait_until(lambda: tier(weak) == "full", timeout=90)
            await wait_until(lambda: seen["quality.tier"][-1]["to"] == "full", timeout=15)
            assert seen["quality.tier"][-1]["reason"] == "recovered"
            await wait_until(lambda: monitor.tiers.encoders == 0, timeout=15)
            assert not strong_video.done()
            assert _video_downtrack(room, strong).tier == "full"
            changes = [e for e in timeline if e["type"] == "tier_changed"]
            assert changes and all(e["participant_id"] == weak.participant_id for e in changes)
        finally:
            await runner.cleanup()


def _monitor(server: Server) -> Any:
    from teller.quality.service import MONITOR

    assert server.app is not None
    return server.app[MONITOR]


def _video_downtrack(room: Any, client: RoomClient) -> Any:
    return next(d for s in room.participants[client.participant_id].subscriptions.values()
                for d in s.downtracks.values() if d.kind == "video")
