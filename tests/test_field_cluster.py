"""A field visit in a cluster: the visit's REST on any signalling process, its media on a
node, evidence taken by that node and served by every signalling process."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import aiohttp
import pytest
from PIL import Image

from teller.client import RoomClient, TestPatternTrack, ToneTrack

from .redis_server import redis_binary

pytestmark = [
    pytest.mark.media,
    pytest.mark.skipif(redis_binary() is None, reason="redis-server is not installed"),
    pytest.mark.timeout(240),
]


async def call(http: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, (await r.read() if r.content_type == "image/jpeg" else await r.json(content_type=None))


async def test_a_snapshot_is_taken_by_the_node_and_served_by_every_signalling_process(cluster: Any) -> None:
    first, second = cluster.signal_urls
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{first}/v1/dev/field", json={"role": "officer", "name": "Zhang Wei"}) as r:
            officer = (await r.json())["token"]
        async with http.post(f"{second}/v1/dev/field", json={"role": "reviewer", "name": "Chen Jing"}) as r:
            reviewer = (await r.json())["token"]
        status, visit = await call(http, "POST", f"{first}/v1/field/sessions", officer,
                                   {"customer_name": "Li Hua", "case_number": "LN-2026-0101"})
        assert status == 201, visit
        field_id = visit["field_id"]
        camera = RoomClient(cluster.signal_urls, visit["token"])
        try:
            await camera.connect()
            publication = await camera.publish([ToneTrack(), TestPatternTrack(320, 240, 15)])
            await publication.wait_connected()
            await camera.send_data({"lat": 30.5728, "lon": 114.2719, "ts": time.time(), "accuracy_m": 4}, topic="gps")

            async def visit_state() -> dict[str, Any]:
                return (await call(http, "GET", f"{second}/v1/field/sessions/{field_id}", reviewer))[1]

            state: dict[str, Any] = {}

            async def poll() -> None:
                nonlocal state
                while not (state.get("fixes") and state.get("officer_connected")):
                    state = await visit_state()
                    await asyncio.sleep(0.2)

            await asyncio.wait_for(poll(), 20)  # the node's side of the visit reached the shared store
            assert state["last_fix"]["lat"] == pytest.approx(30.5728)

            status, snap = await call(http, "POST", f"{second}/v1/field/sessions/{field_id}/snapshots", reviewer, {})
            assert status == 201, snap
            assert (snap["width"], snap["height"]) == (320, 240) and snap["gps"]["lat"] == pytest.approx(30.5728)
            for url in (first, second):
                status, jpeg = await call(http, "GET", f"{url}{snap['url']}", reviewer)
                assert status == 200 and Image.open(io.BytesIO(jpeg)).size == (320, 240)

            status, _ = await call(http, "POST", f"{first}/v1/field/sessions/{field_id}/decision", reviewer,
                                          {"decision": "approve", "notes": "greenhouse as described"})
            assert status == 200
            status, body = await call(http, "POST", f"{second}/v1/field/sessions/{field_id}/end", reviewer)
            assert status == 200 and body["state"] == "ended"
            await asyncio.wait_for(camera.closed.wait(), 20)  # the room closed on its node
            status, ended = await call(http, "POST", f"{first}/v1/field/sessions/{field_id}/snapshots", reviewer, {})
            assert status == 409 and ended["error"]["code"] == "field_session_ended"
        finally:
            await camera.close()
