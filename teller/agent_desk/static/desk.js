// Teller agent desk: log in, take calls offered by routing, talk with the customer
// by video, push material, ask for confirmations, transfer, hang up and wrap up.
//
// REST: docs/contact-centre.md. Media: signalling protocol 1 (docs/protocol.md) through
// /static/teller-client.js, which also resumes a lost connection: camera and microphone
// go out on one publication, each other participant comes in on a subscription of its
// own. Data messages (material, pointer, confirm_request / confirm_done) go over the socket.
// Speech (docs/speech.md): live captions and risk cues from the server, prompts played to
// the customer by the room's voice participant (role "service": heard, never shown).
// Identity (docs/identity.md): the face watch, the liveness check, evidence, comparison and
// the override in the "Identity" panel; a business that needs it gates the confirmation.
"use strict";

(() => {
  const POLL_MS = 1000;
  const POINTER_INTERVAL_MS = 100;
  const MAX_CAPTION_LINES = 200;
  const MAX_PLAYED = 30;
  const MAX_RISKS = 50;
  const RISK_DEDUP_S = 30; // the same rule again within this long counts on the same banner
  // The identity status comes as data messages; this slow re-read only covers a missed one.
  const IDENTITY_REFRESH_MS = 10000;
  const MAX_IDENTITY_CUES = 50;

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);

  // All UI text, per language (like the customer page). English unless ?lang=zh or the
  // switch says otherwise; another language is one more entry here (and a button).
  const STRINGS = {
    zh: {
      htmlLang: "zh-CN", title: "Teller 坐席工作台", language: "语言",
      yourName: "您的姓名", logIn: "登录", stateLabel: "状态：", setState: "设置状态", awayReason: "离开原因",
      awayPlaceholder: "休息、培训…", set: "设置", logInToTake: "登录后即可接听来电。",
      state_available: "空闲", state_away: "离开", state_offline: "离线", state_ringing: "振铃中", state_busy: "通话中", state_wrap_up: "话后整理",
      incoming: "来电", business: "业务", customer: "客户", channel: "渠道", waited: "已等待",
      accept: "接听 (A)", decline: "拒绝 (D)", call: "通话", you: "我", others: "其他参与者", talkTime: "通话时长",
      hangUp: "挂断 (H)", script: "话术", riskPrompt: "风险提示", identityQuestions: "身份核验问题", antiFraud: "反诈提醒",
      requiredSteps: "必备步骤", material: "资料", slide: "幻灯片", upload: "上传 PDF 或图片", orText: "或文字",
      preview: "资料预览", push: "推送给客户", point: "指示", confirmation: "确认", confirmTitle: "交易确认",
      what: "事项", amount: "金额", account: "账户", askConfirm: "请求客户确认", defaultWhat: "转账",
      transferInvite: "转接与邀请", transferTitle: "转接 / 邀请", transferTarget: "转至技能组或坐席工号",
      isAgent: "这是坐席工号", warm: "咨询转接", transfer: "转接", inviteTarget: "邀请坐席工号", invite: "邀请",
      wrapUp: "话后整理", code: "小结代码", code_resolved: "已解决", code_follow_up: "需跟进", code_transferred: "已转接",
      code_refused: "客户拒绝", code_other: "其他", notes: "备注", finishWrapUp: "完成话后整理",
      secondsShort: "{n} 秒", forDuration: "持续 {d}", defaultCustomer: "客户", guest: "访客", agentDefault: "坐席",
      ourService: "我们的服务", slideRisk: "开始之前：风险提示", slideRiskDefault: "请收听风险提示。",
      slideProduct1: "产品是什么、适合谁", slideProduct2: "费用与限额", slideProduct3: "如何取消",
      slideFraud: "注意安全", slideFraudDefault: "我们绝不会索要您的密码。", pdfPage: "{name} — 第 {page} 页", textMaterial: "文字",
      unreachable: "无法连接服务器。", refused: "服务器拒绝了请求（{status}）。",
      cannotLoadBusinesses: "无法加载业务列表：{error}", loggedIn: "已登录。请将状态设为“空闲”以接听来电。",
      cannotLogIn: "无法登录：{error}", youAre: "您当前为{state}。", cannotChangeState: "无法更改状态：{error}",
      lostServer: "与服务器失去连接：{error}", cannotReadCall: "无法读取通话：{error}", callEnded: "通话已结束。",
      incomingStatus: "来电：请按 接听 (A) 或 拒绝 (D)。",
      botNotes: "数字员工转来的对话", botReason: "转人工原因：{reason}", botWho_customer: "客户", botWho_bot: "数字员工",
      botReason_asked_for_person: "客户要求人工", botReason_not_understood: "数字员工未能回答", botReason_risk: "发现风险提示",
      botReason_answerer: "问答服务建议转人工", botReason_bot_unavailable: "数字员工不可用", cannotTake: "无法接听：{error}", declined: "已拒绝来电。",
      cannotDecline: "无法拒绝：{error}", endedWrapUp: "通话已结束，请进行话后整理。", cannotHangUp: "无法挂断：{error}",
      wrapUpSaved: "话后整理已保存。您当前为{state}。", cannotWrapUp: "无法保存话后整理：{error}",
      warmStarted: "咨询转接已开始：请等待另一位坐席加入。", transferRequested: "已请求转接。", cannotTransfer: "无法转接：{error}",
      invited: "邀请已发送。", cannotInvite: "无法邀请：{error}",
      waitingCustomer: "等待客户确认：{what} {amount}，收款账户 {account}", cannotAsk: "无法发起确认：{error}",
      customerConfirmed: "客户已确认。", customerRefused: "客户已拒绝。",
      uploading: "正在上传 {name}…", uploadRefused: "上传被拒绝（{status}）。", pagesReady: "{name}：{n} 页可推送。",
      showing: "正在向客户展示“{title}”。", callUnreachable: "无法连接通话服务器。", callTimeout: "通话服务器未及时响应。",
      callDisconnected: "未连接到通话。", reconnecting: "正在重新连接通话…", videoMissing: "客户的视频未能恢复。",
      inCall: "通话中。", connectionLost: "与通话的连接已断开。", noMedia: "没有摄像头或麦克风：客户将看不到也听不到您。",
      connecting: "正在连接客户…", cannotShow: "无法显示对方画面：{error}",
      qualityTitle: "通话质量", qualityAlerts: "质量告警", q_who: "对象", q_level: "质量", q_loss: "丢包", q_rtt: "往返时延",
      q_video: "上行视频", q_receives: "接收档位", q_you: "我", q_customer: "客户", q_waiting: "正在等待质量数据…",
      myTier: "我接收：{tier}",
      lossTitle: "上行 {up} · 下行 {down}", summaryItem: "{who}：{level}", frozen: "卡住 {s} 秒",
      whose_self: "您的", severity_warning: "注意", severity_critical: "严重", alertLine: "【{severity}】{message}",
      step_risk_prompt: "风险提示", step_identity_check: "身份核验", step_transaction_confirmation: "交易确认",
      step_signature: "客户签名", step_anti_fraud_reminder: "反诈提醒",
      captionsTitle: "实时字幕", captionsWaiting: "通话中的语音将在此显示为字幕。", captionsOff: "本服务器未开启实时字幕。",
      role_customer: "客户", role_agent: "坐席", role_service: "语音播报", role_supervisor: "主管", role_other: "参与者",
      selfSuffix: "（我）", voicePlaying: "正在播放语音提示", voiceName: "语音播报",
      riskAlerts: "风险提示告警", risk_fraud_coaching: "疑似诈骗话术", risk_abusive: "不文明用语", risk_unlawful: "违规内容",
      riskHeard: "{who}说：“{phrase}”", riskWho_customer: "客户", riskWho_agent: "坐席", riskWho_self: "您", riskWho_other: "{name}",
      riskSentence: "原句：{text}", riskRepeat: "×{n}", dismiss: "知道了", dismissLabel: "关闭此风险告警",
      riskAt: "{time}", riskSourceChat: "（聊天）",
      playToCustomer: "播放给客户", playIdentity: "播放第 {n} 个问题给客户", played: "已播放",
      playing: "正在请求播放…", playQueued: "已排队播放：{text}", cannotPlay: "无法播放：{error}",
      ttsUnavailable: "语音播报不可用：服务器没有可用的语音合成。", ttsNoLanguage: "语音播报不可用：没有 {lang} 语音。",
      ttsChecking: "正在检查语音播报…",
      kind_risk_prompt: "风险提示", kind_anti_fraud: "反诈提醒", kind_script: "话术", kind_broadcast: "客户页播报",
      kind_identity_question: "身份核验问题", kind_liveness_prompt: "活体检测提示",
      tts_queued: "排队中", tts_started: "播放中", tts_finished: "已播完", tts_failed: "失败",
      playingReminder: "正在播放反诈提醒…播放结束后通话将挂断。",
      reminderNotPlayed: "通话已结束，请进行话后整理。（未播放反诈提醒：{reason}）",
      idTitle: "身份核验", idFaceLabel: "摄像头：", idStartLiveness: "开始活体检测", idCapture: "拍摄身份证件", idCompare: "人脸比对",
      idCaptureHint: "拍摄前，请先请客户将身份证正对摄像头。", idSteps: "活体检测步骤", idFaceEvidence: "人脸", idDocEvidence: "身份证件",
      idFaceAlt: "客户人脸（{time}）", idDocAlt: "客户身份证件（{time}）",
      idOverrideReason: "人工放行原因", idOverridePlaceholder: "例如：已当面核对身份证", idOverride: "人工放行", idCues: "风险提示",
      idNoCues: "暂无", idRequiredTag: " · 本业务必须核验", idUnavailable: "本服务器不支持身份核验。",
      face_unknown: "尚未识别", face_one_face: "检测到一张人脸", face_no_face: "未检测到人脸", face_several_faces: "检测到多张人脸",
      face_too_dark: "光线太暗", face_not_frontal: "未正对摄像头",
      idState_not_started: "身份：未核验", idState_checking: "身份：核验中…", idState_passed: "身份：已通过活体检测",
      idState_failed: "身份：核验未通过", idState_overridden: "身份：已由 {name} 人工放行，原因：{reason}",
      lv_positioning: "活体检测：等待客户正对摄像头…", lv_challenge: "活体检测：第 {n} 步，共 {count} 步（{step}）",
      lv_passed: "活体检测通过。", lv_failed: "活体检测未通过：{reason}", lvBy: "发起人：{name}",
      lvStep_blink: "眨眼", lvStep_turn_left: "向左转头", lvStep_turn_right: "向右转头", lvStep_open_mouth: "张嘴", lvStep_nod: "点头",
      lvStepDone: "已完成", lvStepCurrent: "进行中", lvStepFailed: "未完成",
      reason_no_face: "未检测到客户人脸", reason_several_faces: "画面中有多张人脸", reason_too_dark: "画面太暗",
      reason_not_frontal: "客户未正对摄像头", reason_position_timeout: "客户未能及时就位", reason_challenge_timeout: "未在规定时间内完成动作",
      reason_face_lost: "人脸离开了画面", reason_call_ended: "通话已结束", reason_video_ended: "客户视频已中断",
      cmp_match: "人脸一致", cmp_mismatch: "人脸不一致", cmp_manual_check_required: "需人工核验", cmp_error: "比对失败",
      cmpScore: "相似度 {score}", cmpThreshold: "（阈值 {threshold}）",
      cue_several_faces: "多张人脸持续 {s} 秒", cue_face_absent: "无人脸持续 {s} 秒",
      idNotVerified: "身份未核验：请先完成活体检测，或填写原因后人工放行。",
      idStarting: "正在发起活体检测…", idCapturing: "正在拍摄身份证件…", idCaptured: "身份证件已拍摄。", idComparing: "正在比对人脸…",
      idOverriding: "正在人工放行…", idOverridden: "已人工放行。", idNeedEvidence: "请先拍摄人脸（活体检测通过后自动拍摄）和身份证件。",
      idErr_liveness_running: "活体检测正在进行中。", idErr_no_video: "客户没有视频画面。",
      idErr_liveness_unavailable: "本服务器未开启活体检测。", idErr_evidence_missing: "缺少人脸或身份证件照片，请先拍摄。",
      idErr_capture_timeout: "未能及时从客户摄像头取得画面。",
      identityRequired: "无法发起确认：身份未核验。",
    },
    en: {
      htmlLang: "en", title: "Teller agent desk", language: "Language",
      yourName: "Your name", logIn: "Log in", stateLabel: "State:", setState: "Set state", awayReason: "Away reason",
      awayPlaceholder: "break, training…", set: "Set", logInToTake: "Log in to take calls.",
      state_available: "Available", state_away: "Away", state_offline: "Offline", state_ringing: "Ringing", state_busy: "Busy", state_wrap_up: "Wrap-up",
      incoming: "Incoming call", business: "Business", customer: "Customer", channel: "Channel", waited: "Waited",
      accept: "Accept (A)", decline: "Decline (D)", call: "Call", you: "You", others: "Other participants", talkTime: "talk time",
      hangUp: "Hang up (H)", script: "Script", riskPrompt: "Risk prompt", identityQuestions: "Identity questions", antiFraud: "Anti-fraud reminder",
      requiredSteps: "Required steps", material: "Material", slide: "Slide", upload: "Upload a PDF or image", orText: "Or text",
      preview: "Material preview", push: "Push to customer", point: "Point", confirmation: "Confirmation", confirmTitle: "Transaction confirmation",
      what: "What", amount: "Amount", account: "Account", askConfirm: "Ask to confirm", defaultWhat: "Transfer",
      transferInvite: "Transfer and invite", transferTitle: "Transfer / invite", transferTarget: "To skill or agent id",
      isAgent: "it is an agent id", warm: "warm", transfer: "Transfer", inviteTarget: "Invite agent id", invite: "Invite",
      wrapUp: "Wrap-up", code: "Code", code_resolved: "Resolved", code_follow_up: "Follow-up needed", code_transferred: "Transferred",
      code_refused: "Customer refused", code_other: "Other", notes: "Notes", finishWrapUp: "Finish wrap-up",
      secondsShort: "{n} s", forDuration: "for {d}", defaultCustomer: "Customer", guest: "Guest", agentDefault: "Agent",
      ourService: "Our service", slideRisk: "Before we start: risks", slideRiskDefault: "Please listen to the risk notice.",
      slideProduct1: "What it is and who it is for", slideProduct2: "Fees and limits", slideProduct3: "How to cancel",
      slideFraud: "Stay safe", slideFraudDefault: "We never ask for your PIN or passwords.", pdfPage: "{name} — page {page}", textMaterial: "text",
      unreachable: "Cannot reach the server.", refused: "The server refused ({status}).",
      cannotLoadBusinesses: "Cannot load the businesses: {error}", loggedIn: "Logged in. Set yourself Available to take calls.",
      cannotLogIn: "Cannot log in: {error}", youAre: "You are {state}.", cannotChangeState: "Cannot change state: {error}",
      lostServer: "Lost the server: {error}", cannotReadCall: "Cannot read the call: {error}", callEnded: "The call ended.",
      incomingStatus: "Incoming call: press Accept (A) or Decline (D).",
      botNotes: "Conversation with the digital assistant", botReason: "Handed over because: {reason}", botWho_customer: "Customer",
      botWho_bot: "Assistant", botReason_asked_for_person: "the customer asked for a person",
      botReason_not_understood: "the assistant could not answer", botReason_risk: "a risk cue was heard",
      botReason_answerer: "the answering service suggested a person", botReason_bot_unavailable: "the assistant was unavailable", cannotTake: "Cannot take the call: {error}", declined: "Call declined.",
      cannotDecline: "Cannot decline: {error}", endedWrapUp: "Call ended. Please wrap up.", cannotHangUp: "Cannot hang up: {error}",
      wrapUpSaved: "Wrap-up saved. You are {state}.", cannotWrapUp: "Cannot save the wrap-up: {error}",
      warmStarted: "Warm transfer started: stay until the other agent joins.", transferRequested: "Transfer requested.", cannotTransfer: "Cannot transfer: {error}",
      invited: "Invitation sent.", cannotInvite: "Cannot invite: {error}",
      waitingCustomer: "Waiting for the customer: {what} {amount} to {account}", cannotAsk: "Cannot ask: {error}",
      customerConfirmed: "The customer confirmed.", customerRefused: "The customer refused.",
      uploading: "Uploading {name}…", uploadRefused: "The upload was refused ({status}).", pagesReady: "{name}: {n} page(s) ready to push.",
      showing: "Showing \"{title}\" to the customer.", callUnreachable: "Cannot reach the call server.", callTimeout: "The call server did not answer in time.",
      callDisconnected: "Not connected to the call.", reconnecting: "Reconnecting to the call…", videoMissing: "The customer's video did not come back.",
      inCall: "In the call.", connectionLost: "The connection to the call was lost.", noMedia: "No camera or microphone: the customer will not see or hear you.",
      connecting: "Connecting to the customer…", cannotShow: "Cannot show the other side: {error}",
      qualityTitle: "Call quality", qualityAlerts: "Quality alerts", q_who: "Who", q_level: "Quality", q_loss: "Loss", q_rtt: "Round trip",
      q_video: "Video sent", q_receives: "Receives", q_you: "You", q_customer: "Customer", q_waiting: "Waiting for quality figures…",
      myTier: "You receive: {tier}",
      lossTitle: "up {up} · down {down}", summaryItem: "{who}: {level}", frozen: "frozen {s} s",
      whose_self: "Your", severity_warning: "Warning", severity_critical: "Critical", alertLine: "{severity}: {message}",
      captionsTitle: "Live captions", captionsWaiting: "What is said in the call appears here.", captionsOff: "Live captions are off on this server.",
      role_customer: "Customer", role_agent: "Agent", role_service: "Voice", role_supervisor: "Supervisor", role_other: "Participant",
      selfSuffix: " (you)", voicePlaying: "Voice prompt playing", voiceName: "Voice prompts",
      riskAlerts: "Risk alerts", risk_fraud_coaching: "Possible fraud coaching", risk_abusive: "Abusive language", risk_unlawful: "Unlawful content",
      riskHeard: "{who} said: “{phrase}”", riskWho_customer: "The customer", riskWho_agent: "The agent", riskWho_self: "You", riskWho_other: "{name}",
      riskSentence: "Sentence: {text}", riskRepeat: "×{n}", dismiss: "Dismiss", dismissLabel: "Dismiss this risk alert",
      riskAt: "{time}", riskSourceChat: " (chat)",
      playToCustomer: "Play to customer", playIdentity: "Play question {n} to the customer", played: "Played",
      playing: "Asking the voice to play it…", playQueued: "Queued to play: {text}", cannotPlay: "Cannot play it: {error}",
      ttsUnavailable: "Voice prompts are unavailable: the server has no speech synthesis.", ttsNoLanguage: "Voice prompts are unavailable: no voice for {lang}.",
      ttsChecking: "Checking the voice prompts…",
      kind_risk_prompt: "Risk prompt", kind_anti_fraud: "Anti-fraud reminder", kind_script: "Script", kind_broadcast: "Customer page",
      kind_identity_question: "Identity question", kind_liveness_prompt: "Liveness check prompt",
      tts_queued: "queued", tts_started: "playing", tts_finished: "played", tts_failed: "failed",
      playingReminder: "Playing the anti-fraud reminder… the call ends after it.",
      reminderNotPlayed: "Call ended. Please wrap up. (The anti-fraud reminder was not played: {reason})",
      idTitle: "Identity", idFaceLabel: "Camera:", idStartLiveness: "Start liveness check", idCapture: "Capture ID document", idCompare: "Compare faces",
      idCaptureHint: "Before capturing, ask the customer to hold the ID card up to the camera.", idSteps: "Liveness steps",
      idFaceEvidence: "Face", idDocEvidence: "ID document", idFaceAlt: "The customer's face ({time})", idDocAlt: "The customer's ID document ({time})",
      idOverrideReason: "Override reason", idOverridePlaceholder: "e.g. checked the ID card in person", idOverride: "Override", idCues: "Risk cues",
      idNoCues: "None", idRequiredTag: " · required for this business", idUnavailable: "Identity checks are not available on this server.",
      face_unknown: "Not known yet", face_one_face: "One face", face_no_face: "No face", face_several_faces: "Several faces",
      face_too_dark: "Too dark", face_not_frontal: "Not facing the camera",
      idState_not_started: "Identity: not verified", idState_checking: "Identity: checking…", idState_passed: "Identity: passed the liveness check",
      idState_failed: "Identity: failed", idState_overridden: "Identity: overridden by {name}: {reason}",
      lv_positioning: "Liveness: waiting for the customer to face the camera…", lv_challenge: "Liveness: step {n} of {count} ({step})",
      lv_passed: "Liveness passed.", lv_failed: "Liveness failed: {reason}", lvBy: "started by {name}",
      lvStep_blink: "Blink", lvStep_turn_left: "Turn left", lvStep_turn_right: "Turn right", lvStep_open_mouth: "Open mouth", lvStep_nod: "Nod",
      lvStepDone: "done", lvStepCurrent: "now", lvStepFailed: "not done",
      reason_no_face: "the customer's face was not seen", reason_several_faces: "more than one face was seen", reason_too_dark: "the picture was too dark",
      reason_not_frontal: "the customer did not face the camera", reason_position_timeout: "the customer was not ready in time",
      reason_challenge_timeout: "the actions were not done in time", reason_face_lost: "the face left the picture",
      reason_call_ended: "the call ended", reason_video_ended: "the customer's video stopped",
      cmp_match: "Faces match", cmp_mismatch: "Faces do not match", cmp_manual_check_required: "Manual check required", cmp_error: "Comparison failed",
      cmpScore: "score {score}", cmpThreshold: " (threshold {threshold})",
      cue_several_faces: "Several faces for {s} s", cue_face_absent: "No face for {s} s",
      idNotVerified: "Identity not verified: run the liveness check, or override it with a reason.",
      idStarting: "Starting the liveness check…", idCapturing: "Capturing the ID document…", idCaptured: "ID document captured.", idComparing: "Comparing the faces…",
      idOverriding: "Overriding…", idOverridden: "Identity overridden.", idNeedEvidence: "Capture the face (taken when a liveness check passes) and the ID document first.",
      idErr_liveness_running: "A liveness check is already running.", idErr_no_video: "The customer sends no video.",
      idErr_liveness_unavailable: "Liveness checks are not enabled on this server.", idErr_evidence_missing: "The face or the ID document picture is missing: capture it first.",
      idErr_capture_timeout: "No picture came from the customer's camera in time.",
      identityRequired: "Cannot ask: identity not verified.",
    },
  };
  const texts = TellerPage.texts(TellerPage.withQuality(STRINGS), params.get("lang"));
  const { t } = texts;
  const stateName = (s) => t(`state_${s}`) === `state_${s}` ? s : t(`state_${s}`);

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
    quality: newQuality(), // the live figures and alerts the server sends staff (see "live quality")
    speech: newSpeech(), // captions, risk cues and prompts played in this call (see "speech")
    speechInfo: null, // GET /v1/speech: {asr: {enabled}, tts: {available, languages}}
    finishing: false, // the hang-up waits for the anti-fraud reminder
    lastReminder: null, // what the last finish said of its reminder
    identity: newIdentity(), // the identity check of this call (see "identity")
  };

  function newQuality() {
    return { stats: null, updates: 0, alerts: new Map() }; // alerts: alert_id -> the raised alert
  }

  function newIdentity() {
    return {
      status: null, // the last IdentityStatus from the server
      unavailable: false, // the server has no identity API (an older one): nothing is gated here
      required: null, // whether the business needs identity, as the REST side said last (null: not yet)
      seq: 0, // identity.status messages seen: a reply that crossed one is older, and dropped
      cues: new Map(), // "kind:ts" -> cue, from the status and identity.cue messages
      images: new Map(), // evidence_id -> object URL of its JPEG (fetched with the token)
      busy: null, // "liveness" | "capture" | "compare" | "override" while its request runs
      message: null, // {key, vars, className, raw}: the last word about a request
      timer: null,
    };
  }

  function newSpeech() {
    return {
      lines: [], // caption lines, oldest first: {participant_id, role, name, text, final, start, seq, risk, node}
      partials: new Map(), // participant_id -> its line still in progress (also in `lines`)
      finals: new Set(), // "participant_id:seq" of the finals shown (a repeat is dropped)
      risks: [], // newest first: {id, alert, count, firstTs, lastTs, dismissed}
      played: new Map(), // utterance id -> {id, kind, text, language, state, at, error}
      speaking: new Set(), // utterance ids the voice has started and not finished
      voiceId: null, // the voice participant's id, once heard from
      status: null, // {key, vars, className}: the last word about playing a line
    };
  }

  const SLIDES = () => {
    const b = state.business;
    const name = b ? b.name : t("ourService");
    return [
      { id: "risk", kind: "slide", title: t("slideRisk"), bullets: [b?.script?.risk_prompt || t("slideRiskDefault")].filter(Boolean) },
      { id: "product", kind: "slide", title: name, bullets: [t("slideProduct1"), t("slideProduct2"), t("slideProduct3")] },
      { id: "fraud", kind: "slide", title: t("slideFraud"), bullets: [b?.script?.anti_fraud || t("slideFraudDefault")] },
    ];
  };

  // -- language --------------------------------------------------------------------------

  function applyLanguage() {
    texts.apply();
    renderConfirmStatus();
    renderQuality();
    renderSpeech();
    renderIdentity();
    // The default "what" of a confirmation follows the language until the agent types one.
    const what = $("confirm-what");
    if (Object.values(STRINGS).some((strings) => strings.defaultWhat === what.value)) what.value = t("defaultWhat");
  }

  async function setLanguage(next) {
    if (!texts.use(next)) return;
    texts.keepInUrl();
    applyLanguage();
    if (!state.agent) { setStatus(t("logInToTake")); return; }
    setStatus(state.inRoom ? t("inCall") : t("youAre", { state: stateName(state.agent.state) }));
    await loadCatalogue();
    if (state.offerCall) showOffer(state.offerCall);
    if (state.call && state.callState === "connected") {
      state.business = businessOf(state.call);
      showCall(state.call);
    }
    render();
  }

  function setStatus(text, isError = false) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  // -- REST ------------------------------------------------------------------------------

  const api = TellerPage.api({ token: () => state.token, text: t });

  async function loadCatalogue() {
    try {
      const asked = texts.lang;
      const body = await api("GET", `/v1/catalogue?lang=${encodeURIComponent(asked)}`);
      if (asked !== texts.lang) return;
      state.catalogue.clear();
      for (const b of body.businesses) state.catalogue.set(b.id, b);
    } catch (error) {
      setStatus(t("cannotLoadBusinesses", { error: error.message }), true);
    }
  }

  async function login(event) {
    event?.preventDefault();
    try {
      if (!state.token) {
        const name = $("agent-name").value.trim() || t("agentDefault");
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
      setStatus(t("loggedIn"));
      loadSpeechInfo();
      render();
      poll();
    } catch (error) {
      state.token = params.get("token") || null;
      setStatus(t("cannotLogIn", { error: error.message }), true);
    }
  }

  async function setState(event) {
    event?.preventDefault();
    const value = $("state-select").value;
    const reason = $("away-reason").value.trim();
    try {
      state.agent = await api("POST", "/v1/agents/me/state", value === "away" && reason ? { state: value, reason } : { state: value });
      setStatus(t("youAre", { state: stateName(state.agent.state) }));
      render();
    } catch (error) {
      setStatus(t("cannotChangeState", { error: error.message }), true);
    }
  }

  async function poll() {
    clearTimeout(state.pollTimer);
    try {
      state.agent = await api("GET", "/v1/agents/me");
      await onAgent();
    } catch (error) {
      setStatus(t("lostServer", { error: error.message }), true);
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
          setStatus(t("cannotReadCall", { error: error.message }), true);
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
        setStatus(t("callEnded"));
      }
    }
    render();
  }

  function businessOf(call) {
    return state.catalogue.get(call.business) || { id: call.business, name: call.business, script: {}, steps: [] };
  }

  function showWait(call) {
    const waited = Math.max(0, Date.now() / 1000 - call.queued_at);
    $("in-wait").textContent = t("secondsShort", { n: Math.round(waited) });
  }

  function showOffer(call) {
    state.offerCall = call;
    $("in-business").textContent = businessOf(call).name;
    $("in-customer").textContent = call.customer?.name || call.customer?.identity || t("defaultCustomer");
    $("in-channel").textContent = call.channel || "";
    showWait(call);
    setStatus(t("incomingStatus"));
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
      state.speech = newSpeech();
      state.lastReminder = null;
      resetIdentity();
      renderSpeech();
      showCall(call);
      render();
      await joinRoom(call.token);
      loadTranscript(call.room);
      refreshIdentity();
    } catch (error) {
      setStatus(t("cannotTake", { error: error.message }), true);
    }
  }

  async function decline() {
    const callId = state.offer;
    if (!callId) return;
    try {
      await api("POST", `/v1/calls/${callId}/decline`);
      state.offer = null;
      state.offerCall = null;
      setStatus(t("declined"));
      render();
    } catch (error) {
      setStatus(t("cannotDecline", { error: error.message }), true);
    }
  }

  // The server plays the business's anti-fraud reminder to the customer first and hangs up
  // once it has been heard (5-20 s); an older server without /finish: a plain DELETE.
  async function hangUp() {
    if (!state.callId || state.callState !== "connected" || state.finishing) return;
    const callId = state.callId;
    state.finishing = true;
    renderHangUp();
    setStatus(t("playingReminder"));
    try {
      let ended;
      try {
        ended = await api("POST", `/v1/calls/${callId}/finish`);
      } catch (error) {
        if (![404, 405].includes(error.status)) throw error;
        ended = await api("DELETE", `/v1/calls/${callId}`);
      }
      if (state.callId !== callId) return;
      state.call = ended;
      state.callState = ended.state;
      state.lastReminder = ended.reminder || null;
      if (state.inRoom) leaveRoom();
      const reminder = ended.reminder;
      setStatus(reminder && reminder.played === false && reminder.reason ? t("reminderNotPlayed", { reason: reminder.reason }) : t("endedWrapUp"));
      state.agent = await api("GET", "/v1/agents/me");
      render();
      $("wrapup-code").focus();
    } catch (error) {
      setStatus(t("cannotHangUp", { error: error.message }), true);
    } finally {
      state.finishing = false;
      renderHangUp();
    }
  }

  function renderHangUp() {
    $("hangup").disabled = state.finishing;
    $("hangup").setAttribute("aria-busy", String(state.finishing));
  }

  async function wrapUp(event) {
    event.preventDefault();
    try {
      state.agent = await api("POST", "/v1/agents/me/wrap-up", { code: $("wrapup-code").value, notes: $("wrapup-notes").value });
      $("wrapup-notes").value = "";
      state.callId = null;
      state.call = null;
      state.callState = null;
      setStatus(t("wrapUpSaved", { state: stateName(state.agent.state) }));
      render();
    } catch (error) {
      setStatus(t("cannotWrapUp", { error: error.message }), true);
    }
  }

  async function transfer(event) {
    event.preventDefault();
    const target = $("transfer-target").value.trim();
    const body = $("transfer-agent").checked ? { agent_id: target } : { skill: target };
    body.warm = $("transfer-warm").checked;
    try {
      await api("POST", `/v1/calls/${state.callId}/transfer`, body);
      setStatus(body.warm ? t("warmStarted") : t("transferRequested"));
    } catch (error) {
      setStatus(t("cannotTransfer", { error: error.message }), true);
    }
  }

  async function invite(event) {
    event.preventDefault();
    try {
      await api("POST", `/v1/calls/${state.callId}/invite`, { agent_id: $("invite-target").value.trim() });
      setStatus(t("invited"));
    } catch (error) {
      setStatus(t("cannotInvite", { error: error.message }), true);
    }
  }

  async function requestConfirmation(event) {
    event.preventDefault();
    if (identityBlocks()) {
      renderConfirmGate();
      return;
    }
    try {
      const confirmation = await api("POST", `/v1/calls/${state.callId}/confirmations`, {
        what: $("confirm-what").value.trim(),
        amount: $("confirm-amount").value.trim(),
        account: $("confirm-account").value.trim(),
      });
      state.lastConfirmation = { ...confirmation, status: "waiting" };
      sendData("confirm_request", confirmation);
      showConfirmStatus("waitingCustomer", { what: confirmation.what, amount: confirmation.amount, account: confirmation.account_masked }, "");
    } catch (error) {
      if (error.code === "identity_required") {
        // The server knows better than this page: read the identity status again.
        showConfirmStatus("identityRequired", {}, "error");
        loadIdentity();
      } else {
        showConfirmStatus("cannotAsk", { error: error.message }, "error");
      }
    }
  }

  // Kept as a key, so that a language switch re-renders it.
  function showConfirmStatus(key, vars = {}, className = "") {
    state.confirmStatus = key ? { key, vars, className } : null;
    renderConfirmStatus();
  }

  function renderConfirmStatus() {
    const c = state.confirmStatus;
    $("confirm-status").textContent = c ? t(c.key, c.vars) : "";
    $("confirm-status").className = c ? c.className : "";
  }

  function onConfirmDone(payload) {
    if (!payload || !state.lastConfirmation || payload.request_id !== state.lastConfirmation.request_id) return;
    const accepted = payload.accepted === true;
    state.lastConfirmation = { ...state.lastConfirmation, status: accepted ? "confirmed" : "refused" };
    showConfirmStatus(accepted ? "customerConfirmed" : "customerRefused", {}, accepted ? "ok" : "error");
  }

  // -- call screen -----------------------------------------------------------------------

  // Each identity question with its own "Play to customer" (index: the catalogue's order).
  function fillIdentity(questions) {
    $("script-identity").replaceChildren(...questions.map((text, index) => {
      const li = document.createElement("li");
      li.className = "script-line";
      const words = document.createElement("span");
      words.textContent = text;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "play secondary";
      button.dataset.script = "identity_question";
      button.dataset.index = String(index);
      button.textContent = t("playToCustomer");
      button.setAttribute("aria-label", t("playIdentity", { n: index + 1 }));
      li.append(words, button);
      return li;
    }));
  }

  function fill(list, items) {
    list.replaceChildren(...items.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
  }

  function showCall(call) {
    const b = state.business;
    const ticked = new Set([...$("script-steps").querySelectorAll("input:checked")].map((box) => box.name));
    const chosen = call.call_id === state.shownCallId ? $("slide-select").value : null;
    state.shownCallId = call.call_id;
    $("call-business").textContent = b.name;
    $("call-customer").textContent = call.customer?.name || t("defaultCustomer");
    $("customer-name").textContent = call.customer?.name || t("defaultCustomer");
    $("script-risk").textContent = b.script?.risk_prompt || "—";
    fillIdentity(b.script?.identity_questions || []);
    $("script-antifraud").textContent = b.script?.anti_fraud || "—";
    renderPlayButtons();
    $("script-steps").replaceChildren(...(b.steps || []).map((step) => {
      const li = document.createElement("li");
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = step;
      box.checked = ticked.has(step) && chosen !== null;
      label.append(box, ` ${texts.tOr(`step_${step}`, step.replaceAll("_", " "))}`);
      li.append(label);
      return li;
    }));
    if (chosen === null) showConfirmStatus(null);
    const select = $("slide-select");
    select.replaceChildren(...materials().map((slide) => new Option(slide.title, slide.id)));
    if (chosen) select.value = chosen;
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
    setStatus(t("uploading", { name: file.name }));
    let response;
    try {
      response = await fetch("/v1/materials", {
        method: "POST",
        headers: { Authorization: `Bearer ${state.token}`, "Content-Type": file.type || "application/octet-stream" },
        body: file,
      });
    } catch {
      setStatus(t("unreachable"), true);
      return;
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      setStatus(data.error?.message || t("uploadRefused", { status: response.status }), true);
      return;
    }
    const pages = data.pages.map((page) => ({
      id: `${data.material_id}-${page.page}`,
      kind: "image",
      title: data.pages.length > 1 ? t("pdfPage", { name: file.name, page: page.page }) : file.name,
      url: page.url,
    }));
    state.uploaded.push(...pages);
    const select = $("slide-select");
    for (const page of pages) select.append(new Option(page.title, page.id));
    select.value = pages[0].id;
    $("material-file").value = "";
    previewMaterial();
    setStatus(t("pagesReady", { name: file.name, n: pages.length }));
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
    setStatus(t("showing", { title: m.title || t("textMaterial") }));
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
      $("agent-state").textContent = agent.reason ? `${stateName(agent.state)} (${agent.reason})` : stateName(agent.state);
      $("state-time").textContent = agent.state_since ? t("forDuration", { d: formatDuration(Date.now() / 1000 - agent.state_since) }) : "";
    }
    const ringing = Boolean(state.offer && state.offerCall);
    $("incoming").hidden = !ringing;
    $("call").hidden = !(state.callId && state.callState === "connected");
    $("wrapup").hidden = !(agent && agent.state === "wrap_up");
    renderBotNotes(ringing ? state.offerCall : state.callId && state.callState === "connected" ? state.call : null);
    if (state.call && state.call.answered_at && state.callState === "connected") {
      $("talk-time").textContent = formatDuration(Date.now() / 1000 - state.call.answered_at);
    }
  }

  // A call the digital assistant handed over arrives with what was said (call.bot), so
  // the customer need not say it twice.
  function renderBotNotes(call) {
    const bot = call?.bot;
    const turns = Array.isArray(bot?.conversation) ? bot.conversation : [];
    $("bot-notes").hidden = !turns.length;
    const key = turns.length ? `${call.call_id}:${turns.length}:${texts.lang}` : "";
    if (state.botNotesKey === key) return;
    state.botNotesKey = key;
    const reason = bot?.handover?.reason;
    $("bot-reason").textContent = reason ? t("botReason", { reason: texts.tOr(`botReason_${reason}`, String(reason)) }) : "";
    $("bot-turns").replaceChildren(...turns.map((turn) => {
      const li = document.createElement("li");
      li.dataset.who = turn.who;
      const who = document.createElement("strong");
      who.textContent = `${texts.tOr(`botWho_${turn.who}`, String(turn.who))}: `;
      li.append(who, String(turn.text || ""));
      return li;
    }));
  }

  function formatDuration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  // -- signalling and media (/static/teller-client.js) -----------------------------------

  const CLIENT_TEXT = {
    unreachable: "callUnreachable",
    timeout: "callTimeout",
    disconnected: "callDisconnected",
  };
  const client = new TellerClient({ text: (code) => (CLIENT_TEXT[code] ? t(CLIENT_TEXT[code]) : undefined) });

  client
    .on("participant_joined", (m) => { if (m.participant.tracks?.length) scheduleSync(m.participant.participant_id); })
    .on("participant_left", (m) => {
      dropSubscription(m.participant_id, false);
      forgetQuality(m.participant_id);
      if (m.participant_id === state.speech.voiceId) voiceGone();
    })
    .on("track_published", (m) => scheduleSync(m.participant_id))
    .on("track_unpublished", (m) => scheduleSync(m.participant_id))
    .on("transport_closed", ({ subscription }) => {
      if (subscription && state.subscriptions.get(subscription.participantId) === subscription) {
        dropSubscription(subscription.participantId, false);
      }
    })
    .on("data", (m) => {
      if (m.topic === "confirm_done") onConfirmDone(m.payload);
      // Quality comes from the server itself, never from a participant.
      else if (m.from_participant_id == null && typeof m.topic === "string" && m.topic.startsWith("quality.")) onQuality(m.topic, m.payload);
      else if (typeof m.topic === "string" && m.topic.startsWith("speech.")) onSpeech(m);
      // Identity status and cues come from the server itself too.
      else if (m.from_participant_id == null && typeof m.topic === "string" && m.topic.startsWith("identity.")) onIdentity(m.topic, m.payload);
    })
    .on("error", (m) => { if (m.code !== "transport_not_found") setStatus(m.message, true); })
    .on("reconnecting", () => setStatus(t("reconnecting")))
    .on("resumed", () => {
      // After a move the client closed the subscriptions: subscribe again as tracks appear.
      for (const participantId of client.participants.keys()) scheduleSync(participantId);
      loadIdentity(); // what changed while the socket was away
    })
    .on("restored", ({ missing }) => {
      if (missing.length) setStatus(t("videoMissing"), true);
      else setStatus(t("inCall"));
    })
    .on("closed", () => { if (state.callState === "connected") setStatus(t("connectionLost"), true); });

  function sendData(topic, payload) {
    client.sendData(payload, topic);
  }

  async function startLocalMedia() {
    for (const constraints of [{ audio: true, video: true }, { video: true }, { audio: true }]) {
      try {
        return await navigator.mediaDevices.getUserMedia(constraints);
      } catch { /* try less */ }
    }
    setStatus(t("noMedia"), true);
    return new MediaStream();
  }

  async function joinRoom(token) {
    setStatus(t("connecting"));
    state.inRoom = true;
    state.localStream = await startLocalMedia();
    $("local-video").srcObject = state.localStream;
    await client.join(token);
    for (const info of client.participants.values()) if (info.tracks.length) scheduleSync(info.participant_id);
    state.publisher = client.publish(state.localStream);
    await state.publisher.ready;
    setStatus(t("inCall"));
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
      setStatus(t("cannotShow", { error: error.message }), true);
    });
  }

  function videoFor(participantId) {
    const info = client.participants.get(participantId);
    if (info?.role === "customer") return { video: $("customer-video"), own: false };
    if (info?.role === "service") {
      // The voice participant: heard, no tile (its words show in the captions and "Played").
      const audio = document.createElement("audio");
      audio.autoplay = true;
      audio.dataset.participantId = participantId;
      $("voice-audio").append(audio);
      return { video: audio, own: true, figure: audio };
    }
    const figure = document.createElement("figure");
    figure.className = "other";
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    const caption = document.createElement("figcaption");
    caption.textContent = info?.name || info?.identity || t("guest");
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
    state.quality = newQuality();
    renderQuality();
    voiceGone();
    clearTimeout(state.identity.timer);
  }

  // -- live quality ------------------------------------------------------------------------
  //
  // The server (from_participant_id null) sends staff in the room `quality.stats` every
  // 2 s (everyone's level, MOS, loss, round trip, video and the tier each receives),
  // `quality.alert` the moment an alert is raised, escalated or cleared, and
  // `quality.tier` when someone's received video moves to another rung (docs/quality.md).

  function onQuality(topic, payload) {
    if (!payload || typeof payload !== "object" || !state.inRoom) return;
    const q = state.quality;
    if (topic === "quality.stats" && Array.isArray(payload.participants)) {
      q.stats = payload;
      q.updates += 1;
      // Someone who left takes their alerts along: no "cleared" comes for them.
      const present = new Set(payload.participants.map((p) => p.participant_id));
      for (const [id, alert] of q.alerts) if (!present.has(alert.participant_id)) q.alerts.delete(id);
    } else if (topic === "quality.alert" && payload.alert_id) {
      if (payload.state === "cleared") q.alerts.delete(payload.alert_id);
      else q.alerts.set(payload.alert_id, payload);
    } else if (topic === "quality.tier" && payload.participant_id && payload.to) {
      const figures = q.stats?.participants.find((p) => p.participant_id === payload.participant_id);
      if (figures) figures.tier = payload.to; // the next quality.stats says the same
    } else {
      return;
    }
    renderQuality();
  }

  function forgetQuality(participantId) {
    const q = state.quality;
    for (const [id, alert] of q.alerts) if (alert.participant_id === participantId) q.alerts.delete(id);
    if (q.stats) q.stats.participants = q.stats.participants.filter((p) => p.participant_id !== participantId);
    renderQuality();
  }

  const isSelf = (participantId) => Boolean(participantId) && participantId === client.participantId;

  function qualityWho(p) {
    if (isSelf(p.participant_id)) return t("q_you");
    if (p.role === "customer") return t("q_customer");
    if (p.role === "service") return t("voiceName");
    const info = client.participants.get(p.participant_id);
    return info?.name || p.name || info?.identity || p.identity || t("guest");
  }

  // The customer first, then this agent, then anyone else the desk knows of (a hidden
  // supervisor who only watches is not listed to the desk, so not here either).
  function qualityRows() {
    const all = state.quality.stats?.participants || [];
    const rank = (p) => (p.role === "customer" ? 0 : isSelf(p.participant_id) ? 1 : 2);
    return all
      .filter((p) => p.role === "customer" || isSelf(p.participant_id) || client.participants.has(p.participant_id))
      .sort((a, b) => rank(a) - rank(b));
  }

  const levelText = (level) => t(`level_${["good", "fair", "poor"].includes(level) ? level : "unknown"}`);
  const tierText = (tier) => texts.tOr(`tier_${tier}`, String(tier || "").replaceAll("_", " "));
  const percentText = (fraction) => (typeof fraction === "number" ? `${(fraction * 100).toFixed(1)}%` : "—");

  function cell(field, ...children) {
    const td = document.createElement("td");
    td.dataset.field = field;
    td.append(...children);
    return td;
  }

  function levelBadge(level) {
    const badge = document.createElement("span");
    badge.className = "quality-badge";
    badge.dataset.level = ["good", "fair", "poor"].includes(level) ? level : "unknown";
    badge.textContent = levelText(level);
    return badge;
  }

  function videoText(p) {
    if (typeof p.fps !== "number") return "—";
    const size = p.width && p.height ? ` · ${p.width}×${p.height}` : "";
    const frozen = p.frozen_s >= 1 ? ` · ${t("frozen", { s: Math.round(p.frozen_s) })}` : "";
    return `${Math.round(p.fps)} fps${size}${frozen}`;
  }

  function renderQuality() {
    const q = state.quality;
    const rows = qualityRows();
    const panel = $("quality");
    panel.dataset.state = q.stats ? "live" : "waiting";
    panel.dataset.updates = String(q.updates);
    $("quality-table").tBodies[0].replaceChildren(...rows.map((p) => {
      const tr = document.createElement("tr");
      tr.dataset.participantId = p.participant_id;
      tr.dataset.role = p.role || "";
      tr.dataset.level = p.level || "unknown";
      if (isSelf(p.participant_id)) tr.dataset.self = "true";
      const loss = cell("loss", percentText(p.loss));
      loss.title = t("lossTitle", { up: percentText(p.loss_up), down: percentText(p.loss_down) });
      tr.append(
        cell("who", qualityWho(p)),
        cell("level", levelBadge(p.level)),
        cell("mos", typeof p.mos === "number" ? p.mos.toFixed(1) : "—"),
        loss,
        cell("rtt", typeof p.rtt_ms === "number" ? `${Math.round(p.rtt_ms)} ms` : "—"),
        cell("video", videoText(p)),
        cell("tier", tierText(p.tier)),
      );
      tr.lastChild.dataset.tier = p.tier || "";
      return tr;
    }));
    // The live region says only the levels, so a screen reader hears a change, not every tick.
    const summary = q.stats
      ? rows.filter((p) => p.role === "customer" || isSelf(p.participant_id))
        .map((p) => t("summaryItem", { who: qualityWho(p), level: levelText(p.level) })).join(" · ")
      : t("q_waiting");
    if ($("quality-summary").textContent !== summary) $("quality-summary").textContent = summary;
    const mine = rows.find((p) => isSelf(p.participant_id));
    $("quality-my-tier").dataset.tier = mine?.tier || "";
    $("quality-my-tier").textContent = mine?.tier ? t("myTier", { tier: tierText(mine.tier) }) : "";
    renderQualityAlerts();
  }

  function alertText(alert) {
    const kind = String(alert.kind || "");
    if (!texts.tOr(`alert_${kind}`, null)) return String(alert.message || kind);
    let whose;
    if (isSelf(alert.participant_id)) whose = t("whose_self");
    else if (alert.role === "customer") whose = t("whose_customer");
    else {
      const info = client.participants.get(alert.participant_id);
      whose = t("whose_other", { name: info?.name || alert.identity || t("guest") });
    }
    const v = alert.values || {};
    const round = (x, digits = 0) => (typeof x === "number" ? x.toFixed(digits) : "–");
    return t(`alert_${kind}`, {
      whose, rtt: round(v.rtt_ms), jitter: round(v.jitter_ms), mos: round(v.mos, 1), frozen: round(v.frozen_s), fps: round(v.fps),
    });
  }

  // One banner per alert, kept in place while it lasts (role="alert": announced once, and
  // again only when its words change: an escalation or a language switch).
  function renderQualityAlerts() {
    const box = $("quality-alerts");
    const alerts = [...state.quality.alerts.values()].sort((a, b) => (b.severity === "critical") - (a.severity === "critical"));
    const existing = new Map([...box.children].map((node) => [node.dataset.alertId, node]));
    const nodes = alerts.map((alert) => {
      let node = existing.get(alert.alert_id);
      if (!node) {
        node = document.createElement("div");
        node.className = "quality-alert";
        node.setAttribute("role", "alert");
        node.dataset.alertId = alert.alert_id;
      }
      node.dataset.kind = alert.kind || "";
      node.dataset.severity = alert.severity === "critical" ? "critical" : "warning";
      node.dataset.participantId = alert.participant_id || "";
      node.dataset.role = alert.role || "";
      node.dataset.suggestion = alert.suggestion || "";
      const text = t("alertLine", { severity: t(`severity_${node.dataset.severity}`), message: alertText(alert) });
      if (node.dataset.text !== text) {
        node.dataset.text = text;
        const message = document.createElement("span");
        message.className = "alert-message";
        message.textContent = text;
        node.replaceChildren(message);
      }
      return node;
    });
    for (const [id, node] of existing) if (!state.quality.alerts.has(id)) node.remove();
    nodes.forEach((node, i) => { if (box.children[i] !== node) box.insertBefore(node, box.children[i] || null); });
  }

  // -- speech ------------------------------------------------------------------------------
  //
  // The server (from_participant_id null) sends everyone in the room `speech.caption`
  // (partials, then one final per participant and seq; already PII-masked) and staff
  // `speech.risk` (a risk cue heard, with advice per language). The voice participant
  // (role "service") says `speech.tts` as it starts, finishes or fails a prompt.

  function onSpeech(m) {
    const payload = m.payload;
    if (!payload || typeof payload !== "object" || !state.inRoom) return;
    if (m.topic === "speech.tts") {
      const sender = m.from_participant_id == null ? null : client.participants.get(m.from_participant_id);
      if (m.from_participant_id != null && sender?.role !== "service") return; // only the voice says what it plays
      onTts(payload, m.from_participant_id);
    } else if (m.from_participant_id != null) {
      return; // captions and risk cues come from the server itself, never from a participant
    } else if (m.topic === "speech.caption") {
      onCaption(payload);
    } else if (m.topic === "speech.risk") {
      onRisk(payload);
    }
  }

  function clockText(unixS) {
    const date = new Date((Number(unixS) || Date.now() / 1000) * 1000);
    return [date.getHours(), date.getMinutes(), date.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
  }

  function roleLabel(role) {
    return texts.tOr(`role_${role}`, t("role_other"));
  }

  function speakerText(line) {
    const label = roleLabel(line.role);
    const name = line.role !== "service" && line.name && line.name !== label ? ` · ${line.name}` : "";
    return `${label}${name}${isSelf(line.participant_id) ? t("selfSuffix") : ""}`;
  }

  async function loadSpeechInfo() {
    try {
      state.speechInfo = await api("GET", "/v1/speech");
    } catch (error) {
      // An older server (404) has no speech; another refusal: say it on the buttons.
      state.speechInfo = { asr: { enabled: false }, tts: { available: false, languages: [], reason: error.status === 404 ? "" : error.message } };
    }
    renderSpeech();
  }

  // What the live transcript already holds (an agent who joins a call midway sees it).
  async function loadTranscript(room) {
    if (!room) return;
    let body;
    try {
      body = await api("GET", `/v1/rooms/${encodeURIComponent(room)}/transcript`);
    } catch {
      return; // an older server, or none yet: the captions start from now
    }
    if (!state.inRoom || state.call?.room !== room || state.speech.lines.length) return;
    for (const line of body.lines || []) onCaption({ ...line, final: true, seq: `past-${line.start}` });
    for (const alert of body.risk || []) onRisk(alert);
  }

  // -- captions

  function onCaption(c) {
    if (!c.participant_id || typeof c.text !== "string" || !c.text.trim()) return;
    const sp = state.speech;
    const key = `${c.participant_id}:${c.seq}`;
    if (c.final && sp.finals.has(key)) return;
    const box = $("caption-lines");
    const following = box.scrollHeight - box.scrollTop - box.clientHeight < 48; // else the agent scrolled back: stay
    let line = sp.partials.get(c.participant_id);
    if (line && c.final && line.seq !== c.seq) line = null; // a final of another sentence: a line of its own
    if (!line) {
      line = { participant_id: c.participant_id, risk: null, node: document.createElement("li") };
      line.node.className = "caption";
      sp.lines.push(line);
      box.append(line.node);
    }
    Object.assign(line, {
      role: String(c.role || ""), name: String(c.name || ""), text: String(c.text), final: c.final === true,
      start: Number(c.start) || Date.now() / 1000, seq: c.seq, language: c.language || "",
    });
    if (line.final) {
      sp.partials.delete(c.participant_id);
      sp.finals.add(key);
    } else {
      sp.partials.set(c.participant_id, line);
    }
    renderCaptionLine(line);
    while (sp.lines.length > MAX_CAPTION_LINES) {
      const old = sp.lines.shift();
      old.node.remove();
      if (sp.partials.get(old.participant_id) === old) sp.partials.delete(old.participant_id);
    }
    renderCaptionsNote();
    if (following) box.scrollTop = box.scrollHeight;
  }

  // Text nodes only: what was said is never parsed as markup.
  function renderCaptionLine(line) {
    const node = line.node;
    node.dataset.participantId = line.participant_id;
    node.dataset.role = line.role;
    node.dataset.final = String(line.final);
    node.dataset.seq = String(line.seq ?? "");
    if (line.risk) node.dataset.risk = line.risk;
    else delete node.dataset.risk;
    if (line.final) node.removeAttribute("aria-hidden");
    else node.setAttribute("aria-hidden", "true"); // a screen reader hears the final, not every guess
    const time = document.createElement("span");
    time.className = "caption-time";
    time.textContent = clockText(line.start);
    const who = document.createElement("span");
    who.className = "caption-who";
    who.textContent = speakerText(line);
    const words = document.createElement("span");
    words.className = "caption-text";
    words.textContent = line.text;
    node.replaceChildren(time, who, words);
  }

  function renderCaptionsNote() {
    const sp = state.speech;
    const off = state.speechInfo && state.speechInfo.asr?.enabled === false;
    $("captions").dataset.state = sp.lines.length ? "live" : off ? "off" : "waiting";
    $("captions-note").textContent = sp.lines.length ? "" : off ? t("captionsOff") : t("captionsWaiting");
  }

  // -- risk cues

  function onRisk(alert) {
    if (!alert.rule && !alert.category) return;
    const sp = state.speech;
    const ts = Number(alert.ts) || Date.now() / 1000;
    const id = String(alert.id || `${alert.rule}-${ts}`);
    if (sp.risks.some((r) => r.id === id)) return;
    const rule = String(alert.rule || alert.category);
    const same = sp.risks.find((r) => !r.dismissed && r.rule === rule && Math.abs(ts - r.lastTs) < RISK_DEDUP_S);
    if (same) {
      same.count += 1;
      same.lastTs = Math.max(same.lastTs, ts);
    } else {
      sp.risks.unshift({ id, rule, alert, count: 1, firstTs: ts, lastTs: ts, dismissed: false });
      sp.risks.splice(MAX_RISKS);
    }
    markCaption(alert);
    renderRisks();
  }

  // The caption line the cue was heard in: the participant's latest line with the phrase,
  // else (speech, not chat) the participant's latest line.
  function markCaption(alert) {
    const lines = state.speech.lines.filter((l) => l.participant_id === alert.participant_id);
    const phrase = String(alert.phrase || "").toLowerCase();
    const line = [...lines].reverse().find((l) => phrase && l.text.toLowerCase().includes(phrase))
      || (alert.source === "chat" ? null : lines[lines.length - 1]);
    if (!line) return;
    line.risk = alert.severity === "critical" || line.risk === "critical" ? "critical" : "warning";
    line.node.title = riskAdvice(alert);
    renderCaptionLine(line);
  }

  function riskAdvice(alert) {
    const advice = alert.advice && typeof alert.advice === "object" ? alert.advice : {};
    return String(advice[texts.lang] || advice.en || advice.zh || Object.values(advice)[0] || "");
  }

  function riskWho(alert) {
    if (isSelf(alert.participant_id)) return t("riskWho_self");
    if (["customer", "agent"].includes(alert.role)) return t(`riskWho_${alert.role}`);
    const info = client.participants.get(alert.participant_id);
    return t("riskWho_other", { name: info?.name || roleLabel(alert.role) });
  }

  function renderRisks() {
    const box = $("risk-alerts");
    const shown = state.speech.risks.filter((r) => !r.dismissed);
    const existing = new Map([...box.children].map((node) => [node.dataset.riskId, node]));
    const nodes = shown.map((risk) => {
      const alert = risk.alert;
      let node = existing.get(risk.id);
      if (!node) {
        node = document.createElement("div");
        node.className = "risk-alert";
        node.setAttribute("role", "alert");
        node.dataset.riskId = risk.id;
      }
      node.dataset.severity = alert.severity === "critical" ? "critical" : "warning";
      node.dataset.category = String(alert.category || "");
      node.dataset.rule = risk.rule;
      node.dataset.role = String(alert.role || "");
      node.dataset.participantId = String(alert.participant_id || "");
      const title = document.createElement("strong");
      title.className = "risk-title";
      title.textContent = `${t(`severity_${node.dataset.severity}`)} · ${texts.tOr(`risk_${alert.category}`, String(alert.category || alert.rule || ""))}`;
      const when = document.createElement("span");
      when.className = "risk-time";
      when.textContent = clockText(risk.lastTs) + (risk.count > 1 ? ` ${t("riskRepeat", { n: risk.count })}` : "");
      const advice = document.createElement("p");
      advice.className = "risk-advice";
      advice.textContent = riskAdvice(alert);
      const heard = document.createElement("p");
      heard.className = "risk-heard";
      heard.textContent = t("riskHeard", { who: riskWho(alert), phrase: String(alert.phrase || "") }) + (alert.source === "chat" ? t("riskSourceChat") : "");
      const dismiss = document.createElement("button");
      dismiss.type = "button";
      dismiss.className = "risk-dismiss secondary";
      dismiss.textContent = t("dismiss");
      dismiss.setAttribute("aria-label", t("dismissLabel"));
      dismiss.addEventListener("click", () => dismissRisk(risk.id));
      const head = document.createElement("div");
      head.className = "risk-head";
      head.append(title, when, dismiss);
      const parts = [head, advice, heard];
      if (alert.text && alert.text !== alert.phrase) {
        const sentence = document.createElement("p");
        sentence.className = "risk-sentence";
        sentence.textContent = t("riskSentence", { text: String(alert.text) });
        parts.push(sentence);
      }
      const text = parts.map((part) => part.textContent).join("\n");
      if (node.dataset.text !== text) { // unchanged words: not announced again
        node.dataset.text = text;
        node.replaceChildren(...parts);
      }
      return node;
    });
    for (const [id, node] of existing) if (!shown.some((r) => r.id === id)) node.remove();
    nodes.forEach((node, i) => { if (box.children[i] !== node) box.insertBefore(node, box.children[i] || null); });
  }

  function dismissRisk(id) {
    const risk = state.speech.risks.find((r) => r.id === id);
    if (!risk) return;
    risk.dismissed = true;
    renderRisks();
    const next = $("risk-alerts").querySelector(".risk-dismiss");
    (next || $("caption-lines")).focus();
  }

  // -- prompts played by the voice

  function onTts(payload, senderId) {
    if (!payload.id || !["started", "finished", "failed"].includes(payload.state)) return;
    const sp = state.speech;
    sp.voiceId = senderId || payload.participant_id || sp.voiceId;
    const entry = sp.played.get(payload.id) || { id: payload.id, at: Date.now() / 1000 };
    Object.assign(entry, {
      kind: String(payload.kind || "script"), text: String(payload.text || ""), language: payload.language || "",
      state: payload.state, error: payload.error || null, duration_s: payload.duration_s ?? null,
    });
    if (payload.state === "started") entry.at = Date.now() / 1000;
    rememberPlayed(entry);
    if (payload.state === "started") {
      sp.speaking.add(payload.id);
      // What the voice says is known word for word: a caption line of its own.
      onCaption({
        participant_id: sp.voiceId || "voice", role: "service", name: t("voiceName"), text: entry.text,
        final: true, start: entry.at, seq: `tts-${payload.id}`, language: entry.language,
      });
    } else {
      sp.speaking.delete(payload.id);
    }
    renderPlayed();
    renderVoiceChip();
  }

  function rememberPlayed(entry) {
    const played = state.speech.played;
    played.delete(entry.id); // newest last in the map
    played.set(entry.id, entry);
    while (played.size > MAX_PLAYED) played.delete(played.keys().next().value);
  }

  function voiceGone() {
    state.speech.speaking.clear();
    renderVoiceChip();
  }

  function renderVoiceChip() {
    $("voice-chip").hidden = !(state.inRoom && state.speech.speaking.size > 0);
  }

  function renderPlayed() {
    const entries = [...state.speech.played.values()].reverse();
    $("played-title").hidden = $("played-list").hidden = !entries.length;
    $("played-list").replaceChildren(...entries.map((entry) => {
      const li = document.createElement("li");
      li.className = "played";
      li.dataset.ttsId = entry.id;
      li.dataset.kind = entry.kind;
      li.dataset.state = entry.state;
      const head = document.createElement("span");
      head.className = "played-head";
      head.textContent = `${clockText(entry.at)} · ${texts.tOr(`kind_${entry.kind}`, entry.kind)} · ${t(`tts_${entry.state}`)}`;
      const words = document.createElement("span");
      words.className = "played-text";
      words.textContent = entry.text;
      li.append(head, words);
      if (entry.error) li.title = entry.error;
      return li;
    }));
  }

  function callLanguage() {
    return String(state.call?.language || texts.lang);
  }

  // Why the voice cannot play lines in this call ("" when it can; null while asking).
  function ttsBlocked() {
    const tts = state.speechInfo?.tts;
    if (!tts) return null;
    if (!tts.available) return tts.reason || t("ttsUnavailable");
    const lang = callLanguage();
    const languages = Array.isArray(tts.languages) ? tts.languages : [];
    if (languages.length && !languages.some((l) => l === lang || l.split("-")[0] === lang.split("-")[0])) {
      return t("ttsNoLanguage", { lang });
    }
    return "";
  }

  // aria-disabled, not disabled: the button stays focusable and its tooltip says why.
  function renderPlayButtons() {
    const blocked = ttsBlocked();
    for (const button of $("script").querySelectorAll("button.play")) {
      const why = blocked === null ? t("ttsChecking") : blocked;
      button.setAttribute("aria-disabled", String(Boolean(why)));
      if (why) button.title = why;
      else button.removeAttribute("title");
    }
  }

  async function playScript(button) {
    if (!state.inRoom || !state.call?.room) return;
    const blocked = ttsBlocked();
    if (blocked !== "") {
      showSpeechStatus(null, {}, "error", blocked || t("ttsChecking"));
      return;
    }
    const body = { script: button.dataset.script, business: state.business?.id || state.call.business, language: callLanguage() };
    if (button.dataset.index !== undefined) body.index = Number(button.dataset.index);
    showSpeechStatus("playing");
    try {
      const utterance = await api("POST", `/v1/rooms/${encodeURIComponent(state.call.room)}/speech/say`, body);
      if (utterance?.id && !state.speech.played.has(utterance.id)) {
        rememberPlayed({ id: utterance.id, kind: utterance.kind || body.script, text: String(utterance.text || ""),
          language: utterance.language || body.language, state: "queued", at: Date.now() / 1000, error: null });
        renderPlayed();
      }
      showSpeechStatus("playQueued", { text: String(utterance?.text || "") });
    } catch (error) {
      showSpeechStatus("cannotPlay", { error: error.message }, "error");
    }
  }

  // Kept as a key, so that a language switch re-renders it (`raw`: words already made).
  function showSpeechStatus(key, vars = {}, className = "", raw = null) {
    state.speech.status = key || raw ? { key, vars, className, raw } : null;
    renderSpeechStatus();
  }

  function renderSpeechStatus() {
    const s = state.speech.status;
    $("speech-status").textContent = s ? s.raw || t(s.key, s.vars) : "";
    $("speech-status").className = s ? s.className : "";
  }

  function renderSpeech() {
    for (const line of state.speech.lines) renderCaptionLine(line);
    renderCaptionsNote();
    renderRisks();
    renderPlayed();
    renderVoiceChip();
    renderPlayButtons();
    renderSpeechStatus();
    renderHangUp();
  }

  // -- identity ----------------------------------------------------------------------------
  //
  // The server (from_participant_id null) sends the agents in the room `identity.status`
  // (the whole IdentityStatus) on every change and `identity.cue` when the coaching watch
  // sees a risk. The desk reads GET /v1/calls/{call}/identity once it is in the room, again
  // after a resume, and every IDENTITY_REFRESH_MS as a safety net (docs/identity.md).

  const LIVENESS_RUNNING = new Set(["positioning", "challenge"]);
  const FACE_STATES = new Set(["unknown", "one_face", "no_face", "several_faces", "too_dark", "not_frontal"]);

  function resetIdentity() {
    const old = state.identity;
    clearTimeout(old.timer);
    for (const url of old.images.values()) URL.revokeObjectURL(url);
    state.identity = newIdentity();
    for (const img of [$("identity-face-img"), $("identity-doc-img")]) {
      img.removeAttribute("src");
      img.dataset.evidenceId = "";
    }
    $("identity-override-reason").value = "";
    renderIdentity();
  }

  // Reads the status now, and again in a while for as long as the call lasts.
  async function refreshIdentity() {
    const id = state.identity;
    clearTimeout(id.timer);
    await loadIdentity();
    if (state.identity === id && state.inRoom && !id.unavailable) id.timer = setTimeout(refreshIdentity, IDENTITY_REFRESH_MS);
  }

  async function loadIdentity() {
    const callId = state.callId;
    const id = state.identity;
    if (!callId || state.callState !== "connected") return;
    const seq = id.seq;
    try {
      const status = await api("GET", `/v1/calls/${encodeURIComponent(callId)}/identity`);
      if (state.identity !== id) return;
      noteRequired(status);
      if (id.seq === seq) applyIdentity(status);
      else renderIdentity();
    } catch (error) {
      if (state.identity !== id) return;
      if (error.status === 404 && error.code === "not_found") { // no such endpoint: an older server
        id.unavailable = true;
        renderIdentity();
      }
    }
  }

  function onIdentity(topic, payload) {
    if (!payload || typeof payload !== "object" || !state.inRoom) return;
    if (topic === "identity.status") {
      state.identity.seq += 1;
      applyIdentity(payload);
    } else if (topic === "identity.cue") {
      addCue(payload);
      renderIdentity();
    }
  }

  function applyIdentity(status) {
    if (!status || typeof status !== "object" || (status.call_id && status.call_id !== state.callId)) return;
    const id = state.identity;
    id.status = status;
    id.unavailable = false;
    for (const cue of Array.isArray(status.cues) ? status.cues : []) addCue(cue);
    renderIdentity();
  }

  // The REST answers say from the catalogue whether identity is required: kept apart from
  // the data messages, so that a message from a document still without it cannot ungate.
  function noteRequired(status) {
    if (typeof status?.required === "boolean") state.identity.required = status.required;
  }

  function identityRequired() {
    const id = state.identity;
    const fromCatalogue = (state.business?.steps || []).includes("identity_check");
    return (id.required ?? fromCatalogue) || id.status?.required === true;
  }

  function addCue(cue) {
    if (!cue || typeof cue !== "object" || typeof cue.kind !== "string") return;
    const cues = state.identity.cues;
    const key = `${cue.kind}:${cue.ts}`;
    if (cues.has(key)) return;
    cues.set(key, { kind: cue.kind, ts: Number(cue.ts) || Date.now() / 1000, duration_s: Number(cue.duration_s) || 0 });
    while (cues.size > MAX_IDENTITY_CUES) cues.delete(cues.keys().next().value);
  }

  // Whether this call's confirmation must wait: the business needs an identity check (the
  // server says so, or the catalogue does before it has) and it is not yet satisfied.
  function identityBlocks() {
    const id = state.identity;
    if (!state.callId || id.unavailable) return false;
    return identityRequired() && id.status?.satisfied !== true;
  }

  function renderConfirmGate() {
    const blocked = identityBlocks();
    $("confirm-send").disabled = blocked;
    $("confirm-blocked").hidden = !blocked;
    const text = blocked ? t("idNotVerified") : "";
    if ($("confirm-blocked").textContent !== text) $("confirm-blocked").textContent = text;
  }

  const stepName = (step) => texts.tOr(`lvStep_${step}`, String(step || "").replaceAll("_", " "));

  function reasonText(liveness) {
    const reason = liveness.reason;
    return texts.tOr(`reason_${reason}`, null) || liveness.message || String(reason || "");
  }

  function livenessText(lv) {
    const steps = Array.isArray(lv.steps) ? lv.steps : [];
    if (lv.state === "positioning") return t("lv_positioning");
    if (lv.state === "challenge") {
      const index = Math.max(0, Number(lv.step_index) || 0);
      return t("lv_challenge", { n: index + 1, count: steps.length, step: stepName(steps[index]) });
    }
    if (lv.state === "passed") return t("lv_passed");
    if (lv.state === "failed") return t("lv_failed", { reason: reasonText(lv) });
    return String(lv.state || "");
  }

  function overallText(status) {
    const s = status.state || "not_started";
    if (s === "overridden") {
      const o = status.override || {};
      return t("idState_overridden", { name: o.by_name || o.by || "?", reason: o.reason || "" });
    }
    return texts.tOr(`idState_${s}`, String(s));
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text; // unchanged words: not announced again
  }

  function renderIdentity() {
    const id = state.identity;
    const status = id.status;
    const panel = $("identity");
    const liveness = status?.liveness || null;
    const running = Boolean(liveness && LIVENESS_RUNNING.has(liveness.state));
    const required = !id.unavailable && identityRequired();
    panel.dataset.state = id.unavailable ? "unavailable" : status?.state || "not_started";
    panel.dataset.required = String(required);
    panel.dataset.satisfied = String(status?.satisfied === true);

    // The overall state line.
    const overall = $("identity-overall");
    overall.dataset.state = panel.dataset.state;
    setText(overall, id.unavailable ? t("idUnavailable") : overallText(status || {}) + (required ? t("idRequiredTag") : ""));

    // The live face watch.
    const faceState = FACE_STATES.has(status?.face?.state) ? status.face.state : "unknown";
    $("identity-face").dataset.face = faceState;
    setText($("identity-face"), t(`face_${faceState}`));

    // The liveness attempt: its state, then its steps in order.
    $("identity-liveness-box").hidden = !liveness;
    const line = $("identity-liveness-state");
    line.dataset.state = liveness?.state || "";
    line.dataset.reason = liveness?.reason || "";
    setText(line, liveness ? livenessText(liveness) : "");
    renderSteps(liveness);

    // Evidence, fetched with the token (an <img src> cannot send it).
    const evidence = status?.evidence || {};
    $("identity-evidence").hidden = !(evidence.face || evidence.id_document);
    showEvidence("face", evidence.face || null);
    showEvidence("id_document", evidence.id_document || null);

    // The comparison.
    const comparison = status?.comparison || null;
    const compared = $("identity-comparison");
    compared.hidden = !comparison;
    compared.dataset.outcome = comparison?.outcome || "";
    setText(compared, comparison ? comparisonText(comparison) : "");

    // Risk cues, newest first.
    const cues = [...id.cues.values()].sort((a, b) => b.ts - a.ts);
    const list = $("identity-cues");
    const cueText = (cue) => `${clockText(cue.ts)} · ${texts.tOr(`cue_${cue.kind}`, cue.kind).replace("{s}", String(Math.round(cue.duration_s)))}`;
    const wanted = cues.length ? cues.map(cueText) : [t("idNoCues")];
    if ([...list.children].map((li) => li.textContent).join("\n") !== wanted.join("\n")) {
      list.replaceChildren(...wanted.map((text, i) => {
        const li = document.createElement("li");
        li.className = cues.length ? "identity-cue" : "identity-no-cue";
        if (cues.length) li.dataset.kind = cues[i].kind;
        li.textContent = text;
        return li;
      }));
    }

    // The buttons: one request at a time; none while the server has no identity API, and
    // no challenge or capture where the server runs no liveness stage (override still works).
    const off = id.unavailable || !state.inRoom;
    const noStage = status?.available === false;
    const busy = Boolean(id.busy);
    $("identity-liveness").disabled = off || noStage || busy || running;
    $("identity-liveness").setAttribute("aria-busy", String(id.busy === "liveness"));
    $("identity-capture").disabled = off || noStage || busy;
    $("identity-capture").setAttribute("aria-busy", String(id.busy === "capture"));
    for (const button of [$("identity-liveness"), $("identity-capture")]) {
      if (noStage) button.title = t("idErr_liveness_unavailable");
      else button.removeAttribute("title");
    }
    const missing = !(evidence.face && evidence.id_document);
    $("identity-compare").disabled = off || busy || missing;
    $("identity-compare").setAttribute("aria-busy", String(id.busy === "compare"));
    if (missing) $("identity-compare").title = t("idNeedEvidence");
    else $("identity-compare").removeAttribute("title");
    $("identity-override").disabled = off || busy || status?.state === "overridden";
    $("identity-override").setAttribute("aria-busy", String(id.busy === "override"));

    const m = id.message;
    const message = $("identity-message");
    setText(message, m ? m.raw || t(m.key, m.vars) : "");
    message.className = m ? m.className : "";
    renderConfirmGate();
  }

  function renderSteps(liveness) {
    const steps = Array.isArray(liveness?.steps) ? liveness.steps : [];
    const index = Number(liveness?.step_index ?? -1);
    const items = steps.map((step, i) => {
      let s = "pending";
      if (liveness.state === "passed" || i < index) s = "done";
      else if (i === index && liveness.state === "challenge") s = "current";
      else if (i === index && liveness.state === "failed") s = "failed";
      const mark = { done: "lvStepDone", current: "lvStepCurrent", failed: "lvStepFailed" }[s];
      return { step, s, text: `${stepName(step)}${mark ? ` — ${t(mark)}` : ""}` };
    });
    const list = $("identity-steps");
    const key = items.map((x) => `${x.s}:${x.text}`).join("\n");
    if (list.dataset.key === key) return;
    list.dataset.key = key;
    list.replaceChildren(...items.map((x) => {
      const li = document.createElement("li");
      li.dataset.step = x.step;
      li.dataset.state = x.s;
      if (x.s === "current") li.setAttribute("aria-current", "step");
      li.textContent = x.text;
      return li;
    }));
  }

  function comparisonText(c) {
    let text = texts.tOr(`cmp_${c.outcome}`, String(c.outcome || ""));
    if (typeof c.score === "number") {
      text += ` · ${t("cmpScore", { score: c.score.toFixed(2) })}`;
      if (typeof c.threshold === "number") text += t("cmpThreshold", { threshold: c.threshold.toFixed(2) });
    }
    if (c.message && c.outcome !== "match") text += ` — ${c.message}`;
    return text;
  }

  // The evidence JPEG through fetch with the token, shown from an object URL (kept per
  // evidence id until the call changes). Only this server's evidence paths get the token.
  async function showEvidence(kind, entry) {
    const img = $(kind === "face" ? "identity-face-img" : "identity-doc-img");
    img.closest("figure").hidden = !entry;
    if (!entry || typeof entry.url !== "string" || !entry.url.startsWith("/v1/calls/")) {
      if (img.dataset.evidenceId) {
        img.removeAttribute("src");
        img.dataset.evidenceId = "";
      }
      return;
    }
    img.alt = t(kind === "face" ? "idFaceAlt" : "idDocAlt", { time: clockText(entry.ts) });
    if (img.dataset.evidenceId === entry.evidence_id) return;
    img.dataset.evidenceId = entry.evidence_id;
    const id = state.identity;
    let url = id.images.get(entry.evidence_id);
    if (!url) {
      try {
        const response = await fetch(entry.url, { headers: { Authorization: `Bearer ${state.token}` } });
        if (!response.ok) throw new Error(`evidence: ${response.status}`);
        const blob = await response.blob();
        if (state.identity !== id) return;
        url = URL.createObjectURL(blob);
        id.images.set(entry.evidence_id, url);
      } catch {
        if (img.dataset.evidenceId === entry.evidence_id) img.dataset.evidenceId = ""; // tried again on the next status
        return;
      }
    }
    if (img.dataset.evidenceId === entry.evidence_id) img.src = url;
  }

  function showIdentityMessage(key, vars = {}, className = "", raw = null) {
    state.identity.message = key || raw ? { key, vars, className, raw } : null;
    renderIdentity();
  }

  function identityError(error) {
    return texts.tOr(`idErr_${error.code}`, null) || error.message;
  }

  // One identity request at a time; its answer is applied unless a newer status came meanwhile.
  async function identityRequest(kind, path, body, startKey) {
    const callId = state.callId;
    const id = state.identity;
    if (!callId || id.busy || id.unavailable) return null;
    id.busy = kind;
    showIdentityMessage(startKey);
    const seq = id.seq;
    try {
      const result = await api("POST", `/v1/calls/${encodeURIComponent(callId)}/identity/${path}`, body);
      if (state.identity !== id) return null;
      id.message = null;
      return { result, fresh: id.seq === seq };
    } catch (error) {
      if (state.identity === id) id.message = { key: null, vars: {}, className: "error", raw: identityError(error) };
      return null;
    } finally {
      if (state.identity === id) {
        id.busy = null;
        renderIdentity();
      }
    }
  }

  async function startLiveness() {
    const answer = await identityRequest("liveness", "liveness", {}, "idStarting");
    noteRequired(answer?.result);
    if (answer?.fresh) applyIdentity(answer.result);
  }

  async function captureDocument() {
    const answer = await identityRequest("capture", "capture", { kind: "id_document" }, "idCapturing");
    if (!answer) return;
    const status = state.identity.status;
    if (answer.fresh && status && answer.result?.evidence_id) {
      status.evidence = { ...(status.evidence || {}), id_document: answer.result };
    }
    showIdentityMessage("idCaptured", {}, "ok");
  }

  async function compareFaces() {
    const answer = await identityRequest("compare", "compare", {}, "idComparing");
    const status = state.identity.status;
    if (answer?.fresh && status && answer.result?.outcome) {
      status.comparison = answer.result;
      renderIdentity();
    }
  }

  async function overrideIdentity(event) {
    event.preventDefault();
    const reason = $("identity-override-reason").value.trim();
    if (!reason) {
      $("identity-override-reason").focus();
      return;
    }
    const answer = await identityRequest("override", "override", { reason }, "idOverriding");
    if (!answer) return;
    noteRequired(answer.result);
    if (answer.fresh) applyIdentity(answer.result);
    $("identity-override-reason").value = "";
    showIdentityMessage("idOverridden", {}, "ok");
  }

  function identityStats() {
    const id = state.identity;
    const s = id.status;
    return {
      loaded: Boolean(s),
      unavailable: id.unavailable,
      state: s?.state || null,
      required: identityRequired(),
      satisfied: s?.satisfied ?? null,
      face: s?.face?.state || null,
      liveness: s?.liveness ? { attempt_id: s.liveness.attempt_id, state: s.liveness.state, steps: s.liveness.steps,
        step_index: s.liveness.step_index, reason: s.liveness.reason } : null,
      evidence: Object.fromEntries(["face", "id_document"].map((k) => [k, s?.evidence?.[k]?.evidence_id || null])),
      images: id.images.size,
      comparison: s?.comparison ? { outcome: s.comparison.outcome, score: s.comparison.score } : null,
      override: s?.override || null,
      cues: [...id.cues.values()],
      confirmBlocked: identityBlocks(),
      busy: id.busy,
    };
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
      quality: {
        updates: state.quality.updates,
        participants: qualityRows().map((p) => ({
          participant_id: p.participant_id, role: p.role, self: isSelf(p.participant_id), level: p.level, mos: p.mos,
          loss: p.loss, loss_up: p.loss_up, loss_down: p.loss_down, rtt_ms: p.rtt_ms, fps: p.fps ?? null, tier: p.tier,
        })),
        alerts: [...state.quality.alerts.values()].map((a) => ({
          alert_id: a.alert_id, kind: a.kind, severity: a.severity, role: a.role, participant_id: a.participant_id,
        })),
      },
      speech: speechStats(),
      identity: identityStats(),
    };
  }

  function speechStats() {
    const sp = state.speech;
    const line = (l) => ({ participant_id: l.participant_id, role: l.role, name: l.name, text: l.text, seq: l.seq, risk: l.risk });
    return {
      captions: sp.lines.filter((l) => l.final).map(line),
      partials: [...sp.partials.values()].map(line),
      risks: sp.risks.map((r) => ({
        id: r.id, rule: r.rule, category: r.alert.category, severity: r.alert.severity, role: r.alert.role,
        participant_id: r.alert.participant_id, phrase: r.alert.phrase, count: r.count, dismissed: r.dismissed,
      })),
      played: [...sp.played.values()].map(({ id, kind, text, language, state: s, error }) => ({ id, kind, text, language, state: s, error })),
      voiceSpeaking: sp.speaking.size > 0,
      voiceAudio: [...document.querySelectorAll("#voice-audio audio")].filter((a) => a.srcObject && a.srcObject.getAudioTracks().length).length,
      info: state.speechInfo,
      finishing: state.finishing,
      reminder: state.lastReminder,
    };
  }

  // -- start -----------------------------------------------------------------------------

  function typing(target) {
    return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement;
  }

  function init() {
    applyLanguage();
    setStatus(t("logInToTake"));
    for (const button of document.querySelectorAll("[data-lang]")) button.addEventListener("click", () => setLanguage(button.dataset.lang));
    $("login-form").addEventListener("submit", login);
    $("state-form").addEventListener("submit", setState);
    $("accept").addEventListener("click", accept);
    $("decline").addEventListener("click", decline);
    $("hangup").addEventListener("click", hangUp);
    $("wrapup-form").addEventListener("submit", wrapUp);
    $("transfer-form").addEventListener("submit", transfer);
    $("invite-form").addEventListener("submit", invite);
    $("confirm-form").addEventListener("submit", requestConfirmation);
    $("identity-liveness").addEventListener("click", startLiveness);
    $("identity-capture").addEventListener("click", captureDocument);
    $("identity-compare").addEventListener("click", compareFaces);
    $("identity-override-form").addEventListener("submit", overrideIdentity);
    $("push").addEventListener("click", pushMaterial);
    $("material-file").addEventListener("change", uploadMaterial);
    $("point").addEventListener("click", togglePointer);
    $("script").addEventListener("click", (event) => {
      const button = event.target.closest("button.play");
      if (button) playScript(button);
    });
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
