// Teller browser client: the page side of signalling protocol 1 (docs/protocol.md).
// Plain ES2020, no build step; load it with <script src="/static/teller-client.js">
// before the page's own script. It defines `window.TellerClient` and `window.TellerError`.
//
//   const client = new TellerClient({ text, awaits });
//     text(code)        optional: the page's wording for the client's own error codes
//                       ("unreachable", "timeout", "disconnected", "left"); else English.
//     awaits(info)      optional: whose media a reconnect waits for before "restored"
//                       (default: every other participant publishing tracks).
//   client.on(type, handler(message, meta))   events, below; returns the client.
//   await client.join(token, {room, hidden}?)  open the socket with an access token and `join`
//                                  (room: when the token does not name one, e.g. "*";
//                                  hidden: a supervisor joining unseen by customers);
//                                  resolves with `joined`. One client joins again after close().
//   await client.reveal()          a hidden participant shows itself (barge-in); the resume
//                                  token of the ack replaces the old one, so a resume is not hidden.
//   client.request(message, timeoutMs?)  -> Promise of the reply (request_id added);
//                                  rejects with a TellerError {code, status}.
//   client.send(message)           fire and forget (dropped while not connected).
//   TellerClient.openCamera()      -> {stream, problem}: camera+mic, else either, else an empty
//                                  stream; problem null | "insecure" | "blocked" | "missing".
//   client.publish(stream, {dataChannel, source, name, onConnectionState, onError, onClose})
//                                  -> Publication {stream, pc, channel, transportId, closed,
//                                  ready (Promise), close(tellServer = true)}: the stream's
//                                  audio then video tracks, sources "microphone"/"camera"
//                                  unless `source` names one for all. Republished after a move;
//                                  onError(error) hears of a republish that failed.
//   client.subscribe(participantId, tracks, {byTrackIds, eachTrack, onTrack, onConnectionState, onClose})
//                                  -> Subscription {participantId, pc, stream (the MediaStream
//                                  to attach), trackIds, transportId, closed, ready, close(tellServer = true)}.
//                                  eachTrack: receive every track given (camera and screen), not
//                                  at most one audio and one video.
//                                  `ready` resolves once answered; a closed holder never rejects,
//                                  a subscription that fails is closed. onClose(holder) runs once
//                                  whoever closes it (the page, a move to another node, close()).
//   client.sendData(payload, topic)  over the first open data channel, else the socket.
//   await client.leave()           say `leave`, wait (≤ 1 s) for the close, then close().
//   client.close()                 say `leave` if it can, and drop everything now (pagehide).
//   client.participants            Map participant_id -> info with its current `tracks`.
//   client.participantId, .phase ("idle" | "connecting" | "joined" | "reconnecting" | "leaving"),
//   .reconnecting (true until media flows again after a drop), .reconnects, .migrations.
//
// Events: the server's participant_joined, participant_left, track_published,
// track_unpublished (others' only; the roster is updated first), transport_closed
// (with `publication` or `subscription` added when it is one of ours; nothing is closed
// for the page), data (meta.channel: it came over the data channel), error (unsolicited,
// also meta.channel), left; and the client's own:
//   reconnecting {}                 the socket dropped; resuming with the resume token.
//   resumed {joined, resumed}       joined again. resumed: the peer connections carried on;
//                                   otherwise the room moved: every subscription was closed,
//                                   the roster is new and the publications are being made
//                                   again with the same streams; subscribe again as tracks appear.
//   restored {missing}              our media flows again and that of everyone awaited
//                                   (missing: the infos of those who did not come back in 30 s).
//   closed {code, reason, error}    the connection ended for good (close code, the `left`
//                                   reason, or the error that made resuming hopeless);
//                                   everything is closed already.
"use strict";

