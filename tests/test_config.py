"""Configuration: default.toml, a TOML file over it, then TELLER_SECTION__KEY variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from teller.config import Config, ConfigError, IceServer, ServerSettings, load_config
from teller.config.loader import default_toml


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "teller.toml"
    path.write_text(text)
    return path


# -- defaults ---------------------------------------------------------------------------


def test_defaults_load_from_default_toml() -> None:
    config = load_config(env={})
    assert isinstance(config, Config)
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 7880
    assert config.server.cors_origins == ["*"]
    assert config.auth.secret == ""
    assert config.auth.default_ttl_s == 3600
    assert config.auth.dev_tokens is True
    assert config.rooms.max_participants == 50
    # TOML writes 60 and 30 as integers; float fields still come out as floats.
    assert config.rooms.empty_timeout_s == 60.0 and isinstance(config.rooms.empty_timeout_s, float)
    assert isinstance(config.signaling.messages_per_second, float)
    assert config.sfu.video_codecs == ["VP8", "H264"]
    assert config.sfu.audio_codecs == ["opus"]
    assert config.ice.servers == []
    assert config.stages.options == {}
    assert config.storage.data_dir == "./data"
    assert config.log.format == "json"


def test_default_toml_has_every_settings_field() -> None:
    """default.toml documents every key: each section matches its dataclass exactly."""
    data = default_toml()
    config = Config()
    for section, values in data.items():
        settings = getattr(config, section)
        assert set(values) == set(vars(settings)), section


def test_environment_is_read_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELLER_SERVER__PORT", "9123")
    assert load_config().server.port == 9123


def test_variables_without_prefix_or_separator_are_ignored() -> None:
    env = {"SERVER__PORT": "1", "TELLER_PORT": "2", "OTHER_SERVER__PORT": "3"}
    assert load_config(env=env).server.port == 7880


# -- file ---------------------------------------------------------------------------------


def test_file_overrides_defaults_key_by_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
port = 9000
cors_origins = ["https://a.example", "https://b.example"]

[rooms]
empty_timeout_s = 5

[ice]
servers = [{ urls = ["stun:stun.example.com:3478"] }, { urls = ["turn:t.example:3478"], username = "u", credential = "c" }]
""",
    )
    config = load_config(path, env={})
    assert config.server.port == 9000
    assert config.server.host == "127.0.0.1"  # untouched keys of the same section keep defaults
    assert config.server.cors_origins == ["https://a.example", "https://b.example"]
    assert config.rooms.empty_timeout_s == 5.0
    assert config.rooms.max_participants == 50
    assert config.ice.servers == [
        IceServer(urls=["stun:stun.example.com:3478"]),
        IceServer(urls=["turn:t.example:3478"], username="u", credential="c"),
    ]
    assert config.ice.servers[1].to_json() == {"urls": ["turn:t.example:3478"], "username": "u", "credential": "c"}
    assert config.ice.servers[0].to_json() == {"urls": ["stun:stun.example.com:3478"]}


def test_overrides_beat_file_and_env_beats_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9000\nhost = \"10.0.0.1\"\n")
    config = load_config(path, env={"TELLER_SERVER__PORT": "9002"}, overrides={"server": {"port": 9001, "public_url": "x"}})
    assert config.server.port == 9002
    assert config.server.host == "10.0.0.1"
    assert config.server.public_url == "x"


def test_missing_file_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(missing, env={})
    assert str(missing) in str(info.value)


def test_unparsable_file_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nport = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[server]\nprot = 1\n", ["prot", "server"]),
        ("[serverz]\nport = 1\n", ["serverz"]),
        ("[ice]\nservers = [{ url = \"stun:x\" }]\n", ["url", "ice.servers[0]"]),
    ],
)
def test_unknown_keys_raise_naming_the_key(tmp_path: Path, text: str, names: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    for name in names:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[server]\nport = "9000"\n', "server.port"),
        ("[server]\nport = 9000.5\n", "server.port"),
        ("[server]\nport = true\n", "server.port"),
        ("[server]\nhost = 1\n", "server.host"),
        ('[server]\ncors_origins = "*"\n', "server.cors_origins"),
        ("[server]\ncors_origins = [1]\n", "server.cors_origins[0]"),
        ('[auth]\ndev_tokens = "yes"\n', "auth.dev_tokens"),
        ("[rooms]\nempty_timeout_s = true\n", "rooms.empty_timeout_s"),
        ('[rooms]\nempty_timeout_s = "5"\n', "rooms.empty_timeout_s"),
        ("server = 1\n", "server"),
        ("[stages]\noptions = 1\n", "stages.options"),
        ("[ice]\nservers = [1]\n", "ice.servers[0]"),
    ],
)
def test_wrong_types_raise_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert key in str(info.value)


