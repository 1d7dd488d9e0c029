"""Identity checks in a cluster: the desk's REST on one signalling process, the call's
media on a node. The challenge is started and its evidence captured by the node (a
command over the bus), the status and the evidence are served by the other signalling
process, and the override and the gate work from either."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

pytest.importorskip("mediapipe")
skimage_data = pytest.importorskip("skimage.data")

from teller.client import RoomClient
from teller.identity.synthetic import ActingFace, ActingTrack

from .cluster import LocalCluster
from .redis_server import redis_binary

pytestmark = [
    pytest.mark.media,
    pytest.mark.skipif(redis_binary() is None, reason="redis-server is not installed"),
    pytest.mark.timeout(240),
]


async def call(http: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, (await r.read() if r.content_type == "image/jpeg" else await r.json(content_type=None))


async def test_a_challenge_runs_on_the_node_and_is_served_by_every_signalling_process(tmp_path: Any) -> None:
    face = ActingFace(skimage_data.astronaut())
    cluster = LocalCluster(tmp_path, stages={"enabled": ["liveness"]},
                           identity={"position_timeout_s": 10.0, "challenge_timeout_s": 20.0})
    customer: RoomClient | None = None
    try:
        first, second = cluster.signal_urls
        issue = cluster.issuer.issue
        supervisor = issue(room="*", role="supervisor", subject="sup-1", name="Supervisor")
        agent = issue(room="desk-ag-c", role="agent", subject="ag-c", name="Agent C")
        cust = issue(room="cust-c", role="customer", subject="c", name="Customer C")
        async with aiohttp.ClientSession() as http:
            status, _ = await call(http, "PUT", f"{first}/v1/agents/ag-c", supervisor,
                                   {"name": "Agent C", "skills": {"cards": 1}, "languages": ["en", "zh"]})
            assert status == 200
            await call(http, "POST", f"{first}/v1/agents/me/state", agent, {"state": "available"})
            status, queued = await call(http, "POST", f"{second}/v1/calls", cust, {"business": "card_activation", "language": "en"})
            assert status == 201, queued
            call_id = queued["call_id"]
            status, accepted = await call(http, "POST", f"{first}/v1/calls/{call_id}/accept", agent)
            assert status == 200, accepted

            customer = RoomClient(cluster.signal_urls, cust)
            await customer.connect()
            track = ActingTrack(face, fps=15)
            customer.on("data", lambda m: track.perform(m["payload"]["step"])
                        if m.get("topic") == "identity.prompt" and m["payload"]["step"] != "position" else None)
            publication = await customer.publish([track], data_channel=False)
            await publication.wait_connected()

            async def identity(url: str) -> dict[str, Any]:
                status, body = await call(http, "GET", f"{url}/v1/calls/{call_id}/identity", agent)
                assert status == 200, body
                return body

            async def until(url: str, check: Any) -> dict[str, Any]:
                while not check(body := await identity(url)):
                    await asyncio.sleep(0.2)
                return body

            await asyncio.wait_for(until(second, lambda s: s["face"]["state"] == "one_face"), 60)
            status, started = await call(http, "POST", f"{first}/v1/calls/{call_id}/identity/liveness", agent)
            assert status == 202, started
            done = await asyncio.wait_for(until(second, lambda s: s["liveness"]["state"] in ("passed", "failed")), 60)
            assert (done["liveness"]["state"], done["satisfied"]) == ("passed", True), done

            status, jpeg = await call(http, "GET", f"{second}{done['evidence']['face']['url']}", agent)
            assert status == 200 and jpeg[:2] == b"\xff\xd8"
            status, entry = await call(http, "POST", f"{second}/v1/calls/{call_id}/identity/capture", agent, {"kind": "id_document"})
            assert status == 201 and entry["kind"] == "id_document", entry
            status, jpeg = await call(http, "GET", f"{first}{entry['url']}", agent)
            assert status == 200 and jpeg[:2] == b"\xff\xd8"
            status, confirmation = await call(http, "POST", f"{second}/v1/calls/{call_id}/confirmations", agent,
                                              {"what": "Card activation", "amount": "0", "account": "6222020200112233"})
            assert status == 201, confirmation
    finally:
        if customer is not None:
            await customer.close()
        cluster.close()
