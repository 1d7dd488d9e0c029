// Teller supervisor wallboard: queues, agents by state, live sessions (REST,
// docs/contact-centre.md), refreshed every two seconds; a supervisor can end a
// non-compliant session, and supervise a live one over the signalling WebSocket
// (docs/protocol.md, "Monitoring, whisper, barge-in") through /static/teller-client.js,
// which also resumes a dropped connection: Monitor joins the call's room
// hidden and subscribes to everyone, Whisper publishes the microphone (only staff can
// receive it), Barge in reveals the supervisor to the customer, Stop leaves.
// Live quality and risk cues (fraud coaching, abusive or unlawful talk: `risk` in the list)
// mark the sessions that need a supervisor first; the monitored call shows its risk alerts
// and live captions as the server sends them (`speech.risk`, `speech.caption`).
"use strict";

(() => {
  const POLL_MS = 2000;
  const SUBSCRIBE_DEBOUNCE_MS = 200;
  const STATES = ["available", "ringing", "busy", "wrap_up", "away", "offline"];
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const STATS_COLUMNS = ["group", "requests", "connected", "abandoned", "overflowed", "businesses_done", "avg_wait_s", "max_wait_s", "avg_talk_s", "avg_handle_s"];

  // All UI text, per language (like the customer page). English unless ?lang=zh or the
  // switch says otherwise; another language is one more entry here (and a button).
  const STRINGS = {
    zh: {
      htmlLang: "zh-CN", title: "Teller 监控大屏", language: "语言", connecting: "正在连接…",
      queues: "队列", agents: "坐席", live: "进行中的会话", business: "业务", customer: "客户", agent: "坐席",
      talkTime: "通话时长", actions: "操作", noLive: "暂无进行中的会话。", monitoring: "正在监听", stopMonitoring: "停止监听",
      waitingCalls: "等待中的来电", state: "状态", waiting: "等待", statistics: "运营统计", groupBy: "分组方式",
      by_hour: "按小时", by_day: "按天", by_business: "按业务", by_agent: "按坐席", downloadCsv: "下载 CSV",
      col_group: "分组", col_requests: "请求数", col_connected: "接通数", col_abandoned: "放弃数", col_overflowed: "溢出数",
      col_businesses_done: "办结业务数", col_avg_wait_s: "平均等待", col_max_wait_s: "最长等待", col_avg_talk_s: "平均通话",
      col_avg_handle_s: "平均处理", noStats: "该时段没有来电。", noAgent: "（无）",
      state_available: "空闲", state_ringing: "振铃中", state_busy: "通话中", state_wrap_up: "话后整理", state_away: "离开", state_offline: "离线",
      state_queued: "排队中", queueLabel: "队列 {skill}", waitingSuffix: " 人等待", longestWait: "最长等待 {d}",
      answeredAbandoned: "已接听 {a} · 已放弃 {b}", serviceLevel: "服务水平 ",
      forceEnd: "强制结束", forceEndLabel: "强制结束与{who}的通话", theCustomer: "客户", customerWord: "客户",
      forceEndPrompt: "结束{who}的通话？原因：", defaultReason: "违规", callEnded: "通话已结束。", cannotEnd: "无法结束通话：{error}",
      theCallEnded: "通话已结束。", updated: "已更新 {time}", cannotRefresh: "无法刷新：{error}", cannotLogIn: "无法登录：{error}",
      refused: "服务器拒绝了请求（{status}）。", unreachable: "无法连接服务器。", stop: "停止", stopLabel: "停止监听与{who}的通话", stoppedMonitoring: "已停止监听。",
      monitor: "监听", monitorLabel: "监听与{who}的通话", stopWhisperLabel: "停止对{who}的坐席耳语", whisperLabel: "对{who}的坐席耳语",
      onlyAgentHears: "只有坐席能听到您", monitorFirst: "请先监听该通话", stopWhisper: "停止耳语", whisper: "耳语",
      bargeLabel: "强插与{who}的通话", customerWillSee: "客户将能看到并听到您", bargeIn: "强插",
      joining: "正在加入…", barged: "您已强插：客户能看到并听到您。", whispering: "耳语中：只有坐席能听到您，客户看不到您。",
      watching: "隐身监听中：客户看不到您。", notConnected: "未连接到通话。", callTimeout: "通话服务器未及时响应。",
      callUnreachable: "无法连接通话服务器。", monitoringEnded: "监听已结束（{reason}）。",
      monitoredLost: "与被监听通话的连接已断开。", cannotWatch: "无法观看{who}：{error}", participant: "参与者",
      monitoringCall: "正在监听与{who}的通话。", cannotMonitor: "无法监听通话：{error}",
      noMic: "此页面无法使用麦克风：必须通过 https 打开。", cannotWhisper: "无法耳语：{error}", cannotBarge: "无法强插：{error}",
      cannotStats: "无法加载统计：{error}", downloaded: "已下载 {name}。", cannotDownload: "无法下载 CSV：{error}",
      role_customer: "客户", role_agent: "坐席", role_supervisor: "主管",
      quality: "质量", qualityLabel: "通话质量：{level}", worstMos: "最低 MOS {mos}", alertCount: "{n} 条质量告警：{list}",
      risk: "风险", fraudRisk: "诈骗风险", contentRisk: "内容风险", riskNone: "未发现风险",
      riskLabel: "{kind}（{severity}）：{n} 次。最近：“{phrase}”（{who}）。建议：{advice}", riskAdvice: "建议：{advice}",
      severity_critical: "严重", severity_warning: "警告", riskAlerts: "风险提示", captions: "实时字幕",
      role_service: "语音播报", partialCaption: "（识别中）",
      skill_cards: "信用卡", skill_loans: "贷款", skill_payments: "支付结算", skill_pensions: "养老金", skill_service: "综合服务", skill_wealth: "财富管理",
    },
    en: {
      htmlLang: "en", title: "Teller wallboard", language: "Language", connecting: "Connecting…",
      queues: "Queues", agents: "Agents", live: "Live sessions", business: "Business", customer: "Customer", agent: "Agent",
      talkTime: "Talk time", actions: "Actions", noLive: "No live sessions.", monitoring: "Monitoring", stopMonitoring: "Stop monitoring",
      waitingCalls: "Waiting calls", state: "State", waiting: "Waiting", statistics: "Statistics", groupBy: "Group by",
      by_hour: "By hour", by_day: "By day", by_business: "By business", by_agent: "By agent", downloadCsv: "Download CSV",
      col_group: "Group", col_requests: "Requests", col_connected: "Connected", col_abandoned: "Abandoned", col_overflowed: "Overflowed",
      col_businesses_done: "Businesses done", col_avg_wait_s: "Avg wait", col_max_wait_s: "Max wait", col_avg_talk_s: "Avg talk",
      col_avg_handle_s: "Avg handle", noStats: "No calls in this period.", noAgent: "(none)",
      state_available: "available", state_ringing: "ringing", state_busy: "busy", state_wrap_up: "wrap up", state_away: "away", state_offline: "offline",
      state_queued: "queued", queueLabel: "Queue {skill}", waitingSuffix: " waiting", longestWait: "Longest wait {d}",
      answeredAbandoned: "Answered {a} · Abandoned {b}", serviceLevel: "Service level ",
      forceEnd: "Force end", forceEndLabel: "Force end call with {who}", theCustomer: "the customer", customerWord: "customer",
      forceEndPrompt: "End the call of {who}? Reason:", defaultReason: "non-compliant", callEnded: "Call ended.", cannotEnd: "Cannot end the call: {error}",
      theCallEnded: "The call ended.", updated: "Updated {time}", cannotRefresh: "Cannot refresh: {error}", cannotLogIn: "Cannot log in: {error}",
      refused: "The server refused ({status}).", unreachable: "Cannot reach the server.", stop: "Stop", stopLabel: "Stop monitoring the call with {who}", stoppedMonitoring: "Stopped monitoring.",
      monitor: "Monitor", monitorLabel: "Monitor the call with {who}", stopWhisperLabel: "Stop whispering to the agent of {who}", whisperLabel: "Whisper to the agent of {who}",
      onlyAgentHears: "Only the agent hears you", monitorFirst: "Monitor the call first", stopWhisper: "Stop whisper", whisper: "Whisper",
      bargeLabel: "Barge in on the call with {who}", customerWillSee: "The customer will see and hear you", bargeIn: "Barge in",
      joining: "Joining…", barged: "You barged in: the customer sees and hears you.", whispering: "Whispering: only the agent hears you; the customer does not see you.",
      watching: "Watching unseen: the customer does not see you.", notConnected: "Not connected to the call.", callTimeout: "The call server did not answer in time.",
      callUnreachable: "Cannot reach the call server.", monitoringEnded: "Monitoring ended ({reason}).",
      monitoredLost: "The connection to the monitored call was lost.", cannotWatch: "Cannot watch {who}: {error}", participant: "participant",
      monitoringCall: "Monitoring the call with {who}.", cannotMonitor: "Cannot monitor the call: {error}",
      noMic: "This page cannot use the microphone: it must be opened over https.", cannotWhisper: "Cannot whisper: {error}", cannotBarge: "Cannot barge in: {error}",
      cannotStats: "Cannot load the statistics: {error}", downloaded: "Downloaded {name}.", cannotDownload: "Cannot download the CSV: {error}",
      role_customer: "customer", role_agent: "agent", role_supervisor: "supervisor",
      quality: "Quality", qualityLabel: "Call quality: {level}", worstMos: "worst MOS {mos}", alertCount: "{n} quality alert(s): {list}",
      risk: "Risk", fraudRisk: "Fraud risk", contentRisk: "Content risk", riskNone: "No risk heard",
      riskLabel: "{kind} ({severity}): {n} hit(s). Last: “{phrase}” ({who}). Advice: {advice}", riskAdvice: "Advice: {advice}",
      severity_critical: "critical", severity_warning: "warning", riskAlerts: "Risk alerts", captions: "Live captions",
      role_service: "voice prompts", partialCaption: " (hearing…)",
    },
  };
  const texts = TellerPage.texts(TellerPage.withQuality(STRINGS), params.get("lang"));
  const { t, tOr } = texts;
  const state = {
    token: params.get("token") || null, queues: {}, agents: [], live: [], waiting: [], stats: [], businesses: new Map(), timer: null,
    // Calls in which a critical risk cue was heard (the list's `risk.last` says only the latest).
    critical: new Set(),
  };
  // The call being supervised (null when none): see "Supervision" below.
  let monitor = null;

  function setStatus(text, isError = false) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  const api = TellerPage.api({ token: () => state.token, text: t });

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
      const tile = el("article", { class: `tile${q.waiting ? " busy" : ""}`, "data-skill": skill, "aria-label": t("queueLabel", { skill }) },
        el("h3", {}, tOr(`skill_${skill}`, skill)),
        el("p", { class: "big" }, el("span", { class: "waiting" }, String(q.waiting)), t("waitingSuffix")),
        el("p", {}, t("longestWait", { d: duration(q.longest_wait_s || 0) })),
        el("p", {}, t("answeredAbandoned", { a: q.answered, b: q.abandoned })),
        el("p", {}, t("serviceLevel"), el("strong", { class: "service-level" }, level)));
      return tile;
    });
    $("queues").replaceChildren(...tiles);
  }

  function renderAgents() {
    const groups = STATES.map((s) => {
      const agents = state.agents.filter((a) => a.state === s);
      return el("article", { class: `group state-${s}`, "data-state": s },
        el("h3", {}, `${tOr(`state_${s}`, s)} (${agents.length})`),
        el("ul", {}, ...agents.map((a) => el("li", { "data-agent-id": a.agent_id },
          `${a.name || a.agent_id}${a.reason ? ` (${a.reason})` : ""} `, el("span", { class: "since" }, duration(now() - (a.state_since || now())))))));
    });
    $("agents").replaceChildren(...groups);
  }

  function agentName(id) {
    const agent = state.agents.find((a) => a.agent_id === id);
    return agent?.name || id || "—";
  }

  // -- Live quality (GET /v1/calls: `quality` on a connected call, docs/quality.md) ---------

  const LEVEL_RANK = { poor: 0, fair: 1, good: 2 };
  const levelOf = (call) => (call.quality && call.quality.level in LEVEL_RANK ? call.quality.level : "unknown");

  function alertText(alert) {
    const kind = String(alert.kind || "");
    if (!tOr(`alert_${kind}`, null)) return String(alert.message || kind);
    const participant = (alert.participant_id && alert.quality_participants?.find((p) => p.participant_id === alert.participant_id)) || null;
    const whose = alert.role === "customer" ? t("whose_customer")
      : t("whose_other", { name: participant?.name || alert.identity || tOr(`role_${alert.role}`, alert.role || "") });
    const v = alert.values || {};
    const round = (x, digits = 0) => (typeof x === "number" ? x.toFixed(digits) : "–");
    return t(`alert_${kind}`, {
      whose, rtt: round(v.rtt_ms), jitter: round(v.jitter_ms), mos: round(v.mos, 1), frozen: round(v.frozen_s), fps: round(v.fps),
    });
  }

  // The level badge, the worst MOS, and the alerts now raised: a count whose title (and
  // accessible name) lists them, and the list itself under a poor session.
  function qualityCell(call) {
    const q = call.quality;
    const level = levelOf(call);
    const cell = el("td", { class: "quality", "data-column": "quality", "data-level": level });
    if (!q) {
      cell.append(el("span", { class: "quality-badge", "data-level": "unknown", "aria-label": t("qualityLabel", { level: t("level_unknown") }) }, t("level_unknown")));
      return cell;
    }
    cell.append(el("span", { class: "quality-badge", "data-level": level, "aria-label": t("qualityLabel", { level: t(`level_${level}`) }) }, t(`level_${level}`)));
    if (typeof q.mos_min === "number") cell.append(el("span", { class: "mos", title: t("worstMos", { mos: q.mos_min.toFixed(1) }) }, `MOS ${q.mos_min.toFixed(1)}`));
    const alerts = Array.isArray(q.alerts) ? q.alerts : [];
    if (alerts.length) {
      const messages = alerts.map((a) => alertText({ ...a, quality_participants: q.participants }));
      const label = t("alertCount", { n: alerts.length, list: messages.join("; ") });
      cell.append(el("span", {
        class: "alert-count", tabindex: "0", role: "img", title: messages.join("\n"), "aria-label": label,
        "data-count": String(alerts.length), "data-severity": alerts.some((a) => a.severity === "critical") ? "critical" : "warning",
      }, `⚠ ${alerts.length}`));
      if (level === "poor") cell.append(el("ul", { class: "alert-list" }, ...messages.map((m, i) => el("li", { "data-kind": alerts[i].kind || "" }, m))));
    }
    return cell;
  }

  // -- Live risk (GET /v1/calls: `risk` on a connected call in which a risk cue was heard) ---

  const riskOf = (call) => (call.risk && Number(call.risk.hits) > 0 ? call.risk : null);
  const riskSeverity = (call) => {
    const risk = riskOf(call);
    if (!risk) return "none";
    return risk.last?.severity === "critical" || state.critical.has(call.call_id) ? "critical" : "warning";
  };
  const riskKind = (risk) => ((risk.categories || []).includes("fraud_coaching") || risk.last?.category === "fraud_coaching" ? "fraud" : "content");
  const adviceText = (advice) => (advice && typeof advice === "object" ? advice[texts.lang] || advice.en || Object.values(advice)[0] || "" : String(advice || ""));

  // A badge (fraud or content risk, red when critical) with the count; its title and
  // accessible name say the last phrase, who said it, and the advice to the agent.
  function riskCell(call) {
    const risk = riskOf(call);
    const severity = riskSeverity(call);
    const cell = el("td", { class: "risk", "data-column": "risk", "data-severity": severity });
    if (!risk) {
      cell.append(el("span", { class: "risk-none", role: "img", "aria-label": t("riskNone"), title: t("riskNone") }, "—"));
      return cell;
    }
    const kind = riskKind(risk);
    const last = risk.last || {};
    const advice = adviceText(last.advice);
    const label = t("riskLabel", {
      kind: t(kind === "fraud" ? "fraudRisk" : "contentRisk"), severity: t(`severity_${severity}`), n: risk.hits,
      phrase: last.phrase || "", who: tOr(`role_${last.role}`, last.role || ""), advice,
    });
    cell.dataset.kind = kind;
    cell.append(
      el("span", {
        class: "risk-badge", tabindex: "0", role: "img", title: label, "aria-label": label,
        "data-kind": kind, "data-severity": severity, "data-count": String(risk.hits),
      }, `⚠ ${t(kind === "fraud" ? "fraudRisk" : "contentRisk")} · ${risk.hits}`),
      last.phrase ? el("span", { class: "risk-phrase", title: advice ? t("riskAdvice", { advice }) : "" }, `“${last.phrase}”`) : "",
    );
    return cell;
  }

  // Sessions with a critical risk cue first, then poor, fair, good quality, then those with
  // no figures yet; the rest as listed.
  function byAttention(calls) {
    const rank = (call) => (riskSeverity(call) === "critical" ? -1 : LEVEL_RANK[levelOf(call)] ?? 3);
    return calls.map((call, i) => [call, i]).sort(([a, i], [b, j]) => rank(a) - rank(b) || i - j).map(([call]) => call);
  }

  function renderLive() {
    const rows = byAttention(state.live).map((call) => {
      const end = el("button", { type: "button", class: "danger force-end", "aria-label": t("forceEndLabel", { who: call.customer?.name || t("customerWord") }) }, t("forceEnd"));
      end.addEventListener("click", () => forceEnd(call));
      const later = supervisionButtons(call);
      const level = levelOf(call);
      const risk = riskSeverity(call);
      return el("tr", { "data-call-id": call.call_id, "data-quality-level": level, "data-risk": risk,
        class: [monitor?.callId === call.call_id ? "monitored" : "", `quality-${level}`, risk !== "none" ? `risk-${risk}` : ""].filter(Boolean).join(" ") },
        el("td", {}, businessName(call.business)),
        el("td", {}, call.customer?.name || call.customer?.identity || ""),
        el("td", {}, (call.parties || [call.agent_id]).map(agentName).join(", ")),
        el("td", {}, duration(now() - (call.answered_at || now()))),
        qualityCell(call),
        riskCell(call),
        el("td", { class: "actions" }, end, ...later));
    });
    $("live").tBodies[0].replaceChildren(...rows);
    $("no-live").hidden = rows.length > 0;
    const waiting = state.waiting.map((call) => el("tr", { "data-call-id": call.call_id },
      el("td", {}, businessName(call.business)),
      el("td", {}, call.customer?.name || ""),
      el("td", {}, tOr(`state_${call.state}`, call.state)),
      el("td", {}, duration(now() - call.queued_at))));
    $("waiting").tBodies[0].replaceChildren(...waiting);
  }

  async function forceEnd(call) {
    const reason = window.prompt(t("forceEndPrompt", { who: call.customer?.name || t("theCustomer") }), t("defaultReason"));
    if (reason === null) return;
    try {
      await api("DELETE", `/v1/calls/${call.call_id}?reason=${encodeURIComponent(reason)}`);
      setStatus(t("callEnded"));
      await refresh();
    } catch (error) {
      setStatus(t("cannotEnd", { error: error.message }), true);
    }
  }

  async function refresh() {
    const [queues, agents, calls] = await Promise.all([api("GET", "/v1/queues"), api("GET", "/v1/agents"), api("GET", "/v1/calls"), refreshStats()]);
    state.queues = queues.queues;
    state.agents = agents.agents;
    state.live = calls.calls.filter((c) => c.state === "connected");
    state.waiting = calls.calls.filter((c) => c.state === "queued" || c.state === "ringing");
    for (const call of state.live) if (riskOf(call)?.last?.severity === "critical") state.critical.add(call.call_id);
    for (const id of state.critical) if (!state.live.some((c) => c.call_id === id)) state.critical.delete(id);
    if (monitor && !state.live.some((c) => c.call_id === monitor.callId)) stopMonitor(t("theCallEnded"));
    renderQueues();
    renderAgents();
    renderLive();
  }

  // -- Statistics (GET /v1/stats, docs/contact-centre.md "Figures") ----------------------

  function statsPath(format) {
    const query = new URLSearchParams({ by: $("stats-by").value });
    if (format) query.set("format", format);
    return `/v1/stats?${query}`;
  }

  // A failure here shows in the section, never stops the rest of the board.
  async function refreshStats() {
    const by = $("stats-by").value;
    try {
      const body = await api("GET", statsPath());
      if (body.by && body.by !== $("stats-by").value) return;
      state.stats = body.rows || [];
      state.statsBy = by;
      state.statsError = null;
    } catch (error) {
      state.statsError = error.message;
    }
    renderStats();
  }

  function statGroup(row) {
    if (state.statsBy === "business") return businessName(row.group);
    if (state.statsBy === "agent") return row.group === "(none)" ? t("noAgent") : agentName(row.group);
    return row.group;
  }

  function statCell(column, value) {
    if (value === null || value === undefined) return "—";
    if (column.endsWith("_s")) return duration(value);
    return String(value);
  }

  function renderStats() {
    const rows = state.stats.map((row) => el("tr", { "data-group": row.group },
      ...STATS_COLUMNS.map((column) => el("td", { "data-column": column, class: column === "group" ? "" : "num" },
        column === "group" ? statGroup(row) : statCell(column, row[column])))));
    $("stats-table").tBodies[0].replaceChildren(...rows);
    const empty = $("no-stats");
    empty.hidden = rows.length > 0 && !state.statsError;
    empty.className = state.statsError ? "error" : "";
    empty.textContent = state.statsError ? t("cannotStats", { error: state.statsError }) : t("noStats");
  }

  // The CSV needs the Authorization header, so it is fetched here and saved from a Blob.
  async function downloadStats() {
    const by = $("stats-by").value;
    try {
      let response;
      try {
        response = await fetch(statsPath("csv"), { headers: state.token ? { Authorization: `Bearer ${state.token}` } : {} });
      } catch {
        throw new Error(t("callUnreachable"));
      }
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        throw new Error(data.error?.message || t("refused", { status: response.status }));
      }
      const blob = new Blob([await response.text()], { type: "text/csv;charset=utf-8" });
      const name = `teller-stats-${by}-${new Date().toISOString().slice(0, 10)}.csv`;
      const url = URL.createObjectURL(blob);
      const link = el("a", { href: url, download: name, hidden: "" });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
      setStatus(t("downloaded", { name }));
    } catch (error) {
      setStatus(t("cannotDownload", { error: error.message }), true);
    }
  }

  // -- Language -------------------------------------------------------------------------

  async function loadCatalogue() {
    const asked = texts.lang;
    const catalogue = await api("GET", `/v1/catalogue?lang=${encodeURIComponent(asked)}`);
    if (asked !== texts.lang) return;
    state.businesses.clear();
    for (const b of catalogue.businesses) state.businesses.set(b.id, b);
  }

  async function setLanguage(next) {
    if (!texts.use(next)) return;
    texts.keepInUrl();
    texts.apply();
    renderQueues();
    renderAgents();
    renderMonitor();
    renderStats();
    try {
      await loadCatalogue();
    } catch (error) {
      setStatus(t("cannotRefresh", { error: error.message }), true);
    }
    renderLive();
    renderStats();
  }

  async function poll() {
    clearTimeout(state.timer);
    try {
      await refresh();
      setStatus(t("updated", { time: new Date().toLocaleTimeString(t("htmlLang")) }));
    } catch (error) {
      setStatus(t("cannotRefresh", { error: error.message }), true);
    }
    state.timer = setTimeout(poll, POLL_MS);
  }

  async function init() {
    texts.apply();
    setStatus(t("connecting"));
    for (const button of document.querySelectorAll("[data-lang]")) button.addEventListener("click", () => setLanguage(button.dataset.lang));
    $("stats-by").addEventListener("change", () => {
      state.stats = [];
      renderStats();
      refreshStats();
    });
    $("stats-csv").addEventListener("click", downloadStats);
    try {
      if (!state.token) state.token = (await api("POST", "/v1/dev/supervisor", { name: "Supervisor" })).token;
      await loadCatalogue();
    } catch (error) {
      setStatus(t("cannotLogIn", { error: error.message }), true);
      return;
    }
    poll();
  }

  // -- Supervision: monitor, whisper, barge in ---------------------------------------------

  // The buttons of one live session: Monitor (or Stop while monitoring it), Whisper
  // (only while monitoring it) and Barge in (only while monitoring it unseen).
  function supervisionButtons(call) {
    const who = call.customer?.name || t("customerWord");
    const mine = monitor?.callId === call.call_id;
    const busy = Boolean(monitor?.busy);
    const buttons = [];
    if (mine) {
      const stop = el("button", { type: "button", class: "monitor-stop", "aria-label": t("stopLabel", { who }) }, t("stop"));
      stop.addEventListener("click", () => stopMonitor(t("stoppedMonitoring")));
      buttons.push(stop);
    } else {
      const start = el("button", { type: "button", class: "monitor", "aria-label": t("monitorLabel", { who }) }, t("monitor"));
      if (busy || !call.room) start.disabled = true;
      start.addEventListener("click", () => startMonitor(call));
      buttons.push(start);
    }
    const whispering = mine && Boolean(monitor.publisher);
    const whisper = el("button", {
      type: "button",
      class: `whisper${whispering ? " active" : ""}`,
      "aria-pressed": String(whispering),
      "aria-label": whispering ? t("stopWhisperLabel", { who }) : t("whisperLabel", { who }),
      title: mine ? t("onlyAgentHears") : t("monitorFirst"),
    }, whispering ? t("stopWhisper") : t("whisper"));
    if (!mine || !monitor.joined || busy) whisper.disabled = true;
    whisper.addEventListener("click", () => (whispering ? stopWhisper() : startWhisper()));
    const barge = el("button", {
      type: "button",
      class: "barge",
      "aria-label": t("bargeLabel", { who }),
      title: mine ? t("customerWillSee") : t("monitorFirst"),
    }, t("bargeIn"));
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
      status.textContent = monitor.message || (!monitor.joined ? t("joining")
        : monitor.revealed ? t("barged")
        : monitor.publisher ? t("whispering")
        : t("watching"));
    }
    renderMonitorSpeech();
    renderLive();
  }

  // -- Speech in the monitored call: risk alerts (`speech.risk`, staff only) and captions
  // (`speech.caption`), both from the server (no participant may send them) ----------------

  const MONITOR_RISKS = 20;
  const MONITOR_CAPTIONS = 8;

  function onMonitorData(m, message) {
    const payload = message.payload;
    if (message.from_participant_id != null || !payload || typeof payload !== "object") return;
    if (message.topic === "speech.risk") {
      if (payload.id && m.risks.some((r) => r.id === payload.id)) return;
      m.risks = [...m.risks, payload].slice(-MONITOR_RISKS);
      if (payload.severity === "critical") state.critical.add(m.callId);
      renderMonitorSpeech();
      renderLive();
    } else if (message.topic === "speech.caption" && typeof payload.text === "string") {
      const who = String(payload.participant_id || "");
      if (payload.final) {
        m.partials.delete(who);
        m.captions = [...m.captions, payload].slice(-MONITOR_CAPTIONS);
      } else {
        m.partials.set(who, payload);
      }
      renderMonitorSpeech();
    }
  }

  function speakerName(payload) {
    const role = payload.role ? tOr(`role_${payload.role}`, payload.role) : "";
    return payload.name ? (role ? `${payload.name} (${role})` : payload.name) : role || t("participant");
  }

  function renderMonitorSpeech() {
    const m = monitor;
    const risks = m ? [...m.risks].reverse() : [];
    $("monitor-risk-panel").hidden = risks.length === 0;
    $("monitor-risks").replaceChildren(...risks.map((r) => {
      const severity = r.severity === "critical" ? "critical" : "warning";
      const kind = r.category === "fraud_coaching" ? "fraud" : "content";
      const advice = adviceText(r.advice);
      return el("li", { class: "monitor-risk", "data-id": r.id || "", "data-severity": severity, "data-kind": kind, "data-rule": r.rule || "" },
        el("span", { class: "risk-badge", "data-kind": kind, "data-severity": severity }, `⚠ ${t(kind === "fraud" ? "fraudRisk" : "contentRisk")}`), " ",
        el("span", { class: "since" }, r.ts ? new Date(r.ts * 1000).toLocaleTimeString(t("htmlLang")) : ""), " ",
        el("strong", {}, `“${r.phrase || ""}”`), ` — ${speakerName(r)}`,
        r.text ? el("p", { class: "risk-text" }, r.text) : "",
        advice ? el("p", { class: "risk-advice" }, t("riskAdvice", { advice })) : "");
    }));
    const lines = m ? [...m.captions, ...m.partials.values()] : [];
    $("monitor-captions-panel").hidden = lines.length === 0;
    $("monitor-captions").replaceChildren(...lines.map((c) => el("li", {
      class: `caption ${c.final ? "final" : "partial"}`, "data-participant-id": c.participant_id || "", "data-role": c.role || "", "data-seq": String(c.seq ?? ""),
    }, el("strong", { class: "who" }, `${speakerName(c)}: `), c.text, c.final ? "" : el("span", { class: "since" }, t("partialCaption")))));
  }

  function monitorMessage(text, isError = false) {
    if (monitor) {
      monitor.message = text;
      renderMonitor();
    }
    if (isError) setStatus(text, true);
  }

  // The signalling is /static/teller-client.js, one client per supervised call: it joins
  // hidden, subscribes, publishes the whisper, reveals, and resumes a dropped connection.
  const CLIENT_TEXT = { unreachable: "callUnreachable", timeout: "callTimeout", disconnected: "notConnected", left: "notConnected" };

  function newClient(m) {
    const client = new TellerClient({ text: (code) => (CLIENT_TEXT[code] ? t(CLIENT_TEXT[code]) : undefined) });
    const mine = (handler) => (message, meta) => { if (m === monitor) handler(message, meta); };
    return client
      .on("participant_joined", mine((msg) => scheduleWatch(m, msg.participant.participant_id)))
      .on("participant_left", mine((msg) => removeWatched(m, msg.participant_id)))
      .on("data", mine((msg) => onMonitorData(m, msg)))
      .on("track_published", mine((msg) => scheduleWatch(m, msg.participant_id)))
      .on("track_unpublished", mine((msg) => scheduleWatch(m, msg.participant_id)))
      .on("transport_closed", mine(({ publication, subscription }) => {
        if (publication && publication === m.publisher) closeWhisper(m);
        if (subscription && m.subscriptions.get(subscription.participantId)?.sub === subscription) dropWatch(m, subscription.participantId, false);
        renderMonitor();
      }))
      .on("error", mine((msg) => { if (msg.code !== "transport_not_found") monitorMessage(msg.message || msg.code, true); }))
      .on("resumed", mine(({ joined }) => {
        m.hidden = joined.participant.hidden !== false;
        // After a move the client closed the subscriptions: watch again as tracks appear.
        for (const participantId of client.participants.keys()) scheduleWatch(m, participantId);
        renderMonitor();
      }))
      .on("closed", mine(({ reason }) => {
        const ended = reason && reason !== "left";
        teardownMonitor(m);
        monitor = null;
        renderMonitor();
        setStatus(ended ? t("monitoringEnded", { reason }) : t("monitoredLost"), !ended);
      }));
  }

  function removeWatched(m, participantId) {
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
    if (m !== monitor || !m.joined || m.client.phase !== "joined") return;
    const tracks = m.client.participants.get(participantId)?.tracks || [];
    const watched = m.subscriptions.get(participantId);
    if (!tracks.length) { dropWatch(m, participantId, true); return; }
    if (watched && tracks.every((t) => watched.sub.trackIds.has(t.track_id))) return;
    dropWatch(m, participantId, true);
    watch(m, participantId, tracks).catch((error) => {
      if (["track_not_found", "participant_not_found", "disconnected", "left"].includes(error.code)) return;
      monitorMessage(t("cannotWatch", { who: watchedName(m, participantId), error: error.message }), true);
    });
  }

  function watchedName(m, participantId) {
    const info = m.client.participants.get(participantId);
    return info?.name || info?.identity || t("participant");
  }

  // Whoever closes the subscription (this page, a failure, a move to another node), its tile goes.
  function watch(m, participantId, tracks) {
    const info = m.client.participants.get(participantId) || {};
    const video = el("video", { autoplay: "", playsinline: "" });
    const tile = el("figure", { class: "monitor-tile", "data-participant-id": participantId },
      video, el("figcaption", {}, watchedName(m, participantId), " ", el("span", { class: "role" }, info.role ? `(${tOr(`role_${info.role}`, info.role)})` : "")));
    $("monitor-tiles").append(tile);
    const watched = { sub: null, tile, video };
    watched.sub = m.client.subscribe(participantId, tracks, {
      eachTrack: true, // several m-lines of a kind when the participant publishes several (camera and screen)
      onTrack: () => {
        if (video.srcObject !== watched.sub.stream) video.srcObject = watched.sub.stream;
        video.play().catch(() => { video.muted = true; video.play().catch(() => {}); });
      },
      onClose: () => {
        if (m.subscriptions.get(participantId) === watched) m.subscriptions.delete(participantId);
        video.srcObject = null;
        tile.remove();
      },
    });
    m.subscriptions.set(participantId, watched);
    return watched.sub.ready;
  }

  function dropWatch(m, participantId, tellServer) {
    m.subscriptions.get(participantId)?.sub.close(tellServer);
  }

  async function startMonitor(call) {
    if (monitor) await stopMonitor();
    const m = {
      callId: call.call_id, room: call.room, client: null, participantId: null, joined: false, hidden: true, revealed: false,
      busy: true, message: "", subscriptions: new Map(), timers: new Map(), publisher: null, mic: null,
      risks: [], captions: [], partials: new Map(), // speech.risk and speech.caption heard while monitoring
    };
    m.client = newClient(m);
    monitor = m;
    renderMonitor();
    try {
      const joined = await m.client.join(state.token, { room: call.room, hidden: true });
      if (m !== monitor) { m.client.close(); return; }
      m.participantId = joined.participant.participant_id;
      m.hidden = joined.participant.hidden !== false;
      m.joined = true;
      m.busy = false;
      for (const participantId of m.client.participants.keys()) scheduleWatch(m, participantId);
      setStatus(t("monitoringCall", { who: call.customer?.name || t("theCustomer") }));
      renderMonitor();
    } catch (error) {
      if (m !== monitor) return;
      teardownMonitor(m);
      monitor = null;
      renderMonitor();
      setStatus(t("cannotMonitor", { error: error.message }), true);
    }
  }

  async function startWhisper() {
    const m = monitor;
    if (!m?.joined || m.publisher) return;
    m.busy = true;
    renderMonitor();
    try {
      if (!navigator.mediaDevices?.getUserMedia) throw new Error(t("noMic"));
      const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
      if (m !== monitor) { mic.getTracks().forEach((t) => t.stop()); return; }
      m.mic = mic;
      m.publisher = m.client.publish(mic, { name: "whisper", onError: (error) => monitorMessage(t("cannotWhisper", { error: error.message }), true) });
      await m.publisher.ready;
      m.busy = false;
      m.message = "";
      renderMonitor();
    } catch (error) {
      if (m !== monitor) return;
      closeWhisper(m, true);
      m.busy = false;
      monitorMessage(t("cannotWhisper", { error: error.message }), true);
    }
  }

  function closeWhisper(m, tellServer = false) {
    const publisher = m.publisher;
    m.publisher = null;
    publisher?.close(tellServer);
    m.mic?.getTracks().forEach((t) => t.stop());
    m.mic = null;
  }

  function stopWhisper() {
    const m = monitor;
    if (!m) return;
    closeWhisper(m, true);
    m.message = "";
    renderMonitor();
  }

  async function bargeIn() {
    const m = monitor;
    if (!m?.joined || m.revealed) return;
    m.busy = true;
    renderMonitor();
    try {
      await m.client.reveal();
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
      monitorMessage(t("cannotBarge", { error: error.message }), true);
    }
  }

  function teardownMonitor(m) {
    for (const timer of m.timers.values()) clearTimeout(timer);
    m.timers.clear();
    closeWhisper(m);
    m.client.close(); // says `leave` if it can, closes the subscriptions (and their tiles)
  }

  async function stopMonitor(text) {
    const m = monitor;
    if (!m) return;
    monitor = null;
    await m.client.leave();
    teardownMonitor(m);
    renderMonitor();
    if (text) setStatus(text);
  }

  async function monitorStats() {
    const m = monitor;
    if (!m) return null;
    let decodedFrames = 0;
    let audioPackets = 0;
    for (const { sub } of m.subscriptions.values()) {
      try {
        (await sub.pc.getStats()).forEach((s) => {
          if (s.type !== "inbound-rtp") return;
          if (s.kind === "video") decodedFrames += s.framesDecoded || 0;
          else if (s.kind === "audio") audioPackets += s.packetsReceived || 0;
        });
      } catch { /* closed meanwhile */ }
    }
    let whisperPacketsSent = 0;
    if (m.publisher?.pc) {
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
      subscribed: [...m.subscriptions.entries()].filter(([, watched]) => watched.sub.transportId).map(([pid]) => pid),
      decodedFrames,
      audioPackets,
      whispering: Boolean(m.publisher?.transportId),
      whisperPacketsSent,
      revealed: m.revealed,
      risks: m.risks.map((r) => ({ id: r.id, category: r.category, severity: r.severity, rule: r.rule, phrase: r.phrase })),
      captions: m.captions.map((c) => c.text),
      partials: [...m.partials.values()].map((c) => c.text),
    };
  }

  $("monitor-stop").addEventListener("click", () => stopMonitor(t("stoppedMonitoring")));
  window.addEventListener("pagehide", () => monitor?.client.close());

  window.teller = {
    state,
    stats: async () => ({
      queues: state.queues,
      agents: state.agents.map((a) => ({ agent_id: a.agent_id, state: a.state })),
      live: state.live.map((c) => c.call_id),
      quality: Object.fromEntries(state.live.map((c) => [c.call_id, c.quality
        ? { level: c.quality.level, mos_min: c.quality.mos_min, alerts: (c.quality.alerts || []).map((a) => a.kind) } : null])),
      risk: Object.fromEntries(state.live.map((c) => [c.call_id, riskOf(c)
        ? { hits: c.risk.hits, kind: riskKind(c.risk), severity: riskSeverity(c), phrase: c.risk.last?.phrase ?? null } : null])),
      order: byAttention(state.live).map((c) => c.call_id),
      statistics: { by: state.statsBy, rows: state.stats },
      monitor: await monitorStats(),
    }),
  };
  init();
})();
