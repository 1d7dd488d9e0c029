"""The compliance replay page (/replay) in headless Chromium, on a real recorded session.

Each test records a six-second two-party call (synthetic camera and microphone through
the SFU), waits until the session is finalised, then drives the page: search and its
filters, the composite and an original track playing in the browser (our own MP4 and
Matroska/WebM writers, accepted by Chromium), timeline markers seeking the player,
downloads, export, legal hold, and a supervisor's spot-check evaluation, audited.
"""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest

from teller.client import RoomClient
from teller.recording.archive import ARCHIVE
from teller.recording.index import publish_op

from .browser import SCREENSHOTS, chromium_context, eventually, require_browser
from .conftest import Server, start_in_process
from .test_recording import RECORDING, compliance_token, get_json, ready_entry, run_call

playwright_api = require_browser(15_000)
expect = playwright_api.expect

pytestmark = pytest.mark.browser

CALL_S = 6.0
TIMEOUT = 20.0
# The composite on (RECORDING has it at 240 lines, 10 fps); every session drawn for the spot check.
REPLAY_RECORDING = {**RECORDING, "composite": True, "composite_height": 240, "spot_check_percent": 100}


@pytest.fixture
async def browser_context() -> AsyncIterator[Any]:
    async with chromium_context() as context:
        yield context


@pytest.fixture
async def recorded(tmp_path: Path, http: aiohttp.ClientSession, clients: list[RoomClient]) -> AsyncIterator[tuple[Server, dict[str, Any]]]:
    """A server with one finalised recording of a real two-party call: (server, its index entry)."""
    server, runner = await start_in_process(tmp_path, recording=REPLAY_RECORDING, rooms={"empty_timeout_s": 0.5})
    try:
        await run_call(server, "replay-room", CALL_S, clients)
        entry = await ready_entry(http, server, compliance_token(server))
        yield server, entry
    finally:
        await runner.cleanup()


def page_console(page: Any) -> list[str]:
    """The page's console and errors; a refused request is kept as "http STATUS PATH"."""
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    page.on("response", lambda response: console.append(f"http {response.status} {urlsplit(response.url).path}")
            if response.status >= 400 else None)
    return console


def page_errors(console: list[str]) -> list[str]:
    """Errors, less the one that is normal: no transcript for this session, a 404 the page
    expects. (Chromium logs every refused request as "Failed to load resource"; the
    "http" lines say which it was.)"""
    return [line for line in console
            if line.startswith("pageerror")
            or (line.startswith("http ") and not (line.startswith("http 404 ") and line.endswith("/transcript")))
            or (line.startswith("error") and not line.startswith("error: Failed to load resource"))]


async def log_in(page: Any, server: Server, name: str, role: str) -> None:
    await page.goto(f"{server.url}/replay")
    await page.fill("#login-name", name)
    await page.select_option("#login-role", role)
    await page.click("#login-btn")
    await expect(page.locator("#user-bar")).to_be_visible()
    await expect(page.locator("#app")).to_be_visible()


PLAYER = """() => {
  const p = document.getElementById("player");
  return {src: p.currentSrc, currentTime: p.currentTime, duration: p.duration, videoWidth: p.videoWidth,
          videoHeight: p.videoHeight, readyState: p.readyState, paused: p.paused,
          error: p.error && {code: p.error.code, message: p.error.message},
          source: window.teller.state.detail && window.teller.state.detail.source,
          offset: window.teller.state.detail && window.teller.state.detail.offset};
}"""

# Headless Chromium plays only muted media without a user gesture.
PLAY = """async () => {
  const p = document.getElementById("player");
  p.muted = true;
  await p.play();
}"""


async def player(page: Any) -> dict[str, Any]:
    return dict(await page.evaluate(PLAYER))


async def plays(page: Any, what: str, console: list[str], past: float = 1.0) -> dict[str, Any]:
    """Plays the player (muted) and waits until it is past `past` seconds with decoded frames."""
    await page.evaluate(PLAY)

    async def advanced() -> dict[str, Any] | None:
        p = await player(page)
        return p if p["currentTime"] > past and p["videoWidth"] > 0 else None

    async def debug() -> str:
        return f"player: {await player(page)}\nconsole: {console[-20:]}"

    return dict(await eventually(advanced, f"{what} playing in Chromium", describe=debug, timeout=TIMEOUT))


