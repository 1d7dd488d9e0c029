"""Load test of the contact centre with real media: locust users for customers, agents
and signalling-only clients (docs/loadtest.md, "Load tests with locust").

    locust -f loadtests/locustfile.py --headless -u 20 -r 5 -t 60s --host http://127.0.0.1:7880 \\
        --csv out/run --html out/run.html --summary-json out/summary.json

- **CustomerUser** gets a customer token, queues a call (`POST /v1/calls`), joins the
  call's room at once and publishes its camera and microphone (as the customer page
  does), polls the call until an agent answers, subscribes to the agent, holds the call
  `--call-seconds` with media both ways, then hangs up (`DELETE /v1/calls/{call}`).
- **AgentUser** logs in (`POST /v1/dev/agent`, or a token signed with `--auth-secret`),
  goes available, polls its state, accepts the call offered to it, joins the call's
  room with media, talks until the customer hangs up, wraps up, and takes the next.
- **SignallingUser** has no media: a customer who looks at the catalogue, queues for
  `--signalling-business` (a business whose skill load-test agents are not given, so
  these calls stay queued and never take an agent from a media call), polls its place
  and gives up; and a supervisor's wallboard polling queues, agents and calls.

Media runs in a helper process (loadtests/locust_media.py), one for each locust
process: locust patches the standard library with gevent, and aiortc needs a real
asyncio loop. Users talk to it in JSON lines; a greenlet reads its events and hands
them to the user waiting for them. What the media users measure is reported as locust
request events (type `customer` or `agent`): `join`, `first frame`, `delivery`,
`queue wait`, `call`, and `error` for failures outside those.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import random
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from gevent import GreenletExit
from gevent import subprocess as gsubprocess
from gevent.event import AsyncResult
from gevent.event import Event as GEvent
from gevent.lock import Semaphore
from locust import HttpUser, between, constant, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

log = logging.getLogger("loadtests.locustfile")

HELPER = Path(__file__).resolve().parent / "locust_media.py"
ROOT = Path(__file__).resolve().parent.parent
HELPER_READY_TIMEOUT_S = 180.0  # encoding the media loop, on a busy machine
MEDIA_STEP_TIMEOUT_S = 30.0  # to connect, or to see the first keyframe
LEAVE_TIMEOUT_S = 20.0
CUSTOMER_ROLES = ["customer"]
AGENT_ROLES = ["agent", "reviewer"]
FINISHED = {"ended", "abandoned", "overflowed"}


# -- options --------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--call-seconds", type=float, default=20.0,
                        help="Teller: how long a customer holds a call once its media is connected (default 20)")
    parser.add_argument("--summary-json", default="",
                        help="Teller: write a JSON summary here when locust stops (default: none)")
    parser.add_argument("--video-kbps", type=int, default=500,
                        help="Teller: bitrate of the pre-encoded VP8 video, 640x480 30 fps (default 500)")
    parser.add_argument("--auth-secret", default="", is_secret=True,
                        help="Teller: the server's [auth] secret; tokens are signed here instead of asked from "
                             "the demo endpoints /v1/dev/* (needed where auth.dev_tokens is off)")
    parser.add_argument("--wrap-up-seconds", type=float, default=2.0,
                        help="Teller: how long an agent takes to wrap up after a call (default 2)")
    parser.add_argument("--max-queue-seconds", type=float, default=120.0,
                        help="Teller: a customer not answered in this time gives up, a failure (default 120)")
    parser.add_argument("--signalling-business", default="general_enquiry",
                        help="Teller: the business SignallingUsers queue for; agents are not given its skill "
                             "(default general_enquiry)")
    parser.add_argument("--delivery-target", type=float, default=99.0,
                        help="Teller: a call whose video delivery (frames received against frames sent) is below "
                             "this percentage is a failure (default 99)")
    parser.add_argument("--relay-only", action="store_true", default=False,
                        help="Teller: media users gather relay (TURN) candidates only, e.g. through `teller impair`")
    parser.add_argument("--ice-servers", default="",
                        help="Teller: ICE servers for media users as JSON, e.g. "
                             "'[{\"urls\": [\"turn:127.0.0.1:3479?transport=udp\"], \"username\": \"u\", "
                             "\"credential\": \"p\"}]' (default: those of the server's join reply)")


def _options_of(environment: Environment) -> Any:
    return environment.parsed_options


# -- what the media users measured, for the summary -----------------------------------------


class MediaTotals:
    """Raw figures of this process (or, on a master, of every worker)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.video_frames = 0
        self.audio_frames = 0
        self.subscriptions = 0
        self.deliveries: list[float] = []
        self.joins: dict[str, list[float]] = {"customer": [], "agent": []}
        self.first_frames: list[float] = []
        self.queue_waits: list[float] = []
        self.calls_queued = 0
        self.calls_completed = 0

    def add_session(self, figures: dict[str, Any]) -> None:
        self.video_frames += int(figures.get("video_frames") or 0)
        self.audio_frames += int(figures.get("audio_frames") or 0)
        self.subscriptions += int(bool(figures.get("subscribed")))
        if figures.get("delivery") is not None:
            self.deliveries.append(float(figures["delivery"]))

    def drain(self) -> dict[str, Any]:
        out = {
            "video_frames": self.video_frames, "audio_frames": self.audio_frames, "subscriptions": self.subscriptions,
            "deliveries": self.deliveries, "joins": self.joins, "first_frames": self.first_frames,
            "queue_waits": self.queue_waits, "calls_queued": self.calls_queued, "calls_completed": self.calls_completed,
        }
        self.reset()
        return out

    def merge(self, data: dict[str, Any] | None) -> None:
        if not data:
            return
        for key in ("video_frames", "audio_frames", "subscriptions", "calls_queued", "calls_completed"):
            setattr(self, key, getattr(self, key) + int(data.get(key) or 0))
        self.deliveries += data.get("deliveries") or []
        self.first_frames += data.get("first_frames") or []
        self.queue_waits += data.get("queue_waits") or []
        for role, values in (data.get("joins") or {}).items():
            self.joins.setdefault(role, []).extend(values)


