"""Wiring: the speech hub on a media process, the voice on a signalling process.

The hub (ASR results, risk cues) runs where the stages run. The voice joins rooms
through the client SDK, so it runs wherever the REST that asks for a prompt runs:
embedded, both are in the one process; in a cluster, the voice lives in the
signalling processes and reaches each room's node like any client would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..config import Config, data_dir
from ..errors import BadRequest, RateLimited
from ..ratelimit import TokenBucket
from ..recording.service import publish_session_event
from ..recording.session_info import room_call_id
from ..sfu.node import Node
from ..state import StateStore
from .hub import SpeechHub
from .tts import TtsEngine
from .voice import IDENTITY, NAMES, Utterance, VoiceParticipant, new_utterance

if TYPE_CHECKING:
    from ..signaling.contact.catalogue import Catalogue
    from ..signaling.tokens import TokenIssuer

log = logging.getLogger("teller.speech")

HUB = web.AppKey("speech_hub", SpeechHub)
START_TIMEOUT_S = 15.0
PLAY_TIMEOUT_S = 90.0
# Speech costs CPU: each caller may ask for a prompt or a synthesis every 2 s on
# average, ten at once.
SPEAK_RATE_PER_S = 0.5
SPEAK_BURST = 10
MAX_BUCKETS = 10_000


def install_hub(app: web.Application, node: Node, store: StateStore, config: Config, secret: str) -> SpeechHub:
    """The ASR stages' hub on a process that carries media."""
    from ..signaling.webhooks import Webhooks

    webhooks = Webhooks(config.webhooks) if config.webhooks.urls else None
    hub = SpeechHub(
        node, config.speech, store=store, secret=secret, cache_root=data_dir(config) / "models",
        asr_enabled="asr" in config.stages.enabled, webhook=webhooks.send if webhooks else None,
        activity_after_s=config.digital_human.barge_in_speech_s,
    )
    node.stages.services["speech"] = hub
    app[HUB] = hub

    async def start(app: web.Application) -> None:
        if webhooks is not None:
            await webhooks.start()
        hub.start()

    async def stop(app: web.Application) -> None:
        await hub.close()
        if webhooks is not None:
            await webhooks.close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return hub


