"""Automatic call distribution: which agent gets which waiting call, and when.

State lives in the store (calls as documents, agents, one queue per skill), so any
signalling process can act on any call, and every change is made under one store
lock ("acd"): two processes never offer one call to two agents, never give one
agent two calls, and never drop a call between them. A call stays in its queue
while it rings, so a ring that times out or is declined leaves it where it was.

Service level = calls answered within `service_level_s` ÷ (calls answered + calls
abandoned after `service_level_s`); a caller who hangs up sooner is not counted
against it (the common contact-centre definition).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ...config import ConfigError
from ...config.settings import ContactSettings
from ...errors import BadRequest, Conflict, NotFound
from ...recording.session_info import link_room, record_outcome
from ...state import Record, StateStore
from .catalogue import Catalogue

log = logging.getLogger("teller.contact.routing")

AGENT_STATES = ("offline", "available", "ringing", "busy", "wrap_up", "away")
# States an agent may choose; the others follow from calls.
CHOOSABLE = ("offline", "available", "away")
# "bot": the digital human serves the call (teller/digital_human); it may hand over.
OPEN_CALL_STATES = ("queued", "ringing", "connected", "bot")
BOT_TARGET = "digital_human"
BOT_REASONS = ("chosen", "out_of_hours", "max_wait")
MAX_TURNS = 50
MAX_TURN_TEXT = 1000
CALL = "call"
RECENT = "recent_waits"
RECENT_WAITS = 20
LOCK = "acd"
MAX_TEXT = 256
PRUNE_EVERY_S = 60.0
MAX_SIGNATURE = 200 * 1024


def mask_account(account: str) -> str:
    """Only the last four characters show: what a confirmation screen may display."""
    tail = account[-4:] if len(account) > 4 else account[-1:]
    return "*" * max(4, len(account) - len(tail)) + tail

def parse_hours(text: str) -> tuple[int, int] | None:
    """"08:00-20:00" -> minutes of the day (480, 1200); "" -> always open."""
    if not text:
        return None
    try:
        start, end = (part.strip() for part in text.split("-"))
        minutes = []
        for part in (start, end):
            hour, minute = (int(x) for x in part.split(":"))
            if not (0 <= hour <= 24 and 0 <= minute < 60):
                raise ValueError(part)
            minutes.append(hour * 60 + minute)
    except ValueError:
        raise ConfigError(f"contact.hours is HH:MM-HH:MM, not {text!r}") from None
    return minutes[0], minutes[1]


def _turns(conversation: Any) -> list[Record]:
    if not isinstance(conversation, list):
        raise BadRequest("conversation is a list of turns", code="invalid_message", field="conversation")
    out = []
    for turn in conversation[-MAX_TURNS:]:
        if not isinstance(turn, dict) or turn.get("who") not in ("customer", "bot") or not isinstance(turn.get("text"), str):
            raise BadRequest("a turn is {who: customer|bot, text}", code="invalid_message", field="conversation")
        ts = turn.get("ts")
        ts = float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else 0.0
        out.append({"who": turn["who"], "text": turn["text"][:MAX_TURN_TEXT], "ts": ts})
    return out


# (kind, call, extra): extra carries evidence that is not part of the call record
# (a confirmation and its signature).
Event = Callable[[str, Record, Record], Any]


def queue_name(skill: str) -> str:
    return f"skill:{skill}"


class Router:
    def __init__(
        self,
        store: StateStore,
        settings: ContactSettings,
        catalogue: Catalogue,
        *,
        clock: Callable[[], float] = time.time,
        on_event: Event | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.catalogue = catalogue
        self.clock = clock
        self.on_event = on_event
        self._pruned_at = 0.0
        # Set where a digital human serves calls (teller/digital_human/service.py).
        self.bot_enabled = False
        # Set where identity checks run (teller/identity): raises while a call's identity
        # has neither passed nor been overridden.
        self.identity_gate: Callable[[Record], Awaitable[None]] | None = None
        # Told which calls were forgotten, to forget what they own.
        self.on_prune: list[Callable[[list[str]], Awaitable[None]]] = []
        self._hours = parse_hours(settings.hours)

    # -- agents -------------------------------------------------------------------------

    async def register(self, agent_id: str, name: str, skills: Any, languages: Any) -> Record:
        """Who an agent is (a supervisor's say): skills with levels 1-10, languages."""
        if not isinstance(agent_id, str) or not 0 < len(agent_id) <= 128:
            raise BadRequest("an agent id is 1-128 characters", code="invalid_message", field="agent_id")
        if not isinstance(skills, dict) or not skills or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10 for k, v in skills.items()
        ):
            raise BadRequest("skills map a skill to a level 1-10", code="invalid_message", field="skills")
        if not isinstance(languages, list) or not languages or not all(isinstance(x, str) and 0 < len(x) <= 16 for x in languages):
            raise BadRequest("languages is a list of language codes", code="invalid_message", field="languages")
        async with self.store.lock(LOCK):
            def change(current: Record | None) -> Record:
                base = current or {
                    "agent_id": agent_id, "state": "offline", "reason": None, "state_since": self.clock(),
                    "idle_since": None, "call_id": None, "offered_call": None, "wrap_up_until": None,
                }
                return {**base, "name": str(name)[:64], "skills": dict(skills), "languages": list(languages)}

            agent = await self.store.update_agent(agent_id, change)
        assert agent is not None
        return agent

    async def sign_in(self, agent_id: str, name: str, skills: dict[str, int], languages: list[str]) -> Record:
        """Register and become available at once."""
        agent = await self.register(agent_id, name, skills, languages)
        if agent["state"] in ("offline", "away"):
            return await self.set_state(agent_id, "available")
        return agent

    async def agent(self, agent_id: str) -> Record:
        agent = await self.store.get_agent(agent_id)
        if agent is None:
            raise NotFound("no such agent; sign in first", code="agent_not_found")
        return agent

    async def set_state(self, agent_id: str, state: str, reason: str | None = None) -> Record:
        if state not in CHOOSABLE:
            raise BadRequest(f"state must be one of {', '.join(CHOOSABLE)}", code="invalid_state", field="state")
        now = self.clock()
        async with self.store.lock(LOCK):
            agent = await self.agent(agent_id)
            if agent["state"] in ("ringing", "busy"):
                raise Conflict("finish or decline the call first", code="agent_busy")
            await self._set_agent(agent_id, state, now, reason=(reason or "")[:MAX_TEXT] or None)
        if state == "available":
            await self.dispatch()
        return await self.agent(agent_id)

    async def _set_agent(self, agent_id: str, state: str, now: float, **fields: Any) -> Record | None:
        def change(current: Record | None) -> Record | None:
            if current is None:
                return None
            out = {**current, "state": state, "state_since": now, "reason": None, **fields}
            if state == "available" and current["state"] != "available":
                out["idle_since"] = now
            if state in ("available", "away", "offline", "wrap_up"):
                out["offered_call"] = None
            if state in ("available", "away", "offline"):
                out["call_id"] = None
                out["wrap_up_until"] = None
            return out

        return await self.store.update_agent(agent_id, change)

    # -- calls ----------------------------------------------------------------------------

    async def request(
        self,
        customer: dict[str, str],
        business_id: str,
        *,
        language: str = "zh",
        elderly: bool = False,
        vip: bool = False,
        channel: str = "h5",
        room: str | None = None,
        target: str = "agent",
    ) -> Record:
        business = self.catalogue.get(business_id)
        if not isinstance(language, str) or not 0 < len(language) <= 16:
            raise BadRequest("language is a language code", code="invalid_message", field="language")
        if target not in ("agent", BOT_TARGET):
            raise BadRequest(f"target is agent or {BOT_TARGET}", code="invalid_message", field="target")
        settings = self.settings
        bot_reason = "chosen" if target == BOT_TARGET else None
        if bot_reason is None and not self.is_open(self.clock()):
            if settings.out_of_hours_target != BOT_TARGET or not self.bot_enabled:
                raise Conflict(f"we are closed; opening hours are {settings.hours}", code="closed")
            bot_reason = "out_of_hours"
        if bot_reason is not None and not self.bot_enabled:
            raise Conflict("the digital assistant is not available", code="bot_unavailable")
        priority = business.priority + (settings.elderly_priority if elderly else 0) + (settings.vip_priority if vip else 0)
        now = self.clock()
        call_id = f"CL_{secrets.token_urlsafe(9)}"
        call = {
            "call_id": call_id,
            "business": business.id,
            "skill": business.skill,
            "language": language,
            "priority": priority,
            "customer": {k: str(v)[:MAX_TEXT] for k, v in customer.items()},
            "elderly": bool(elderly),
            "vip": bool(vip),
            "channel": str(channel)[:32],
            # The media room the customer waits in and the agent joins.
            "room": room or f"call-{call_id[3:]}",
            "state": "queued",
            "queued_at": now,
            "offered_to": None,
            "offer_kind": None,
            "transfer_pending": False,
            "agent_id": None,
            "parties": [],
            "declined_by": [],
            "answered_at": None,
            "ended_at": None,
            "requested_at": now,
        }
        if bot_reason is not None:
            call.update(state="bot", bot={"reason": bot_reason, "since": now})
        async with self.store.lock(LOCK):
            await self.store.update_doc(CALL, call_id, lambda _: call)
            if bot_reason is None:
                await self.store.enqueue(queue_name(business.skill), call_id, {"call_id": call_id}, priority)
        await link_room(self.store, call["room"], call_id)
        if bot_reason is not None:
            self._emit("to_bot", call)
            return await self.call(call_id)
        self._emit("queued", call)
        await self.dispatch()
        return await self.call(call_id)

    def is_open(self, now: float) -> bool:
        if self._hours is None:
            return True
        start, end = self._hours
        minute = int((now // 60 + self.settings.utc_offset_minutes) % (24 * 60))
        return start <= minute < end if start <= end else minute >= start or minute < end

    async def handover(
        self, call_id: str, reason: str, conversation: list[Record], skill: str | None = None
    ) -> Record:
        """The digital human hands its call to a person: the call joins the skill's queue
        ahead of new callers, carrying what was said so far for the agent to read."""
        if not isinstance(reason, str) or not 0 < len(reason) <= 64:
            raise BadRequest("reason is 1-64 characters", code="invalid_message", field="reason")
        turns = _turns(conversation)
        now = self.clock()
        async with self.store.lock(LOCK):
            call = await self.call(call_id)
            if call["state"] != "bot":
                raise Conflict("the call is not with the digital assistant", code="not_with_bot")
            target = skill if skill in self.catalogue.skills() else call["skill"]
            priority = call["priority"] + self.settings.transfer_priority
            bot = {**call["bot"], "handover": {"reason": reason, "at": now, "skill": target}, "conversation": turns}
            call = await self._update_call(
                call_id, state="queued", skill=target, priority=priority, queued_at=now, bot=bot,
            )
            await self.store.enqueue(queue_name(target), call_id, {"call_id": call_id}, priority)
        self._emit("handover", call, reason=reason)
        await self.dispatch()
        return await self.call(call_id)

    async def note_conversation(self, call_id: str, conversation: list[Record]) -> Record | None:
        """The bot's conversation so far, kept on a call it serves (for supervisors, and
        for the record when the customer leaves without a person)."""
        turns = _turns(conversation)

        def change(current: Record | None) -> Record | None:
            if current is None or not current.get("bot"):
                return current
            return {**current, "bot": {**current["bot"], "conversation": turns}}

        return await self.store.update_doc(CALL, call_id, change)

    async def call(self, call_id: str) -> Record:
        call = await self.store.get_doc(CALL, call_id) if isinstance(call_id, str) else None
        if call is None:
            raise NotFound("no such call", code="call_not_found")
        return call

    async def position(self, call_id: str) -> Record:
        """Where a waiting call stands, and a wait estimate from recent answers."""
        call = await self.call(call_id)
        if call["state"] not in ("queued", "ringing"):
            return {"call_id": call_id, "state": call["state"], "position": None, "estimated_wait_s": None}
        position = await self.store.queue_position(queue_name(call["skill"]), call_id)
        return {
            "call_id": call_id,
            "state": call["state"],
            "position": position,
            "waited_s": round(self.clock() - call["queued_at"], 1),
            "estimated_wait_s": await self._estimate(call["skill"], position or 1),
        }

    async def _estimate(self, skill: str, position: int) -> float:
        """Recent waits of this skill's answered calls, scaled by position and agents on duty.

        Read from a small per-skill record kept on every answer: customers ask every
        second, so this must not read every call there ever was.
        """
        recent = (await self.store.get_doc(RECENT, skill) or {}).get("waits", [])
        agents = [a for a in await self.store.list_agents() if skill in a.get("skills", {}) and a["state"] != "offline"]
        if not recent:
            return float(position * 60)  # nothing answered yet: a minute a caller ahead
        mean_wait = sum(recent) / len(recent)
        return round(max(mean_wait, 5.0) * position / max(1, len(agents)), 1)

    async def _remember_wait(self, skill: str, wait: float) -> None:
        def add(current: Record | None) -> Record:
            return {"waits": [*(current or {}).get("waits", []), round(wait, 1)][-RECENT_WAITS:]}

        await self.store.update_doc(RECENT, skill, add)

    async def cancel(self, call_id: str, reason: str = "customer_cancelled") -> Record:
        """The customer gives up (or is gone) before an agent answered: abandoned."""
        now = self.clock()
        async with self.store.lock(LOCK):
            call = await self.call(call_id)
            if call["state"] not in ("queued", "ringing"):
                raise Conflict("the call is no longer waiting", code="call_not_waiting")
            if call["offered_to"]:
                await self._set_agent(call["offered_to"], "available", now)
            await self.store.remove_from_queue(queue_name(call["skill"]), call_id)
            call = await self._update_call(call_id, state="abandoned", ended_at=now, end_reason=reason[:MAX_TEXT], offered_to=None)
        self._emit("abandoned", call)
        await self.dispatch()
        return call

    async def accept(self, agent_id: str, call_id: str) -> Record:
        now = self.clock()
        async with self.store.lock(LOCK):
            agent = await self.agent(agent_id)
            call = await self.call(call_id)
            if agent["state"] != "ringing" or agent.get("offered_call") != call_id or call.get("offered_to") != agent_id:
                raise Conflict("this call is not offered to you", code="call_not_offered")
            kind = call["offer_kind"]
            parties = [p for p in call["parties"] if p != agent_id] + [agent_id]
            fields: dict[str, Any] = {"state": "connected", "offered_to": None, "offer_kind": None, "parties": parties}
            if kind in ("queue", "transfer"):
                fields["agent_id"] = agent_id
                fields["transfer_pending"] = False
                if call["answered_at"] is None:
                    fields["answered_at"] = now
                    await self._remember_wait(call["skill"], now - call["queued_at"])
                await self.store.remove_from_queue(queue_name(call["skill"]), call_id)
            call = await self._update_call(call_id, **fields)
            await self._set_agent(agent_id, "busy", now, call_id=call_id, offered_call=None)
        self._emit("answered" if kind == "queue" else "transferred" if kind == "transfer" else "joined", call)
        return call

    async def decline(self, agent_id: str, call_id: str) -> Record:
        now = self.clock()
        async with self.store.lock(LOCK):
            agent = await self.agent(agent_id)
            call = await self.call(call_id)
            if agent["state"] != "ringing" or agent.get("offered_call") != call_id:
                raise Conflict("this call is not offered to you", code="call_not_offered")
            call = await self._withdraw_offer(call, agent_id, now)
            await self._set_agent(agent_id, "available", now)
        await self.dispatch()
        return call

    async def _withdraw_offer(self, call: Record, agent_id: str, now: float) -> Record:
        """An offer ended unanswered. A caller waiting in a queue keeps its place there;
        a caller whose agent is still with them (a warm transfer, an invitation) stays
        with that agent; a caller cold-transferred to one agent goes to the skill's queue."""
        call_id = call["call_id"]
        declined = sorted(set(call["declined_by"]) | {agent_id})
        fields: dict[str, Any] = {"offered_to": None, "offer_kind": None, "declined_by": declined}
        if call["offer_kind"] == "invite" or call["state"] == "connected":
            if not await self.store.queue_position(queue_name(call["skill"]), call_id):
                fields["transfer_pending"] = False  # a warm transfer to one agent failed
            return await self._update_call(call_id, **fields)
        if not await self.store.queue_position(queue_name(call["skill"]), call_id):
            await self.store.enqueue(queue_name(call["skill"]), call_id, {"call_id": call_id}, call["priority"])
        return await self._update_call(call_id, state="queued", **fields)

    async def hang_up(self, call_id: str, by: str = "customer", reason: str | None = None) -> Record:
        """Ends a connected call for everyone in it; each agent goes to wrap-up."""
        now = self.clock()
        async with self.store.lock(LOCK):
            call = await self.call(call_id)
            if call["state"] in ("queued", "ringing"):
                raise Conflict("the call was not answered; cancel it instead", code="call_not_connected")
            if call["state"] not in ("connected", "bot"):
                raise Conflict("the call has ended", code="call_ended")
            if call["offered_to"]:
                await self._set_agent(call["offered_to"], "available", now)
            for agent_id in call["parties"]:
                await self._set_agent(agent_id, "wrap_up", now, wrap_up_until=now + self.settings.wrap_up_s, call_id=call_id)
            call = await self._update_call(
                call_id, state="ended", ended_at=now, ended_by=str(by)[:64], end_reason=reason, offered_to=None
            )
        if reason:
            log.warning("call ended by force", extra={"call_id": call_id, "by": by, "reason": reason})
        self._emit("ended", call)
        return call

    async def leave(self, call_id: str, agent_id: str) -> Record:
        """An agent leaves a call that others carry on (after a warm transfer, a conference)."""
        now = self.clock()
        async with self.store.lock(LOCK):
            call = await self.call(call_id)
            if agent_id not in call["parties"] or call["state"] != "connected":
                raise Conflict("you are not in this call", code="not_in_call")
            if len(call["parties"]) == 1:
                raise Conflict("the last agent ends the call instead", code="last_agent")
            parties = [p for p in call["parties"] if p != agent_id]
            primary = call["agent_id"] if call["agent_id"] != agent_id else parties[0]
            call = await self._update_call(call_id, parties=parties, agent_id=primary)
            await self._set_agent(agent_id, "wrap_up", now, wrap_up_until=now + self.settings.wrap_up_s, call_id=call_id)
        return call

    async def wrap_up(self, agent_id: str, code: str, notes: str = "") -> Record:
        """Wrap-up done: the code and notes go on the call, the agent takes calls again."""
        if not isinstance(code, str) or not 0 < len(code) <= 64:
            raise BadRequest("a wrap-up code is required", code="invalid_message", field="code")
        now = self.clock()
        async with self.store.lock(LOCK):
            agent = await self.agent(agent_id)
            if agent["state"] != "wrap_up":
                raise Conflict("not in wrap-up", code="not_in_wrap_up")
            if agent.get("call_id"):
                wrap = {"agent_id": agent_id, "code": code, "notes": str(notes)[:2000], "at": now}

                def add(current: Record | None) -> Record | None:
                    return None if current is None else {**current, "wrap_ups": [*current.get("wrap_ups", []), wrap]}

                await self.store.update_doc(CALL, agent["call_id"], add)
            await self._set_agent(agent_id, "available", now)
        if agent.get("call_id"):
            await record_outcome(self.store, agent["call_id"], code)
        await self.dispatch()
        return await self.agent(agent_id)

    async def transfer(
        self, call_id: str, from_agent: str, *, to_agent: str | None = None, to_skill: str | None = None, warm: bool = False
    ) -> Record:
        """Cold: the call leaves `from_agent` at once. Warm: it stays until they leave."""
        if (to_agent is None) == (to_skill is None):
            raise BadRequest("transfer to an agent or to a skill", code="invalid_message")
        if to_skill is not None and to_skill not in self.catalogue.skills():
            raise NotFound("no such skill", code="skill_not_found")
        now = self.clock()
        async with self.store.lock(LOCK):
            call = await self.call(call_id)
            if call["state"] != "connected" or call["agent_id"] != from_agent:
                raise Conflict("only the agent serving the call can transfer it", code="not_in_call")
            if call["offered_to"]:
                raise Conflict("an offer for this call is already ringing", code="offer_pending")
            if not warm:
                await self._set_agent(from_agent, "wrap_up", now, wrap_up_until=now + self.settings.wrap_up_s, call_id=call_id)
                parties = [p for p in call["parties"] if p != from_agent]
            else:
                parties = call["parties"]
            if to_agent is not None:
                target = await self.agent(to_agent)
                if target["state"] != "available":
                    raise Conflict("that agent cannot take a call now", code="agent_unavailable")
                call = await self._update_call(
                    call_id, parties=parties, transferred_from=from_agent, transfer_pending=True,
                    state="connected" if warm else "queued",
                )
                call = await self._offer(call, to_agent, "transfer", now)
            else:
                skill = to_skill or call["skill"]
                priority = call["priority"] + self.settings.transfer_priority
                call = await self._update_call(
                    call_id, state="connected" if warm else "queued", parties=parties, skill=skill,
                    priority=priority, transferred_from=from_agent, transfer_pending=True,
                )
                await self.store.enqueue(queue_name(skill), call_id, {"call_id": call_id}, priority)
        self._emit("transferring", call)
        await self.dispatch()
        return await self.call(call_id)

    async def invite(self, call_id: str, by_agent: str, agent_id: str) -> Record:
        """Adds a third party (a risk reviewer, a specialist) to a connected call."""
        now = self.clock()
        async with self.store.lock(LOCK):
            call = await self.call(call_id)
            if call["state"] != "connected" or by_agent not in call["parties"]:
                raise Conflict("only an agent in the call can invite", code="not_in_call")
            if call["offered_to"]:
                raise Conflict("an offer for this call is already ringing", code="offer_pending")
            target = await self.agent(agent_id)
            if target["state"] != "available":
                raise Conflict("that agent cannot take a call now", code="agent_unavailable")
            call = await self._offer(call, agent_id, "invite", now)
        return call

    async def _offer(self, call: Record, agent_id: str, kind: str, now: float) -> Record:
        await self._set_agent(agent_id, "ringing", now, offered_call=call["call_id"])
        state = "ringing" if call["state"] == "queued" else call["state"]
        call = await self._update_call(call["call_id"], state=state, offered_to=agent_id, offer_kind=kind, offered_at=now)
        self._emit("offered", call)
        return call

    async def _update_call(self, call_id: str, **fields: Any) -> Record:
        updated = await self.store.update_doc(CALL, call_id, lambda current: None if current is None else {**current, **fields})
        if updated is None:
            raise NotFound("no such call", code="call_not_found")
        return updated

    # -- confirmations (evidence) ---------------------------------------------------------------

    async def request_confirmation(self, call_id: str, agent_id: str, what: str, amount: str, account: str) -> Record:
        """The agent asks the customer to confirm a transaction; the account is masked here."""
        for name, value, limit in (("what", what, 200), ("amount", amount, 32), ("account", account, 64)):
            if not isinstance(value, str) or not 0 < len(value) <= limit:
                raise BadRequest(f"{name} is 1-{limit} characters", code="invalid_message", field=name)
        async with self.store.lock(LOCK):
            call = await self.call(call_id)
            if call["state"] != "connected" or agent_id not in call["parties"]:
                raise Conflict("only an agent in a connected call asks for confirmation", code="not_in_call")
            business = self.catalogue.get(call["business"])
            if self.identity_gate is not None and "identity_check" in business.steps:
                await self.identity_gate(call)
            request = {
                "request_id": f"CF_{secrets.token_urlsafe(6)}",
                "what": what,
                "amount": amount,
                "account_masked": mask_account(account),
                "signature_required": "signature" in business.steps,
                "requested_by": agent_id,
                "requested_at": self.clock(),
                "answer": None,
            }
            await self._update_call(call_id, confirmations=[*call.get("confirmations", []), request])
        self._emit("confirmation_requested", call, confirmation=request)
        return request

    async def answer_confirmation(self, call_id: str, request_id: str, accepted: bool, signature: str | None) -> Record:
        """The customer's answer, kept as evidence: tap, and a drawn signature where required."""
        if not isinstance(accepted, bool):
            raise BadRequest("accepted is true or false", code="invalid_message", field="accepted")
        if signature is not None and (
            not isinstance(signature, str) or not signature.startswith("data:image/png;base64,") or len(signature) > MAX_SIGNATURE
        ):
            raise BadRequest("signature is a PNG data URL under 200 KB", code="invalid_message", field="signature")
        async with self.store.lock(LOCK):
            call = await self.call(call_id)
            confirmations = call.get("confirmations", [])
            request = next((c for c in confirmations if c["request_id"] == request_id), None)
            if request is None:
                raise NotFound("no such confirmation request", code="confirmation_not_found")
            if request["answer"] is not None:
                raise Conflict("already answered", code="already_answered")
            if accepted and request["signature_required"] and not signature:
                raise BadRequest("this business needs a signature", code="signature_required", field="signature")
            answer = {
                "accepted": accepted,
                "at": self.clock(),
                "signature_sha256": hashlib.sha256(signature.encode()).hexdigest() if signature else None,
            }
            request = {**request, "answer": answer}
            await self._update_call(
                call_id, confirmations=[request if c["request_id"] == request_id else c for c in confirmations]
            )
        self._emit("confirmation_answered", call, confirmation=request, signature=signature)
        return request

    # -- distribution -----------------------------------------------------------------------

    async def dispatch(self) -> list[Record]:
        """Offers waiting calls to available agents; returns the calls offered."""
        offered = []
        now = self.clock()
        async with self.store.lock(LOCK):
            agents = [a for a in await self.store.list_agents() if a["state"] == "available"]
            if not agents:
                return []
            waiting: list[tuple[int, float, str]] = []
            for skill in self.catalogue.skills() | {a_skill for a in agents for a_skill in a["skills"]}:
                for item in await self.store.queue_items(queue_name(skill)):
                    waiting.append((-int(item["priority"]), float(item["enqueued_at"]), item["item_id"]))
            for _priority, _at, call_id in sorted(waiting):
                if not agents:
                    break
                call = await self.store.get_doc(CALL, call_id)
                waiting_alone = call is not None and call["state"] == "queued"
                waiting_with_agent = call is not None and call["state"] == "connected" and call["transfer_pending"]
                if not (waiting_alone or waiting_with_agent) or call["offered_to"]:
                    continue
                agent = self._best_agent(call, agents)
                if agent is None:
                    continue
                agents.remove(agent)
                kind = "transfer" if call["transfer_pending"] else "queue"
                offered.append(await self._offer(call, agent["agent_id"], kind, now))
        return offered

    @staticmethod
    def _best_agent(call: Record, agents: list[Record]) -> Record | None:
        """Skill, then language; the highest skill level, then the longest idle.

        An agent who declined or missed this call is asked again only if nobody else can take it.
        """
        eligible = [
            a for a in agents
            if a["skills"].get(call["skill"], 0) > 0 and call["language"] in a["languages"]
            and a["agent_id"] not in call["parties"]
        ]
        fresh = [a for a in eligible if a["agent_id"] not in call["declined_by"]] or eligible
        if not fresh:
            return None
        return min(fresh, key=lambda a: (-a["skills"][call["skill"]], a.get("idle_since") or 0, a["agent_id"]))

    async def tick(self) -> None:
        """Timers: unanswered rings, wrap-up that ran out, calls that waited too long."""
        now = self.clock()
        overflowed = []
        to_bot = []
        async with self.store.lock(LOCK):
            for agent in await self.store.list_agents():
                if agent["state"] == "ringing" and now - agent["state_since"] >= self.settings.ring_timeout_s:
                    call = await self.store.get_doc(CALL, agent.get("offered_call") or "")
                    if call is not None and call.get("offered_to") == agent["agent_id"]:
                        await self._withdraw_offer(call, agent["agent_id"], now)
                    await self._set_agent(agent["agent_id"], "away", now, reason="no_answer")
                elif agent["state"] == "wrap_up" and agent.get("wrap_up_until") and now >= agent["wrap_up_until"]:
                    await self._set_agent(agent["agent_id"], "available", now)
            for call in await self.store.list_docs(CALL):
                if call["state"] == "queued" and call["answered_at"] is None and now - call["queued_at"] >= self.settings.max_wait_s:
                    await self.store.remove_from_queue(queue_name(call["skill"]), call["call_id"])
                    if self.settings.overflow_target == BOT_TARGET and self.bot_enabled and not call.get("bot"):
                        to_bot.append(await self._update_call(
                            call["call_id"], state="bot", bot={"reason": "max_wait", "since": now},
                        ))
                        continue
                    overflowed.append(await self._update_call(
                        call["call_id"], state="overflowed", ended_at=now, overflow_target=self.settings.overflow_target,
                    ))
        for call in overflowed:
            self._emit("overflowed", call)
        for call in to_bot:
            self._emit("to_bot", call)
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            await self.prune(now)
        await self.dispatch()

    async def prune(self, now: float) -> int:
        """Forgets closed calls older than `keep_closed_calls_days`, and their timelines; returns how many."""
        horizon = now - self.settings.keep_closed_calls_days * 86400
        gone: list[str] = []
        for call in await self.store.list_docs(CALL):
            if call["state"] not in OPEN_CALL_STATES and (call.get("ended_at") or now) < horizon:
                await self.store.update_doc(CALL, call["call_id"], lambda _current: None)
                await self.store.expire_events(call["call_id"], 0)
                gone.append(call["call_id"])
        for listener in self.on_prune:
            if gone:
                await listener(gone)
        return len(gone)

    # -- figures ------------------------------------------------------------------------------

    async def queue_stats(self) -> dict[str, Record]:
        """Per skill: waiting, longest wait, answered, abandoned, service level."""
        now = self.clock()
        threshold = self.settings.service_level_s
        out: dict[str, Record] = {}
        for skill in sorted(self.catalogue.skills()):
            calls = [c for c in await self.store.list_docs(CALL) if c["skill"] == skill]
            waiting = [c for c in calls if c["state"] in ("queued", "ringing")]
            answered = [c for c in calls if c["answered_at"] is not None]
            within = [c for c in answered if c["answered_at"] - c["queued_at"] <= threshold]
            abandoned = [c for c in calls if c["state"] == "abandoned"]
            late_abandons = [c for c in abandoned if c["ended_at"] - c["queued_at"] > threshold]
            counted = len(answered) + len(late_abandons)
            out[skill] = {
                "waiting": len(waiting),
                "longest_wait_s": round(max((now - c["queued_at"] for c in waiting), default=0.0), 1),
                "answered": len(answered),
                "abandoned": len(abandoned),
                "service_level": round(len(within) / counted, 4) if counted else None,
                "service_level_s": threshold,
            }
        return out

    def _emit(self, kind: str, call: Record, **extra: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, call, extra)
            except Exception:
                log.exception("routing event listener failed", extra={"event": kind})