# -- environment -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "path", "expected"),
    [
        ("TELLER_SERVER__PORT", "9000", ("server", "port"), 9000),
        ("TELLER_SERVER__HOST", "0.0.0.0", ("server", "host"), "0.0.0.0"),
        ("TELLER_ROOMS__EMPTY_TIMEOUT_S", "2.5", ("rooms", "empty_timeout_s"), 2.5),
        ("TELLER_ROOMS__EMPTY_TIMEOUT_S", "7", ("rooms", "empty_timeout_s"), 7.0),
        ("TELLER_SIGNALING__MESSAGES_PER_SECOND", "1e2", ("signaling", "messages_per_second"), 100.0),
        ("TELLER_AUTH__DEV_TOKENS", "false", ("auth", "dev_tokens"), False),
        ("TELLER_AUTH__DEV_TOKENS", "0", ("auth", "dev_tokens"), False),
        ("TELLER_AUTH__DEV_TOKENS", "off", ("auth", "dev_tokens"), False),
        ("TELLER_AUTH__DEV_TOKENS", "NO", ("auth", "dev_tokens"), False),
        ("TELLER_ROOMS__AUTO_CREATE", "true", ("rooms", "auto_create"), True),
        ("TELLER_ROOMS__AUTO_CREATE", "1", ("rooms", "auto_create"), True),
        ("TELLER_ROOMS__AUTO_CREATE", " Yes ", ("rooms", "auto_create"), True),
        ("TELLER_ROOMS__AUTO_CREATE", "on", ("rooms", "auto_create"), True),
        ("TELLER_SFU__VIDEO_CODECS", "H264, VP8", ("sfu", "video_codecs"), ["H264", "VP8"]),
        ("TELLER_SFU__VIDEO_CODECS", "VP8", ("sfu", "video_codecs"), ["VP8"]),
        ("TELLER_SFU__VIDEO_CODECS", "VP8,,", ("sfu", "video_codecs"), ["VP8"]),
        ("TELLER_SFU__VIDEO_CODECS", '["H264"]', ("sfu", "video_codecs"), ["H264"]),
        ("TELLER_SFU__BIND_ADDRESSES", "", ("sfu", "bind_addresses"), []),
        ("TELLER_SERVER__CORS_ORIGINS", " [\"https://x\", \"https://y\"] ", ("server", "cors_origins"), ["https://x", "https://y"]),
        ("TELLER_STAGES__OPTIONS", '{"tap": {"n": 1}}', ("stages", "options"), {"tap": {"n": 1}}),
        # Names are case-insensitive after the prefix.
        ("TELLER_server__Port", "9001", ("server", "port"), 9001),
    ],
)
def test_env_overrides_with_type_conversion(name: str, raw: str, path: tuple[str, str], expected: object) -> None:
    config = load_config(env={name: raw})
    value = getattr(getattr(config, path[0]), path[1])
    assert value == expected
    assert type(value) is type(expected)


def test_env_nested_list_of_tables_as_json() -> None:
    raw = '[{"urls": ["stun:s.example:3478"]}, {"urls": ["turn:t.example:3478?transport=udp"], "username": "u", "credential": "p"}]'
    config = load_config(env={"TELLER_ICE__SERVERS": raw})
    assert config.ice.servers == [
        IceServer(urls=["stun:s.example:3478"]),
        IceServer(urls=["turn:t.example:3478?transport=udp"], username="u", credential="p"),
    ]
    assert all(isinstance(s, IceServer) for s in config.ice.servers)


@pytest.mark.parametrize(
    ("name", "raw", "key"),
    [
        ("TELLER_SERVER__PORT", "nine", "server.port"),
        ("TELLER_SERVER__PORT", "", "server.port"),
        ("TELLER_SERVER__PORT", "90.5", "server.port"),
        ("TELLER_ROOMS__EMPTY_TIMEOUT_S", "soon", "rooms.empty_timeout_s"),
        ("TELLER_AUTH__DEV_TOKENS", "maybe", "auth.dev_tokens"),
        ("TELLER_AUTH__DEV_TOKENS", "", "auth.dev_tokens"),
        ("TELLER_SFU__VIDEO_CODECS", "[VP8", "sfu.video_codecs"),
        ("TELLER_SFU__VIDEO_CODECS", "[1, 2]", "sfu.video_codecs[0]"),
        ("TELLER_SFU__VIDEO_CODECS", '{"a": 1}', "sfu.video_codecs"),
        ("TELLER_STAGES__OPTIONS", "tap", "stages.options"),
        ("TELLER_ICE__SERVERS", "stun:x", "ice.servers[0]"),
        ("TELLER_ICE__SERVERS", '[{"urls": "stun:x"}]', "ice.servers[0].urls"),
        ("TELLER_ICE__SERVERS", '[{"url": ["stun:x"]}]', "ice.servers[0]"),
    ],
)
def test_unparsable_env_values_raise_naming_the_key(name: str, raw: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={name: raw})
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("name", "names"),
    [
        ("TELLER_SERVER__PROT", ["prot", "server"]),
        ("TELLER_SERVERZ__PORT", ["serverz"]),
    ],
)
def test_unknown_env_keys_raise(name: str, names: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={name: "1"})
    for n in names:
        assert n in str(info.value)


def test_env_below_a_value_raises_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="TELLER_SERVER__PORT__X"):
        load_config(env={"TELLER_SERVER__PORT__X": "1"})


# -- ServerSettings.base_url -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "url"),
    [
        (ServerSettings(), "http://127.0.0.1:7880"),
        (ServerSettings(host="0.0.0.0", port=9000), "http://127.0.0.1:9000"),
        (ServerSettings(host="::", port=9000), "http://127.0.0.1:9000"),
        (ServerSettings(host="", port=9000), "http://127.0.0.1:9000"),
        (ServerSettings(host="teller.local", port=443, tls_cert="c.pem"), "https://teller.local:443"),
        (ServerSettings(host="::1", port=8080), "http://[::1]:8080"),
        (ServerSettings(host="0.0.0.0", public_url="https://teller.example.com/"), "https://teller.example.com"),
        (ServerSettings(public_url="https://x.example/base//"), "https://x.example/base"),
    ],
)
def test_base_url(settings: ServerSettings, url: str) -> None:
    assert settings.base_url() == url