class VoiceService:
    """The voice participants of this process, one per room that has needed one."""

    def __init__(self, store: StateStore, config: Config, issuer: TokenIssuer, tts: TtsEngine) -> None:
        self.store = store
        self.config = config
        self.settings = config.speech
        self.issuer = issuer
        self.tts = tts
        self.local_url: str | None = None
        self._voices: dict[str, VoiceParticipant] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.played = 0
        self.first_audio_ms: list[float] = []
        self._buckets: dict[str, TokenBucket] = {}
        # The contact centre's business catalogue, where this process runs one.
        self.catalogue: Catalogue | None = None

    def check_rate(self, who: str) -> None:
        bucket = self._buckets.get(who)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.clear()
            bucket = self._buckets[who] = TokenBucket(SPEAK_RATE_PER_S, SPEAK_BURST)
        if not bucket.take():
            raise RateLimited("too many speech requests; try again in a few seconds", code="rate_limited")

    @property
    def url(self) -> str:
        if self.settings.signal_url:
            return self.settings.signal_url
        if self.config.server.port:
            return self.config.server.base_url()
        if self.local_url:
            return self.local_url
        raise BadRequest("the voice does not know this server's address yet (set speech.signal_url)", code="tts_unavailable")

    def learn_address(self, request: web.Request) -> None:
        if self.local_url or self.settings.signal_url or self.config.server.port:
            return
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        if sock:
            host = sock[0]
            host = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
            self.local_url = f"{'https' if self.config.server.tls_cert else 'http'}://{host}:{sock[1]}"

    async def voice(self, room: str, language: str = "en") -> VoiceParticipant:
        voice = self._voices.get(room)
        if voice is not None and voice.usable:
            return voice
        lock = self._opening.setdefault(room, asyncio.Lock())
        async with lock:
            voice = self._voices.get(room)
            if voice is not None and voice.usable:
                return voice
            if voice is not None:  # removed from the room, or its room closed: a fresh one
                await self.leave(room)
            from ..client import RoomClient
            from ..signaling.tokens import Grants

            token = self.issuer.issue(room=room, role="service", subject=IDENTITY, name=NAMES.get(language, NAMES["en"]),
                                      grants=Grants(publish=True, data=True), ttl_s=self.config.auth.default_ttl_s)
            client = RoomClient(self.url, token, reconnect=True)
            voice = VoiceParticipant(room, client, self.tts, lambda state, u, room=room: self._on_event(room, state, u))
            try:
                await asyncio.wait_for(client.connect(room), START_TIMEOUT_S)
                await voice.start(START_TIMEOUT_S)
            except BaseException:
                await voice.close()
                raise
            client.on("participant_left", lambda _m, room=room: self._maybe_leave(room))
            client.on("left", lambda _m, room=room: self._spawn(self.leave(room)))
            self._voices[room] = voice
            log.info("voice joined", extra={"room": room})
            return voice

    def _maybe_leave(self, room: str) -> None:
        voice = self._voices.get(room)
        if voice is None:
            return
        others = [p for p in voice.client.participants.values() if p.get("participant_id") != voice.client.participant_id]
        if not others:
            self._spawn(self.leave(room))

    async def leave(self, room: str) -> None:
        voice = self._voices.get(room)
        if voice is not None:
            await voice.close()
            if self._voices.get(room) is voice:
                del self._voices[room]
            lock = self._opening.get(room)
            if lock is not None and not lock.locked():
                del self._opening[room]
            log.info("voice left", extra={"room": room})

    async def say(self, room: str, kind: str, text: str, language: str, by: str) -> Utterance:
        """Queues an utterance; it plays after those before it in the room."""
        text = text.strip()
        if not text:
            raise BadRequest("there is nothing to say", code="invalid_message", field="text")
        if len(text) > self.settings.max_text_chars:
            raise BadRequest(f"text is at most {self.settings.max_text_chars} characters", code="text_too_long", field="text")
        self.tts.check(language)
        voice = await self.voice(room, language)
        utterance = new_utterance(kind, text, language, by)
        voice.enqueue(utterance)
        return utterance

    async def play(self, room: str, kind: str, text: str, language: str, by: str) -> Utterance:
        utterance = await self.say(room, kind, text, language, by)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(utterance.done.wait(), PLAY_TIMEOUT_S)
        return utterance

    async def _on_event(self, room: str, state: str, u: Utterance) -> None:
        if state == "started":
            return
        if state == "finished":
            self.played += 1
            if u.first_audio_ms is not None:
                self.first_audio_ms = [*self.first_audio_ms[-199:], u.first_audio_ms]
        event = {"type": "tts_played" if state == "finished" else "tts_failed", "ts": round(time.time(), 3),
                 "by": u.by, **u.to_json()}
        await publish_session_event(self.store, room, event)
        with contextlib.suppress(Exception):
            call_id = await room_call_id(self.store, room)
            if call_id:
                await self.store.append_event(call_id, event)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the contact centre's moments --------------------------------------------------

    def on_call_event(self, kind: str, call: dict[str, Any], extra: dict[str, Any]) -> None:
        if kind == "answered" and self.settings.prompt_on_answer:
            self._spawn(self._risk_prompt(call))
        elif kind in ("ended", "abandoned") and call.get("room"):
            self._spawn(self._leave_after_playing(call["room"]))

    async def _risk_prompt(self, call: dict[str, Any]) -> None:
        if self.catalogue is None:
            return
        try:
            business = self.catalogue.get(call["business"])
        except Exception:
            return
        if "risk_prompt" not in business.steps:
            return
        language = call.get("language") or "zh"
        text = business.text(business.risk_prompt, language)
        try:
            self.tts.check(language)
            # Time for the customer's page and the desk to subscribe to the voice first.
            voice = await self.voice(call["room"], language)
            await asyncio.sleep(self.settings.prompt_delay_s)
            if not voice.closed:
                voice.enqueue(new_utterance("risk_prompt", text, language, "system"))
        except Exception as exc:
            log.warning("the risk prompt was not spoken", extra={"room": call.get("room"), "error": str(exc)})
            await publish_session_event(self.store, call["room"], {
                "type": "tts_failed", "ts": round(time.time(), 3), "kind": "risk_prompt", "text": text,
                "language": language, "error": str(exc), "by": "system",
            })

    async def _leave_after_playing(self, room: str) -> None:
        await asyncio.sleep(0.5)
        await self.leave(room)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(self.leave(room) for room in list(self._voices)), return_exceptions=True)
        self.tts.close()

    def stats(self) -> dict[str, Any]:
        fa = sorted(self.first_audio_ms)
        return {
            "languages": self.tts.languages(),
            "voices": len(self._voices),
            "played": self.played,
            "first_audio_ms_p50": round(fa[len(fa) // 2], 1) if fa else None,
        }


VOICE = web.AppKey("speech_voice", VoiceService)


def install_voice(app: web.Application, store: StateStore, config: Config, issuer: TokenIssuer) -> VoiceService:
    """The voice and the speech REST, on a process that serves the REST API."""
    from .rest import routes

    service = VoiceService(store, config, issuer, TtsEngine(config.speech))
    app[VOICE] = service

    @web.middleware
    async def learn(request: web.Request, handler: Any) -> web.StreamResponse:
        service.learn_address(request)
        return await handler(request)

    app.middlewares.append(learn)
    from ..signaling.contact.service import CENTRE

    if CENTRE in app:
        app[CENTRE].listeners.append(service.on_call_event)
        service.catalogue = app[CENTRE].router.catalogue

    async def stop(app: web.Application) -> None:
        await service.close()

    app.on_shutdown.insert(0, stop)
    app.add_routes(routes)
    return service