async def at(page: Any, target: float, tolerance: float = 0.25) -> bool:
    """The player has its media and is within `tolerance` of `target` seconds (its own time)."""
    p = await player(page)
    return p["readyState"] >= 1 and abs(p["currentTime"] - target) <= tolerance


async def source_loaded(page: Any, name: str) -> bool:
    p = await player(page)
    return p["source"] == name and f"/files/{quote(name, safe='')}?" in p["src"] and p["readyState"] >= 1


def local_input(epoch: float) -> str:
    """The value a datetime-local field takes for `epoch`, in this machine's time zone
    (the browser's, since both run here)."""
    return time.strftime("%Y-%m-%dT%H:%M", time.localtime(epoch))


async def search_rows(page: Any) -> list[str]:
    await page.click("#search-btn")
    await expect(page.locator("#search-btn")).to_be_enabled()
    return list(await page.locator("#results tbody tr").evaluate_all("rows => rows.map(r => r.dataset.session)"))


async def test_compliance_searches_replays_seeks_downloads_exports_and_holds(
    recorded: tuple[Server, dict[str, Any]], browser_context: Any, http: aiohttp.ClientSession
) -> None:
    server, entry = recorded
    sid = entry["session_id"]
    token = compliance_token(server)
    status, detail = await get_json(http, f"{server.url}/v1/recordings/{sid}", token)
    assert status == 200, detail
    files = {f["name"]: f for f in detail["files"]}
    composite = files["composite.mp4"]
    video_track = next(f for f in detail["files"] if f["kind"] == "track" and f["track_kind"] == "video")

    page = await browser_context.new_page()
    console = page_console(page)

    # Log in: the first search runs at once and finds the session.
    await log_in(page, server, "Auditor Zhao", "compliance")
    row = page.locator(f'#results tbody tr[data-session="{sid}"]')
    await expect(row).to_have_attribute("data-status", "ready")
    await expect(page.locator("#no-results")).to_be_hidden()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "replay-search.png"), full_page=True)

    # Filters: a time range before the call finds nothing, one around it finds it.
    started = entry["started_at"]
    await page.fill("#f-from", local_input(started - 7200))
    await page.fill("#f-to", local_input(started - 3600))
    assert await search_rows(page) == []
    await expect(page.locator("#no-results")).to_be_visible()
    await page.fill("#f-from", local_input(started - 3600))
    await page.fill("#f-to", local_input(started + 3600))
    assert await search_rows(page) == [sid]
    # Durations are in minutes: at least one minute excludes a six-second call, at most one keeps it.
    await page.fill("#f-min-duration", "1")
    assert await search_rows(page) == []
    await page.fill("#f-min-duration", "")
    await page.fill("#f-max-duration", "1")
    assert await search_rows(page) == [sid]
    await page.locator('#f-flags input[value="risk_keyword"]').check()
    assert await search_rows(page) == []
    await page.select_option("#f-status", "failed")
    await page.locator('#f-flags input[value="risk_keyword"]').uncheck()
    assert await search_rows(page) == []
    # Clear resets every field and searches again.
    await page.click("#search-reset")
    await expect(row).to_be_visible()
    assert await page.input_value("#f-from") == "" and await page.input_value("#f-status") == ""

    # Open it: the composite is the source, the manifest checks out, the timeline is drawn.
    await row.click()
    await expect(page.locator("#detail")).to_have_attribute("data-session", sid)
    await expect(page.locator("#manifest-state")).to_have_attribute("data-manifest", "true")
    await expect(page.locator("#source")).to_have_value("composite.mp4")
    src = await page.get_attribute("#player", "src")
    assert src is not None and "/files/composite.mp4?access_token=" in src, src
    joined = page.locator('#timeline-bar .marker[data-type="participant_joined"]')
    await expect(joined).to_have_count(2)
    await expect(page.locator('#timeline-bar .marker[data-type="track_published"]')).to_have_count(4)
    await expect(page.locator("#event-list li[data-seq]")).to_have_count(
        await page.locator("#timeline-bar .marker").count())

    # The composite (H.264 + AAC in our MP4) plays in Chromium.
    state = await plays(page, "the composite", console)
    assert state["videoHeight"] == 240, state
    assert CALL_S - 1.5 <= state["duration"] <= CALL_S + 3, state
    await page.screenshot(path=str(SCREENSHOTS / "replay-detail.png"), full_page=True)

    # A marker seeks the player to its moment (less the source's offset in the session).
    await page.evaluate("document.getElementById('player').pause()")
    offset = composite.get("start_offset_s") or 0
    # Markers of the same moment overlap (the joins and publications at 0:00): the one
    # drawn last is on top; the list below has every event on its own line.
    second_join = await page.locator('#event-list li[data-type="participant_joined"]').nth(1).get_attribute("data-seq")
    for marker in (page.locator('#timeline-bar .marker[data-type="track_published"]').last,
                   page.locator("#timeline-bar .marker").last,
                   page.locator(f'#event-list li[data-seq="{second_join}"] button')):
        seq = await marker.get_attribute("data-seq") or second_join
        t = float(await page.get_attribute(f'#timeline-bar .marker[data-seq="{seq}"]', "data-t") or "nan")
        await page.evaluate("document.getElementById('player').currentTime = 2")
        await eventually(lambda: at(page, 2.0), "the composite at 2 s", describe=lambda: player(page))
        await marker.click()
        target = min(max(0.0, t - offset), state["duration"])
        await eventually(lambda target=target: at(page, target), f"the marker at {t} seeking the composite to {target}",
                         describe=lambda: player(page))
    # The event list follows: the last event at or before the playhead is current.
    await expect(page.locator("#event-list li.current")).to_have_count(1)

    # An original track (VP8 in our own Matroska/WebM writer) plays too; switching keeps
    # the moment in the session (3 s into the session is 3 s less the track's offset in it).
    await page.evaluate("window.teller.seekTo(3.0)")
    await eventually(lambda: at(page, 3.0 - offset), "seekTo(3) on the composite", describe=lambda: player(page))
    await page.select_option("#source", video_track["name"])
    await eventually(lambda: source_loaded(page, video_track["name"]), "the original track loading",
                     describe=lambda: player(page))
    await eventually(lambda: at(page, 3.0 - video_track["start_offset_s"]), "the original track at the same moment",
                     describe=lambda: player(page))
    track_state = await plays(page, "the original VP8 track", console)
    assert track_state["videoWidth"] == 320 and track_state["videoHeight"] == 240, track_state
    assert abs(track_state["offset"] - video_track["start_offset_s"]) < 1e-6, track_state
    await page.evaluate("document.getElementById('player').pause()")
    await page.evaluate("window.teller.seekTo(1.5)")
    await eventually(lambda: at(page, 1.5 - video_track["start_offset_s"]), "seekTo(1.5) on the original track",
                     describe=lambda: player(page))

    # Downloads: the composite as a file (an MP4, byte for byte the archived one), the
    # originals listed, everything as one zip.
    href = await page.get_attribute("#download-composite", "href")
    assert href is not None and href.endswith("&download=1"), href
    async with page.expect_download() as download_info:
        await page.click("#download-composite")
    download = await download_info.value
    data = Path(await download.path()).read_bytes()
    assert data[4:8] == b"ftyp", data[:16]
    assert len(data) == composite["size"]
    assert hashlib.sha256(data).hexdigest() == composite["sha256"]
    for name, f in files.items():
        if f["kind"] == "track":
            link = page.locator(f'#file-list li[data-name="{name}"] a.download')
            assert (await link.get_attribute("href") or "").endswith("&download=1")
    async with page.expect_download() as export_info:
        await page.click("#export")
    export = await export_info.value
    with zipfile.ZipFile(io.BytesIO(Path(await export.path()).read_bytes())) as bundle:
        names = {n.split("/", 1)[1] for n in bundle.namelist()}
        assert {"composite.mp4", "manifest.json", "timeline.json", video_track["name"]} <= names, names
        assert bundle.read(f"{sid}/composite.mp4") == data

    # Legal hold: a reason, then the state says held (and the archive agrees).
    await expect(page.locator("#hold-state")).to_have_attribute("data-hold", "false")
    await page.fill("#hold-reason", "Complaint 2026-118: customer disputes the transfer")
    await page.click("#hold-toggle")
    await expect(page.locator("#hold-state")).to_have_attribute("data-hold", "true")
    await expect(page.locator("#hold-state")).to_contain_text("Complaint 2026-118")
    await expect(page.locator("#hold-toggle")).to_have_attribute("data-hold", "true")
    status, after = await get_json(http, f"{server.url}/v1/recordings/{sid}", token)
    assert after["session"]["legal_hold"] is True and "Complaint 2026-118" in after["session"]["hold_reason"]

    # Back to the list: the row carries the hold badge.
    await page.click("#detail-close")
    await expect(row.locator(".badge.hold")).to_be_visible()
    assert not page_errors(console), console


