"""Sends a device segment to the bank resumably: declared with its SHA-256, sent in
chunks, each retried from the offset the server reports (docs/field.md)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

import aiohttp

from .room import ClientError

log = logging.getLogger("teller.client")

CHUNK = 1 << 20


def base_url(url: str) -> str:
    """The server's http(s) base from whatever URL the client was given."""
    url = url.rstrip("/")
    for prefix, http in (("wss://", "https://"), ("ws://", "http://")):
        if url.startswith(prefix):
            url = http + url[len(prefix):]
    return url.removesuffix("/v1/rtc")


async def upload_segment(url: str, token: str, session_id: str, path: Path, meta: dict[str, Any], *,
                         chunk: int = CHUNK, attempts: int = 30, retry_s: float = 1.0) -> dict[str, Any]:
    """Uploads `path` with `meta` (kind, codec, start_wall, participant_id, label, events).

    Returns the server's answer for the last chunk (the part the segment became).
    Network failures are retried from where the server's copy ends; an answer that
    cannot get better by retrying (bad meta, checksum mismatch) raises ClientError.
    """
    data = await asyncio.to_thread(path.read_bytes)
    digest = hashlib.sha256(data).hexdigest()
    base = f"{base_url(url)}/v1/recordings/{session_id}/uploads"
    headers = {"Authorization": f"Bearer {token}"}
    upload_id: str | None = None
    offset = 0
    failures = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        while True:
            try:
                if upload_id is None:
                    async with http.post(base, json={**meta, "size": len(data), "sha256": digest}, headers=headers) as r:
                        body = await _answer(r)
                    upload_id, offset = body["upload_id"], int(body["offset"])
                    chunk = min(chunk, int(body.get("chunk_max") or chunk))
                    continue
                piece = data[offset:offset + chunk]
                async with http.patch(f"{base}/{upload_id}", data=piece,
                                      headers={**headers, "Upload-Offset": str(offset),
                                               "Content-Type": "application/octet-stream"}) as r:
                    if r.status == 409:
                        error = (await r.json(content_type=None)).get("error", {})
                        if error.get("code") in ("upload_complete", "upload_completing"):
                            return await _finished(http, f"{base}/{upload_id}", headers, retry_s)
                        offset = int((error.get("details") or {}).get("offset", offset))
                        continue
                    body = await _answer(r)
                if body.get("complete"):
                    return body
                offset = int(body["offset"])
                failures = 0
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                failures += 1
                if failures >= attempts:
                    raise ClientError("unreachable", f"upload failed after {attempts} attempts: {exc}") from exc
                await asyncio.sleep(retry_s)
                if upload_id is not None:
                    offset = await _server_offset(http, f"{base}/{upload_id}", headers, offset)


async def _finished(http: aiohttp.ClientSession, url: str, headers: dict[str, str], retry_s: float,
                    wait_s: float = 120.0) -> dict[str, Any]:
    """The server has (or is adding) the whole segment, but the answer to our last chunk
    was lost: its result, once it is there."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        async with http.get(url, headers=headers) as r:
            body = await _answer(r)
        if body.get("complete"):
            return {**body, **(body.get("result") or {})}
        if asyncio.get_running_loop().time() > deadline:
            raise ClientError("upload_unfinished", "the server did not finish adding the segment")
        await asyncio.sleep(retry_s)


async def _server_offset(http: aiohttp.ClientSession, url: str, headers: dict[str, str], fallback: int) -> int:
    try:
        async with http.get(url, headers=headers) as r:
            if r.status == 200:
                return int((await r.json())["offset"])
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass
    return fallback


async def _answer(response: aiohttp.ClientResponse) -> dict[str, Any]:
    if response.status >= 500:
        raise aiohttp.ClientResponseError(response.request_info, (), status=response.status)
    body = await response.json(content_type=None)
    if response.status >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise ClientError(error.get("code", "upload_failed"), error.get("message", str(response.status)), response.status)
    return body
