"""The embedded call page (/call) in headless Chromium against a real `teller serve`.

Chromium's fake camera and microphone publish; the page's test hook
`window.teller.stats()` reads what each of its subscriptions decoded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from teller.client import RoomClient, TestPatternTrack, ToneTrack

from .browser import chromium_context, open_call_page, require_browser
from .conftest import Server
from .media import receive

playwright_api = require_browser(10_000)
async_playwright = playwright_api.async_playwright
expect = playwright_api.expect

pytestmark = pytest.mark.browser

MEDIA_TIMEOUT = 15.0


@dataclass
class CallPage:
    """One tab with the call page open, and what its console printed."""

    page: Any
    name: str
    console: list[str] = field(default_factory=list)

    async def stats(self) -> dict[str, Any]:
        return await self.page.evaluate("window.teller.stats()")

    async def wait(
        self, predicate: Callable[[dict[str, Any]], Any], what: str, timeout: float = MEDIA_TIMEOUT
    ) -> dict[str, Any]:
        """Poll stats() until `predicate` holds; fail with what the page showed."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                status = await self.page.text_content("#status")
                raise AssertionError(
                    f"{self.name}: {what} not within {timeout} s\n"
                    f"stats: {stats}\nstatus line: {status!r}\nconsole: {self.console[-20:]}"
                )
            await asyncio.sleep(0.1)

    async def joined(self) -> str:
        stats = await self.wait(lambda s: s["joined"], "joining")
        return stats["participantId"]

    def tile(self, participant_id: str) -> Any:
        return self.page.locator(f'#tiles [data-participant-id="{participant_id}"]')


@pytest.fixture
async def browser_context() -> AsyncIterator[Any]:
    async with chromium_context() as context:
        yield context


async def open_call(context: Any, server: Server, room: str, name: str) -> CallPage:
    call = CallPage(None, name)
    call.page = await open_call_page(context, server.url, room, name, call.console)
    return call


def receiving(participant_id: str, width: int | None = None) -> Callable[[dict[str, Any]], bool]:
    """A stats predicate: video decoded (at `width`) and audio played from the participant."""

    def check(stats: dict[str, Any]) -> bool:
        remote = stats["remote"].get(participant_id)
        return bool(
            remote
            and remote["framesDecoded"] > 0
            and remote["audioSamplesReceived"] > 0
            and (width is None or remote["frameWidth"] == width)
        )

    return check


async def wait_for_publisher(client: RoomClient, participant_id: str) -> None:
    """Until `client` knows that the participant publishes both audio and video."""
    deadline = time.monotonic() + MEDIA_TIMEOUT
    while True:
        tracks = client.participants.get(participant_id, {}).get("tracks", [])
        if {t["kind"] for t in tracks} == {"audio", "video"}:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the page published {tracks}, not audio and video")
        try:
            await client.wait_for("track_published", lambda m: m["participant_id"] == participant_id, remaining)
        except TimeoutError:
            pass


