"""REST for the digital human: its state for operators, and a way to try the FAQ.

GET /v1/digital-human         what it speaks, its bots now, handovers, answer start (staff)
POST /v1/digital-human/ask    what it would answer to a question (supervisor): operators
                              check their FAQ file without placing a call
"""

from __future__ import annotations

from aiohttp import web

from ..errors import BadRequest, Forbidden, Unavailable
from ..signaling.auth import authenticate
from ..signaling.rest import json_body
from ..signaling.tokens import ANY_ROOM
from .faq import wants_person

routes = web.RouteTableDef()
STAFF = ("agent", "reviewer", "supervisor", "service", "compliance")
MAX_QUESTION = 1000


def _service(request: web.Request):  # type: ignore[no-untyped-def]
    from .service import DIGITAL_HUMAN

    if DIGITAL_HUMAN not in request.app:
        raise Unavailable("the digital human is off on this server (digital_human.enabled)", code="bot_unavailable")
    return request.app[DIGITAL_HUMAN]


@routes.get("/v1/digital-human")
async def status(request: web.Request) -> web.Response:
    token = authenticate(request)
    if token.role not in STAFF:
        raise Forbidden("this needs a staff token", code="role_forbidden")
    return web.json_response(_service(request).stats())


@routes.post("/v1/digital-human/ask")
async def ask(request: web.Request) -> web.Response:
    token = authenticate(request)
    if token.role not in ("supervisor", "service") or token.room != ANY_ROOM:
        raise Forbidden("trying the FAQ needs a supervisor token", code="role_forbidden")
    body = await json_body(request)
    question, language = body.get("question"), body.get("language", "zh")
    if not isinstance(question, str) or not 0 < len(question.strip()) <= MAX_QUESTION:
        raise BadRequest(f"question is 1-{MAX_QUESTION} characters", code="invalid_message", field="question")
    if not isinstance(language, str) or not 0 < len(language) <= 16:
        raise BadRequest("language is a language code", code="invalid_message", field="language")
    service = _service(request)
    answer = await service.answerer.answer(question, language, [])
    return web.json_response({
        "question": question, "language": language, "wants_person": wants_person(question, language),
        "answer": None if answer is None else {
            "text": answer.text, "source": answer.source, "entry": answer.entry_id, "skill": answer.skill,
            "score": answer.score, "handover": answer.handover,
        },
    })
