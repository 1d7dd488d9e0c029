// Teller compliance replay: search recorded sessions, replay one with its timeline,
// evidence and transcript, download the originals or export them all, put a session on
// legal hold (compliance only), and score the sessions drawn for this week's spot check.
// The transcript is masked; its risk hits and the prompts played are marked in it; compliance
// can reveal the masked personal data of its lines with a reason (audited, not kept here
// beyond the open session).
//
// REST: /v1/recordings (docs/recording.md). Every call needs a compliance token (or a
// supervisor's for room "*"); media and download links carry it as ?access_token= since a
// <video> or <a> cannot send a header, and the page sets no-referrer so it goes nowhere
// else. Every search, view, play, download and export is written to the audit log.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const PAGE_SIZE = 50;
  const SCORES = ["greeting", "identity_check", "risk_disclosure", "accuracy", "courtesy"];
  // Timeline events that carry something a reviewer must see: shown in the evidence panel.
  // Confirmations come twice: from routing (call_…, the record) and from the room's data
  // messages (what the customer's page was sent and answered).
  const EVIDENCE = new Set([
    "call_confirmation_requested", "call_confirmation_answered", "confirmation_requested", "confirmation_answered",
    "snapshot", "material_pushed", "identity_check",
  ]);
  const ALERTS = new Set(["quality_alert", "risk_keyword", "identity_override", "tts_failed"]);
  // Risk cues heard in the session (teller/speech): red on the timeline and in the transcript.
  const RISKS = new Set(["fraud_risk", "content_risk"]);

  // All UI text, per language (like the other pages). English unless ?lang=zh or the
  // switch says otherwise; another language is one more entry here (and a button).
  const STRINGS = {
    zh: {
      htmlLang: "zh-CN", title: "Teller 合规回放", language: "语言", sections: "功能", yourName: "您的姓名", role: "角色",
      role_compliance: "合规", role_supervisor: "主管", logIn: "登录", logInToSearch: "登录后可检索录像。",
      cannotLogIn: "无法登录：{error}", loggedIn: "已登录：{name}（{role}）", expired: "登录已过期，请重新登录。",
      recordings: "录像检索", spotChecks: "抽检", from: "开始时间", to: "结束时间", agent: "坐席", customer: "客户",
      agentPlaceholder: "编号或姓名", customerPlaceholder: "编号或姓名", business: "业务", outcome: "结果",
      outcomePlaceholder: "小结代码", minDuration: "最短时长（分钟）", maxDuration: "最长时长（分钟）", status: "状态", any: "全部",
      flags: "标记", flag_risk_keyword: "风险关键词", flag_poor_quality: "质量差", flag_identity_override: "身份核验例外",
      search: "检索", clear: "清空", started: "开始", duration: "时长", size: "大小", actions: "操作",
      noResults: "没有符合条件的录像。", more: "更多", searching: "正在检索…", found: "找到 {count} 条{more}。", moreAvailable: "（还有更多）",
      cannotSearch: "无法检索：{error}", open: "回放", openLabel: "回放 {who} 的会话",
      status_recording: "录制中", status_finalizing: "处理中", status_ready: "就绪", status_failed: "失败", status_deleted: "已删除",
      onHoldBadge: "法律保全", back: "← 返回", source: "播放源", composite: "合成画面", kind_audio: "音频", kind_video: "视频",
      timeline: "时间轴", noEvents: "没有记录事件。", evidence: "证据", noEvidenceYet: "回放到相应时刻时，证据显示在这里。",
      transcript: "转写文本", session: "会话", downloads: "下载", downloadComposite: "下载合成录像", exportAll: "全部导出（zip）",
      download: "下载", legalHold: "法律保全", holdReason: "原因", placeHold: "设置法律保全", releaseHold: "解除法律保全",
      onHold: "已设置法律保全：{reason}", notOnHold: "未保全；保留至 {date}。", notOnHoldForever: "未保全。",
      holdPlaced: "已设置法律保全。", holdReleased: "已解除法律保全。", cannotHold: "无法更改法律保全：{error}",
      holdComplianceOnly: "只有合规人员可以更改法律保全。",
      evaluations: "质检评分", evaluate: "为本次会话评分（0–5）", score_greeting: "问候", score_identity_check: "身份核验",
      score_risk_disclosure: "风险提示", score_accuracy: "准确性", score_courtesy: "礼貌", comments: "评语", saveEvaluation: "保存评分",
      evaluationSaved: "评分已保存（总分 {total}）。", cannotEvaluate: "无法保存评分：{error}", noEvaluations: "尚无评分。",
      evaluationBy: "{by} · {at} · 总分 {total}", week: "周", drawSample: "显示抽样", spotPercent: "抽取每位坐席 {percent}% 的会话。",
      evaluated: "已评分", yes: "是", no: "否", noSpot: "本周没有抽取会话。", cannotSpot: "无法加载抽检：{error}", evaluateAction: "评分",
      loading: "正在加载…", cannotOpen: "无法打开会话：{error}", opened: "正在回放 {sid}。", noMedia: "此会话没有可播放的媒体。",
      noMediaYet: "媒体尚未就绪（{status}）。", manifestOk: "清单校验通过（SHA-256 与 HMAC）。", manifestBad: "清单校验失败！文件可能被篡改。",
      manifestUnknown: "清单尚未校验。", sessionId: "会话编号", room: "房间", callId: "来电编号", retention: "保留至", tracks: "轨道数",
      name: "名称", kind: "类型", kind_composite: "合成", kind_track: "原始轨道", kind_timeline: "时间轴", kind_transcript: "转写",
      kind_evidence: "证据", kind_manifest: "清单", page: "第 {page} 页", openMaterial: "打开资料", confirmAccepted: "客户已确认。",
      confirmDeclined: "客户拒绝确认。", signature: "签名", snapshotAlt: "快照", identityResult: "核验结果：{result}",
      refused: "服务器拒绝了请求（{status}）。", unreachable: "无法连接服务器。", unknown: "—",
      ev_participant_joined: "加入", ev_participant_left: "离开", ev_track_published: "发布媒体", ev_screen_share_started: "开始共享屏幕",
      ev_screen_share_stopped: "停止共享屏幕", ev_material_pushed: "推送资料", ev_call_confirmation_requested: "请求确认",
      ev_call_confirmation_answered: "确认结果", ev_confirmation_requested: "请求确认", ev_confirmation_answered: "确认结果", ev_identity_check: "身份核验", ev_prompt_played: "播放提示", ev_call_transferred: "转接",
      ev_call_barge: "主管强插", ev_call_whisper: "主管耳语", ev_call_monitor: "主管监听", ev_quality_alert: "质量告警", ev_snapshot: "快照",
      ev_tier_changed: "视频档位变化", ev_quality_summary: "质量小结", kind_quality: "通话质量",
      quality: "通话质量", q_participant: "参与者", q_mos: "MOS 平均 / 最低", q_lossUp: "上行丢包 平均 / 最高",
      q_lossDown: "下行丢包 平均 / 最高", q_rtt: "平均往返时延", q_freezes: "卡顿", q_level: "总体质量", q_mosMin: "最低 MOS",
      q_alertsRaised: "质量告警", q_tierChanges: "档位变化", freezesValue: "{n} 次（{s} 秒）", cleared: "已解除", tierChange: "{who}：{from} → {to}", summaryText: "{who}：MOS 平均 {mos}",
      who_customer: "客户", who_agent: "坐席", cannotQuality: "无法加载通话质量：{error}",
      who_service: "语音播报", who_supervisor: "主管", who_officer: "专员", role_customer: "客户", role_agent: "坐席", role_service: "语音播报",
      downloadVtt: "下载 WebVTT", downloadVttLabel: "下载本会话的 WebVTT 字幕文件", noTranscript: "没有转写文本。",
      transcriptLoading: "正在加载转写文本…", cannotTranscript: "无法加载转写文本：{error}",
      transcriptSummary: "{lines} 句 · {risks} 个风险提示 · {played} 次语音播报", playFrom: "从 {at} 开始播放", speakerSays: "{who}：",
      piiMasked: "含已遮盖的个人信息", piiTag: "已遮盖", revealedTag: "（已显示原文）", revealError: "（原文无法打开）",
      revealPii: "显示个人信息", hidePii: "隐藏个人信息", revealReason: "显示原因", revealReasonPlaceholder: "例如：投诉编号", reveal: "显示",
      cancel: "取消", revealAudited: "此次查看将写入审计日志。", revealing: "正在显示个人信息…",
      revealedNotice: "已显示 {n} 句中的个人信息（原因：{reason}）。此次查看已写入审计日志。",
      cannotReveal: "无法显示个人信息：{error}", revealComplianceOnly: "只有合规人员可以显示个人信息。", piiHidden: "个人信息已重新遮盖。",
      fraudRisk: "诈骗风险", contentRisk: "内容风险", riskHit: "{kind}：“{phrase}”", riskBy: "{kind}：“{phrase}”（{who}）",
      severity_critical: "严重", severity_warning: "警告",
      risk_fraud_coaching: "诈骗话术", risk_abusive: "辱骂", risk_unlawful: "违规内容",
      promptPlayed: "语音播报", promptText: "{kind}：{text}",
      played_risk_prompt: "风险提示", played_anti_fraud: "反诈提醒", played_script: "话术", played_broadcast: "为客户朗读",
      ev_fraud_risk: "诈骗风险", ev_content_risk: "内容风险", ev_tts_played: "语音播报", ev_tts_failed: "语音播报失败", ev_transcript: "语音转写",
    },
    en: {
      htmlLang: "en", title: "Teller compliance replay", language: "Language", sections: "Sections", yourName: "Your name", role: "Role",
      role_compliance: "Compliance", role_supervisor: "Supervisor", logIn: "Log in", logInToSearch: "Log in to search recordings.",
      cannotLogIn: "Cannot log in: {error}", loggedIn: "Logged in as {name} ({role}).", expired: "Your login expired; log in again.",
      recordings: "Recordings", spotChecks: "Spot checks", from: "From", to: "To", agent: "Agent", customer: "Customer",
      agentPlaceholder: "id or name", customerPlaceholder: "id or name", business: "Business", outcome: "Outcome",
      outcomePlaceholder: "wrap-up code", minDuration: "Min duration (min)", maxDuration: "Max duration (min)", status: "Status", any: "Any",
      flags: "Flags", flag_risk_keyword: "risk keyword", flag_poor_quality: "poor quality", flag_identity_override: "identity override",
      search: "Search", clear: "Clear", started: "Started", duration: "Duration", size: "Size", actions: "Actions",
      noResults: "No recordings match.", more: "More", searching: "Searching…", found: "{count} found{more}.", moreAvailable: " (more available)",
      cannotSearch: "Cannot search: {error}", open: "Replay", openLabel: "Replay the session of {who}",
      status_recording: "recording", status_finalizing: "finalizing", status_ready: "ready", status_failed: "failed", status_deleted: "deleted",
      onHoldBadge: "legal hold", back: "← Back", source: "Source", composite: "Composite", kind_audio: "audio", kind_video: "video",
      timeline: "Timeline", noEvents: "No events recorded.", evidence: "Evidence", noEvidenceYet: "Evidence appears here as the replay reaches it.",
      transcript: "Transcript", session: "Session", downloads: "Downloads", downloadComposite: "Download composite", exportAll: "Export all (zip)",
      download: "Download", legalHold: "Legal hold", holdReason: "Reason", placeHold: "Place legal hold", releaseHold: "Release legal hold",
      onHold: "On legal hold: {reason}", notOnHold: "Not on hold; kept until {date}.", notOnHoldForever: "Not on hold.",
      holdPlaced: "Legal hold placed.", holdReleased: "Legal hold released.", cannotHold: "Cannot change the legal hold: {error}",
      holdComplianceOnly: "Only compliance staff can change a legal hold.",
      evaluations: "Evaluations", evaluate: "Evaluate this session (0–5)", score_greeting: "Greeting", score_identity_check: "Identity check",
      score_risk_disclosure: "Risk disclosure", score_accuracy: "Accuracy", score_courtesy: "Courtesy", comments: "Comments", saveEvaluation: "Save evaluation",
      evaluationSaved: "Evaluation saved (total {total}).", cannotEvaluate: "Cannot save the evaluation: {error}", noEvaluations: "No evaluations yet.",
      evaluationBy: "{by} · {at} · total {total}", week: "Week", drawSample: "Show sample", spotPercent: "{percent}% of each agent's sessions are drawn.",
      evaluated: "Evaluated", yes: "yes", no: "no", noSpot: "No sessions were drawn for this week.", cannotSpot: "Cannot load the spot check: {error}", evaluateAction: "Evaluate",
      loading: "Loading…", cannotOpen: "Cannot open the session: {error}", opened: "Replaying {sid}.", noMedia: "No playable media for this session.",
      noMediaYet: "The media is not ready yet ({status}).", manifestOk: "Manifest verified (SHA-256 and HMAC).", manifestBad: "Manifest check FAILED: files may have been altered.",
      manifestUnknown: "Manifest not checked yet.", sessionId: "Session id", room: "Room", callId: "Call id", retention: "Kept until", tracks: "Tracks",
      name: "Name", kind: "Kind", kind_composite: "composite", kind_track: "original track", kind_timeline: "timeline", kind_transcript: "transcript",
      kind_evidence: "evidence", kind_manifest: "manifest", page: "page {page}", openMaterial: "Open the material", confirmAccepted: "The customer confirmed.",
      confirmDeclined: "The customer declined.", signature: "Signature", snapshotAlt: "Snapshot", identityResult: "Result: {result}",
      refused: "The server refused ({status}).", unreachable: "Cannot reach the server.", unknown: "—",
      ev_participant_joined: "joined", ev_participant_left: "left", ev_track_published: "published media", ev_screen_share_started: "screen share started",
      ev_screen_share_stopped: "screen share stopped", ev_material_pushed: "material shown", ev_call_confirmation_requested: "confirmation requested",
      ev_call_confirmation_answered: "confirmation answered", ev_confirmation_requested: "confirmation requested", ev_confirmation_answered: "confirmation answered",
      ev_identity_check: "identity check", ev_prompt_played: "prompt played", ev_call_transferred: "transferred",
      ev_call_barge: "supervisor barged in", ev_call_whisper: "supervisor whispered", ev_call_monitor: "supervisor monitored", ev_quality_alert: "quality alert", ev_snapshot: "snapshot",
      ev_tier_changed: "video tier changed", ev_quality_summary: "quality summary", kind_quality: "call quality",
      quality: "Call quality", q_participant: "Participant", q_mos: "MOS avg / min", q_lossUp: "Loss up avg / max",
      q_lossDown: "Loss down avg / max", q_rtt: "RTT avg", q_freezes: "Freezes", q_level: "Overall", q_mosMin: "Worst MOS",
      q_alertsRaised: "Quality alerts", q_tierChanges: "Tier changes", freezesValue: "{n} ({s} s)", cleared: "cleared", tierChange: "{who}: {from} → {to}", summaryText: "{who}: MOS avg {mos}",
      who_customer: "customer", who_agent: "agent", cannotQuality: "Cannot load the call quality: {error}",
      who_service: "voice prompts", who_supervisor: "supervisor", who_officer: "officer", role_customer: "customer", role_agent: "agent", role_service: "voice prompts",
      downloadVtt: "Download WebVTT", downloadVttLabel: "Download this session's transcript as WebVTT captions", noTranscript: "No transcript.",
      transcriptLoading: "Loading the transcript…", cannotTranscript: "Cannot load the transcript: {error}",
      transcriptSummary: "{lines} line(s) · {risks} risk hit(s) · {played} prompt(s) played", playFrom: "Play from {at}", speakerSays: "{who}: ",
      piiMasked: "Personal data masked", piiTag: "masked", revealedTag: " (revealed)", revealError: " (the original cannot be opened)",
      revealPii: "Reveal personal data", hidePii: "Hide personal data", revealReason: "Reason for the reveal", revealReasonPlaceholder: "e.g. complaint number", reveal: "Reveal",
      cancel: "Cancel", revealAudited: "This reveal is written to the audit log.", revealing: "Revealing personal data…",
      revealedNotice: "Personal data revealed in {n} line(s) (reason: {reason}). This reveal is written to the audit log.",
      cannotReveal: "Cannot reveal the personal data: {error}", revealComplianceOnly: "Only compliance staff can reveal personal data.", piiHidden: "Personal data masked again.",
      fraudRisk: "Fraud risk", contentRisk: "Content risk", riskHit: "{kind}: “{phrase}”", riskBy: "{kind}: “{phrase}” ({who})",
      severity_critical: "critical", severity_warning: "warning",
      risk_fraud_coaching: "fraud coaching", risk_abusive: "abusive", risk_unlawful: "unlawful",
      promptPlayed: "Prompt played", promptText: "{kind}: {text}",
      played_risk_prompt: "risk reminder", played_anti_fraud: "anti-fraud reminder", played_script: "script", played_broadcast: "read aloud for the customer",
      ev_fraud_risk: "fraud risk", ev_content_risk: "content risk", ev_tts_played: "prompt played", ev_tts_failed: "prompt failed", ev_transcript: "speech",
    },
  };
  const texts = TellerPage.texts(TellerPage.withQuality(STRINGS), params.get("lang"));
  const { t, tOr } = texts;

  const state = {
    token: params.get("token") || null,
    role: null,
    name: null,
    tab: "recordings",
    query: null,
    results: [],
    cursor: null,
    // The open session: {session, files, evaluations, manifest_ok, events, transcript, source, offset, pendingSeek, shown}.
    detail: null,
    spot: null,
    returnTab: "recordings",
  };

  const api = TellerPage.api({ token: () => state.token, text: t });

  function setStatus(text, kind = "") {
    $("status").textContent = text;
    $("status").className = kind;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds || 0));
    const m = Math.floor(s / 60);
    return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}` : `${m}:${String(s % 60).padStart(2, "0")}`;
  }

  const when = (epoch) => (epoch ? new Date(epoch * 1000).toLocaleString(t("htmlLang")) : t("unknown"));
  const day = (epoch) => (epoch ? new Date(epoch * 1000).toLocaleDateString(t("htmlLang")) : t("unknown"));

  function bytes(n) {
    if (n === null || n === undefined) return t("unknown");
    const units = ["B", "KB", "MB", "GB", "TB"];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
  }

  const enc = encodeURIComponent;
  const sessionPath = (sid) => `/v1/recordings/${enc(sid)}`;

  // A link a <video> or <a> can follow: the token rides in the query (see the header).
  function fileUrl(sid, name, download = false) {
    return `${sessionPath(sid)}/files/${enc(name)}?access_token=${enc(state.token)}${download ? "&download=1" : ""}`;
  }

  const safeImage = (src) => typeof src === "string" && /^data:image\/(png|jpeg|webp|gif);base64,/i.test(src);
  const safeLink = (url) => typeof url === "string" && (/^https?:\/\//i.test(url) || /^\/(?!\/)/.test(url));

  // An expired token shows the login form again rather than a run of refusals.
  function failed(error, key) {
    if (error.status === 401) {
      state.token = null;
      $("login-form").hidden = false;
      setStatus(t("expired"), "error");
      return;
    }
    setStatus(t(key, { error: error.message }), "error");
  }

  function badge(text, kind) {
    return el("span", { class: `badge ${kind}` }, text);
  }

  function statusBadge(status) {
    return badge(tOr(`status_${status}`, status), `status-${status}`);
  }

  function flagBadges(flags = []) {
    return flags.map((flag) => badge(tOr(`flag_${flag}`, flag), `flag flag-${flag}`));
  }

  // -- Login ----------------------------------------------------------------------------

  // A token given in the address (?token=) is used as it is: its role and name are read
  // for display only, the server checks it on every request.
  function claims(token) {
    try {
      const part = atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"));
      return JSON.parse(new TextDecoder().decode(Uint8Array.from(part, (c) => c.charCodeAt(0))));
    } catch {
      return {};
    }
  }

  async function login(event) {
    event?.preventDefault();
    try {
      if (!state.token) {
        const name = $("login-name").value.trim() || t("role_compliance");
        const body = await api("POST", "/v1/recordings/login", { name, role: $("login-role").value });
        state.token = body.token;
        state.role = body.role;
        state.name = body.name;
      } else {
        const c = claims(state.token);
        state.role = state.role || c.role || null;
        state.name = state.name || c.name || c.sub || null;
      }
    } catch (error) {
      state.token = null;
      setStatus(t("cannotLogIn", { error: error.message }), "error");
      return;
    }
    $("login-form").hidden = true;
    $("user-bar").hidden = false;
    $("app").hidden = false;
    document.body.dataset.role = state.role || "";
    renderUser();
    setStatus(t("loggedIn", { name: state.name, role: tOr(`role_${state.role}`, state.role) }), "ok");
    loadBusinesses();
    if (!state.query) await search();
  }

  function renderUser() {
    $("user-label").textContent = state.name ? `${state.name} · ${tOr(`role_${state.role}`, state.role || "")}` : "";
  }

  // Best effort: the catalogue fills the business suggestions; the field works without it.
  async function loadBusinesses() {
    try {
      const catalogue = await api("GET", `/v1/catalogue?lang=${enc(texts.lang)}`);
      $("business-list").replaceChildren(...catalogue.businesses.map((b) => el("option", { value: b.id }, b.name || b.id)));
    } catch {
      $("business-list").replaceChildren();
    }
  }

  // -- Search -----------------------------------------------------------------------------

  function epoch(input) {
    const value = $(input).value;
    return value ? String(Math.floor(new Date(value).getTime() / 1000)) : "";
  }

  function minutes(input) {
    const value = $(input).value;
    return value === "" ? "" : String(Math.round(Number(value) * 60));
  }

  function searchQuery() {
    const query = new URLSearchParams();
    const put = (key, value) => {
      if (value) query.set(key, value);
    };
    put("from", epoch("f-from"));
    put("to", epoch("f-to"));
    put("agent", $("f-agent").value.trim());
    put("customer", $("f-customer").value.trim());
    put("business", $("f-business").value.trim());
    put("outcome", $("f-outcome").value.trim());
    put("min_duration", minutes("f-min-duration"));
    put("max_duration", minutes("f-max-duration"));
    put("status", $("f-status").value);
    put("flags", [...document.querySelectorAll('#f-flags input[name="flags"]:checked')].map((box) => box.value).join(","));
    query.set("limit", String(PAGE_SIZE));
    return query;
  }

  async function search(event) {
    event?.preventDefault();
    const query = searchQuery();
    state.query = query;
    setStatus(t("searching"));
    $("search-btn").disabled = true;
    try {
      const body = await api("GET", `/v1/recordings?${query}`);
      if (state.query !== query) return;
      state.results = body.items || [];
      state.cursor = body.next_cursor || null;
      renderResults();
      setStatus(t("found", { count: state.results.length, more: state.cursor ? t("moreAvailable") : "" }));
    } catch (error) {
      failed(error, "cannotSearch");
    } finally {
      $("search-btn").disabled = false;
    }
  }

  async function more() {
    if (!state.cursor || !state.query) return;
    const query = new URLSearchParams(state.query);
    query.set("cursor", state.cursor);
    $("more").disabled = true;
    try {
      const body = await api("GET", `/v1/recordings?${query}`);
      state.results.push(...(body.items || []));
      state.cursor = body.next_cursor || null;
      renderResults();
      setStatus(t("found", { count: state.results.length, more: state.cursor ? t("moreAvailable") : "" }));
    } catch (error) {
      failed(error, "cannotSearch");
    } finally {
      $("more").disabled = false;
    }
  }

  function renderResults() {
    const rows = state.results.map((s) => {
      const who = s.customer_name || s.customer_id || s.session_id;
      const open = el("button", { type: "button", class: "open secondary", "aria-label": t("openLabel", { who }) }, t("open"));
      const row = el("tr", { "data-session": s.session_id, "data-status": s.status, class: state.detail?.session.session_id === s.session_id ? "selected" : "" },
        el("td", {}, when(s.started_at)),
        el("td", { class: "num" }, clock(s.duration_s)),
        el("td", {}, s.business || t("unknown")),
        el("td", {}, s.agent_name || s.agent_id || t("unknown")),
        el("td", {}, s.customer_name || s.customer_id || t("unknown")),
        el("td", {}, s.outcome || t("unknown")),
        el("td", { class: "badges" }, ...flagBadges(s.flags)),
        el("td", { class: "badges" }, statusBadge(s.status), s.legal_hold ? badge(t("onHoldBadge"), "hold") : null),
        el("td", { class: "num" }, bytes(s.size_bytes)),
        el("td", {}, open));
      row.addEventListener("click", () => openSession(s.session_id));
      return row;
    });
    $("results").tBodies[0].replaceChildren(...rows);
    $("no-results").hidden = rows.length > 0 || state.query === null;
    $("more").hidden = !state.cursor;
  }

  // -- One session ------------------------------------------------------------------------

  async function openSession(sid, { evaluate = false } = {}) {
    state.returnTab = state.tab;
    showTab("recordings");
    setStatus(t("loading"));
    let body;
    try {
      body = await api("GET", sessionPath(sid));
    } catch (error) {
      failed(error, "cannotOpen");
      return;
    }
    closeSession();
    const files = body.files || [];
    state.detail = {
      session: body.session, files, evaluations: body.evaluations || [], manifest_ok: body.manifest_ok ?? null,
      // shown: the seq of the evidence on show (undefined: the panel still shows another session's).
      events: [], source: null, offset: 0, pendingSeek: null, shown: undefined,
      quality: null, // quality.json, when the session has one
      // The transcript (GET …/transcript): null until loaded; transcriptState "loading" | "ok" | "none" | "error".
      transcript: null, transcriptState: "loading", transcriptError: "", items: [],
      revealed: null, // after a reveal: {reason, texts: Map(line index -> unmasked text), errors: Set(line index)}
      revealing: false,
    };
    $("search-view").hidden = true;
    $("detail").hidden = false;
    renderDetail();
    renderTimeline();
    renderTranscript();
    renderQuality();
    chooseSource();
    setStatus(t("opened", { sid }));
    await Promise.all([loadTimeline(sid), loadTranscript(sid), loadQuality(sid)]);
    if (evaluate) {
      $("evaluation-panel").scrollIntoView({ block: "start" });
      $("score-greeting").focus();
    } else {
      $("detail").scrollIntoView({ block: "start" });
    }
  }

  function closeSession() {
    const player = $("player");
    player.pause();
    player.removeAttribute("src");
    player.load();
    state.detail = null;
    $("reveal-form").hidden = true;
    $("reveal-reason").value = "";
  }

  function back() {
    closeSession();
    $("detail").hidden = true;
    $("search-view").hidden = false;
    renderResults();
    if (state.returnTab === "spot") showTab("spot");
  }

  async function loadTimeline(sid) {
    try {
      const body = await api("GET", `${sessionPath(sid)}/timeline`);
      if (state.detail?.session.session_id !== sid) return;
      const start = body.started_at ?? state.detail.session.started_at ?? 0;
      // Each transcript line is an event too: the transcript panel shows those, not the bar.
      state.detail.events = (body.events || []).filter((ev) => ev.type !== "transcript")
        .map((ev) => ({ ...ev, t: typeof ev.t === "number" ? ev.t : (ev.ts || start) - start }))
        .sort((a, b) => a.t - b.t || a.seq - b.seq);
    } catch (error) {
      if (state.detail?.session.session_id !== sid) return;
      state.detail.events = [];
      if (error.status !== 404) failed(error, "cannotOpen");
    }
    renderTimeline();
  }

  // The masked transcript (docs/recording.md): a 404 (transcript_not_found) is normal, the
  // panel says "No transcript". Older transcripts had `cues` ({start, end, speaker, text}).
  async function loadTranscript(sid) {
    const d = state.detail;
    if (d?.session.session_id !== sid) return;
    d.transcriptState = "loading";
    renderTranscript();
    let body = null;
    try {
      body = await api("GET", `${sessionPath(sid)}/transcript`);
    } catch (error) {
      if (state.detail !== d) return;
      d.transcriptState = error.status === 404 ? "none" : "error";
      d.transcriptError = error.message;
      if (error.status === 401) failed(error, "cannotTranscript");
      renderTranscript();
      return;
    }
    if (state.detail !== d) return;
    d.transcript = normaliseTranscript(body);
    d.transcriptState = d.transcript.lines.length || d.transcript.risk.length || d.transcript.played.length ? "ok" : "none";
    renderTranscript();
  }

  const num = (x, fallback = 0) => (typeof x === "number" && Number.isFinite(x) ? x : fallback);

  function normaliseTranscript(body) {
    const started = num(body?.started_at, state.detail?.session.started_at || 0);
    const offsetOf = (x) => (typeof x.offset_s === "number" ? x.offset_s : typeof x.ts === "number" && started ? Math.max(0, x.ts - started) : 0);
    const lines = Array.isArray(body?.lines)
      ? body.lines.filter((l) => l && typeof l === "object").map((l) => ({ ...l, start_s: num(l.start_s), end_s: num(l.end_s, num(l.start_s)) }))
      : (Array.isArray(body?.cues) ? body.cues : []).map((c) => ({ start_s: num(c.start), end_s: num(c.end, num(c.start)), name: c.speaker, text: c.text, pii: false }));
    const list = (key) => (Array.isArray(body?.[key]) ? body[key].filter((x) => x && typeof x === "object").map((x) => ({ ...x, offset_s: offsetOf(x) })) : []);
    return { started_at: started, lines, risk: list("risk"), played: list("played") };
  }

  // quality.json (the finaliser writes it from the session's quality events), through
  // /quality so that reading it is audited as a view, not a play; shown only when the
  // file list has it.
  async function loadQuality(sid) {
    const file = (state.detail?.files || []).find((f) => f.kind === "quality" || f.name === "quality.json");
    if (!file) return;
    try {
      const body = await api("GET", `${sessionPath(sid)}/quality`);
      if (state.detail?.session.session_id !== sid) return;
      state.detail.quality = body && typeof body === "object" ? body : null;
    } catch (error) {
      if (state.detail?.session.session_id !== sid) return;
      state.detail.quality = null;
      if (error.status !== 404) failed(error, "cannotQuality");
    }
    renderQuality();
    renderTimeline(); // names in the quality events come from it too
  }

  const LEVELS = ["good", "fair", "poor"];
  const pct = (x) => (typeof x === "number" ? `${(x * 100).toFixed(1)}%` : t("unknown"));
  const fixed = (x, digits = 1) => (typeof x === "number" ? x.toFixed(digits) : t("unknown"));

  function levelBadge(level) {
    const known = LEVELS.includes(level) ? level : "unknown";
    return el("span", { class: "quality-badge", "data-level": known }, known === "unknown" ? t("unknown") : t(`level_${known}`));
  }

  // Who someone in the session was: from quality.json, else from the timeline's joins.
  function participantInfo(participantId) {
    const d = state.detail;
    const fromQuality = d?.quality?.participants?.find((p) => p.participant_id === participantId);
    if (fromQuality) return fromQuality;
    const joined = d?.events.find((ev) => ev.type === "participant_joined" && ev.participant_id === participantId);
    return joined ? { ...(joined.participant || {}), ...joined } : null;
  }

  function personName(p) {
    if (!p) return t("unknown");
    const name = p.name || p.identity || p.participant_id || t("unknown");
    return p.role ? `${name} (${tOr(`role_${p.role}`, tOr(`who_${p.role}`, p.role))})` : name;
  }

  function alertText(alert) {
    const kind = String(alert.kind || "");
    if (!tOr(`alert_${kind}`, null)) return String(alert.message || kind);
    const info = participantInfo(alert.participant_id);
    const whose = alert.role === "customer" ? t("whose_customer") : t("whose_other", { name: info?.name || alert.identity || alert.role || "" });
    const v = alert.values || {};
    return t(`alert_${kind}`, {
      whose, rtt: fixed(v.rtt_ms, 0), jitter: fixed(v.jitter_ms, 0), mos: fixed(v.mos, 1), frozen: fixed(v.frozen_s, 0), fps: fixed(v.fps, 0),
    });
  }

  const tierName = (tier) => tOr(`tier_${tier}`, String(tier || t("unknown")).replace(/_/g, " "));

  function renderQuality() {
    const d = state.detail;
    const q = d?.quality;
    $("quality-panel").hidden = !q;
    if (!q) {
      $("quality-summary").replaceChildren();
      $("quality-participants").tBodies[0].replaceChildren();
      $("quality-alert-list").replaceChildren();
      return;
    }
    $("quality-panel").dataset.level = LEVELS.includes(q.level) ? q.level : "unknown";
    const rows = [
      ["level", "q_level", levelBadge(q.level)],
      ["mos_min", "q_mosMin", fixed(q.mos_min, 2)],
      ["alerts_raised", "q_alertsRaised", String(q.alerts_raised ?? 0)],
      ["tier_changes", "q_tierChanges", String(q.tier_changes ?? 0)],
    ];
    $("quality-summary").replaceChildren(...rows.flatMap(([field, key, value]) => [el("dt", {}, t(key)), el("dd", { "data-field": field }, value)]));
    const order = (p) => (p.role === "customer" ? 0 : p.role === "agent" ? 1 : 2);
    const people = [...(Array.isArray(q.participants) ? q.participants : [])].sort((a, b) => order(a) - order(b));
    $("quality-participants").tBodies[0].replaceChildren(...people.map((p) => el("tr", { "data-participant-id": p.participant_id, "data-role": p.role || "" },
      el("td", { "data-field": "who" }, personName(p)),
      el("td", { class: "num", "data-field": "mos" }, `${fixed(p.mos_avg, 2)} / ${fixed(p.mos_min, 2)}`),
      el("td", { class: "num", "data-field": "loss_up" }, `${pct(p.loss_up_avg)} / ${pct(p.loss_up_max)}`),
      el("td", { class: "num", "data-field": "loss_down" }, `${pct(p.loss_down_avg)} / ${pct(p.loss_down_max)}`),
      el("td", { class: "num", "data-field": "rtt" }, typeof p.rtt_avg_ms === "number" ? `${Math.round(p.rtt_avg_ms)} ms` : t("unknown")),
      el("td", { class: "num", "data-field": "freezes" }, t("freezesValue", { n: p.freezes ?? 0, s: fixed(p.freeze_s ?? 0, 1) })))));
    const raised = (Array.isArray(q.alerts) ? q.alerts : []).filter((a) => a.state === "raised");
    $("quality-alert-list").replaceChildren(...raised.map((a) => {
      const at = typeof a.t === "number" ? a.t : null;
      const item = el("li", { "data-kind": a.kind || "", "data-severity": a.severity || "", "data-alert-id": a.alert_id || "" },
        at !== null ? el("button", { type: "button", class: "alert-at" }, clock(at)) : null, alertText(a));
      if (at !== null) item.firstChild.addEventListener("click", () => seekTo(at));
      return item;
    }));
  }

  function renderDetail() {
    const d = state.detail;
    const s = d.session;
    $("detail").dataset.session = s.session_id;
    $("detail-title").textContent = [s.business, s.customer_name || s.customer_id, when(s.started_at)].filter(Boolean).join(" · ");
    $("detail-badges").replaceChildren(statusBadge(s.status), ...flagBadges(s.flags), s.legal_hold ? badge(t("onHoldBadge"), "hold") : "");
    const rows = [
      ["sessionId", s.session_id], ["room", s.room], ["callId", s.call_id], ["business", s.business],
      ["agent", s.agent_name ? `${s.agent_name} (${s.agent_id})` : s.agent_id], ["customer", s.customer_name ? `${s.customer_name} (${s.customer_id})` : s.customer_id],
      ["outcome", s.outcome], ["started", when(s.started_at)], ["duration", clock(s.duration_s)], ["tracks", s.tracks],
      ["size", bytes(s.size_bytes)], ["retention", day(s.retention_until)],
    ];
    $("session-info").replaceChildren(...rows.flatMap(([key, value]) => [el("dt", {}, t(key)), el("dd", { "data-field": key }, value === undefined || value === null || value === "" ? t("unknown") : String(value))]));
    renderDownloads();
    renderHold();
    renderEvaluations();
  }

  function renderDownloads() {
    const d = state.detail;
    const sid = d.session.session_id;
    const composite = d.files.find((f) => f.kind === "composite");
    const link = $("download-composite");
    link.hidden = !composite;
    if (composite) link.href = fileUrl(sid, composite.name, true);
    else link.removeAttribute("href");
    $("export").hidden = d.session.status === "deleted";
    $("export").href = `${sessionPath(sid)}/export?access_token=${enc(state.token)}`;
    const manifest = $("manifest-state");
    manifest.textContent = d.manifest_ok === true ? t("manifestOk") : d.manifest_ok === false ? t("manifestBad") : t("manifestUnknown");
    manifest.className = d.manifest_ok === true ? "ok" : d.manifest_ok === false ? "error" : "muted";
    manifest.dataset.manifest = String(d.manifest_ok);
    $("file-list").replaceChildren(...d.files.map((f) => {
      const label = f.kind === "track" ? `${f.label || f.participant_id || ""} · ${tOr(`kind_${f.track_kind}`, f.track_kind || "")}` : tOr(`kind_${f.kind}`, f.kind);
      return el("li", { "data-name": f.name, "data-kind": f.kind },
        el("span", { class: "file-label" }, label),
        el("code", { class: "file-name" }, f.name),
        el("span", { class: "file-size" }, bytes(f.size)),
        f.sha256 ? el("code", { class: "sha", title: f.sha256 }, `sha256 ${f.sha256.slice(0, 12)}…`) : null,
        el("a", { class: `button secondary download${f.kind === "track" ? " download-track" : ""}`, "data-name": f.name, href: fileUrl(sid, f.name, true) }, t("download")));
    }));
  }

  // -- The player: composite or one original track ------------------------------------------

  const playable = (f) => f.kind === "composite" || (f.kind === "track" && (f.track_kind === "audio" || f.track_kind === "video"));

  function sourceLabel(f) {
    if (f.kind === "composite") return t("composite");
    const offset = f.start_offset_s ? ` (+${clock(f.start_offset_s)})` : "";
    return `${f.label || f.participant_id || f.name} · ${tOr(`kind_${f.track_kind}`, f.track_kind)}${offset}`;
  }

  function chooseSource() {
    const sources = state.detail.files.filter(playable);
    $("source").replaceChildren(...sources.map((f) => el("option", { value: f.name, "data-kind": f.kind, "data-track-kind": f.track_kind || "video" }, sourceLabel(f))));
    const first = sources.find((f) => f.kind === "composite") || sources.find((f) => f.track_kind === "video") || sources[0];
    $("player").hidden = !first;
    $("player-bar").hidden = !first;
    renderNoMedia();
    if (first) setSource(first.name);
  }

  function renderNoMedia() {
    const s = state.detail.session;
    $("no-media").hidden = !$("player").hidden;
    $("no-media").textContent = s.status === "ready" || s.status === "deleted" ? t("noMedia") : t("noMediaYet", { status: tOr(`status_${s.status}`, s.status) });
  }

  // Switching keeps the moment: the new source starts where the session time was.
  function setSource(name) {
    const d = state.detail;
    const file = d.files.find((f) => f.name === name);
    if (!file) return;
    const player = $("player");
    const resume = d.source !== null ? sessionTime() : null;
    const playing = d.source !== null && !player.paused;
    d.source = name;
    d.offset = file.start_offset_s || 0;
    $("source").value = name;
    player.classList.toggle("audio-only", file.track_kind === "audio");
    player.dataset.source = name;
    player.src = fileUrl(d.session.session_id, name);
    d.pendingSeek = resume;
    if (playing) player.play().catch(() => {});
  }

  function sessionTime() {
    const d = state.detail;
    if (!d) return 0;
    return d.pendingSeek ?? $("player").currentTime + d.offset;
  }

  function seekTo(t0) {
    const d = state.detail;
    if (!d) return;
    const player = $("player");
    if (d.source !== null && player.readyState >= HTMLMediaElement.HAVE_METADATA) {
      player.currentTime = Math.max(0, t0 - d.offset);
      d.pendingSeek = null;
    } else {
      d.pendingSeek = t0;  // applied once the media has loaded (never, when there is none)
    }
    update(t0);
  }

  function onMetadata() {
    const d = state.detail;
    if (!d) return;
    if (d.pendingSeek !== null) {
      $("player").currentTime = Math.max(0, d.pendingSeek - d.offset);
      d.pendingSeek = null;
    }
    renderTimeline();
  }

  function sessionLength() {
    const d = state.detail;
    const s = d.session;
    const lastEvent = d.events.length ? d.events[d.events.length - 1].t : 0;
    const media = Number.isFinite($("player").duration) ? $("player").duration + d.offset : 0;
    return Math.max(s.duration_s || 0, s.ended_at && s.started_at ? s.ended_at - s.started_at : 0, lastEvent, media, 1);
  }

  const percent = (t0) => `${Math.min(100, Math.max(0, (t0 / sessionLength()) * 100)).toFixed(3)}%`;

  // -- Timeline, evidence, transcript ---------------------------------------------------------

  function eventName(ev) {
    return tOr(`ev_${ev.type}`, String(ev.type || "").replace(/_/g, " "));
  }

  function eventText(ev) {
    if (ev.type === "quality_alert") {
      return `${eventName(ev)} — ${alertText(ev)}${ev.state === "cleared" ? ` (${t("cleared")})` : ""}`;
    }
    if (ev.type === "tier_changed") {
      return `${eventName(ev)} — ${t("tierChange", { who: personName(participantInfo(ev.participant_id)), from: tierName(ev.from), to: tierName(ev.to) })}`;
    }
    if (ev.type === "quality_summary") {
      return `${eventName(ev)} — ${t("summaryText", { who: personName(ev), mos: fixed(ev.mos_avg, 2) })}`;
    }
    if (RISKS.has(ev.type)) {
      const severity = ev.severity ? ` · ${tOr(`severity_${ev.severity}`, ev.severity)}` : "";
      return `${eventName(ev)} — “${ev.phrase || ev.rule || ""}”${ev.role ? ` (${roleName(ev.role)})` : ""}${severity}`;
    }
    if (ev.type === "tts_played" || ev.type === "tts_failed") {
      const what = ev.kind ? tOr(`played_${ev.kind}`, ev.kind) : "";
      return `${eventName(ev)} — ${[what, ev.text || ev.error].filter(Boolean).join(": ")}`;
    }
    return ev.label ? `${eventName(ev)} — ${ev.label}` : eventName(ev);
  }

  function eventClass(ev) {
    if (ev.type === "quality_alert") return ev.state === "cleared" ? "alert cleared" : "alert";
    if (ev.type === "tier_changed") return "quality";
    if (RISKS.has(ev.type)) return `alert risk${ev.severity === "critical" ? " critical" : ""}`;
    if (ev.type === "tts_played") return "prompt";
    if (EVIDENCE.has(ev.type)) return "evidence";
    if (ALERTS.has(ev.type)) return "alert";
    if (/barge|whisper|monitor|force/.test(String(ev.type))) return "supervisor";
    return "";
  }

  function renderTimeline() {
    const d = state.detail;
    if (!d) return;
    const bar = $("timeline-bar");
    // Events at (nearly) the same moment fan out to the right, so each can be clicked.
    const span = sessionLength();
    let clusterT = -Infinity;
    let inCluster = 0;
    const markers = d.events.map((ev) => {
      if (ev.t - clusterT > span * 0.012) { clusterT = ev.t; inCluster = 0; } else { inCluster += 1; }
      const marker = el("button", {
        type: "button", class: `marker ${eventClass(ev)}`, "data-seq": ev.seq, "data-type": ev.type, "data-t": ev.t, "data-severity": ev.severity,
        title: `${clock(ev.t)} ${eventText(ev)}`, "aria-label": `${clock(ev.t)} ${eventText(ev)}`,
      });
      marker.style.left = inCluster ? `calc(${percent(ev.t)} + ${inCluster * 0.95}rem)` : percent(ev.t);
      marker.addEventListener("click", (event) => {
        event.stopPropagation();
        pick(ev);
      });
      return marker;
    });
    bar.replaceChildren($("playhead"), ...markers);
    $("event-list").replaceChildren(...d.events.map((ev) => {
      const item = el("li", { "data-seq": ev.seq, "data-type": ev.type, class: eventClass(ev) },
        el("button", { type: "button", class: "event" }, el("span", { class: "at" }, clock(ev.t)), " ", eventText(ev)));
      item.firstChild.addEventListener("click", () => pick(ev));
      return item;
    }));
    $("no-events").hidden = d.events.length > 0;
    update(sessionTime());
  }

  // A marker or list entry: go there, and show its evidence even if a later one is due.
  function pick(ev) {
    seekTo(ev.t);
    if (EVIDENCE.has(ev.type)) showEvidence(ev);
  }

  function evidenceAt(t0) {
    let found = null;
    for (const ev of state.detail.events) {
      if (ev.t > t0 + 0.05) break;
      if (EVIDENCE.has(ev.type)) found = ev;
    }
    return found;
  }

  function showEvidence(ev) {
    const d = state.detail;
    const box = $("evidence");
    if (d.shown === (ev?.seq ?? null)) return;
    d.shown = ev?.seq ?? null;
    box.dataset.seq = ev ? String(ev.seq) : "";
    box.dataset.type = ev ? ev.type : "";
    if (!ev) {
      $("evidence-body").replaceChildren(el("p", { class: "muted" }, t("noEvidenceYet")));
      return;
    }
    const parts = [el("p", { class: "evidence-when" }, `${clock(ev.t)} · ${eventName(ev)}`)];
    const payload = ev.payload && typeof ev.payload === "object" ? ev.payload : {};
    const type = String(ev.type).replace(/^call_/, "");
    if (type === "material_pushed") {
      const material = ev.material || payload;
      parts.push(el("p", { class: "material-title" }, material.title || ev.label || ""));
      if (material.page) parts.push(el("p", { class: "material-page" }, t("page", { page: material.page })));
      if (safeImage(material.url)) parts.push(el("img", { class: "material-image", src: material.url, alt: material.title || "" }));
      else if (safeLink(material.url)) parts.push(el("a", { href: material.url, target: "_blank", rel: "noopener noreferrer" }, t("openMaterial")));
    } else if (type === "confirmation_requested" || type === "confirmation_answered") {
      const request = ev.confirmation || payload;
      const text = ev.text ?? request.text ?? ([request.what, request.amount, request.account_masked].filter(Boolean).join(" · ") || ev.label);
      if (text) parts.push(el("blockquote", { class: "confirmation-text" }, String(text)));
      if (type === "confirmation_answered") {
        const accepted = ev.accepted ?? request.answer?.accepted ?? payload.accepted;
        parts.push(el("p", { class: accepted ? "confirmation-result ok" : "confirmation-result error" }, accepted ? t("confirmAccepted") : t("confirmDeclined")));
        if (safeImage(ev.signature)) parts.push(el("figure", {}, el("img", { class: "signature", src: ev.signature, alt: t("signature") }), el("figcaption", {}, t("signature"))));
      }
    } else if (type === "snapshot") {
      const image = ev.image ?? payload.image;
      if (safeImage(image)) parts.push(el("img", { class: "snapshot", src: image, alt: ev.label || t("snapshotAlt") }));
      if (ev.label) parts.push(el("p", {}, ev.label));
    } else if (type === "identity_check") {
      parts.push(el("p", { class: "identity-result" }, t("identityResult", { result: ev.result ?? payload.result ?? t("unknown") })));
      if (ev.label) parts.push(el("p", {}, ev.label));
    }
    $("evidence-body").replaceChildren(...parts);
  }

  // -- The transcript: lines, risk hits and prompts played, by time ------------------------

  // mm:ss (h:mm:ss past an hour) of an offset in the session.
  function mmss(seconds) {
    const s = Math.max(0, Math.floor(seconds || 0));
    const m = Math.floor(s / 60);
    const ss = String(s % 60).padStart(2, "0");
    return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${ss}` : `${String(m).padStart(2, "0")}:${ss}`;
  }

  const roleName = (role) => tOr(`role_${role}`, tOr(`who_${role}`, String(role || "")));
  const riskKind = (hit) => (hit.category === "fraud_coaching" ? t("fraudRisk") : t("contentRisk"));

  // Which line a risk hit was heard in: it is raised when the line is final, so after the
  // line ends; the latest line of that speaker (role) before it that has the phrase, else
  // the latest of that speaker shortly before. A hit in the chat has no line.
  function lineOfRisk(lines, hit) {
    if (hit.source === "chat") return null;
    const at = hit.offset_s + 0.5;
    const phrase = String(hit.phrase || "").toLowerCase();
    const before = lines.filter((l) => l.line.start_s <= at && (!hit.role || !l.line.role || l.line.role === hit.role)).reverse();
    return (phrase && before.find((l) => at - l.line.end_s <= 120 && String(l.line.text || "").toLowerCase().includes(phrase)))
      || before.find((l) => at - l.line.end_s <= 15) || null;
  }

  function transcriptItems(tr) {
    const lines = tr.lines.map((line, index) => ({ kind: "line", at: line.start_s, line, index, risks: [] }));
    const others = [];
    for (const hit of tr.risk) {
      const line = lineOfRisk(lines, hit);
      if (line) line.risks.push(hit);
      else others.push({ kind: "risk", at: hit.offset_s, hit });
    }
    for (const played of tr.played) others.push({ kind: "played", at: played.offset_s, played });
    return [...lines, ...others].sort((a, b) => a.at - b.at); // stable: a line before what happened at its moment
  }

  function riskBadge(hit) {
    const severity = hit.severity === "critical" ? "critical" : "warning";
    const label = hit.role ? t("riskBy", { kind: riskKind(hit), phrase: hit.phrase || hit.rule || "", who: roleName(hit.role) })
      : t("riskHit", { kind: riskKind(hit), phrase: hit.phrase || hit.rule || "" });
    const detail = [tOr(`risk_${hit.category}`, hit.category || ""), tOr(`severity_${severity}`, severity), hit.rule].filter(Boolean).join(" · ");
    return el("span", { class: "risk-badge", "data-category": hit.category || "", "data-severity": severity, "data-rule": hit.rule || "", title: detail },
      `⚠ ${label}`);
  }

  function lineText(item) {
    const d = state.detail;
    const { line, index } = item;
    const revealed = d.revealed?.texts.get(index);
    if (line.pii && typeof revealed === "string") {
      return [el("mark", { class: "text revealed", "data-revealed": "true" }, revealed), el("span", { class: "revealed-tag" }, t("revealedTag"))];
    }
    const parts = [el("span", { class: "text" }, line.text || "")];
    if (line.pii) {
      parts.push(" ", el("span", { class: "pii", title: t("piiMasked"), "aria-label": t("piiMasked") }, t("piiTag")));
      if (d.revealed?.errors.has(index)) parts.push(el("span", { class: "revealed-tag error" }, t("revealError")));
    }
    return parts;
  }

  function transcriptItem(item) {
    const at = el("button", { type: "button", class: "cue-at", "aria-label": t("playFrom", { at: mmss(item.at) }) }, mmss(item.at));
    let node;
    if (item.kind === "line") {
      const { line } = item;
      const critical = item.risks.some((h) => h.severity === "critical");
      const who = line.name ? `${line.name} (${roleName(line.role)})` : roleName(line.role) || t("unknown");
      node = el("li", {
        class: ["line", item.risks.length ? "risk" : "", critical ? "critical" : ""].filter(Boolean).join(" "),
        "data-index": item.index, "data-start": line.start_s, "data-end": line.end_s, "data-role": line.role || "",
        "data-pii": String(Boolean(line.pii)), "data-risk": item.risks.length ? String(item.risks.length) : null,
      }, at, " ", el("strong", { class: "speaker", "data-role": line.role || "" }, t("speakerSays", { who })), ...lineText(item),
      item.risks.length ? el("span", { class: "risk-badges" }, ...item.risks.map(riskBadge)) : null);
    } else if (item.kind === "risk") {
      node = el("li", { class: `risk-hit${item.hit.severity === "critical" ? " critical" : ""}`, "data-start": item.at, "data-category": item.hit.category || "" },
        at, " ", riskBadge(item.hit));
    } else {
      const p = item.played;
      node = el("li", { class: "played", "data-start": item.at, "data-kind": p.kind || "" },
        at, " ", el("span", { class: "played-label" }, `▶ ${t("promptPlayed")}`), " ",
        el("span", { class: "text" }, t("promptText", { kind: tOr(`played_${p.kind}`, p.kind || ""), text: p.text || "" })));
    }
    // The whole entry seeks (the time button is its keyboard way in).
    node.addEventListener("click", (event) => {
      if (event.target.closest("a, input")) return;
      seekTo(item.at);
    });
    return node;
  }

  function renderTranscript() {
    const d = state.detail;
    if (!d) return;
    const tr = d.transcript;
    const has = d.transcriptState === "ok" && tr;
    d.items = has ? transcriptItems(tr) : [];
    const stateLine = $("transcript-state");
    stateLine.className = d.transcriptState === "error" ? "error" : "muted";
    stateLine.dataset.state = d.transcriptState;
    stateLine.textContent = d.transcriptState === "loading" ? t("transcriptLoading")
      : d.transcriptState === "none" ? t("noTranscript")
      : d.transcriptState === "error" ? t("cannotTranscript", { error: d.transcriptError })
      : t("transcriptSummary", { lines: tr.lines.length, risks: tr.risk.length, played: tr.played.length });
    $("transcript-panel").dataset.state = d.transcriptState;
    $("transcript").replaceChildren(...d.items.map(transcriptItem));
    const sid = d.session.session_id;
    const vtt = $("transcript-vtt");
    vtt.hidden = !(has && tr.lines.length);
    if (!vtt.hidden) {
      vtt.href = `${sessionPath(sid)}/transcript.vtt?access_token=${enc(state.token)}`;
      vtt.setAttribute("download", `${sid}.vtt`);
      vtt.setAttribute("aria-label", t("downloadVttLabel"));
    } else {
      vtt.removeAttribute("href");
    }
    renderReveal();
    update(sessionTime());
  }

  // -- Reveal (compliance only, audited) ------------------------------------------------------

  function renderReveal() {
    const d = state.detail;
    const button = $("reveal-open");
    const pii = d?.transcriptState === "ok" && d.transcript.lines.some((l) => l.pii);
    button.hidden = !(pii && state.role === "compliance");
    const shown = Boolean(d?.revealed);
    button.textContent = shown ? t("hidePii") : t("revealPii");
    button.setAttribute("aria-pressed", String(shown));
    button.setAttribute("aria-expanded", String(!$("reveal-form").hidden));
    button.disabled = Boolean(d?.revealing);
    if (button.hidden) $("reveal-form").hidden = true;
    const notice = $("reveal-notice");
    notice.hidden = !shown;
    notice.textContent = shown ? t("revealedNotice", { n: d.revealed.texts.size, reason: d.revealed.reason }) : "";
  }

  function toggleReveal() {
    const d = state.detail;
    if (!d) return;
    if (d.revealed) {  // mask again; nothing to ask the server
      d.revealed = null;
      renderTranscript();
      setStatus(t("piiHidden"));
      return;
    }
    const form = $("reveal-form");
    form.hidden = !form.hidden;
    renderReveal();
    if (!form.hidden) $("reveal-reason").focus();
  }

  function cancelReveal() {
    $("reveal-form").hidden = true;
    $("reveal-reason").value = "";
    renderReveal();
    $("reveal-open").focus();
  }

  async function reveal(event) {
    event.preventDefault();
    const d = state.detail;
    const reason = $("reveal-reason").value.trim();
    if (!d || !reason || d.revealing) return;
    d.revealing = true;
    $("reveal-submit").disabled = true;
    renderReveal();
    setStatus(t("revealing"));
    try {
      const body = await api("POST", `${sessionPath(d.session.session_id)}/transcript/reveal`, { reason });
      if (state.detail !== d) return;
      const texts = new Map();
      const errors = new Set();
      (Array.isArray(body.lines) ? body.lines : []).forEach((line, i) => {
        if (typeof line?.revealed === "string") texts.set(i, line.revealed);
        else if (line?.revealed_error) errors.add(i);
      });
      d.revealed = { reason, texts, errors };
      $("reveal-form").hidden = true;
      $("reveal-reason").value = "";
      setStatus(t("revealedNotice", { n: texts.size, reason }), "ok");
    } catch (error) {
      if (error.status === 403) setStatus(t("cannotReveal", { error: t("revealComplianceOnly") }), "error");
      else failed(error, "cannotReveal");
    } finally {
      d.revealing = false;
      $("reveal-submit").disabled = false;
      if (state.detail === d) renderTranscript();
    }
  }

  // Everything that follows the playhead: the bar, the current event, cue and evidence.
  function update(t0) {
    const d = state.detail;
    if (!d) return;
    $("clock").textContent = `${clock(t0)} / ${clock(sessionLength())}`;
    $("playhead").style.left = percent(t0);
    let current = null;
    for (const ev of d.events) if (ev.t <= t0 + 0.05) current = ev.seq;
    for (const item of $("event-list").children) item.classList.toggle("current", Number(item.dataset.seq) === current);
    const list = $("transcript");
    for (const item of list.children) {
      // A line is current from its start until it ends (at least half a second).
      const start = Number(item.dataset.start);
      const end = item.classList.contains("line") ? Math.max(Number(item.dataset.end), start + 0.5) : start + 0.5;
      const on = start <= t0 + 0.05 && t0 < end;
      if (on === item.classList.contains("current")) continue;
      item.classList.toggle("current", on);
      if (on) {
        item.setAttribute("aria-current", "true");
        if (item.offsetTop < list.scrollTop || item.offsetTop + item.offsetHeight > list.scrollTop + list.clientHeight) list.scrollTop = item.offsetTop - list.clientHeight / 3;
      } else {
        item.removeAttribute("aria-current");
      }
    }
    showEvidence(evidenceAt(t0));
  }

  function seekOnBar(event) {
    if (!state.detail || event.target !== $("timeline-bar")) return;
    const box = $("timeline-bar").getBoundingClientRect();
    seekTo(((event.clientX - box.left) / box.width) * sessionLength());
  }

  // -- Legal hold (compliance only) -------------------------------------------------------------

  function renderHold() {
    const s = state.detail.session;
    const stateText = s.legal_hold ? t("onHold", { reason: s.hold_reason || t("unknown") }) : s.retention_until ? t("notOnHold", { date: day(s.retention_until) }) : t("notOnHoldForever");
    $("hold-state").textContent = stateText;
    $("hold-state").dataset.hold = String(Boolean(s.legal_hold));
    const compliance = state.role === "compliance";
    $("hold-form").hidden = !compliance || s.status === "deleted";
    const toggle = $("hold-toggle");
    toggle.textContent = s.legal_hold ? t("releaseHold") : t("placeHold");
    toggle.dataset.hold = String(Boolean(s.legal_hold));
    toggle.className = s.legal_hold ? "secondary" : "danger";
    if (!compliance) $("hold-state").title = t("holdComplianceOnly");
  }

  async function toggleHold(event) {
    event.preventDefault();
    const d = state.detail;
    if (!d) return;
    const hold = !d.session.legal_hold;
    const reason = $("hold-reason").value.trim();
    $("hold-toggle").disabled = true;
    try {
      const session = await api("PUT", `${sessionPath(d.session.session_id)}/legal-hold`, { hold, reason });
      if (state.detail !== d) return;
      d.session = { ...d.session, ...session };
      state.results = state.results.map((s) => (s.session_id === session.session_id ? { ...s, ...session } : s));
      $("hold-reason").value = "";
      renderDetail();
      setStatus(hold ? t("holdPlaced") : t("holdReleased"), "ok");
    } catch (error) {
      failed(error, "cannotHold");
    } finally {
      $("hold-toggle").disabled = false;
    }
  }

  // -- Evaluations and spot checks ---------------------------------------------------------------

  function renderEvaluations() {
    const list = state.detail.evaluations;
    $("evaluations").replaceChildren(...(list.length ? list.map((e) => el("li", { "data-evaluation": e.id },
      el("strong", {}, t("evaluationBy", { by: e.by_name || e.by, at: when(e.at), total: e.max ? `${e.total}/${e.max}` : e.total })),
      el("span", { class: "scores" }, SCORES.map((k) => `${t(`score_${k}`)} ${e.scores?.[k] ?? "–"}`).join(" · ")),
      e.comments ? el("p", {}, e.comments) : null)) : [el("li", { class: "muted" }, t("noEvaluations"))]));
  }

  async function evaluate(event) {
    event.preventDefault();
    const d = state.detail;
    if (!d) return;
    const scores = Object.fromEntries(SCORES.map((k) => [k, Number($(`score-${k}`).value)]));
    $("eval-submit").disabled = true;
    try {
      const evaluation = await api("POST", `${sessionPath(d.session.session_id)}/evaluations`, { scores, comments: $("eval-comments").value.trim() });
      if (state.detail === d) {
        d.evaluations.push(evaluation);
        renderEvaluations();
      }
      $("eval-form").reset();
      const item = state.spot?.items.find((i) => i.session_id === d.session.session_id);
      if (item) {
        item.evaluated = true;
        renderSpot();
      }
      setStatus(t("evaluationSaved", { total: evaluation.total }), "ok");
    } catch (error) {
      failed(error, "cannotEvaluate");
    } finally {
      $("eval-submit").disabled = false;
    }
  }

  function isoWeek(date = new Date()) {
    const d = new Date(Date.UTC(date.getFullYear(), date.getMonth(), date.getDate()));
    const weekday = d.getUTCDay() || 7;
    d.setUTCDate(d.getUTCDate() + 4 - weekday);
    const yearStart = new Date(Date.UTC(d.getUTCFullYear(), 0, 1));
    const week = Math.ceil(((d - yearStart) / 86400000 + 1) / 7);
    return `${d.getUTCFullYear()}-W${String(week).padStart(2, "0")}`;
  }

  async function loadSpot(event) {
    event?.preventDefault();
    const week = $("spot-week").value || isoWeek();
    $("spot-week").value = week;
    $("spot-load").disabled = true;
    try {
      const body = await api("GET", `/v1/recordings/spot-checks?week=${enc(week)}`);
      state.spot = { week: body.week || week, percent: body.percent, items: body.items || [] };
      renderSpot();
    } catch (error) {
      failed(error, "cannotSpot");
    } finally {
      $("spot-load").disabled = false;
    }
  }

  function renderSpot() {
    const spot = state.spot;
    if (!spot) return;
    $("spot-percent").textContent = spot.percent === undefined || spot.percent === null ? "" : t("spotPercent", { percent: spot.percent });
    $("spot-table").tBodies[0].replaceChildren(...spot.items.map((item) => {
      const who = item.agent_name || item.agent_id || item.session_id;
      const open = el("button", { type: "button", class: "open secondary", "aria-label": t("openLabel", { who }) }, t("open"));
      open.addEventListener("click", () => openSession(item.session_id));
      const evaluateButton = el("button", { type: "button", class: "evaluate" }, t("evaluateAction"));
      evaluateButton.addEventListener("click", () => openSession(item.session_id, { evaluate: true }));
      return el("tr", { "data-session": item.session_id, "data-evaluated": String(Boolean(item.evaluated)), class: item.evaluated ? "evaluated" : "" },
        el("td", {}, who),
        el("td", {}, when(item.started_at)),
        el("td", { class: "num" }, clock(item.duration_s)),
        el("td", { "data-column": "evaluated" }, badge(item.evaluated ? t("yes") : t("no"), item.evaluated ? "status-ready" : "pending")),
        el("td", { class: "actions" }, open, evaluateButton));
    }));
    $("no-spot").hidden = spot.items.length > 0;
  }

  // -- Tabs and language ------------------------------------------------------------------------

  function showTab(name) {
    state.tab = name;
    for (const [tab, panel] of [["tab-recordings", "recordings-panel"], ["tab-spot", "spot-panel"]]) {
      const on = panel.startsWith(name);
      $(tab).setAttribute("aria-selected", String(on));
      $(panel).hidden = !on;
    }
    if (name === "spot" && !state.spot) loadSpot();
  }

  function fillScoreSelects() {
    for (const key of SCORES) {
      const select = $(`score-${key}`);
      const value = select.value;
      select.replaceChildren(el("option", { value: "" }, "–"), ...[0, 1, 2, 3, 4, 5].map((n) => el("option", { value: String(n) }, String(n))));
      select.value = value;
    }
  }

  function setLanguage(next) {
    if (!texts.use(next)) return;
    texts.keepInUrl();
    texts.apply();
    renderUser();
    renderResults();
    renderSpot();
    if (state.detail) {
      renderDetail();
      renderQuality();
      const keep = sessionTime();
      for (const option of $("source").options) {
        const file = state.detail.files.find((f) => f.name === option.value);
        if (file) option.textContent = sourceLabel(file);
      }
      renderNoMedia();
      state.detail.shown = undefined;
      renderTimeline();
      renderTranscript();
      update(keep);
    }
  }

  function init() {
    texts.apply();
    fillScoreSelects();
    setStatus(t("logInToSearch"));
    $("spot-week").value = isoWeek();
    for (const button of document.querySelectorAll("[data-lang]")) button.addEventListener("click", () => setLanguage(button.dataset.lang));
    $("login-form").addEventListener("submit", login);
    $("search-form").addEventListener("submit", search);
    $("search-form").addEventListener("reset", () => setTimeout(() => search(), 0));
    $("more").addEventListener("click", more);
    $("detail-close").addEventListener("click", back);
    $("source").addEventListener("change", () => setSource($("source").value));
    $("player").addEventListener("loadedmetadata", onMetadata);
    $("player").addEventListener("timeupdate", () => update(sessionTime()));
    $("player").addEventListener("seeked", () => update(sessionTime()));
    $("timeline-bar").addEventListener("click", seekOnBar);
    $("hold-form").addEventListener("submit", toggleHold);
    $("reveal-open").addEventListener("click", toggleReveal);
    $("reveal-cancel").addEventListener("click", cancelReveal);
    $("reveal-form").addEventListener("submit", reveal);
    $("eval-form").addEventListener("submit", evaluate);
    $("spot-form").addEventListener("submit", loadSpot);
    $("tab-recordings").addEventListener("click", () => showTab("recordings"));
    $("tab-spot").addEventListener("click", () => showTab("spot"));
    if (state.token) login();
  }

  window.teller = { state, seekTo, sessionTime };
  init();
})();
