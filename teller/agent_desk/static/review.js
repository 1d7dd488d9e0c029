// Teller risk reviewer desk (/review): the live field sessions, and one joined: the
// officer's camera large, the reviewer's microphone to the officer's phone, the officer's
// GPS track on a map drawn here (no tiles), evidence snapshots, approve or reject.
//
// REST: the field sessions API (GET /v1/field/sessions every 2 s, GET one with its
// track and snapshots, POST join / snapshots / decision / end). Signalling: docs/protocol.md
// through /static/teller-client.js (the microphone on a publication; the officer on a
// subscription; GPS fixes as data messages with topic "gps").
"use strict";

(() => {
  const POLL_MS = 2000;
  const SYNC_DEBOUNCE_MS = 200;
  const LIST_MAX = 300; // rows of the coordinate list
  const MIN_SPAN_M = 40; // the map shows at least this much ground

  const STRINGS = {
    zh: {
      htmlLang: "zh-CN", title: "现场审核台", language: "语言", controls: "控制",
      signingIn: "正在登录…", signedIn: "已登录：{name}（{id}）", signedInToken: "已使用链接中的凭证登录",
      cannotSignIn: "无法登录：{error}。请使用带 ?token= 的链接打开本页。", defaultReviewer: "风险审核员",
      sessionsHeading: "现场会话", officer: "客户经理", customer: "客户", caseNumber: "案件编号", location: "位置",
      duration: "时长", link: "连接", decision: "结论", actions: "操作", noSessions: "当前没有现场会话。",
      join: "加入", joined: "已加入", ended: "已结束", live: "进行中",
      link_connected: "已连接", link_reconnecting: "重连中", link_ended: "已结束",
      noFix: "暂无定位", fixLine: "{lat}, {lon} ±{acc} 米 · {age}前",
      decision_approve: "通过", decision_reject: "拒绝", decisionNone: "—",
      cannotList: "无法读取会话列表：{error}",
      joining: "正在加入会话…", inSession: "已加入会话：您可以看到现场并通过客户经理的手机讲话。",
      cannotJoin: "无法加入会话：{error}", noMic: "未找到麦克风：客户经理听不到您。",
      micBlocked: "麦克风被浏览器阻止：客户经理听不到您。",
      sessionTitle: "{customer} · {case}", sessionMeta: "客户经理 {officer} · 开始于 {time} · {state}",
      officerCaption: "{officer} 的现场画面", waitingVideo: "等待客户经理的画面…",
      officerAway: "客户经理暂时断线，等待重连…", tapToHear: "请点击页面任意位置以听到现场声音。",
      micOn: "麦克风：开", micOff: "麦克风：关（静音）",
      snapshot: "拍摄取证快照", snapshotting: "正在拍摄快照…", snapshotTaken: "快照已保存。",
      cannotSnapshot: "无法拍摄快照：{error}", snapshotsHeading: "取证快照", noSnapshots: "尚无快照。",
      snapshotAlt: "{time} 的取证快照", snapshotGps: "{lat}, {lon} ±{acc} 米", snapshotNoGps: "无定位",
      leave: "离开", endSession: "结束会话", ending: "正在结束会话…", cannotEnd: "无法结束会话：{error}",
      left: "您已离开会话。", sessionEnded: "该现场会话已结束。",
      gpsHeading: "位置", mapLabel: "客户经理的轨迹地图", time: "时间", lat: "纬度", lon: "经度", accuracy: "精度",
      mapEmpty: "尚无定位", mapStart: "起点", mapNote: "{n} 个定位点 · 最新 {age}前 · 精度 ±{acc} 米",
      metres: "{n} 米", plusMinus: "±{n} 米", km: "{n} 公里", north: "北",
      decisionHeading: "结论", approve: "通过", reject: "拒绝", notes: "备注", decide: "提交结论",
      chooseDecision: "请选择通过或拒绝。", notesRequired: "拒绝时必须填写备注。",
      deciding: "正在提交…", cannotDecide: "无法提交结论：{error}",
      decisionResult: "{decision}（{by}，{time}）：{notes}", decisionResultNoNotes: "{decision}（{by}，{time}）",
      unreachable: "无法连接服务器，请检查网络后重试。", refused: "服务器拒绝了请求（{status}）。",
      lost: "与服务器的连接已断开。", reconnecting: "连接中断，正在重连…",
      seconds: "{n} 秒", minutes: "{n} 分钟",
    },
    en: {
      htmlLang: "en", title: "Field review desk", language: "Language", controls: "Controls",
      signingIn: "Signing in…", signedIn: "Signed in as {name} ({id})", signedInToken: "Signed in with the link's token",
      cannotSignIn: "Cannot sign in: {error}. Open this page with a ?token= link.", defaultReviewer: "Risk reviewer",
      sessionsHeading: "Field sessions", officer: "Officer", customer: "Customer", caseNumber: "Case", location: "Location",
      duration: "Duration", link: "Link", decision: "Decision", actions: "Actions", noSessions: "No field sessions right now.",
      join: "Join", joined: "Joined", ended: "ended", live: "live",
      link_connected: "connected", link_reconnecting: "reconnecting", link_ended: "ended",
      noFix: "no position yet", fixLine: "{lat}, {lon} ±{acc} m · {age} ago",
      decision_approve: "approved", decision_reject: "rejected", decisionNone: "—",
      cannotList: "Cannot read the sessions: {error}",
      joining: "Joining the session…", inSession: "In the session: you see the site and talk through the officer's phone.",
      cannotJoin: "Cannot join the session: {error}", noMic: "No microphone was found: the officer cannot hear you.",
      micBlocked: "The microphone is blocked in the browser: the officer cannot hear you.",
      sessionTitle: "{customer} · {case}", sessionMeta: "Officer {officer} · started {time} · {state}",
      officerCaption: "{officer}'s camera", waitingVideo: "Waiting for the officer's video…",
      officerAway: "The officer's link dropped; waiting for it to come back…",
      tapToHear: "Click anywhere on the page to hear the site.",
      micOn: "Microphone on", micOff: "Microphone off (muted)",
      snapshot: "Take evidence snapshot", snapshotting: "Taking a snapshot…", snapshotTaken: "Snapshot saved.",
      cannotSnapshot: "Cannot take a snapshot: {error}", snapshotsHeading: "Evidence snapshots", noSnapshots: "No snapshots yet.",
      snapshotAlt: "Evidence snapshot at {time}", snapshotGps: "{lat}, {lon} ±{acc} m", snapshotNoGps: "no position",
      leave: "Leave", endSession: "End session", ending: "Ending the session…", cannotEnd: "Cannot end the session: {error}",
      left: "You left the session.", sessionEnded: "This field session has ended.",
      gpsHeading: "Position", mapLabel: "Map of the officer's track", time: "Time", lat: "Latitude", lon: "Longitude",
      accuracy: "Accuracy", mapEmpty: "No position yet", mapStart: "start", mapNote: "{n} fixes · latest {age} ago · ±{acc} m",
      metres: "{n} m", plusMinus: "±{n} m", km: "{n} km", north: "N",
      decisionHeading: "Decision", approve: "Approve", reject: "Reject", notes: "Notes", decide: "Submit decision",
      chooseDecision: "Choose approve or reject.", notesRequired: "Notes are required to reject.",
      deciding: "Submitting…", cannotDecide: "Cannot submit the decision: {error}",
      decisionResult: "{decision} by {by} at {time}: {notes}", decisionResultNoNotes: "{decision} by {by} at {time}",
      unreachable: "Cannot reach the server. Check your connection and try again.",
      refused: "The server refused the request ({status}).",
      lost: "The connection to the server was lost.", reconnecting: "Connection lost, reconnecting…",
      seconds: "{n} s", minutes: "{n} min",
    },
  };

  const params = new URLSearchParams(location.search);
  const texts = TellerPage.texts(STRINGS, params.get("lang"));
  const { t } = texts;
  const $ = (id) => document.getElementById(id);

  const state = {
    token: params.get("token") || null,
    fromLink: Boolean(params.get("token")),
    reviewerId: null,
    reviewerName: null,
    sessions: [],
    polledAt: 0, // performance.now() of the last list
    pollTimer: null,
    current: null, // the joined session: {field_id, room, token, detail}
    micStream: null,
    micOn: true,
    micProblem: null,
    publication: null,
    officerSub: null,
    officerPid: null,
    others: new Map(), // participant_id -> {sub, audio}: anyone else heard (another reviewer)
    syncTimer: null,
    track: [], // fixes, oldest first
    trackKeys: new Set(),
    snapshots: [],
    decision: null,
    deciding: false,
    snapshotting: false,
    videoNote: "",
  };

  const CLIENT_TEXT = { unreachable: "unreachable", timeout: "unreachable", disconnected: "lost", left: "lost" };
  const client = new TellerClient({
    text: (code) => (CLIENT_TEXT[code] ? t(CLIENT_TEXT[code]) : undefined),
    awaits: (info) => info.participant_id === state.officerPid,
  });
  const api = TellerPage.api({ token: () => state.token, text: t });

  function setStatus(text, isError = false) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  const finite = (v) => typeof v === "number" && Number.isFinite(v);
  const pad = (n) => String(n).padStart(2, "0");

  function clock(ts) {
    const d = new Date(ts * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
  }

  function age(seconds) {
    const s = Math.max(0, Math.round(seconds));
    return s < 120 ? t("seconds", { n: s }) : t("minutes", { n: Math.round(s / 60) });
  }

  // The server's clock now, from the last list (a live session's started_at + duration_s
  // is the server's time at the list): ages and durations do not depend on this PC's clock.
  function serverNow() {
    const live = state.sessions.find((s) => s.state === "live" && finite(s.started_at) && finite(s.duration_s));
    const since = (performance.now() - state.polledAt) / 1000;
    return live ? live.started_at + live.duration_s + since : Date.now() / 1000;
  }

  function sessionDuration(s) {
    if (s.state !== "live") return s.duration_s ?? 0;
    return (s.duration_s ?? 0) + (performance.now() - state.polledAt) / 1000;
  }

  // -- language ----------------------------------------------------------------------------

  function applyLanguage() {
    texts.apply();
    renderSignedIn();
    renderSessions();
    renderCurrent();
    renderTrack();
    renderSnapshots();
    renderDecision();
    renderMic();
  }

  function setLanguage(lang) {
    if (!texts.use(lang)) return;
    texts.keepInUrl();
    applyLanguage();
  }

  // -- sign in and the list ---------------------------------------------------------------

  async function signIn() {
    if (state.fromLink) { renderSignedIn(); return true; }
    setStatus(t("signingIn"));
    const name = params.get("name") || t("defaultReviewer");
    try {
      const body = await api("POST", "/v1/dev/field", { role: "reviewer", name }, null);
      state.token = body.token;
      state.reviewerId = body.id;
      state.reviewerName = name;
      renderSignedIn();
      setStatus("");
      return true;
    } catch (error) {
      setStatus(t("cannotSignIn", { error: error.message }), true);
      return false;
    }
  }

  function renderSignedIn() {
    $("signed-in").textContent = state.fromLink ? t("signedInToken")
      : state.reviewerId ? t("signedIn", { name: state.reviewerName, id: state.reviewerId }) : "";
  }

  async function poll() {
    clearTimeout(state.pollTimer);
    try {
      const body = await api("GET", "/v1/field/sessions");
      state.sessions = Array.isArray(body.sessions) ? body.sessions : [];
      state.polledAt = performance.now();
      if ($("status").className === "error" && $("status").dataset.kind === "list") setStatus("");
      onSessions();
    } catch (error) {
      setStatus(t("cannotList", { error: error.message }), true);
      $("status").dataset.kind = "list";
    }
    state.pollTimer = setTimeout(poll, POLL_MS);
  }

  function onSessions() {
    renderSessions();
    const cur = state.current;
    if (!cur) return;
    const s = state.sessions.find((x) => x.field_id === cur.field_id);
    if (!s) return;
    cur.summary = s;
    if (s.decision && !sameDecision(s.decision, state.decision)) {
      state.decision = s.decision;
      renderDecision();
    }
    renderCurrent();
  }

  const sameDecision = (a, b) => Boolean(a && b) && a.decision === b.decision && a.ts === b.ts;

  function fixText(fix, nowS) {
    if (!fix) return t("noFix");
    return t("fixLine", {
      lat: fix.lat.toFixed(5), lon: fix.lon.toFixed(5),
      acc: finite(fix.accuracy_m) ? Math.round(fix.accuracy_m) : "?", age: age(nowS - fix.ts),
    });
  }

  function linkOf(s) {
    if (s.state !== "live") return "ended";
    return s.officer_connected ? "connected" : "reconnecting";
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function renderSessions() {
    const tbody = $("session-rows");
    const nowS = serverNow();
    const focused = document.activeElement?.dataset?.join; // kept across the redraw
    const rows = state.sessions.map((s) => {
      const tr = document.createElement("tr");
      tr.dataset.fieldId = s.field_id;
      tr.dataset.state = s.state;
      const link = linkOf(s);
      const linkCell = cell(t(`link_${link}`), "link");
      linkCell.dataset.link = link;
      const decisionCell = cell(s.decision ? t(`decision_${s.decision.decision}`) : t("decisionNone"), "decision");
      if (s.decision) decisionCell.dataset.decision = s.decision.decision;
      const action = document.createElement("td");
      if (s.state === "live") {
        const button = document.createElement("button");
        button.type = "button";
        const inIt = state.current?.field_id === s.field_id;
        button.textContent = inIt ? t("joined") : t("join");
        button.disabled = inIt;
        button.dataset.join = s.field_id;
        button.setAttribute("aria-label", `${t("join")}: ${s.case_number} ${s.customer?.name || ""}`);
        action.append(button);
      } else {
        action.textContent = t("ended");
      }
      tr.append(
        cell(s.officer?.name || s.officer?.id || "", "officer"),
        cell(s.customer?.name || "", "customer"),
        cell(s.case_number || "", "case"),
        cell(fixText(s.last_fix, nowS), "location"),
        cell(duration(sessionDuration(s)), "duration"),
        linkCell, decisionCell, action,
      );
      return tr;
    });
    tbody.replaceChildren(...rows);
    $("no-sessions").hidden = rows.length > 0;
    if (focused) tbody.querySelector(`button[data-join="${CSS.escape(focused)}"]`)?.focus();
  }

  // Every second: durations and ages tick without a new list.
  function tick() {
    const nowS = serverNow();
    for (const tr of $("session-rows").children) {
      const s = state.sessions.find((x) => x.field_id === tr.dataset.fieldId);
      if (!s) continue;
      tr.querySelector(".duration").textContent = duration(sessionDuration(s));
      tr.querySelector(".location").textContent = fixText(s.last_fix, nowS);
    }
    if (state.current) renderMapNote();
  }

  // -- joining -----------------------------------------------------------------------------

  async function join(fieldId) {
    if (state.current?.field_id === fieldId) return;
    if (state.current) await leave(true);
    setStatus(t("joining"));
    const path = `/v1/field/sessions/${encodeURIComponent(fieldId)}`;
    let grant;
    try {
      grant = await api("POST", `${path}/join`, {});
    } catch (error) {
      setStatus(t("cannotJoin", { error: error.message }), true);
      return;
    }
    state.current = { field_id: fieldId, room: grant.room, token: grant.token, summary: state.sessions.find((s) => s.field_id === fieldId) || null };
    state.track = [];
    state.trackKeys = new Set();
    state.snapshots = [];
    state.decision = state.current.summary?.decision || null;
    state.officerPid = null;
    $("session").hidden = false;
    $("decision-form").reset();
    $("decision-error").textContent = "";
    $("snapshot-status").textContent = "";
    renderCurrent();
    renderTrack();
    renderSnapshots();
    renderDecision();
    renderSessions();
    try {
      await openMic();
      await client.join(grant.token);
      if (state.micStream && state.micStream.getAudioTracks().length) {
        state.publication = client.publish(state.micStream, { source: "microphone" });
        state.publication.ready.catch((error) => setStatus(t("cannotJoin", { error: error.message }), true));
      }
      scheduleSync();
      await loadDetail();
      setStatus(state.micProblem ? t(state.micProblem) : t("inSession"), Boolean(state.micProblem));
    } catch (error) {
      setStatus(t("cannotJoin", { error: error.message }), true);
      await leave(true);
    }
  }

  async function loadDetail() {
    const cur = state.current;
    if (!cur) return;
    const detail = await api("GET", `/v1/field/sessions/${encodeURIComponent(cur.field_id)}`);
    if (state.current !== cur) return;
    cur.summary = detail;
    for (const fix of detail.track || []) addFix(fix, false);
    const known = new Set(state.snapshots.map((s) => s.snapshot_id));
    for (const snap of detail.snapshots || []) if (!known.has(snap.snapshot_id)) state.snapshots.push(snap);
    if (detail.decision) state.decision = detail.decision;
    renderCurrent();
    renderTrack();
    renderSnapshots();
    renderDecision();
  }

  async function openMic() {
    state.micProblem = null;
    if (!navigator.mediaDevices?.getUserMedia) { state.micProblem = "noMic"; return; }
    try {
      state.micStream = await navigator.mediaDevices.getUserMedia({ audio: true });
      for (const track of state.micStream.getAudioTracks()) track.enabled = state.micOn;
    } catch (error) {
      state.micStream = null;
      state.micProblem = error.name === "NotAllowedError" ? "micBlocked" : "noMic";
    }
    renderMic();
  }

  function toggleMic() {
    state.micOn = !state.micOn;
    for (const track of state.micStream?.getAudioTracks() || []) track.enabled = state.micOn;
    renderMic();
  }

  function renderMic() {
    const button = $("mute");
    button.setAttribute("aria-pressed", String(state.micOn));
    button.textContent = state.micOn ? t("micOn") : t("micOff");
    button.disabled = !state.micStream;
  }

  async function leave(quiet = false) {
    const cur = state.current;
    state.current = null;
    state.officerPid = null;
    clearTimeout(state.syncTimer);
    if (client.phase !== "idle") await client.leave().catch(() => client.close());
    dropOfficer(false);
    for (const id of [...state.others.keys()]) dropOther(id, false);
    state.publication = null;
    state.micStream?.getTracks().forEach((track) => track.stop());
    state.micStream = null;
    $("officer-video").srcObject = null;
    $("session").hidden = true;
    renderSessions();
    if (!quiet && cur) setStatus(t("left"));
  }

  async function endSession() {
    const cur = state.current;
    if (!cur) return;
    setStatus(t("ending"));
    try {
      await api("POST", `/v1/field/sessions/${encodeURIComponent(cur.field_id)}/end`, {});
    } catch (error) {
      setStatus(t("cannotEnd", { error: error.message }), true);
      return;
    }
    await leave(true);
    setStatus(t("sessionEnded"));
    poll();
  }

  // -- the officer's media -----------------------------------------------------------------

  for (const type of ["participant_joined", "participant_left", "track_published", "track_unpublished"]) {
    client.on(type, () => scheduleSync());
  }
  client.on("resumed", () => scheduleSync());
  client.on("reconnecting", () => setStatus(t("reconnecting"), true));
  client.on("restored", () => { if (state.current) setStatus(t("inSession")); });
  client.on("closed", ({ reason, error }) => {
    if (!state.current) return;
    if (reason === "field_session_ended") setStatus(t("sessionEnded"));
    else setStatus(error?.message || t("lost"), true);
    leave(true);
    poll();
  });
  client.on("data", (message) => {
    if (message.topic !== "gps" || !state.current || !message.payload) return;
    if (message.from_participant_id && message.from_participant_id === client.participantId) return;
    addFix(message.payload, true);
  });

  function scheduleSync() {
    clearTimeout(state.syncTimer);
    state.syncTimer = setTimeout(syncOfficer, SYNC_DEBOUNCE_MS);
  }

  function isOfficer(info) {
    const officer = state.current?.summary?.officer;
    return (officer?.id && info.identity === officer.id) || info.role === "officer";
  }

  function syncOfficer() {
    if (client.phase !== "joined" || !state.current) return;
    let officer = null;
    for (const info of client.participants.values()) {
      if (info.participant_id === client.participantId) continue;
      if (isOfficer(info) && (!officer || (info.tracks || []).length)) officer = info;
    }
    // The officer: camera and microphone on one subscription, shown large.
    if (!officer || !(officer.tracks || []).length) {
      dropOfficer(true);
      state.officerPid = officer?.participant_id || null;
    } else {
      const tracks = pick(officer.tracks);
      const sub = state.officerSub;
      const same = sub && !sub.closed && sub.participantId === officer.participant_id && tracks.every((tr) => sub.trackIds.has(tr.track_id));
      if (!same) {
        dropOfficer(true);
        subscribeOfficer(officer.participant_id, tracks);
      }
      state.officerPid = officer.participant_id;
    }
    // Anyone else (another reviewer, a supervisor who speaks): heard.
    for (const id of [...state.others.keys()]) if (!client.participants.has(id)) dropOther(id, false);
    for (const info of client.participants.values()) {
      const id = info.participant_id;
      if (id === client.participantId || id === state.officerPid || isOfficer(info) || info.role === "service") continue;
      const audio = (info.tracks || []).filter((tr) => tr.kind === "audio").slice(0, 1);
      const entry = state.others.get(id);
      if (!audio.length) { dropOther(id, true); continue; }
      if (entry && !entry.sub.closed && audio.every((tr) => entry.sub.trackIds.has(tr.track_id))) continue;
      dropOther(id, true);
      hearOther(id, audio);
    }
    renderCurrent();
  }

  // One audio and one video track: the camera before anything else.
  function pick(tracks) {
    const audio = tracks.find((tr) => tr.kind === "audio" && tr.source === "microphone") || tracks.find((tr) => tr.kind === "audio");
    const video = tracks.find((tr) => tr.kind === "video" && tr.source === "camera") || tracks.find((tr) => tr.kind === "video");
    return [audio, video].filter(Boolean);
  }

  function subscribeOfficer(participantId, tracks) {
    const video = $("officer-video");
    const sub = client.subscribe(participantId, tracks, {
      byTrackIds: true,
      onTrack: () => {
        if (video.srcObject !== sub.stream) video.srcObject = sub.stream;
        play(video);
        renderCurrent();
      },
      onClose: () => {
        if (state.officerSub === sub) state.officerSub = null;
        if (video.srcObject === sub.stream) video.srcObject = null;
        renderCurrent();
      },
    });
    state.officerSub = sub;
    sub.ready.catch((error) => {
      if (["track_not_found", "participant_not_found", "disconnected", "left"].includes(error.code)) return;
      setStatus(t("cannotJoin", { error: error.message }), true);
    });
  }

  function dropOfficer(tellServer) {
    state.officerSub?.close(tellServer);
    state.officerSub = null;
  }

  function hearOther(participantId, tracks) {
    const audio = document.createElement("audio");
    audio.autoplay = true;
    $("other-audio").append(audio);
    const sub = client.subscribe(participantId, tracks, {
      onTrack: () => { audio.srcObject = sub.stream; play(audio); },
      onClose: () => {
        if (state.others.get(participantId)?.sub === sub) state.others.delete(participantId);
        audio.remove();
      },
    });
    state.others.set(participantId, { sub, audio });
    sub.ready.catch(() => {});
  }

  function dropOther(participantId, tellServer) {
    state.others.get(participantId)?.sub.close(tellServer);
    state.others.delete(participantId);
  }

  // Sound may be blocked until the user interacts: play muted, unmute on the first click.
  function play(media) {
    media.play().catch((error) => {
      if (error.name !== "NotAllowedError") return;
      media.muted = true;
      media.play().catch(() => {});
      setStatus(t("tapToHear"));
      document.addEventListener("click", () => {
        media.muted = false;
        media.play().catch(() => {});
      }, { once: true });
    });
  }

  function renderCurrent() {
    const cur = state.current;
    if (!cur) return;
    const s = cur.summary || {};
    const officerName = s.officer?.name || s.officer?.id || "";
    $("session-title").textContent = t("sessionTitle", { customer: s.customer?.name || "", case: s.case_number || "" });
    $("session-meta").textContent = t("sessionMeta", {
      officer: officerName, time: finite(s.started_at) ? clock(s.started_at) : "", state: t(`link_${linkOf({ state: s.state || "live", officer_connected: s.officer_connected !== false })}`),
    });
    $("officer-caption").textContent = t("officerCaption", { officer: officerName });
    const video = $("officer-video");
    const hasVideo = Boolean(video.srcObject && video.srcObject.getVideoTracks().length);
    const note = s.state === "ended" ? t("sessionEnded") : hasVideo ? "" : s.officer_connected === false ? t("officerAway") : t("waitingVideo");
    $("video-state").textContent = note;
    $("video-state").hidden = !note;
    $("snapshot").disabled = state.snapshotting || s.state === "ended";
    $("end-session").disabled = s.state === "ended";
  }

  // -- GPS: the list and the map -------------------------------------------------------------

  function addFix(fix, live) {
    if (!fix || !finite(fix.lat) || !finite(fix.lon)) return;
    const ts = finite(fix.ts) ? fix.ts : Date.now() / 1000;
    const key = `${ts}:${fix.lat}:${fix.lon}`;
    if (state.trackKeys.has(key)) return;
    state.trackKeys.add(key);
    const entry = { ...fix, ts };
    const track = state.track;
    if (!track.length || track[track.length - 1].ts <= ts) track.push(entry);
    else {
      const at = track.findIndex((f) => f.ts > ts);
      track.splice(at, 0, entry);
    }
    if (live) renderTrack();
  }

  function renderTrack() {
    const rows = [];
    const track = state.track;
    for (let i = track.length - 1; i >= 0 && rows.length < LIST_MAX; i--) {
      const fix = track[i];
      const tr = document.createElement("tr");
      tr.append(
        cell(clock(fix.ts), "time"), cell(fix.lat.toFixed(6), "lat"), cell(fix.lon.toFixed(6), "lon"),
        cell(finite(fix.accuracy_m) ? t("plusMinus", { n: Math.round(fix.accuracy_m) }) : "–", "acc"),
      );
      rows.push(tr);
    }
    $("gps-list").replaceChildren(...rows);
    renderMapNote();
    drawMap();
  }

  function renderMapNote() {
    const last = state.track[state.track.length - 1];
    $("map-note").textContent = last ? t("mapNote", {
      n: state.track.length, age: age(serverNow() - last.ts), acc: finite(last.accuracy_m) ? Math.round(last.accuracy_m) : "?",
    }) : "";
  }

  // A round length for the scale bar: 1, 2 or 5 times a power of ten, at most `max` metres.
  function niceMetres(max) {
    const power = 10 ** Math.floor(Math.log10(Math.max(max, 1e-3)));
    for (const step of [5, 2, 1]) if (step * power <= max) return step * power;
    return power;
  }

  // The track on an equirectangular projection around its middle, scaled to its bounds
  // (at least MIN_SPAN_M across), with the start, the current position and its accuracy,
  // a scale bar in metres and a north arrow. No map tiles: nothing leaves the page.
  function drawMap() {
    const canvas = $("map");
    const width = canvas.clientWidth || 320;
    const height = canvas.clientHeight || 240;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#eef3e8";
    ctx.fillRect(0, 0, width, height);
    const track = state.track;
    ctx.font = "13px system-ui, sans-serif";
    if (!track.length) {
      ctx.fillStyle = "#4a525c";
      ctx.textAlign = "center";
      ctx.fillText(t("mapEmpty"), width / 2, height / 2);
      return;
    }
    const M_PER_DEG = (Math.PI / 180) * 6371000;
    let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
    for (const f of track) {
      minLat = Math.min(minLat, f.lat); maxLat = Math.max(maxLat, f.lat);
      minLon = Math.min(minLon, f.lon); maxLon = Math.max(maxLon, f.lon);
    }
    const lat0 = (minLat + maxLat) / 2;
    const lon0 = (minLon + maxLon) / 2;
    const k = Math.cos((lat0 * Math.PI) / 180);
    const toM = (f) => [(f.lon - lon0) * k * M_PER_DEG, (f.lat - lat0) * M_PER_DEG];
    const spanX = Math.max((maxLon - minLon) * k * M_PER_DEG, MIN_SPAN_M);
    const spanY = Math.max((maxLat - minLat) * M_PER_DEG, MIN_SPAN_M);
    const margin = 28;
    const scale = Math.min((width - 2 * margin) / spanX, (height - 2 * margin) / spanY); // px per metre
    const toPx = (f) => {
      const [x, y] = toM(f);
      return [width / 2 + x * scale, height / 2 - y * scale];
    };

    // A faint grid every scale-bar step.
    const step = niceMetres(width / 4 / scale);
    ctx.strokeStyle = "rgba(0, 0, 0, 0.07)";
    ctx.lineWidth = 1;
    const gridPx = step * scale;
    if (gridPx > 8) {
      for (let x = (width / 2) % gridPx; x < width; x += gridPx) { ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, height); ctx.stroke(); }
      for (let y = (height / 2) % gridPx; y < height; y += gridPx) { ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(width, y); ctx.stroke(); }
    }

    const last = track[track.length - 1];
    const [cx, cy] = toPx(last);
    if (finite(last.accuracy_m) && last.accuracy_m > 0) {
      ctx.beginPath();
      ctx.arc(cx, cy, Math.max(3, last.accuracy_m * scale), 0, 2 * Math.PI);
      ctx.fillStyle = "rgba(11, 92, 173, 0.12)";
      ctx.strokeStyle = "rgba(11, 92, 173, 0.45)";
      ctx.fill();
      ctx.stroke();
    }
    if (track.length > 1) {
      ctx.beginPath();
      track.forEach((f, i) => {
        const [x, y] = toPx(f);
        if (i === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      });
      ctx.strokeStyle = "#0b5cad";
      ctx.lineWidth = 3;
      ctx.lineJoin = "round";
      ctx.stroke();
    }
    // Start: a green ring; now: a red dot.
    const [sx, sy] = toPx(track[0]);
    ctx.beginPath();
    ctx.arc(sx, sy, 6, 0, 2 * Math.PI);
    ctx.fillStyle = "#fff";
    ctx.fill();
    ctx.lineWidth = 3;
    ctx.strokeStyle = "#16794c";
    ctx.stroke();
    ctx.fillStyle = "#16794c";
    ctx.textAlign = "left";
    ctx.fillText(t("mapStart"), sx + 9, sy + 4);
    ctx.beginPath();
    ctx.arc(cx, cy, 7, 0, 2 * Math.PI);
    ctx.fillStyle = "#d50000";
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fff";
    ctx.stroke();

    // Scale bar, bottom left.
    const barPx = step * scale;
    const bx = 12;
    const by = height - 14;
    ctx.strokeStyle = "#1b1f24";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(bx, by - 5); ctx.lineTo(bx, by); ctx.lineTo(bx + barPx, by); ctx.lineTo(bx + barPx, by - 5);
    ctx.stroke();
    ctx.fillStyle = "#1b1f24";
    ctx.textAlign = "left";
    ctx.fillText(step >= 1000 ? t("km", { n: step / 1000 }) : t("metres", { n: step }), bx + 4, by - 7);

    // North arrow, top right.
    const nx = width - 20;
    const ny = 14;
    ctx.beginPath();
    ctx.moveTo(nx, ny); ctx.lineTo(nx - 7, ny + 18); ctx.lineTo(nx, ny + 13); ctx.lineTo(nx + 7, ny + 18);
    ctx.closePath();
    ctx.fillStyle = "#1b1f24";
    ctx.fill();
    ctx.textAlign = "center";
    ctx.fillText(t("north"), nx, ny + 32);
  }

  // -- snapshots ---------------------------------------------------------------------------

  async function takeSnapshot() {
    const cur = state.current;
    if (!cur || state.snapshotting) return;
    state.snapshotting = true;
    renderCurrent();
    $("snapshot-status").textContent = t("snapshotting");
    try {
      const body = state.officerPid ? { participant_id: state.officerPid } : {};
      const snap = await api("POST", `/v1/field/sessions/${encodeURIComponent(cur.field_id)}/snapshots`, body);
      if (state.current !== cur) return;
      state.snapshots.push(snap);
      renderSnapshots();
      $("snapshot-status").textContent = t("snapshotTaken");
    } catch (error) {
      $("snapshot-status").textContent = t("cannotSnapshot", { error: error.message });
    } finally {
      state.snapshotting = false;
      renderCurrent();
    }
  }

  function renderSnapshots() {
    const list = $("snapshots");
    const items = [...state.snapshots].sort((a, b) => (b.ts || 0) - (a.ts || 0)).map((snap) => {
      const li = document.createElement("li");
      li.dataset.snapshotId = snap.snapshot_id;
      const src = `${snap.url}${snap.url.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(state.token || "")}`;
      const link = document.createElement("a");
      link.href = src;
      link.target = "_blank";
      link.rel = "noopener";
      const img = document.createElement("img");
      img.src = src;
      img.alt = t("snapshotAlt", { time: clock(snap.ts) });
      img.loading = "lazy";
      link.append(img);
      const caption = document.createElement("p");
      const gps = snap.gps;
      const where = gps ? t("snapshotGps", { lat: gps.lat.toFixed(6), lon: gps.lon.toFixed(6), acc: finite(gps.accuracy_m) ? Math.round(gps.accuracy_m) : "?" }) : t("snapshotNoGps");
      caption.textContent = `${clock(snap.ts)} · ${where}${snap.width ? ` · ${snap.width}×${snap.height}` : ""}`;
      li.append(link, caption);
      return li;
    });
    list.replaceChildren(...items);
    if (!items.length && state.current) $("snapshot-status").textContent ||= t("noSnapshots");
  }

  // -- decision ------------------------------------------------------------------------------

  async function decide(event) {
    event.preventDefault();
    const cur = state.current;
    if (!cur || state.deciding) return;
    const error = $("decision-error");
    error.textContent = "";
    const choice = new FormData($("decision-form")).get("decision");
    const notes = $("decision-notes").value.trim();
    if (!choice) { error.textContent = t("chooseDecision"); return; }
    if (choice === "reject" && !notes) { error.textContent = t("notesRequired"); $("decision-notes").focus(); return; }
    state.deciding = true;
    $("decide").disabled = true;
    $("decision-result").textContent = t("deciding");
    try {
      const result = await api("POST", `/v1/field/sessions/${encodeURIComponent(cur.field_id)}/decision`, { decision: choice, notes });
      if (state.current !== cur) return;
      state.decision = result;
      renderDecision();
      poll();
    } catch (err) {
      error.textContent = t("cannotDecide", { error: err.message });
      renderDecision();
    } finally {
      state.deciding = false;
      $("decide").disabled = false;
    }
  }

  function renderDecision() {
    const d = state.decision;
    const out = $("decision-result");
    if (!d) { out.textContent = ""; delete out.dataset.decision; return; }
    const vars = { decision: t(`decision_${d.decision}`), by: d.by_name || d.by || "", time: finite(d.ts) ? clock(d.ts) : "", notes: d.notes || "" };
    out.textContent = d.notes ? t("decisionResult", vars) : t("decisionResultNoNotes", vars);
    out.dataset.decision = d.decision;
  }

  // -- test hook -----------------------------------------------------------------------------

  async function stats() {
    const video = $("officer-video");
    let decodedFrames = 0;
    try {
      const report = await state.officerSub?.pc?.getStats();
      report?.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") decodedFrames += s.framesDecoded || 0; });
    } catch { /* closed meanwhile */ }
    return {
      signedIn: Boolean(state.token),
      reviewerId: state.reviewerId,
      sessions: state.sessions.map((s) => ({ field_id: s.field_id, state: s.state, officer: s.officer?.name, case_number: s.case_number, last_fix: s.last_fix })),
      joined: state.current?.field_id || null,
      clientPhase: client.phase,
      officerPid: state.officerPid,
      micPublished: state.publication?.pc?.connectionState === "connected",
      video: {
        width: video.videoWidth, height: video.videoHeight, paused: video.paused, muted: video.muted,
        readyState: video.readyState, currentTime: video.currentTime,
      },
      decodedFrames,
      fixes: state.track.length,
      lastFix: state.track[state.track.length - 1] || null,
      snapshots: state.snapshots.map((s) => ({ snapshot_id: s.snapshot_id, gps: s.gps, url: s.url })),
      decision: state.decision,
    };
  }

  // -- start ---------------------------------------------------------------------------------

  async function init() {
    applyLanguage();
    for (const button of document.querySelectorAll("[data-lang]")) button.addEventListener("click", () => setLanguage(button.dataset.lang));
    $("session-rows").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-join]");
      if (button) join(button.dataset.join);
    });
    $("mute").addEventListener("click", toggleMic);
    $("snapshot").addEventListener("click", takeSnapshot);
    $("leave").addEventListener("click", () => leave(false));
    $("end-session").addEventListener("click", endSession);
    $("decision-form").addEventListener("submit", decide);
    window.addEventListener("resize", () => { if (state.current) drawMap(); });
    window.addEventListener("pagehide", () => client.close());
    setInterval(tick, 1000);
    if (await signIn()) poll();
  }

  window.teller = { state, stats, client };
  init();
})();
