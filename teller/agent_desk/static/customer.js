// Teller customer page (/customer): pick a business, queue, meet the agent face to face,
// see the material the agent pushes, confirm and sign, hang up.
//
// REST: docs/contact-centre.md. Signalling: docs/protocol.md, through /static/teller-client.js
// (camera+mic on one publication with a data channel; the agent on a subscription; a
// screen share on a publication of its own; resumed by the client after a lost connection).
// Speech (docs/speech.md): the room's voice participant (role "service") is heard, never
// shown; its prompts show in big type; "Read aloud" speaks through the server's voice.
// Identity (docs/identity.md): the liveness check's prompts show big under an enlarged
// self-view, with the step and the time left, then the result for a few seconds.
"use strict";

(() => {
  const POLL_MS = 1000;
  const SUBSCRIBE_DEBOUNCE_MS = 200;
  const FONT_STEPS = [1, 1.25, 1.5, 1.75, 2];
  const LARGE_DEFAULT_STEP = 2;
  const FINISHED = new Set(["ended", "abandoned", "overflowed"]);
  // The digital assistant's identity (teller/digital_human/bot.py): shown like an agent, not only heard.
  const BOT_IDENTITY = "teller-digital-human";
  const PROMPT_KINDS = new Set(["risk_prompt", "anti_fraud"]); // shown big while read: the customer reads along
  const SPEAK_QUEUE_MAX = 3;
  const SPEAK_TIMEOUT_MS = 60000; // a clip that never says "ended" lets the next one speak after this
  const IDENTITY_RESULT_MS = 6000; // how long the check's result stays on the screen
  const IDENTITY_STALE_MS = 15000; // a prompt past its time with no result comes down after this
  const IDENTITY_STEPS = new Set(["position", "blink", "turn_left", "turn_right", "open_mouth", "nod"]);

  // All UI text, per language. Another language is one more entry here (and a button).
  const STRINGS = {
    zh: {
      htmlLang: "zh-CN", speechLang: "zh-CN",
      title: "视频柜台", skip: "跳到主要内容", settings: "设置", language: "语言",
      largeText: "大字模式", smaller: "A−", bigger: "A+", smallerLabel: "缩小字体", biggerLabel: "放大字体",
      voice: "语音播报",
      startHeading: "请选择要办理的业务", nameLabel: "您的姓名", defaultName: "客户",
      askBot: "问数字员工", askBotHint: "数字员工全天在线，回答常见问题；您随时可以说“转人工”。",
      botConnected: "数字员工为您服务，您可以直接说出问题。", botConnectedSpoken: "数字员工为您服务。",
      botName: "数字员工", askLabel: "输入您的问题", askSend: "发送", askPerson: "转人工", askPersonText: "转人工",
      handingOver: "正在为您转接人工客服，请稍候…", handingOverPosition: (n) => `正在为您转接人工客服，您前面还有 ${n} 位…`,
      botUnavailable: "数字员工暂时不可用，请选择业务由人工为您服务。",
      loading: "正在加载业务列表…", catalogueFailed: "业务列表加载失败，请刷新页面重试。",
      startSpoken: "欢迎使用视频柜台。请选择要办理的业务。",
      starting: "正在为您排队…",
      waitingHeading: "正在为您接通坐席", position: "您前面排队", estimated: "预计等待", waited: "已等待",
      positionValue: (n) => `第 ${n} 位`, seconds: (s) => `${s} 秒`, minutes: (m) => `约 ${m} 分钟`,
      waitingSpoken: (n) => `已为您排队，您现在排在第 ${n} 位，请稍候。`,
      cancel: "取消排队", callHeading: "视频通话", agent: "坐席", you: "我", material: "资料",
      controls: "通话控制",
      cameraOn: "摄像头：开", cameraOff: "摄像头：关", micOn: "麦克风：开", micOff: "麦克风：关",
      speakerOn: "扬声器：开", speakerOff: "扬声器：关", screenOn: "停止共享屏幕", screenOff: "共享屏幕",
      unavailable: (what) => `${what}不可用`, camera: "摄像头", mic: "麦克风",
      screenFailed: "无法共享屏幕。", hangup: "挂断",
      connected: "坐席已接通，请面对摄像头。", connectedSpoken: "坐席已接通。",
      noMedia: "未找到摄像头或麦克风，坐席将看不到或听不到您。",
      mediaBlocked: "摄像头和麦克风被浏览器阻止，请在浏览器中允许。",
      endedHeading: "通话已结束", endedText: "感谢您的使用。", cancelledText: "您已取消排队。",
      restart: "返回首页", endedSpoken: "通话已结束，感谢您的使用。",
      confirmHeading: "请确认交易", what: "业务", amount: "金额", account: "账户",
      signHere: "请在下方框内签名", signatureLabel: "签名板", clear: "清除签名",
      confirm: "确认", refuse: "拒绝", signFirst: "请先签名再确认。",
      confirmSpoken: (r) => `请确认：${r.what}，金额 ${r.amount}，账户 ${r.account_masked}。`,
      confirmSent: "您的确认已提交。", refusedSent: "您已拒绝该交易。", confirmFailed: "提交失败，请重试。",
      lost: "与服务器的连接已断开。", unreachable: "无法连接服务器，请检查网络后重试。",
      needPlayClick: "请点击页面任意位置以听到坐席的声音。", reconnecting: "正在重新连接…",
      networkWeak: "您的网络信号较弱，画面可能会暂停。", audioOnly: "为保证通话声音清晰，已暂停视频画面。",
      chosenSpoken: (name) => `您选择了：${name}。`,
      prompt_risk_prompt: "风险提示（请跟随语音阅读）", prompt_anti_fraud: "反诈提醒（请跟随语音阅读）", promptClose: "知道了",
      voicePlaying: "语音播报中", voiceName: "语音播报",
      idHeading: "身份核验", idGetReady: "准备", idStep: (k, n) => `第 ${k} 步，共 ${n} 步`, idSecondsLeft: (s) => `还剩 ${s} 秒`,
      idPrompt_position: "请正对摄像头", idPrompt_blink: "请眨眨眼", idPrompt_turn_left: "请向左转头", idPrompt_turn_right: "请向右转头",
      idPrompt_open_mouth: "请张张嘴", idPrompt_nod: "请点点头",
      idPassed: "核验通过", idFailed: "核验未通过", idPassedText: "谢谢，核验已完成。", idFailedText: "核验未能完成，坐席会协助您。",
    },
    en: {
      htmlLang: "en", speechLang: "en-US",
      title: "Video counter", skip: "Skip to main content", settings: "Settings", language: "Language",
      largeText: "Large text", smaller: "A−", bigger: "A+", smallerLabel: "Smaller text", biggerLabel: "Bigger text",
      voice: "Read aloud",
      startHeading: "Choose your business", nameLabel: "Your name", defaultName: "Customer",
      askBot: "Ask the digital assistant", askBotHint: "The digital assistant answers common questions at any hour; ask for a person at any time.",
      botConnected: "The digital assistant is with you: just ask your question.",
      botConnectedSpoken: "The digital assistant is with you.",
      botName: "Digital assistant", askLabel: "Type your question", askSend: "Send", askPerson: "Talk to a person",
      askPersonText: "I want to talk to a person",
      handingOver: "Connecting you to a colleague, please hold on…", handingOverPosition: (n) => `Connecting you to a colleague; ${n} ahead of you…`,
      botUnavailable: "The digital assistant is unavailable; please choose a business and a person will help you.",
      loading: "Loading the businesses…", catalogueFailed: "The businesses could not be loaded. Please reload the page.",
      startSpoken: "Welcome to the video counter. Please choose your business.",
      starting: "Putting you in the queue…",
      waitingHeading: "Connecting you to an agent", position: "Your place in the queue", estimated: "Estimated wait",
      waited: "Waited",
      positionValue: (n) => `${n}`, seconds: (s) => `${s} s`, minutes: (m) => `about ${m} min`,
      waitingSpoken: (n) => `You are in the queue, number ${n}. Please wait.`,
      cancel: "Cancel", callHeading: "Video call", agent: "Agent", you: "You", material: "Material",
      controls: "Call controls",
      cameraOn: "Camera on", cameraOff: "Camera off", micOn: "Microphone on", micOff: "Microphone off",
      speakerOn: "Speaker on", speakerOff: "Speaker off", screenOn: "Stop sharing", screenOff: "Share screen",
      unavailable: (what) => `${what} unavailable`, camera: "Camera", mic: "Microphone",
      screenFailed: "The screen could not be shared.", hangup: "Hang up",
      connected: "You are connected to an agent. Please face the camera.", connectedSpoken: "You are connected to an agent.",
      noMedia: "No camera or microphone was found; the agent will not see or hear you.",
      mediaBlocked: "Camera and microphone are blocked; allow them in the browser.",
      endedHeading: "The call has ended", endedText: "Thank you.", cancelledText: "You left the queue.",
      restart: "Back to start", endedSpoken: "The call has ended. Thank you.",
      confirmHeading: "Please confirm", what: "What", amount: "Amount", account: "Account",
      signHere: "Please sign in the box below", signatureLabel: "Signature pad", clear: "Clear signature",
      confirm: "Confirm", refuse: "Refuse", signFirst: "Please sign before you confirm.",
      confirmSpoken: (r) => `Please confirm: ${r.what}, amount ${r.amount}, account ${r.account_masked}.`,
      confirmSent: "Your confirmation was sent.", refusedSent: "You refused the transaction.",
      confirmFailed: "It could not be sent. Please try again.",
      lost: "The connection to the server was lost.", unreachable: "Cannot reach the server. Check your connection and try again.",
      needPlayClick: "Click anywhere on the page to hear the agent.", reconnecting: "Reconnecting…",
      networkWeak: "Your network is weak; the picture may pause.", audioOnly: "The video is paused to keep the voice clear.",
      chosenSpoken: (name) => `You chose: ${name}.`,
      prompt_risk_prompt: "Risk notice (please read along)", prompt_anti_fraud: "Anti-fraud reminder (please read along)", promptClose: "OK",
      voicePlaying: "Voice prompt playing", voiceName: "Voice prompts",
      idHeading: "Identity check", idGetReady: "Get ready", idStep: (k, n) => `Step ${k} of ${n}`, idSecondsLeft: (s) => `${s} s left`,
      idPrompt_position: "Look straight at the camera", idPrompt_blink: "Blink", idPrompt_turn_left: "Turn your head to your left",
      idPrompt_turn_right: "Turn your head to your right", idPrompt_open_mouth: "Open your mouth", idPrompt_nod: "Nod",
      idPassed: "Check passed", idFailed: "Check not passed", idPassedText: "Thank you, the check is complete.",
      idFailedText: "The check did not succeed. The agent will help you.",
    },
  };

  // Chinese first: ?lang= or the browser's English say otherwise (see init).
  const texts = TellerPage.texts(STRINGS, "zh");

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    langButtons: [...document.querySelectorAll("[data-lang]")],
    large: $("large-text"), smaller: $("text-smaller"), bigger: $("text-bigger"), voice: $("voice"),
    main: $("main"),
    views: { start: $("view-start"), waiting: $("view-waiting"), call: $("view-call"), ended: $("view-ended") },
    name: $("name"), businesses: $("businesses"),
    waitingBusiness: $("waiting-business"), position: $("queue-position"), estimate: $("queue-estimate"),
    waited: $("queue-waited"), cancel: $("cancel"),
    remoteVideo: $("remote-video"), remoteName: $("remote-name"), stage: document.querySelector(".stage"),
    material: $("material"), materialContent: $("material-content"), pointer: $("pointer"),
    preview: $("preview"), localVideo: $("local-video"),
    camera: $("toggle-camera"), mic: $("toggle-mic"), speaker: $("toggle-speaker"), screen: $("toggle-screen"),
    hangup: $("hangup"), endedText: $("ended-text"), restart: $("restart"),
    dialog: $("confirm"), confirmWhat: $("confirm-what"), confirmAmount: $("confirm-amount"),
    confirmAccount: $("confirm-account"), signatureBlock: $("signature-block"), signature: $("signature"),
    signatureClear: $("signature-clear"), confirmError: $("confirm-error"),
    confirmAccept: $("confirm-accept"), confirmRefuse: $("confirm-refuse"),
    networkNotice: $("network-notice"), audioOnlyNotice: $("audio-only-notice"),
    prompt: $("prompt"), promptHeading: $("prompt-heading"), promptText: $("prompt-text"), promptClose: $("prompt-close"),
    voiceChip: $("voice-chip"), voiceAudio: $("voice-audio"),
    caption: $("caption"), captionWho: $("caption-who"), captionText: $("caption-text"),
    askBot: $("ask-bot"), askForm: $("ask-form"), askText: $("ask-text"), askPerson: $("ask-person"), botStatus: $("bot-status"),
    identity: $("identity-prompt"), identityHeading: $("identity-prompt-heading"), identityText: $("identity-prompt-text"),
    identityCountdown: $("identity-prompt-countdown"),
  };

  const state = {
    get lang() { return texts.lang; },
    large: false,
    fontStep: 0,
    voice: false,
    catalogue: [],
    phase: "start", // start | queuing | waiting | call | ending | ended
    session: 0,
    token: null,
    room: "",
    business: null,
    callId: null,
    callState: null,
    target: "agent", // or "digital_human": the customer asked the digital assistant first
    withBot: false, // the call view opened with the digital assistant (a person may take over)
    botId: null, // the digital assistant's participant id while it is in the room
    position: null,
    pollTimer: null,
    localStream: null,
    mediaWarning: "",
    publisher: null, // the client's publication of camera and microphone (with the data channel)
    screen: null, // the client's publication of a screen share
    agentId: null, // the participant subscribed to
    subscription: null, // the client's subscription to the agent
    others: new Map(), // participant_id -> {sub, tile, video}: a third party, a supervisor who barged in
    voices: new Map(), // participant_id -> {sub, audio}: the room's voice participant (role "service"), heard only
    prompt: null, // {id, kind, text, state}: the prompt the voice reads (or read) for the customer to follow
    speaking: new Set(), // utterance ids the voice has started and not finished
    caption: null, // {who, text}: what the agent or the voice said last (shown in large-text mode)
    syncTimer: null,
    speakerOn: true,
    material: null, // the current material's id
    confirmation: null, // {request, state: pending|sending|accepted|refused|error}
    qualityAlerts: new Map(), // alert_id -> kind: the server's raised alerts about this customer
    audioOnly: false, // the server sends this customer audio only to keep the voice clear
    signed: false,
    identity: newIdentity(), // the liveness check's prompt or result on the screen
    get participants() { return client.participants; }, // participant_id -> info with tracks
    get participantId() { return client.participantId; },
  };

  function newIdentity() {
    return {
      prompt: null, // {attemptId, step, index, count, text: {zh, en} | null, deadline (performance.now ms)}
      result: null, // {attemptId, passed, reason, text: {zh, en} | null}
      ticker: null, // the countdown's interval
      hideTimer: null,
      log: [], // what was shown: {kind: "prompt", step, index} | {kind: "result", passed, reason}
    };
  }

  // Some texts are functions (of a confirmation request): handed back as they are.
  const t = (key) => texts.tOr(key, key);

  // The client's own errors in the page's words (the server's come with its message).
  const CLIENT_TEXT = { unreachable: "unreachable", timeout: "unreachable", disconnected: "lost", left: "lost" };
  const client = new TellerClient({
    text: (code) => (CLIENT_TEXT[code] ? t(CLIENT_TEXT[code]) : undefined),
    awaits: (info) => info.participant_id === state.agentId, // after a drop, only the agent's media
  });

  // -- status, voice, language, large text ----------------------------------------------

  function setStatus(text, isError = false) {
    ui.status.textContent = text;
    ui.status.classList.toggle("error", isError);
    if (isError && state.large) speak(text); // large-text mode: a problem is read aloud too
  }

  // "Read aloud". In the call the server's voice says it into the session (the agent hears
  // it too and it is recorded); before and after, the server's synthesis plays here; the
  // browser's own voice when the server has none (409 tts_unavailable) or cannot be reached.
  const reading = { queue: [], busy: false, generation: 0, audio: null, log: [] };

  function speak(text) {
    if (!state.voice || !text) return;
    const language = state.lang;
    if (state.phase === "call" && client.phase === "joined" && state.room && state.token) {
      api("POST", `/v1/rooms/${encodeURIComponent(state.room)}/speech/broadcast`, { text, language })
        .then(() => noteSpoken("broadcast", text))
        .catch(() => speakInBrowser(text, language));
      return;
    }
    reading.queue.push({ text, language });
    reading.queue.splice(0, reading.queue.length - SPEAK_QUEUE_MAX);
    if (!reading.busy) readNext();
  }

  async function readNext() {
    const generation = reading.generation;
    const item = reading.queue.shift();
    if (!item) {
      reading.busy = false;
      return;
    }
    reading.busy = true;
    try {
      await playSynthesized(item, generation);
      noteSpoken("synthesize", item.text);
    } catch {
      if (generation === reading.generation) speakInBrowser(item.text, item.language);
    }
    if (generation === reading.generation) readNext(); // else stopped meanwhile: the next speak starts afresh
  }

  // GET /v1/speech/synthesize with the page's token (so fetch and a blob URL, not <audio src>).
  async function playSynthesized({ text, language }, generation) {
    if (!state.token) throw new Error("no token before a call");
    const query = new URLSearchParams({ text, lang: language });
    const response = await fetch(`/v1/speech/synthesize?${query}`, { headers: { Authorization: `Bearer ${state.token}` } });
    if (!response.ok) throw new Error(`synthesize: ${response.status}`);
    const url = URL.createObjectURL(await response.blob());
    try {
      if (generation !== reading.generation) return;
      const audio = new Audio(url);
      reading.audio = audio;
      await audio.play();
      await new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, SPEAK_TIMEOUT_MS);
        audio.addEventListener("ended", () => { clearTimeout(timer); resolve(); }, { once: true });
        audio.addEventListener("pause", () => { clearTimeout(timer); resolve(); }, { once: true });
        audio.addEventListener("error", () => { clearTimeout(timer); reject(new Error("playback failed")); }, { once: true });
      });
    } finally {
      if (reading.audio?.src === url) reading.audio = null;
      URL.revokeObjectURL(url);
    }
  }

  function speakInBrowser(text, language) {
    if (!("speechSynthesis" in window)) return;
    try {
      const utterance = new SpeechSynthesisUtterance(text);
      utterance.lang = STRINGS[language]?.speechLang || t("speechLang");
      window.speechSynthesis.speak(utterance);
      noteSpoken("browser", text);
    } catch {
      // No voice here: the text is on the screen anyway.
    }
  }

  function stopSpeaking() {
    reading.generation += 1;
    reading.queue = [];
    reading.busy = false;
    reading.audio?.pause();
    reading.audio = null;
    if ("speechSynthesis" in window) window.speechSynthesis.cancel();
  }

  function noteSpoken(how, text) {
    reading.log.push({ how, text });
    reading.log.splice(0, reading.log.length - 20);
  }

  function applyLanguage() {
    texts.apply();
    ui.name.placeholder = t("defaultName");
    renderControls();
    renderQueue();
    renderBusinessName();
    renderPrompt();
    renderCaption();
    renderIdentity();
  }

  async function setLanguage(lang) {
    if (!STRINGS[lang]) return;
    texts.use(lang);
    applyLanguage();
    if (state.phase === "start") {
      await loadCatalogue();
      speak(t("startSpoken"));
    }
  }

  function applyTextSize() {
    document.body.classList.toggle("large", state.large);
    document.documentElement.style.setProperty("--scale", String(FONT_STEPS[state.fontStep]));
    ui.large.setAttribute("aria-pressed", String(state.large));
    ui.smaller.hidden = ui.bigger.hidden = !state.large;
    ui.smaller.disabled = state.fontStep <= 1;
    ui.bigger.disabled = state.fontStep >= FONT_STEPS.length - 1;
  }

  function setLarge(on) {
    state.large = on;
    state.fontStep = on ? LARGE_DEFAULT_STEP : 0;
    applyTextSize();
    renderCaption();
  }

  function stepText(delta) {
    state.fontStep = Math.min(FONT_STEPS.length - 1, Math.max(1, state.fontStep + delta));
    applyTextSize();
  }

  function showView(name) {
    for (const [key, view] of Object.entries(ui.views)) view.hidden = key !== name;
    document.body.dataset.phase = name;
  }

  // -- REST -------------------------------------------------------------------------------

  // The server's refusals come with its message; else the status.
  const api = TellerPage.api({
    token: () => state.token,
    text: (key, vars) => (key === "refused" ? `HTTP ${vars.status}` : t(key)),
  });

  async function loadCatalogue() {
    const lang = state.lang;
    setStatus(t("loading"));
    try {
      const data = await api("GET", `/v1/catalogue?lang=${encodeURIComponent(lang)}`, undefined, null);
      if (lang !== state.lang) return;
      state.catalogue = data.businesses || [];
      renderCatalogue();
      setStatus("");
    } catch {
      setStatus(t("catalogueFailed"), true);
    }
  }

  function businessName(business) {
    const name = business?.name;
    if (typeof name === "string") return name;
    return name?.[state.lang] || name?.en || business?.id || "";
  }

  function renderCatalogue() {
    ui.businesses.replaceChildren(...state.catalogue.map((business) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "business big";
      button.dataset.business = business.id;
      button.textContent = businessName(business);
      button.addEventListener("click", () => startCall(business));
      return button;
    }));
  }

  function renderBusinessName() {
    ui.waitingBusiness.textContent = state.business ? businessName(state.catalogue.find((b) => b.id === state.business.id) || state.business) : "";
  }

  // -- queueing ---------------------------------------------------------------------------

  function randomRoom() {
    const bytes = new Uint8Array(6);
    crypto.getRandomValues(bytes);
    return `cust-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
  }

  // The digital assistant serves the general-enquiry business (the first business when the
  // catalogue has none); a person who takes over comes from that business's skill.
  function askBot() {
    const business = state.catalogue.find((b) => b.id === "general_enquiry") || state.catalogue[0];
    if (business) startCall(business, "digital_human");
  }

  async function startCall(business, target = "agent") {
    if (state.phase !== "start") return;
    const session = ++state.session;
    state.phase = "queuing";
    state.target = target;
    state.business = business;
    state.room = randomRoom();
    for (const button of ui.businesses.querySelectorAll("button")) button.disabled = true;
    setStatus(t("starting"));
    speak(t("chosenSpoken")(businessName(business)));
    const name = ui.name.value.trim() || t("defaultName");
    try {
      const issued = await api("POST", "/v1/dev/token", { room: state.room, role: "customer", name }, null);
      state.token = issued.token;
      const call = await api("POST", "/v1/calls", { business: business.id, language: state.lang, elderly: state.large, channel: "h5", target });
      if (session !== state.session) return;
      state.callId = call.call_id;
      state.callState = call.state;
      state.phase = "waiting";
      renderBusinessName();
      showView("waiting");
      ui.preview.hidden = false;
      setStatus("");
      ui.cancel.focus();
      poll(session);
      joinRoom(session).catch((error) => {
        if (session === state.session) setStatus(error.message, true);
      });
    } catch (error) {
      if (session !== state.session) return;
      state.phase = "start";
      for (const button of ui.businesses.querySelectorAll("button")) button.disabled = false;
      setStatus(target === "digital_human" && error.code === "bot_unavailable" ? t("botUnavailable") : error.message, true);
    }
  }

  function renderQueue() {
    const q = state.queue;
    ui.position.textContent = q?.position ? t("positionValue")(q.position) : "–";
    ui.estimate.textContent = q && q.estimated_wait_s != null ? formatWait(q.estimated_wait_s) : "–";
    ui.waited.textContent = q && q.waited_s != null ? t("seconds")(Math.round(q.waited_s)) : "–";
  }

  function formatWait(seconds) {
    const s = Math.max(0, Math.round(seconds));
    return s < 60 ? t("seconds")(s) : t("minutes")(Math.ceil(s / 60));
  }

  async function poll(session, once = false) {
    if (session !== state.session || !state.callId) return;
    try {
      const call = await api("GET", `/v1/calls/${encodeURIComponent(state.callId)}`);
      if (session !== state.session) return;
      onCall(call);
    } catch {
      // A missed poll is retried next time.
    }
    if (!once && session === state.session && !FINISHED.has(state.callState)) {
      state.pollTimer = setTimeout(() => poll(session), POLL_MS);
    }
  }

  function onCall(call) {
    const before = state.position;
    state.callState = call.state;
    state.queue = call.queue || null;
    state.position = call.queue?.position ?? null;
    renderQueue();
    if (state.phase === "waiting" && state.position && before == null) speak(t("waitingSpoken")(state.position));
    if (call.state === "connected" || call.state === "bot") enterCall();
    renderBotStatus(call);
    if (FINISHED.has(call.state)) finish(call.state === "abandoned" ? t("cancelledText") : t("endedText"));
  }

  // After the assistant hands over, the customer stays in the call view (the assistant
  // stays until a person joins) and is told a person is coming.
  function renderBotStatus(call) {
    const handing = state.phase === "call" && Boolean(call?.bot?.handover) && ["queued", "ringing"].includes(call.state);
    ui.botStatus.hidden = !handing;
    if (handing) ui.botStatus.textContent = state.position ? t("handingOverPosition")(state.position) : t("handingOver");
    ui.askForm.hidden = !(state.phase === "call" && state.botId && call?.state !== "connected");
  }

  function askQuestion(text) {
    const question = String(text || "").trim();
    if (!question || !state.botId) return;
    client.sendData({ text: question }, "chat");
    ui.askText.value = "";
  }

  function enterCall() {
    if (state.phase === "call" && state.withBot && state.callState === "connected") {
      state.withBot = false; // a person took over from the digital assistant
      setStatus(t("connected"));
      speak(t("connectedSpoken"));
      return;
    }
    if (state.phase !== "waiting") return;
    state.phase = "call";
    // The assistant may publish before the poll says "bot" (a call sent to it after waiting).
    state.withBot = state.callState === "bot" || (Boolean(state.botId) && state.callState !== "connected");
    showView("call");
    renderControls();
    renderCaption();
    setStatus(state.mediaWarning || t(state.withBot ? "botConnected" : "connected"), Boolean(state.mediaWarning));
    speak(t(state.withBot ? "botConnectedSpoken" : "connectedSpoken"));
    ui.hangup.focus();
    scheduleSync();
  }

  async function cancelOrHangUp() {
    if (!["waiting", "call"].includes(state.phase)) return;
    const callId = state.callId;
    state.phase = "ending";
    try {
      if (callId) onCall(await api("DELETE", `/v1/calls/${encodeURIComponent(callId)}`));
    } catch (error) {
      setStatus(error.message, true);
    }
    finish(state.callState === "abandoned" ? t("cancelledText") : t("endedText"));
  }

  async function finish(text) {
    if (state.phase === "ended") return;
    state.phase = "ended";
    clearTimeout(state.pollTimer);
    if (ui.dialog.open) ui.dialog.close();
    await leaveRoom();
    showView("ended");
    ui.preview.hidden = true;
    ui.askForm.hidden = true;
    ui.botStatus.hidden = true;
    ui.endedText.textContent = text;
    setStatus("");
    resetSpeech();
    resetIdentity();
    speak(t("endedSpoken"));
    ui.restart.focus();
  }

  function restart() {
    state.session += 1;
    Object.assign(state, {
      phase: "start", token: null, callId: null, callState: null, position: null, queue: null, business: null,
      material: null, confirmation: null, agentId: null, target: "agent", botId: null, withBot: false,
    });
    showMaterial(null);
    resetSpeech();
    resetIdentity();
    showView("start");
    renderCatalogue();
    ui.name.focus();
  }

  // -- signalling (/static/teller-client.js) -------------------------------------------------

  client
    .on("participant_joined", () => {
      // Someone else joined the customer's room: that is the agent answering.
      if (state.phase === "waiting") poll(state.session, true);
      scheduleSync();
    })
    .on("participant_left", (m) => removeParticipant(m.participant_id))
    .on("track_published", () => scheduleSync())
    .on("track_unpublished", () => scheduleSync())
    .on("transport_closed", onTransportClosed)
    .on("data", onData)
    .on("error", (m, meta) => { if (!meta.channel && m.code !== "transport_not_found") setStatus(m.message || m.code, true); })
    .on("reconnecting", () => { if (["waiting", "call"].includes(state.phase)) setStatus(t("reconnecting")); })
    .on("resumed", () => scheduleSync()) // after a move, the agent is subscribed to again
    .on("restored", () => { if (ui.status.textContent === t("reconnecting")) setStatus(""); })
    .on("closed", () => { if (state.phase === "waiting" || state.phase === "call") setStatus(t("lost"), true); });

  async function startLocalMedia() {
    const { stream, problem } = await TellerClient.openCamera();
    state.mediaWarning = problem ? t(problem === "blocked" ? "mediaBlocked" : "noMedia") : "";
    return stream;
  }

  // While waiting: join the call's room and publish camera and microphone at once.
  async function joinRoom(session) {
    state.mediaWarning = "";
    const stream = await startLocalMedia();
    if (session !== state.session) {
      stream.getTracks().forEach((track) => track.stop());
      return;
    }
    state.localStream = stream;
    ui.localVideo.srcObject = stream.getVideoTracks().length ? stream : null;
    renderControls();
    if (state.mediaWarning) setStatus(state.mediaWarning, true);
    await client.join(state.token);
    if (session !== state.session) return;
    if (client.participants.size) {
      if (state.phase === "waiting") poll(session, true);
      scheduleSync();
    }
    state.publisher = client.publish(stream, { dataChannel: true, onError: (error) => setStatus(error.message, true) });
    await state.publisher.ready;
  }

  async function leaveRoom() {
    await client.leave();
    teardownMedia();
  }

  function teardownMedia() {
    dropSubscription(false);
    dropOthers(false);
    for (const participantId of [...state.voices.keys()]) dropVoice(participantId, false);
    clearTimeout(state.syncTimer);
    stopScreen(false);
    state.publisher?.close(false);
    state.publisher = null;
    state.localStream?.getTracks().forEach((track) => track.stop());
    state.localStream = null;
    ui.localVideo.srcObject = null;
    client.close(); // says `leave` if still in the room
    state.agentId = null;
    resetQuality();
  }

  // -- the agent's media ---------------------------------------------------------------------

  function removeParticipant(participantId) {
    if (state.subscription?.participantId === participantId) dropSubscription(false);
    dropOther(participantId, false);
    dropVoice(participantId, false);
    if (state.agentId === participantId) state.agentId = null;
    chooseAgent();
  }

  function onTransportClosed({ publication, subscription }) {
    if (subscription && subscription === state.subscription) {
      dropSubscription(false);
      scheduleSync(1000);
    }
    if (publication && publication === state.screen) stopScreen(false);
  }

  function scheduleSync(delay = SUBSCRIBE_DEBOUNCE_MS) {
    clearTimeout(state.syncTimer);
    state.syncTimer = setTimeout(chooseAgent, delay);
  }

  // The agent is the other participant with tracks, one with role "agent" first (the one
  // shown already while it stays); their camera and microphone are shown big. Subscribed once
  // connected, or once they publish. The voice participant (role "service") is never the
  // agent and has no tile: it is only heard.
  function chooseAgent() {
    if (!["waiting", "call"].includes(state.phase) || client.phase !== "joined") return;
    const others = [...client.participants.values()].filter((p) => p.participant_id !== client.participantId && p.tracks.length);
    const isBot = (p) => p.role === "service" && p.identity === BOT_IDENTITY;
    syncVoices(others.filter((p) => p.role === "service" && !isBot(p)));
    const publishing = others.filter((p) => p.role !== "service" || isBot(p));
    const bot = publishing.find(isBot);
    state.botId = bot?.participant_id || null;
    const current = publishing.find((p) => p.participant_id === state.agentId);
    const agent = (current?.role === "agent" && current) || publishing.find((p) => p.role === "agent") || current || publishing[0];
    if (!agent) {
      dropSubscription(true);
      dropOthers(true);
      return;
    }
    if (state.phase === "waiting") enterCall();
    state.agentId = agent.participant_id;
    ui.remoteName.textContent = isBot(agent) ? t("botName") : agent.name || t("agent");
    ui.askForm.hidden = !state.botId || state.callState === "connected";
    // Only the camera and microphone: a screen share of the agent would come as a second video.
    const tracks = agent.tracks.filter((x) => x.source !== "screen");
    const chosen = ["audio", "video"].map((kind) => tracks.find((x) => x.kind === kind)).filter(Boolean);
    const sub = state.subscription;
    syncOthers(publishing, agent.participant_id);
    if (sub && sub.participantId === agent.participant_id && chosen.every((x) => sub.trackIds.has(x.track_id))) return;
    dropSubscription(true);
    if (chosen.length) subscribe(agent.participant_id, chosen).catch(() => scheduleSync(1000));
  }

  function cameraAndMicrophone(participant) {
    const tracks = participant.tracks.filter((x) => x.source !== "screen");
    return ["audio", "video"].map((kind) => tracks.find((x) => x.kind === kind)).filter(Boolean);
  }

  // Anyone else who publishes (a third party the agent invited, a supervisor who barged
  // in) is seen and heard in a small tile of their own. The server never lists a
  // supervisor who is only monitoring or whispering, so none appears here before that.
  function syncOthers(publishing, agentId) {
    const wanted = new Map(publishing.filter((p) => p.participant_id !== agentId).map((p) => [p.participant_id, p]));
    for (const [participantId, other] of state.others) {
      const info = wanted.get(participantId);
      if (!info || !cameraAndMicrophone(info).every((x) => other.sub.trackIds.has(x.track_id))) dropOther(participantId, true);
    }
    for (const [participantId, info] of wanted) {
      const chosen = cameraAndMicrophone(info);
      if (state.others.has(participantId) || !chosen.length) continue;
      const tile = document.createElement("figure");
      tile.className = "other";
      tile.dataset.participantId = participantId;
      const video = document.createElement("video");
      video.autoplay = true;
      video.playsInline = true;
      const caption = document.createElement("figcaption");
      caption.textContent = info.name || "";
      tile.append(video, caption);
      ui.stage.append(tile);
      const sub = client.subscribe(participantId, chosen, {
        byTrackIds: true,
        onTrack: () => {
          if (video.srcObject !== sub.stream) video.srcObject = sub.stream;
          video.muted = !state.speakerOn;
          play(video);
        },
        onClose: () => {
          if (state.others.get(participantId)?.sub === sub) dropOther(participantId, false);
        },
      });
      state.others.set(participantId, { sub, tile, video });
      sub.ready.catch(() => scheduleSync(1000));
    }
  }

  // Each voice participant's audio in a hidden <audio> (the speaker button mutes it too).
  function syncVoices(voices) {
    const wanted = new Map(voices.map((p) => [p.participant_id, p]));
    for (const [participantId, voice] of state.voices) {
      const audio = wanted.get(participantId)?.tracks.filter((x) => x.kind === "audio") || [];
      if (!audio.length || !audio.every((x) => voice.sub.trackIds.has(x.track_id))) dropVoice(participantId, true);
    }
    for (const [participantId, info] of wanted) {
      const tracks = info.tracks.filter((x) => x.kind === "audio");
      if (state.voices.has(participantId) || !tracks.length) continue;
      const audio = document.createElement("audio");
      audio.autoplay = true;
      audio.dataset.participantId = participantId;
      ui.voiceAudio.append(audio);
      const sub = client.subscribe(participantId, tracks, {
        byTrackIds: true,
        onTrack: () => {
          if (audio.srcObject !== sub.stream) audio.srcObject = sub.stream;
          audio.muted = !state.speakerOn;
          play(audio);
        },
        onClose: () => {
          if (state.voices.get(participantId)?.sub === sub) dropVoice(participantId, false);
        },
      });
      state.voices.set(participantId, { sub, audio });
      sub.ready.catch(() => scheduleSync(1000));
    }
  }

  function dropVoice(participantId, tellServer) {
    const voice = state.voices.get(participantId);
    if (!voice) return;
    state.voices.delete(participantId);
    voice.audio.srcObject = null;
    voice.audio.remove();
    voice.sub.close(tellServer);
    if (!state.voices.size) {
      state.speaking.clear();
      renderVoiceChip();
    }
  }

  function dropOther(participantId, tellServer) {
    const other = state.others.get(participantId);
    if (!other) return;
    state.others.delete(participantId);
    other.tile.remove();
    other.sub.close(tellServer);
  }

  function subscribe(participantId, tracks) {
    const sub = client.subscribe(participantId, tracks, {
      byTrackIds: true,
      onTrack: () => {
        if (ui.remoteVideo.srcObject !== sub.stream) ui.remoteVideo.srcObject = sub.stream;
        ui.remoteVideo.muted = !state.speakerOn;
        play(ui.remoteVideo);
      },
      onClose: () => {
        if (state.subscription !== sub) return;
        state.subscription = null;
        ui.remoteVideo.srcObject = null;
      },
    });
    state.subscription = sub;
    return sub.ready;
  }

  function dropSubscription(tellServer) {
    state.subscription?.close(tellServer);
  }

  function dropOthers(tellServer) {
    for (const participantId of [...state.others.keys()]) dropOther(participantId, tellServer);
  }

  function play(video) {
    video.play().catch((error) => {
      if (error.name !== "NotAllowedError") return;
      video.muted = true;
      video.play().catch(() => {});
      setStatus(t("needPlayClick"));
      document.addEventListener("click", () => {
        video.muted = !state.speakerOn;
        video.play().catch(() => {});
      }, { once: true });
    });
  }

  // -- controls ---------------------------------------------------------------------------------

  function localTracks(kind) {
    if (!state.localStream) return [];
    return kind === "audio" ? state.localStream.getAudioTracks() : state.localStream.getVideoTracks();
  }

  function renderToggle(button, kind, onKey, offKey, nameKey) {
    const tracks = localTracks(kind);
    const on = tracks.length > 0 && tracks[0].enabled;
    button.disabled = tracks.length === 0;
    button.textContent = tracks.length === 0 ? t("unavailable")(t(nameKey)) : t(on ? onKey : offKey);
    button.setAttribute("aria-pressed", String(on));
  }

  function renderControls() {
    renderToggle(ui.camera, "video", "cameraOn", "cameraOff", "camera");
    renderToggle(ui.mic, "audio", "micOn", "micOff", "mic");
    ui.speaker.textContent = t(state.speakerOn ? "speakerOn" : "speakerOff");
    ui.speaker.setAttribute("aria-pressed", String(state.speakerOn));
    const sharing = Boolean(state.screen);
    ui.screen.textContent = t(sharing ? "screenOn" : "screenOff");
    ui.screen.setAttribute("aria-pressed", String(sharing));
    ui.screen.disabled = !navigator.mediaDevices?.getDisplayMedia;
  }

  function toggleLocal(kind) {
    const tracks = localTracks(kind);
    if (!tracks.length) return;
    const on = !tracks[0].enabled;
    tracks.forEach((track) => { track.enabled = on; });
    renderControls();
  }

  function toggleSpeaker() {
    state.speakerOn = !state.speakerOn;
    ui.remoteVideo.muted = !state.speakerOn;
    for (const other of state.others.values()) other.video.muted = !state.speakerOn;
    for (const voice of state.voices.values()) voice.audio.muted = !state.speakerOn;
    renderControls();
  }

  async function toggleScreen() {
    if (state.screen) {
      stopScreen(true);
      return;
    }
    const session = state.session;
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch {
      setStatus(t("screenFailed"), true);
      return;
    }
    if (session !== state.session || client.phase !== "joined") {
      stream.getTracks().forEach((track) => track.stop());
      return;
    }
    const screen = client.publish(stream, { source: "screen", name: "screen" });
    state.screen = screen;
    renderControls();
    stream.getVideoTracks()[0].addEventListener("ended", () => { if (state.screen === screen) stopScreen(true); });
    try {
      await screen.ready;
    } catch {
      if (state.screen === screen) stopScreen(false);
      setStatus(t("screenFailed"), true);
    }
  }

  function stopScreen(tellServer) {
    const screen = state.screen;
    if (!screen) return;
    state.screen = null;
    screen.stream.getTracks().forEach((track) => track.stop());
    screen.close(tellServer);
    renderControls();
  }

  // -- data: material, pointer, confirmation -----------------------------------------------------

  function onData(message) {
    const payload = message.payload;
    // Quality notes come from the server itself (never from a participant), about this customer.
    if (message.from_participant_id == null && ["quality.alert", "quality.tier"].includes(message.topic)) {
      onQuality(message.topic, payload);
      return;
    }
    // The identity check's prompts and result come from the server itself, never from a participant.
    if (message.from_participant_id == null && message.topic === "identity.prompt") {
      onIdentityPrompt(payload);
      return;
    }
    if (message.from_participant_id == null && message.topic === "identity.result") {
      onIdentityResult(payload);
      return;
    }
    if (message.topic === "speech.caption" && message.from_participant_id == null) {
      onCaption(payload);
      return;
    }
    if (message.topic === "bot.say") {
      // The digital assistant's words, on screen always (and read aloud here when it has no voice).
      if (message.from_participant_id && message.from_participant_id === state.botId) onBotSay(payload);
      return;
    }
    if (message.topic === "speech.tts") {
      // Only the voice participant says what it plays.
      if (client.participants.get(message.from_participant_id)?.role === "service") onTts(payload);
      return;
    }
    if (message.topic === "material") showMaterial(payload);
    else if (message.topic === "pointer") showPointer(payload);
    else if (message.topic === "confirm_request") openConfirmation(payload);
  }

  // A weak link: a gentle word while the alert lasts; video paused for this customer (the
  // server sends it audio only): said so, until the video comes back.
  function onQuality(topic, payload) {
    if (!payload || typeof payload !== "object" || payload.participant_id !== client.participantId) return;
    const before = { network: state.qualityAlerts.size > 0, audioOnly: state.audioOnly };
    if (topic === "quality.alert" && payload.alert_id) {
      if (payload.state === "cleared") state.qualityAlerts.delete(payload.alert_id);
      else state.qualityAlerts.set(payload.alert_id, payload.kind);
    } else if (topic === "quality.tier" && payload.to) {
      state.audioOnly = payload.to === "audio_only";
    }
    renderQualityNotices();
    if (!before.network && state.qualityAlerts.size > 0) speak(t("networkWeak"));
    if (!before.audioOnly && state.audioOnly) speak(t("audioOnly"));
  }

  function renderQualityNotices() {
    const inCall = ["waiting", "call"].includes(state.phase);
    ui.networkNotice.hidden = !(inCall && state.qualityAlerts.size > 0);
    ui.audioOnlyNotice.hidden = !(inCall && state.audioOnly);
  }

  function resetQuality() {
    state.qualityAlerts.clear();
    state.audioOnly = false;
    renderQualityNotices();
  }

  // -- speech: captions, prompts ----------------------------------------------------------------

  // What the agent (or the voice) said last, final lines only; shown in large-text mode.
  function onCaption(caption) {
    if (!caption || typeof caption !== "object" || caption.final !== true || typeof caption.text !== "string") return;
    if (caption.participant_id === client.participantId || caption.role === "customer" || !caption.text.trim()) return;
    state.caption = { name: String(caption.name || ""), text: caption.text, role: String(caption.role || "") };
    renderCaption();
  }

  function onBotSay(payload) {
    if (!payload || typeof payload !== "object" || typeof payload.text !== "string") return;
    state.caption = { name: t("botName"), text: payload.text, role: "bot" };
    renderCaption();
    if (payload.spoken === false) speak(payload.text);
  }

  function renderCaption() {
    const c = state.caption;
    ui.caption.hidden = !((state.large || c?.role === "bot") && c && state.phase === "call");
    ui.caption.dataset.role = c?.role || "";
    const who = c?.role === "service" ? t("voiceName") : c?.name || t("agent");
    ui.captionWho.textContent = c ? `${who}${state.lang === "zh" ? "：" : ":"}` : "";
    ui.captionText.textContent = c?.text || "";
  }

  function onTts(payload) {
    if (!payload || typeof payload !== "object" || !payload.id || typeof payload.text !== "string") return;
    if (payload.state === "started") {
      state.speaking.add(payload.id);
      state.caption = { name: "", text: payload.text, role: "service" };
      renderCaption();
    } else if (["finished", "failed"].includes(payload.state)) {
      state.speaking.delete(payload.id);
    }
    renderVoiceChip();
    if (!PROMPT_KINDS.has(payload.kind)) return;
    const same = state.prompt?.id === payload.id;
    if (payload.state === "started" || same || payload.state === "failed") {
      state.prompt = { id: payload.id, kind: payload.kind, text: payload.text, state: payload.state };
      renderPrompt();
    }
    // The voice could not say it: read it aloud here (if "Read aloud" is on), it is on the screen too.
    if (payload.state === "failed") speak(payload.text);
  }

  function renderPrompt() {
    const prompt = state.prompt;
    ui.prompt.hidden = !(prompt && ["waiting", "call"].includes(state.phase));
    ui.prompt.dataset.kind = prompt?.kind || "";
    ui.prompt.dataset.state = prompt?.state || "";
    ui.promptHeading.textContent = prompt ? t(`prompt_${prompt.kind}`) : "";
    ui.promptText.textContent = prompt?.text || "";
  }

  function closePrompt() {
    state.prompt = null;
    renderPrompt();
    ui.hangup.focus();
  }

  function renderVoiceChip() {
    ui.voiceChip.hidden = !(state.speaking.size > 0 && ["waiting", "call"].includes(state.phase));
  }

  function resetSpeech() {
    state.prompt = null;
    state.caption = null;
    state.speaking.clear();
    renderPrompt();
    renderCaption();
    renderVoiceChip();
  }

  // -- identity check: prompts and result -------------------------------------------------------
  //
  // The server says `identity.prompt` as each step of the liveness check starts (first
  // "position": look at the camera) with the time left, and `identity.result` at the end.
  // The self-view grows and the instruction shows under it in big type; the server's voice
  // reads it where the server has one.

  function onIdentityPrompt(payload) {
    if (!payload || typeof payload !== "object" || !IDENTITY_STEPS.has(payload.step)) return;
    const id = state.identity;
    clearTimeout(id.hideTimer);
    const remaining = Math.max(0, Number(payload.remaining_s) || 0);
    id.result = null;
    id.prompt = {
      attemptId: String(payload.attempt_id || ""),
      step: payload.step,
      index: Number.isInteger(payload.index) ? payload.index : -1,
      count: Math.max(0, Number(payload.count) || 0),
      text: payload.text && typeof payload.text === "object" ? payload.text : null,
      deadline: performance.now() + remaining * 1000,
    };
    noteIdentity({ kind: "prompt", step: payload.step, index: id.prompt.index });
    clearInterval(id.ticker);
    id.ticker = setInterval(tickIdentity, 250);
    renderIdentity();
  }

  function onIdentityResult(payload) {
    if (!payload || typeof payload !== "object") return;
    const id = state.identity;
    clearInterval(id.ticker);
    clearTimeout(id.hideTimer);
    id.prompt = null;
    id.result = {
      attemptId: String(payload.attempt_id || ""),
      passed: payload.passed === true,
      reason: payload.reason == null ? null : String(payload.reason),
      text: payload.text && typeof payload.text === "object" ? payload.text : null,
    };
    noteIdentity({ kind: "result", passed: id.result.passed, reason: id.result.reason });
    id.hideTimer = setTimeout(() => {
      id.result = null;
      renderIdentity();
    }, IDENTITY_RESULT_MS);
    renderIdentity();
  }

  function noteIdentity(entry) {
    const log = state.identity.log;
    log.push(entry);
    log.splice(0, log.length - 20);
  }

  function secondsLeft(prompt) {
    return Math.max(0, Math.ceil((prompt.deadline - performance.now()) / 1000));
  }

  // The countdown: the words change once a second; a prompt long past its time with no
  // result (a lost message) comes down by itself.
  function tickIdentity() {
    const id = state.identity;
    const prompt = id.prompt;
    if (!prompt) {
      clearInterval(id.ticker);
      return;
    }
    if (performance.now() - prompt.deadline > IDENTITY_STALE_MS) {
      id.prompt = null;
      clearInterval(id.ticker);
      renderIdentity();
      return;
    }
    const text = t("idSecondsLeft")(secondsLeft(prompt));
    if (ui.identityCountdown.textContent !== text) ui.identityCountdown.textContent = text;
  }

  // The server's words in this page's language, else this page's own.
  function identityWords(fromServer, own) {
    const text = fromServer?.[state.lang];
    return typeof text === "string" && text.trim() ? text : own;
  }

  function renderIdentity() {
    const id = state.identity;
    const inCall = ["waiting", "call"].includes(state.phase);
    const shown = inCall && Boolean(id.prompt || id.result);
    ui.identity.hidden = !shown;
    document.body.classList.toggle("identity-active", shown);
    const box = ui.identity;
    if (!shown) {
      box.dataset.kind = "";
      return;
    }
    let heading, text, countdown;
    if (id.prompt) {
      const p = id.prompt;
      box.dataset.kind = "prompt";
      box.dataset.step = p.step;
      delete box.dataset.result;
      const where = p.index < 0 || p.step === "position" ? t("idGetReady") : t("idStep")(p.index + 1, p.count);
      heading = `${t("idHeading")} · ${where}`;
      text = identityWords(p.text, t(`idPrompt_${p.step}`));
      countdown = t("idSecondsLeft")(secondsLeft(p));
    } else {
      const r = id.result;
      box.dataset.kind = "result";
      box.dataset.result = r.passed ? "passed" : "failed";
      delete box.dataset.step;
      heading = `${t("idHeading")} · ${t(r.passed ? "idPassed" : "idFailed")}`;
      text = identityWords(r.text, t(r.passed ? "idPassedText" : "idFailedText"));
      countdown = "";
    }
    if (ui.identityHeading.textContent !== heading) ui.identityHeading.textContent = heading;
    if (ui.identityText.textContent !== text) ui.identityText.textContent = text; // unchanged: not announced again
    ui.identityCountdown.textContent = countdown;
    ui.identityCountdown.hidden = !countdown;
  }

  function resetIdentity() {
    const id = state.identity;
    clearInterval(id.ticker);
    clearTimeout(id.hideTimer);
    id.prompt = null;
    id.result = null;
    renderIdentity();
  }

  function identityStats() {
    const id = state.identity;
    const visible = !ui.identity.hidden;
    return {
      visible,
      prompt: visible && id.prompt ? { step: id.prompt.step, index: id.prompt.index, count: id.prompt.count,
        text: ui.identityText.textContent, remaining_s: secondsLeft(id.prompt) } : null,
      result: visible && id.result ? { passed: id.result.passed, reason: id.result.reason, text: ui.identityText.textContent } : null,
      log: id.log.slice(),
    };
  }

  function safeUrl(url) {
    if (typeof url !== "string") return "";
    try {
      const parsed = new URL(url, location.href);
      return ["http:", "https:", "data:", "blob:"].includes(parsed.protocol) ? parsed.href : "";
    } catch {
      return "";
    }
  }

  // Built from elements and text nodes: an agent's text is never parsed as markup.
  function showMaterial(material) {
    showPointer(null);
    if (!material || typeof material !== "object") {
      state.material = null;
      ui.materialContent.replaceChildren();
      ui.material.hidden = true;
      ui.stage.classList.remove("with-material");
      return;
    }
    const parts = [];
    if (material.title) {
      const title = document.createElement("h3");
      title.className = "title";
      title.textContent = String(material.title);
      parts.push(title);
    }
    if (material.kind === "slide") {
      const list = document.createElement("ul");
      for (const bullet of Array.isArray(material.bullets) ? material.bullets : []) {
        const item = document.createElement("li");
        item.textContent = String(bullet);
        list.append(item);
      }
      parts.push(list);
      if (material.text) parts.push(paragraph(material.text));
    } else if (material.kind === "image") {
      const img = document.createElement("img");
      img.src = safeUrl(material.url);
      img.alt = String(material.title || material.text || t("material"));
      parts.push(img);
    } else if (material.kind === "video") {
      const video = document.createElement("video");
      video.src = safeUrl(material.url);
      video.controls = true;
      video.playsInline = true;
      parts.push(video);
    } else if (material.text != null) {
      parts.push(paragraph(material.text));
    }
    state.material = material.id ?? null;
    ui.materialContent.replaceChildren(...parts);
    ui.material.hidden = false;
    ui.stage.classList.add("with-material");
    speak([material.title, ...(material.kind === "slide" && Array.isArray(material.bullets) ? material.bullets : []), material.kind === "text" ? material.text : ""].filter(Boolean).join("。"));
  }

  function paragraph(text) {
    const p = document.createElement("p");
    p.textContent = String(text);
    return p;
  }

  function showPointer(position) {
    const x = Number(position?.x);
    const y = Number(position?.y);
    if (!position || !Number.isFinite(x) || !Number.isFinite(y)) {
      ui.pointer.hidden = true;
      return;
    }
    ui.pointer.style.left = `${Math.min(1, Math.max(0, x)) * 100}%`;
    ui.pointer.style.top = `${Math.min(1, Math.max(0, y)) * 100}%`;
    ui.pointer.hidden = false;
  }

  function openConfirmation(request) {
    if (!request?.request_id) return;
    state.confirmation = { request, state: "pending" };
    ui.confirmWhat.textContent = String(request.what ?? "");
    ui.confirmAmount.textContent = String(request.amount ?? "");
    ui.confirmAccount.textContent = String(request.account_masked ?? "");
    ui.signatureBlock.hidden = !request.signature_required;
    ui.confirmError.textContent = "";
    clearSignature();
    setConfirmButtons(false);
    if (!ui.dialog.open) ui.dialog.showModal();
    (request.signature_required ? ui.signature : ui.confirmAccept).focus();
    speak(t("confirmSpoken")(request) + (request.signature_required ? t("signHere") : ""));
  }

  function setConfirmButtons(disabled) {
    ui.confirmAccept.disabled = ui.confirmRefuse.disabled = disabled;
  }

  async function answerConfirmation(accepted) {
    const confirmation = state.confirmation;
    if (!confirmation || confirmation.state !== "pending") return;
    const { request } = confirmation;
    const body = { accepted };
    if (accepted && request.signature_required) {
      if (!state.signed) {
        ui.confirmError.textContent = t("signFirst");
        speak(t("signFirst"));
        return;
      }
      body.signature = ui.signature.toDataURL("image/png");
    }
    confirmation.state = "sending";
    setConfirmButtons(true);
    try {
      await api("POST", `/v1/calls/${encodeURIComponent(state.callId)}/confirmations/${encodeURIComponent(request.request_id)}`, body);
    } catch (error) {
      confirmation.state = "pending";
      setConfirmButtons(false);
      ui.confirmError.textContent = `${t("confirmFailed")} ${error.message}`;
      return;
    }
    confirmation.state = accepted ? "accepted" : "refused";
    sendData({ request_id: request.request_id, accepted }, "confirm_done");
    ui.dialog.close();
    setStatus(t(accepted ? "confirmSent" : "refusedSent"));
    speak(t(accepted ? "confirmSent" : "refusedSent"));
    ui.hangup.focus();
  }

  function sendData(payload, topic) {
    client.sendData(payload, topic);
  }

  // -- signature pad ------------------------------------------------------------------------------

  function clearSignature() {
    const ctx = ui.signature.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, ui.signature.width, ui.signature.height);
    state.signed = false;
  }

  function setUpSignaturePad() {
    const canvas = ui.signature;
    const ctx = canvas.getContext("2d");
    let drawing = null;
    const point = (event) => {
      const rect = canvas.getBoundingClientRect();
      return [(event.clientX - rect.left) * (canvas.width / rect.width), (event.clientY - rect.top) * (canvas.height / rect.height)];
    };
    canvas.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      canvas.setPointerCapture?.(event.pointerId);
      drawing = point(event);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!drawing) return;
      const next = point(event);
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 4;
      ctx.lineCap = ctx.lineJoin = "round";
      ctx.beginPath();
      ctx.moveTo(...drawing);
      ctx.lineTo(...next);
      ctx.stroke();
      drawing = next;
      state.signed = true;
      ui.confirmError.textContent = "";
    });
    const stop = () => { drawing = null; };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
    canvas.addEventListener("pointerleave", stop);
    ui.signatureClear.addEventListener("click", clearSignature);
    clearSignature();
  }

  // -- test hook ----------------------------------------------------------------------------------

  async function decodedFrames() {
    const sub = state.subscription;
    if (!sub) return 0;
    let frames = 0;
    try {
      (await sub.pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") frames += s.framesDecoded || 0;
      });
    } catch {
      return 0;
    }
    return frames;
  }

  async function stats() {
    return {
      phase: state.phase,
      lang: state.lang,
      large: state.large,
      callId: state.callId,
      callState: state.callState,
      position: state.position,
      participantId: state.participantId,
      published: Boolean(state.publisher?.transportId),
      dataChannel: state.publisher?.channel?.readyState || null,
      agentParticipantId: state.subscription?.participantId || null,
      botId: state.botId,
      target: state.target,
      remoteVideo: { width: ui.remoteVideo.videoWidth, height: ui.remoteVideo.videoHeight, time: ui.remoteVideo.currentTime },
      botStatus: ui.botStatus.hidden ? null : ui.botStatus.textContent,
      others: [...state.others.keys()],
      decodedFrames: await decodedFrames(),
      material: state.material,
      confirmation: state.confirmation
        ? { requestId: state.confirmation.request.request_id, state: state.confirmation.state }
        : null,
      speech: {
        voices: [...state.voices.keys()],
        voiceAudio: [...state.voices.values()].filter((v) => v.audio.srcObject && !v.audio.paused).length,
        speaking: state.speaking.size > 0,
        prompt: state.prompt && !ui.prompt.hidden ? { ...state.prompt } : null,
        caption: state.caption && !ui.caption.hidden ? { ...state.caption } : null,
        spoken: reading.log.slice(),
      },
      identity: identityStats(),
      quality: {
        alerts: [...state.qualityAlerts.entries()].map(([alertId, kind]) => ({ alert_id: alertId, kind })),
        audioOnly: state.audioOnly,
        networkNotice: !ui.networkNotice.hidden,
        audioOnlyNotice: !ui.audioOnlyNotice.hidden,
      },
    };
  }

  // -- start --------------------------------------------------------------------------------------

  function init() {
    const params = new URLSearchParams(location.search);
    const lang = params.get("lang");
    if (STRINGS[lang]) texts.use(lang);
    else if (!lang && (navigator.language || "").toLowerCase().startsWith("en")) texts.use("en");
    if (params.get("large") === "1") setLarge(true);
    if (params.get("name")) ui.name.value = params.get("name").slice(0, 64);
    for (const button of ui.langButtons) button.addEventListener("click", () => setLanguage(button.dataset.lang));
    ui.large.addEventListener("click", () => setLarge(!state.large));
    ui.smaller.addEventListener("click", () => stepText(-1));
    ui.bigger.addEventListener("click", () => stepText(1));
    ui.voice.addEventListener("click", () => {
      state.voice = !state.voice;
      ui.voice.setAttribute("aria-pressed", String(state.voice));
      if (state.voice) speak(t("voice"));
      else stopSpeaking();
    });
    ui.promptClose.addEventListener("click", closePrompt);
    ui.cancel.addEventListener("click", cancelOrHangUp);
    ui.askBot.addEventListener("click", askBot);
    ui.askForm.addEventListener("submit", (event) => {
      event.preventDefault();
      askQuestion(ui.askText.value);
    });
    ui.askPerson.addEventListener("click", () => askQuestion(t("askPersonText")));
    ui.hangup.addEventListener("click", cancelOrHangUp);
    ui.restart.addEventListener("click", restart);
    ui.camera.addEventListener("click", () => toggleLocal("video"));
    ui.mic.addEventListener("click", () => toggleLocal("audio"));
    ui.speaker.addEventListener("click", toggleSpeaker);
    ui.screen.addEventListener("click", toggleScreen);
    ui.confirmAccept.addEventListener("click", () => answerConfirmation(true));
    ui.confirmRefuse.addEventListener("click", () => answerConfirmation(false));
    // Escape must not dismiss an unanswered confirmation.
    ui.dialog.addEventListener("cancel", (event) => event.preventDefault());
    setUpSignaturePad();
    window.addEventListener("pagehide", teardownMedia); // the client says `leave` as it closes
    applyTextSize();
    applyLanguage();
    showView("start");
    loadCatalogue();
  }

  window.teller = { state, stats };

  init();
})();
