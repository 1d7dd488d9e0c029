"""The call page (/call) in headless Chromium against a real local cluster.

Two tabs talk through one signalling process; the SFU node that hosts their room is
then killed (SIGKILL) or drained (SIGTERM). With no user action, each tab must
reconnect, follow the room to the other node and show the other's video playing
again, with its own camera left running throughout. When only the signalling process
restarts, the tabs resume on the same node and keep their peer connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from . import cluster as harness
from .browser import chromium_context, open_call_page, require_browser
from .cluster import LocalCluster, Member
from .redis_server import redis_binary

if redis_binary() is None:
    pytest.skip("redis-server is not installed", allow_module_level=True)
playwright_api = require_browser()
async_playwright = playwright_api.async_playwright
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

JOIN_TIMEOUT = 30.0
MEDIA_TIMEOUT = 30.0
RECOVERY_TIMEOUT = 90.0

# Counts getUserMedia calls: a reconnect must reuse the stream it already has.
COUNT_GET_USER_MEDIA = """
(() => {
  const devices = navigator.mediaDevices;
  if (!devices?.getUserMedia) return;
  const original = devices.getUserMedia.bind(devices);
  window.getUserMediaCalls = 0;
  devices.getUserMedia = (constraints) => {
    window.getUserMediaCalls += 1;
    return original(constraints);
  };
})();
"""

# What the viewer sees of one participant's tile over one second: the element shows a
# stream of a real size, its play position moves, and the subscription feeding that
# very element decodes frames meanwhile. (requestVideoFrameCallback would be closer to
# the screen, but headless Chromium paints background tabs about once a second.)
WATCH_TILE = """
async (participantId) => {
  const video = document.querySelector(`#tiles .tile.remote[data-participant-id="${participantId}"] video`);
  if (!video) return { playing: false, why: "no tile" };
  const sub = window.teller.state.subscriptions.get(participantId);
  const decoded = async () => {
    let frames = 0;
    (await sub.pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") frames += s.framesDecoded || 0;
    });
    return frames;
  };
  if (!sub || sub.tile.querySelector("video") !== video) return { playing: false, why: "tile without subscription" };
  const startTime = video.currentTime;
  const startFrames = await decoded();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const seen = {
    inPage: video.isConnected,
    hasStream: video.srcObject !== null && video.srcObject === sub.stream,
    width: video.videoWidth,
    paused: video.paused,
    advanced: video.currentTime - startTime,
    frames: (await decoded()) - startFrames,
  };
  seen.playing = seen.inPage && seen.hasStream && seen.width > 0 && !seen.paused && seen.advanced > 0 && seen.frames >= 5;
  return seen;
}
"""


@dataclass
class CallPage:
    page: Any
    name: str
    console: list[str] = field(default_factory=list)

    async def stats(self) -> dict[str, Any]:
        return await self.page.evaluate("window.teller.stats()")

    async def describe(self) -> str:
        status = await self.page.text_content("#status")
        banner = await self.page.is_visible("#reconnecting")
        return (
            f"stats: {await self.stats()}\nstatus line: {status!r}, reconnecting shown: {banner}\n"
            f"console: {self.console[-20:]}"
        )

    async def wait_stats(self, predicate: Callable[[dict[str, Any]], Any], what: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {what} not within {timeout} s\n{await self.describe()}")
            await asyncio.sleep(0.2)

    async def wait_playing(self, participant_id: str, what: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            seen = await self.page.evaluate(WATCH_TILE, participant_id)
            if seen["playing"]:
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: {what} not playing within {timeout} s\nlast seen: {seen}\n{await self.describe()}"
                )
            await asyncio.sleep(0.2)


@pytest.fixture
async def browser_context() -> AsyncIterator[Any]:
    async with chromium_context(COUNT_GET_USER_MEDIA) as context:
        yield context


async def open_call(context: Any, url: str, room: str, name: str) -> CallPage:
    call = CallPage(None, name)
    call.page = await open_call_page(context, url, room, name, call.console)
    return call


async def start_call(cluster: LocalCluster, context: Any, room: str) -> tuple[CallPage, CallPage, str, str]:
    """Alice and Bob through signalling process 1, each watching the other's video."""
    url = cluster.signals[0].url
    alice = await open_call(context, url, room, "Alice")
    bob = await open_call(context, url, room, "Bob")
    alice_id, bob_id = (
        s["participantId"]
        for s in await asyncio.gather(
            alice.wait_stats(lambda s: s["joined"], "joining", JOIN_TIMEOUT),
            bob.wait_stats(lambda s: s["joined"], "joining", JOIN_TIMEOUT),
        )
    )
    await asyncio.gather(
        alice.wait_playing(bob_id, "Bob's video", MEDIA_TIMEOUT),
        bob.wait_playing(alice_id, "Alice's video", MEDIA_TIMEOUT),
    )
    for call in (alice, bob):
        # Remember the preview's stream, to check that the same one runs after the move.
        await call.page.evaluate("window.previewBefore = document.getElementById('local-video').srcObject")
    return alice, bob, alice_id, bob_id


