"""The agent desk (/desk) and the supervisor wallboard (/wallboard) in headless Chromium.

The customer is played by REST and the Python SDK: it queues, publishes a test
pattern, receives the agent's camera, the pushed material and the confirmation
request, and answers the confirmation as the customer page would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from teller.client import RoomClient, TestPatternTrack, ToneTrack

from .browser import SCREENSHOTS, chromium_context, eventually, require_browser
from .conftest import Server
from .documents import minimal_pdf
from .media import receive

playwright_api = require_browser(15_000)
expect = playwright_api.expect

pytestmark = pytest.mark.browser

TIMEOUT = 20.0
# A 1x1 PNG: the customer's "signature".
PNG_DATA_URL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@pytest.fixture
async def browser_context() -> AsyncIterator[Any]:
    async with chromium_context() as context:
        yield context


async def rest(http: aiohttp.ClientSession, server: Server, method: str, path: str, token: str | None = None,
               json: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, server.url + path, json=json, headers=headers) as response:
        return response.status, await response.json()


def supervisor(server: Server) -> str:
    return server.issuer.issue(room="*", role="supervisor", subject="sup-1", name="Supervisor")


def page_console(page: Any) -> list[str]:
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    return console


async def test_agent_takes_a_call_pushes_material_confirms_and_wraps_up(
    server: Server, browser_context: Any, http: aiohttp.ClientSession
) -> None:
    # The customer queues for a transfer and waits in its room with a test pattern.
    cust = server.issuer.issue(room="cust-x", role="customer", subject="x", name="Ms X")
    status, queued = await rest(http, server, "POST", "/v1/calls", cust, {"business": "transfer", "language": "en"})
    assert status == 201, queued
    call_id = queued["call_id"]
    customer = RoomClient(server.url, cust)
    received: list[dict[str, Any]] = []
    customer.on("data", received.append)
    await customer.connect()
    try:
        await customer.publish([ToneTrack(), TestPatternTrack(320, 240, 15)])

        page = await browser_context.new_page()
        console = page_console(page)

        async def stats() -> dict[str, Any]:
            return await page.evaluate("window.teller.stats()")

        async def debug() -> str:
            return f"stats: {await stats()}\nstatus: {await page.text_content('#status')!r}\nconsole: {console[-20:]}"

        await page.goto(f"{server.url}/desk")
        await page.get_by_label("Your name").fill("Agent Kim")
        await page.get_by_role("button", name="Log in").click()
        await expect(page.locator("#agent-bar")).to_be_visible()
        await page.get_by_label("Set state").select_option("available")
        await page.get_by_role("button", name="Set", exact=True).click()

        # The offer: business, customer, channel; accepted with a click.
        await expect(page.locator("#incoming")).to_be_visible(timeout=TIMEOUT * 1000)
        await expect(page.locator("#in-business")).to_have_text("Transfer")
        await expect(page.locator("#in-customer")).to_have_text("Ms X")
        await page.get_by_role("button", name="Accept (A)").click()
        await eventually(lambda: page_stats_ok(stats, call_id), "the page taking the call", describe=debug)
        await expect(page.locator("#script-antifraud")).to_contain_text("Police")

        # Both sides decode video.
        agent_id = (await stats())["agentId"]
        agent_participant = await eventually(
            lambda: next((pid for pid, p in customer.participants.items() if p.get("identity") == agent_id
                          and {t["kind"] for t in p.get("tracks", [])} >= {"video"}), None),
            "the desk publishing its camera", describe=debug)
        subscription = await customer.subscribe(agent_participant)
        video = await receive(subscription.track("video"), 0.5, first_timeout=TIMEOUT)
        assert video.frames > 0, video
        await eventually(lambda: decoded(stats), "the desk decoding the customer's video", describe=debug)

        # Material: a slide pushed to the customer.
        await page.get_by_label("Slide").select_option("product")
        await page.get_by_role("button", name="Push to customer").click()
        material = await eventually(lambda: next((m for m in received if m.get("topic") == "material"), None),
                                    "the material reaching the customer", describe=debug)
        assert material["payload"]["title"] == "Transfer" and material["payload"]["kind"] == "slide"
        assert material["payload"]["bullets"]

        # A PDF uploaded on the desk: its second page goes to the customer as an image.
        await page.get_by_label("Upload a PDF or image").set_input_files(
            files=[{"name": "product.pdf", "mimeType": "application/pdf", "buffer": minimal_pdf(["Fees", "Risks"])}]
        )
        await expect(page.get_by_label("Slide")).to_contain_text("product.pdf — page 2")
        await page.get_by_label("Slide").select_option(label="product.pdf — page 2")
        await expect(page.locator("#preview-image")).to_be_visible()
        await page.get_by_role("button", name="Push to customer").click()
        pdf_page = await eventually(
            lambda: next((m for m in received if m.get("topic") == "material" and m["payload"].get("kind") == "image"), None),
            "the PDF page reaching the customer", describe=debug)
        assert pdf_page["payload"]["url"].endswith("/2.png")
        async with http.get(server.url + pdf_page["payload"]["url"]) as r:
            assert r.status == 200 and r.content_type == "image/png"

        # Pointer on, moved over the preview, then off.
        await page.get_by_role("button", name="Point").click()
        box = await page.locator("#material-preview").bounding_box()
        await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 4)
        pointer = await eventually(lambda: next((m for m in received if m.get("topic") == "pointer" and m["payload"]), None),
                                   "the pointer reaching the customer", describe=debug)
        assert 0 <= pointer["payload"]["x"] <= 1 and 0 <= pointer["payload"]["y"] <= 1
        await page.get_by_role("button", name="Point").click()
        await eventually(lambda: any(m.get("topic") == "pointer" and m["payload"] is None for m in received),
                         "the pointer hidden", describe=debug)

        # Confirmation: asked from the form, answered as the customer, shown on the desk.
        # A transfer needs identity first: a supervisor overrides it here (the check itself
        # is tests/test_identity_call.py), and the desk's confirm button unblocks.
        status, overridden = await rest(http, server, "POST", f"/v1/calls/{call_id}/identity/override", supervisor(server),
                                        {"reason": "Identity checked by the branch"})
        assert status == 200 and overridden["satisfied"], overridden
        await page.get_by_label("Amount").fill("500.00 CNY")
        await page.get_by_label("Account").fill("6222020200112233")
        await page.get_by_role("button", name="Ask to confirm").click()
        request = await eventually(lambda: next((m for m in received if m.get("topic") == "confirm_request"), None),
                                   "the confirmation request reaching the customer", describe=debug)
        confirmation = request["payload"]
        assert confirmation["amount"] == "500.00 CNY" and confirmation["signature_required"] is True
        assert "6222020200112233" not in confirmation["account_masked"]
        status, answer = await rest(http, server, "POST", f"/v1/calls/{call_id}/confirmations/{confirmation['request_id']}",
                                    cust, {"accepted": True, "signature": PNG_DATA_URL})
        assert status == 200, answer
        await customer.send_data({"request_id": confirmation["request_id"], "accepted": True}, topic="confirm_done")
        await expect(page.locator("#confirm-status")).to_contain_text("confirmed")
        assert (await stats())["lastConfirmation"]["status"] == "confirmed"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "desk-en.png"), full_page=True)

        # The same call in Chinese: the switch translates the page and fetches the catalogue
        # in Chinese (business name, script, slides), then back to English.
        catalogue_langs: list[str] = []
        page.on("request", lambda r: catalogue_langs.append(r.url.split("lang=")[-1]) if "/v1/catalogue" in r.url else None)
        await page.get_by_role("button", name="中文").click()
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        await expect(page.get_by_role("button", name="推送给客户")).to_be_visible()
        await expect(page.get_by_role("button", name="挂断 (H)")).to_be_visible()
        await expect(page.locator("#call-business")).to_have_text("转账汇款")
        await expect(page.get_by_label("幻灯片")).to_contain_text("开始之前：风险提示")
        await expect(page.locator("#confirm-status")).to_have_text("客户已确认。")  # kept across the switch
        assert "zh" in catalogue_langs and "lang=zh" in page.url
        await page.screenshot(path=str(SCREENSHOTS / "desk-zh.png"), full_page=True)
        await page.get_by_role("button", name="English").click()
        await expect(page.get_by_role("button", name="Hang up (H)")).to_be_visible()
        await expect(page.locator("#call-business")).to_have_text("Transfer")
        await expect(page.locator("#confirm-status")).to_contain_text("confirmed")

        # Hang up with the keyboard shortcut, wrap up: available again.
        await page.locator("body").focus()
        await page.keyboard.press("h")
        await expect(page.locator("#wrapup")).to_be_visible()
        assert (await stats())["callState"] == "ended"
        await page.get_by_label("Code").select_option("resolved")
        await page.get_by_label("Notes").fill("transfer confirmed")
        await page.get_by_role("button", name="Finish wrap-up").click()
        await eventually(lambda: page_state(stats, "available"), "the desk back to available", describe=debug)
        status, agents = await rest(http, server, "GET", "/v1/agents", supervisor(server))
        assert {a["agent_id"]: a["state"] for a in agents["agents"]}[agent_id] == "available"
        status, ended = await rest(http, server, "GET", f"/v1/calls/{call_id}", supervisor(server))
        assert ended["state"] == "ended" and ended["wrap_ups"][0]["code"] == "resolved"
        assert not [c for c in console if c.startswith("pageerror")], console
    finally:
        await customer.close()


async def page_stats_ok(stats: Callable[[], Any], call_id: str) -> bool:
    s = await stats()
    return s["callId"] == call_id and s["callState"] == "connected"


async def decoded(stats: Callable[[], Any]) -> bool:
    return (await stats())["decodedFrames"] > 0


async def page_state(stats: Callable[[], Any], state: str) -> bool:
    return (await stats())["state"] == state


async def test_wallboard_shows_queues_agents_and_force_ends_a_call(
    server: Server, browser_context: Any, http: aiohttp.ClientSession
) -> None:
    sup = supervisor(server)
    status, _ = await rest(http, server, "PUT", "/v1/agents/ag-lee", sup,
                           {"name": "Agent Lee", "skills": {"payments": 5}, "languages": ["zh", "en"]})
    assert status == 200
    cust = server.issuer.issue(room="cust-y", role="customer", subject="y", name="Mr Y")
    status, queued = await rest(http, server, "POST", "/v1/calls", cust, {"business": "transfer"})
    assert status == 201
    call_id = queued["call_id"]

    page = await browser_context.new_page()
    console = page_console(page)
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("recording refused")))
    await page.goto(f"{server.url}/wallboard")
    payments = page.locator('#queues [data-skill="payments"]')
    await expect(payments.locator(".waiting")).to_have_text("1")
    await expect(page.locator('#agents [data-state="offline"] [data-agent-id="ag-lee"]')).to_contain_text("Agent Lee")
    await expect(page.locator(f'#waiting [data-call-id="{call_id}"]')).to_contain_text("Mr Y")

    # The agent takes the call: a live session with a force-end button.
    agent = server.issuer.issue(room="desk-ag-lee", role="agent", subject="ag-lee", name="Agent Lee")
    assert (await rest(http, server, "POST", "/v1/agents/me/state", agent, {"state": "available"}))[0] == 200
    status, accepted = await rest(http, server, "POST", f"/v1/calls/{call_id}/accept", agent)
    assert status == 200, accepted
    row = page.locator(f'#live [data-call-id="{call_id}"]')
    await expect(row).to_contain_text("Agent Lee")
    await expect(row).to_contain_text("Transfer")
    await expect(page.locator('#agents [data-state="busy"] [data-agent-id="ag-lee"]')).to_be_visible()
    await expect(payments.locator(".waiting")).to_have_text("0")
    await expect(payments.locator(".service-level")).to_have_text("100%")
    await expect(row.get_by_role("button", name="Whisper to the agent")).to_be_disabled()  # until monitoring
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "wallboard-en.png"), full_page=True)

    await row.get_by_role("button", name="Force end").click()
    await expect(row).to_have_count(0)
    status, ended = await rest(http, server, "GET", f"/v1/calls/{call_id}", sup)
    assert ended["state"] == "ended" and ended["ended_by"].startswith("supervisor")
    await expect(page.locator('#agents [data-state="wrap_up"] [data-agent-id="ag-lee"]')).to_be_visible()
    stats = await page.evaluate("window.teller.stats()")
    assert stats["live"] == [] and stats["queues"]["payments"]["answered"] == 1
    assert not [c for c in console if c.startswith("pageerror")], console


async def test_wallboard_statistics_csv_and_chinese(
    server: Server, browser_context: Any, http: aiohttp.ClientSession
) -> None:
    sup = supervisor(server)
    status, _ = await rest(http, server, "PUT", "/v1/agents/ag-wu", sup,
                           {"name": "Agent Wu", "skills": {"payments": 5}, "languages": ["zh", "en"]})
    assert status == 200
    agent = server.issuer.issue(room="desk-ag-wu", role="agent", subject="ag-wu", name="Agent Wu")
    assert (await rest(http, server, "POST", "/v1/agents/me/state", agent, {"state": "available"}))[0] == 200
    cust = server.issuer.issue(room="cust-z", role="customer", subject="z", name="Ms Z")
    status, queued = await rest(http, server, "POST", "/v1/calls", cust, {"business": "transfer"})
    assert status == 201, queued
    call_id = queued["call_id"]
    status, accepted = await rest(http, server, "POST", f"/v1/calls/{call_id}/accept", agent)
    assert status == 200, accepted

    page = await browser_context.new_page()
    console = page_console(page)
    await page.goto(f"{server.url}/wallboard")
    await expect(page.locator(f'#live [data-call-id="{call_id}"]')).to_contain_text("Ms Z")

    # Statistics by business: the call counts under "transfer".
    stats = page.get_by_role("region", name="Statistics")
    await stats.get_by_label("Group by").select_option("business")
    row = page.locator('#stats-table [data-group="transfer"]')
    await expect(row.locator('[data-column="group"]')).to_have_text("Transfer")
    await expect(row.locator('[data-column="requests"]')).not_to_have_text("0")
    assert int(await row.locator('[data-column="requests"]').text_content()) >= 1
    await expect(row.locator('[data-column="connected"]')).to_have_text("1")

    # The CSV: fetched with the supervisor's token, saved as a file.
    async with page.expect_download() as download_info:
        await stats.get_by_role("button", name="Download CSV").click()
    download = await download_info.value
    assert download.suggested_filename.startswith("teller-stats-business") and download.suggested_filename.endswith(".csv")
    text = Path(await download.path()).read_text(encoding="utf-8")
    assert text.startswith("group,requests,connected"), text
    assert any(line.startswith("transfer,") for line in text.splitlines()), text

    # Chinese: the switch translates the board and fetches the catalogue in Chinese.
    await page.get_by_role("button", name="中文").click()
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(page.get_by_role("heading", name="运营统计")).to_be_visible()
    live = page.locator(f'#live [data-call-id="{call_id}"]')
    await expect(live).to_contain_text("转账汇款")
    await expect(live.get_by_role("button", name="强制结束")).to_be_visible()
    await expect(row.locator('[data-column="group"]')).to_have_text("转账汇款")
    await expect(page.get_by_role("button", name="下载 CSV")).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "wallboard-zh.png"), full_page=True)

    # ?lang=zh on a fresh load: Chinese from the start.
    zh = await browser_context.new_page()
    requested: list[str] = []
    zh.on("request", lambda r: requested.append(r.url) if "/v1/catalogue" in r.url else None)
    await zh.goto(f"{server.url}/wallboard?lang=zh")
    await expect(zh.get_by_role("heading", name="队列")).to_be_visible()
    await expect(zh.locator(f'#live [data-call-id="{call_id}"]')).to_contain_text("转账汇款")
    assert any(url.endswith("lang=zh") for url in requested), requested
    assert not [c for c in console if c.startswith("pageerror")], console
