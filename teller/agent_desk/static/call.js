// Teller call page: two or more people in a room see, hear and message each other.
//
// It speaks signalling protocol 1 (docs/protocol.md) over one WebSocket. The camera
// and microphone go out on one peer connection (with a data channel for chat); each
// other participant comes in on a peer connection of its own. The page always offers
// and the server always answers.
"use strict";

(() => {
  const GATHER_TIMEOUT_MS = 2000;
  const SUBSCRIBE_DEBOUNCE_MS = 200;
  const RESUBSCRIBE_DELAY_MS = 1000;
  const MAX_RESUBSCRIBES = 2;
  const REQUEST_TIMEOUT_MS = 15000;
  const LEAVE_TIMEOUT_MS = 1000;
  // Reconnecting after the signalling connection or the media node is lost.
  const RECONNECT_FIRST_DELAY_MS = 50;
  const RECONNECT_MAX_DELAY_MS = 1000;
  const RECONNECT_TIMEOUT_MS = 30000;
  const REJOIN_TIMEOUT_MS = 5000; // one attempt: open the socket and get `joined`
  const RESTORE_TIMEOUT_MS = 30000; // after a move, how long to wait for the others' media
  // The server went away or restarts (1012 follows a `reconnect`): resume the call.
  const RESUMABLE_CLOSE_CODES = new Set([1001, 1006, 1011, 1012, 1013]);
  // The server ended this connection for good: reconnecting cannot help.
  const FINAL_CLOSE_CODES = new Set([4401, 4403, 4008]);

  // What the user reads for an error code from the server.
  const ERROR_TEXT = {
    token_missing: "The call could not be opened: no access pass was given.",
    token_invalid: "Your access to this call is not valid. Please open the link again.",
    token_expired: "Your access to this call has expired. Please join again.",
    room_forbidden: "You are not allowed into this room.",
    grant_missing: "You are not allowed to do that in this call.",
    dev_tokens_disabled: "This server does not let guests join from this page.",
    invalid_room_name: "Room names use letters, digits, '.', '_', ':' or '-', and start with a letter or digit.",
    room_full: "This room is full. Please try again later.",
    room_closed: "This call has ended.",
    room_not_found: "This room does not exist.",
    rate_limited: "Too many messages at once. Please wait a moment.",
    message_too_large: "That message is too long.",
    too_many_transports: "Too many video connections are open. Please leave and join again.",
    codec_unsupported: "Your browser cannot play the video format used in this call.",
  };

  // What the user reads when the server ends their part in the call (`left.reason`).
  const LEFT_TEXT = {
    left: "You left the call.",
    removed_by_api: "You were removed from the call.",
    duplicate_identity: "You joined this call from another window, so this one was disconnected.",
    room_closed: "The call has ended.",
    closed_by_api: "The call has ended.",
    empty_timeout: "The call ended because nobody else was in it.",
    node_shutdown: "The server is restarting. Please join again in a moment.",
  };

  // What the user reads when the socket closes with this code and no `left` came first.
  const CLOSE_TEXT = {
    4401: ERROR_TEXT.token_invalid,
    4403: ERROR_TEXT.room_forbidden,
    4008: "The server closed the connection after too many errors.",
  };

  class CallError extends Error {
    constructor(message, code = "", status = 0) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  const LOST_TEXT = "The connection to the call server was lost. Please join again.";

  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $("join-form"),
    room: $("room"),
    name: $("name"),
    join: $("join"),
    status: $("status"),
    reconnecting: $("reconnecting"),
    tiles: $("tiles"),
    localVideo: $("local-video"),
    localName: $("local-name"),
    mic: $("toggle-mic"),
    camera: $("toggle-camera"),
    chatForm: $("chat-form"),
    chatInput: $("chat-input"),
    chatSend: $("chat-send"),
    chatLog: $("chat-log"),
  };

  const state = {
    phase: "idle", // idle | joining | joined | reconnecting | leaving
    session: 0, // bumped on every teardown; async work of an older session stops
    ws: null,
    room: "",
    participantId: null,
    resumeToken: null, // from `joined`: takes this participant's place back after a drop
    leftReason: null,
    restoring: null, // after a reconnect, until media flows again: {waitingFor (id -> name), timer}
    reconnects: 0,
    migrations: 0,
    iceServers: [],
    localStream: null,
    mediaWarning: "",
    publisher: null, // {pc, channel, transportId, closed}
    participants: new Map(), // participant_id -> info, with its current tracks
    subscriptions: new Map(), // participant_id -> {pc, transportId, trackIds, tile, stream, closed}
    timers: new Map(), // participant_id -> pending subscription sync
    retries: new Map(), // participant_id -> resubscriptions after a failure
    pending: new Map(), // request_id -> {resolve, reject, timer}
    nextRequestId: 1,
  };

  // -- status and controls -------------------------------------------------------------

  function setStatus(text, isError = false) {
    ui.status.textContent = text;
    ui.status.classList.toggle("error", isError);
  }

  function describe(error) {
    return ERROR_TEXT[error?.code] || error?.message || "Something went wrong. Please try again.";
  }

  function setPhase(phase) {
    state.phase = phase;
    const idle = phase === "idle";
    const joined = phase === "joined";
    ui.room.disabled = ui.name.disabled = !idle;
    ui.join.textContent = idle ? "Join" : "Leave";
    ui.join.disabled = phase === "leaving";
    ui.chatInput.disabled = ui.chatSend.disabled = !joined;
    renderToggle(ui.mic, "audio", "Microphone");
    renderToggle(ui.camera, "video", "Camera");
  }

  function localTracks(kind) {
    if (!state.localStream) return [];
    return kind === "audio" ? state.localStream.getAudioTracks() : state.localStream.getVideoTracks();
  }

  function renderToggle(button, kind, label) {
    const tracks = localTracks(kind);
    const on = tracks.length > 0 && tracks[0].enabled;
    button.disabled = tracks.length === 0;
    button.textContent = tracks.length === 0 ? `${label} unavailable` : `${label} ${on ? "on" : "off"}`;
    button.setAttribute("aria-pressed", String(on));
  }

  function toggle(kind, button, label) {
    const tracks = localTracks(kind);
    if (tracks.length === 0) return;
    const on = !tracks[0].enabled;
    tracks.forEach((track) => { track.enabled = on; });
    renderToggle(button, kind, label);
  }

  // -- signalling ----------------------------------------------------------------------

  async function fetchToken(room, name) {
    let response;
    try {
      response = await fetch("/v1/dev/token", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ room, name, role: "customer" }),
      });
    } catch {
      throw new CallError("Cannot reach the call server. Check your connection and try again.");
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = body.error || {};
      throw new CallError(ERROR_TEXT[error.code] || error.message || `The server refused the call (${response.status}).`, error.code);
    }
    return body.token;
  }

  // `token` is null when resuming: the resume token goes in the `join` instead.
  function openSocket(token, timeoutMs = REQUEST_TIMEOUT_MS) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = token ? `?access_token=${encodeURIComponent(token)}` : "";
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`${scheme}//${location.host}/v1/rtc${query}`);
      const fail = () => {
        clearTimeout(timer);
        ws.onopen = ws.onclose = null;
        ws.close();
        reject(new CallError("Cannot reach the call server. Check your connection and try again.", "unreachable"));
      };
      const timer = setTimeout(fail, timeoutMs);
      ws.onopen = () => {
        clearTimeout(timer);
        resolve(ws);
      };
      ws.onclose = fail;
    });
  }

  function adoptSocket(ws) {
    state.ws = ws;
    ws.onmessage = onSocketMessage;
    ws.onclose = onSocketClosed;
  }

  function dropSocket() {
    const ws = state.ws;
    state.ws = null;
    if (!ws) return;
    ws.onmessage = ws.onclose = null;
    ws.close();
  }

  // While reconnecting, the socket is a resume attempt: only its `join` may go out.
  function canSend(message) {
    return state.ws?.readyState === WebSocket.OPEN && (state.phase !== "reconnecting" || message.type === "join");
  }

  function send(message) {
    if (canSend(message)) state.ws.send(JSON.stringify(message));
  }

  function request(message, timeoutMs = REQUEST_TIMEOUT_MS) {
    const requestId = `r${state.nextRequestId++}`;
    return new Promise((resolve, reject) => {
      if (!canSend(message)) {
        reject(new CallError(LOST_TEXT, "disconnected"));
        return;
      }
      const timer = setTimeout(() => {
        state.pending.delete(requestId);
        reject(new CallError("The call server did not answer in time. Please try again.", "timeout"));
      }, timeoutMs);
      state.pending.set(requestId, { resolve, reject, timer });
      send({ ...message, request_id: requestId });
    });
  }

  function settle(message) {
    const pending = state.pending.get(message.request_id);
    state.pending.delete(message.request_id);
    clearTimeout(pending.timer);
    if (message.type === "error") pending.reject(new CallError(describe(message), message.code, message.status));
    else pending.resolve(message);
  }

  function rejectPending(error) {
    for (const pending of state.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    state.pending.clear();
  }

  const HANDLERS = {
    participant_joined: (m) => addParticipant(m.participant),
    participant_left: (m) => removeParticipant(m.participant_id),
    track_published: (m) => onTrackPublished(m.participant_id, m.track),
    track_unpublished: (m) => onTrackUnpublished(m.participant_id, m.track_id),
    transport_closed: (m) => onTransportClosed(m.transport_id, m.reason),
    data: (m) => showData(m),
    left: (m) => { state.leftReason = m.reason; },
    reconnect: () => { if (state.phase === "joined") startReconnect(); },
    error: onError,
  };

  // Errors for messages sent without a request_id (data, unsubscribe, ice_candidate).
  function onError(message) {
    // An unsubscribe or a late candidate for a transport the server closed meanwhile.
    if (message.code === "transport_not_found") return;
    setStatus(describe(message), true);
  }

  function onSocketMessage(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.request_id && state.pending.has(message.request_id)) settle(message);
    else HANDLERS[message.type]?.(message);
  }

  function onSocketClosed(event) {
    state.ws = null;
    if (state.phase === "reconnecting") {
      // A resume attempt's socket closed: the attempt fails, and is retried unless final.
      const final = FINAL_CLOSE_CODES.has(event.code);
      rejectPending(new CallError(CLOSE_TEXT[event.code] || LOST_TEXT, final ? "closed" : "disconnected", final ? 400 : 0));
      return;
    }
    if (canResume(event.code)) {
      startReconnect();
      return;
    }
    const reason = state.leftReason;
    const text = LEFT_TEXT[reason] || CLOSE_TEXT[event.code] || LOST_TEXT;
    teardown();
    setStatus(text, reason !== "left");
  }

  // -- peer connections ----------------------------------------------------------------

  function newPeerConnection() {
    const iceServers = state.iceServers.map((s) => ({ urls: s.urls, username: s.username, credential: s.credential }));
    return new RTCPeerConnection({ iceServers });
  }

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

  // Candidates found after the offer went out (gathering took over GATHER_TIMEOUT_MS)
  // are trickled once the answer names the transport.
  function lateCandidates(pc) {
    let offerSent = false;
    let transportId = null;
    const queue = [];
    const forward = (candidate) => send({ type: "ice_candidate", transport_id: transportId, ...candidate });
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

  // Offer, wait for ICE gathering, send the offer, apply the answer. Returns the
  // answer, or null when `holder` was closed while waiting for it.
  async function negotiate(pc, holder, buildMessage) {
    const late = lateCandidates(pc);
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringDone(pc);
    late.offerSent();
    const answer = await request(buildMessage(pc.localDescription.sdp));
    holder.transportId = answer.transport_id;
    if (holder.closed) return null;
    late.bind(answer.transport_id);
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    return answer;
  }

  // -- publishing ----------------------------------------------------------------------

  async function startLocalMedia() {
    if (!navigator.mediaDevices?.getUserMedia) {
      state.mediaWarning = "This page cannot use your camera: it must be opened over https.";
      return new MediaStream();
    }
    let lastError = null;
    for (const constraints of [{ audio: true, video: true }, { audio: true }, { video: true }]) {
      try {
        return await navigator.mediaDevices.getUserMedia(constraints);
      } catch (error) {
        lastError = error;
        if (error.name === "NotAllowedError") break;
      }
    }
    state.mediaWarning = lastError?.name === "NotAllowedError"
      ? "Camera and microphone are blocked; allow them in the browser to be seen and heard."
      : "No camera or microphone was found; the others will not see or hear you.";
    return new MediaStream();
  }

  function showLocalMedia(stream) {
    state.localStream = stream;
    ui.localVideo.srcObject = stream.getVideoTracks().length ? stream : null;
    renderToggle(ui.mic, "audio", "Microphone");
    renderToggle(ui.camera, "video", "Camera");
  }

  function openDataChannel(pc) {
    const channel = pc.createDataChannel("teller");
    channel.onmessage = (event) => onChannelMessage(event.data);
    return channel;
  }

  async function publish(session) {
    const stream = state.localStream;
    const pc = newPeerConnection();
    const publisher = { pc, channel: null, transportId: null, closed: false };
    state.publisher = publisher;
    const tracks = [];
    for (const track of [...stream.getAudioTracks(), ...stream.getVideoTracks()]) {
      pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
      tracks.push({ source: track.kind === "audio" ? "microphone" : "camera" });
    }
    publisher.channel = openDataChannel(pc);
    pc.onconnectionstatechange = () => {
      if (session !== state.session || state.publisher !== publisher) return;
      if (pc.connectionState === "connected") checkRestored();
      if (pc.connectionState === "failed") {
        setStatus("Your camera and microphone cannot reach the call server. Check your network and join again.", true);
      }
    };
    const answer = await negotiate(pc, publisher, (sdp) => ({ type: "publish", sdp, tracks }));
    if (answer === null && publisher.transportId) send({ type: "unpublish", transport_id: publisher.transportId });
  }

  function closePublisher() {
    const publisher = state.publisher;
    if (!publisher) return;
    publisher.closed = true;
    publisher.pc.close();
    state.publisher = null;
  }

  // -- participants and subscriptions --------------------------------------------------

  function displayName(participantId) {
    const info = state.participants.get(participantId);
    return info?.name || info?.identity || "Guest";
  }

  function addParticipant(info) {
    state.participants.set(info.participant_id, { ...info, tracks: [...(info.tracks || [])] });
    if (info.tracks?.length) scheduleSync(info.participant_id);
  }

  function removeParticipant(participantId) {
    state.participants.delete(participantId);
    state.retries.delete(participantId);
    clearTimeout(state.timers.get(participantId));
    state.timers.delete(participantId);
    dropSubscription(participantId, false);
    state.restoring?.waitingFor.delete(participantId);
    checkRestored();
  }

  function onTrackPublished(participantId, track) {
    if (participantId === state.participantId) return;
    if (!state.participants.has(participantId)) addParticipant({ participant_id: participantId, tracks: [] });
    const info = state.participants.get(participantId);
    info.tracks = info.tracks.filter((t) => t.track_id !== track.track_id).concat(track);
    state.retries.delete(participantId);
    scheduleSync(participantId);
  }

  function onTrackUnpublished(participantId, trackId) {
    const info = state.participants.get(participantId);
    if (!info) return;
    info.tracks = info.tracks.filter((t) => t.track_id !== trackId);
    scheduleSync(participantId);
  }

  function onTransportClosed(transportId, reason) {
    if (state.publisher?.transportId === transportId) {
      closePublisher();
      setStatus("Your camera and microphone stopped reaching the call. Please leave and join again.", true);
      return;
    }
    for (const [participantId, sub] of state.subscriptions) {
      if (sub.transportId !== transportId) continue;
      dropSubscription(participantId, false);
      const retries = state.retries.get(participantId) || 0;
      if (reason !== "publisher_ended" && reason !== "unsubscribe" && retries < MAX_RESUBSCRIBES) {
        state.retries.set(participantId, retries + 1);
        setStatus(`Lost the connection to ${displayName(participantId)}; reconnecting…`, true);
        scheduleSync(participantId, RESUBSCRIBE_DELAY_MS);
      }
    }
  }

  // Audio and video published together arrive as two events: subscribe once, shortly after.
  function scheduleSync(participantId, delay = SUBSCRIBE_DEBOUNCE_MS) {
    clearTimeout(state.timers.get(participantId));
    state.timers.set(participantId, setTimeout(() => {
      state.timers.delete(participantId);
      syncSubscription(participantId);
    }, delay));
  }

  // Make the subscription to a participant match the tracks they publish now.
  function syncSubscription(participantId) {
    if (state.phase !== "joined") return;
    const tracks = state.participants.get(participantId)?.tracks || [];
    const sub = state.subscriptions.get(participantId);
    if (tracks.length === 0) {
      dropSubscription(participantId, true);
      return;
    }
    if (sub && tracks.every((t) => sub.trackIds.has(t.track_id))) return;
    dropSubscription(participantId, true);
    subscribe(participantId, tracks, state.session).catch((error) => {
      // The participant stopped publishing or left meanwhile: their events follow.
      if (error.code === "track_not_found" || error.code === "participant_not_found") return;
      if (error.code === "disconnected") return; // subscribed again once reconnected
      setStatus(`Cannot show ${displayName(participantId)}: ${describe(error)}`, true);
    });
  }

  async function subscribe(participantId, tracks, session) {
    const pc = newPeerConnection();
    const sub = {
      pc,
      transportId: null,
      trackIds: new Set(tracks.map((t) => t.track_id)),
      tile: createTile(participantId),
      stream: new MediaStream(),
      closed: false,
    };
    state.subscriptions.set(participantId, sub);
    for (const kind of ["audio", "video"]) {
      if (tracks.some((t) => t.kind === kind)) pc.addTransceiver(kind, { direction: "recvonly" });
    }
    pc.ontrack = (event) => attachTrack(sub, event.track);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState !== "connected" || sub.closed) return;
      state.retries.delete(participantId);
      checkRestored();
    };
    let answer;
    try {
      answer = await negotiate(pc, sub, (sdp) => ({ type: "subscribe", participant_id: participantId, sdp }));
    } catch (error) {
      if (sub.closed || session !== state.session) return; // dropped meanwhile: nothing to report
      dropSubscription(participantId, true);
      throw error;
    }
    if (answer === null && sub.transportId && session === state.session) {
      send({ type: "unsubscribe", transport_id: sub.transportId }); // dropped while answering
    }
  }

  function dropSubscription(participantId, tellServer) {
    const sub = state.subscriptions.get(participantId);
    if (!sub) return;
    state.subscriptions.delete(participantId);
    sub.closed = true;
    sub.pc.close();
    removeTile(sub.tile);
    if (tellServer && sub.transportId) send({ type: "unsubscribe", transport_id: sub.transportId });
  }

  // -- tiles ---------------------------------------------------------------------------

  function createTile(participantId) {
    const tile = document.createElement("figure");
    tile.className = "tile remote";
    tile.dataset.participantId = participantId;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    const caption = document.createElement("figcaption");
    caption.textContent = displayName(participantId);
    tile.append(video, caption);
    ui.tiles.append(tile);
    return tile;
  }

  function removeTile(tile) {
    tile.querySelector("video").srcObject = null;
    tile.remove();
  }

  // Audio and video of one participant play from one element: a received track that
  // is attached to no media element is not played (nor, in Chromium, counted).
  function attachTrack(sub, track) {
    sub.stream.addTrack(track);
    const video = sub.tile.querySelector("video");
    if (video.srcObject !== sub.stream) video.srcObject = sub.stream;
    play(video);
  }

  function play(video) {
    video.play().catch((error) => {
      if (error.name !== "NotAllowedError") return;
      // The browser blocks sound until the user interacts: play muted until then.
      video.muted = true;
      video.play().catch(() => {});
      setStatus("Click anywhere on the page to hear the other participants.");
      document.addEventListener("click", unmuteAll, { once: true });
    });
  }

  function unmuteAll() {
    for (const video of ui.tiles.querySelectorAll(".tile.remote video")) {
      video.muted = false;
      video.play().catch(() => {});
    }
  }

  // -- chat ----------------------------------------------------------------------------

  function appendChat(from, text) {
    const item = document.createElement("li");
    const sender = document.createElement("span");
    sender.className = "from";
    sender.textContent = `${from}: `;
    item.append(sender, document.createTextNode(text));
    ui.chatLog.append(item);
    ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
  }

  function sendChat(text) {
    const body = { payload: { text }, topic: "chat" };
    const channel = state.publisher?.channel;
    if (channel?.readyState === "open") channel.send(JSON.stringify(body));
    else send({ type: "data", ...body });
    appendChat("You", text);
  }

  function showData(message) {
    if (message.topic && message.topic !== "chat") return;
    const payload = message.payload;
    const text = typeof payload?.text === "string" ? payload.text : JSON.stringify(payload);
    const from = message.from_participant_id
      ? displayName(message.from_participant_id)
      : message.from_identity || "Teller";
    appendChat(from, text);
  }

  function onChannelMessage(data) {
    if (typeof data !== "string") return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.type === "data") showData(message);
    else if (message.type === "error") setStatus(describe(message), true);
  }

  // -- joining and leaving -------------------------------------------------------------

  function takeJoined(joined) {
    state.participantId = joined.participant.participant_id;
    state.resumeToken = joined.resume_token || state.resumeToken;
    state.iceServers = joined.ice_servers || [];
  }

  function onJoined(joined) {
    takeJoined(joined);
    ui.localName.textContent = `You (${joined.participant.name})`;
    (joined.participants || []).forEach(addParticipant);
  }

  async function join() {
    const room = ui.room.value.trim();
    const name = ui.name.value.trim();
    if (!room || !name) {
      setStatus("Please enter a room and your name.", true);
      return;
    }
    const session = state.session;
    state.room = room;
    state.leftReason = null;
    state.mediaWarning = "";
    setPhase("joining");
    setStatus("Starting your camera and microphone…");
    try {
      const stream = await startLocalMedia();
      if (session !== state.session) {
        stream.getTracks().forEach((track) => track.stop());
        return;
      }
      showLocalMedia(stream);
      setStatus("Connecting…");
      const token = await fetchToken(room, name);
      if (session !== state.session) return;
      const ws = await openSocket(token);
      if (session !== state.session) {
        ws.close();
        return;
      }
      adoptSocket(ws);
      onJoined(await request({ type: "join", protocol: 1 }));
      setPhase("joined");
      setStatus(state.mediaWarning || `You are in room ${room}.`, Boolean(state.mediaWarning));
      await publish(session);
    } catch (error) {
      // Disconnected while publishing: the reconnect publishes again.
      if (session !== state.session || error.code === "disconnected") return;
      const joined = state.phase === "joined";
      if (!joined) teardown();
      setStatus(joined ? `Your camera could not be sent: ${describe(error)}` : describe(error), true);
    }
  }

  async function leave() {
    if (state.phase === "idle" || state.phase === "leaving") return;
    const ws = state.ws;
    // While reconnecting the socket has not joined yet: there is nobody to say goodbye to.
    const joined = state.phase !== "reconnecting";
    setPhase("leaving");
    if (joined && ws?.readyState === WebSocket.OPEN) {
      ws.onclose = null;
      const closed = new Promise((resolve) => {
        ws.addEventListener("close", resolve);
        setTimeout(resolve, LEAVE_TIMEOUT_MS);
      });
      send({ type: "leave" });
      await closed;
    }
    teardown();
    setStatus("You left the call.");
  }

  function teardown() {
    state.session += 1;
    clearRestoring();
    showReconnecting(false);
    state.resumeToken = null;
    for (const participantId of [...state.subscriptions.keys()]) dropSubscription(participantId, false);
    state.timers.forEach((timer) => clearTimeout(timer));
    state.timers.clear();
    state.retries.clear();
    closePublisher();
    state.localStream?.getTracks().forEach((track) => track.stop());
    state.localStream = null;
    ui.localVideo.srcObject = null;
    ui.localName.textContent = "You";
    rejectPending(new CallError("You left the call.", "left"));
    dropSocket();
    state.participants.clear();
    state.participantId = null;
    setPhase("idle");
  }

  // -- reconnecting --------------------------------------------------------------------
  //
  // A lost socket is resumed with the resume token, through whichever signalling process
  // the address reaches now. If the node kept the room (`resumed`), the peer connections
  // never stopped; if the room moved to another node, everything is published and
  // subscribed again there. The camera keeps running throughout.

  function canResume(closeCode) {
    return state.phase === "joined" && Boolean(state.resumeToken) && !state.leftReason
      && RESUMABLE_CLOSE_CODES.has(closeCode);
  }

  function isFinal(error) {
    return error.status >= 400 && error.status < 500 && error.status !== 408 && error.status !== 429;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function showReconnecting(on) {
    ui.reconnecting.hidden = !on;
  }

  function publishingParticipants() {
    // Dropped again before everyone came back: keep waiting for those too.
    const waiting = new Map(state.restoring?.waitingFor);
    for (const info of state.participants.values()) {
      if (info.tracks.length) waiting.set(info.participant_id, displayName(info.participant_id));
    }
    return waiting;
  }

  function startReconnect() {
    const waitingFor = publishingParticipants();
    clearRestoring();
    dropSocket();
    setPhase("reconnecting");
    showReconnecting(true);
    rejectPending(new CallError(LOST_TEXT, "disconnected"));
    reconnect(state.session, waitingFor);
  }

  async function reconnect(session, waitingFor) {
    const deadline = Date.now() + RECONNECT_TIMEOUT_MS;
    let delay = RECONNECT_FIRST_DELAY_MS;
    for (;;) {
      try {
        const joined = await rejoin(session);
        if (session === state.session) resumeCall(joined, session, waitingFor);
        return;
      } catch (error) {
        if (session !== state.session) return;
        dropSocket();
        if (isFinal(error) || Date.now() + delay > deadline) {
          teardown();
          setStatus(isFinal(error) ? describe(error) : LOST_TEXT, true);
          return;
        }
      }
      await sleep(delay);
      if (session !== state.session) return;
      delay = Math.min(delay * 2, RECONNECT_MAX_DELAY_MS);
    }
  }

  async function rejoin(session) {
    const ws = await openSocket(null, REJOIN_TIMEOUT_MS);
    if (session !== state.session) {
      ws.close();
      throw new CallError("You left the call.", "left");
    }
    adoptSocket(ws);
    return request({ type: "join", protocol: 1, resume: state.resumeToken }, REJOIN_TIMEOUT_MS);
  }

  function resumeCall(joined, session, waitingFor) {
    state.reconnects += 1;
    takeJoined(joined);
    setPhase("joined");
    // Set before the media is caught up, so that a participant found gone is no longer awaited.
    state.restoring = { waitingFor, timer: setTimeout(restoreTimedOut, RESTORE_TIMEOUT_MS) };
    if (joined.resumed) keepMedia(joined.participants || [], session);
    else moveMedia(joined.participants || [], session);
    checkRestored();
  }

  // Same node: the peer connections carried on; catch up on what happened meanwhile.
  function keepMedia(participants, session) {
    const present = new Set(participants.map((p) => p.participant_id));
    for (const participantId of [...state.participants.keys()]) {
      if (!present.has(participantId)) removeParticipant(participantId);
    }
    for (const info of participants) {
      addParticipant(info);
      scheduleSync(info.participant_id);
    }
    // A publish cut off before its answer never started: make it again.
    if (state.publisher && !state.publisher.transportId) {
      closePublisher();
      republish(session);
    }
  }

  // Another node: none of the old transports exist there.
  function moveMedia(participants, session) {
    state.migrations += 1;
    closePublisher();
    for (const participantId of [...state.subscriptions.keys()]) dropSubscription(participantId, false);
    state.timers.forEach((timer) => clearTimeout(timer));
    state.timers.clear();
    state.retries.clear();
    state.participants.clear();
    // Those who are not here yet are moving too: their participant_joined and
    // track_published subscribe to them when they arrive.
    participants.forEach(addParticipant);
    republish(session);
  }

  function republish(session) {
    publish(session).catch((error) => {
      if (session !== state.session || error.code === "disconnected") return;
      setStatus(`Your camera could not be sent: ${describe(error)}`, true);
    });
  }

  function missingParticipants() {
    const ids = [...state.restoring.waitingFor.keys()];
    return ids.filter((id) => state.subscriptions.get(id)?.pc.connectionState !== "connected");
  }

  // "Reconnecting…" stays up until our media goes out again and the media of everyone
  // who was publishing before comes in again, or until RESTORE_TIMEOUT_MS.
  function checkRestored() {
    if (!state.restoring || state.phase !== "joined") return;
    if (state.publisher && state.publisher.pc.connectionState !== "connected") return;
    if (missingParticipants().length === 0) finishRestore();
  }

  function restoreTimedOut() {
    const names = missingParticipants().map((id) => state.restoring.waitingFor.get(id));
    finishRestore();
    if (names.length) setStatus(`The video of ${names.join(", ")} did not come back.`, true);
  }

  function finishRestore() {
    clearRestoring();
    showReconnecting(false);
  }

  function clearRestoring() {
    clearTimeout(state.restoring?.timer);
    state.restoring = null;
  }

  // -- test hook -----------------------------------------------------------------------

  async function subscriptionStats(sub) {
    const entry = { framesDecoded: 0, framesReceived: 0, frameWidth: 0, frameHeight: 0, audioSamplesReceived: 0 };
    let report;
    try {
      report = await sub.pc.getStats();
    } catch {
      return entry; // closed meanwhile
    }
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      if (s.kind === "video") {
        entry.framesDecoded += s.framesDecoded || 0;
        entry.framesReceived += s.framesReceived || 0;
        entry.frameWidth = s.frameWidth || entry.frameWidth;
        entry.frameHeight = s.frameHeight || entry.frameHeight;
      } else if (s.kind === "audio") {
        entry.audioSamplesReceived += s.totalSamplesReceived || 0;
      }
    });
    return entry;
  }

  async function stats() {
    const remote = {};
    await Promise.all([...state.subscriptions].map(async ([participantId, sub]) => {
      remote[participantId] = await subscriptionStats(sub);
    }));
    return {
      joined: state.phase === "joined",
      participantId: state.participantId,
      reconnecting: state.phase === "reconnecting" || state.restoring !== null,
      reconnects: state.reconnects,
      migrations: state.migrations,
      remote,
    };
  }

  // -- start ---------------------------------------------------------------------------

  function init() {
    const params = new URLSearchParams(location.search);
    ui.room.value = params.get("room") || "";
    ui.name.value = params.get("name") || "";
    ui.form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (state.phase === "idle") join();
      else leave();
    });
    ui.mic.addEventListener("click", () => toggle("audio", ui.mic, "Microphone"));
    ui.camera.addEventListener("click", () => toggle("video", ui.camera, "Camera"));
    ui.chatForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = ui.chatInput.value.trim();
      if (!text || state.phase !== "joined") return;
      sendChat(text);
      ui.chatInput.value = "";
    });
    window.addEventListener("pagehide", () => {
      send({ type: "leave" });
      teardown();
    });
    setPhase("idle");
    if (params.get("autojoin") === "1" && ui.room.value && ui.name.value) join();
  }

  window.teller = {
    state,
    stats,
    get localParticipantId() { return state.participantId; },
  };

  init();
})();
