"""Speech REST: prompts on demand, voice broadcast, synthesis for a page, the live transcript,
and ending a call after its anti-fraud reminder (docs/speech.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from ..errors import BadRequest, Conflict, Forbidden, NotFound, TellerError, Unavailable
from ..recording.session_info import room_call_id
from ..signaling.auth import authenticate
from ..signaling.contact.rest import AGENT_ROLES, ROUTER, _own_call
from ..signaling.keys import CONFIG, STORE
from ..signaling.rest import json_body
from ..signaling.tokens import AccessToken
from ..state import Record
from .hub import DOC_KIND
from .service import VOICE, VoiceService
from .tts import TtsUnavailable

routes = web.RouteTableDef()

SPEAKER_ROLES = ("agent", "reviewer", "supervisor", "service", "officer")
SCRIPTS = ("risk_prompt", "anti_fraud", "identity_question")
LANGUAGE_MAX = 16
# A doc older than this belongs to a node that stopped updating it.
STALE_S = 600.0


def _voice(request: web.Request) -> VoiceService:
    return request.app[VOICE]


def _language(value: Any, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or not 0 < len(value) <= LANGUAGE_MAX:
        raise BadRequest("language is a language code such as zh or en", code="invalid_message", field="language")
    return value


async def _room_call(request: web.Request, room: str) -> Record | None:
    call_id = await room_call_id(request.app[STORE], room)
    if not call_id or ROUTER not in request.app:
        return None
    try:
        return await request.app[ROUTER].call(call_id)
    except NotFound:
        return None


async def _staff_of(request: web.Request, room: str) -> tuple[AccessToken, Record | None]:
    """Staff with a token for the room, or an agent whose desk token serves the call in it."""
    token = authenticate(request)
    if token.role not in SPEAKER_ROLES:
        raise Forbidden("this needs a staff token", code="role_forbidden")
    call = await _room_call(request, room)
    if token.allows_room(room):
        return token, call
    if call is not None and token.subject in (call.get("parties") or []):
        return token, call
    raise Forbidden(f"this token does not open room {room!r}", code="room_forbidden")


async def _say(request: web.Request, room: str, kind: str, text: str, language: str, by: str) -> web.Response:
    _voice(request).check_rate(by)
    try:
        utterance = await _voice(request).say(room, kind, text, language, by)
    except TellerError:
        raise
    except TimeoutError as exc:
        raise Unavailable("the voice could not join the room in time", code="tts_unavailable") from exc
    except Exception as exc:  # the client SDK's errors: the room is gone, the node is down
        code = getattr(exc, "code", "")
        if code == "room_not_found":
            raise NotFound(f"no room {room!r}", code="room_not_found") from exc
        raise Unavailable(f"the voice could not join the room: {exc}", code="tts_unavailable") from exc
    return web.json_response(utterance.to_json(), status=202)


@routes.get("/v1/speech")
async def speech_info(request: web.Request) -> web.Response:
    authenticate(request)
    config = request.app[CONFIG]
    from .service import HUB

    hub = request.app.get(HUB)
    stats = hub.engine_stats() if hub is not None else None
    return web.json_response({
        "asr": {"enabled": "asr" in config.stages.enabled, "model": config.speech.asr_model or "whisper-base (bundled)",
                "language": config.speech.asr_language or "auto",
                # Where this process carries media: whether the model is loaded and decoding.
                "ready": hub.ready if hub is not None else None,
                "decoded_s": round(stats.audio_s, 1) if stats is not None else None},
        "tts": {"available": bool(_voice(request).tts.languages()), "languages": _voice(request).tts.languages()},
        "risk": {"enabled": config.speech.risk},
    })


@routes.post("/v1/rooms/{room}/speech/say")
async def say(request: web.Request) -> web.Response:
    """An agent plays a script line (or its own text) to the customer."""
    room = request.match_info["room"]
    token, call = await _staff_of(request, room)
    body = await json_body(request)
    script, text = body.get("script"), body.get("text")
    language = _language(body.get("language"), (call or {}).get("language") or "zh")
    if script is not None:
        if script not in SCRIPTS:
            raise BadRequest(f"script is one of {', '.join(SCRIPTS)}", code="invalid_message", field="script")
        business_id = body.get("business") or (call or {}).get("business")
        if not isinstance(business_id, str) or ROUTER not in request.app:
            raise BadRequest("the room serves no call: name the business", code="invalid_message", field="business")
        business = request.app[ROUTER].catalogue.get(business_id)
        if script == "identity_question":
            index = body.get("index")
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(business.identity_questions):
                raise BadRequest(f"index is 0-{len(business.identity_questions) - 1}", code="invalid_message", field="index")
            text = business.text(business.identity_questions[index], language)
        else:
            text = business.text(business.risk_prompt if script == "risk_prompt" else business.anti_fraud, language)
        kind = script
    else:
        if not isinstance(text, str):
            raise BadRequest("say a script line (script) or text", code="invalid_message", field="text")
        kind = "script"
    return await _say(request, room, kind, text, language, f"{token.role}:{token.subject}")


@routes.post("/v1/rooms/{room}/speech/broadcast")
async def broadcast(request: web.Request) -> web.Response:
    """The customer page reads its text aloud into the session (large-text mode)."""
    room = request.match_info["room"]
    token = authenticate(request)
    token.require_room(room)
    if token.role != "customer":
        raise Forbidden("voice broadcast is the customer page's", code="role_forbidden")
    body = await json_body(request)
    text = body.get("text")
    if not isinstance(text, str):
        raise BadRequest("text is required", code="invalid_message", field="text")
    language = _language(body.get("language"), "zh")
    return await _say(request, room, "broadcast", text, language, f"customer:{token.subject}")


@routes.get("/v1/speech/synthesize")
async def synthesize(request: web.Request) -> web.Response:
    """WAV for a page to play by itself (before a call there is no session to speak into)."""
    token = authenticate(request)
    text = request.query.get("text", "").strip()
    voice = _voice(request)
    voice.check_rate(f"{token.role}:{token.subject}")
    if not text:
        raise BadRequest("text is required", code="invalid_message", field="text")
    if len(text) > voice.settings.max_text_chars:
        raise BadRequest(f"text is at most {voice.settings.max_text_chars} characters", code="text_too_long", field="text")
    language = _language(request.query.get("lang"), "zh")
    audio = await voice.tts.wav(text, language)
    return web.Response(body=audio, content_type="audio/wav", headers={"Cache-Control": "private, max-age=300"})


@routes.get("/v1/rooms/{room}/transcript")
async def live_transcript(request: web.Request) -> web.Response:
    room = request.match_info["room"]
    await _staff_of(request, room)
    doc = await request.app[STORE].get_doc(DOC_KIND, room)
    if not doc or time.time() - doc.get("updated_at", 0) > STALE_S:
        return web.json_response({"room": room, "lines": [], "risk": []})
    return web.json_response({"room": room, "session_id": doc.get("session_id"), "lines": doc.get("lines", []),
                              "risk": doc.get("risk", [])})


@routes.post("/v1/calls/{call}/finish")
async def finish(request: web.Request) -> web.Response:
    """The agent ends the call: the anti-fraud reminder plays first, then the call ends.

    The hang-up runs on even if the desk goes away while the reminder plays.
    """
    token, call = await _own_call(request)
    if token.role not in AGENT_ROLES or token.subject not in (call.get("parties") or []):
        raise Forbidden("the agent in the call ends it", code="call_forbidden")
    if call["state"] != "connected":
        raise Conflict("the call is not connected", code="call_not_connected")
    router = request.app[ROUTER]
    business = router.catalogue.get(call["business"])
    language = call.get("language") or "zh"
    text = business.text(business.anti_fraud, language)
    by = f"{token.role}:{token.subject}"

    async def remind_then_end() -> dict[str, Any]:
        reminder: dict[str, Any] = {"played": False, "text": text}
        if "anti_fraud_reminder" not in business.steps:
            reminder["reason"] = "this business has no anti-fraud reminder"
        else:
            try:
                utterance = await _voice(request).play(call["room"], "anti_fraud", text, language, by)
                reminder["played"] = utterance.error is None and utterance.done.is_set()
                if utterance.error:
                    reminder["reason"] = utterance.error
            except TtsUnavailable as exc:
                reminder["reason"] = exc.message
            except Exception as exc:
                reminder["reason"] = f"the voice could not play it: {exc}"
        ended = await router.hang_up(call["call_id"], by=by)
        return {**ended, "reminder": reminder}

    task = asyncio.ensure_future(remind_then_end())
    return web.json_response(await asyncio.shield(task))
