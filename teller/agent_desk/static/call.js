// Teller call page: two or more people in a room see, hear and message each other.
//
// The signalling (docs/protocol.md), the peer connections and resuming after a lost
// connection or a moved room are /static/teller-client.js. The camera and microphone
// go out on one publication (with a data channel for chat); each other participant
// comes in on a subscription of its own.
"use strict";

(() => {
  const SUBSCRIBE_DEBOUNCE_MS = 200;
  const RESUBSCRIBE_DELAY_MS = 1000;
  const MAX_RESUBSCRIBES = 2;

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

  const LOST_TEXT = "The connection to the call server was lost. Please join again.";

  const client = new TellerClient({ text: (code) => (code === "disconnected" ? LOST_TEXT : undefined) });

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
    room: "",
    localStream: null,
    mediaWarning: "",
    publisher: null, // the client's publication of the camera and microphone
    subscriptions: new Map(), // participant_id -> the client's subscription, with its tile
    timers: new Map(), // participant_id -> pending subscription sync
    retries: new Map(), // participant_id -> resubscriptions after a failure
    get participants() { return client.participants; }, // participant_id -> info, with its current tracks
    get participantId() { return client.participantId; },
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
      throw new TellerError("Cannot reach the call server. Check your connection and try again.");
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = body.error || {};
      throw new TellerError(ERROR_TEXT[error.code] || error.message || `The server refused the call (${response.status}).`, error.code);
    }
    return body.token;
  }

  client
    .on("participant_joined", (m) => { if (m.participant.tracks?.length) scheduleSync(m.participant.participant_id); })
    .on("participant_left", (m) => removeParticipant(m.participant_id))
    .on("track_published", (m) => {
      state.retries.delete(m.participant_id);
      scheduleSync(m.participant_id);
    })
    .on("track_unpublished", (m) => scheduleSync(m.participant_id))
    .on("transport_closed", onTransportClosed)
    .on("data", showData)
    .on("error", (m) => {
      // An unsubscribe or a late candidate for a transport the server closed meanwhile.
      if (m.code !== "transport_not_found") setStatus(describe(m), true);
    })
    .on("reconnecting", () => {
      setPhase("reconnecting");
      showReconnecting(true);
    })
    .on("resumed", onResumed)
    .on("restored", ({ missing }) => {
      showReconnecting(false);
      if (missing.length) setStatus(`The video of ${missing.map(nameOf).join(", ")} did not come back.`, true);
    })
    .on("closed", ({ code, reason, error }) => {
      teardown();
      setStatus(LEFT_TEXT[reason] || CLOSE_TEXT[code] || (error ? describe(error) : LOST_TEXT), reason !== "left");
    });

  // -- publishing ----------------------------------------------------------------------

  const MEDIA_WARNING = {
    insecure: "This page cannot use your camera: it must be opened over https.",
    blocked: "Camera and microphone are blocked; allow them in the browser to be seen and heard.",
    missing: "No camera or microphone was found; the others will not see or hear you.",
  };

  async function startLocalMedia() {
    const { stream, problem } = await TellerClient.openCamera();
    state.mediaWarning = MEDIA_WARNING[problem] || "";
    return stream;
  }

  function showLocalMedia(stream) {
    state.localStream = stream;
    ui.localVideo.srcObject = stream.getVideoTracks().length ? stream : null;
    renderToggle(ui.mic, "audio", "Microphone");
    renderToggle(ui.camera, "video", "Camera");
  }

  function publish(stream) {
    const publisher = client.publish(stream, {
      dataChannel: true,
      onConnectionState: (connectionState) => {
        if (connectionState !== "failed") return;
        setStatus("Your camera and microphone cannot reach the call server. Check your network and join again.", true);
      },
      // Made again after the room moved, and refused.
      onError: (error) => setStatus(`Your camera could not be sent: ${describe(error)}`, true),
    });
    state.publisher = publisher;
    return publisher.ready;
  }

  function closePublisher() {
    state.publisher?.close(false);
    state.publisher = null;
  }

  // -- participants and subscriptions --------------------------------------------------

  function nameOf(info) {
    return info?.name || info?.identity || "Guest";
  }

  function displayName(participantId) {
    return nameOf(client.participants.get(participantId));
  }

  function removeParticipant(participantId) {
    state.retries.delete(participantId);
    clearTimeout(state.timers.get(participantId));
    state.timers.delete(participantId);
    dropSubscription(participantId, false);
  }

  function onTransportClosed({ publication, subscription, reason }) {
    if (publication && publication === state.publisher) {
      closePublisher();
      setStatus("Your camera and microphone stopped reaching the call. Please leave and join again.", true);
      return;
    }
    if (!subscription || state.subscriptions.get(subscription.participantId) !== subscription) return;
    const participantId = subscription.participantId;
    dropSubscription(participantId, false);
    const retries = state.retries.get(participantId) || 0;
    if (reason !== "publisher_ended" && reason !== "unsubscribe" && retries < MAX_RESUBSCRIBES) {
      state.retries.set(participantId, retries + 1);
      setStatus(`Lost the connection to ${displayName(participantId)}; reconnecting…`, true);
      scheduleSync(participantId, RESUBSCRIBE_DELAY_MS);
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
    const tracks = client.participants.get(participantId)?.tracks || [];
    const sub = state.subscriptions.get(participantId);
    if (tracks.length === 0) {
      dropSubscription(participantId, true);
      return;
    }
    if (sub && tracks.every((t) => sub.trackIds.has(t.track_id))) return;
    dropSubscription(participantId, true);
    subscribe(participantId, tracks).catch((error) => {
      // The participant stopped publishing or left meanwhile: their events follow.
      if (error.code === "track_not_found" || error.code === "participant_not_found") return;
      if (error.code === "disconnected") return; // subscribed again once reconnected
      setStatus(`Cannot show ${displayName(participantId)}: ${describe(error)}`, true);
    });
  }

  // Whoever closes the subscription (this page, a failure, a move to another node), its tile goes.
  function subscribe(participantId, tracks) {
    const sub = client.subscribe(participantId, tracks, {
      onTrack: () => attachTrack(sub), // the client added the track to sub.stream
      onConnectionState: (connectionState) => { if (connectionState === "connected") state.retries.delete(participantId); },
      onClose: () => {
        if (state.subscriptions.get(participantId) === sub) state.subscriptions.delete(participantId);
        removeTile(sub.tile);
      },
    });
    sub.tile = createTile(participantId);
    state.subscriptions.set(participantId, sub);
    return sub.ready;
  }

  function dropSubscription(participantId, tellServer) {
    state.subscriptions.get(participantId)?.close(tellServer);
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
  function attachTrack(sub) {
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
    client.sendData({ text }, "chat");
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

  // -- joining and leaving -------------------------------------------------------------

  async function join() {
    const room = ui.room.value.trim();
    const name = ui.name.value.trim();
    if (!room || !name) {
      setStatus("Please enter a room and your name.", true);
      return;
    }
    const session = state.session;
    state.room = room;
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
      const joined = await client.join(token);
      if (session !== state.session) return;
      ui.localName.textContent = `You (${joined.participant.name})`;
      for (const info of client.participants.values()) if (info.tracks.length) scheduleSync(info.participant_id);
      setPhase("joined");
      setStatus(state.mediaWarning || `You are in room ${room}.`, Boolean(state.mediaWarning));
      await publish(stream);
    } catch (error) {
      // Disconnected while publishing: the reconnect publishes again. Left meanwhile: nothing to say.
      if (session !== state.session || error.code === "disconnected" || error.code === "left") return;
      const joined = state.phase === "joined";
      if (!joined) teardown();
      setStatus(joined ? `Your camera could not be sent: ${describe(error)}` : describe(error), true);
    }
  }

  async function leave() {
    if (state.phase === "idle" || state.phase === "leaving") return;
    setPhase("leaving");
    await client.leave();
    teardown();
    setStatus("You left the call.");
  }

  function teardown() {
    state.session += 1;
    showReconnecting(false);
    for (const participantId of [...state.subscriptions.keys()]) dropSubscription(participantId, false);
    state.timers.forEach((timer) => clearTimeout(timer));
    state.timers.clear();
    state.retries.clear();
    closePublisher();
    client.close();
    state.localStream?.getTracks().forEach((track) => track.stop());
    state.localStream = null;
    ui.localVideo.srcObject = null;
    ui.localName.textContent = "You";
    setPhase("idle");
  }

  // -- reconnecting --------------------------------------------------------------------
  //
  // The client resumes a lost connection by itself, keeping the camera running. Back on
  // the same node the subscriptions carried on; after a move to another node they were
  // closed, and the others are subscribed to again as their tracks appear.

  function showReconnecting(on) {
    ui.reconnecting.hidden = !on;
  }

  function onResumed({ resumed }) {
    setPhase("joined");
    if (!resumed) {
      state.timers.forEach((timer) => clearTimeout(timer));
      state.timers.clear();
      state.retries.clear();
    }
    for (const info of client.participants.values()) {
      if (resumed || info.tracks.length) scheduleSync(info.participant_id);
    }
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
      reconnecting: client.reconnecting,
      reconnects: client.reconnects,
      migrations: client.migrations,
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
    window.addEventListener("pagehide", teardown); // the client says `leave` as it closes
    setPhase("idle");
    if (params.get("autojoin") === "1" && ui.room.value && ui.name.value) join();
  }

  window.teller = {
    state,
    stats,
    get localParticipantId() { return client.participantId; },
  };

  init();
})();
