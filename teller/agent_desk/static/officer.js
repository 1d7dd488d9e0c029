// Teller field officer page (/officer): a loan officer's phone at the customer's farm.
// It starts a field session, streams the rear camera and the microphone to the remote
// risk reviewer, hears the reviewer, sends its GPS position every few seconds, and keeps
// recording on the phone while the link is down, uploading that video afterwards.
//
// REST: the field sessions API (POST /v1/field/sessions, .../end) and the resumable,
// checksummed upload of device-side segments (POST/PATCH/GET /v1/recordings/{session}/uploads).
// Signalling: docs/protocol.md through /static/teller-client.js (camera+mic on one
// publication with a data channel; GPS as data messages with topic "gps"; the reviewer's
// audio on a subscription; resumed by the client after a lost connection).
//
// A link drop: TellerClient says `reconnecting` (or `closed` when it gave up); from then
// until our media flows again (`restored`, or a fresh join) a MediaRecorder records the
// local stream in 1 s slices, each stored in IndexedDB as it comes (a reload keeps them).
// Then the segment is uploaded (size + SHA-256 first, then chunks at an offset) and
// deleted from IndexedDB only once the server said it is complete. Segments left by an
// earlier page (a crash, a reload) are uploaded when the page loads.
"use strict";

(() => {
  const GPS_INTERVAL_MS = 3000; // a fix goes out about this often
  const GPS_MOVE_M = 10; // ... and at once when the officer moved this far
  const GPS_QUEUE_MAX = 600; // fixes kept while the link is down, sent when it is back
  const GPS_STALE_MS = 15000; // no fix for this long: say so
  const SLICE_MS = 1000; // MediaRecorder timeslice: each slice is stored as it comes
  const REJOIN_DELAY_MS = 3000; // after the client gave up: join again this often
  const RESTORED_SHOWN_MS = 5000;
  const SYNC_DEBOUNCE_MS = 200;
  const SESSION_POLL_MS = 5000; // the session's state and the reviewer's decision
  const UPLOAD_RETRY_FIRST_MS = 1000;
  const UPLOAD_RETRY_MAX_MS = 15000;
  const DEFAULT_CHUNK = 1024 * 1024;
  const SESSION_KEY = "teller.field.session";
  const NAME_KEY = "teller.field.officerName";
  const DB_NAME = "teller-field";
  const DB_VERSION = 1;
  // What MediaRecorder may write, best first: [mimeType, upload kind, codec].
  const VIDEO_TYPES = [
    ["video/webm;codecs=vp8,opus", "video", "vp8"],
    ["video/webm;codecs=vp9,opus", "video", "vp9"],
    ["video/webm;codecs=vp8", "video", "vp8"],
    ["video/webm", "video", "vp8"],
  ];
  const AUDIO_TYPES = [
    ["audio/webm;codecs=opus", "audio", "opus"],
    ["audio/webm", "audio", "opus"],
  ];

  const STRINGS = {
    zh: {
      htmlLang: "zh-CN", title: "现场核查", language: "语言", controls: "控制",
      recording: "录像中", defaultOfficer: "客户经理",
      signingIn: "正在登录…", signedIn: "已登录：{name}（{id}）", signedInToken: "已使用链接中的凭证登录",
      cannotSignIn: "无法登录：{error}。请使用带 ?token= 的链接打开本页。",
      startHeading: "开始现场会话", officerName: "您的姓名", customerName: "客户姓名", caseNumber: "案件编号",
      casePlaceholder: "LN-2026-0042", note: "备注（可选）", start: "开始并连线审核员",
      needCustomer: "请填写客户姓名。", needCase: "请填写案件编号。",
      starting: "正在创建现场会话…", cannotStart: "无法开始会话：{error}",
      openingCamera: "正在打开摄像头…", noMedia: "未找到摄像头或麦克风，无法开始现场会话。",
      mediaBlocked: "摄像头和麦克风被浏览器阻止，请在浏览器设置中允许后重试。",
      mediaInsecure: "此页面未通过 https 打开，浏览器不允许使用摄像头。",
      connecting: "正在连线…", live: "正在直播，审核员可以看到和听到现场。",
      sessionHeading: "{customer} · {case}",
      rearCamera: "后置摄像头", frontCamera: "前置摄像头", switchCamera: "切换摄像头",
      noOtherCamera: "没有另一个摄像头可切换。", cannotSwitch: "无法切换摄像头：{error}",
      micOn: "麦克风：开", micOff: "麦克风：关",
      reviewer: "审核员", noReviewer: "尚未加入", reviewerJoined: "{names} 已加入，您可以听到审核员的声音",
      reviewerGuest: "审核员", tapToHear: "请点击页面任意位置以听到审核员的声音。",
      decision: "审核结论", decision_approve: "通过", decision_reject: "拒绝", decisionBy: "{decision}（{by}）{notes}", notesSep: "：",
      location: "位置", accuracy: "精度 ±{m} 米", fixAge: "{s} 秒前",
      gpsDenied: "定位权限被拒绝：审核员看不到您的位置。请在浏览器设置中允许本网站使用位置信息。",
      gpsUnavailable: "无法获取位置（没有 GPS 信号或设备不支持定位）。",
      gpsWaiting: "正在等待 GPS 信号…", gpsStale: "超过 15 秒没有新的定位（显示的是最后一次定位）。", gpsNoApi: "此浏览器不支持定位：审核员看不到您的位置。",
      gpsRefused: "服务器拒绝了一个定位点：{error}",
      link_connecting: "连线中…", link_connected: "已连接", link_reconnecting: "网络中断，正在重连…（本机继续录像）",
      link_restored: "网络已恢复", link_offline: "网络中断，正在重新加入…（本机继续录像）",
      end: "结束会话", ending: "正在结束会话…", cannotEnd: "无法结束会话：{error}",
      endedHeading: "现场会话已结束", endedText: "案件 {case}（{customer}），时长 {duration}。录像已保存在服务器。",
      endedByServer: "会话已由服务器结束（{reason}）。", endedByReviewer: "审核员已结束本次会话。", restart: "开始新的会话",
      resumeHeading: "发现未结束的现场会话", resumeText: "案件 {case}（客户 {customer}）在页面关闭时仍在进行。",
      resume: "继续该会话", discard: "不再继续", cannotResume: "无法继续该会话：{error}",
      localHeading: "断线期间本机录像",
      cannotKeep: "此手机无法在断线期间保留录像（缺少 {missing}）。网络中断期间的画面将会丢失。",
      cannotKeepType: "此手机无法在断线期间保留录像（浏览器不支持 WebM 录制）。网络中断期间的画面将会丢失。",
      seg_recording: "● 本机已录制 {s} 秒（网络中断）",
      seg_waiting: "本机已录制 {s} 秒，等待上传…",
      seg_uploading: "本机已录制 {s} 秒，正在上传… {pct}%",
      seg_uploaded: "本机录制的 {s} 秒已上传 ✓",
      seg_failed: "本机录制的 {s} 秒上传失败：{error}（仍保存在手机上）",
      seg_retry: "本机已录制 {s} 秒，上传中断，稍后重试…",
      uploadChecksum: "校验和不一致", uploadRefused: "服务器拒绝（{status}）",
      unreachable: "无法连接服务器，请检查网络后重试。", refused: "服务器拒绝了请求（{status}）。",
      lost: "与服务器的连接已断开。",
    },
    en: {
      htmlLang: "en", title: "Field visit", language: "Language", controls: "Controls",
      recording: "Recording", defaultOfficer: "Field officer",
      signingIn: "Signing in…", signedIn: "Signed in as {name} ({id})", signedInToken: "Signed in with the link's token",
      cannotSignIn: "Cannot sign in: {error}. Open this page with a ?token= link.",
      startHeading: "Start a field session", officerName: "Your name", customerName: "Customer name",
      caseNumber: "Case number", casePlaceholder: "LN-2026-0042", note: "Note (optional)",
      start: "Start and call the reviewer",
      needCustomer: "Please enter the customer's name.", needCase: "Please enter the case number.",
      starting: "Creating the field session…", cannotStart: "Cannot start the session: {error}",
      openingCamera: "Opening the camera…", noMedia: "No camera or microphone was found: the session cannot start.",
      mediaBlocked: "The camera and microphone are blocked; allow them in the browser's settings and try again.",
      mediaInsecure: "This page was not opened over https, so the browser does not allow the camera.",
      connecting: "Connecting…", live: "Live: the reviewer can see and hear the site.",
      sessionHeading: "{customer} · {case}",
      rearCamera: "Rear camera", frontCamera: "Front camera", switchCamera: "Switch camera",
      noOtherCamera: "There is no other camera to switch to.", cannotSwitch: "Cannot switch the camera: {error}",
      micOn: "Microphone on", micOff: "Microphone off",
      reviewer: "Reviewer", noReviewer: "not joined yet", reviewerJoined: "{names} joined; you hear the reviewer",
      reviewerGuest: "Reviewer", tapToHear: "Tap anywhere on the page to hear the reviewer.",
      decision: "Decision", decision_approve: "approved", decision_reject: "rejected", decisionBy: "{decision} by {by}{notes}", notesSep: ": ",
      location: "Location", accuracy: "accuracy ±{m} m", fixAge: "{s} s ago",
      gpsDenied: "Location is denied: the reviewer cannot see where you are. Allow location for this site in the browser's settings.",
      gpsUnavailable: "Location is unavailable (no GPS signal, or the device cannot locate).",
      gpsWaiting: "Waiting for a GPS signal…", gpsStale: "No new position for over 15 s (the last one is shown).", gpsNoApi: "This browser has no location: the reviewer cannot see where you are.",
      gpsRefused: "The server refused a position: {error}",
      link_connecting: "connecting…", link_connected: "connected",
      link_reconnecting: "link lost, reconnecting… (the phone keeps recording)",
      link_restored: "link restored", link_offline: "link lost, joining again… (the phone keeps recording)",
      end: "End session", ending: "Ending the session…", cannotEnd: "Cannot end the session: {error}",
      endedHeading: "The field session has ended",
      endedText: "Case {case} ({customer}), {duration}. The recording is stored on the server.",
      endedByServer: "The server ended the session ({reason}).", endedByReviewer: "The reviewer ended the session.", restart: "Start another session",
      resumeHeading: "An unfinished field session was found",
      resumeText: "Case {case} (customer {customer}) was still running when the page closed.",
      resume: "Resume it", discard: "Do not resume", cannotResume: "Cannot resume the session: {error}",
      localHeading: "Video kept on the phone during link drops",
      cannotKeep: "This phone cannot keep video during a link drop (no {missing}). What happens while the link is down is lost.",
      cannotKeepType: "This phone cannot keep video during a link drop (the browser cannot record WebM). What happens while the link is down is lost.",
      seg_recording: "● {s} s recorded on the phone (link down)",
      seg_waiting: "{s} s recorded on the phone, waiting to upload…",
      seg_uploading: "{s} s recorded on the phone, uploading… {pct}%",
      seg_uploaded: "{s} s recorded on the phone, uploaded ✓",
      seg_failed: "{s} s recorded on the phone could not be uploaded: {error} (kept on the phone)",
      seg_retry: "{s} s recorded on the phone, upload interrupted, retrying…",
      uploadChecksum: "checksum mismatch", uploadRefused: "refused by the server ({status})",
      unreachable: "Cannot reach the server. Check your connection and try again.",
      refused: "The server refused the request ({status}).",
      lost: "The connection to the server was lost.",
    },
  };

  const params = new URLSearchParams(location.search);
  // Chinese first (like the customer page); ?lang= or an English browser say otherwise.
  const texts = TellerPage.texts(STRINGS, "zh");
  if (params.get("lang")) texts.use(params.get("lang"));
  else if ((navigator.language || "").toLowerCase().startsWith("en")) texts.use("en");
  const { t } = texts;

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"), signedIn: $("signed-in"), recBar: $("rec-bar"), elapsed: $("elapsed"), link: $("link-state"),
    views: { start: $("view-start"), session: $("view-session"), ended: $("view-ended") },
    resumePanel: $("resume-panel"), resumeText: $("resume-text"), resume: $("resume"), discard: $("discard"),
    form: $("start-form"), officerName: $("officer-name"), customerName: $("customer-name"), caseNumber: $("case-number"),
    note: $("note"), startError: $("start-error"), start: $("start"),
    sessionHeading: $("session-heading"), localVideo: $("local-video"), cameraLabel: $("camera-label"),
    switchCamera: $("switch-camera"), mic: $("toggle-mic"), reviewerState: $("reviewer-state"),
    gpsFix: $("gps-fix"), gpsAccuracy: $("gps-accuracy"), gpsProblem: $("gps-problem"), decisionRow: $("decision-row"), decision: $("decision"), reviewerAudio: $("reviewer-audio"),
    end: $("end"), endedText: $("ended-text"), restart: $("restart"),
    local: $("local-recording"), localSupport: $("local-support"), localList: $("local-list"),
  };

  const state = {
    token: params.get("token") || null, // the officer's sign-in token
    fromLink: Boolean(params.get("token")),
    officerId: null,
    signedName: null,
    phase: "start", // start | starting | live | ending | ended
    session: null, // {field_id, room, token, session_id, started_at, resume_window_s, customer_name, case_number, startedMs}
    endedInfo: null,
    localStream: null,
    facing: "environment",
    micOn: true,
    publication: null,
    participantId: null, // ours, kept across a drop (client.participantId is cleared when it gives up)
    link: "connecting", // connecting | connected | reconnecting | restored | offline
    restoredTimer: null,
    rejoinTimer: null,
    awaitingMedia: false, // joined again after the client gave up: media not flowing yet
    others: new Map(), // participant_id -> {sub, audio}: the reviewer (and anyone else) heard
    syncTimer: null,
    gps: { watchId: null, timer: null, last: null, lastSent: null, lastAt: 0, sent: 0, queue: [], problem: null, refused: null },
    tick: null,
    pollTimer: null,
    decision: null, // the reviewer's, once made
    support: null, // what local recording lacks: [] when it works
    recorder: null, // {rec, seg, writes}
    segments: new Map(), // segment id -> {id, startWall, endWall, state, sent, size, error, duration}
    uploading: new Set(),
    db: null,
  };

  const CLIENT_TEXT = { unreachable: "unreachable", timeout: "unreachable", disconnected: "lost", left: "lost" };
  const client = new TellerClient({
    text: (code) => (CLIENT_TEXT[code] ? t(CLIENT_TEXT[code]) : undefined),
    awaits: () => false, // after a drop: restored once our own media goes out again
  });

  // -- small helpers -----------------------------------------------------------------------

  function setStatus(text, isError = false) {
    ui.status.textContent = text;
    ui.status.classList.toggle("error", isError);
  }

  class RequestError extends Error {
    constructor(message, code = "", status = 0, details = {}) {
      super(message);
      this.code = code;
      this.status = status;
      this.details = details || {};
    }
  }

  // JSON in and out; a RequestError with the server's code, status and details (status 0:
  // the request did not get through).
  async function api(method, path, body, token = state.token, extra = {}) {
    const headers = { ...(extra.headers || {}) };
    if (body !== undefined && !(body instanceof Uint8Array)) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(path, {
        method, headers, body: body === undefined ? undefined : body instanceof Uint8Array ? body : JSON.stringify(body),
      });
    } catch {
      throw new RequestError(t("unreachable"), "unreachable", 0);
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = data.error || {};
      throw new RequestError(error.message || t("refused", { status: response.status }), error.code || "", response.status, error.details);
    }
    return { status: response.status, ...data };
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const nowS = () => Date.now() / 1000;

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
  }

  function distanceM(a, b) {
    const rad = Math.PI / 180;
    const dLat = (b.lat - a.lat) * rad;
    const dLon = (b.lon - a.lon) * rad;
    const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
    return 2 * 6371000 * Math.asin(Math.sqrt(h));
  }

  function showView(name) {
    for (const [key, view] of Object.entries(ui.views)) view.hidden = key !== name;
    document.body.dataset.phase = name;
  }

  // -- language --------------------------------------------------------------------------

  function applyLanguage() {
    texts.apply();
    renderSignedIn();
    renderSession();
    renderLink();
    renderGps();
    renderReviewer();
    renderDecision();
    renderMic();
    renderCamera();
    renderSupport();
    renderSegments();
    renderResume();
    if (state.phase === "ended") renderEnded();
  }

  function setLanguage(lang) {
    if (!texts.use(lang)) return;
    texts.keepInUrl();
    applyLanguage();
  }

  // -- sign in ---------------------------------------------------------------------------

  async function signIn(name) {
    if (state.fromLink) return true;
    setStatus(t("signingIn"));
    try {
      const body = await api("POST", "/v1/dev/field", { role: "officer", name }, null);
      state.token = body.token;
      state.officerId = body.id;
      state.signedName = name;
      try { localStorage.setItem(NAME_KEY, name); } catch { /* private mode */ }
      renderSignedIn();
      setStatus("");
      return true;
    } catch (error) {
      state.token = null;
      setStatus(t("cannotSignIn", { error: error.message }), true);
      return false;
    }
  }

  function renderSignedIn() {
    if (state.fromLink) ui.signedIn.textContent = t("signedInToken");
    else if (state.token) ui.signedIn.textContent = t("signedIn", { name: state.signedName, id: state.officerId });
    else ui.signedIn.textContent = "";
  }

  // -- camera and microphone -------------------------------------------------------------

  // The rear camera (facingMode "environment") and the microphone; any camera where there
  // is no rear one; then either alone. {stream, problem}.
  async function openMedia() {
    if (!navigator.mediaDevices?.getUserMedia) return { stream: null, problem: "mediaInsecure" };
    const tries = [
      { audio: true, video: { facingMode: { ideal: "environment" } } },
      { audio: true, video: true },
      { video: { facingMode: { ideal: "environment" } } },
      { audio: true },
    ];
    let last = null;
    for (const constraints of tries) {
      try {
        return { stream: await navigator.mediaDevices.getUserMedia(constraints), problem: null };
      } catch (error) {
        last = error;
        if (error.name === "NotAllowedError") break;
      }
    }
    return { stream: null, problem: last?.name === "NotAllowedError" ? "mediaBlocked" : "noMedia" };
  }

  function renderCamera() {
    const track = state.localStream?.getVideoTracks()[0];
    const facing = track?.getSettings?.().facingMode || state.facing;
    ui.cameraLabel.textContent = facing === "user" ? t("frontCamera") : t("rearCamera");
    ui.localVideo.classList.toggle("mirror", facing === "user");
    ui.switchCamera.disabled = !track;
  }

  async function switchCamera() {
    const stream = state.localStream;
    const old = stream?.getVideoTracks()[0];
    if (!old) return;
    const next = state.facing === "environment" ? "user" : "environment";
    const wasRecording = Boolean(state.recorder);
    if (wasRecording) await stopRecorder(); // a recorder stops when its tracks change: a new segment follows
    ui.switchCamera.disabled = true;
    old.stop(); // many phones cannot open two cameras at once
    let track = null;
    try {
      track = (await navigator.mediaDevices.getUserMedia({ video: { facingMode: { exact: next } } })).getVideoTracks()[0];
      state.facing = next;
    } catch (error) {
      setStatus(error.name === "OverconstrainedError" || error.name === "NotFoundError" ? t("noOtherCamera") : t("cannotSwitch", { error: error.message }), true);
      try {
        track = (await navigator.mediaDevices.getUserMedia({ video: { facingMode: { ideal: state.facing } } })).getVideoTracks()[0];
      } catch { /* no camera left */ }
    }
    stream.removeTrack(old);
    if (track) stream.addTrack(track);
    const sender = state.publication?.pc?.getSenders().find((s) => s.track === old || s.track?.kind === "video");
    if (sender && track) await sender.replaceTrack(track).catch(() => {});
    ui.localVideo.srcObject = stream;
    renderCamera();
    if (wasRecording && linkDown()) startRecorder();
  }

  function toggleMic() {
    state.micOn = !state.micOn;
    for (const track of state.localStream?.getAudioTracks() || []) track.enabled = state.micOn;
    renderMic();
  }

  function renderMic() {
    ui.mic.setAttribute("aria-pressed", String(state.micOn));
    ui.mic.textContent = state.micOn ? t("micOn") : t("micOff");
    ui.mic.disabled = !state.localStream?.getAudioTracks().length;
  }

  // -- the session -----------------------------------------------------------------------

  function saveSession() {
    try {
      if (state.session) localStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
      else localStorage.removeItem(SESSION_KEY);
    } catch { /* private mode: a reload cannot resume */ }
  }

  function storedSession() {
    try {
      const session = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
      return session && session.field_id && session.token && session.room ? session : null;
    } catch {
      return null;
    }
  }

  async function startSession(event) {
    event?.preventDefault();
    if (state.phase !== "start" && state.phase !== "ended") return;
    ui.startError.textContent = "";
    const customer = ui.customerName.value.trim();
    const caseNumber = ui.caseNumber.value.trim();
    const note = ui.note.value.trim();
    if (!customer) { ui.startError.textContent = t("needCustomer"); ui.customerName.focus(); return; }
    if (!caseNumber) { ui.startError.textContent = t("needCase"); ui.caseNumber.focus(); return; }
    state.phase = "starting";
    ui.start.disabled = true;
    try {
      const name = ui.officerName.value.trim() || t("defaultOfficer");
      if (!state.token || (!state.fromLink && name !== state.signedName)) {
        if (!(await signIn(name))) return;
      }
      setStatus(t("openingCamera"));
      if (!(await ensureMedia())) return;
      setStatus(t("starting"));
      const body = { customer_name: customer, case_number: caseNumber };
      if (note) body.note = note;
      let created;
      try {
        created = await api("POST", "/v1/field/sessions", body);
      } catch (error) {
        const field = error.details?.field;
        ui.startError.textContent = t("cannotStart", { error: error.message });
        if (field === "customer_name") ui.customerName.focus();
        else if (field === "case_number") ui.caseNumber.focus();
        setStatus("");
        stopMedia();
        return;
      }
      state.session = {
        field_id: created.field_id, room: created.room, token: created.token, session_id: created.session_id,
        started_at: created.started_at, resume_window_s: created.resume_window_s,
        customer_name: customer, case_number: caseNumber, startedMs: Date.now(),
      };
      saveSession();
      await goLive();
    } finally {
      if (state.phase === "starting") state.phase = "start";
      ui.start.disabled = false;
    }
  }

  async function ensureMedia() {
    if (state.localStream) return true;
    const { stream, problem } = await openMedia();
    if (!stream) {
      setStatus(t(problem), true);
      return false;
    }
    state.localStream = stream;
    state.facing = "environment";
    for (const track of stream.getAudioTracks()) track.enabled = state.micOn;
    ui.localVideo.srcObject = stream;
    ui.localVideo.play?.().catch(() => {});
    renderCamera();
    renderMic();
    return true;
  }

  function stopMedia() {
    state.localStream?.getTracks().forEach((track) => track.stop());
    state.localStream = null;
    ui.localVideo.srcObject = null;
  }

  async function goLive() {
    state.phase = "live";
    ui.resumePanel.hidden = true;
    showView("session");
    ui.recBar.hidden = false;
    renderSession();
    renderSupport();
    startTick();
    startGps();
    state.decision = null;
    renderDecision();
    pollSession();
    try {
      await enterRoom();
      setStatus(t("live"));
    } catch (error) {
      if (state.phase !== "live") return;
      if (isFinal(error)) {
        finishLocally(null);
        setStatus(t("cannotResume", { error: error.message }), true);
        return;
      }
      setStatus(error.message, true);
      lostLink();
    }
  }

  const isFinal = (error) => error.status >= 400 && error.status < 500 && error.status !== 408 && error.status !== 429;

  async function enterRoom() {
    if (!linkDown()) setLink("connecting");
    await client.join(state.session.token);
    state.participantId = client.participantId;
    scheduleSync();
    state.publication = client.publish(state.localStream, {
      dataChannel: true,
      onConnectionState: (connectionState) => {
        if (connectionState === "connected" && state.awaitingMedia) mediaBack();
      },
    });
    state.awaitingMedia = true;
    await state.publication.ready;
    if (state.publication?.pc?.connectionState === "connected") mediaBack();
    flushGps();
  }

  // Our media flows again (first join, a fresh join after a drop): the link is back.
  function mediaBack() {
    if (!state.awaitingMedia) return;
    const wasDown = state.link === "offline" || state.link === "reconnecting";
    state.awaitingMedia = false;
    if (wasDown) linkRestored();
    else setLink("connected");
  }

  function renderSession() {
    const s = state.session;
    ui.sessionHeading.textContent = s ? t("sessionHeading", { customer: s.customer_name, case: s.case_number }) : "";
    ui.elapsed.textContent = s ? duration((Date.now() - s.startedMs) / 1000) : "0:00";
  }

  // The session as the server has it: ended by the reviewer (maybe while this phone was
  // offline, so no `left` reached it), and the reviewer's decision.
  async function pollSession() {
    clearTimeout(state.pollTimer);
    const s = state.session;
    if (!s || state.phase !== "live") return;
    try {
      const record = await api("GET", `/v1/field/sessions/${encodeURIComponent(s.field_id)}`, undefined, s.token);
      if (state.session !== s) return;
      state.decision = record.decision || null;
      renderDecision();
      if (record.state === "ended" && state.phase === "live") {
        if (state.recorder) await stopRecorder();
        finishLocally("field_session_ended");
        return;
      }
    } catch { /* offline, or refused: the next poll asks again */ }
    state.pollTimer = setTimeout(pollSession, SESSION_POLL_MS);
  }

  function renderDecision() {
    const d = state.decision;
    ui.decisionRow.hidden = !d;
    ui.decision.textContent = d ? t("decisionBy", { decision: t(`decision_${d.decision}`), by: d.by_name || d.by || "", notes: d.notes ? `${t("notesSep")}${d.notes}` : "" }) : "";
    ui.decision.dataset.decision = d?.decision || "";
  }

  function startTick() {
    clearInterval(state.tick);
    state.tick = setInterval(() => {
      renderSession();
      if (state.recorder) renderSegments();
      renderGpsAge();
    }, 1000);
  }

  async function endSession() {
    if (state.phase !== "live") return;
    const s = state.session;
    state.phase = "ending";
    ui.end.disabled = true;
    setStatus(t("ending"));
    try {
      await api("POST", `/v1/field/sessions/${encodeURIComponent(s.field_id)}/end`, {}, s.token);
    } catch (error) {
      // Already ended elsewhere (the reviewer, the server): nothing more to end.
      if (error.status === 0 || error.status >= 500) {
        state.phase = "live";
        ui.end.disabled = false;
        setStatus(t("cannotEnd", { error: error.message }), true);
        return;
      }
    }
    if (state.recorder) await stopRecorder(); // its upload carries on after the end
    await client.leave().catch(() => {});
    finishLocally(null);
  }

  // The session is over for this page: the view says so; uploads carry on.
  function finishLocally(reason) {
    const s = state.session;
    state.endedInfo = s ? { ...s, seconds: (Date.now() - s.startedMs) / 1000, reason } : null;
    state.phase = "ended";
    state.session = null;
    saveSession();
    clearTimeout(state.rejoinTimer);
    clearTimeout(state.restoredTimer);
    clearInterval(state.tick);
    clearTimeout(state.pollTimer);
    stopGps();
    if (state.recorder) stopRecorder();
    client.close();
    dropOthers();
    state.publication = null;
    stopMedia();
    ui.recBar.hidden = true;
    ui.end.disabled = false;
    showView("ended");
    renderEnded();
    setStatus("");
  }

  function renderEnded() {
    const info = state.endedInfo;
    if (!info) { ui.endedText.textContent = ""; return; }
    const text = t("endedText", { case: info.case_number, customer: info.customer_name, duration: duration(info.seconds) });
    const why = info.reason === "field_session_ended" ? t("endedByReviewer") : info.reason ? t("endedByServer", { reason: info.reason }) : "";
    ui.endedText.textContent = why ? `${why} ${text}` : text;
  }

  function restart() {
    state.phase = "start";
    state.endedInfo = null;
    ui.customerName.value = "";
    ui.caseNumber.value = "";
    ui.note.value = "";
    showView("start");
    ui.customerName.focus();
  }

  // -- the link --------------------------------------------------------------------------

  function setLink(link) {
    state.link = link;
    clearTimeout(state.restoredTimer);
    renderLink();
  }

  function renderLink() {
    ui.link.dataset.state = state.link;
    ui.link.textContent = t(`link_${state.link}`);
  }

  const linkDown = () => state.link === "reconnecting" || state.link === "offline";

  function linkRestored() {
    setLink("restored");
    state.restoredTimer = setTimeout(() => { if (state.link === "restored") setLink("connected"); }, RESTORED_SHOWN_MS);
    if (state.recorder) stopRecorder();
    flushGps();
    scheduleSync();
    retryUploads();
  }

  client.on("reconnecting", () => {
    if (state.phase !== "live") return;
    setLink("reconnecting");
    startRecorder();
  });

  client.on("resumed", () => {
    state.participantId = client.participantId || state.participantId;
    flushGps();
    scheduleSync();
  });

  client.on("restored", () => {
    if (state.phase !== "live") return;
    state.awaitingMedia = false;
    linkRestored();
  });

  // The client gave up resuming (or the server ended this connection).
  client.on("closed", ({ reason, error }) => {
    if (state.phase !== "live") return;
    state.publication = null;
    dropOthers();
    if (reason) { // the server said `left` (the session was ended, or this officer removed)
      finishLocally(reason);
      return;
    }
    if (error && isFinal(error)) {
      finishLocally(error.code || error.message);
      setStatus(error.message, true);
      return;
    }
    lostLink();
  });

  // Not connected any more: keep recording on the phone and join again until it works.
  function lostLink() {
    setLink("offline");
    startRecorder();
    clearTimeout(state.rejoinTimer);
    state.rejoinTimer = setTimeout(rejoin, REJOIN_DELAY_MS);
  }

  async function rejoin() {
    if (state.phase !== "live" || client.phase !== "idle") return;
    try {
      await enterRoom();
      setStatus(t("live"));
    } catch (error) {
      if (state.phase !== "live") return;
      client.close();
      state.publication = null;
      if (isFinal(error)) {
        finishLocally(error.code || error.message);
        setStatus(t("cannotResume", { error: error.message }), true);
        return;
      }
      setLink("offline");
      state.rejoinTimer = setTimeout(rejoin, REJOIN_DELAY_MS);
    }
  }

  client.on("error", (message) => {
    if (message.code === "invalid_gps") {
      state.gps.refused = message.message || message.code;
      renderGps();
    }
  });

  // -- the reviewer (heard, not shown) ---------------------------------------------------

  for (const type of ["participant_joined", "participant_left", "track_published", "track_unpublished"]) {
    client.on(type, () => scheduleSync());
  }

  function scheduleSync() {
    clearTimeout(state.syncTimer);
    state.syncTimer = setTimeout(syncOthers, SYNC_DEBOUNCE_MS);
  }

  function syncOthers() {
    if (client.phase !== "joined") { renderReviewer(); return; }
    for (const [participantId] of state.others) {
      if (!client.participants.has(participantId)) dropOther(participantId, false);
    }
    for (const info of client.participants.values()) {
      const participantId = info.participant_id;
      if (participantId === client.participantId || info.role === "service") continue;
      const audio = (info.tracks || []).filter((track) => track.kind === "audio").slice(0, 1);
      const entry = state.others.get(participantId);
      if (!audio.length) { dropOther(participantId, true); continue; }
      if (entry && !entry.sub.closed && audio.every((track) => entry.sub.trackIds.has(track.track_id))) continue;
      dropOther(participantId, true);
      hear(participantId, audio);
    }
    renderReviewer();
  }

  function hear(participantId, tracks) {
    const audio = document.createElement("audio");
    audio.autoplay = true;
    audio.dataset.participantId = participantId;
    ui.reviewerAudio.append(audio);
    const sub = client.subscribe(participantId, tracks, {
      onTrack: () => {
        audio.srcObject = sub.stream;
        play(audio);
        renderReviewer();
      },
      onClose: () => {
        if (state.others.get(participantId)?.sub === sub) state.others.delete(participantId);
        audio.remove();
        renderReviewer();
      },
    });
    state.others.set(participantId, { sub, audio });
    sub.ready.catch(() => {});
  }

  function play(media) {
    media.play().catch((error) => {
      if (error.name !== "NotAllowedError") return;
      setStatus(t("tapToHear"));
      document.addEventListener("click", () => media.play().catch(() => {}), { once: true });
    });
  }

  function dropOther(participantId, tellServer) {
    state.others.get(participantId)?.sub.close(tellServer);
    state.others.delete(participantId);
  }

  function dropOthers() {
    for (const participantId of [...state.others.keys()]) dropOther(participantId, false);
    renderReviewer();
  }

  function reviewerNames() {
    const names = [];
    for (const info of client.participants.values()) {
      if (info.participant_id === client.participantId || info.role === "service") continue;
      names.push(info.name || info.identity || t("reviewerGuest"));
    }
    return names;
  }

  function renderReviewer() {
    const names = client.phase === "joined" ? reviewerNames() : [];
    ui.reviewerState.textContent = names.length ? t("reviewerJoined", { names: names.join(", ") }) : t("noReviewer");
    ui.reviewerState.dataset.joined = String(names.length > 0);
  }

  // -- GPS -------------------------------------------------------------------------------

  function startGps() {
    stopGps();
    const gps = state.gps;
    if (!navigator.geolocation) {
      gps.problem = "gpsNoApi";
      renderGps();
      return;
    }
    const options = { enableHighAccuracy: true, maximumAge: 0, timeout: 20000 };
    gps.watchId = navigator.geolocation.watchPosition((p) => onPosition(p, false), onGpsError, options);
    // A phone standing still may not report through the watch: every few seconds a fix is
    // asked for when none came meanwhile, so one goes out about every GPS_INTERVAL_MS.
    gps.timer = setInterval(() => {
      if (gps.lastAt && Date.now() - gps.lastAt < GPS_INTERVAL_MS * 0.8) return;
      navigator.geolocation.getCurrentPosition((p) => onPosition(p, true), onGpsError, { ...options, timeout: 10000 });
      if (gps.last && Date.now() - gps.lastAt > GPS_STALE_MS && !gps.problem) {
        gps.problem = "gpsStale";
        renderGps();
      }
    }, GPS_INTERVAL_MS);
  }

  function stopGps() {
    const gps = state.gps;
    if (gps.watchId !== null) navigator.geolocation?.clearWatch(gps.watchId);
    clearInterval(gps.timer);
    gps.watchId = null;
    gps.timer = null;
  }

  // Denied: said at once. Unavailable or slow: said when there has been no fix for a
  // while (one failed request between good fixes is normal).
  function onGpsError(error) {
    const gps = state.gps;
    if (error.code === 1) gps.problem = "gpsDenied";
    else if (gps.last && Date.now() - gps.lastAt <= GPS_STALE_MS) return;
    else if (gps.last) gps.problem = "gpsStale";
    else gps.problem = error.code === 2 ? "gpsUnavailable" : "gpsWaiting";
    renderGps();
  }

  const finite = (v) => typeof v === "number" && Number.isFinite(v);

  // A fix as the room takes it (teller/field/gps.py): {lat, lon, ts, accuracy_m?, speed_mps?, heading_deg?, altitude_m?}.
  function fixOf(position) {
    const c = position.coords;
    const fix = { lat: c.latitude, lon: c.longitude, ts: Math.round(position.timestamp) / 1000 };
    if (finite(c.accuracy) && c.accuracy >= 0) fix.accuracy_m = Math.min(100000, Math.round(c.accuracy * 10) / 10);
    if (finite(c.speed) && c.speed >= 0 && c.speed <= 150) fix.speed_mps = Math.round(c.speed * 100) / 100;
    if (finite(c.heading) && c.heading >= 0 && c.heading <= 360) fix.heading_deg = Math.round(c.heading * 10) / 10;
    if (finite(c.altitude) && c.altitude >= -500 && c.altitude <= 10000) fix.altitude_m = Math.round(c.altitude * 10) / 10;
    return fix;
  }

  function onPosition(position, periodic) {
    if (state.phase !== "live") return;
    const gps = state.gps;
    const fix = fixOf(position);
    if (!finite(fix.lat) || !finite(fix.lon)) return;
    gps.last = fix;
    gps.lastAt = Date.now();
    gps.problem = null;
    renderGps();
    const prev = gps.lastSent;
    if (prev && fix.ts <= prev.ts) return;
    const due = !prev || (periodic && fix.ts - prev.ts >= (GPS_INTERVAL_MS / 1000) * 0.8) || distanceM(prev, fix) >= GPS_MOVE_M;
    if (due) sendFix(fix);
  }

  function sendFix(fix) {
    const gps = state.gps;
    gps.lastSent = fix;
    if (client.phase === "joined") {
      client.sendData(fix, "gps");
      gps.sent += 1;
    } else {
      gps.queue.push(fix);
      if (gps.queue.length > GPS_QUEUE_MAX) gps.queue.shift();
    }
  }

  // Fixes taken while the link was down go out once it is back (the track keeps no gap).
  function flushGps() {
    const gps = state.gps;
    while (client.phase === "joined" && gps.queue.length) {
      client.sendData(gps.queue.shift(), "gps");
      gps.sent += 1;
    }
  }

  function renderGps() {
    const gps = state.gps;
    const fix = gps.last;
    ui.gpsFix.textContent = fix ? `${fix.lat.toFixed(6)}, ${fix.lon.toFixed(6)}` : "–";
    renderGpsAge();
    const problem = gps.problem ? t(gps.problem) : gps.refused ? t("gpsRefused", { error: gps.refused }) : "";
    ui.gpsProblem.textContent = problem;
    ui.gpsProblem.hidden = !problem;
    ui.gpsProblem.dataset.problem = gps.problem || (gps.refused ? "refused" : "");
  }

  function renderGpsAge() {
    const gps = state.gps;
    const fix = gps.last;
    if (!fix) { ui.gpsAccuracy.textContent = ""; return; }
    const parts = [];
    if (finite(fix.accuracy_m)) parts.push(t("accuracy", { m: Math.round(fix.accuracy_m) }));
    parts.push(t("fixAge", { s: Math.max(0, Math.round((Date.now() - gps.lastAt) / 1000)) }));
    ui.gpsAccuracy.textContent = `(${parts.join(", ")})`;
  }

  // -- video kept on the phone during a drop ---------------------------------------------

  function missingSupport() {
    const missing = [];
    if (typeof MediaRecorder === "undefined") missing.push("MediaRecorder");
    if (!window.indexedDB) missing.push("IndexedDB");
    if (!window.crypto?.subtle) missing.push("crypto.subtle");
    return missing;
  }

  function recorderType(stream) {
    if (typeof MediaRecorder === "undefined") return null;
    const types = stream.getVideoTracks().length ? VIDEO_TYPES : AUDIO_TYPES;
    const found = types.find(([mime]) => MediaRecorder.isTypeSupported(mime));
    return found ? { mime: found[0], kind: found[1], codec: found[2] } : null;
  }

  function renderSupport() {
    const missing = state.support || [];
    let text = "";
    if (missing.length) text = t("cannotKeep", { missing: missing.join(", ") });
    else if (state.localStream && state.localStream.getTracks().length && !recorderType(state.localStream)) text = t("cannotKeepType");
    ui.localSupport.textContent = text;
    ui.localSupport.hidden = !text;
    ui.local.hidden = !text && state.segments.size === 0;
  }

  // IndexedDB: "segments" (one record per recording: where and how to upload it) and
  // "chunks" (its MediaRecorder slices, in order).
  function openDb() {
    if (state.db) return state.db;
    state.db = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, DB_VERSION);
      request.onupgradeneeded = () => {
        const db = request.result;
        if (!db.objectStoreNames.contains("segments")) db.createObjectStore("segments", { keyPath: "id" });
        if (!db.objectStoreNames.contains("chunks")) {
          const chunks = db.createObjectStore("chunks", { autoIncrement: true });
          chunks.createIndex("segment", "segment");
        }
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    state.db.catch(() => { state.db = null; });
    return state.db;
  }

  async function tx(stores, mode, work) {
    const db = await openDb();
    return new Promise((resolve, reject) => {
      const transaction = db.transaction(stores, mode);
      let result;
      transaction.oncomplete = () => resolve(result);
      transaction.onerror = () => reject(transaction.error);
      transaction.onabort = () => reject(transaction.error);
      const req = work(transaction);
      if (req) req.onsuccess = () => { result = req.result; };
    });
  }

  const dbPutSegment = (seg) => tx(["segments"], "readwrite", (x) => x.objectStore("segments").put(seg));
  const dbGetSegment = (id) => tx(["segments"], "readonly", (x) => x.objectStore("segments").get(id));
  const dbSegments = () => tx(["segments"], "readonly", (x) => x.objectStore("segments").getAll());
  const dbPutChunk = (chunk) => tx(["chunks"], "readwrite", (x) => x.objectStore("chunks").add(chunk));
  const dbChunks = (id) => tx(["chunks"], "readonly", (x) => x.objectStore("chunks").index("segment").getAll(id));

  function dbDeleteSegment(id) {
    return tx(["segments", "chunks"], "readwrite", (x) => {
      x.objectStore("segments").delete(id);
      const cursor = x.objectStore("chunks").index("segment").openKeyCursor(IDBKeyRange.only(id));
      cursor.onsuccess = () => {
        const c = cursor.result;
        if (!c) return;
        x.objectStore("chunks").delete(c.primaryKey);
        c.continue();
      };
    });
  }

  function startRecorder() {
    if (state.recorder || state.phase !== "live" || !state.session) return;
    if ((state.support || []).length) return;
    const stream = state.localStream;
    if (!stream || !stream.getTracks().some((track) => track.readyState === "live")) return;
    const type = recorderType(stream);
    if (!type) { renderSupport(); return; }
    let rec;
    try {
      rec = new MediaRecorder(stream, { mimeType: type.mime });
    } catch {
      renderSupport();
      return;
    }
    const s = state.session;
    const seg = {
      id: `seg-${Date.now()}-${Math.random().toString(16).slice(2, 8)}`,
      field_id: s.field_id, session_id: s.session_id, room: s.room, token: s.token,
      participant_id: state.participantId || client.participantId,
      start_wall: nowS(), end_wall: null, mime: type.mime, kind: type.kind, codec: type.codec,
      label: `officer-drop-${s.case_number}`.slice(0, 64), state: "recording", upload_id: null, chunk_max: null,
    };
    const recorder = { rec, seg, writes: dbPutSegment(seg), seq: 0, stopped: null };
    recorder.writes.catch(() => {});
    rec.ondataavailable = (event) => {
      if (!event.data || !event.data.size) return;
      const chunk = { segment: seg.id, seq: recorder.seq++, blob: event.data };
      recorder.writes = recorder.writes.then(() => dbPutChunk(chunk)).then(() => {
        const view = state.segments.get(seg.id);
        if (view) view.slices = (view.slices || 0) + 1; // stored: a reload keeps it
      }).catch((error) => console.error("keeping a slice", error));
    };
    recorder.stopped = new Promise((resolve) => { rec.onstop = resolve; });
    rec.onerror = () => { if (state.recorder === recorder) stopRecorder(); };
    state.recorder = recorder;
    state.segments.set(seg.id, { id: seg.id, startWall: seg.start_wall, endWall: null, state: "recording", sent: 0, size: 0, error: null });
    rec.start(SLICE_MS);
    renderSupport();
    renderSegments();
  }

  // Stops the recorder, waits for every slice to be stored, and starts the upload.
  async function stopRecorder() {
    const recorder = state.recorder;
    if (!recorder) return;
    state.recorder = null;
    if (recorder.rec.state !== "inactive") recorder.rec.stop();
    await Promise.race([recorder.stopped, sleep(3000)]); // an errored recorder may never say "stop"
    await recorder.writes;
    const seg = recorder.seg;
    seg.end_wall = nowS();
    seg.state = "waiting";
    await dbPutSegment(seg).catch(() => {});
    const view = state.segments.get(seg.id);
    Object.assign(view, { endWall: seg.end_wall, state: "waiting" });
    renderSegments();
    uploadSegment(seg.id);
  }

  function hex(buffer) {
    return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  // PATCH one chunk: {status, body} whatever the status (thrown only when nothing came back).
  async function patchChunk(seg, offset, bytes) {
    let response;
    try {
      response = await fetch(`/v1/recordings/${encodeURIComponent(seg.session_id)}/uploads/${encodeURIComponent(seg.upload_id)}`, {
        method: "PATCH",
        headers: { Authorization: `Bearer ${seg.token}`, "Upload-Offset": String(offset), "Content-Type": "application/octet-stream" },
        body: bytes,
      });
    } catch {
      throw new RequestError(t("unreachable"), "unreachable", 0);
    }
    const body = await response.json().catch(() => ({}));
    return { status: response.status, body };
  }

  // Uploads one stored segment: declared with its size and SHA-256, then sent in chunks
  // at the offset the server has; resumed from the server's offset after a 409, retried
  // after a network error; deleted from IndexedDB only after the 201 "complete".
  async function uploadSegment(id) {
    if (state.uploading.has(id)) return;
    state.uploading.add(id);
    const view = state.segments.get(id);
    try {
      const seg = await dbGetSegment(id);
      if (!seg) return;
      const chunks = (await dbChunks(id)).sort((a, b) => a.seq - b.seq);
      if (!chunks.length) { await dbDeleteSegment(id); state.segments.delete(id); return; }
      const bytes = new Uint8Array(await new Blob(chunks.map((c) => c.blob), { type: seg.mime }).arrayBuffer());
      const sha256 = hex(await crypto.subtle.digest("SHA-256", bytes));
      const size = bytes.length;
      const base = `/v1/recordings/${encodeURIComponent(seg.session_id)}/uploads`;
      Object.assign(view, { state: "uploading", size, error: null });
      renderSegments();
      let delay = UPLOAD_RETRY_FIRST_MS;
      let checksumFailures = 0;
      for (;;) {
        try {
          let offset = 0;
          let chunkMax = seg.chunk_max || DEFAULT_CHUNK;
          if (seg.upload_id) {
            try {
              const status = await api("GET", `${base}/${encodeURIComponent(seg.upload_id)}`, undefined, seg.token);
              if (status.complete) break;
              offset = status.offset;
            } catch (error) {
              if (error.status !== 404) throw error;
              seg.upload_id = null; // gone (kept too long, or discarded): declare it again
            }
          }
          if (!seg.upload_id) {
            const body = {
              kind: seg.kind, codec: seg.codec, start_wall: seg.start_wall, participant_id: seg.participant_id,
              label: seg.label, size, sha256,
            };
            const created = await api("POST", base, body, seg.token);
            seg.upload_id = created.upload_id;
            view.uploadId = created.upload_id;
            seg.chunk_max = created.chunk_max || DEFAULT_CHUNK;
            chunkMax = seg.chunk_max;
            offset = created.offset || 0;
            await dbPutSegment(seg);
          }
          let complete = false;
          while (!complete) {
            view.sent = offset;
            renderSegments();
            const { status, body } = await patchChunk(seg, offset, bytes.subarray(offset, Math.min(size, offset + chunkMax)));
            if (status === 201 || body.complete) {
              complete = true;
              view.duration = body.duration_s;
            } else if (status === 409 && body.error?.code === "upload_complete") {
              complete = true; // an earlier try finished it, its answer lost on the way
            } else if (status === 200) {
              offset = body.offset;
            } else if (status === 409 && body.error?.code === "offset_mismatch") {
              offset = body.error.details?.offset ?? 0;
            } else if (status === 404) {
              seg.upload_id = null;
              break;
            } else if (status === 422) {
              seg.upload_id = null; // discarded by the server: once more from the start, then give up
              checksumFailures += 1;
              if (checksumFailures > 1) throw new RequestError(t("uploadChecksum"), "checksum_mismatch", 422);
              break;
            } else {
              throw new RequestError(body.error?.message || t("uploadRefused", { status }), body.error?.code || "", status);
            }
          }
          if (complete) break;
        } catch (error) {
          if (isFinal(error)) {
            // A malformed or corrupt segment stays failed; a refusal (a token, a limit) is tried again later.
            Object.assign(view, { state: "failed", error: error.message, retryable: ![400, 413, 422].includes(error.status) });
            await dbPutSegment({ ...seg, state: "failed" }).catch(() => {});
            renderSegments();
            return;
          }
          Object.assign(view, { state: "retry" });
          renderSegments();
          await Promise.race([sleep(delay), new Promise((resolve) => window.addEventListener("online", resolve, { once: true }))]);
          delay = Math.min(delay * 2, UPLOAD_RETRY_MAX_MS);
          Object.assign(view, { state: "uploading" });
        }
      }
      await dbDeleteSegment(id);
      Object.assign(view, { state: "uploaded", sent: size });
      renderSegments();
    } catch (error) {
      console.error("upload", error);
      if (view) Object.assign(view, { state: "failed", error: error.message });
      renderSegments();
    } finally {
      state.uploading.delete(id);
    }
  }

  function retryUploads() {
    for (const view of state.segments.values()) {
      if (view.state === "failed" && view.retryable) uploadSegment(view.id);
    }
  }

  // Segments an earlier page left behind (a crash, a reload, the browser killed): each
  // carries the token of its session's room, so it goes up now.
  async function uploadLeftovers() {
    let segments;
    try {
      segments = await dbSegments();
    } catch {
      return;
    }
    for (const seg of segments) {
      if (state.segments.has(seg.id)) continue;
      let endWall = seg.end_wall;
      if (!endWall) {
        const chunks = await dbChunks(seg.id).catch(() => []);
        endWall = seg.start_wall + chunks.length * (SLICE_MS / 1000);
        seg.end_wall = endWall;
        seg.state = "waiting";
        await dbPutSegment(seg).catch(() => {});
      }
      state.segments.set(seg.id, { id: seg.id, startWall: seg.start_wall, endWall, state: "waiting", sent: 0, size: 0, error: null });
      uploadSegment(seg.id);
    }
    renderSupport();
    renderSegments();
  }

  function renderSegments() {
    const items = [];
    for (const view of state.segments.values()) {
      const end = view.endWall || nowS();
      const seconds = Math.max(0, Math.round(end - view.startWall));
      const pct = view.size ? Math.floor((100 * view.sent) / view.size) : 0;
      const li = document.createElement("li");
      li.dataset.state = view.state;
      li.dataset.segment = view.id;
      li.textContent = t(`seg_${view.state}`, { s: seconds, pct, error: view.error || "" });
      items.push(li);
    }
    ui.localList.replaceChildren(...items);
    ui.local.hidden = ui.localSupport.hidden && items.length === 0;
  }

  // -- resuming after a reload -----------------------------------------------------------

  function renderResume() {
    const s = storedSession();
    if (!s || state.phase !== "start") { ui.resumePanel.hidden = true; return; }
    ui.resumeText.textContent = t("resumeText", { case: s.case_number, customer: s.customer_name });
    ui.resumePanel.hidden = false;
  }

  async function resume() {
    const s = storedSession();
    if (!s || state.phase !== "start") return;
    ui.resume.disabled = true;
    try {
      setStatus(t("openingCamera"));
      if (!(await ensureMedia())) return;
      state.session = s;
      await goLive();
    } finally {
      ui.resume.disabled = false;
    }
  }

  function discard() {
    state.session = null;
    saveSession();
    ui.resumePanel.hidden = true;
  }

  // -- test hook -------------------------------------------------------------------------

  function stats() {
    const audio = [...ui.reviewerAudio.querySelectorAll("audio")];
    return {
      signedIn: Boolean(state.token),
      officerId: state.officerId,
      phase: state.phase,
      fieldId: state.session?.field_id || null,
      sessionId: state.session?.session_id || null,
      participantId: client.participantId,
      clientPhase: client.phase,
      link: state.link,
      published: state.publication?.pc?.connectionState === "connected",
      facing: state.facing,
      lastFix: state.gps.last,
      fixesSent: state.gps.sent,
      fixesQueued: state.gps.queue.length,
      gpsProblem: state.gps.problem,
      reviewers: client.phase === "joined" ? reviewerNames() : [],
      hearing: audio.filter((a) => a.srcObject && a.srcObject.getAudioTracks().length).length,
      recording: {
        missing: state.support,
        active: Boolean(state.recorder),
        segments: [...state.segments.values()].map((v) => ({ ...v })),
      },
    };
  }

  // -- start -----------------------------------------------------------------------------

  async function init() {
    applyLanguage();
    for (const button of document.querySelectorAll("[data-lang]")) button.addEventListener("click", () => setLanguage(button.dataset.lang));
    ui.form.addEventListener("submit", startSession);
    ui.switchCamera.addEventListener("click", switchCamera);
    ui.mic.addEventListener("click", toggleMic);
    ui.end.addEventListener("click", endSession);
    ui.restart.addEventListener("click", restart);
    ui.resume.addEventListener("click", resume);
    ui.discard.addEventListener("click", discard);
    window.addEventListener("pagehide", () => {
      // The slices are in IndexedDB already; what the recorder holds now is lost with the page.
      client.close();
    });
    window.addEventListener("online", () => { if (state.phase === "live" && client.phase === "idle") rejoin(); });
    state.support = missingSupport();
    let name = params.get("name");
    try { name = name || localStorage.getItem(NAME_KEY); } catch { /* private mode */ }
    name = name || t("defaultOfficer");
    ui.officerName.value = name;
    if (state.fromLink) {
      renderSignedIn();
      ui.officerName.closest("label").hidden = true;
    } else {
      await signIn(name);
    }
    renderSupport();
    renderResume();
    if (!state.support.length) uploadLeftovers();
  }

  window.teller = { state, stats, client };
  init();
})();