async def test_supervisor_cannot_hold_but_evaluates_a_spot_check_and_is_audited(
    recorded: tuple[Server, dict[str, Any]], browser_context: Any, http: aiohttp.ClientSession
) -> None:
    server, entry = recorded
    sid = entry["session_id"]
    # The spot check draws per agent; link the session to one as the contact centre would.
    archive = server.app[ARCHIVE]  # type: ignore[index]
    await publish_op(archive.state, {"op": "upsert", "entry": {"session_id": sid, "agent_id": "AG_1", "agent_name": "Wang"}})

    page = await browser_context.new_page()
    console = page_console(page)
    await log_in(page, server, "Supervisor Chen", "supervisor")
    row = page.locator(f'#results tbody tr[data-session="{sid}"]')
    await expect(row).to_contain_text("Wang")

    # A supervisor replays but cannot place a legal hold: the form is not shown.
    await row.click()
    await expect(page.locator("#detail")).to_have_attribute("data-session", sid)
    await expect(page.locator("#hold-state")).to_have_attribute("data-hold", "false")
    await expect(page.locator("#hold-form")).to_be_hidden()
    await plays(page, "the composite", console, past=0.5)

    # The spot check for the session's ISO week draws it (100 %), not yet evaluated.
    week = time.strftime("%G-W%V", time.gmtime(entry["started_at"]))
    await page.click("#tab-spot")
    await expect(page.locator("#spot-panel")).to_be_visible()
    await page.fill("#spot-week", week)
    await page.click("#spot-load")
    spot_row = page.locator(f'#spot-table tbody tr[data-session="{sid}"]')
    await expect(spot_row).to_have_attribute("data-evaluated", "false")
    await expect(spot_row).to_contain_text("Wang")

    # Evaluate it with the form.
    await spot_row.locator("button.evaluate").click()
    await expect(page.locator("#detail")).to_have_attribute("data-session", sid)
    await expect(page.locator("#score-greeting")).to_be_focused()
    scores = {"greeting": 5, "identity_check": 4, "risk_disclosure": 5, "accuracy": 3, "courtesy": 5}
    for key, value in scores.items():
        await page.select_option(f"#score-{key}", str(value))
    await page.fill("#eval-comments", "Clear risk disclosure; confirm the payee's name next time.")
    await page.click("#eval-submit")
    evaluation = page.locator("#evaluations li[data-evaluation]")
    await expect(evaluation).to_have_count(1)
    await expect(evaluation).to_contain_text("22/25")
    await expect(evaluation).to_contain_text("Supervisor Chen")

    # Back on the spot check, the row is marked evaluated, and stays so when drawn again.
    await page.click("#detail-close")
    await expect(page.locator("#spot-panel")).to_be_visible()
    await expect(spot_row).to_have_attribute("data-evaluated", "true")
    await page.click("#spot-load")
    await expect(spot_row).to_have_attribute("data-evaluated", "true")

    # A token in the address skips the login form; ?lang=zh shows the page in Chinese.
    zh = await browser_context.new_page()
    zh_console = page_console(zh)
    await zh.goto(f"{server.url}/replay?token={compliance_token(server, name='Auditor Qian')}&lang=zh")
    await expect(zh.locator("#app")).to_be_visible()
    await expect(zh.locator("#login-form")).to_be_hidden()
    await expect(zh.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(zh.locator("#user-label")).to_have_text("Auditor Qian · 合规")
    await expect(zh.locator("#search-btn")).to_have_text("检索")
    await expect(zh.locator(f'#results tbody tr[data-session="{sid}"]')).to_be_visible()
    assert not page_errors(zh_console), zh_console

    # The audit log has it all, by that supervisor.
    status, body = await get_json(http, f"{server.url}/v1/audit", compliance_token(server),
                                  actor="Supervisor Chen", limit="500")
    assert status == 200, body
    mine = body["entries"]
    assert mine and all(e["role"] == "supervisor" and e["outcome"] == "ok" for e in mine), mine
    actions = {e["action"] for e in mine}
    assert {"search", "view", "play", "spot_check", "evaluate"} <= actions, actions
    assert any(e["action"] == "play" and e["target"] == sid and e["file"] == "composite.mp4" for e in mine)
    assert any(e["action"] == "evaluate" and e["target"] == sid and e["details"]["total"] == 22 for e in mine)
    assert not any(e["action"] == "legal_hold" for e in mine)
    assert not page_errors(console), console
