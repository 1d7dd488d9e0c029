// Teller agent desk: log in, take calls offered by routing, talk with the customer
// by video, push material, ask for confirmations, transfer, hang up and wrap up.
//
// REST: docs/contact-centre.md. Media: signalling protocol 1 (docs/protocol.md) through
// /static/teller-client.js, which also resumes a lost connection: camera and microphone
// go out on one publication, each other participant comes in on a subscription of its
// own. Data messages (material, pointer, confirm_request / confirm_done) go over the socket.
"use strict";

(() => {
  const POLL_MS = 1000;
  const POINTER_INTERVAL_MS = 100;

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const lang = params.get("lang") || "en";

  const state = {
    token: params.get("token") || null,
    agentId: null,
    agent: null,
    callId: null,
    call: null,
    callState: null,
    business: null,
    catalogue: new Map(),
    offer: null, // call id of the offer on screen
    inRoom: false,
    localStream: null,
    publisher: null, // the client's publication of camera and microphone
    subscriptions: new Map(), // participant_id -> the client's subscription, with its view
    get participants() { return client.participants; },
    lastConfirmation: null,
    pointing: false,
    lastPointer: 0,
    material: null,
    uploaded: [], // pages of uploaded PDFs and images, pushable as "image" material
    pollTimer: null,
  };

  const SLIDES = () => {
    const b = state.business;
    const name = b ? b.name : "Our service";
    return [
      { id: "risk", kind: "slide", title: "Before we start: risks", bullets: [b?.script?.risk_prompt || "Please listen to the risk notice."].filter(Boolean) },
      { id: "product", kind: "slide", title: name, bullets: ["What it is and who it is for", "Fees and limits", "How to cancel"] },
      { id: "fraud", kind: "slide", title: "Stay safe", bullets: [b?.script?.anti_fraud || "We never ask for your PIN or passwords."] },
    ];
  };

  class DeskError extends Error {
    constructor(message, code = "") { super(message); this.code = code; }
  }

  function setStatus(text, isError = false) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  // -- REST ------------------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = {};
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new DeskError("Cannot reach the server.", "unreachable");
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = data.error || {};
      throw new DeskError(error.message || `The server refused (${response.status}).`, error.code);
    }
    return data;
  }

  async function loadCatalogue() {
    try {
      const body = await api("GET", `/v1/catalogue?lang=${encodeURIComponent(lang)}`);
      for (const b of body.businesses) state.catalogue.set(b.id, b);
    } catch (error) {
      setStatus(`Cannot load the businesses: ${error.message}`, true);
    }
  }

  async function login(event) {
    event?.preventDefault();
    try {
      if (!state.token) {
        const name = $("agent-name").value.trim() || "Agent";
        const body = await api("POST", "/v1/dev/agent", { name });
        state.token = body.token;
        state.agentId = body.agent_id;
      }
      await loadCatalogue();
      state.agent = await api("GET", "/v1/agents/me");
      state.agentId = state.agent.agent_id;
      $("login-form").hidden = true;
      $("agent-bar").hidden = false;
      $("agent-label").textContent = `${state.agent.name || state.agentId} (${state.agentId})`;
      setStatus("Logged in. Set yourself Available to take calls.");
      render();
      poll();
    } catch (error) {
      state.token = params.get("token") || null;
      setStatus(`Cannot log in: ${error.message}`, true);
    }
  }

  async function setState(event) {
    event?.preventDefault();
    const value = $("state-select").value;
    const reason = $("away-reason").value.trim();
    try {
      state.agent = await api("POST", "/v1/agents/me/state", value === "away" && reason ? { state: value, reason } : { state: value });
      setStatus(`You are ${state.agent.state}.`);
      render();
    } catch (error) {
      setStatus(`Cannot change state: ${error.message}`, true);
    }
  }

  async function poll() {
    clearTimeout(state.pollTimer);
    try {
      state.agent = await api("GET", "/v1/agents/me");
      await onAgent();
    } catch (error) {
      setStatus(`Lost the server: ${error.message}`, true);
    }
    state.pollTimer = setTimeout(poll, POLL_MS);
  }

  async function onAgent() {
    const agent = state.agent;
    if (agent.state === "ringing" && agent.offered_call) {
      if (state.offer !== agent.offered_call) {
        state.offer = agent.offered_call;
        try {
          const call = await api("GET", `/v1/calls/${agent.offered_call}`);
          showOffer(call);
        } catch (error) {
          setStatus(`Cannot read the call: ${error.message}`, true);
        }
      } else if (state.offerCall) {
        showWait(state.offerCall);
      }
    } else {
      state.offer = null;
      state.offerCall = null;
    }
    if (state.callId) {
      try {
        state.call = await api("GET", `/v1/calls/${state.callId}`);
        state.callState = state.call.state;
      } catch { /* kept from the last poll */ }
      if (state.callState !== "connected" && state.inRoom) {
        leaveRoom();
        setStatus("The call ended.");
      }
    }
    render();
  }

  function businessOf(call) {
    return state.catalogue.get(call.business) || { id: call.business, name: call.business, script: {}, steps: [] };
  }

  function showWait(call) {
    const waited = Math.max(0, Date.now() / 1000 - call.queued_at);
    $("in-wait").textContent = `${Math.round(waited)} s`;
  }

  function showOffer(call) {
    state.offerCall = call;
    $("in-business").textContent = businessOf(call).name;
    $("in-customer").textContent = call.customer?.name || call.customer?.identity || "Customer";
    $("in-channel").textContent = call.channel || "";
    showWait(call);
    setStatus("Incoming call: press Accept (A) or Decline (D).");
    render();
    $("accept").focus();
  }

  async function accept() {
    const callId = state.offer;
    if (!callId) return;
    try {
      const call = await api("POST", `/v1/calls/${callId}/accept`);
      state.offer = null;
      state.offerCall = null;
      state.callId = callId;
      state.call = call;
      state.callState = call.state;
      state.business = businessOf(call);
      state.lastConfirmation = null;
      showCall(call);
      render();
      await joinRoom(call.token);
    } catch (error) {
      setStatus(`Cannot take the call: ${error.message}`, true);
    }
  }

  async function decline() {
    const callId = state.offer;
    if (!callId) return;
    try {
      await api("POST", `/v1/calls/${callId}/decline`);
      state.offer = null;
      state.offerCall = null;
      setStatus("Call declined.");
      render();
    } catch (error) {
      setStatus(`Cannot decline: ${error.message}`, true);
    }
  }

  async function hangUp() {
    if (!state.callId || state.callState !== "connected") return;
    try {
      state.call = await api("DELETE", `/v1/calls/${state.callId}`);
      state.callState = state.call.state;
      leaveRoom();
      setStatus("Call ended. Please wrap up.");
      state.agent = await api("GET", "/v1/agents/me");
      render();
      $("wrapup-code").focus();
    } catch (error) {
      setStatus(`Cannot hang up: ${error.message}`, true);
    }
  }

  async function wrapUp(event) {
    event.preventDefault();
    try {
      state.agent = await api("POST", "/v1/agents/me/wrap-up", { code: $("wrapup-code").value, notes: $("wrapup-notes").value });
      $("wrapup-notes").value = "";
      state.callId = null;
      state.call = null;
      state.callState = null;
      setStatus(`Wrap-up saved. You are ${state.agent.state}.`);
      render();
    } catch (error) {
      setStatus(`Cannot save the wrap-up: ${error.message}`, true);
    }
  }

  async function transfer(event) {
    event.preventDefault();
    const target = $("transfer-target").value.trim();
    const body = $("transfer-agent").checked ? { agent_id: target } : { skill: target };
    body.warm = $("transfer-warm").checked;
    try {
      await api("POST", `/v1/calls/${state.callId}/transfer`, body);
      setStatus(body.warm ? "Warm transfer started: stay until the other agent joins." : "Transfer requested.");
    } catch (error) {
      setStatus(`Cannot transfer: ${error.message}`, true);
    }
  }

  async function invite(event) {
    event.preventDefault();
    try {
      await api("POST", `/v1/calls/${state.callId}/invite`, { agent_id: $("invite-target").value.trim() });
      setStatus("Invitation sent.");
    } catch (error) {
      setStatus(`Cannot invite: ${error.message}`, true);
    }
  }

  async function requestConfirmation(event) {
    event.preventDefault();
    try {
      const confirmation = await api("POST", `/v1/calls/${state.callId}/confirmations`, {
        what: $("confirm-what").value.trim(),
        amount: $("confirm-amount").value.trim(),
        account: $("confirm-account").value.trim(),
      });
      state.lastConfirmation = { ...confirmation, status: "waiting" };
      sendData("confirm_request", confirmation);
      $("confirm-status").textContent = `Waiting for the customer: ${confirmation.what} ${confirmation.amount} to ${confirmation.account_masked}`;
      $("confirm-status").className = "";
    } catch (error) {
      $("confirm-status").textContent = `Cannot ask: ${error.message}`;
      $("confirm-status").className = "error";
    }
  }

  function onConfirmDone(payload) {
    if (!payload || !state.lastConfirmation || payload.request_id !== state.lastConfirmation.request_id) return;
    const accepted = payload.accepted === true;
    state.lastConfirmation = { ...state.lastConfirmation, status: accepted ? "confirmed" : "refused" };
    $("confirm-status").textContent = accepted ? "The customer confirmed." : "The customer refused.";
    $("confirm-status").className = accepted ? "ok" : "error";
  }

  // -- call screen -----------------------------------------------------------------------

  function fill(list, items) {
    list.replaceChildren(...items.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
  }

  function showCall(call) {
    const b = state.business;
    $("call-business").textContent = b.name;
    $("call-customer").textContent = call.customer?.name || "Customer";
    $("customer-name").textContent = call.customer?.name || "Customer";
    $("script-risk").textContent = b.script?.risk_prompt || "—";
    fill($("script-identity"), b.script?.identity_questions || []);
    $("script-antifraud").textContent = b.script?.anti_fraud || "—";
    $("script-steps").replaceChildren(...(b.steps || []).map((step) => {
      const li = document.createElement("li");
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = step;
      label.append(box, ` ${step.replaceAll("_", " ")}`);
      li.append(label);
      return li;
    }));
    $("confirm-status").textContent = "";
    const select = $("slide-select");
    select.replaceChildren(...materials().map((slide) => new Option(slide.title, slide.id)));
    previewMaterial();
  }

  // Built-in slides, then the pages of what this agent uploaded (kind "image").
  function materials() {
    return [...SLIDES(), ...state.uploaded];
  }

  function currentMaterial() {
    const text = $("material-text").value.trim();
    if (text) return { id: `text-${Date.now()}`, kind: "text", text };
    return materials().find((s) => s.id === $("slide-select").value) || SLIDES()[0];
  }

  // A PDF is rendered to page images by the server, so the customer's screen only
  // ever shows an image; each page becomes a choice in the slide list.
  async function uploadMaterial() {
    const file = $("material-file").files[0];
    if (!file) return;
    setStatus(`Uploading ${file.name}…`);
    let response;
    try {
      response = await fetch("/v1/materials", {
        method: "POST",
        headers: { Authorization: `Bearer ${state.token}`, "Content-Type": file.type || "application/octet-stream" },
        body: file,
      });
    } catch {
      setStatus("Cannot reach the server.", true);
      return;
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      setStatus(data.error?.message || `The upload was refused (${response.status}).`, true);
      return;
    }
    const pages = data.pages.map((page) => ({
      id: `${data.material_id}-${page.page}`,
      kind: "image",
      title: data.pages.length > 1 ? `${file.name} — page ${page.page}` : file.name,
      url: page.url,
    }));
    state.uploaded.push(...pages);
    const select = $("slide-select");
    for (const page of pages) select.append(new Option(page.title, page.id));
    select.value = pages[0].id;
    $("material-file").value = "";
    previewMaterial();
    setStatus(`${file.name}: ${pages.length} page(s) ready to push.`);
  }

  function previewMaterial() {
    const m = currentMaterial();
    const image = $("preview-image");
    image.hidden = m.kind !== "image";
    if (m.kind === "image") image.src = m.url;
    else image.removeAttribute("src");
    $("preview-title").textContent = m.kind === "image" ? "" : m.title || "";
    fill($("preview-bullets"), m.bullets || []);
    $("preview-text").textContent = m.text || "";
  }

  function pushMaterial() {
    const m = currentMaterial();
    state.material = m;
    sendData("material", m);
    setStatus(`Showing "${m.title || "text"}" to the customer.`);
  }

  function togglePointer() {
    state.pointing = !state.pointing;
    $("point").setAttribute("aria-pressed", String(state.pointing));
    if (!state.pointing) {
      $("pointer-dot").hidden = true;
      sendData("pointer", null);
    }
  }

  function movePointer(event) {
    if (!state.pointing) return;
    const now = Date.now();
    if (now - state.lastPointer < POINTER_INTERVAL_MS) return;
    state.lastPointer = now;
    const box = $("material-preview").getBoundingClientRect();
    const x = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    const y = Math.min(1, Math.max(0, (event.clientY - box.top) / box.height));
    const dot = $("pointer-dot");
    dot.hidden = false;
    dot.style.left = `${x * 100}%`;
    dot.style.top = `${y * 100}%`;
    sendData("pointer", { x: Math.round(x * 1000) / 1000, y: Math.round(y * 1000) / 1000 });
  }

  function render() {
    const agent = state.agent;
    if (agent) {
      $("agent-state").textContent = agent.reason ? `${agent.state} (${agent.reason})` : agent.state;
      $("state-time").textContent = agent.state_since ? `for ${formatDuration(Date.now() / 1000 - agent.state_since)}` : "";
    }
    const ringing = Boolean(state.offer && state.offerCall);
    $("incoming").hidden = !ringing;
    $("call").hidden = !(state.callId && state.callState === "connected");
    $("wrapup").hidden = !(agent && agent.state === "wrap_up");
    if (state.call && state.call.answered_at && state.callState === "connected") {
      $("talk-time").textContent = formatDuration(Date.now() / 1000 - state.call.answered_at);
    }
  }

  function formatDuration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  // -- signalling and media (/static/teller-client.js) -----------------------------------

  const CLIENT_TEXT = {
    unreachable: "Cannot reach the call server.",
    timeout: "The call server did not answer in time.",
    disconnected: "Not connected to the call.",
  };
  const client = new TellerClient({ text: (code) => CLIENT_TEXT[code] });

  client
    .on("participant_joined", (m) => { if (m.participant.tracks?.length) scheduleSync(m.participant.participant_id); })
    .on("participant_left", (m) => dropSubscription(m.participant_id, false))
    .on("track_published", (m) => scheduleSync(m.participant_id))
    .on("track_unpublished", (m) => scheduleSync(m.participant_id))
    .on("transport_closed", ({ subscription }) => {
      if (subscription && state.subscriptions.get(subscription.participantId) === subscription) {
        dropSubscription(subscription.participantId, false);
      }
    })
    .on("data", (m) => { if (m.topic === "confirm_done") onConfirmDone(m.payload); })
    .on("error", (m) => { if (m.code !== "transport_not_found") setStatus(m.message, true); })
    .on("reconnecting", () => setStatus("Reconnecting to the call…"))
    .on("resumed", () => {
      // After a move the client closed the subscriptions: subscribe again as tracks appear.
      for (const participantId of client.participants.keys()) scheduleSync(participantId);
    })
    .on("restored", ({ missing }) => {
      if (missing.length) setStatus("The customer's video did not come back.", true);
      else setStatus("In the call.");
    })
    .on("closed", () => { if (state.callState === "connected") setStatus("The connection to the call was lost.", true); });

  function sendData(topic, payload) {
    client.sendData(payload, topic);
  }

  async function startLocalMedia() {
    for (const constraints of [{ audio: true, video: true }, { video: true }, { audio: true }]) {
      try {
        return await navigator.mediaDevices.getUserMedia(constraints);
      } catch { /* try less */ }
    }
    setStatus("No camera or microphone: the customer will not see or hear you.", true);
    return new MediaStream();
  }

  async function joinRoom(token) {
    setStatus("Connecting to the customer…");
    state.inRoom = true;
    state.localStream = await startLocalMedia();
    $("local-video").srcObject = state.localStream;
    await client.join(token);
    for (const info of client.participants.values()) if (info.tracks.length) scheduleSync(info.participant_id);
    state.publisher = client.publish(state.localStream);
    await state.publisher.ready;
    setStatus("In the call.");
  }

  const syncTimers = new Map();
  function scheduleSync(participantId) {
    clearTimeout(syncTimers.get(participantId));
    syncTimers.set(participantId, setTimeout(() => syncSubscription(participantId), 200));
  }

  function syncSubscription(participantId) {
    if (client.phase !== "joined") return;
    const tracks = client.participants.get(participantId)?.tracks || [];
    const sub = state.subscriptions.get(participantId);
    if (!tracks.length) { dropSubscription(participantId, true); return; }
    if (sub && tracks.every((t) => sub.trackIds.has(t.track_id))) return;
    dropSubscription(participantId, true);
    subscribe(participantId, tracks).catch((error) => {
      if (["track_not_found", "participant_not_found", "disconnected"].includes(error.code)) return;
      setStatus(`Cannot show the other side: ${error.message}`, true);
    });
  }

  function videoFor(participantId) {
    const info = client.participants.get(participantId);
    if (info?.role === "customer") return { video: $("customer-video"), own: false };
    const figure = document.createElement("figure");
    figure.className = "other";
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    const caption = document.createElement("figcaption");
    caption.textContent = info?.name || info?.identity || "Guest";
    figure.append(video, caption);
    $("others").append(figure);
    return { video, own: true, figure };
  }

  // Whoever closes the subscription (this page, a failure, a move to another node), its view goes.
  function subscribe(participantId, tracks) {
    const view = videoFor(participantId);
    const sub = client.subscribe(participantId, tracks, {
      onTrack: () => {
        view.video.srcObject = sub.stream;
        view.video.play?.().catch(() => {});
      },
      onClose: () => {
        if (state.subscriptions.get(participantId) === sub) state.subscriptions.delete(participantId);
        if (view.own) view.figure.remove();
        else if (view.video.srcObject === sub.stream) view.video.srcObject = null;
      },
    });
    state.subscriptions.set(participantId, sub);
    return sub.ready;
  }

  function dropSubscription(participantId, tellServer) {
    state.subscriptions.get(participantId)?.close(tellServer);
  }

  function leaveRoom() {
    state.inRoom = false;
    client.close(); // says `leave`, closes the peer connections
    for (const participantId of [...state.subscriptions.keys()]) dropSubscription(participantId, false);
    state.publisher = null;
    state.localStream?.getTracks().forEach((t) => t.stop());
    state.localStream = null;
    $("local-video").srcObject = null;
    state.pointing = false;
    $("point").setAttribute("aria-pressed", "false");
  }

  // -- test hook -------------------------------------------------------------------------

  async function stats() {
    let decodedFrames = 0;
    for (const [participantId, sub] of state.subscriptions) {
      if (client.participants.get(participantId)?.role !== "customer") continue;
      try {
        const report = await sub.pc.getStats();
        report.forEach((s) => {
          if (s.type === "inbound-rtp" && s.kind === "video") decodedFrames += s.framesDecoded || 0;
        });
      } catch { /* closed meanwhile */ }
    }
    return {
      agentId: state.agentId,
      state: state.agent?.state || null,
      callId: state.callId,
      callState: state.callState,
      decodedFrames,
      lastConfirmation: state.lastConfirmation,
    };
  }

  // -- start -----------------------------------------------------------------------------

  function typing(target) {
    return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement;
  }

  function init() {
    $("login-form").addEventListener("submit", login);
    $("state-form").addEventListener("submit", setState);
    $("accept").addEventListener("click", accept);
    $("decline").addEventListener("click", decline);
    $("hangup").addEventListener("click", hangUp);
    $("wrapup-form").addEventListener("submit", wrapUp);
    $("transfer-form").addEventListener("submit", transfer);
    $("invite-form").addEventListener("submit", invite);
    $("confirm-form").addEventListener("submit", requestConfirmation);
    $("push").addEventListener("click", pushMaterial);
    $("material-file").addEventListener("change", uploadMaterial);
    $("point").addEventListener("click", togglePointer);
    $("slide-select").addEventListener("change", previewMaterial);
    $("material-text").addEventListener("input", previewMaterial);
    $("material-preview").addEventListener("mousemove", movePointer);
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
      const key = event.key.toLowerCase();
      if (key === "a" && !$("incoming").hidden) accept();
      else if (key === "d" && !$("incoming").hidden) decline();
      else if (key === "h" && !$("call").hidden) hangUp();
      else return;
      event.preventDefault();
    });
    window.addEventListener("pagehide", () => leaveRoom());
    if (state.token) login();
  }

  window.teller = { state, stats };
  init();
})();
