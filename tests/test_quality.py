"""Live quality on a clean network: statistics to staff, /metrics, the quality REST,
the session report beside the recording, alert hysteresis and the tier ladder."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from teller.client import RoomClient
from teller.client.sources import TestPatternTrack, ToneTrack
from teller.config import QualitySettings
from teller.quality.adapt import Adaptation
from teller.quality.alerts import AlertBook, Condition
from teller.quality.report import build_report

from .conftest import Server, start_in_process, wait_until
from .media import receive


def scrape(text: str) -> dict[str, float]:
    """Every sample of a Prometheus exposition, by name and labels."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "node_id")
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


async def call(server: Server, room: str, clients: list[RoomClient]) -> tuple[RoomClient, RoomClient, list[dict[str, Any]]]:
    """A customer publishing camera and microphone, and an agent watching it."""
    customer = RoomClient(server.url, server.token(room, "customer", name="Li Hua"))
    agent = RoomClient(server.url, server.token(room, "agent", name="Wang Li"))
    clients += [customer, agent]
    stats: list[dict[str, Any]] = []
    agent.on("data", lambda m: stats.append(m["payload"]) if m.get("topic") == "quality.stats" else None)
    await customer.connect()
    await agent.connect()
    await customer.publish([TestPatternTrack(320, 240, 15), ToneTrack()])
    await agent.publish([ToneTrack(660.0)])
    subscription = await agent.subscribe(customer.participant_id)
    asyncio.ensure_future(receive(subscription.track("video"), 20.0))
    asyncio.ensure_future(receive(subscription.track("audio"), 20.0))
    return customer, agent, stats


async def test_staff_receive_live_statistics_with_scores_every_report_interval(
    server: Server, room_name: str, clients: list[RoomClient]
) -> None:
    customer, agent, stats = await call(server, room_name, clients)

    def customer_figures() -> dict[str, Any] | None:
        for payload in reversed(stats):
            for p in payload["participants"]:
                if p["participant_id"] == customer.participant_id and p.get("fps"):
                    return p
        return None

    await wait_until(lambda: (f := customer_figures()) is not None and f["fps"] > 8, timeout=20)
    figures = customer_figures()
    assert figures is not None
    assert figures["role"] == "customer" and figures["name"] == "Li Hua"
    assert figures["level"] == "good" and figures["loss_up"] < 0.01
    assert 4.0 <= figures["mos"] <= 4.5
    assert (figures["width"], figures["height"]) == (320, 240)
    up = {t["kind"]: t for t in figures["tracks"]["up"]}
    assert up["video"]["bitrate"] > 20_000 and up["audio"]["bitrate"] > 10_000
    assert up["audio"]["audio_level"] is not None and up["audio"]["audio_level"] < 127  # a tone, not silence
    assert up["video"]["subscribers"] == 1

    def agent_figures() -> dict[str, Any] | None:
        payload = stats[-1] if stats else None
        return next((p for p in payload["participants"] if p["participant_id"] == agent.participant_id), None) if payload else None

    # The agent receives: its RTT comes from the receiver reports answering our sender reports.
    await wait_until(lambda: (f := agent_figures()) is not None and f["rtt_ms"] is not None, timeout=20)
    figures = agent_figures()
    assert figures is not None and 0 <= figures["rtt_ms"] < 100
    down = {t["kind"]: t for t in figures["tracks"]["down"]}
    assert down["video"]["tier"] == "full" and down["video"]["bitrate"] > 20_000
    # The customer is not staff: it is never sent the room's figures.
    assert all(p["session_id"] for p in stats)


