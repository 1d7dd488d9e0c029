"""Routing (ACD) on both state backends: order, priority, skills, languages, timers,
transfers, bad input, and a crowd of customers and agents arriving at random."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from teller.config.settings import ContactSettings
from teller.errors import BadRequest, Conflict, NotFound
from teller.signaling.contact import Router, load_catalogue
from teller.state import StateStore

from .state_backends import Backend

CATALOGUE = load_catalogue()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> list[tuple[str, str]]:
    return []


def make_router(store: StateStore, clock: Clock, events: list[tuple[str, str]] | None = None, **settings: Any) -> Router:
    on_event = (lambda kind, call, extra: events.append((kind, call["call_id"]))) if events is not None else None
    return Router(store, ContactSettings(**settings), CATALOGUE, clock=clock, on_event=on_event)


@pytest.fixture
def router(store: StateStore, clock: Clock, events: list[tuple[str, str]]) -> Router:
    return make_router(store, clock, events)


async def customer(router: Router, name: str, business: str = "card_activation", **kwargs: Any) -> str:
    call = await router.request({"identity": name, "name": name}, business, **kwargs)
    return call["call_id"]


async def test_first_come_first_served_and_longest_idle_agent_first(router: Router, clock: Clock) -> None:
    first = await customer(router, "c1")
    clock.advance(1)
    second = await customer(router, "c2")
    await router.sign_in("a-old", "Old", {"cards": 1}, ["zh"])  # idle since now
    clock.advance(5)
    await router.sign_in("a-new", "New", {"cards": 1}, ["zh"])
    # a-old signed in first: it got the first call at once; a-new the second.
    assert (await router.call(first))["offered_to"] == "a-old"
    assert (await router.call(second))["offered_to"] == "a-new"

    clock.advance(1)
    third = await customer(router, "c3")
    await router.decline("a-new", second)
    # The declined call keeps its place ahead of c3 and goes to nobody who declined
    # it while someone else could take it: nobody else is free, so it waits.
    assert (await router.call(second))["state"] == "ringing"  # offered again to a-new: the only agent free
    # Ringing calls are still in the queue until answered: c1 and c2 are ahead of c3.
    assert (await router.position(third))["position"] == 3
    await router.accept("a-old", first)
    assert (await router.position(third))["position"] == 2


async def test_priority_elderly_and_vip_go_first(router: Router, clock: Clock) -> None:
    plain = await customer(router, "plain")
    clock.advance(1)
    vip = await customer(router, "vip", vip=True)
    clock.advance(1)
    elderly = await customer(router, "elderly", elderly=True)
    clock.advance(1)
    urgent = await customer(router, "lost card", "loss_report")  # priority 40 business, same skill
    positions = {c: (await router.position(c))["position"] for c in (plain, vip, elderly, urgent)}
    assert positions == {urgent: 1, elderly: 2, vip: 3, plain: 4}
    await router.sign_in("a1", "A", {"cards": 3}, ["zh"])
    assert (await router.call(urgent))["offered_to"] == "a1"


async def test_skills_levels_and_languages(router: Router) -> None:
    await router.sign_in("loans-only", "L", {"loans": 5}, ["zh", "en"])
    await router.sign_in("cards-junior", "J", {"cards": 1}, ["zh", "en"])
    await router.sign_in("cards-senior", "S", {"cards": 8}, ["zh"])
    english = await customer(router, "tourist", language="en")
    chinese = await customer(router, "farmer")
    # The English call needs an English-speaking cards agent: only the junior one.
    assert (await router.call(english))["offered_to"] == "cards-junior"
    assert (await router.call(chinese))["offered_to"] == "cards-senior"
    nobody = await customer(router, "tibetan", language="bo")
    assert (await router.call(nobody))["state"] == "queued"
    assert (await router.agent("loans-only"))["state"] == "available"


async def test_ring_timeout_moves_the_call_on_and_sets_the_agent_away(router: Router, clock: Clock, events: list) -> None:
    await router.sign_in("sleepy", "Z", {"cards": 5}, ["zh"])
    call_id = await customer(router, "c1")
    assert (await router.call(call_id))["offered_to"] == "sleepy"
    clock.advance(5)
    await router.sign_in("awake", "A", {"cards": 1}, ["zh"])
    clock.advance(16)  # 21 s ringing > 20 s
    await router.tick()
    sleepy = await router.agent("sleepy")
    assert (sleepy["state"], sleepy["reason"]) == ("away", "no_answer")
    call = await router.call(call_id)
    assert call["offered_to"] == "awake" and call["declined_by"] == ["sleepy"]
    await router.accept("awake", call_id)
    assert [k for k, c in events if c == call_id] == ["queued", "offered", "offered", "answered"]


async def test_wrap_up_timer_and_early_finish(router: Router, clock: Clock) -> None:
    await router.sign_in("a1", "A", {"cards": 1}, ["zh"])
    first = await customer(router, "c1")
    await router.accept("a1", first)
    assert (await router.agent("a1"))["state"] == "busy"
    second = await customer(router, "c2")
    assert (await router.call(second))["state"] == "queued"  # a1 is busy
    await router.hang_up(first, by="customer")
    assert (await router.agent("a1"))["state"] == "wrap_up"
    clock.advance(29)
    await router.tick()
    assert (await router.agent("a1"))["state"] == "wrap_up"
    clock.advance(2)  # 31 s > 30 s wrap-up
    await router.tick()
    assert (await router.call(second))["offered_to"] == "a1"
    await router.accept("a1", second)
    await router.hang_up(second, by="agent")
    agent = await router.wrap_up("a1", "resolved", "card activated")
    assert agent["state"] == "available"
    assert (await router.call(second))["wrap_ups"][0]["code"] == "resolved"


async def test_transfers_and_a_third_party(router: Router) -> None:
    await router.sign_in("teller", "T", {"cards": 1}, ["zh"])
    call_id = await customer(router, "c1")
    await router.accept("teller", call_id)
    # Warm transfer to the loans skill: the teller stays until the loans agent answers.
    await router.transfer(call_id, "teller", to_skill="loans", warm=True)
    call = await router.call(call_id)
    assert call["state"] == "connected" and call["transfer_pending"]
    await router.sign_in("lender", "L", {"loans": 2}, ["zh"])
    assert (await router.call(call_id))["offered_to"] == "lender"
    call = await router.accept("lender", call_id)
    assert call["agent_id"] == "lender" and call["parties"] == ["teller", "lender"] and call["skill"] == "loans"
    await router.leave(call_id, "teller")
    assert (await router.agent("teller"))["state"] == "wrap_up"
    # A risk reviewer joins as a third party.
    await router.sign_in("reviewer", "R", {"wealth": 1}, ["zh"])
    await router.invite(call_id, "lender", "reviewer")
    call = await router.accept("reviewer", call_id)
    assert call["parties"] == ["lender", "reviewer"] and call["agent_id"] == "lender"
    # Cold transfer to a named agent: the lender leaves at once.
    await router.wrap_up("teller", "transferred")
    await router.transfer(call_id, "lender", to_agent="teller")
    assert (await router.agent("lender"))["state"] == "wrap_up"
    call = await router.accept("teller", call_id)
    assert call["agent_id"] == "teller" and sorted(call["parties"]) == ["reviewer", "teller"]
    ended = await router.hang_up(call_id)
    assert ended["state"] == "ended"
    assert {(await router.agent(a))["state"] for a in ("teller", "reviewer")} == {"wrap_up"}


async def test_cold_transfer_nobody_answers_goes_to_the_queue(router: Router, clock: Clock) -> None:
    await router.sign_in("a1", "A", {"cards": 1}, ["zh"])
    await router.sign_in("a2", "B", {"cards": 1}, ["zh"])
    call_id = await customer(router, "c1")
    agent = (await router.call(call_id))["offered_to"]
    other = "a2" if agent == "a1" else "a1"
    await router.accept(agent, call_id)
    await router.transfer(call_id, agent, to_agent=other)
    await router.decline(other, call_id)
    call = await router.call(call_id)
    # Back in the cards queue with transfer priority, offered to whoever is free: the
    # one who declined, since the other is in wrap-up.
    assert call["state"] == "ringing" and call["transfer_pending"] and call["offered_to"] == other


async def test_customer_abandons_and_max_wait_overflows(router: Router, clock: Clock, events: list) -> None:
    gone = await customer(router, "impatient")
    waiting = await customer(router, "patient")
    clock.advance(25)
    await router.cancel(gone)
    assert (await router.call(gone))["state"] == "abandoned"
    clock.advance(600)
    await router.tick()
    call = await router.call(waiting)
    assert (call["state"], call["overflow_target"]) == ("overflowed", "callback")
    assert ("overflowed", waiting) in events and ("abandoned", gone) in events
    stats = (await router.queue_stats())["cards"]
    assert stats["waiting"] == 0 and stats["abandoned"] == 1 and stats["answered"] == 0
    assert stats["service_level"] == 0.0  # one abandon after 20 s, nothing answered


async def test_bad_input_is_refused_and_changes_nothing(router: Router) -> None:
    await router.sign_in("a1", "A", {"cards": 1}, ["zh"])
    await router.sign_in("a2", "B", {"cards": 1}, ["zh"])
    call_id = await customer(router, "c1")
    offered = (await router.call(call_id))["offered_to"]
    other = "a2" if offered == "a1" else "a1"
    before = await router.call(call_id)
    with pytest.raises(Conflict) as not_offered:
        await router.accept(other, call_id)  # not offered to them
    assert not_offered.value.code == "call_not_offered"
    await router.accept(offered, call_id)
    with pytest.raises(Conflict) as double:
        await router.accept(offered, call_id)  # double accept
    assert double.value.code == "call_not_offered"
    for coro, error, code in [
        (router.request({"identity": "x"}, "no_such_business"), NotFound, "business_not_found"),
        (router.set_state("a1", "partying"), BadRequest, "invalid_state"),
        (router.set_state(offered, "available"), Conflict, "agent_busy"),
        (router.accept("ghost", call_id), NotFound, "agent_not_found"),
        (router.call("CL_nope"), NotFound, "call_not_found"),
        (router.sign_in("a3", "C", {"cards": 99}, ["zh"]), BadRequest, "invalid_message"),
        (router.sign_in("a3", "C", {"cards": 1}, []), BadRequest, "invalid_message"),
        (router.wrap_up(other, "done"), Conflict, "not_in_wrap_up"),
        (router.transfer(call_id, other, to_skill="loans"), Conflict, "not_in_call"),
        (router.transfer(call_id, offered, to_skill="astrology"), NotFound, "skill_not_found"),
        (router.cancel(call_id), Conflict, "call_not_waiting"),
        (router.leave(call_id, offered), Conflict, "last_agent"),
    ]:
        with pytest.raises(error) as info:
            await coro
        assert info.value.code == code
    after = await router.call(call_id)
    assert after["state"] == "connected" and after["agent_id"] == offered
    assert {k: v for k, v in after.items() if k not in ("state", "agent_id", "parties", "answered_at", "offered_to", "offer_kind")} == {
        k: v for k, v in before.items() if k not in ("state", "agent_id", "parties", "answered_at", "offered_to", "offer_kind")
    }
    assert await router.store.get_agent("a3") is None


async def test_crowd_no_call_twice_none_lost_service_level_right(backend: Backend, clock: Clock) -> None:
    """50 customers and 10 agents at random, driven through two routers (two processes
    on Redis) at once: every call ends answered or abandoned, each accepted exactly
    once, no agent ever holds two calls, and the service level matches the log."""
    rng = random.Random(7)
    stores = [await backend.open(), await backend.open()]
    events: list[tuple[str, str]] = []
    routers = [make_router(s, clock, events) for s in stores]
    skills = ["cards", "payments", "loans"]
    for i in range(10):
        await routers[i % 2].sign_in(f"ag{i}", f"Agent {i}", {rng.choice(skills): rng.randint(1, 5), "cards": 1}, ["zh", "en"])
    business_of = {"cards": "card_activation", "payments": "transfer", "loans": "loan_consultation"}
    calls: list[str] = []
    accepted: dict[str, str] = {}
    arrivals = 0
    for step in range(400):
        clock.advance(rng.uniform(0.5, 3.0))
        router = routers[step % 2]
        actions = []
        if arrivals < 50 and rng.random() < 0.7:
            arrivals += 1
            skill = rng.choice(skills)
            actions.append(router.request({"identity": f"cust{arrivals}"}, business_of[skill], language=rng.choice(["zh", "en"]), elderly=rng.random() < 0.2))
        for agent in await router.store.list_agents():
            if agent["state"] == "ringing" and rng.random() < 0.6:
                # Both routers try to accept the same offer at once: one must win.
                actions += [routers[0].accept(agent["agent_id"], agent["offered_call"]), routers[1].accept(agent["agent_id"], agent["offered_call"])]
            elif agent["state"] == "busy" and rng.random() < 0.06:
                actions.append(router.hang_up(agent["call_id"]))
            elif agent["state"] == "wrap_up" and rng.random() < 0.5:
                actions.append(router.wrap_up(agent["agent_id"], "done"))
        for call in await router.store.list_docs("call"):
            if call["state"] == "queued" and rng.random() < 0.03:
                actions.append(router.cancel(call["call_id"]))
        results = await asyncio.gather(*actions, return_exceptions=True)
        for result in results:
            if isinstance(result, dict) and "call_id" in result and result.get("state") == "queued" and result["call_id"] not in calls:
                calls.append(result["call_id"])
            if isinstance(result, BaseException) and not isinstance(result, (Conflict,)):
                raise result
        await router.tick()
        agents = await router.store.list_agents()
        busy_with = [a["call_id"] for a in agents if a["state"] == "busy"]
        assert len(busy_with) == len(set(busy_with)), "one call, two agents"
        ringing = [a["offered_call"] for a in agents if a["state"] == "ringing"]
        assert len(ringing) == len(set(ringing)), "one call offered to two agents"
        if arrivals == 50 and all(c["state"] in ("ended", "abandoned") for c in await router.store.list_docs("call")):
            break
    # Drain: answer whatever is left.
    for _ in range(200):
        clock.advance(2)
        open_calls = [c for c in await routers[0].store.list_docs("call") if c["state"] not in ("ended", "abandoned", "overflowed")]
        if not open_calls:
            break
        for agent in await routers[0].store.list_agents():
            if agent["state"] == "ringing":
                await routers[0].accept(agent["agent_id"], agent["offered_call"])
            elif agent["state"] == "busy":
                await routers[0].hang_up(agent["call_id"])
            elif agent["state"] == "wrap_up":
                await routers[0].wrap_up(agent["agent_id"], "done")
        await routers[0].tick()
    final = await routers[0].store.list_docs("call")
    assert len(final) == 50, "a call was lost"
    assert all(c["state"] in ("ended", "abandoned", "overflowed") for c in final), [c["state"] for c in final if c["state"] not in ("ended", "abandoned", "overflowed")]
    # The crowd was a real one: callers queued past the service-level time, some gave up.
    assert any(c["answered_at"] and c["answered_at"] - c["queued_at"] > 20 for c in final)
    assert any(c["state"] == "abandoned" for c in final)
    answered_events = [c for k, c in events if k == "answered"]
    assert len(answered_events) == len(set(answered_events)), "a call was answered twice"
    assert sorted(answered_events) == sorted(c["call_id"] for c in final if c["answered_at"] is not None)
    for skill, stats in (await routers[0].queue_stats()).items():
        mine = [c for c in final if c["skill"] == skill]
        answered = [c for c in mine if c["answered_at"] is not None]
        within = sum(1 for c in answered if c["answered_at"] - c["queued_at"] <= 20)
        late = sum(1 for c in mine if c["state"] == "abandoned" and c["ended_at"] - c["queued_at"] > 20)
        expected = round(within / (len(answered) + late), 4) if answered or late else None
        assert stats["service_level"] == expected and stats["answered"] == len(answered)


async def test_operations_statistics_by_hour_business_and_agent(router: Router, clock: Clock) -> None:
    from teller.signaling.contact.stats import operations, to_csv

    clock.now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    await router.sign_in("a1", "A", {"cards": 1, "payments": 1}, ["zh"])
    first = await customer(router, "c1")  # offered at once
    clock.advance(10)
    await router.accept("a1", first)  # waited 10 s
    clock.advance(60)
    await router.hang_up(first)  # talked 60 s
    clock.advance(15)
    await router.wrap_up("a1", "activated")  # handled 75 s
    clock.advance(3600)
    second = await customer(router, "c2", "transfer")
    clock.advance(30)
    await router.accept("a1", second)  # waited 30 s
    third = await customer(router, "c3")
    clock.advance(5)
    await router.cancel(third)
    clock.advance(100)
    await router.hang_up(second)  # talked 100 s, no wrap-up code yet

    calls = await router.store.list_docs("call")
    by_hour = operations(calls, "hour")
    assert [r["group"] for r in by_hour] == ["2023-11-14T22:00Z", "2023-11-14T23:00Z"]
    assert (by_hour[0]["requests"], by_hour[0]["connected"], by_hour[0]["businesses_done"]) == (1, 1, 1)
    assert (by_hour[0]["avg_wait_s"], by_hour[0]["avg_talk_s"], by_hour[0]["avg_handle_s"]) == (10.0, 60.0, 75.0)
    assert (by_hour[1]["requests"], by_hour[1]["connected"], by_hour[1]["abandoned"], by_hour[1]["businesses_done"]) == (2, 1, 1, 0)
    by_business = {r["group"]: r for r in operations(calls, "business")}
    assert by_business["transfer"]["max_wait_s"] == 30.0 and by_business["card_activation"]["requests"] == 2
    by_agent = {r["group"]: r for r in operations(calls, "agent")}
    assert by_agent["a1"]["connected"] == 2 and by_agent["(none)"]["abandoned"] == 1
    assert operations(calls, "day", since=clock.now + 1) == []
    text = to_csv(by_hour).splitlines()
    assert text[0].startswith("group,requests,connected,abandoned") and len(text) == 3
    with pytest.raises(BadRequest):
        operations(calls, "weekday")


async def test_the_wait_estimate_follows_recent_answers(router: Router, clock: Clock) -> None:
    first = await customer(router, "c1")
    assert (await router.position(first))["estimated_wait_s"] == 60.0  # nothing answered yet
    await router.sign_in("a1", "A", {"cards": 1}, ["zh"])
    clock.advance(40)
    await router.accept("a1", first)  # this skill's callers wait about 40 s
    second = await customer(router, "c2")
    third = await customer(router, "c3")
    assert (await router.position(second))["estimated_wait_s"] == 40.0
    assert (await router.position(third))["estimated_wait_s"] == 80.0  # second in line, one agent
    await router.sign_in("a2", "B", {"cards": 1}, ["zh"])  # takes c2 at once; a1 busy
    # c2 rings at a2 (still ahead until answered): second in line, two agents on duty.
    assert (await router.position(third))["position"] == 2
    assert (await router.position(third))["estimated_wait_s"] == 40.0


async def test_closed_calls_are_forgotten_after_the_retention(store: StateStore, clock: Clock) -> None:
    router = make_router(store, clock, keep_closed_calls_days=1)
    old = await customer(router, "old")
    await router.cancel(old)
    clock.advance(3600)
    waiting = await customer(router, "waiting")
    await store.append_event(old, {"type": "note"})
    await store.append_event(waiting, {"type": "note"})
    clock.advance(86400)
    await router.tick()
    assert [c["call_id"] for c in await store.list_docs("call")] == [waiting]
    assert await store.read_events(old) == []  # the call's timeline went with it
    assert [e["type"] for e in await store.read_events(waiting)] == ["note"]
