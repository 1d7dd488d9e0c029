"""`teller client bodycam`: a field officer's body camera, simulated end to end.

It does what a real one must: publish video and sound, report GPS, keep its own
recording, survive a dropped rural link (resume within the server's window, else join
afresh), and afterwards upload, resumably and checksummed, the stretch the bank missed,
with the GPS fixes taken meanwhile. With --whip it publishes as a WHIP encoder would,
and sends GPS over REST, the way devices without a data channel do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from ..field.gps import TOPIC as GPS_TOPIC
from ..field.gps import walk
from .device import DeviceFeed, LocalRecorder, LocalSegment
from .room import ClientError, RoomClient
from .sources import media_tracks
from .uploads import base_url, upload_segment


def _print(body: dict[str, Any]) -> None:
    print(json.dumps(body), flush=True)


class Gap:
    """A stretch the link was down, as the device saw it."""

    def __init__(self, participant_id: str, session_id: str, start: float) -> None:
        self.participant_id, self.session_id, self.start = participant_id, session_id, start
        self.end: float | None = None
        self.fixes: list[dict[str, Any]] = []
        self.uploaded = False


class BodyCam:
    def __init__(self, args: argparse.Namespace, token: str, feed: DeviceFeed) -> None:
        self.args = args
        self.url = args.url
        self.token = token
        self.feed = feed
        self.client: RoomClient | None = None
        self.gaps: list[Gap] = []
        self.fixes_sent = 0
        self.uploads = 0
        self.rejoins = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ends the visit from this side: uploads what is pending, then leaves."""
        self._stop.set()

    @classmethod
    async def main(cls, args: argparse.Namespace) -> int:
        token, field_id = args.token, None
        if args.case:
            visit = await _start_visit(args.url, args.token, args.customer, args.case)
            token, field_id = visit["token"], visit["field_id"]
            _print({"event": "field_session", **{k: visit[k] for k in ("field_id", "room", "session_id")}})
        recorder = LocalRecorder(Path(args.local_dir), segment_s=args.segment_s) if args.local_dir and not args.whip else None
        feed = DeviceFeed(media_tracks(args.file, args.loop, args.width, args.height, args.fps), recorder)
        cam = cls(args, token, feed)
        try:
            if args.whip:
                await cam.run_whip(field_id)
            else:
                await cam.run()
        finally:
            await feed.close()
        return 0

    # -- WebSocket SDK: resume, local recording, uploads ---------------------------------------

    async def run(self) -> None:
        await self._join()
        reporter = asyncio.create_task(self._report())
        uploader = asyncio.create_task(self._upload_loop())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.args.duration if self.args.duration > 0 else None
        try:
            while (deadline is None or loop.time() < deadline) and not self._stop.is_set():
                assert self.client is not None
                remaining = None if deadline is None else max(0.01, deadline - loop.time())
                closed = asyncio.ensure_future(self.client.closed.wait())
                stop = asyncio.ensure_future(self._stop.wait())
                await asyncio.wait([closed, stop], timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                closed.cancel()
                stop.cancel()
                if self.client.closed.is_set() and not self._stop.is_set():
                    # The resume window passed (or the server forgot us): join again, as new.
                    _print({"event": "rejoining", "reason": self.client.close_reason})
                    await self._rejoin(deadline)
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            await self._finish_uploads(uploader)
            if self.client is not None:
                await self.client.leave()
            _print({"event": "stopped", "gps_sent": self.fixes_sent, "uploads": self.uploads, "gaps": len(self.gaps),
                    "rejoins": self.rejoins, "local_dropped": self.feed.recorder.dropped if self.feed.recorder else 0})

    async def _join(self) -> None:
        client = RoomClient(self.url, self.token, reconnect_timeout_s=self.args.reconnect_s,
                            relay_only=getattr(self.args, "relay_only", False))
        await client.connect()
        self.client = client
        client.on("reconnecting", lambda m: self._lost(client))
        client.on("resumed", lambda m: self._back(client, "resumed"))
        client.on("migrated", lambda m: self._back(client, "migrated"))
        publication = await client.publish(self.feed.live_tracks(), data_channel=True)
        await publication.wait_connected()
        _print({"event": "joined", "room": client.joined["room"]["name"], "participant_id": client.participant_id,
                "session_id": client.joined["room"].get("sid")})
        _print({"event": "publishing", "transport_id": publication.transport_id, "tracks": publication.tracks})

    async def _rejoin(self, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        delay = 1.0
        while deadline is None or loop.time() < deadline:
            try:
                await self._join()
                self.rejoins += 1
                self._back(self.client, "rejoined")  # type: ignore[arg-type]
                return
            except ClientError as exc:
                if exc.code in ("token_invalid", "token_expired", "room_forbidden"):
                    raise
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)

    def _open_gap(self) -> Gap | None:
        return self.gaps[-1] if self.gaps and self.gaps[-1].end is None else None

    def _lost(self, client: RoomClient) -> None:
        if self._open_gap() is None:
            gap = Gap(client.participant_id, str(client.joined.get("room", {}).get("sid") or ""), time.time())
            self.gaps.append(gap)
            _print({"event": "link_lost", "at": round(gap.start, 3)})

    def _back(self, client: RoomClient, how: str) -> None:
        gap = self._open_gap()
        if gap is not None:
            gap.end = time.time()
            _print({"event": "link_back", "how": how, "at": round(gap.end, 3), "down_s": round(gap.end - gap.start, 1)})
            self._wake.set()

    async def _report(self) -> None:
        for fix in walk(self.args.lat, self.args.lon, interval_s=self.args.gps_interval, seed=self.args.seed):
            body = fix.to_json()
            gap = self._open_gap()
            if gap is not None:
                gap.fixes.append(body)  # kept for the device segment's timeline
            elif self.client is not None:
                try:
                    await self.client.send_data(body, topic=GPS_TOPIC)
                    self.fixes_sent += 1
                    _print({"event": "gps", **body})
                except ClientError:
                    self._lost(self.client)
                    gap = self._open_gap()
                    if gap is not None:
                        gap.fixes.append(body)
            await asyncio.sleep(self.args.gps_interval)

    async def _upload_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._upload_ready(final=False)

    async def _finish_uploads(self, uploader: asyncio.Task[None]) -> None:
        uploader.cancel()
        await asyncio.gather(uploader, return_exceptions=True)
        if self.feed.recorder is None:
            return
        gap = self._open_gap()
        if gap is not None:
            gap.end = time.time()
        # The segments covering a gap's end close within one segment length.
        if any(not g.uploaded for g in self.gaps):
            await asyncio.sleep(self.args.segment_s + 1.0)
            self.feed.recorder.close()
        with contextlib.suppress(ClientError):
            await self._upload_ready(final=True)

    async def _upload_ready(self, *, final: bool) -> None:
        recorder = self.feed.recorder
        if recorder is None:
            return
        for gap in [g for g in self.gaps if g.end is not None and not g.uploaded]:
            assert gap.end is not None
            if not final:
                await asyncio.sleep(max(0.0, gap.end + self.args.segment_s + 1.0 - time.time()))
            segments = recorder.closed_segments(gap.start - self.args.lookback_s, gap.end + 1.0)
            events: list[dict[str, Any]] = [{"type": "link_gap", "ts": round(gap.start, 3), "end": round(gap.end, 3)}]
            events += [{"type": "gps", "ts": f["ts"], "participant_id": gap.participant_id, "topic": GPS_TOPIC, "payload": f}
                       for f in gap.fixes]
            for segment in [s for s in segments if not s.uploaded]:
                await self._upload(gap, segment, events)
                events = []
            gap.uploaded = True

    async def _upload(self, gap: Gap, segment: LocalSegment, events: list[dict[str, Any]]) -> None:
        meta = {"kind": segment.kind, "codec": segment.codec, "start_wall": round(segment.start_wall, 3),
                "participant_id": gap.participant_id, "label": "Body camera (device)", "events": events}
        result = await upload_segment(self.url, self.token, gap.session_id, segment.path, meta)
        segment.uploaded = True
        self.uploads += 1
        _print({"event": "uploaded", "kind": segment.kind, "start_wall": round(segment.start_wall, 3),
                "duration_s": result.get("duration_s"), "part": result.get("part"), "session_id": gap.session_id})

    # -- WHIP ---------------------------------------------------------------------------

    async def run_whip(self, field_id: str | None) -> None:
        """One WHIP resource; GPS as REST calls to the field session, if it is one."""
        room = _token_room(self.token)
        field_id = field_id or (room[len("field-"):] if room.startswith("field-") else None)
        pc = RTCPeerConnection()
        for track in self.feed.live_tracks():
            pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        base = base_url(self.url)
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/whip/{room}", data=pc.localDescription.sdp,
                                 headers={**headers, "Content-Type": "application/sdp"}) as r:
                if r.status != 201:
                    body = await r.json(content_type=None)
                    error = body.get("error", {}) if isinstance(body, dict) else {}
                    raise ClientError(error.get("code", "whip_failed"), error.get("message", str(r.status)), r.status)
                answer, location = await r.text(), r.headers["Location"]
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            _print({"event": "publishing", "whip": location, "field_id": field_id})
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.args.duration if self.args.duration > 0 else None
            fixes = walk(self.args.lat, self.args.lon, interval_s=self.args.gps_interval, seed=self.args.seed)
            try:
                while deadline is None or loop.time() < deadline:
                    if field_id is not None:
                        body = next(fixes).to_json()
                        async with http.post(f"{base}/v1/field/sessions/{field_id}/gps", json=body, headers=headers) as r:
                            if r.status == 202:
                                self.fixes_sent += 1
                                _print({"event": "gps", **body})
                    await asyncio.sleep(self.args.gps_interval)
            finally:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.delete(f"{base}{location}", headers=headers):
                        pass
                await pc.close()
                _print({"event": "stopped", "gps_sent": self.fixes_sent})


async def _start_visit(url: str, officer_token: str, customer: str, case: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url(url)}/v1/field/sessions", json={"customer_name": customer, "case_number": case},
                             headers={"Authorization": f"Bearer {officer_token}"}) as r:
            body = await r.json(content_type=None)
            if r.status != 201:
                error = body.get("error", {}) if isinstance(body, dict) else {}
                raise ClientError(error.get("code", "field_start_failed"), error.get("message", str(r.status)), r.status)
            return body


def _token_room(token: str) -> str:
    """The room a token names (its claims are readable; the server checks the signature)."""
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False}).get("room", ""))