async def test_page_and_sdk_client_exchange_media(
    server_process: Server, room_name: str, browser_context: Any
) -> None:
    alice = await open_call(browser_context, server_process, room_name, "Alice")
    alice_id = await alice.joined()
    client = RoomClient(server_process.url, server_process.token(room_name, "agent", "Agent Bob"))
    await client.connect()
    try:
        publication = await client.publish([ToneTrack(), TestPatternTrack(640, 480, 30)])
        await wait_for_publisher(client, alice_id)
        assert client.participants[alice_id]["name"] == "Alice"

        # The SDK decodes Chromium's fake camera and microphone.
        subscription = await client.subscribe(alice_id)
        video, audio = await asyncio.gather(
            receive(subscription.track("video"), 1.0, first_timeout=MEDIA_TIMEOUT),
            receive(subscription.track("audio"), 1.0, first_timeout=MEDIA_TIMEOUT),
        )
        assert video.frames >= 10, video
        assert video.sizes and all(w > 0 and h > 0 for w, h in video.sizes), video.sizes
        assert audio.frames >= 10, audio

        # The page decodes the SDK's 640x480 test pattern and plays its tone.
        stats = await alice.wait(receiving(client.participant_id, width=640), "media from the SDK client")
        assert stats["participantId"] == alice_id
        assert stats["remote"][client.participant_id]["frameHeight"] == 480
        assert await alice.page.evaluate("window.teller.localParticipantId") == alice_id
        await expect(alice.tile(client.participant_id).locator("figcaption")).to_have_text("Agent Bob")

        # Unpublished: the tile goes. Published again: the page subscribes again.
        await client.unpublish(publication)
        await alice.wait(lambda s: client.participant_id not in s["remote"], "dropping the unpublished tracks")
        await expect(alice.tile(client.participant_id)).to_have_count(0)
        await client.publish([ToneTrack(), TestPatternTrack(320, 240, 30)])
        await alice.wait(receiving(client.participant_id, width=320), "media published again")
        assert "error" not in (await alice.page.get_attribute("#status", "class") or "")
    finally:
        await client.leave()
    # The page drops the tile of a participant who left.
    await alice.wait(lambda s: client.participant_id not in s["remote"], "dropping the SDK client")
    await expect(alice.tile(client.participant_id)).to_have_count(0)


async def test_two_tabs_see_each_other_and_one_leaves(
    server_process: Server, room_name: str, browser_context: Any
) -> None:
    alice = await open_call(browser_context, server_process, room_name, "Alice")
    bob = await open_call(browser_context, server_process, room_name, "Bob")
    alice_id, bob_id = await asyncio.gather(alice.joined(), bob.joined())

    await asyncio.gather(
        alice.wait(receiving(bob_id), "media from Bob"),
        bob.wait(receiving(alice_id), "media from Alice"),
    )
    await expect(alice.tile(bob_id).locator("figcaption")).to_have_text("Bob")
    await expect(bob.tile(alice_id).locator("figcaption")).to_have_text("Alice")
    await expect(alice.tile(bob_id).locator("video")).to_have_js_property("muted", False)

    await bob.page.get_by_role("button", name="Leave").click()
    await bob.wait(lambda s: not s["joined"] and not s["remote"], "leaving")
    await expect(bob.page.locator("#join")).to_have_text("Join")
    assert await bob.page.evaluate("document.getElementById('local-video').srcObject") is None

    await alice.wait(lambda s: bob_id not in s["remote"], "dropping Bob")
    await expect(alice.tile(bob_id)).to_have_count(0)
    assert (await alice.stats())["joined"]


async def test_chat_message_reaches_the_other_tab(
    server_process: Server, room_name: str, browser_context: Any
) -> None:
    alice = await open_call(browser_context, server_process, room_name, "Alice")
    bob = await open_call(browser_context, server_process, room_name, "Bob")
    alice_id, bob_id = await asyncio.gather(alice.joined(), bob.joined())
    # Both data channels open, so messages go and come over them.
    for call, other in ((alice, bob_id), (bob, alice_id)):
        await call.page.wait_for_function(
            "id => window.teller.state.participants.has(id)"
            " && window.teller.state.publisher?.channel?.readyState === 'open'",
            arg=other,
            timeout=MEDIA_TIMEOUT * 1000,
        )

    await alice.page.get_by_label("Message").fill("Hello from Alice <b>")
    await alice.page.get_by_role("button", name="Send").click()
    await expect(bob.page.locator("#chat-log")).to_contain_text("Alice: Hello from Alice <b>")
    await expect(alice.page.locator("#chat-log")).to_contain_text("You: Hello from Alice <b>")
    await expect(alice.page.get_by_label("Message")).to_have_value("")

    await bob.page.get_by_label("Message").fill("Hi Alice")
    await bob.page.get_by_label("Message").press("Enter")
    await expect(alice.page.locator("#chat-log")).to_contain_text("Bob: Hi Alice")
    assert await bob.page.locator("#chat-log b").count() == 0  # text, never markup
