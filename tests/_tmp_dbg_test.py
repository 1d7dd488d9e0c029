from tests.test_browser import *  # noqa
async def test_dbg(server_process, room_name, browser_context):
    page = await browser_context.new_page()
    page.on("response", lambda r: print("RESP", r.status, r.url) if r.status >= 400 else None)
    await page.goto(f"{server_process.url}/call?room=x&name=y&autojoin=1")
    await page.wait_for_function("window.teller.state.phase === 'joined'")
    await asyncio.sleep(1)
