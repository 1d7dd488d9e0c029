// Teller supervisor wallboard: queues, agents by state, live sessions (REST,
// docs/contact-centre.md), refreshed every two seconds; a supervisor can end a
// non-compliant session, and supervise a live one over the signalling WebSocket
// (docs/protocol.md, "Monitoring, whisper, barge-in"): Monitor joins the call's room
// hidden and subscribes to everyone, Whisper publishes the microphone (only staff can
// receive it), Barge in reveals the supervisor to the customer, Stop leaves.
"use strict";

(() => {
  const POLL_MS = 2000;
  const GATHER_TIMEOUT_MS = 2000;
  const REQUEST_TIMEOUT_MS = 15000;
  const LEAVE_TIMEOUT_MS = 1000;
  const SUBSCRIBE_DEBOUNCE_MS = 200;
  const STATES = ["available", "ringing", "busy", "wrap_up", "away", "offline"];
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const lang = params.get("lang") || "en";
  const state = { token: params.get("token") || null, queues: {}, agents: [], live: [], waiting: [], businesses: new Map(), timer: null };
  // The call being supervised (null when none): see "Supervision" below.
  let monitor = null;

  function setStatus(text, isError = false) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  async function api(method, path, body) {
    const headers = {};
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error?.message || `The server refused (${response.status}).`);
    return data;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const m = Math.floor(s / 60);
    return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}` : `${m}:${String(s % 60).padStart(2, "0")}`;
  }

  const now = () => Date.now() / 1000;
  const businessName = (id) => state.businesses.get(id)?.name || id;

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  function renderQueues() {
    const tiles = Object.entries(state.queues).sort(([a], [b]) => a.localeCompare(b)).map(([skill, q]) => {
      const level = q.service_level === null || q.service_level === undefined ? "—" : `${Math.round(q.service_level * 100)}%`;
      const tile = el("article", { class: `tile${q.waiting ? " busy" : ""}`, "data-skill": skill, "aria-label": `Queue ${skill}` },
        el("h3", {}, skill),
        el("p", { class: "big" }, el("span", { class: "waiting" }, String(q.waiting)), " waiting"),
        el("p", {}, `Longest wait ${duration(q.longest_wait_s || 0)}`),
        el("p", {}, `Answered ${q.answered} · Abandoned ${q.abandoned}`),
        el("p", {}, `Service level `, el("strong", { class: "service-level" }, level)));
      return tile;
    });
    $("queues").replaceChildren(...tiles);
  }

  function renderAgents() {
    const groups = STATES.map((s) => {
      const agents = state.agents.filter((a) => a.state === s);
      return el("article", { class: `group state-${s}`, "data-state": s },
        el("h3", {}, `${s.replace("_", " ")} (${agents.length})`),
        el("ul", {}, ...agents.map((a) => el("li", { "data-agent-id": a.agent_id },
          `${a.name || a.agent_id}${a.reason ? ` (${a.reason})` : ""} `, el("span", { class: "since" }, duration(now() - (a.state_since || now())))))));
    });
    $("agents").replaceChildren(...groups);
  }

  function agentName(id) {
    const agent = state.agents.find((a) => a.agent_id === id);
    return agent?.name || id || "—";
  }

  function renderLive() {
    const rows = state.live.map((call) => {
      const end = el("button", { type: "button", class: "danger force-end", "aria-label": `Force end call with ${call.customer?.name || "customer"}` }, "Force end");
      end.addEventListener("click", () => forceEnd(call));
      const later = supervisionButtons(call);
      return el("tr", { "data-call-id": call.call_id, class: monitor?.callId === call.call_id ? "monitored" : "" },
        el("td", {}, businessName(call.business)),
        el("td", {}, call.customer?.name || call.customer?.identity || ""),
        el("td", {}, (call.parties || [call.agent_id]).map(agentName).join(", ")),
        el("td", {}, duration(now() - (call.answered_at || now()))),
        el("td", { class: "actions" }, end, ...later));
    });
    $("live").tBodies[0].replaceChildren(...rows);
    $("no-live").hidden = rows.length > 0;
    const waiting = state.waiting.map((call) => el("tr", { "data-call-id": call.call_id },
      el("td", {}, businessName(call.business)),
      el("td", {}, call.customer?.name || ""),
      el("td", {}, call.state),
      el("td", {}, duration(now() - call.queued_at))));
    $("waiting").tBodies[0].replaceChildren(...waiting);
  }

  async function forceEnd(call) {
    const reason = window.prompt(`End the call of ${call.customer?.name || "the customer"}? Reason:`, "non-compliant");
    if (reason === null) return;
    try {
      await api("DELETE", `/v1/calls/${call.call_id}?reason=${encodeURIComponent(reason)}`);
      setStatus("Call ended.");
      await refresh();
    } catch (error) {
      setStatus(`Cannot end the call: ${error.message}`, true);
    }
  }

  async function refresh() {
    const [queues, agents, calls] = await Promise.all([api("GET", "/v1/queues"), api("GET", "/v1/agents"), api("GET", "/v1/calls")]);
    state.queues = queues.queues;
    state.agents = agents.agents;
    state.live = calls.calls.filter((c) => c.state === "connected");
    state.waiting = calls.calls.filter((c) => c.state === "queued" || c.state === "ringing");
    if (monitor && !state.live.some((c) => c.call_id === monitor.callId)) stopMonitor("The call ended.");
    renderQueues();
    renderAgents();
    renderLive();
  }

  async function poll() {
    clearTimeout(state.timer);
    try {
      await refresh();
      setStatus(`Updated ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      setStatus(`Cannot refresh: ${error.message}`, true);
    }
    state.timer = setTimeout(poll, POLL_MS);
  }

  async function init() {
    try {
      if (!state.token) state.token = (await api("POST", "/v1/dev/supervisor", { name: "Supervisor" })).token;
      const catalogue = await api("GET", `/v1/catalogue?lang=${encodeURIComponent(lang)}`);
      for (const b of catalogue.businesses) state.businesses.set(b.id, b);
    } catch (error) {
      setStatus(`Cannot log in: ${error.message}`, true);
      return;
    }
    poll();
  }

  // -- Supervision: monitor, whisper, barge in ---------------------------------------------

  class SupervisionError extends Error {
    constructor(message, code = "") {
      super(message);
      this.code = code;
    }
  }

  // The buttons of one live session: Monitor (or Stop while monitoring it), Whisper
  // (only while monitoring it) and Barge in (only while monitoring it unseen).
  function supervisionButtons(call) {
    const who = call.customer?.name || "customer";
    const mine = monitor?.callId === call.call_id;
    const busy = Boolean(monitor?.busy);
    const buttons = [];
    if (mine) {
      const stop = el("button", { type: "button", class: "monitor-stop", "aria-label": `Stop monitoring the call with ${who}` }, "Stop");
      stop.addEventListener("click", () => stopMonitor("Stopped monitoring."));
      buttons.push(stop);
    } else {
      const start = el("button", { type: "button", class: "monitor", "aria-label": `Monitor the call with ${who}` }, "Monitor");
      if (busy || !call.room) start.disabled = true;
      start.addEventListener("click", () => startMonitor(call));
      buttons.push(start);
    }
    const whispering = mine && Boolean(monitor.publisher);
    const whisper = el("button", {
      type: "button",
      class: `whisper${whispering ? " active" : ""}`,
      "aria-pressed": String(whispering),
      "aria-label": whispering ? `Stop whispering to the agent of ${who}` : `Whisper to the agent of ${who}`,
      title: mine ? "Only the agent hears you" : "Monitor the call first",
    }, whispering ? "Stop whisper" : "Whisper");
    if (!mine || !monitor.joined || busy) whisper.disabled = true;
    whisper.addEventListener("click", () => (whispering ? stopWhisper() : startWhisper()));
    const barge = el("button", {
      type: "button",
      class: "barge",
      "aria-label": `Barge in on the call with ${who}`,
      title: mine ? "The customer will see and hear you" : "Monitor the call first",
    }, "Barge in");
    if (!mine || !monitor.joined || monitor.revealed || busy) barge.disabled = true;
    barge.addEventListener("click", bargeIn);
    buttons.push(whisper, barge);
    return buttons;
  }

  function renderMonitor() {
    const panel = $("monitor");
    panel.hidden = !monitor;
    if (monitor) {
      const call = state.live.find((c) => c.call_id === monitor.callId);
      $("monitor-call").textContent = call ? `${businessName(call.business)} · ${call.customer?.name || ""}` : monitor.room;
      const status = $("monitor-status");
      status.className = monitor.revealed ? "revealed" : monitor.publisher ? "whispering" : "";
      status.textContent = monitor.message || (!monitor.joined ? "Joining…"
        : monitor.revealed ? "You barged in: the customer sees and hears you."
        : monitor.publisher ? "Whispering: only the agent hears you; the customer does not see you."
        : "Watching unseen: the customer does not see you.");
    }
    renderLive();
  }

  function monitorMessage(text, isError = false) {
    if (monitor) {
      monitor.message = text;
      renderMonitor();
    }
    if (isError) setStatus(text, true);
  }

  function monitorSend(m, message) {
    if (m.ws?.readyState === WebSocket.OPEN) m.ws.send(JSON.stringify(message));
  }

  function monitorRequest(m, message, timeoutMs = REQUEST_TIMEOUT_MS) {
    const requestId = `m${m.nextRequestId++}`;
    return new Promise((resolve, reject) => {
      if (m.ws?.readyState !== WebSocket.OPEN) {
        reject(new SupervisionError("Not connected to the call.", "disconnected"));
        return;
      }
      const timer = setTimeout(() => {
        m.pending.delete(requestId);
        reject(new SupervisionError("The call server did not answer in time.", "timeout"));
      }, timeoutMs);
      m.pending.set(requestId, { resolve, reject, timer });
      monitorSend(m, { ...message, request_id: requestId });
    });
  }

  function openMonitorSocket() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`${scheme}//${location.host}/v1/rtc`);
      const timer = setTimeout(() => { ws.close(); reject(new SupervisionError("Cannot reach the call server.", "unreachable")); }, REQUEST_TIMEOUT_MS);
      ws.onopen = () => { clearTimeout(timer); resolve(ws); };
      ws.onclose = () => { clearTimeout(timer); reject(new SupervisionError("Cannot reach the call server.", "unreachable")); };
    });
  }

  function onMonitorMessage(m, event) {
    let message;
    try { message = JSON.parse(event.data); } catch { return; }
    const pending = message.request_id && m.pending.get(message.request_id);
    if (pending) {
      m.pending.delete(message.request_id);
      clearTimeout(pending.timer);
      if (message.type === "error") pending.reject(new SupervisionError(message.message || message.code, message.code));
      else pending.resolve(message);
      return;
    }
    if (m !== monitor) return;
    switch (message.type) {
      case "participant_joined": addWatched(m, message.participant); break;
      case "participant_left": removeWatched(m, message.participant_id); break;
      case "track_published": {
        if (message.participant_id === m.participantId) break;
        if (!m.participants.has(message.participant_id)) m.participants.set(message.participant_id, { participant_id: message.participant_id, tracks: [] });
        const info = m.participants.get(message.participant_id);
        info.tracks = info.tracks.filter((t) => t.track_id !== message.track.track_id).concat(message.track);
        scheduleWatch(m, message.participant_id);
        break;
      }
      case "track_unpublished": {
        const info = m.participants.get(message.participant_id);
        if (info) {
          info.tracks = info.tracks.filter((t) => t.track_id !== message.track_id);
          scheduleWatch(m, message.participant_id);
        }
        break;
      }
      case "transport_closed":
        if (m.publisher?.transportId === message.transport_id) closeWhisper(m);
        for (const [pid, sub] of m.subscriptions) if (sub.transportId === message.transport_id) dropWatch(m, pid, false);
        renderMonitor();
        break;
      case "left": m.leftReason = message.reason; break;
      case "error": if (message.code !== "transport_not_found") monitorMessage(message.message || message.code, true); break;
      default: break;
    }
  }

  function onMonitorClosed(m) {
    m.ws = null;
    for (const pending of m.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new SupervisionError("The connection to the call was lost.", "disconnected"));
    }
    m.pending.clear();
    if (m === monitor) {
      const ended = m.leftReason && m.leftReason !== "left";
      teardownMonitor(m);
      monitor = null;
      renderMonitor();
      setStatus(ended ? `Monitoring ended (${m.leftReason}).` : "The connection to the monitored call was lost.", !ended);
    }
  }

  function newPeerConnection(m) {
    return new RTCPeerConnection({ iceServers: m.iceServers.map((s) => ({ urls: s.urls, username: s.username, credential: s.credential })) });
  }

  function iceGatheringDone(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, GATHER_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  // Offer, wait for ICE gathering (late candidates are trickled), send, apply the
  // answer; null when `holder` was closed meanwhile.
  async function negotiate(m, pc, holder, buildMessage) {
    let transportId = null;
    let offerSent = false;
    const late = [];
    const forward = (c) => monitorSend(m, { type: "ice_candidate", transport_id: transportId, ...c });
    pc.addEventListener("icecandidate", ({ candidate }) => {
      if (!offerSent) return;
      const c = candidate ? { candidate: candidate.candidate, sdp_mid: candidate.sdpMid, sdp_mline_index: candidate.sdpMLineIndex } : { candidate: "" };
      if (transportId) forward(c);
      else late.push(c);
    });
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringDone(pc);
    offerSent = true;
    const answer = await monitorRequest(m, buildMessage(pc.localDescription.sdp));
    holder.transportId = answer.transport_id;
    if (holder.closed) return null;
    transportId = answer.transport_id;
    late.splice(0).forEach(forward);
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    return answer;
  }

  function addWatched(m, info) {
    if (info.participant_id === m.participantId) return;
    m.participants.set(info.participant_id, { ...info, tracks: [...(info.tracks || [])] });
    scheduleWatch(m, info.participant_id);
  }

  function removeWatched(m, participantId) {
    m.participants.delete(participantId);
    clearTimeout(m.timers.get(participantId));
    m.timers.delete(participantId);
    dropWatch(m, participantId, false);
    renderMonitor();
  }

  function scheduleWatch(m, participantId) {
    clearTimeout(m.timers.get(participantId));
    m.timers.set(participantId, setTimeout(() => {
      m.timers.delete(participantId);
      syncWatch(m, participantId);
    }, SUBSCRIBE_DEBOUNCE_MS));
  }

  // Subscribe to everything a participant publishes now (camera, microphone, screen).
  function syncWatch(m, participantId) {
    if (m !== monitor || !m.joined) return;
    const tracks = m.participants.get(participantId)?.tracks || [];
    const sub = m.subscriptions.get(participantId);
    if (!tracks.length) { dropWatch(m, participantId, true); return; }
    if (sub && tracks.every((t) => sub.trackIds.has(t.track_id))) return;
    dropWatch(m, participantId, true);
    watch(m, participantId, tracks).catch((error) => {
      if (["track_not_found", "participant_not_found", "disconnected"].includes(error.code)) return;
      monitorMessage(`Cannot watch ${watchedName(m, participantId)}: ${error.message}`, true);
    });
  }

  function watchedName(m, participantId) {
    const info = m.participants.get(participantId);
    return info?.name || info?.identity || "participant";
  }

  async function watch(m, participantId, tracks) {
    const pc = newPeerConnection(m);
    const info = m.participants.get(participantId) || {};
    const video = el("video", { autoplay: "", playsinline: "" });
    const tile = el("figure", { class: "monitor-tile", "data-participant-id": participantId },
      video, el("figcaption", {}, watchedName(m, participantId), " ", el("span", { class: "role" }, info.role ? `(${info.role})` : "")));
    $("monitor-tiles").append(tile);
    const sub = { pc, transportId: null, trackIds: new Set(tracks.map((t) => t.track_id)), tile, video, stream: new MediaStream(), closed: false };
    m.subscriptions.set(participantId, sub);
    // Several m-lines of a kind when the participant publishes several (camera and screen).
    for (const kind of ["audio", "video"]) {
      const count = tracks.filter((t) => t.kind === kind).length;
      for (let i = 0; i < count; i++) pc.addTransceiver(kind, { direction: "recvonly" });
    }
    pc.ontrack = (event) => {
      sub.stream.addTrack(event.track);
      if (video.srcObject !== sub.stream) video.srcObject = sub.stream;
      video.play().catch(() => { video.muted = true; video.play().catch(() => {}); });
    };
    try {
      const answer = await negotiate(m, pc, sub, (sdp) => ({ type: "subscribe", participant_id: participantId, sdp }));
      if (answer === null && sub.transportId) monitorSend(m, { type: "unsubscribe", transport_id: sub.transportId });
    } catch (error) {
      if (!sub.closed) dropWatch(m, participantId, true);
      throw error;
    }
  }

  function dropWatch(m, participantId, tellServer) {
    const sub = m.subscriptions.get(participantId);
    if (!sub) return;
    m.subscriptions.delete(participantId);
    sub.closed = true;
    sub.pc.close();
    sub.video.srcObject = null;
    sub.tile.remove();
    if (tellServer && sub.transportId) monitorSend(m, { type: "unsubscribe", transport_id: sub.transportId });
  }

  async function startMonitor(call) {
    if (monitor) await stopMonitor();
    const m = {
      callId: call.call_id, room: call.room, ws: null, participantId: null, joined: false, hidden: true, revealed: false,
      busy: true, message: "", leftReason: null, iceServers: [], participants: new Map(), subscriptions: new Map(),
      timers: new Map(), publisher: null, mic: null, pending: new Map(), nextRequestId: 1,
    };
    monitor = m;
    renderMonitor();
    try {
      const ws = await openMonitorSocket();
      if (m !== monitor) { ws.close(); return; }
      m.ws = ws;
      ws.onmessage = (event) => onMonitorMessage(m, event);
      ws.onclose = () => onMonitorClosed(m);
      const joined = await monitorRequest(m, { type: "join", protocol: 1, token: state.token, room: call.room, hidden: true });
      if (m !== monitor) return;
      m.participantId = joined.participant.participant_id;
      m.hidden = joined.participant.hidden !== false;
      m.iceServers = joined.ice_servers || [];
      m.joined = true;
      m.busy = false;
      (joined.participants || []).forEach((info) => addWatched(m, info));
      setStatus(`Monitoring the call with ${call.customer?.name || "the customer"}.`);
      renderMonitor();
    } catch (error) {
      if (m !== monitor) return;
      teardownMonitor(m);
      monitor = null;
      renderMonitor();
      setStatus(`Cannot monitor the call: ${error.message}`, true);
    }
  }

  async function startWhisper() {
    const m = monitor;
    if (!m?.joined || m.publisher) return;
    m.busy = true;
    renderMonitor();
    try {
      if (!navigator.mediaDevices?.getUserMedia) throw new SupervisionError("This page cannot use the microphone: it must be opened over https.");
      const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
      if (m !== monitor) { mic.getTracks().forEach((t) => t.stop()); return; }
      const pc = newPeerConnection(m);
      const publisher = { pc, transportId: null, closed: false };
      m.mic = mic;
      m.publisher = publisher;
      for (const track of mic.getAudioTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [mic] });
      const answer = await negotiate(m, pc, publisher, (sdp) => ({ type: "publish", sdp, tracks: [{ source: "microphone", name: "whisper" }] }));
      if (answer === null && publisher.transportId) monitorSend(m, { type: "unpublish", transport_id: publisher.transportId });
      m.busy = false;
      m.message = "";
      renderMonitor();
    } catch (error) {
      if (m !== monitor) return;
      closeWhisper(m);
      m.busy = false;
      monitorMessage(`Cannot whisper: ${error.message}`, true);
    }
  }

  function closeWhisper(m) {
    const publisher = m.publisher;
    m.publisher = null;
    if (publisher) {
      publisher.closed = true;
      publisher.pc.close();
    }
    m.mic?.getTracks().forEach((t) => t.stop());
    m.mic = null;
    return publisher;
  }

  function stopWhisper() {
    const m = monitor;
    if (!m) return;
    const publisher = closeWhisper(m);
    if (publisher?.transportId) monitorSend(m, { type: "unpublish", transport_id: publisher.transportId });
    m.message = "";
    renderMonitor();
  }

  async function bargeIn() {
    const m = monitor;
    if (!m?.joined || m.revealed) return;
    m.busy = true;
    renderMonitor();
    try {
      await monitorRequest(m, { type: "reveal" });
      if (m !== monitor) return;
      m.revealed = true;
      m.hidden = false;
      m.busy = false;
      m.message = "";
      renderMonitor();
      // Barging in is speaking: the customer hears the microphone from now on.
      if (!m.publisher) await startWhisper();
    } catch (error) {
      if (m !== monitor) return;
      m.busy = false;
      monitorMessage(`Cannot barge in: ${error.message}`, true);
    }
  }

  function teardownMonitor(m) {
    for (const timer of m.timers.values()) clearTimeout(timer);
    m.timers.clear();
    for (const pid of [...m.subscriptions.keys()]) dropWatch(m, pid, false);
    closeWhisper(m);
    const ws = m.ws;
    m.ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = null;
      ws.close();
    }
  }

  async function stopMonitor(text) {
    const m = monitor;
    if (!m) return;
    monitor = null;
    if (m.ws?.readyState === WebSocket.OPEN && m.joined) {
      try { await monitorRequest(m, { type: "leave" }, LEAVE_TIMEOUT_MS); } catch { /* closing anyway */ }
    }
    teardownMonitor(m);
    renderMonitor();
    if (text) setStatus(text);
  }

  async function monitorStats() {
    const m = monitor;
    if (!m) return null;
    let decodedFrames = 0;
    let audioPackets = 0;
    for (const sub of m.subscriptions.values()) {
      try {
        (await sub.pc.getStats()).forEach((s) => {
          if (s.type !== "inbound-rtp") return;
          if (s.kind === "video") decodedFrames += s.framesDecoded || 0;
          else if (s.kind === "audio") audioPackets += s.packetsReceived || 0;
        });
      } catch { /* closed meanwhile */ }
    }
    let whisperPacketsSent = 0;
    if (m.publisher) {
      try {
        (await m.publisher.pc.getStats()).forEach((s) => {
          if (s.type === "outbound-rtp" && s.kind === "audio") whisperPacketsSent += s.packetsSent || 0;
        });
      } catch { /* closed meanwhile */ }
    }
    return {
      callId: m.callId,
      room: m.room,
      joined: m.joined,
      participantId: m.participantId,
      hidden: m.hidden,
      subscribed: [...m.subscriptions.entries()].filter(([, sub]) => sub.transportId).map(([pid]) => pid),
      decodedFrames,
      audioPackets,
      whispering: Boolean(m.publisher?.transportId),
      whisperPacketsSent,
      revealed: m.revealed,
    };
  }

  $("monitor-stop").addEventListener("click", () => stopMonitor("Stopped monitoring."));
  window.addEventListener("pagehide", () => {
    if (monitor) monitorSend(monitor, { type: "leave" });
  });

  window.teller = {
    state,
    stats: async () => ({
      queues: state.queues,
      agents: state.agents.map((a) => ({ agent_id: a.agent_id, state: a.state })),
      live: state.live.map((c) => c.call_id),
      monitor: await monitorStats(),
    }),
  };
  init();
})();
