"""Headless Chromium for the page tests: the binary, its flags, a context, a tab."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_browser(expect_timeout_ms: int | None = None) -> Any:
    """Called at a browser test module's top: skips the module without Chromium or
    Playwright, else returns playwright.async_api (its `expect` set to the timeout)."""
    import pytest

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (CI installs it)", allow_module_level=True)
    api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    if expect_timeout_ms is not None:
        api.expect.set_options(timeout=expect_timeout_ms)
    return api


@asynccontextmanager
async def chromium_context(init_script: str | None = None, extra_args: list[str] | None = None) -> AsyncIterator[Any]:
    """A browser context with the fake camera and microphone already allowed; `extra_args`
    e.g. make the fake microphone play a WAV file (--use-file-for-fake-audio-capture)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                   args=[*CHROMIUM_ARGS, *(extra_args or [])])
        try:
            context = await browser.new_context(permissions=["camera", "microphone"])
            if init_script:
                await context.add_init_script(init_script)
            yield context
            await context.close()
        finally:
            await browser.close()


async def open_call_page(context: Any, url: str, room: str, name: str, console: list[str]) -> Any:
    """A tab on /call that joins at once, its console and page errors kept in `console`."""
    page = await context.new_page()
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    await page.goto(f"{url}/call?{urlencode({'room': room, 'name': name, 'autojoin': '1'})}")
    return page


async def eventually(
    check: Callable[[], Any], what: str, describe: Callable[[], Any] | None = None, timeout: float = 20.0
) -> Any:
    """Polls `check` (plain or async) until it returns something truthy, and returns it.

    On timeout the AssertionError names `what` and adds `describe()` (plain or async):
    what the page showed, so a failure says why.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            extra = describe() if describe else ""
            if asyncio.iscoroutine(extra):
                extra = await extra
            raise AssertionError(f"{what} not within {timeout} s\n{extra}")
        await asyncio.sleep(0.1)


class StatsPage:
    """A tab with its console kept and a polling wait on the page's `window.teller.stats()`."""

    def __init__(self, page: Any, name: str, timeout: float = 30.0) -> None:
        self.page = page
        self.name = name
        self.timeout = timeout
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    async def stats(self) -> dict[str, Any]:
        return dict(await self.page.evaluate("window.teller.stats()"))

    async def describe(self) -> str:
        status = await self.page.text_content("#status")
        return f"{self.name}: stats {await self.stats()}\nstatus {status!r}\nconsole {self.console[-20:]}"

    async def wait(self, predicate: Callable[[dict[str, Any]], Any], what: str, timeout: float | None = None) -> dict[str, Any]:
        async def check() -> Any:
            stats = await self.stats()
            return stats if predicate(stats) else None

        return dict(await eventually(check, f"{self.name}: {what}", self.describe, timeout or self.timeout))

    def errors(self) -> list[str]:
        return [c for c in self.console if c.startswith("pageerror")]