async def test_metrics_parse_and_move_as_media_flows(
    server: Server, room_name: str, clients: list[RoomClient], http: aiohttp.ClientSession
) -> None:
    async def metrics() -> dict[str, float]:
        async with http.get(f"{server.url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            return scrape(await response.text())

    idle = await metrics()
    assert idle["teller_rooms"] == 0
    assert "process_cpu_seconds_total" in idle
    await call(server, room_name, clients)
    await wait_until(lambda: server.app is not None and server.node.rooms.get(room_name) is not None)
    await asyncio.sleep(3.5)
    first = await metrics()
    await asyncio.sleep(2.5)
    second = await metrics()
    assert second["teller_rooms"] == 1 and second["teller_participants"] == 2
    assert second["teller_tracks{kind=video}"] == 1 and second["teller_tracks{kind=audio}"] == 2
    for counter in ("teller_media_bytes_received_total", "teller_media_bytes_sent_total",
                    "teller_media_packets_received_total", "teller_media_packets_sent_total"):
        assert second[counter] > first[counter] > 0, counter
    assert second["teller_track_loss_ratio_count"] > first["teller_track_loss_ratio_count"]
    assert second["teller_track_jitter_seconds_count"] > 0
    assert second["teller_join_seconds_count"] == 2
    assert second["teller_connect_seconds_count"] >= 3
    assert second["teller_downtracks{tier=full}"] == 2
    assert second["teller_tier_encoders"] == 0
    assert second["teller_stage_queue_depth"] == 0
    assert 0 < second["teller_malloc_in_use_bytes"] <= second["teller_malloc_heap_bytes"]
    assert second["teller_malloc_mmap_bytes"] >= 0


async def test_metrics_token_and_quality_rest_refuse_outsiders_without_harming_a_call(
    tmp_path: Path, room_name: str, clients: list[RoomClient], http: aiohttp.ClientSession
) -> None:
    server, runner = await start_in_process(tmp_path, quality={"metrics_token": "scrape-me"})
    try:
        customer, agent, stats = await call(server, room_name, clients)
        await wait_until(lambda: len(stats) >= 1, timeout=15)
        async with http.get(f"{server.url}/metrics") as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "invalid_token"
        async with http.get(f"{server.url}/metrics", headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401
        async with http.get(f"{server.url}/metrics", headers={"Authorization": "Bearer scrape-me"}) as response:
            assert response.status == 200 and "teller_rooms" in await response.text()
        customer_token = server.token(room_name, "customer")
        for path in ("/v1/quality", f"/v1/rooms/{room_name}/quality"):
            async with http.get(server.url + path, headers={"Authorization": f"Bearer {customer_token}"}) as response:
                assert response.status == 403
                assert (await response.json())["error"]["code"] == "role_forbidden"
        agent_token = server.token(room_name, "agent")
        async with http.get(f"{server.url}/v1/rooms/other-room/quality", headers={"Authorization": f"Bearer {agent_token}"}) as response:
            assert response.status == 403
        async with http.get(f"{server.url}/v1/rooms/{room_name}/quality", headers={"Authorization": f"Bearer {agent_token}"}) as response:
            assert response.status == 200
            doc = await response.json()
        assert doc["room"] == room_name and {p["role"] for p in doc["participants"]} == {"customer", "agent"}
        async with http.get(f"{server.url}/v1/quality", headers={"Authorization": f"Bearer {server.admin_token()}"}) as response:
            assert response.status == 200
            assert [r["room"] for r in (await response.json())["rooms"]] == [room_name]
        # The call beside the refusals goes on: statistics keep arriving.
        count = len(stats)
        await wait_until(lambda: len(stats) >= count + 2, timeout=10)
    finally:
        await runner.cleanup()


async def test_the_session_report_is_kept_with_the_recording(
    tmp_path: Path, room_name: str, clients: list[RoomClient], http: aiohttp.ClientSession
) -> None:
    from .test_recording import compliance_token, ready_entry, run_call

    server, runner = await start_in_process(tmp_path, recording={"enabled": True, "composite": False})
    try:
        await run_call(server, room_name, 6.0, clients)
        token = compliance_token(server)
        entry = await ready_entry(http, server, token)
        sid = entry["session_id"]
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{server.url}/v1/recordings/{sid}", headers=headers) as response:
            detail = await response.json()
        files = {f["name"]: f for f in detail["files"]}
        assert files["quality.json"]["kind"] == "quality"
        async with http.get(f"{server.url}/v1/recordings/{sid}/quality", headers=headers) as response:
            assert response.status == 200
            report = await response.json()
        assert report["session_id"] == sid and report["level"] in ("good", "fair")
        roles = {p["role"]: p for p in report["participants"]}
        assert set(roles) == {"customer", "agent"}
        for p in roles.values():
            assert p["seconds"] >= 3 and p["mos_avg"] >= 4.0 and p["loss_up_avg"] < 0.01
            assert p["fps_avg"] and p["fps_avg"] > 8
        assert files["quality.json"]["sha256"]  # signed in the manifest like every other file
    finally:
        await runner.cleanup()


# -- the parts on their own --------------------------------------------------------------


def test_alerts_need_the_condition_to_hold_and_to_be_gone_a_while() -> None:
    settings = QualitySettings(alert_after_s=2.0, clear_after_s=5.0)
    book = AlertBook("PA_1", "cust", "customer", settings)
    poor = [Condition("network_poor", "warning", "customer's network is poor: suggest audio only", "audio_only", {"loss": 0.05})]
    assert book.update(poor, 0.0) == []
    assert book.update([], 1.0) == []  # a flicker resets the clock
    assert book.update(poor, 2.0) == []
    assert book.update(poor, 3.0) == []
    raised = book.update(poor, 4.0)
    assert [(a.kind, a.state, a.severity) for a in raised] == [("network_poor", "raised", "warning")]
    worse = [Condition("network_poor", "critical", "worse", "audio_only", {"loss": 0.2})]
    escalated = book.update(worse, 5.0)
    assert [(a.state, a.severity) for a in escalated] == [("raised", "critical")]
    assert escalated[0].alert_id == raised[0].alert_id
    assert book.update([], 6.0) == []
    assert book.update(poor, 7.0) == []  # back before clear_after_s: still the same alert
    assert book.update([], 8.0) == []
    assert book.update([], 12.0) == []
    cleared = book.update([], 13.0)
    assert [(a.state, a.alert_id) for a in cleared] == [("cleared", raised[0].alert_id)]
    assert book.active == [] and book.raised_count == 1


class _FakeRegistry:
    def source(self, publication: Any, tier: str) -> Any:
        return None if tier == "audio_only" else (publication if tier == "full" else f"encoder:{tier}")


class _FakeDownTrack:
    def __init__(self) -> None:
        self.publication = object()
        self.tier = "full"
        self.source: Any = self.publication
        self.ended = self.closed = False

    def switch(self, source: Any, tier: str) -> None:
        self.source, self.tier = source, tier


def test_the_ladder_steps_down_on_loss_and_up_after_a_clean_stretch_with_backoff() -> None:
    settings = QualitySettings(down_loss=0.08, down_after_s=2.0, up_loss=0.02, up_after_s=5.0, up_max_s=20.0)
    registry = _FakeRegistry()
    adaptation = Adaptation("PA_1", settings, registry)  # type: ignore[arg-type]
    assert adaptation.ladder == ["full", "medium", "low", "audio_only"]
    downtrack = _FakeDownTrack()
    t = 0.0

    def run(loss: float, seconds: float) -> list[tuple[str, str]]:
        nonlocal t
        changes = []
        for _ in range(int(seconds)):
            t += 1.0
            change = adaptation.evaluate(loss, [downtrack], t, 1.0)  # type: ignore[list-item]
            if change is not None:
                changes.append((change.old, change.new))
        return changes

    assert run(0.05, 10) == []  # below down_loss: no move
    assert run(0.3, 3) == [("full", "medium")]
    assert downtrack.tier == "medium" and downtrack.source == "encoder:medium"
    assert run(0.3, 8) == [("medium", "low"), ("low", "audio_only")]
    assert downtrack.source is None
    assert run(0.3, 5) == []  # nowhere lower to go
    assert run(0.0, 6) == [("audio_only", "low")]
    # The step up fails at once: back down, and the next try waits twice as long.
    assert run(0.3, 4) == [("low", "audio_only")]
    assert run(0.0, 7) == []
    assert run(0.0, 5) == [("audio_only", "low")]
    assert run(0.0, 30) == [("low", "medium"), ("medium", "full")]
    assert downtrack.source is downtrack.publication and adaptation.level == 0


def test_the_report_keeps_summaries_alerts_and_tier_changes_from_the_timeline() -> None:
    events = [
        {"type": "participant_joined", "participant_id": "PA_1"},
        {"type": "quality_alert", "ts": 10.0, "kind": "network_poor", "state": "raised", "participant_id": "PA_1", "room": "r", "node_id": "n"},
        {"type": "tier_changed", "ts": 11.0, "participant_id": "PA_2", "from": "full", "to": "medium"},
        {"type": "quality_summary", "participant_id": "PA_1", "role": "customer", "seconds": 30.0, "mos_min": 3.1,
         "level_seconds": {"good": 20.0, "fair": 8.0, "poor": 2.0}},
        {"type": "quality_summary", "participant_id": "PA_1", "role": "customer", "seconds": 5.0, "mos_min": 4.0,
         "level_seconds": {"good": 5.0}},  # the same person on another node: the longer part wins
        {"type": "quality_summary", "participant_id": "PA_2", "role": "agent", "seconds": 30.0, "mos_min": 4.3,
         "level_seconds": {"good": 30.0}},
    ]
    report = build_report("RM_x", events)
    assert report is not None
    assert report["level"] == "poor" and report["mos_min"] == 3.1
    assert report["alerts_raised"] == 1 and report["tier_changes"] == 1
    assert sorted((p["participant_id"], p["seconds"]) for p in report["participants"]) == [("PA_1", 30.0), ("PA_2", 30.0)]
    assert "room" not in report["alerts"][0]
    assert build_report("RM_y", [{"type": "participant_joined"}]) is None


def test_a_bad_tier_ladder_is_refused_at_start(tmp_path: Path) -> None:
    from teller.config import ConfigError, load_config
    from teller.quality.adapt import validate_tiers

    for tiers in ([{"name": "full", "scale": 0.5}], [{"name": "a"}, {"name": "a"}], [{"name": "x", "scale": 1.5}],
                  [{"name": "y", "bitrate": 0}]):
        config = load_config(overrides={"quality": {"tiers": tiers}}, env={})
        try:
            validate_tiers(config.quality)
        except ConfigError as exc:
            assert "quality.tiers" in str(exc)
        else:
            raise AssertionError(f"accepted {tiers}")
    validate_tiers(load_config(overrides={}, env={}).quality)