(() => {
  const GATHER_TIMEOUT_MS = 2000;
  const REQUEST_TIMEOUT_MS = 15000;
  const LEAVE_TIMEOUT_MS = 1000;
  const RECONNECT_FIRST_DELAY_MS = 50;
  const RECONNECT_MAX_DELAY_MS = 1000;
  const RECONNECT_TIMEOUT_MS = 30000;
  const REJOIN_TIMEOUT_MS = 5000; // one attempt: open the socket and get `joined`
  const RESTORE_TIMEOUT_MS = 30000; // after a drop, how long to wait for the media
  // The server went away or restarts (1012 follows a `reconnect`): resume.
  const RESUMABLE_CLOSE_CODES = new Set([1001, 1006, 1011, 1012, 1013]);
  // The server ended this connection for good: reconnecting cannot help.
  const FINAL_CLOSE_CODES = new Set([4401, 4403, 4008]);

  const DEFAULT_TEXT = {
    unreachable: "Cannot reach the call server. Check your connection and try again.",
    timeout: "The call server did not answer in time. Please try again.",
    disconnected: "The connection to the call server was lost.",
    left: "You left the call.",
  };

  class TellerError extends Error {
    constructor(message, code = "", status = 0) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const isFinal = (error) => error.status >= 400 && error.status < 500 && error.status !== 408 && error.status !== 429;

  function iceGatheringDone(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      const timer = setTimeout(done, GATHER_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  // A holder (publication or subscription) whose peer connection is made by negotiate().
  class Holder {
    constructor(client) {
      this.client = client;
      this.pc = null;
      this.transportId = null;
      this.closed = false;
      this.ready = null;
      this.attempt = null; // the current negotiation: {closed, transportId}
    }

    // Close the peer connection; `tellServer` unpublishes / unsubscribes its transport.
    close(tellServer = true) {
      if (this.closed) return;
      this.closed = true;
      this.drop();
      this.client.holderClosed(this, tellServer);
      this.options.onClose?.(this);
    }

    drop() {
      if (this.attempt) this.attempt.closed = true;
      this.pc?.close();
    }

    // A rejection only for a holder still open: one closed meanwhile has nothing to report.
    // A subscription that failed is closed (a publication is left to the page).
    settle(promise) {
      this.ready = promise.catch((error) => {
        if (this.closed) return null;
        if (this instanceof Subscription) this.close(true);
        throw error;
      });
      return this.ready;
    }
  }

  class Publication extends Holder {
    constructor(client, stream, options) {
      super(client);
      this.stream = stream;
      this.options = options;
      this.channel = null;
    }
  }

  class Subscription extends Holder {
    constructor(client, participantId, tracks, options) {
      super(client);
      this.participantId = participantId;
      this.tracks = tracks;
      this.options = options;
      this.trackIds = new Set(tracks.map((t) => t.track_id));
      this.stream = new MediaStream();
    }
  }

  class TellerClient {
    constructor(options = {}) {
      this.options = options;
      this.phase = "idle"; // idle | connecting | joined | reconnecting | leaving
      this.ws = null;
      this.generation = 0; // bumped by close(): async work of an older one stops
      this.participantId = null;
      this.resumeToken = null; // from `joined`: takes this participant's place back after a drop
      this.leftReason = null;
      this.iceServers = [];
      this.participants = new Map(); // participant_id -> info, with its current tracks
      this.publications = new Set();
      this.subscriptions = new Set();
      this.restoring = null; // after a reconnect, until media flows again: {waitingFor (id -> info), timer}
      this.reconnects = 0;
      this.migrations = 0;
      this.handlers = new Map();
      this.pending = new Map(); // request_id -> {resolve, reject, timer}
      this.nextRequestId = 1;
    }

    get reconnecting() {
      return this.phase === "reconnecting" || this.restoring !== null;
    }

    on(type, handler) {
      if (!this.handlers.has(type)) this.handlers.set(type, []);
      this.handlers.get(type).push(handler);
      return this;
    }

    emit(type, detail, meta = {}) {
      for (const handler of this.handlers.get(type) || []) {
        try {
          handler(detail, meta);
        } catch (error) {
          console.error(error);
        }
      }
    }

    // The camera and microphone, else one of them, else nothing: {stream, problem}, where
    // problem is null, "insecure" (no getUserMedia: not https), "blocked" or "missing".
    static async openCamera() {
      if (!navigator.mediaDevices?.getUserMedia) return { stream: new MediaStream(), problem: "insecure" };
      let lastError = null;
      for (const constraints of [{ audio: true, video: true }, { audio: true }, { video: true }]) {
        try {
          return { stream: await navigator.mediaDevices.getUserMedia(constraints), problem: null };
        } catch (error) {
          lastError = error;
          if (error.name === "NotAllowedError") break;
        }
      }
      return { stream: new MediaStream(), problem: lastError?.name === "NotAllowedError" ? "blocked" : "missing" };
    }

    error(code, status = 0) {
      return new TellerError(this.options.text?.(code) || DEFAULT_TEXT[code] || code, code, status);
    }

    // -- socket and requests -------------------------------------------------------------

    // `token` is null when resuming: the resume token goes in the `join` instead.
    openSocket(token, timeoutMs) {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const query = token ? `?access_token=${encodeURIComponent(token)}` : "";
      return new Promise((resolve, reject) => {
        const ws = new WebSocket(`${scheme}//${location.host}/v1/rtc${query}`);
        const fail = () => {
          clearTimeout(timer);
          ws.onopen = ws.onclose = null;
          ws.close();
          reject(this.error("unreachable"));
        };
        const timer = setTimeout(fail, timeoutMs);
        ws.onopen = () => {
          clearTimeout(timer);
          resolve(ws);
        };
        ws.onclose = fail;
      });
    }

    adoptSocket(ws) {
      this.ws = ws;
      ws.onmessage = (event) => this.onSocketMessage(event);
      ws.onclose = (event) => this.onSocketClosed(event);
    }

    dropSocket() {
      const ws = this.ws;
      this.ws = null;
      if (!ws) return;
      ws.onmessage = ws.onclose = null;
      ws.close();
    }

    // While reconnecting, the socket is a resume attempt: only its `join` may go out.
    canSend(message) {
      return this.ws?.readyState === WebSocket.OPEN && (this.phase !== "reconnecting" || message.type === "join");
    }

    send(message) {
      if (this.canSend(message)) this.ws.send(JSON.stringify(message));
    }

    request(message, timeoutMs = REQUEST_TIMEOUT_MS) {
      const requestId = `r${this.nextRequestId++}`;
      return new Promise((resolve, reject) => {
        if (!this.canSend(message)) {
          reject(this.error("disconnected"));
          return;
        }
        const timer = setTimeout(() => {
          this.pending.delete(requestId);
          reject(this.error("timeout"));
        }, timeoutMs);
        this.pending.set(requestId, { resolve, reject, timer });
        this.send({ ...message, request_id: requestId });
      });
    }

    rejectPending(error) {
      for (const pending of this.pending.values()) {
        clearTimeout(pending.timer);
        pending.reject(error);
      }
      this.pending.clear();
    }

    onSocketMessage(event) {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      const pending = message.request_id && this.pending.get(message.request_id);
      if (pending) {
        this.pending.delete(message.request_id);
        clearTimeout(pending.timer);
        if (message.type === "error") {
          pending.reject(new TellerError(message.message || message.code, message.code, message.status));
        } else {
          if (message.resume_token) this.resumeToken = message.resume_token;
          pending.resolve(message);
        }
        return;
      }
      switch (message.type) {
        case "participant_joined":
          this.addParticipant(message.participant);
          break;
        case "participant_left":
          this.removeParticipant(message.participant_id);
          break;
        case "track_published": {
          if (message.participant_id === this.participantId) return;
          const info = this.participantInfo(message.participant_id);
          info.tracks = info.tracks.filter((t) => t.track_id !== message.track.track_id).concat(message.track);
          break;
        }
        case "track_unpublished": {
          const info = this.participants.get(message.participant_id);
          if (!info) return;
          info.tracks = info.tracks.filter((t) => t.track_id !== message.track_id);
          break;
        }
        case "transport_closed": {
          const id = message.transport_id;
          const publication = [...this.publications].find((p) => p.transportId === id);
          const subscription = [...this.subscriptions].find((s) => s.transportId === id);
          this.emit("transport_closed", { ...message, publication, subscription });
          return;
        }
        case "left":
          this.leftReason = message.reason;
          break;
        case "reconnect":
          if (this.phase === "joined") this.startReconnect();
          return;
        default:
          break;
      }
      this.emit(message.type, message);
    }

    onSocketClosed(event) {
      this.ws = null;
      if (this.phase === "reconnecting") {
        // A resume attempt's socket closed: the attempt fails, and is retried unless final.
        const final = FINAL_CLOSE_CODES.has(event.code);
        const error = this.error(final ? "closed" : "disconnected", final ? 400 : 0);
        error.closeCode = event.code;
        this.rejectPending(error);
        return;
      }
      if (this.canResume(event.code)) {
        this.startReconnect();
        return;
      }
      const reason = this.leftReason;
      this.close();
      this.emit("closed", { code: event.code, reason, error: null });
    }

    // -- joining and leaving -------------------------------------------------------------

    async join(token, { room, hidden } = {}) {
      const generation = this.generation;
      this.phase = "connecting";
      this.leftReason = null;
      const ws = await this.openSocket(token, REQUEST_TIMEOUT_MS);
      if (generation !== this.generation) {
        ws.close();
        throw this.error("left");
      }
      this.adoptSocket(ws);
      const message = { type: "join", protocol: 1 };
      if (room) message.room = room;
      if (hidden) message.hidden = true;
      const joined = await this.request(message);
      this.takeJoined(joined);
      this.participants.clear();
      (joined.participants || []).forEach((info) => this.addParticipant(info));
      this.phase = "joined";
      return joined;
    }

    takeJoined(joined) {
      this.participantId = joined.participant.participant_id;
      this.resumeToken = joined.resume_token || this.resumeToken;
      this.iceServers = joined.ice_servers || [];
    }

    // Barge-in: customers see this participant from now on. The ack's resume token (taken
    // by onSocketMessage) no longer says hidden.
    async reveal() {
      const ack = await this.request({ type: "reveal" });
      if (ack.resume_token) this.resumeToken = ack.resume_token;
      return ack;
    }

    async leave() {
      const ws = this.ws;
      // While reconnecting the socket has not joined yet: there is nobody to say goodbye to.
      if (this.phase === "joined" && ws?.readyState === WebSocket.OPEN) {
        ws.onclose = null;
        const closed = new Promise((resolve) => {
          ws.addEventListener("close", resolve);
          setTimeout(resolve, LEAVE_TIMEOUT_MS);
        });
        this.send({ type: "leave" });
        this.phase = "leaving";
        await closed;
      }
      this.close();
    }

    close() {
      if (this.phase === "joined") this.send({ type: "leave" });
      this.generation += 1;
      this.phase = "idle";
      this.clearRestoring();
      this.resumeToken = null;
      for (const sub of [...this.subscriptions]) sub.close(false);
      for (const pub of [...this.publications]) pub.close(false);
      this.rejectPending(this.error("left"));
      this.dropSocket();
      this.participants.clear();
      this.participantId = null;
    }

    // -- participants --------------------------------------------------------------------

    participantInfo(participantId) {
      if (!this.participants.has(participantId)) this.participants.set(participantId, { participant_id: participantId, tracks: [] });
      return this.participants.get(participantId);
    }

    addParticipant(info) {
      this.participants.set(info.participant_id, { ...info, tracks: [...(info.tracks || [])] });
    }

    removeParticipant(participantId) {
      this.participants.delete(participantId);
      this.restoring?.waitingFor.delete(participantId);
      this.checkRestored();
    }

    // -- peer connections ----------------------------------------------------------------

    newPeerConnection() {
      const iceServers = this.iceServers.map((s) => ({ urls: s.urls, username: s.username, credential: s.credential }));
      return new RTCPeerConnection({ iceServers });
    }

    // Candidates found after the offer went out (gathering took over GATHER_TIMEOUT_MS)
    // are trickled once the answer names the transport.
    lateCandidates(pc) {
      let offerSent = false;
      let transportId = null;
      const queue = [];
      const forward = (candidate) => this.send({ type: "ice_candidate", transport_id: transportId, ...candidate });
      pc.addEventListener("icecandidate", ({ candidate }) => {
        if (!offerSent) return;
        const message = candidate
          ? { candidate: candidate.candidate, sdp_mid: candidate.sdpMid, sdp_mline_index: candidate.sdpMLineIndex }
          : { candidate: "" };
        if (transportId) forward(message);
        else queue.push(message);
      });
      return {
        offerSent() { offerSent = true; },
        bind(id) {
          transportId = id;
          queue.splice(0).forEach(forward);
        },
      };
    }

    // Offer, wait for ICE gathering, send the offer, apply the answer. Returns the answer,
    // or null when the holder was closed (or its peer connection replaced) meanwhile; a
    // transport answered for nothing is then given back.
    async negotiate(holder, pc, buildMessage) {
      const attempt = { closed: false };
      holder.attempt = attempt;
      holder.pc = pc;
      holder.transportId = null;
      const late = this.lateCandidates(pc);
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringDone(pc);
      late.offerSent();
      const answer = await this.request(buildMessage(pc.localDescription.sdp));
      if (attempt.closed) {
        this.send({ type: holder instanceof Publication ? "unpublish" : "unsubscribe", transport_id: answer.transport_id });
        return null;
      }
      holder.transportId = answer.transport_id;
      late.bind(answer.transport_id);
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      return answer;
    }

    watch(holder, pc) {
      pc.addEventListener("connectionstatechange", () => {
        if (holder.closed || holder.pc !== pc) return;
        if (pc.connectionState === "connected") this.checkRestored();
        holder.options.onConnectionState?.(pc.connectionState, holder);
      });
    }

    holderClosed(holder, tellServer) {
      const publication = holder instanceof Publication;
      (publication ? this.publications : this.subscriptions).delete(holder);
      if (tellServer && holder.transportId) {
        this.send({ type: publication ? "unpublish" : "unsubscribe", transport_id: holder.transportId });
      }
      this.checkRestored();
    }

    // -- publishing ----------------------------------------------------------------------

    publish(stream, options = {}) {
      const publication = new Publication(this, stream, options);
      this.publications.add(publication);
      publication.settle(this.negotiatePublication(publication));
      return publication;
    }

    negotiatePublication(publication) {
      const { stream, options } = publication;
      const pc = this.newPeerConnection();
      const tracks = [];
      for (const track of [...stream.getAudioTracks(), ...stream.getVideoTracks()]) {
        pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
        const source = options.source || (track.kind === "audio" ? "microphone" : "camera");
        tracks.push(options.name ? { source, name: options.name } : { source });
      }
      publication.channel = null;
      if (options.dataChannel) {
        publication.channel = pc.createDataChannel("teller");
        publication.channel.onmessage = (event) => this.onChannelMessage(event.data);
      }
      this.watch(publication, pc);
      return this.negotiate(publication, pc, (sdp) => ({ type: "publish", sdp, tracks })).then(() => publication);
    }

    // Made again after a move (or after a publish cut off before its answer).
    republish(publication) {
      publication.drop();
      publication.settle(this.negotiatePublication(publication)).catch((error) => {
        if (error.code === "disconnected" || error.code === "left") return;
        publication.options.onError?.(error, publication);
      });
    }

    // -- subscribing ---------------------------------------------------------------------

    // `tracks`: the participant's tracks to receive (at most one audio and one video,
    // unless options.eachTrack).
    subscribe(participantId, tracks, options = {}) {
      const subscription = new Subscription(this, participantId, tracks, options);
      this.subscriptions.add(subscription);
      const pc = this.newPeerConnection();
      subscription.pc = pc;
      for (const kind of ["audio", "video"]) {
        const count = tracks.filter((t) => t.kind === kind).length;
        for (let i = 0; i < (options.eachTrack ? count : Math.min(count, 1)); i++) pc.addTransceiver(kind, { direction: "recvonly" });
      }
      pc.ontrack = (event) => {
        subscription.stream.addTrack(event.track);
        options.onTrack?.(event.track, subscription);
      };
      this.watch(subscription, pc);
      const target = options.byTrackIds
        ? { track_ids: tracks.map((t) => t.track_id) }
        : { participant_id: participantId };
      subscription.settle(this.negotiate(subscription, pc, (sdp) => ({ type: "subscribe", sdp, ...target })).then(() => subscription));
      return subscription;
    }

    // -- data ----------------------------------------------------------------------------

    sendData(payload, topic) {
      const body = { payload, topic };
      const channel = [...this.publications].map((p) => p.channel).find((c) => c?.readyState === "open");
      if (channel) channel.send(JSON.stringify(body));
      else this.send({ type: "data", ...body });
    }

    onChannelMessage(data) {
      if (typeof data !== "string") return;
      let message;
      try {
        message = JSON.parse(data);
      } catch {
        return;
      }
      if (message.type === "data" || message.type === "error") this.emit(message.type, message, { channel: true });
    }

    // -- reconnecting --------------------------------------------------------------------
    //
    // A lost socket is resumed with the resume token, through whichever signalling process
    // the address reaches now. If the node kept the room (`resumed`), the peer connections
    // never stopped; if the room moved to another node, everything is published and
    // subscribed again there. The streams keep running throughout.

    canResume(closeCode) {
      return this.phase === "joined" && Boolean(this.resumeToken) && !this.leftReason && RESUMABLE_CLOSE_CODES.has(closeCode);
    }

    awaitedParticipants() {
      // Dropped again before everyone came back: keep waiting for those too.
      const waiting = new Map(this.restoring?.waitingFor);
      const awaits = this.options.awaits || ((info) => info.tracks.length > 0);
      for (const info of this.participants.values()) {
        if (awaits(info)) waiting.set(info.participant_id, info);
      }
      return waiting;
    }

    startReconnect() {
      const waitingFor = this.awaitedParticipants();
      this.clearRestoring();
      this.dropSocket();
      this.phase = "reconnecting";
      this.rejectPending(this.error("disconnected"));
      this.emit("reconnecting", {});
      this.reconnect(this.generation, waitingFor);
    }

    async reconnect(generation, waitingFor) {
      const deadline = Date.now() + RECONNECT_TIMEOUT_MS;
      let delay = RECONNECT_FIRST_DELAY_MS;
      for (;;) {
        try {
          const joined = await this.rejoin(generation);
          if (generation === this.generation) this.resume(joined, waitingFor);
          return;
        } catch (error) {
          if (generation !== this.generation) return;
          this.dropSocket();
          if (isFinal(error) || Date.now() + delay > deadline) {
            this.close();
            this.emit("closed", { code: error.closeCode || 0, reason: null, error: isFinal(error) ? error : null });
            return;
          }
        }
        await sleep(delay);
        if (generation !== this.generation) return;
        delay = Math.min(delay * 2, RECONNECT_MAX_DELAY_MS);
      }
    }

    async rejoin(generation) {
      const ws = await this.openSocket(null, REJOIN_TIMEOUT_MS);
      if (generation !== this.generation) {
        ws.close();
        throw this.error("left");
      }
      this.adoptSocket(ws);
      return this.request({ type: "join", protocol: 1, resume: this.resumeToken }, REJOIN_TIMEOUT_MS);
    }

    resume(joined, waitingFor) {
      this.reconnects += 1;
      this.takeJoined(joined);
      this.phase = "joined";
      // Set before the media is caught up, so that a participant found gone is no longer awaited.
      this.restoring = { waitingFor, timer: setTimeout(() => this.restoreTimedOut(), RESTORE_TIMEOUT_MS) };
      const participants = joined.participants || [];
      if (joined.resumed) {
        // Same node: the peer connections carried on; catch up on what happened meanwhile.
        const present = new Set(participants.map((p) => p.participant_id));
        for (const participantId of [...this.participants.keys()]) {
          if (present.has(participantId)) continue;
          this.removeParticipant(participantId);
          this.emit("participant_left", { type: "participant_left", participant_id: participantId, reason: "left" });
        }
        participants.forEach((info) => this.addParticipant(info));
        this.emit("resumed", { joined, resumed: true });
        // A publish cut off before its answer never started: make it again.
        for (const publication of this.publications) if (!publication.transportId) this.republish(publication);
      } else {
        // Another node: none of the old transports exist there. Those who are not here yet
        // are moving too: their participant_joined and track_published follow.
        this.migrations += 1;
        for (const subscription of [...this.subscriptions]) subscription.close(false);
        this.participants.clear();
        participants.forEach((info) => this.addParticipant(info));
        this.emit("resumed", { joined, resumed: false });
        for (const publication of this.publications) this.republish(publication);
      }
      this.checkRestored();
    }

    missingParticipants() {
      const ids = [...this.restoring.waitingFor.keys()];
      return ids.filter((id) => ![...this.subscriptions].some((s) => s.participantId === id && s.pc.connectionState === "connected"));
    }

    // Restoring lasts until our media goes out again and the media of everyone awaited
    // comes in again, or until RESTORE_TIMEOUT_MS.
    checkRestored() {
      if (!this.restoring || this.phase !== "joined") return;
      if ([...this.publications].some((p) => p.pc.connectionState !== "connected")) return;
      if (this.missingParticipants().length === 0) this.finishRestore([]);
    }

    restoreTimedOut() {
      this.finishRestore(this.missingParticipants().map((id) => this.restoring.waitingFor.get(id)));
    }

    finishRestore(missing) {
      this.clearRestoring();
      this.emit("restored", { missing });
    }

    clearRestoring() {
      clearTimeout(this.restoring?.timer);
      this.restoring = null;
    }
  }

  window.TellerClient = TellerClient;
  window.TellerError = TellerError;
})();
