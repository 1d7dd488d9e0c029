"""Configuration: default.toml, cluster.example.toml, loading and TELLER_* overrides."""

from .loader import ConfigError, data_dir, load_config
from .settings import (
    AuthSettings,
    Config,
    IceServer,
    IceSettings,
    LogSettings,
    ObjectStoreSettings,
    QualitySettings,
    RecordingSettings,
    RoomSettings,
    ServerSettings,
    SfuSettings,
    SignalingSettings,
    SpeechSettings,
    StageSettings,
    StorageSettings,
    TierSettings,
)

__all__ = [
    "AuthSettings",
    "Config",
    "ConfigError",
    "IceServer",
    "IceSettings",
    "LogSettings",
    "ObjectStoreSettings",
    "QualitySettings",
    "RecordingSettings",
    "RoomSettings",
    "ServerSettings",
    "SfuSettings",
    "SignalingSettings",
    "SpeechSettings",
    "StageSettings",
    "StorageSettings",
    "TierSettings",
    "data_dir",
    "load_config",
]