MEDIA = MediaTotals()
PEAK_USERS: dict[str, int] = {}
# Set once the test starts to stop: a failure from then on is the stop's doing, not the server's.
STATE = {"stopping": False}


def percentile(values: list[float], q: float) -> float | None:
    """As loadtests/media.py: the nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def fire(environment: Environment, kind: str, name: str, ms: float, length: int = 0, error: str | None = None) -> None:
    environment.events.request.fire(
        request_type=kind, name=name, response_time=ms, response_length=length,
        response=None, context={}, exception=MediaFailure(error) if error else None,
    )


class MediaFailure(Exception):
    """A failed media step; its text is what locust's failure table shows."""


class CallAborted(Exception):
    """The call cannot go on; what went wrong was reported already."""


# -- the media helper process ---------------------------------------------------------------


class MediaSession:
    """One party's media in the helper: its events as they arrive."""

    def __init__(self, helper: MediaHelper, key: str) -> None:
        self.helper = helper
        self.key = key
        self.events: dict[str, dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []
        self._seen_errors = 0
        self._changed = GEvent()
        self.left: AsyncResult = AsyncResult()
        self.closed = False

    def deliver(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "left":
            self.left.set(event)
        elif kind == "error":
            self.errors.append(event)
        elif kind:
            self.events.setdefault(kind, event)
        self._changed.set()

    def wait(self, kind: str, timeout: float) -> dict[str, Any] | None:
        """The event, or None after `timeout`; a new error from the helper raises MediaFailure."""
        deadline = time.monotonic() + timeout
        while True:
            if self._seen_errors < len(self.errors):
                error = self.errors[self._seen_errors]
                self._seen_errors = len(self.errors)
                raise MediaFailure(f"{error.get('stage')}: {error.get('error')}")
            if kind in self.events:
                return self.events[kind]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._changed.clear()
            self._changed.wait(remaining)

    def leave(self) -> dict[str, Any] | None:
        """Close it in the helper; its figures (frames, delivery), or None if the helper is gone."""
        if not self.closed:
            self.closed = True
            self.helper.send({"cmd": "leave", "id": self.key})
        try:
            return self.left.get(timeout=LEAVE_TIMEOUT_S)
        except gevent.Timeout:
            return None
        finally:
            self.helper.sessions.pop(self.key, None)


class MediaHelper:
    """loadtests/locust_media.py, started once per locust process (and again after a fork)."""

    _instance: MediaHelper | None = None
    _starting = Semaphore()

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.pid = os.getpid()
        self.sessions: dict[str, MediaSession] = {}
        self.ready: AsyncResult = AsyncResult()
        self.bye: AsyncResult = AsyncResult()
        self._write = Semaphore()
        self._serial = itertools.count(1)
        self.dead: str | None = None
        options = _options_of(environment)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
        self.proc = gsubprocess.Popen(
            [sys.executable, str(HELPER), "--video-kbps", str(options.video_kbps)],
            stdin=gsubprocess.PIPE, stdout=gsubprocess.PIPE, env=env, cwd=str(ROOT),
        )
        self.reader = gevent.spawn(self._read)

    @classmethod
    def get(cls, environment: Environment) -> MediaHelper:
        """The helper of this process, started (and ready) on first use."""
        if STATE["stopping"]:
            raise MediaFailure("the test is stopping")
        with cls._starting:
            helper = cls._instance
            if helper is None or helper.pid != os.getpid() or helper.dead:
                helper = cls._instance = MediaHelper(environment)
        try:
            helper.ready.get(timeout=HELPER_READY_TIMEOUT_S)
        except gevent.Timeout:
            raise MediaFailure(f"the media helper was not ready in {HELPER_READY_TIMEOUT_S:.0f} s") from None
        if helper.dead:
            raise MediaFailure(helper.dead)
        return helper

    @classmethod
    def current(cls) -> MediaHelper | None:
        helper = cls._instance
        return helper if helper is not None and helper.pid == os.getpid() else None

    def send(self, command: dict[str, Any]) -> None:
        if self.dead or self.proc.stdin is None:
            return
        line = (json.dumps(command) + "\n").encode()
        with self._write:
            try:
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
            except (OSError, ValueError) as exc:
                self._died(f"the media helper cannot be reached: {exc}")

    def join(self, role: str, url: str, token: str, peer_roles: list[str], peer_timeout: float) -> MediaSession:
        options = _options_of(self.environment)
        key = f"{role}-{self.pid}-{next(self._serial)}"
        session = MediaSession(self, key)
        self.sessions[key] = session
        ice_servers = json.loads(options.ice_servers) if options.ice_servers else None
        self.send({
            "cmd": "join", "id": key, "url": url, "token": token, "peer_roles": peer_roles,
            "peer_timeout": peer_timeout, "relay_only": bool(options.relay_only), "ice_servers": ice_servers,
        })
        if self.dead:
            session.deliver({"event": "error", "id": key, "stage": "helper", "error": self.dead})
            session.left.set(None)
        return session

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            try:
                raw = self.proc.stdout.readline()
            except (OSError, ValueError):
                raw = b""
            if not raw:
                break
            try:
                event = json.loads(raw)
            except ValueError:
                log.warning("media helper wrote a line that is not JSON: %r", raw[:200])
                continue
            kind = event.get("event")
            if kind == "ready":
                self.ready.set(event)
            elif kind == "bye":
                self.bye.set(event)
            else:
                if kind == "left" and not event.get("unknown"):
                    MEDIA.add_session(event)  # every session's frames, whether its user is still there or not
                session = self.sessions.get(event.get("id"))
                if session is not None:
                    session.deliver(event)
                elif kind == "error" and not STATE["stopping"]:
                    fire(self.environment, "media", "error", 0, error=f"{event.get('stage')}: {event.get('error')}")
        code = self.proc.wait()
        self._died(f"the media helper exited (status {code})")

    def _died(self, reason: str) -> None:
        if self.dead:
            return
        self.dead = reason
        if not self.ready.ready():
            self.ready.set(None)
        if not self.bye.ready():
            self.bye.set(None)
        for session in list(self.sessions.values()):
            session.deliver({"event": "error", "id": session.key, "stage": "helper", "error": reason})
            if not session.left.ready():
                session.left.set(None)

    def quit(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """Close every session (their frames still count), end the process."""
        bye = None
        if not self.dead:
            self.send({"cmd": "quit"})
            try:
                bye = self.bye.get(timeout=timeout)
            except gevent.Timeout:
                log.warning("the media helper did not quit in %.0f s; killing it", timeout)
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except gsubprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=5)
        return bye


# -- users ------------------------------------------------------------------------------------


class TellerUser(HttpUser):
    abstract = True
    role = "customer"

    def on_start(self) -> None:
        self.issuer: Any = None
        secret = _options_of(self.environment).auth_secret
        if secret:
            # Imported only here: teller.signaling brings aiohttp and aiortc with it.
            from teller.signaling.tokens import TokenIssuer

            self.issuer = TokenIssuer(secret)

    @property
    def options(self) -> Any:
        return _options_of(self.environment)

    def api(self, method: str, path: str, *, token: str | None = None, body: Any = None, name: str | None = None,
            allow: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
        """One REST call, through locust's client (so it is in the statistics).

        A 2xx, or an error whose code is in `allow`, is a success; anything else is a
        failure in locust's table and raises CallAborted."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with self.client.request(method, path, name=name or path, headers=headers, json=body, catch_response=True) as response:
            try:
                data = response.json()
            except ValueError:
                data = {}
            data = data if isinstance(data, dict) else {"body": data}
            error = data.get("error") if isinstance(data.get("error"), dict) else {}
            if 200 <= response.status_code < 300 or (error.get("code") in allow and error.get("code")):
                response.success()
                return response.status_code, data
            reason = error.get("message") or response.reason or getattr(response, "error", None) or "no response"
            text = f"{response.status_code} {error.get('code') or 'error'}: {reason}"
            response.failure(text)
        raise CallAborted(text)

    def customer_token(self) -> str:
        room = f"lt-{secrets.token_hex(6)}"
        name = f"Load {room[3:9]}"
        if self.issuer is not None:
            return self.issuer.issue(room=room, role="customer", name=name)
        _, body = self.api("POST", "/v1/dev/token", body={"room": room, "role": "customer", "name": name})
        return body["token"]

    def supervisor_token(self) -> str:
        if self.issuer is not None:
            return self.issuer.issue(room="*", role="supervisor", subject="lt-supervisor", name="Load supervisor")
        _, body = self.api("POST", "/v1/dev/supervisor", body={"name": "Load supervisor"})
        return body["token"]

    def report_failure(self, name: str, error: str) -> None:
        if not STATE["stopping"]:
            fire(self.environment, self.role, name, 0, error=error)

    def media(self) -> MediaHelper:
        try:
            return MediaHelper.get(self.environment)
        except MediaFailure as exc:
            self.report_failure("error", str(exc))
            raise CallAborted(str(exc)) from None

    def leave_media(self, session: MediaSession, interrupted: bool) -> dict[str, Any] | None:
        """Close a party's media and report its delivery (frames received against the
        frames its RTP timestamps span)."""
        figures = session.leave()
        if figures is None:
            if not interrupted:
                self.report_failure("delivery", f"no figures from the media helper ({session.helper.dead or 'timeout'})")
            return None
        ratio = figures.get("delivery")
        if ratio is not None:
            error = None
            target = self.options.delivery_target
            if 100 * ratio < target and not interrupted and not STATE["stopping"]:
                error = (f"video delivery {100 * ratio:.1f} % < {target:g} %: "
                         f"{figures['video_frames']} of {figures['expected_frames']} frames")
            fire(self.environment, self.role, "delivery", round(100 * ratio, 2), figures["video_frames"], error)
        elif figures.get("connected") and not interrupted and not STATE["stopping"]:
            self.report_failure("delivery", f"no video received ({figures['video_frames']} frames)")
        return figures

    def wait_media(self, session: MediaSession, kind: str, since: float, timeout: float, name: str) -> dict[str, Any]:
        """Wait for a media event and report it: `name`, timed from `since` (monotonic)."""
        try:
            event = session.wait(kind, timeout)
        except MediaFailure as exc:
            self.report_failure(name, str(exc))
            raise CallAborted(str(exc)) from None
        if event is None:
            text = f"no {kind.replace('_', ' ')} within {timeout:.0f} s"
            self.report_failure(name, text)
            raise CallAborted(text)
        ms = event["ms"] if "ms" in event else 1000 * (event["at"] - since)
        fire(self.environment, self.role, name, round(ms, 1))
        return event


class CustomerUser(TellerUser):
    """Queues, waits for an agent with its camera on, talks `--call-seconds`, hangs up."""

    weight = 2
    role = "customer"
    wait_time = between(1, 3)

    def on_start(self) -> None:
        super().on_start()
        self.businesses: list[str] = []
        self.call_id: str | None = None
        self.token: str | None = None
        with contextlib.suppress(CallAborted):
            self.media()  # the first users wait here while the helper encodes the media loop

    def choose_business(self) -> str:
        if not self.businesses:
            _, catalogue = self.api("GET", "/v1/catalogue")
            businesses = catalogue.get("businesses", [])
            reserved = {b["skill"] for b in businesses if b["id"] == self.options.signalling_business}
            # Load-test agents lack the skill reserved for SignallingUsers: its businesses would wait for ever.
            self.businesses = [b["id"] for b in businesses if b["skill"] not in reserved] or [b["id"] for b in businesses]
        return random.choice(self.businesses)

    @task
    def call(self) -> None:
        session: MediaSession | None = None
        interrupted = False
        completed = False
        try:
            business = self.choose_business()
            self.token = self.customer_token()
            _, queued = self.api("POST", "/v1/calls", token=self.token, name="/v1/calls",
                                 body={"business": business, "language": random.choice(["zh", "en"]), "channel": "h5"})
            queued_at = time.monotonic()
            self.call_id = queued["call_id"]
            MEDIA.calls_queued += 1
            # As the customer page: into the call's room with camera and microphone at once.
            session = self.media().join("customer", self.host, self.token, AGENT_ROLES,
                                        self.options.max_queue_seconds + MEDIA_STEP_TIMEOUT_S)
            self.wait_answered(session, queued_at)
            connected = self.wait_media(session, "connected", queued_at, MEDIA_STEP_TIMEOUT_S, "join")
            MEDIA.joins["customer"].append(1000 * (connected["at"] - queued_at))
            first = self.wait_media(session, "first_frame", 0, MEDIA_STEP_TIMEOUT_S, "first frame")
            MEDIA.first_frames.append(first["ms"])
            end = connected["at"] + self.options.call_seconds
            try:
                left = session.wait("peer_left", max(0.0, end - time.monotonic()))
            except MediaFailure as exc:
                self.report_failure("call", str(exc))
                raise CallAborted(str(exc)) from None
            if left is not None:
                self.report_failure("call", "the agent left before the customer hung up")
                raise CallAborted("agent left")
            completed = True
        except CallAborted:
            pass
        except GreenletExit:
            interrupted = True
            raise
        finally:
            self.finish(session, interrupted, completed)

    def wait_answered(self, session: MediaSession, queued_at: float) -> None:
        """Poll the call (as the page does, each second) until the media connects."""
        answered = False
        while True:
            try:
                media_up = session.wait("connected", 1.0) is not None
            except MediaFailure as exc:
                self.report_failure("join", str(exc))
                raise CallAborted(str(exc)) from None
            _, call = self.api("GET", f"/v1/calls/{self.call_id}", token=self.token, name="/v1/calls/[call]")
            state = call.get("state")
            if state == "connected" and not answered and call.get("answered_at") and call.get("queued_at"):
                answered = True
                # The server's own times: from queued to the agent's accept.
                wait_ms = 1000 * (call["answered_at"] - call["queued_at"])
                MEDIA.queue_waits.append(wait_ms)
                fire(self.environment, self.role, "queue wait", round(wait_ms, 1))
            if media_up:
                return
            if state in FINISHED:
                self.report_failure("join", f"the call was {state} before its media connected")
                self.call_id = None
                raise CallAborted(state)
            if state in ("queued", "ringing") and time.monotonic() - queued_at > self.options.max_queue_seconds:
                self.report_failure("queue wait", f"not answered within {self.options.max_queue_seconds:.0f} s")
                raise CallAborted("not answered")

    def finish(self, session: MediaSession | None, interrupted: bool, completed: bool) -> None:
        held = 0.0
        if session is not None:
            figures = self.leave_media(session, interrupted)
            held = (figures or {}).get("held_s") or 0.0
        if self.call_id is not None:
            try:
                # Hang up a connected call, or cancel one still waiting.
                self.api("DELETE", f"/v1/calls/{self.call_id}", token=self.token, name="/v1/calls/[call]",
                         allow=("call_ended", "call_not_connected", "call_not_waiting"))
            except CallAborted:
                completed = False
            self.call_id = None
        if completed:
            MEDIA.calls_completed += 1
            fire(self.environment, self.role, "call", round(1000 * held, 1))


class AgentUser(TellerUser):
    """Available, accepts what it is offered, talks until the customer hangs up, wraps up."""

    weight = 2
    role = "agent"
    wait_time = constant(0)

    def on_start(self) -> None:
        super().on_start()
        self.call_id: str | None = None
        self.agent_id: str | None = None
        self.token: str | None = None
        with contextlib.suppress(CallAborted):
            self.media()

    def sign_in(self) -> None:
        self.agent_id, self.token = self.login()
        self.api("POST", "/v1/agents/me/state", token=self.token, body={"state": "available"}, name="/v1/agents/me/state")

    def login(self) -> tuple[str, str]:
        """An agent with every skill but the one reserved for SignallingUsers."""
        _, catalogue = self.api("GET", "/v1/catalogue")
        businesses = catalogue.get("businesses", [])
        reserved = {b["skill"] for b in businesses if b["id"] == self.options.signalling_business}
        skills = {b["skill"]: 5 for b in businesses if b["skill"] not in reserved} or {b["skill"]: 5 for b in businesses}
        name = f"Load agent {secrets.token_hex(3)}"
        if self.issuer is not None:
            agent_id = f"lt-agent-{secrets.token_hex(4)}"
            token = self.issuer.issue(room=f"desk-{agent_id}", role="agent", subject=agent_id, name=name)
        else:
            _, body = self.api("POST", "/v1/dev/agent", body={"name": name})
            agent_id, token = body["agent_id"], body["token"]
        self.api("PUT", f"/v1/agents/{agent_id}", token=self.supervisor_token(), name="/v1/agents/[agent]",
                 body={"name": name, "skills": skills, "languages": ["zh", "en"]})
        return agent_id, token

    def me(self) -> dict[str, Any]:
        return self.api("GET", "/v1/agents/me", token=self.token, name="/v1/agents/me")[1]

    @task
    def shift(self) -> None:
        try:
            if self.token is None:
                self.sign_in()
            call_id = self.wait_for_offer(10.0)
            if call_id is not None:
                self.take(call_id)
        except CallAborted:
            gevent.sleep(1.0)

    def wait_for_offer(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            me = self.me()
            state = me.get("state")
            if state == "ringing" and me.get("offered_call"):
                return me["offered_call"]
            if state == "away":
                self.report_failure("error", f"the agent was set away ({me.get('reason')}): an offer was missed")
                self.api("POST", "/v1/agents/me/state", token=self.token, body={"state": "available"}, name="/v1/agents/me/state")
            elif state == "offline":
                self.api("POST", "/v1/agents/me/state", token=self.token, body={"state": "available"}, name="/v1/agents/me/state")
            elif state == "wrap_up":
                self.wrap_up()
            elif state == "busy" and me.get("call_id"):
                self.report_failure("error", f"the agent was still busy with {me['call_id']}")
                self.api("DELETE", f"/v1/calls/{me['call_id']}", token=self.token, name="/v1/calls/[call]",
                         allow=("call_ended",))
            gevent.sleep(0.5)
        return None

    def take(self, call_id: str) -> None:
        session: MediaSession | None = None
        interrupted = False
        completed = False
        try:
            accepted_at = time.monotonic()
            _, call = self.api("POST", f"/v1/calls/{call_id}/accept", token=self.token, name="/v1/calls/[call]/accept",
                               allow=("call_not_offered", "call_not_waiting"))
            if "token" not in call:
                return  # taken back (the customer gave up) between the poll and the accept
            self.call_id = call_id
            session = self.media().join("agent", self.host, call["token"], CUSTOMER_ROLES, MEDIA_STEP_TIMEOUT_S)
            connected = self.wait_media(session, "connected", accepted_at, 2 * MEDIA_STEP_TIMEOUT_S, "join")
            MEDIA.joins["agent"].append(1000 * (connected["at"] - accepted_at))
            first = self.wait_media(session, "first_frame", 0, MEDIA_STEP_TIMEOUT_S, "first frame")
            MEDIA.first_frames.append(first["ms"])
            # Talk until the customer hangs up; the desk polls the agent's state.
            deadline = time.monotonic() + self.options.call_seconds + 60
            while True:
                try:
                    if "peer_left" in session.events:  # the customer is leaving: the state changes soon
                        gevent.sleep(0.5)
                    else:
                        session.wait("peer_left", 1.0)
                except MediaFailure as exc:
                    self.report_failure("call", str(exc))
                    raise CallAborted(str(exc)) from None
                me = self.me()
                if me.get("state") != "busy" or me.get("call_id") != call_id:
                    completed = True
                    break
                if time.monotonic() > deadline:
                    self.report_failure("call", f"the customer did not hang up within {self.options.call_seconds + 60:.0f} s")
                    break
        except CallAborted:
            pass
        except GreenletExit:
            interrupted = True
            raise
        finally:
            self.finish(session, interrupted, completed)

    def finish(self, session: MediaSession | None, interrupted: bool, completed: bool) -> None:
        held = 0.0
        if session is not None:
            figures = self.leave_media(session, interrupted)
            held = (figures or {}).get("held_s") or 0.0
        if self.call_id is None:
            return
        try:
            if not completed:  # the agent ends a call that went wrong (or that the test's end cut short)
                self.api("DELETE", f"/v1/calls/{self.call_id}", token=self.token, name="/v1/calls/[call]",
                         allow=("call_ended", "call_not_connected"))
            else:
                fire(self.environment, self.role, "call", round(1000 * held, 1))
            if not interrupted:
                gevent.sleep(self.options.wrap_up_seconds)
            self.wrap_up()
        except CallAborted:
            pass
        self.call_id = None

    def wrap_up(self) -> None:
        self.api("POST", "/v1/agents/me/wrap-up", token=self.token, name="/v1/agents/me/wrap-up",
                 body={"code": "load_test", "notes": "locust"}, allow=("not_in_wrap_up",))

    def on_stop(self) -> None:
        token = self.token
        if token:
            try:
                self.api("POST", "/v1/agents/me/state", token=token, body={"state": "offline"}, name="/v1/agents/me/state",
                         allow=("agent_busy",))
            except CallAborted:
                pass


class SignallingUser(TellerUser):
    """No media: a customer who queues and gives up, and a supervisor's wallboard."""

    weight = 1
    role = "signalling"
    wait_time = between(1, 3)

    def on_start(self) -> None:
        super().on_start()
        self.supervisor: str | None = None

    @task(3)
    def queue_and_give_up(self) -> None:
        call_id = None
        try:
            self.api("GET", "/v1/catalogue?lang=zh", name="/v1/catalogue")
            token = self.customer_token()
            _, queued = self.api("POST", "/v1/calls", token=token, name="/v1/calls",
                                 body={"business": self.options.signalling_business, "language": "zh", "channel": "h5"})
            call_id = queued["call_id"]
            for _ in range(random.randint(2, 5)):
                gevent.sleep(1.0)
                _, call = self.api("GET", f"/v1/calls/{call_id}", token=token, name="/v1/calls/[call]")
                if call.get("state") in FINISHED:
                    call_id = None
                    return
            giving_up, call_id = call_id, None
            self.api("DELETE", f"/v1/calls/{giving_up}", token=token, name="/v1/calls/[call]",
                     allow=("call_ended", "call_not_waiting"))
        except CallAborted:
            pass
        finally:
            if call_id is not None:  # interrupted: do not leave the call queued
                try:
                    self.api("DELETE", f"/v1/calls/{call_id}", token=token, name="/v1/calls/[call]",
                             allow=("call_ended", "call_not_waiting", "call_not_connected"))
                except CallAborted:
                    pass

    @task(1)
    def wallboard(self) -> None:
        try:
            if self.supervisor is None:
                self.supervisor = self.supervisor_token()
            for path in ("/v1/queues", "/v1/agents", "/v1/calls?state=connected"):
                self.api("GET", path, token=self.supervisor, name=path.split("?")[0])
        except CallAborted:
            pass


# -- start, stop, the summary -----------------------------------------------------------------


def _is_master(environment: Environment) -> bool:
    return isinstance(environment.runner, MasterRunner)


def _is_worker(environment: Environment) -> bool:
    return isinstance(environment.runner, WorkerRunner)


@events.test_start.add_listener
def _test_start(environment: Environment, **_: Any) -> None:
    MEDIA.reset()
    PEAK_USERS.clear()
    STATE["stopping"] = False
    if not _is_master(environment) and any(
        u.__name__ in ("CustomerUser", "AgentUser") for u in environment.user_classes
    ):
        gevent.spawn(_warm_up, environment)  # encode the media loop while users spawn


def _warm_up(environment: Environment) -> None:
    try:
        MediaHelper.get(environment)
    except MediaFailure as exc:
        fire(environment, "media", "error", 0, error=str(exc))


@events.spawning_complete.add_listener
def _spawned(user_count: int, **_: Any) -> None:
    runner = getattr(_ENV, "runner", None)
    if runner is not None:
        for name, count in runner.user_classes_count.items():
            PEAK_USERS[name] = max(PEAK_USERS.get(name, 0), count)


_ENV: Any = None
_FINALS: dict[str, Any] = {"from": set(), "arrived": GEvent()}
FLUSH_TIMEOUT_S = 60.0


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    global _ENV
    _ENV = environment
    if _is_worker(environment):
        environment.runner.register_message("teller_media_flush", _flush_on_worker, concurrent=True)
    elif _is_master(environment):
        environment.runner.register_message("teller_media_final", _final_on_master)


def _flush_on_worker(environment: Environment, msg: Any, **_: Any) -> None:
    """The master is stopping: close every media session here and send what they counted.

    The master quits workers without waiting for them (half a second), so figures a
    worker gathers while its users stop would never reach the summary; they are sent
    before, in answer to this message."""
    STATE["stopping"] = True
    helper = MediaHelper.current()
    if helper is not None:
        MediaHelper._instance = None
        helper.quit()
    environment.runner.send_message("teller_media_final", {"media": MEDIA.drain(), "peak_users": dict(PEAK_USERS)})


def _final_on_master(environment: Environment, msg: Any, **_: Any) -> None:
    MEDIA.merge((msg.data or {}).get("media"))
    _FINALS["from"].add(msg.node_id)
    _FINALS["arrived"].set()


@events.test_stopping.add_listener
def _test_stopping(environment: Environment, **_: Any) -> None:
    STATE["stopping"] = True
    if not _is_master(environment):
        return
    runner = environment.runner
    expected = {client.id for client in runner.clients.all}
    _FINALS["from"] = set()
    runner.send_message("teller_media_flush")
    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    while not expected <= _FINALS["from"] and time.monotonic() < deadline:
        _FINALS["arrived"].clear()
        _FINALS["arrived"].wait(max(0.0, deadline - time.monotonic()))
    missing = expected - _FINALS["from"]
    if missing:
        log.warning("no media figures from %d worker(s) within %.0f s", len(missing), FLUSH_TIMEOUT_S)


@events.test_stop.add_listener
def _test_stop(environment: Environment, **_: Any) -> None:
    # Users are stopped (their media left); end the helper, counting what it still had.
    helper = MediaHelper.current()
    if helper is not None:
        MediaHelper._instance = None
        bye = helper.quit()
        if bye and bye.get("open"):
            log.warning("the media helper still had %s sessions at the end", bye["open"])
    runner = environment.runner
    if runner is not None:
        for name, count in (getattr(runner, "final_user_classes_count", None) or {}).items():
            PEAK_USERS[name] = max(PEAK_USERS.get(name, 0), count)
    if not _is_master(environment) and not _is_worker(environment):
        write_summary(environment)


@events.report_to_master.add_listener
def _report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    data["teller_media"] = MEDIA.drain()


@events.worker_report.add_listener
def _worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    MEDIA.merge(data.get("teller_media"))


@events.quitting.add_listener
def _quitting(environment: Environment, **_: Any) -> None:
    helper = MediaHelper.current()
    if helper is not None:  # stopped without a test_stop (an error at start)
        MediaHelper._instance = None
        helper.quit(timeout=10)
    if not _is_worker(environment):
        write_summary(environment)


def summary(environment: Environment) -> dict[str, Any]:
    runner = environment.runner
    stats = runner.stats if runner is not None else environment.stats
    requests: dict[str, Any] = {}
    for entry in sorted(stats.entries.values(), key=lambda e: (e.method or "", e.name)):
        requests[f"{entry.method} {entry.name}"] = {
            "type": entry.method,
            "name": entry.name,
            "count": entry.num_requests,
            "failures": entry.num_failures,
            "p50_ms": entry.get_response_time_percentile(0.5) if entry.num_requests else None,
            "p95_ms": entry.get_response_time_percentile(0.95) if entry.num_requests else None,
            "max_ms": round(entry.max_response_time, 1) if entry.num_requests else None,
            "avg_ms": round(entry.avg_response_time, 1),
        }
    errors = [
        {"type": e.method, "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
        for e in stats.errors.values()
    ]
    joins = [ms for values in MEDIA.joins.values() for ms in values]
    users = dict(PEAK_USERS)
    if runner is not None:
        for name, count in runner.user_classes_count.items():
            users[name] = max(users.get(name, 0), count)
    options = environment.parsed_options

    def rounded(value: float | None, digits: int = 1) -> float | None:
        return None if value is None or math.isnan(value) else round(value, digits)

    return {
        "host": environment.host,
        "options": {
            "call_seconds": options.call_seconds, "video_kbps": options.video_kbps,
            "relay_only": bool(options.relay_only), "signalling_business": options.signalling_business,
            "delivery_target": options.delivery_target,
        },
        "users": users,
        "requests": requests,
        "total": {
            "count": stats.total.num_requests, "failures": stats.total.num_failures,
            "p50_ms": stats.total.get_response_time_percentile(0.5) if stats.total.num_requests else None,
            "p95_ms": stats.total.get_response_time_percentile(0.95) if stats.total.num_requests else None,
            "rps": round(stats.total.total_rps, 2),
        },
        "calls_queued": MEDIA.calls_queued,
        "calls_completed": MEDIA.calls_completed,
        "subscriptions": MEDIA.subscriptions,
        "video_frames_received": MEDIA.video_frames,
        "audio_frames_received": MEDIA.audio_frames,
        "media_frames_received": MEDIA.video_frames + MEDIA.audio_frames,
        "delivery_ratio_min": rounded(min(MEDIA.deliveries), 4) if MEDIA.deliveries else None,
        "delivery_ratio_mean": rounded(statistics.fmean(MEDIA.deliveries), 4) if MEDIA.deliveries else None,
        "delivery_count": len(MEDIA.deliveries),
        "join_count": len(joins),
        "join_p50_ms": rounded(percentile(joins, 50)),
        "join_p95_ms": rounded(percentile(joins, 95)),
        "join_p95_ms_by_role": {role: rounded(percentile(v, 95)) for role, v in MEDIA.joins.items()},
        "first_frame_count": len(MEDIA.first_frames),
        "first_frame_p50_ms": rounded(percentile(MEDIA.first_frames, 50)),
        "first_frame_p95_ms": rounded(percentile(MEDIA.first_frames, 95)),
        "queue_wait_p95_ms": rounded(percentile(MEDIA.queue_waits, 95)),
        "errors": errors,
        "error_count": sum(e["occurrences"] for e in errors),
    }


def write_summary(environment: Environment) -> None:
    path = getattr(environment.parsed_options, "summary_json", "") if environment.parsed_options else ""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(summary(environment), indent=2) + "\n")
