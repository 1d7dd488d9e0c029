"""Where the digital human's answers come from: the FAQ first, then (if configured) the
bank's answering service, an LLM behind its own gateway. Both sit behind one small
interface so a bank can plug in its own without touching the bot."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from .faq import FaqBase

log = logging.getLogger("teller.digital_human")

MAX_ANSWER_CHARS = 600


@dataclass(frozen=True)
class Answer:
    text: str
    source: str  # "faq" or "llm"
    entry_id: str | None = None
    skill: str | None = None
    score: float = 0.0
    # The answerer says a person should take over (an LLM that recognises a complaint).
    handover: bool = False


class Answerer(Protocol):
    async def answer(self, question: str, language: str, history: list[dict[str, Any]]) -> Answer | None:
        """An answer, or None when this answerer has none."""


class FaqAnswerer:
    def __init__(self, faq: FaqBase) -> None:
        self.faq = faq

    async def answer(self, question: str, language: str, history: list[dict[str, Any]]) -> Answer | None:
        match = self.faq.match(question, language)
        if match is None:
            return None
        return Answer(match.answer, "faq", match.entry.id, match.entry.skill, round(match.score, 3))


class HttpAnswerer:
    """POST {question, language, history} -> {answer, handover?, skill?} (docs/digital_human.md).

    A slow or broken service is no answer, never an error the customer hears: the
    bot then says it does not know, and a person takes over after a second miss.
    """

    def __init__(self, url: str, token: str = "", timeout_s: float = 4.0) -> None:
        self.url = url
        self.token = token
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self.failures = 0

    async def answer(self, question: str, language: str, history: list[dict[str, Any]]) -> Answer | None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        body = {"question": question, "language": language, "history": history[-20:]}
        try:
            async with self._session.post(self.url, json=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                reply = await response.json(content_type=None)
            text = reply.get("answer") if isinstance(reply, dict) else None
            handover = bool(reply.get("handover")) if isinstance(reply, dict) else False
            skill = reply.get("skill") if isinstance(reply, dict) and isinstance(reply.get("skill"), str) else None
            if not (isinstance(text, str) and text.strip()) and not handover:
                return None
            return Answer((text or "").strip()[:MAX_ANSWER_CHARS], "llm", None, skill, 0.0, handover)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.failures += 1
            log.warning("the answering service failed", extra={"url": self.url, "error": repr(exc)})
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class ChainAnswerer:
    def __init__(self, answerers: list[Answerer]) -> None:
        self.answerers = answerers

    async def answer(self, question: str, language: str, history: list[dict[str, Any]]) -> Answer | None:
        for answerer in self.answerers:
            found = await answerer.answer(question, language, history)
            if found is not None:
                return found
        return None

    async def close(self) -> None:
        for answerer in self.answerers:
            close = getattr(answerer, "close", None)
            if close is not None:
                await close()
