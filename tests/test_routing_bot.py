"""The digital human as a routing target, on both state backends: chosen by the
customer, out of hours, after the maximum wait; its handover to a person with the
conversation; and bad input that changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from teller.config.settings import ContactSettings
from teller.errors import BadRequest, Conflict
from teller.signaling.contact import Router, load_catalogue
from teller.signaling.contact.routing import parse_hours, queue_name
from teller.state import StateStore

CATALOGUE = load_catalogue()
DAY = 86400.0


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_router(store: StateStore, clock: Clock, events: list[tuple[str, str]], bot: bool = True, **settings: Any) -> Router:
    router = Router(store, ContactSettings(**settings), CATALOGUE, clock=clock,
                    on_event=lambda kind, call, extra: events.append((kind, call["call_id"])))
    router.bot_enabled = bot
    return router


CONVERSATION = [
    {"who": "bot", "text": "Hello, how can I help?", "ts": 1.0},
    {"who": "customer", "text": "I'd like a farm loan", "ts": 2.0},
    {"who": "bot", "text": "Our officers advise on farm loans.", "ts": 3.0},
    {"who": "customer", "text": "I want to talk to a person", "ts": 4.0},
]


async def test_chosen_bot_hands_over_to_the_right_skill_with_the_conversation(store: StateStore) -> None:
    clock, events = Clock(), []
    router = make_router(store, clock, events)
    await router.sign_in("loan-agent", "Li", {"loans": 5}, ["en"])
    await router.set_state("loan-agent", "away")
    call = await router.request({"identity": "c1", "name": "C1"}, "card_activation", language="en", target="digital_human")
    assert call["state"] == "bot" and call["bot"]["reason"] == "chosen"
    assert await store.queue_items(queue_name(call["skill"])) == []
    assert ("to_bot", call["call_id"]) in events

    clock.now += 30
    handed = await router.handover(call["call_id"], "asked_for_person", CONVERSATION, skill="loans")
    assert handed["state"] == "queued" and handed["skill"] == "loans"
    assert handed["priority"] == call["priority"] + router.settings.transfer_priority
    assert handed["queued_at"] == clock.now and handed["requested_at"] == call["requested_at"]
    assert [t["text"] for t in handed["bot"]["conversation"]] == [t["text"] for t in CONVERSATION]
    assert handed["bot"]["handover"] == {"reason": "asked_for_person", "at": clock.now, "skill": "loans"}
    assert ("handover", call["call_id"]) in events
    assert [i["item_id"] for i in await store.queue_items(queue_name("loans"))] == [call["call_id"]]

    await router.set_state("loan-agent", "available")
    offered = await router.call(call["call_id"])
    assert offered["offered_to"] == "loan-agent"
    answered = await router.accept("loan-agent", call["call_id"])
    assert answered["state"] == "connected" and answered["bot"]["conversation"][-1]["who"] == "customer"


async def test_an_unknown_skill_keeps_the_business_skill(store: StateStore) -> None:
    router = make_router(store, Clock(), [])
    call = await router.request({"identity": "c1"}, "card_activation", target="digital_human")
    handed = await router.handover(call["call_id"], "not_understood", [], skill="no-such-skill")
    assert handed["skill"] == call["skill"]


async def test_out_of_hours_goes_to_the_bot_or_is_refused(store: StateStore) -> None:
    # 1_000_000 s after the epoch is 13:46 UTC, 21:46 at UTC+8.
    clock, events = Clock(1_000_000.0), []
    router = make_router(store, clock, events, hours="08:00-20:00", utc_offset_minutes=480)
    assert not router.is_open(clock.now)
    call = await router.request({"identity": "c1"}, "card_activation")
    assert call["state"] == "bot" and call["bot"]["reason"] == "out_of_hours"

    closed = make_router(store, clock, events, hours="08:00-20:00", out_of_hours_target="closed")
    before = await store.list_docs("call")
    with pytest.raises(Conflict) as err:
        await closed.request({"identity": "c2"}, "card_activation")
    assert err.value.code == "closed"
    assert len(await store.list_docs("call")) == len(before)

    open_now = make_router(store, clock, events, hours="20:00-23:00", utc_offset_minutes=480)
    assert (await open_now.request({"identity": "c3"}, "card_activation"))["state"] == "queued"


def test_opening_hours_parse_and_wrap_midnight() -> None:
    assert parse_hours("") is None
    assert parse_hours("08:00-20:30") == (480, 1230)
    router = Router.__new__(Router)
    router._hours = parse_hours("22:00-06:00")
    router.settings = ContactSettings(utc_offset_minutes=0)
    assert router.is_open(23 * 3600) and router.is_open(DAY + 5 * 3600) and not router.is_open(12 * 3600)
    for bad in ("8-20", "25:00-26:00", "08:00"):
        with pytest.raises(ValueError):
            parse_hours(bad)


async def test_max_wait_overflows_to_the_bot_once(store: StateStore) -> None:
    clock, events = Clock(), []
    router = make_router(store, clock, events, max_wait_s=60, overflow_target="digital_human")
    call = await router.request({"identity": "c1"}, "card_activation")
    clock.now += 61
    await router.tick()
    moved = await router.call(call["call_id"])
    assert moved["state"] == "bot" and moved["bot"]["reason"] == "max_wait"
    assert await store.queue_items(queue_name(call["skill"])) == []

    await router.handover(call["call_id"], "asked_for_person", CONVERSATION)
    clock.now += 61
    await router.tick()  # back from the bot: it overflows as usual, not to the bot again
    assert (await router.call(call["call_id"]))["state"] == "overflowed"


async def test_without_a_bot_nothing_goes_to_it(store: StateStore) -> None:
    clock, events = Clock(), []
    router = make_router(store, clock, events, bot=False, max_wait_s=60, overflow_target="digital_human")
    with pytest.raises(Conflict) as err:
        await router.request({"identity": "c1"}, "card_activation", target="digital_human")
    assert err.value.code == "bot_unavailable"
    assert await store.list_docs("call") == []
    call = await router.request({"identity": "c2"}, "card_activation")
    clock.now += 61
    await router.tick()
    assert (await router.call(call["call_id"]))["state"] == "overflowed"


async def test_bad_handovers_change_nothing_and_a_call_beside_them_goes_on(store: StateStore) -> None:
    clock, events = Clock(), []
    router = make_router(store, clock, events)
    await router.sign_in("a1", "A", {"cards": 5}, ["zh"])
    beside = await router.request({"identity": "c0"}, "card_activation")
    assert (await router.accept("a1", beside["call_id"]))["state"] == "connected"
    call = await router.request({"identity": "c1"}, "card_activation", target="digital_human")
    before = await router.call(call["call_id"])
    for conversation in ("text", [{"who": "hacker", "text": "x"}], [{"who": "bot"}], [1]):
        with pytest.raises(BadRequest):
            await router.handover(call["call_id"], "asked", conversation)  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        await router.handover(call["call_id"], "", [])
    with pytest.raises(Conflict) as err:
        await router.handover(beside["call_id"], "asked", [])
    assert err.value.code == "not_with_bot"
    with pytest.raises(BadRequest):
        await router.request({"identity": "c2"}, "card_activation", target="robot")
    assert await router.call(call["call_id"]) == before
    assert (await router.call(beside["call_id"]))["state"] == "connected"
    assert (await router.agent("a1"))["state"] == "busy"


async def test_the_customer_ends_a_bot_call(store: StateStore) -> None:
    router = make_router(store, Clock(), [])
    call = await router.request({"identity": "c1"}, "card_activation", target="digital_human")
    ended = await router.hang_up(call["call_id"], by="customer:c1")
    assert ended["state"] == "ended" and ended["ended_by"] == "customer:c1"
    await router.note_conversation(call["call_id"], CONVERSATION)
    assert (await router.call(call["call_id"]))["bot"]["conversation"][0]["who"] == "bot"