async def host_of(cluster: LocalCluster, room: str) -> tuple[Member, Member]:
    rooms = await asyncio.to_thread(cluster.rooms)
    host = next(n for n in cluster.nodes if n.node_id == rooms[room]["node_id"])
    other = next(n for n in cluster.nodes if n is not host)
    return host, other


async def check_recovered(
    cluster: LocalCluster, room: str, survivor: Member, alice: CallPage, bob: CallPage, alice_id: str, bob_id: str
) -> None:
    """Each tab moved once, watches the other again, and shows no reconnect notice."""
    watching = [(alice, alice_id, bob_id), (bob, bob_id, alice_id)]
    try:
        await asyncio.gather(
            *(
                call.wait_stats(
                    lambda s: s["joined"] and s["migrations"] >= 1 and not s["reconnecting"],
                    "moving to the other node",
                    RECOVERY_TIMEOUT,
                )
                for call, _own, _other in watching
            )
        )
        await asyncio.gather(
            *(call.wait_playing(other, "the other's video after the move", RECOVERY_TIMEOUT) for call, _own, other in watching)
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n\ncluster logs:\n{cluster.logs()}") from None

    for call, own, _other in watching:
        stats = await call.stats()
        assert stats["migrations"] == 1, stats
        assert stats["joined"] and not stats["reconnecting"], stats
        assert stats["participantId"] == own  # the same participant, resumed elsewhere
        await expect(call.page.locator("#reconnecting")).to_be_hidden()
        assert "error" not in (await call.page.get_attribute("#status", "class") or ""), await call.describe()
        # The camera was opened once and the preview kept its live stream.
        assert await call.page.evaluate("window.getUserMediaCalls") == 1
        preview = await call.page.evaluate(
            """() => {
              const stream = document.getElementById('local-video').srcObject;
              return { same: stream === window.previewBefore,
                       live: stream !== null && stream.getTracks().every((t) => t.readyState === 'live') };
            }"""
        )
        assert preview == {"same": True, "live": True}
    rooms = await asyncio.to_thread(cluster.rooms)
    assert rooms[room]["node_id"] == survivor.node_id


async def test_call_survives_killing_its_node(cluster: LocalCluster, browser_context: Any, room_name: str) -> None:
    alice, bob, alice_id, bob_id = await start_call(cluster, browser_context, room_name)
    host, survivor = await host_of(cluster, room_name)

    host.kill()

    await check_recovered(cluster, room_name, survivor, alice, bob, alice_id, bob_id)


async def test_call_survives_draining_its_node(cluster: LocalCluster, browser_context: Any, room_name: str) -> None:
    alice, bob, alice_id, bob_id = await start_call(cluster, browser_context, room_name)
    host, survivor = await host_of(cluster, room_name)

    host.terminate()

    await check_recovered(cluster, room_name, survivor, alice, bob, alice_id, bob_id)
    assert await asyncio.to_thread(host.process.wait, 30) == 0


async def test_signalling_restart_resumes_without_touching_media(
    cluster: LocalCluster, browser_context: Any, room_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pages know one address; the process behind it dies and comes back on it."""
    alice, bob, alice_id, bob_id = await start_call(cluster, browser_context, room_name)
    keep_pcs = "id => { const s = window.teller.state; window.pcsBefore = [s.publisher.pc, s.subscriptions.get(id).pc]; }"
    same_pcs = "id => { const s = window.teller.state; return s.publisher.pc === window.pcsBefore[0] && s.subscriptions.get(id).pc === window.pcsBefore[1]; }"
    for call, other in ((alice, bob_id), (bob, alice_id)):
        await call.page.evaluate(keep_pcs, other)

    old = cluster.signals[0]
    old.kill()
    await asyncio.gather(
        *(call.wait_stats(lambda s: s["reconnecting"], "noticing the lost connection", MEDIA_TIMEOUT) for call in (alice, bob))
    )
    await expect(alice.page.locator("#reconnecting")).to_be_visible()
    monkeypatch.setattr(harness, "free_port", lambda: old.port)
    restarted = cluster._spawn("signal", 0)
    cluster.signals[0] = restarted
    await asyncio.to_thread(cluster._wait_started, restarted)

    try:
        await asyncio.gather(
            *(
                call.wait_stats(lambda s: s["reconnects"] >= 1 and not s["reconnecting"], "resuming", RECOVERY_TIMEOUT)
                for call in (alice, bob)
            )
        )
        await asyncio.gather(
            alice.wait_playing(bob_id, "Bob's video after resuming", MEDIA_TIMEOUT),
            bob.wait_playing(alice_id, "Alice's video after resuming", MEDIA_TIMEOUT),
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n\ncluster logs:\n{cluster.logs()}") from None
    for call, own, other in ((alice, alice_id, bob_id), (bob, bob_id, alice_id)):
        stats = await call.stats()
        assert (stats["participantId"], stats["reconnects"], stats["migrations"]) == (own, 1, 0), stats
        assert await call.page.evaluate(same_pcs, other), "the peer connections were made again"
        await expect(call.page.locator("#reconnecting")).to_be_hidden()
        assert "error" not in (await call.page.get_attribute("#status", "class") or ""), await call.describe()
