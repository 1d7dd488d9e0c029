// Teller supervisor wallboard: queues, agents by state, live sessions (REST only,
// docs/contact-centre.md), refreshed every two seconds; a supervisor can end a
// non-compliant session.
"use strict";

(() => {
  const POLL_MS = 2000;
  const STATES = ["available", "ringing", "busy", "wrap_up", "away", "offline"];
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const lang = params.get("lang") || "en";
  const state = { token: params.get("token") || null, queues: {}, agents: [], live: [], waiting: [], businesses: new Map(), timer: null };

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
      const later = ["Monitor", "Whisper", "Barge in"].map((label) =>
        el("button", { type: "button", disabled: "", title: "Coming soon: needs server support" }, `${label} (soon)`));
      return el("tr", { "data-call-id": call.call_id },
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

  window.teller = {
    state,
    stats: () => ({ queues: state.queues, agents: state.agents.map((a) => ({ agent_id: a.agent_id, state: a.state })), live: state.live.map((c) => c.call_id) }),
  };
  init();
})();
