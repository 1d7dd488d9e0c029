"""The digital humans of a signalling process: one per call the routing gives them.

It lives beside the contact centre (the routing says when a call goes to the bot)
and the voice service (whose address the bot joins at). The portrait is analysed
once per process, in a worker thread; each bot gets its own renderer over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import Counter
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..config import Config
from ..recording.service import publish_session_event
from ..speech.voice import VoiceTrack
from ..state import StateStore, StateUnavailable
from .answer import Answerer, ChainAnswerer, FaqAnswerer, HttpAnswerer
from .bot import IDENTITY, DigitalHuman
from .faq import FaqBase
from .texts import TEXTS, text

if TYPE_CHECKING:
    from ..signaling.contact.routing import Router
    from ..signaling.tokens import TokenIssuer
    from ..speech.service import VoiceService

log = logging.getLogger("teller.digital_human")

START_TIMEOUT_S = 20.0
# Finished bots whose figures still count in /v1/digital-human.
KEEP_FIGURES = 200


class DigitalHumanService:
    def __init__(self, store: StateStore, config: Config, issuer: TokenIssuer, voice: VoiceService, router: Router) -> None:
        self.store = store
        self.config = config
        self.settings = config.digital_human
        self.issuer = issuer
        self.voice = voice
        self.router = router
        self.faq = FaqBase.load(self.settings.faq or None)
        answerers: list[Answerer] = [FaqAnswerer(self.faq)]
        if self.settings.llm_url:
            answerers.append(HttpAnswerer(self.settings.llm_url, self.settings.llm_token, self.settings.llm_timeout_s))
        self.answerer = ChainAnswerer(answerers)
        self.bots: dict[str, DigitalHuman] = {}
        self._stopping: set[DigitalHuman] = set()
        self._starting: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._portrait: Any = None
        self._portrait_lock = asyncio.Lock()
        self.avatar_error: str | None = None
        self.prepared = False
        self.started = 0
        self.failed = 0
        self.handovers: Counter[str] = Counter()
        self.answer_start_s: list[float] = []
        self.barge_in_ms: list[float] = []

    # -- ahead of the first call -----------------------------------------------------------

    def start(self) -> None:
        if self.settings.prepare:
            self._spawn(self._prepare())

    async def _prepare(self) -> None:
        """The portrait's rig, then every fixed line and FAQ answer into the TTS cache."""
        await self.portrait()
        tts = self.voice.tts
        for language in tts.languages():
            lines = [text(key, language) for key in TEXTS["en"] if key != "name"]
            lines += [entry.answers[language] for entry in self.faq.entries if language in entry.answers]
            for line in lines:
                try:
                    await tts.prepare(line, language)
                except Exception as exc:
                    log.warning("the bot's lines could not be prepared", extra={"language": language, "error": repr(exc)})
                    break
        self.prepared = True
        log.info("digital human prepared", extra={"languages": tts.languages()})

    # -- the face ------------------------------------------------------------------------

    async def portrait(self) -> Any:
        """The analysed portrait, shared by every bot of this process (None: no face)."""
        async with self._portrait_lock:
            if self._portrait is None and self.avatar_error is None:
                try:
                    from .renderer import load_rig

                    s = self.settings
                    self._portrait = await asyncio.to_thread(load_rig, s.portrait or None, s.width, s.height)
                except Exception as exc:  # the bot still talks, with no face
                    self.avatar_error = str(exc) or type(exc).__name__
                    log.error("the avatar cannot be drawn", extra={"error": self.avatar_error})
            return self._portrait

    async def _video(self, voice: VoiceTrack, seed: int) -> Any:
        rig = await self.portrait()
        if rig is None:
            return None
        from .renderer import AvatarRenderer
        from .track import AvatarTrack

        return AvatarTrack(AvatarRenderer(rig, fps=self.settings.fps, seed=seed), voice)

    # -- the routing's moments -------------------------------------------------------------

    def on_call_event(self, kind: str, call: dict[str, Any], extra: dict[str, Any]) -> None:
        call_id = call.get("call_id", "")
        if kind == "to_bot":
            self._spawn(self.start_bot(call))
        elif kind == "handover":
            self.handovers[str(extra.get("reason") or "")] += 1
        elif kind in ("answered", "transferred", "joined", "ended", "abandoned", "overflowed") and call_id in self.bots:
            self._spawn(self.stop_bot(call_id))

    async def start_bot(self, call: dict[str, Any]) -> DigitalHuman | None:
        call_id = call["call_id"]
        if call_id in self.bots or call_id in self._starting:
            return self.bots.get(call_id)
        self._starting.add(call_id)
        bot: DigitalHuman | None = None
        try:
            from ..client import RoomClient
            from ..signaling.tokens import Grants

            language = call.get("language") or "zh"
            token = self.issuer.issue(room=call["room"], role="service", subject=IDENTITY, name=text("name", language),
                                      grants=Grants(publish=True, data=True), ttl_s=self.config.auth.default_ttl_s)
            client = RoomClient(self.voice.url, token, reconnect=True)
            voice = VoiceTrack()
            bot = DigitalHuman(
                call, client, self.voice.tts, self.answerer, self.settings,
                video=await self._video(voice, seed=zlib.crc32(call_id.encode())), voice=voice,
                handover=lambda reason, skill, turns: self.router.handover(call_id, reason, turns, skill=skill),
                on_event=lambda event: self._record(call, event),
                on_conversation=lambda turns: self.router.note_conversation(call_id, turns),
            )
            self.bots[call_id] = bot  # listed (and stoppable) while it joins
            await asyncio.wait_for(client.connect(call["room"]), START_TIMEOUT_S)
            await bot.start(START_TIMEOUT_S)
            client.on("participant_left", lambda _m: self._check_customer(call_id))
            client.on("left", lambda _m: self._spawn(self.stop_bot(call_id)))
            self.started += 1
            log.info("digital human joined", extra={"room": call["room"], "call_id": call_id})
            return bot
        except Exception as exc:
            self.failed += 1
            log.error("the digital human could not join; a person takes the call",
                      extra={"room": call.get("room"), "call_id": call_id, "error": repr(exc)})
            if bot is not None:
                if self.bots.get(call_id) is bot:
                    del self.bots[call_id]
                await bot.close()
            with contextlib.suppress(Exception):
                await self.router.handover(call_id, "bot_unavailable", [])
            return None
        finally:
            self._starting.discard(call_id)

    def _check_customer(self, call_id: str) -> None:
        """The customer left without hanging up: the call ends rather than wait forever."""
        bot = self.bots.get(call_id)
        if bot is None or any(p.get("role") == "customer" for p in bot.client.participants.values()):
            return
        self._spawn(self._customer_gone(call_id))

    async def _customer_gone(self, call_id: str) -> None:
        """Nobody to serve: a call with the bot ends, one it handed over stops waiting."""
        with contextlib.suppress(Exception):
            call = await self.router.call(call_id)
            if call["state"] == "bot":
                await self.router.hang_up(call_id, by=f"service:{IDENTITY}", reason="customer_left")
            elif call["state"] in ("queued", "ringing"):
                await self.router.cancel(call_id, reason="customer_left")
        await self.stop_bot(call_id)

    async def stop_bot(self, call_id: str) -> None:
        bot = self.bots.pop(call_id, None)
        if bot is None:
            return
        self.answer_start_s = [*self.answer_start_s, *bot.stats.answer_start_s][-KEEP_FIGURES:]
        self.barge_in_ms = [*self.barge_in_ms, *bot.stats.barge_in_ms][-KEEP_FIGURES:]
        self._stopping.add(bot)
        try:
            await bot.farewell()
        finally:
            self._stopping.discard(bot)
        log.info("digital human left", extra={"room": bot.room, "call_id": call_id})

    async def _record(self, call: dict[str, Any], event: dict[str, Any]) -> None:
        await publish_session_event(self.store, call["room"], event)
        with contextlib.suppress(StateUnavailable):
            await self.store.append_event(call["call_id"], event)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(self.stop_bot(c) for c in list(self.bots)), return_exceptions=True)
        # Bots whose stopping was cancelled above still finish closing (close is shielded).
        await asyncio.gather(*(bot.close() for bot in list(self._stopping)), return_exceptions=True)
        await self.answerer.close()

    def stats(self) -> dict[str, Any]:
        starts = sorted([*self.answer_start_s, *(s for b in self.bots.values() for s in b.stats.answer_start_s)])
        barge = sorted([*self.barge_in_ms, *(s for b in self.bots.values() for s in b.stats.barge_in_ms)])
        return {
            "enabled": self.settings.enabled,
            "speaks": self.voice.tts.languages(),
            "faq_entries": len(self.faq.entries),
            "prepared": self.prepared,
            "avatar": {"width": self.settings.width, "height": self.settings.height, "fps": self.settings.fps,
                       "error": self.avatar_error},
            "bots": [b.to_json() for b in self.bots.values()],
            "started": self.started,
            "failed": self.failed,
            "handovers": dict(self.handovers),
            "answer_start_s_p50": starts[len(starts) // 2] if starts else None,
            "barge_in_ms_p50": barge[len(barge) // 2] if barge else None,
            "at": round(time.time(), 3),
        }


DIGITAL_HUMAN = web.AppKey("digital_human", DigitalHumanService)


def install_digital_human(app: web.Application, store: StateStore, config: Config) -> DigitalHumanService | None:
    """On a process that runs the contact centre and the voice."""
    from ..signaling.contact.service import CENTRE
    from ..signaling.keys import ISSUER
    from ..speech.service import VOICE
    from .rest import routes

    app.add_routes(routes)
    if not config.digital_human.enabled or CENTRE not in app or VOICE not in app:
        return None
    centre = app[CENTRE]
    service = DigitalHumanService(store, config, app[ISSUER], app[VOICE], centre.router)
    app[DIGITAL_HUMAN] = service
    centre.router.bot_enabled = True
    centre.listeners.append(service.on_call_event)

    async def start(app: web.Application) -> None:
        service.start()

    async def stop(app: web.Application) -> None:
        await service.close()

    app.on_startup.append(start)
    app.on_shutdown.insert(0, stop)
    return service
