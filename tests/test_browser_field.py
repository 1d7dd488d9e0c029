"""The field officer page (/officer) and the risk reviewer desk (/review) in headless Chromium.

The officer's phone is a browser context with the fake camera and a mocked position: it
starts a field session, publishes the camera with its GPS and hears the reviewer. The
reviewer, in a second context, lists the session with the officer, the case and the
position, joins, plays the officer's video, sees the coordinates, takes an evidence
snapshot and approves. Then the officer's link drops (the context goes offline and the
server loses its socket): the phone records on its own and uploads that video once the
link is back. The server's records say the same as the pages.

Also: a phone without location permission or MediaRecorder says so, and learns when the
reviewer ends the session; slices kept through a browser crash are uploaded by the next
page, which offers the unfinished session back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .browser import SCREENSHOTS, StatsPage, chromium_context, eventually, require_browser
from .conftest import Server, start_in_process

playwright_api = require_browser(15_000)
expect = playwright_api.expect

pytestmark = pytest.mark.browser

TIMEOUT = 20.0
FARM = {"latitude": 30.5728, "longitude": 114.2719, "accuracy": 8}
BARN = {"latitude": 30.5731, "longitude": 114.2723, "accuracy": 5}


@pytest.fixture
async def field_server(tmp_path: Path) -> AsyncIterator[Server]:
    """In process (to look at the room), recording on (snapshots and device segments join it)."""
    srv, runner = await start_in_process(tmp_path, recording={"enabled": True, "composite": False})
    try:
        yield srv
    finally:
        await runner.cleanup()


async def rest(http: aiohttp.ClientSession, server: Server, method: str, path: str, token: str,
               json: Any = None) -> tuple[int, Any]:
    async with http.request(method, server.url + path, json=json, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json(content_type=None)


async def reviewer_token(http: aiohttp.ClientSession, server: Server) -> str:
    async with http.post(f"{server.url}/v1/dev/field", json={"role": "reviewer", "name": "Checker"}) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["token"])


async def test_officer_streams_with_gps_and_the_reviewer_decides(field_server: Server, http: aiohttp.ClientSession) -> None:
    server = field_server
    async with chromium_context() as officer_context:
        await officer_context.grant_permissions(["geolocation", "camera", "microphone"], origin=server.url)
        await officer_context.set_geolocation(FARM)
        reviewer_context = await officer_context.browser.new_context(permissions=["camera", "microphone"])
        try:
            # The officer signs in (a demo token), starts the session and goes live.
            officer = StatsPage(await officer_context.new_page(), "officer", TIMEOUT)
            await officer.page.goto(f"{server.url}/officer?lang=en&name=Zhang%20Wei")
            await officer.wait(lambda s: s["signedIn"], "the officer signed in")
            await officer.page.get_by_label("Customer name").fill("Li Hua")
            await officer.page.get_by_label("Case number").fill("LN-2026-0042")
            await officer.page.get_by_role("button", name="Start and call the reviewer").click()
            live = await officer.wait(lambda s: s["published"] and s["fixesSent"] > 0, "the officer publishing with GPS")
            field_id, session_id = live["fieldId"], live["sessionId"]
            live_room = await officer.page.evaluate("window.teller.state.session.room")
            await expect(officer.page.locator("#rec-bar")).to_be_visible()
            await expect(officer.page.locator("#rec-badge")).to_contain_text("REC")
            await expect(officer.page.locator("#link-state")).to_have_text("connected")
            await expect(officer.page.locator("#gps-fix")).to_have_text("30.572800, 114.271900")
            assert live["facing"] == "environment" and live["gpsProblem"] is None

            # The reviewer lists it: officer, case, position.
            reviewer = StatsPage(await reviewer_context.new_page(), "reviewer", TIMEOUT)
            await reviewer.page.goto(f"{server.url}/review?lang=en&name=Checker")
            row = reviewer.page.locator(f'#session-rows tr[data-field-id="{field_id}"]')
            await expect(row.locator(".officer")).to_have_text("Zhang Wei")
            await expect(row.locator(".customer")).to_have_text("Li Hua")
            await expect(row.locator(".case")).to_have_text("LN-2026-0042")
            await expect(row.locator(".location")).to_contain_text("30.57280, 114.27190 ±8 m")
            await expect(row.locator(".link")).to_have_text("connected")

            # Joins: the officer's video plays, the coordinates are listed, the officer hears the reviewer.
            await row.get_by_role("button", name="Join").click()
            await reviewer.wait(lambda s: s["video"]["width"] > 0 and not s["video"]["paused"] and s["decodedFrames"] > 0,
                                "the officer's video playing on the desk")
            await expect(reviewer.page.locator("#gps-list tr").first.locator(".lat")).to_have_text("30.572800")
            await expect(reviewer.page.locator("#gps-list tr").first.locator(".lon")).to_have_text("114.271900")
            await officer.wait(lambda s: s["reviewers"] == ["Checker"] and s["hearing"] == 1, "the officer hearing the reviewer")
            await expect(officer.page.locator("#reviewer-state")).to_contain_text("Checker joined")

            # The officer walks to the barn: the new fix reaches the desk live.
            await officer_context.set_geolocation(BARN)
            await reviewer.wait(lambda s: s["lastFix"] and s["lastFix"]["lat"] == BARN["latitude"], "the new fix on the desk")
            await expect(reviewer.page.locator("#gps-list tr").first.locator(".lat")).to_have_text("30.573100")
            assert await reviewer.page.evaluate("document.getElementById('map').width") > 0

            # Evidence: a snapshot with its time and position, shown as a thumbnail.
            await reviewer.page.get_by_role("button", name="Take evidence snapshot").click()
            thumbnail = reviewer.page.locator("#snapshots li img").first
            await expect(thumbnail).to_be_visible()
            await eventually(lambda: thumbnail.evaluate("img => img.complete && img.naturalWidth > 0"),
                             "the snapshot's image loaded", reviewer.describe)
            await expect(reviewer.page.locator("#snapshots li p").first).to_contain_text("30.573100")

            # Reject needs notes; approve with notes.
            await reviewer.page.get_by_label("Reject").check()
            await reviewer.page.get_by_role("button", name="Submit decision").click()
            await expect(reviewer.page.locator("#decision-error")).to_have_text("Notes are required to reject.")
            await reviewer.page.get_by_label("Approve").check()
            await reviewer.page.get_by_label("Notes").fill("herd of 40 cattle matches the application")
            await reviewer.page.get_by_role("button", name="Submit decision").click()
            await expect(reviewer.page.locator("#decision-result")).to_contain_text("approved by Checker")
            await expect(row.locator(".decision")).to_have_text("approved")
            await expect(officer.page.locator("#decision")).to_contain_text("approved by Checker")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await reviewer.page.screenshot(path=str(SCREENSHOTS / "review-en.png"), full_page=True)
            await officer.page.screenshot(path=str(SCREENSHOTS / "officer-en.png"), full_page=True)

            # The server's record says the same.
            token = await reviewer_token(http, server)
            status, record = await rest(http, server, "GET", f"/v1/field/sessions/{field_id}", token)
            assert status == 200, record
            assert record["decision"]["decision"] == "approve"
            assert record["decision"]["notes"] == "herd of 40 cattle matches the application"
            assert record["officer"]["name"] == "Zhang Wei" and record["case_number"] == "LN-2026-0042"
            assert len(record["snapshots"]) == 1 and record["snapshots"][0]["gps"]["lat"] == BARN["latitude"]
            assert {round(f["lat"], 4) for f in record["track"]} >= {FARM["latitude"], BARN["latitude"]}

            # The link drops: offline, and the server loses the socket. The phone records
            # on its own, keeps the slices, and uploads them once the link is back.
            await officer_context.set_offline(True)
            # (Chromium's offline mode refuses new connections but keeps the open socket.)
            room = server.node.rooms[live_room]
            officer_participant = next(p for p in room.participants.values() if p.role == "officer")
            officer_participant.session.close(1011, "the mobile link dropped")
            await officer.wait(lambda s: s["link"] in ("reconnecting", "offline"), "the officer's page seeing the drop")
            await expect(officer.page.locator("#link-state")).to_contain_text("link lost")
            await expect(row.locator(".link")).to_have_text("reconnecting")
            await officer.wait(lambda s: s["recording"]["active"]
                               and any((v.get("slices") or 0) >= 3 for v in s["recording"]["segments"]),
                               "three seconds kept on the phone")
            await expect(officer.page.locator("#local-list li").first).to_contain_text("recorded on the phone")
            await officer_context.set_offline(False)
            done = await officer.wait(lambda s: any(v["state"] == "uploaded" for v in s["recording"]["segments"]),
                                      "the phone's segment uploaded", timeout=40)
            await expect(officer.page.locator("#local-list li").first).to_contain_text("uploaded")
            segment = next(v for v in done["recording"]["segments"] if v["state"] == "uploaded")
            assert done["link"] in ("restored", "connected") and not done["recording"]["active"]
            session_token = await officer.page.evaluate("window.teller.state.session.token")
            status, upload = await rest(http, server, "GET", f"/v1/recordings/{session_id}/uploads/{segment['uploadId']}",
                                        session_token)
            assert status == 200 and upload["complete"] is True, upload
            assert upload["result"]["duration_s"] > 0, upload
            left = await officer.page.evaluate(
                "new Promise(r => { const q = indexedDB.open('teller-field'); q.onsuccess = () => {"
                " const c = q.result.transaction('chunks').objectStore('chunks').count(); c.onsuccess = () => r(c.result); }; })")
            assert left == 0, "the slices stay on the phone only until the server has them"

            # The officer ends the session: the desk shows it ended.
            await officer.page.get_by_role("button", name="End session").click()
            await expect(officer.page.locator("#view-ended")).to_be_visible()
            await expect(officer.page.locator("#rec-bar")).to_be_hidden()
            await expect(row.locator(".link")).to_have_text("ended")
            status, record = await rest(http, server, "GET", f"/v1/field/sessions/{field_id}", token)
            assert record["state"] == "ended"
            assert not officer.errors() and not reviewer.errors(), (officer.console, reviewer.console)
        finally:
            await reviewer_context.close()


async def test_the_phone_says_what_it_cannot_do_and_when_the_reviewer_ends(
    field_server: Server, http: aiohttp.ClientSession
) -> None:
    server = field_server
    # Camera and microphone allowed, location not; a browser without MediaRecorder.
    async with chromium_context(init_script="delete window.MediaRecorder;") as context:
        officer = StatsPage(await context.new_page(), "officer", TIMEOUT)
        await officer.page.goto(f"{server.url}/officer?lang=zh&name=%E7%8E%8B%E8%8A%B3")
        await officer.wait(lambda s: s["signedIn"], "the officer signed in")
        await officer.page.get_by_label("客户姓名").fill("赵强")
        await officer.page.get_by_role("button", name="开始并连线审核员").click()
        await expect(officer.page.locator("#start-error")).to_have_text("请填写案件编号。")
        await officer.page.get_by_label("案件编号").fill("LN-2026-0077")
        await officer.page.get_by_role("button", name="开始并连线审核员").click()
        live = await officer.wait(lambda s: s["published"] and s["gpsProblem"] == "gpsDenied",
                                  "the officer live, saying that location is denied")
        await expect(officer.page.locator("#rec-badge")).to_contain_text("录像中")
        await expect(officer.page.locator("#gps-problem")).to_contain_text("定位权限被拒绝")
        await officer.page.get_by_role("button", name="English").click()
        await expect(officer.page.locator("#rec-badge")).to_contain_text("Recording")
        await expect(officer.page.locator("#gps-problem")).to_contain_text("Location is denied")
        await expect(officer.page.locator("#local-support")).to_contain_text(
            "This phone cannot keep video during a link drop (no MediaRecorder)")
        assert "lang=en" in officer.page.url

        # The reviewer ends the session: the phone stops and says who ended it.
        token = await reviewer_token(http, server)
        status, ended = await rest(http, server, "POST", f"/v1/field/sessions/{live['fieldId']}/end", token)
        assert status == 200 and ended["state"] == "ended", ended
        await expect(officer.page.locator("#view-ended")).to_be_visible()
        await expect(officer.page.locator("#ended-text")).to_contain_text("The reviewer ended the session.")
        await expect(officer.page.locator("#rec-bar")).to_be_hidden()
        stats = await officer.stats()
        assert stats["phase"] == "ended" and stats["clientPhase"] == "idle" and not stats["recording"]["segments"]
        assert not officer.errors(), officer.console


async def test_video_kept_through_a_crash_is_uploaded_by_the_next_page_which_resumes_the_session(
    field_server: Server, http: aiohttp.ClientSession
) -> None:
    server = field_server
    async with chromium_context() as context:
        await context.grant_permissions(["geolocation", "camera", "microphone"], origin=server.url)
        await context.set_geolocation(FARM)
        officer = StatsPage(await context.new_page(), "officer", TIMEOUT)
        await officer.page.goto(f"{server.url}/officer?lang=en")
        await officer.wait(lambda s: s["signedIn"], "the officer signed in")
        await officer.page.get_by_label("Customer name").fill("Li Hua")
        await officer.page.get_by_label("Case number").fill("LN-2026-0099")
        await officer.page.get_by_role("button", name="Start and call the reviewer").click()
        live = await officer.wait(lambda s: s["published"], "the officer publishing")
        room = await officer.page.evaluate("window.teller.state.session.room")

        # The link drops and, while it is down, the browser dies: the slices stay in IndexedDB.
        await context.set_offline(True)
        participant = next(p for p in server.node.rooms[room].participants.values() if p.role == "officer")
        participant.session.close(1011, "the mobile link dropped")
        await officer.wait(lambda s: any((v.get("slices") or 0) >= 2 for v in s["recording"]["segments"]),
                           "two seconds kept on the phone")
        await officer.page.close()
        await context.set_offline(False)

        # The next page uploads them with the token kept beside them, and offers the session back.
        again = StatsPage(await context.new_page(), "officer again", TIMEOUT)
        await again.page.goto(f"{server.url}/officer?lang=en")
        done = await again.wait(lambda s: any(v["state"] == "uploaded" for v in s["recording"]["segments"]),
                                "the segment left by the crash uploaded")
        upload_id = next(v for v in done["recording"]["segments"] if v["state"] == "uploaded")["uploadId"]
        await expect(again.page.locator("#resume-panel")).to_contain_text("LN-2026-0099")
        await again.page.get_by_role("button", name="Resume it").click()
        resumed = await again.wait(lambda s: s["published"] and s["fieldId"] == live["fieldId"], "the session resumed")
        assert resumed["sessionId"] == live["sessionId"]
        session_token = await again.page.evaluate("window.teller.state.session.token")
        status, upload = await rest(http, server, "GET", f"/v1/recordings/{live['sessionId']}/uploads/{upload_id}",
                                    session_token)
        assert status == 200 and upload["complete"] is True and upload["result"]["duration_s"] > 0, upload
        await again.page.get_by_role("button", name="End session").click()
        await expect(again.page.locator("#view-ended")).to_be_visible()
        assert not again.errors(), again.console
