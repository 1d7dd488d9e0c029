"""A room: participants, their publications and subscriptions, and data relay.

Every peer connection, timer and task a room makes is owned here or by one of its
participants, and closing the room releases all of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import logs
from ..config import Config
from ..errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from ..field import gps
from ..ratelimit import TokenBucket
from .events import (
    DataReceived,
    Event,
    ParticipantJoined,
    ParticipantLeft,
    Reconnect,
    Removed,
    TrackPublished,
    TrackUnpublished,
    TransportClosed,
)
from .negotiation import codec_preferences, matching_preferences, parse_offer
from .participant import Participant, new_id
from .publisher import Publisher
from .subscription import Subscription
from .track import Publication
from .transport import MediaPlan, PeerTransport

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("teller.sfu.room")

MAX_TOPIC = 64
MAX_TARGETS = 100
# Data messages that are evidence (what the customer was shown and agreed to) go into
# the session timeline under these event types; chatter such as the pointer does not.
TIMELINE_TOPICS = {
    "material": "material_pushed",
    "confirm_request": "confirmation_requested",
    "confirm_done": "confirmation_answered",
    "prompt": "prompt_played",
    "screen_share": "screen_share",
    "snapshot": "snapshot",
    "gps": "gps",
}
# Topics whose payload the room checks (BadRequest to the sender) and normalises before
# anyone receives it: a field device's GPS fix must be a place, not any JSON.
DATA_CHECKS: dict[str, Callable[[Any], Any]] = {gps.TOPIC: gps.normalise}


class Room:
    def __init__(
        self,
        name: str,
        node: Node,
        *,
        max_participants: int | None = None,
        empty_timeout_s: float | None = None,
        metadata: dict[str, Any] | None = None,
        sid: str | None = None,
    ) -> None:
        self.name = name
        # The session id: kept when the room moves to another node, so that its
        # timeline and recordings continue under one id.
        self.sid = sid or new_id("RM")
        self.node = node
        self.config: Config = node.config
        self.created_at = time.time()
        self.max_participants = max_participants or self.config.rooms.max_participants
        self.empty_timeout_s = (
            self.config.rooms.empty_timeout_s if empty_timeout_s is None else empty_timeout_s
        )
        self.metadata = metadata or {}
        self.participants: dict[str, Participant] = {}
        self.publications: dict[str, Publication] = {}
        self.closed = False
        self.close_reason = ""
        self._loop = asyncio.get_running_loop()
        self._tick_task = asyncio.create_task(self._rtcp_loop(), name=f"rtcp:{name}")
        self._empty_timer: asyncio.TimerHandle | None = None
        self._connect_timers: dict[str, asyncio.TimerHandle] = {}
        self._data_buckets: dict[str, TokenBucket] = {}
        self._arm_empty_timer()

    # -- membership ---------------------------------------------------------------------

    async def join(self, participant: Participant) -> None:
        self._require_open()
        for other in list(self.participants.values()):
            if other.identity == participant.identity:
                await self.remove(other.id, "duplicate_identity")
        if len(self.participants) >= self.max_participants:
            raise Conflict("the room is full", code="room_full")
        self.participants[participant.id] = participant
        signaling = self.config.signaling
        self._data_buckets[participant.id] = TokenBucket(
            signaling.messages_per_second, signaling.message_burst
        )
        if self._empty_timer is not None:
            self._empty_timer.cancel()
            self._empty_timer = None
        self.broadcast(ParticipantJoined(participant.info()), exclude=participant, about=participant)
        self.node.changed(self)
        self.node.timeline(
            self, "participant_joined", participant_id=participant.id, identity=participant.identity,
            name=participant.name, role=participant.role, kind=participant.kind,
        )
        log.info("participant joined", extra={"participant": participant.id, "identity": participant.identity})

    async def remove(self, participant_id: str, reason: str, *, notify: bool = True) -> None:
        participant = self.participants.pop(participant_id, None)
        if participant is None:
            return
        self._data_buckets.pop(participant_id, None)
        if participant.detach_timer is not None:
            participant.detach_timer.cancel()
            participant.detach_timer = None
        if notify:
            participant.send_event(Removed(reason))
        participant.left = True
        participant.drop_data_channels()
        transports = [p.transport for p in participant.publishers.values()]
        transports += [s.transport for s in participant.subscriptions.values()]
        await asyncio.gather(*(t.close(reason) for t in transports), return_exceptions=True)
        self.broadcast(ParticipantLeft(participant.id, reason), about=participant)
        self.node.changed(self)
        self.node.timeline(self, "participant_left", participant_id=participant.id, reason=reason)
        log.info("participant left", extra={"participant": participant.id, "reason": reason})
        self._arm_empty_timer()

    def detach(self, participant: Participant, window_s: float) -> None:
        """Its signalling connection dropped: media goes on, and it may resume in time."""
        if participant.left or self.participants.get(participant.id) is not participant:
            return
        participant.notify = None
        participant.session = None
        if participant.detach_timer is not None:
            participant.detach_timer.cancel()
        participant.detach_timer = self._loop.call_later(
            window_s, lambda: asyncio.ensure_future(self.remove(participant.id, "disconnected"))
        )
        self.node.changed(self)
        self.node.timeline(self, "participant_disconnected", participant_id=participant.id, window_s=window_s)
        log.info("participant disconnected; waiting for it to resume", extra={"participant": participant.id})

    def reattach(self, participant: Participant, session: object, notify: Any) -> None:
        if participant.detach_timer is not None:
            participant.detach_timer.cancel()
            participant.detach_timer = None
        participant.session = session
        participant.notify = notify
        self.node.changed(self)
        self.node.timeline(self, "participant_resumed", participant_id=participant.id)
        log.info("participant resumed", extra={"participant": participant.id})

    async def migrate_out(self, reason: str) -> None:
        """Tell everyone to reconnect (elsewhere), then close without a `left` to anyone."""
        for participant in list(self.participants.values()):
            participant.send_event(Reconnect(reason))
        await self.close(reason, notify=False)

    def get(self, participant_id: str) -> Participant:
        participant = self.participants.get(participant_id)
        if participant is None:
            raise NotFound("no such participant in this room", code="participant_not_found")
        return participant

    # -- publishing ---------------------------------------------------------------------

    async def publish(
        self, participant: Participant, offer_sdp: Any, sources: list[dict[str, str]] | None = None
    ) -> tuple[Publisher, str]:
        self._require_member(participant)
        offer = parse_offer(offer_sdp)
        if offer.media and not participant.permissions.publish:
            raise Forbidden("this participant may not publish", code="grant_missing")
        self._check_transport_budget(participant)
        for media in offer.media:
            if media.direction not in ("sendonly", "sendrecv"):
                raise BadRequest(
                    "a publish offer must send its media (sendonly)", code="invalid_direction"
                )
        sfu = self.config.sfu
        plans = [
            MediaPlan(
                "recvonly",
                codec_preferences(m.kind, sfu.video_codecs if m.kind == "video" else sfu.audio_codecs),
            )
            for m in offer.media
        ]
        transport = PeerTransport(new_id("PC"), sfu)
        try:
            answer = await transport.negotiate(offer, plans)
        except BaseException:
            await transport.close("negotiation_failed")
            raise
        if participant.left or self.closed:
            await transport.close("left")
            raise Unavailable("the participant left while publishing", code="participant_left")
        publisher = Publisher(participant.id, transport, sfu, sources)
        participant.publishers[transport.id] = publisher
        transport.on_closed = lambda reason: self._publisher_closed(participant, publisher, reason)
        transport.on_datachannel = lambda channel: participant.add_data_channel(channel, self)
        self._watch_connect(transport)
        for publication in publisher.publications:
            self.publications[publication.id] = publication
            publication.on_ended.append(self._publication_ended)
            self.broadcast(TrackPublished(participant.id, publication.info()), exclude=participant, about=participant)
            self.node.stages.publication_added(self, participant, publication)
            info = publication.info()
            self.node.timeline(
                self, "track_published", participant_id=participant.id, track_id=publication.id,
                kind=info.get("kind"), source=info.get("source"), codec=info.get("codec"),
            )
        self.node.changed(self)
        return publisher, answer

    def _publisher_closed(self, participant: Participant, publisher: Publisher, reason: str) -> None:
        self._forget_connect_timer(publisher.transport.id)
        participant.publishers.pop(publisher.id, None)
        publisher.end()
        participant.send_event(TransportClosed(publisher.id, reason))

    def _publication_ended(self, publication: Publication) -> None:
        self.publications.pop(publication.id, None)
        self.node.stages.publication_removed(self, publication)
        self.broadcast(
            TrackUnpublished(publication.participant_id, publication.id), about=self.participants.get(publication.participant_id)
        )
        self.node.changed(self)
        self.node.timeline(self, "track_unpublished", participant_id=publication.participant_id, track_id=publication.id)

    # -- subscribing --------------------------------------------------------------------

    async def subscribe(
        self,
        participant: Participant,
        offer_sdp: Any,
        *,
        participant_id: str | None = None,
        track_ids: list[str] | None = None,
    ) -> tuple[Subscription, str]:
        self._require_member(participant)
        if not participant.permissions.subscribe:
            raise Forbidden("this participant may not subscribe", code="grant_missing")
        offer = parse_offer(offer_sdp)
        self._check_transport_budget(participant)
        for media in offer.media:
            if media.direction not in ("recvonly", "sendrecv"):
                raise BadRequest(
                    "a subscribe offer must receive its media (recvonly)", code="invalid_direction"
                )
        candidates = self._subscribable(participant, participant_id, track_ids)
        bindings: dict[str, Publication] = {}
        plans: list[MediaPlan] = []
        for media in offer.media:
            publication = next(
                (p for p in candidates if p.kind == media.kind and p not in bindings.values()), None
            )
            if publication is None:
                plans.append(MediaPlan("inactive"))
                continue
            bindings[media.mid] = publication
            plans.append(
                MediaPlan(
                    "sendonly",
                    matching_preferences(publication.kind, publication.mime_type, publication.codec.parameters),
                )
            )
        if not bindings:
            raise NotFound("no published track matches the offer", code="track_not_found")
        transport = PeerTransport(new_id("PC"), self.config.sfu)
        try:
            answer = await transport.negotiate(offer, plans)
        except BaseException:
            await transport.close("negotiation_failed")
            raise
        if participant.left or self.closed or any(p.ended for p in bindings.values()):
            await transport.close("gone")
            raise NotFound("the track ended while subscribing", code="track_not_found")
        subscription = Subscription(participant.id, transport, bindings, self._subscription_done)
        participant.subscriptions[transport.id] = subscription
        for publication in bindings.values():
            # Ask now, not once DTLS is up: the keyframe is then usually in the history
            # by the time the subscriber can take it.
            publication.request_keyframe()
        transport.on_closed = lambda reason: self._subscription_closed(participant, subscription, reason)
        transport.on_datachannel = lambda channel: participant.add_data_channel(channel, self)
        self._watch_connect(transport)
        return subscription, answer

    def _subscribable(self, viewer: Participant, participant_id: str | None, track_ids: list[str] | None) -> list[Publication]:
        """What `viewer` may receive: never a hidden participant's tracks unless staff."""
        if track_ids:
            out = []
            for track_id in track_ids:
                publication = self.publications.get(track_id)
                owner = self.participants.get(publication.participant_id) if publication else None
                if publication is None or (owner is not None and not viewer.sees(owner)):
                    raise NotFound(f"no track {track_id!r} in this room", code="track_not_found")
                out.append(publication)
            return out
        if participant_id:
            owner = self.get(participant_id)
            if not viewer.sees(owner):
                raise NotFound("no such participant in this room", code="participant_not_found")
            return owner.publications()
        latest = max(
            (p for p in self.visible_to(viewer) if p.publications()),
            key=lambda p: max(pub.created_at for pub in p.publishers.values()),
            default=None,
        )
        if latest is None:
            raise NotFound("nobody is publishing in this room", code="track_not_found")
        return latest.publications()

    def _subscription_done(self, subscription: Subscription) -> None:
        subscription.transport.close_soon("publisher_ended")

    def _subscription_closed(self, participant: Participant, subscription: Subscription, reason: str) -> None:
        self._forget_connect_timer(subscription.transport.id)
        subscription.stop()
        participant.subscriptions.pop(subscription.id, None)
        participant.send_event(TransportClosed(subscription.id, reason))

    async def close_transport(self, participant: Participant, transport_id: str, reason: str) -> None:
        item = participant.publishers.get(transport_id) or participant.subscriptions.get(transport_id)
        if item is None:
            raise NotFound("no such transport", code="transport_not_found")
        await item.transport.close(reason)

    def transport_of(self, participant: Participant, transport_id: str) -> PeerTransport:
        item = participant.publishers.get(transport_id) or participant.subscriptions.get(transport_id)
        if item is None:
            raise NotFound("no such transport", code="transport_not_found")
        return item.transport

    # -- data ---------------------------------------------------------------------------

    def send_data(
        self, sender: Participant | None, payload: Any, topic: str | None, to: list[str] | None
    ) -> int:
        """Relay a data message; returns how many participants it went to."""
        if sender is not None:
            if not sender.permissions.data:
                raise Forbidden("this participant may not send data", code="grant_missing")
            bucket = self._data_buckets.get(sender.id)
            if bucket is not None and not bucket.take():
                raise BadRequest("too many data messages", code="rate_limited")
        if topic is not None and (not isinstance(topic, str) or len(topic) > MAX_TOPIC):
            raise BadRequest(f"topic must be a string of at most {MAX_TOPIC} characters", code="invalid_message")
        if to is not None and (
            not isinstance(to, list) or len(to) > MAX_TARGETS or not all(isinstance(t, str) for t in to)
        ):
            raise BadRequest("to must be a list of participant ids or identities", code="invalid_message")
        check = DATA_CHECKS.get(topic) if topic is not None and sender is not None else None
        if check is not None:
            payload = check(payload)
        event = DataReceived(
            from_participant_id=sender.id if sender else None,
            from_identity=sender.identity if sender else None,
            topic=topic,
            payload=payload,
        )
        count = 0
        for participant in list(self.participants.values()):
            if participant is sender or not participant.permissions.data:
                continue
            if to is not None and participant.id not in to and participant.identity not in to:
                continue
            participant.deliver_data(event)
            count += 1
        if sender is not None:
            for observer in self.node.data_observers:
                observer(self, sender, topic, payload)
        if topic in TIMELINE_TOPICS:
            self.node.timeline(
                self, TIMELINE_TOPICS[topic], participant_id=sender.id if sender else None, topic=topic, payload=payload
            )
        return count

    def on_data_channel_message(self, sender: Participant, channel: Any, message: Any) -> None:
        with logs.bind(room=self.name, participant=sender.id):
            try:
                if not isinstance(message, str):
                    raise BadRequest("data channel messages are JSON text", code="invalid_message")
                if len(message.encode("utf-8")) > self.config.signaling.data_max_bytes:
                    raise PayloadTooLarge("the data message is too large", code="message_too_large")
                try:
                    body = json.loads(message)
                except json.JSONDecodeError as exc:
                    raise BadRequest("the data message is not JSON", code="invalid_json") from exc
                if not isinstance(body, dict) or "payload" not in body:
                    raise BadRequest("a data message is an object with a payload", code="invalid_message")
                self.send_data(sender, body["payload"], body.get("topic"), body.get("to"))
            except (BadRequest, Forbidden, PayloadTooLarge) as exc:
                log.info("data message refused", extra={"code": exc.code})
                if channel.readyState == "open":
                    channel.send(json.dumps({"type": "error", **exc.to_json()}))

    # -- events and lifecycle ---------------------------------------------------------------

    def broadcast(self, event: Event, exclude: Participant | None = None, about: Participant | None = None) -> None:
        """To everyone but `exclude`; news about a hidden participant only to those who may see it."""
        for participant in list(self.participants.values()):
            if participant is not exclude and (about is None or participant.sees(about)):
                participant.send_event(event)

    def visible_to(self, viewer: Participant) -> list[Participant]:
        return [p for p in self.participants.values() if p is not viewer and viewer.sees(p)]

    def reveal(self, participant: Participant) -> None:
        """Barge-in: a hidden participant becomes an ordinary one, to everyone."""
        self._require_member(participant)
        if not participant.hidden:
            return
        participant.hidden = False
        for other in list(self.participants.values()):
            if other is participant or other.staff:
                continue  # staff saw it all along
            other.send_event(ParticipantJoined(participant.info()))
            for publication in participant.publications():
                other.send_event(TrackPublished(participant.id, publication.info()))
        self.node.changed(self)
        self.node.timeline(self, "participant_revealed", participant_id=participant.id, role=participant.role)

    def _require_open(self) -> None:
        if self.closed:
            raise Unavailable("the room is closed", code="room_closed")

    def _require_member(self, participant: Participant) -> None:
        self._require_open()
        if self.participants.get(participant.id) is not participant:
            raise Forbidden("not a participant of this room", code="not_joined")

    def _check_transport_budget(self, participant: Participant) -> None:
        if participant.transport_count >= self.config.signaling.max_transports:
            raise Conflict("too many peer connections for one participant", code="too_many_transports")

    def _watch_connect(self, transport: PeerTransport) -> None:
        def check() -> None:
            self._connect_timers.pop(transport.id, None)
            if transport.state != "connected":
                transport.close_soon("connect_timeout")

        self._connect_timers[transport.id] = self._loop.call_later(
            self.config.signaling.connect_timeout_s, check
        )

    def _forget_connect_timer(self, transport_id: str) -> None:
        timer = self._connect_timers.pop(transport_id, None)
        if timer is not None:
            timer.cancel()

    def _arm_empty_timer(self) -> None:
        if self.closed or self.participants or self._empty_timer is not None:
            return
        self._empty_timer = self._loop.call_later(
            self.empty_timeout_s, lambda: asyncio.ensure_future(self.node.close_room_if_empty(self))
        )

    async def _rtcp_loop(self) -> None:
        interval = self.config.sfu.rtcp_interval_s
        while True:
            await asyncio.sleep(interval)
            now = self._loop.time()
            for participant in list(self.participants.values()):
                for publisher in list(participant.publishers.values()):
                    publisher.rtcp_tick()
                for subscription in list(participant.subscriptions.values()):
                    subscription.rtcp_tick(now)

    async def close(self, reason: str = "room_closed", *, notify: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self._empty_timer is not None:
            self._empty_timer.cancel()
            self._empty_timer = None
        await asyncio.gather(
            *(self.remove(pid, reason, notify=notify) for pid in list(self.participants)), return_exceptions=True
        )
        for timer in self._connect_timers.values():
            timer.cancel()
        self._connect_timers.clear()
        self._tick_task.cancel()
        try:
            await self._tick_task
        except asyncio.CancelledError:
            pass
        self.publications.clear()
        self.node.changed(self)
        self.node.timeline(self, "room_moved" if not notify else "room_closed", reason=reason)
        log.info("room closed", extra={"room": self.name, "reason": reason})

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sid": self.sid,
            "created_at": round(self.created_at, 3),
            "max_participants": self.max_participants,
            "empty_timeout_s": self.empty_timeout_s,
            "metadata": self.metadata,
            "num_participants": len(self.participants),
            "num_tracks": len(self.publications),
        }
