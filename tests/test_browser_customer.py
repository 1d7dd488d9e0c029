"""The customer page (/customer) in headless Chromium, with the test playing the agent.

The agent is REST plus the Python SDK: it takes the call the page queued, meets the
customer in the call's room, pushes a slide and asks for a signed confirmation; the
page's test hook `window.teller.stats()` says what the page decoded and did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from teller.client import RoomClient, TestPatternTrack, ToneTrack

from .browser import SCREENSHOTS, chromium_context, eventually, require_browser
from .conftest import Server
from .media import receive

playwright_api = require_browser(15_000)
expect = playwright_api.expect

pytestmark = pytest.mark.browser

TIMEOUT = 20.0


async def rest(http: aiohttp.ClientSession, server: Server, method: str, path: str, token: str | None = None,
               json: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, server.url + path, json=json, headers=headers) as response:
        body = await response.json()
        assert response.status < 300, (method, path, response.status, body)
        return body


class CustomerPage:
    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    async def stats(self) -> dict[str, Any]:
        return await self.page.evaluate("window.teller.stats()")

    async def wait(self, predicate: Callable[[dict[str, Any]], Any], what: str) -> dict[str, Any]:
        async def check() -> Any:
            stats = await self.stats()
            return stats if predicate(stats) else None

        async def describe() -> str:
            status = await self.page.text_content("#status")
            return f"stats {await self.stats()}, status {status!r}, console {self.console[-20:]}"

        return await eventually(check, what, describe)


async def test_customer_page_start_views(server: Server) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with chromium_context() as context:
        customer = CustomerPage(await context.new_page())
        page = customer.page
        await page.set_viewport_size({"width": 1024, "height": 768})
        await page.goto(f"{server.url}/customer?lang=zh")
        await expect(page.locator('#businesses [data-business="transfer"]')).to_have_text("转账汇款")
        await expect(page.locator("h1")).to_have_text("视频柜台")
        assert await page.evaluate("document.documentElement.lang") == "zh-CN"
        await page.screenshot(path=str(SCREENSHOTS / "customer-zh.png"))

        # Switching the language re-labels the page and reloads the catalogue in it.
        await page.get_by_role("button", name="English").click()
        await expect(page.locator('#businesses [data-business="transfer"]')).to_have_text("Transfer")
        await expect(page.get_by_label("Your name")).to_be_visible()
        await expect(page.locator("h1")).to_have_text("Video counter")
        await page.screenshot(path=str(SCREENSHOTS / "customer-en.png"))

        # Large text: bigger type in steps, high-contrast, line height >= 1.3.
        async def size() -> float:
            return await page.evaluate("parseFloat(getComputedStyle(document.querySelector('.business')).fontSize)")

        normal = await size()
        await page.get_by_role("button", name="Large text").click()
        await expect(page.get_by_role("button", name="Large text")).to_have_attribute("aria-pressed", "true")
        large = await size()
        assert large > normal * 1.3, (normal, large)
        await page.get_by_role("button", name="Bigger text").click()
        assert await size() > large
        await page.get_by_role("button", name="Smaller text").click()
        assert await size() == large
        line_height = await page.evaluate(
            "(() => { const s = getComputedStyle(document.querySelector('#start-heading'));"
            " return parseFloat(s.lineHeight) / parseFloat(s.fontSize); })()"
        )
        assert line_height >= 1.3, line_height
        await page.screenshot(path=str(SCREENSHOTS / "customer-large-text.png"))

        # Every business is a button reachable from the keyboard.
        await page.get_by_label("Your name").focus()
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.dataset.business") is not None
        assert not [m for m in customer.console if m.startswith(("pageerror", "error"))], customer.console


async def test_customer_queues_meets_the_agent_signs_and_hangs_up(server: Server) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with aiohttp.ClientSession() as http, chromium_context() as context:
        supervisor = (await rest(http, server, "POST", "/v1/dev/supervisor", json={}))["token"]
        agent = await rest(http, server, "POST", "/v1/dev/agent", json={"name": "Agent Wang"})
        agent_token = agent["token"]

        customer = CustomerPage(await context.new_page())
        page = customer.page
        await page.set_viewport_size({"width": 1280, "height": 800})
        await page.goto(f"{server.url}/customer?lang=en")
        await page.get_by_label("Your name").fill("Farmer Li")
        await page.get_by_role("button", name="Transfer", exact=True).click()

        # Queued before any agent is available: first in line, camera already published.
        stats = await customer.wait(
            lambda s: s["phase"] == "waiting" and s["position"] == 1 and s["published"], "queueing and publishing"
        )
        call_id = stats["callId"]
        await expect(page.locator("#queue-position")).to_have_text("1")
        await expect(page.get_by_role("button", name="Cancel")).to_be_visible()
        queued = await rest(http, server, "GET", f"/v1/calls/{call_id}", supervisor)
        assert queued["state"] == "queued" and queued["business"] == "transfer" and queued["language"] == "en"

        # The agent comes, is offered the call and takes it.
        await rest(http, server, "POST", "/v1/agents/me/state", agent_token, {"state": "available"})
        me = await rest(http, server, "GET", "/v1/agents/me", agent_token)
        assert me["offered_call"] == call_id, me
        accepted = await rest(http, server, "POST", f"/v1/calls/{call_id}/accept", agent_token)

        data: list[dict[str, Any]] = []
        client = RoomClient(server.url, accepted["token"])
        client.on("data", data.append)
        await client.connect()
        try:
            await client.publish([ToneTrack(), TestPatternTrack(320, 240, 15)])
            customer_id = stats["participantId"]
            assert customer_id in client.participants

            # The agent sees the customer (Chromium's fake camera) ...
            subscription = await client.subscribe(customer_id)
            video = await receive(subscription.track("video"), 1.0, first_timeout=TIMEOUT)
            assert video.frames >= 5 and all(w > 0 for w, _ in video.sizes), video

            # ... and the page decodes the agent's test pattern, big, with its own preview small.
            first = await customer.wait(
                lambda s: s["phase"] == "call" and s["callState"] == "connected" and s["decodedFrames"] > 0,
                "the agent's video on the page",
            )
            assert first["agentParticipantId"] == client.participant_id
            await customer.wait(lambda s: s["decodedFrames"] > first["decodedFrames"] + 5, "more frames decoded")
            await expect(page.locator("#remote-name")).to_have_text("Agent Wang")
            await expect(page.locator("#preview")).to_be_visible()
            await expect(page.get_by_role("button", name="Hang up")).to_be_visible()

            # Material: a slide.
            slide = {"id": "m-1", "kind": "slide", "title": "Transfer limits",
                     "bullets": ["Daily limit 50,000", "Arrives <b>within</b> 2 hours"]}
            await client.send_data(slide, topic="material")
            await expect(page.locator("#material-content h3")).to_have_text("Transfer limits")
            await expect(page.locator("#material-content li").nth(1)).to_have_text("Arrives <b>within</b> 2 hours")
            await customer.wait(lambda s: s["material"] == "m-1", "the material id")
            await client.send_data({"x": 0.5, "y": 0.25}, topic="pointer")
            await expect(page.locator("#pointer")).to_be_visible()
            await client.send_data(None, topic="pointer")
            await expect(page.locator("#pointer")).to_be_hidden()
            await page.screenshot(path=str(SCREENSHOTS / "customer-call.png"))

            # Confirmation with a signature: nothing is sent until the pad is signed.
            # A transfer needs identity first (tests/test_identity_call.py): overridden here.
            await rest(http, server, "POST", f"/v1/calls/{call_id}/identity/override", agent_token,
                       {"reason": "Identity checked by the branch"})
            request = await rest(http, server, "POST", f"/v1/calls/{call_id}/confirmations", agent_token,
                                 {"what": "Transfer to Zhang San", "amount": "1,000.00", "account": "6222020012345678"})
            assert request["signature_required"] is True
            await client.send_data(request, topic="confirm_request")
            dialog = page.locator("#confirm")
            await expect(dialog).to_be_visible()
            await expect(page.locator("#confirm-amount")).to_have_text("1,000.00")
            await expect(page.locator("#confirm-account")).to_have_text(request["account_masked"])
            await page.get_by_role("button", name="Confirm").click()
            await expect(page.locator("#confirm-error")).to_have_text("Please sign before you confirm.")
            assert (await customer.stats())["confirmation"]["state"] == "pending"

            box = await page.locator("#signature").bounding_box()
            assert box is not None
            await page.mouse.move(box["x"] + 30, box["y"] + box["height"] / 2)
            await page.mouse.down()
            for i in range(1, 12):
                await page.mouse.move(box["x"] + 30 + i * 25, box["y"] + box["height"] / 2 + (15 if i % 2 else -15))
            await page.mouse.up()
            await page.get_by_role("button", name="Confirm").click()
            await customer.wait(lambda s: (s["confirmation"] or {}).get("state") == "accepted", "the confirmation")
            await expect(dialog).to_be_hidden()

            record = await rest(http, server, "GET", f"/v1/calls/{call_id}", supervisor)
            answer = record["confirmations"][0]["answer"]
            assert answer["accepted"] is True and len(answer["signature_sha256"]) == 64, record["confirmations"]

            async def confirm_done() -> Any:
                return next((m for m in data if m.get("topic") == "confirm_done"), None)

            done = await eventually(confirm_done, "confirm_done at the agent")
            assert done["payload"] == {"request_id": request["request_id"], "accepted": True}
            assert done["from_participant_id"] == customer_id

            # The customer hangs up: the call ends and the page leaves the room.
            await page.get_by_role("button", name="Hang up").click()
            await customer.wait(lambda s: s["phase"] == "ended" and s["participantId"] is None, "hanging up")
            await expect(page.locator("#view-ended")).to_be_visible()
            ended = await rest(http, server, "GET", f"/v1/calls/{call_id}", supervisor)
            assert ended["state"] == "ended", ended

            async def customer_left() -> bool:
                return customer_id not in client.participants

            await eventually(customer_left, "the customer leaving the room")
        finally:
            await client.leave()
        assert not [m for m in customer.console if m.startswith("pageerror")], customer.console
