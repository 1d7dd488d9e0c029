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


@dataclass
class WebhookSettings:
    urls: list[str] = field(default_factory=list)
    secret: str = ""
    timeout_s: float = 5.0
    max_attempts: int = 8


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
    log: LogSettings = field(default_factory=LogSettings)
