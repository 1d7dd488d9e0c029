"""WHIP publish and WHEP play with plain aiortc peers making non-trickle offers."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from teller.client import TestPatternTrack, ToneTrack

from .conftest import Server
from .media import receive

pytestmark = pytest.mark.media


async def _post_offer(http: aiohttp.ClientSession, url: str, token: str, pc: RTCPeerConnection) -> aiohttp.ClientResponse:
    await pc.setLocalDescription(await pc.createOffer())
    return await http.post(
        url,
        data=pc.localDescription.sdp,
        headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
    )


async def test_whip_publish_whep_play_and_delete(server: Server, room_name: str) -> None:
    publisher = RTCPeerConnection()
    publisher.addTransceiver(ToneTrack(), direction="sendonly")
    publisher.addTransceiver(TestPatternTrack(640, 480, 30), direction="sendonly")
    player = RTCPeerConnection()
    player.addTransceiver("audio", direction="recvonly")
    player.addTransceiver("video", direction="recvonly")
    cam_token = server.token(room_name, "officer", "bodycam-7")
    viewer_token = server.token(room_name, "reviewer", "risk reviewer")
    async with aiohttp.ClientSession() as http:
        try:
            response = await _post_offer(http, f"{server.url}/whip/{room_name}", cam_token, publisher)
            assert response.status == 201, await response.text()
            assert response.content_type == "application/sdp"
            whip_location = response.headers["Location"]
            assert whip_location.startswith(f"/whip/{room_name}/")
            await publisher.setRemoteDescription(RTCSessionDescription(await response.text(), "answer"))

            response = await _post_offer(http, f"{server.url}/whep/{room_name}", viewer_token, player)
            assert response.status == 201, await response.text()
            whep_location = response.headers["Location"]
            await player.setRemoteDescription(RTCSessionDescription(await response.text(), "answer"))
            tracks = {t.receiver.track.kind: t.receiver.track for t in player.getTransceivers()}

            video = await receive(tracks["video"], 2.0)
            assert video.frames > 30 and video.sizes == {(640, 480)}

            # Both sessions are participants the REST API can see.
            admin = {"Authorization": f"Bearer {server.admin_token(room_name)}"}
            async with http.get(f"{server.url}/v1/rooms/{room_name}/participants", headers=admin) as r:
                kinds = sorted(p["kind"] for p in (await r.json())["participants"])
            assert kinds == ["whep", "whip"]

            # Someone else's token cannot end the body-cam's publication.
            other = server.token(room_name, "officer", "someone else")
            async with http.delete(f"{server.url}{whip_location}", headers={"Authorization": f"Bearer {other}"}) as r:
                assert r.status == 403
                assert (await r.json())["error"]["code"] == "forbidden"

            async with http.delete(f"{server.url}{whip_location}", headers={"Authorization": f"Bearer {cam_token}"}) as r:
                assert r.status == 200

            # The player is told: RTCP BYE ends its tracks, then the WHEP session goes.
            with pytest.raises(MediaStreamError):
                while True:
                    await asyncio.wait_for(tracks["video"].recv(), 5)

            async def whep_gone() -> None:
                while True:
                    async with http.get(f"{server.url}/v1/rooms/{room_name}/participants", headers=admin) as r:
                        if not (await r.json())["participants"]:
                            return
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(whep_gone(), 5)
            async with http.delete(f"{server.url}{whep_location}", headers={"Authorization": f"Bearer {viewer_token}"}) as r:
                assert r.status == 404
        finally:
            await publisher.close()
            await player.close()


async def test_whep_picks_named_participant_and_lists_ice_servers(tmp_path, room_name: str) -> None:
    from .conftest import start_in_process

    srv, runner = await start_in_process(
        tmp_path, ice={"servers": [{"urls": ["stun:stun.example.org:3478"]}, {"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]}
    )
    publisher = RTCPeerConnection()
    publisher.addTransceiver(TestPatternTrack(320, 240, 15), direction="sendonly")
    player = RTCPeerConnection()
    player.addTransceiver("video", direction="recvonly")
    try:
        async with aiohttp.ClientSession() as http:
            response = await _post_offer(http, f"{srv.url}/whip/{room_name}", srv.token(room_name, "officer", "cam"), publisher)
            assert response.status == 201
            links = response.headers.getall("Link")
            assert '<stun:stun.example.org:3478>; rel="ice-server"' in links
            assert any(l.startswith("<turn:turn.example.org:3478>") and 'username="u"' in l for l in links)
            await publisher.setRemoteDescription(RTCSessionDescription(await response.text(), "answer"))
            cam_id = response.headers["Location"].rsplit("/", 1)[1]

            missing = await _post_offer(http, f"{srv.url}/whep/{room_name}?participant=PA_nobody", srv.token(room_name, "reviewer"), player)
            assert missing.status == 404
            assert (await missing.json())["error"]["code"] == "participant_not_found"

            player2 = RTCPeerConnection()
            player2.addTransceiver("video", direction="recvonly")
            response = await _post_offer(http, f"{srv.url}/whep/{room_name}?participant={cam_id}", srv.token(room_name, "reviewer"), player2)
            assert response.status == 201
            await player2.setRemoteDescription(RTCSessionDescription(await response.text(), "answer"))
            video = await receive(player2.getTransceivers()[0].receiver.track, 1.0)
            assert video.sizes == {(320, 240)}
            await player2.close()
    finally:
        await publisher.close()
        await player.close()
        await runner.cleanup()
