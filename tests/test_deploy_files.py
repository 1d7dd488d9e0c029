"""deploy/: the Dockerfile, docker compose file, Caddyfile and Kubernetes manifests.

Each file is checked offline by a real validator (hadolint, the compose-spec JSON
schema vendored by check-jsonschema, `caddy validate`, kubernetes-validate's schemas),
then against Teller itself: every TELLER_* variable is a real config key, every
configuration loads with load_config, the commands are Teller's, and the ports, URLs,
Service names and grace periods agree with the configuration they run with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from teller.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCS = ROOT / "docs" / "deploy.md"

COMMANDS = {"serve", "signal", "node"}
K8S_VERSION = "1.30.0"
# What a person puts in deploy/.env; everything else has a default in the compose file.
COMPOSE_ENV = {"TELLER_AUTH__SECRET": "compose-test-secret-0123456789abcdef", "MINIO_ROOT_PASSWORD": "minio-test",
               "MINIO_KMS_SECRET_KEY": "teller-key:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
# Stand-ins for values Kubernetes fills in at run time.
POD_IP = "10.1.2.3"
SECRET_VALUE = "k8s-test-secret-0123456789abcdef"
TELLER_VAR = re.compile(r"\bTELLER_[A-Z][A-Z0-9_]*")


# -- helpers ------------------------------------------------------------------------------


def tool(name: str) -> str:
    """A validator's executable: from this environment's scripts folder, else PATH."""
    search = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])
    path = shutil.which(name, path=search)
    assert path, f"{name} is not installed: pip install -e '.[test]'"
    return path


def config_key(name: str) -> tuple[str, str] | None:
    """('section', 'key') when TELLER_SECTION__KEY names a field of Config, else None."""
    if not name.startswith("TELLER_") or "__" not in name:
        return None
    parts = name[len("TELLER_"):].lower().split("__")
    if len(parts) != 2:
        return None
    section, key = parts
    sections = {f.name: f for f in dataclasses.fields(Config)}
    if section not in sections:
        return None
    settings = getattr(Config(), section)
    if key not in {f.name for f in dataclasses.fields(settings)}:
        return None
    return section, key


_INTERPOLATION = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $$."""

    def replace(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise KeyError(f"{name}: {arg}")
        return value or ""

    return _INTERPOLATION.sub(replace, value)


def interpolated(data: Any, env: Mapping[str, str]) -> Any:
    if isinstance(data, str):
        return interpolate(data, env)
    if isinstance(data, list):
        return [interpolated(v, env) for v in data]
    if isinstance(data, dict):
        return {k: interpolated(v, env) for k, v in data.items()}
    return data


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def duration_s(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a compose duration: {text!r}"
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


def healthcheck_url(test: list[str] | str) -> str:
    text = test if isinstance(test, str) else " ".join(test)
    urls = re.findall(r"https?://[^\s'\"]+", text)
    assert len(urls) == 1, f"expected one URL in the healthcheck {test!r}"
    return urls[0]


def udp_range(spec: str) -> tuple[range, range]:
    """'40000-40099:40000-40099/udp' -> (host ports, container ports)."""
    m = re.fullmatch(r"(?:[\d.]+:)?(\d+)(?:-(\d+))?:(\d+)(?:-(\d+))?/udp", spec)
    assert m, f"not a published UDP port range: {spec!r}"
    h0, h1, c0, c1 = m.groups()
    return range(int(h0), int(h1 or h0) + 1), range(int(c0), int(c1 or c0) + 1)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "a continued line at the end of the Dockerfile"
    out = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_env(rest: str) -> dict[str, str]:
    pairs = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|\S*)", rest)
    return {k: v.strip('"') for k, v in pairs}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return interpolated(compose["services"], COMPOSE_ENV)


def is_teller(service: Mapping[str, Any]) -> bool:
    build = service.get("build") or {}
    return isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile"


@pytest.fixture(scope="module")
def teller_services(services: dict[str, Any]) -> dict[str, Any]:
    found = {name: s for name, s in services.items() if is_teller(s)}
    assert found, "no service builds deploy/Dockerfile"
    return found


def compose_config_file(service: Mapping[str, Any]) -> Path:
    """The host file mounted where the service's --config points."""
    command = service["command"]
    assert "--config" in command, f"{command!r} has no --config"
    target = command[command.index("--config") + 1]
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            path = (DEPLOY / source).resolve()
            assert path.is_file(), f"{source} (mounted at {target}) does not exist"
            return path
    raise AssertionError(f"nothing is mounted at {target}")


def compose_config(service: Mapping[str, Any]) -> Config:
    try:
        return load_config(compose_config_file(service), env=environment(service))
    except ConfigError as exc:
        raise AssertionError(f"the service's configuration does not load: {exc}") from exc


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def k8s(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def configmap_toml(tmp_path: Path) -> Path:
    config_map = k8s("ConfigMap", "teller-config")
    path = tmp_path / "cluster.toml"
    path.write_text(config_map["data"]["cluster.toml"])
    return path


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's variables as Kubernetes sets them: $(VAR) expanded, refs filled in."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
            continue
        ref = item["valueFrom"]
        if "fieldRef" in ref:
            assert ref["fieldRef"]["fieldPath"] in ("status.podIP", "status.hostIP"), ref
            env[item["name"]] = POD_IP
        elif "secretKeyRef" in ref:
            secret = k8s("Secret", ref["secretKeyRef"]["name"])
            assert ref["secretKeyRef"]["key"] in secret.get("stringData", secret.get("data", {})), ref
            env[item["name"]] = SECRET_VALUE
        else:
            raise AssertionError(f"unexpected valueFrom {ref}")
    return env


def only_container(workload: Mapping[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def k8s_config(workload: Mapping[str, Any], tmp_path: Path) -> Config:
    """load_config as the workload's container runs it: its --config file and env."""
    container = only_container(workload)
    args = container["args"]
    target = PurePosixPath(args[args.index("--config") + 1])
    pod = workload["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for name, mount in mounts.items():
        config_map = volumes[name].get("configMap")
        if config_map and PurePosixPath(mount["mountPath"]) == target.parent:
            assert config_map["name"] == "teller-config"
            assert target.name in k8s("ConfigMap", config_map["name"])["data"]
            break
    else:
        raise AssertionError(f"{target} is not mounted from the configmap")
    try:
        return load_config(configmap_toml(tmp_path), env=container_env(container))
    except ConfigError as exc:
        raise AssertionError(f"the {workload['kind']}'s configuration does not load: {exc}") from exc


def named_port(container: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in ports, f"no container port named {port}"
    return ports[port]


# -- the checkers themselves catch mistakes -------------------------------------------------


def test_config_key_lookup_rejects_unknown_names() -> None:
    assert config_key("TELLER_STATE__REDIS_URL") == ("state", "redis_url")
    assert config_key("TELLER_STATE__REDIS") is None
    assert config_key("TELLER_NOPE__PORT") is None
    assert config_key("TELLER_SERVER_PORT") is None
    with pytest.raises(ConfigError):
        load_config(env={"TELLER_CLUSTER__NODE_ADDRESS": "http://x:1"})


def test_compose_interpolation_helper() -> None:
    assert interpolate("${A:-x}/${B-y}/$${C}", {"B": ""}) == "x//${C}"
    with pytest.raises(KeyError):
        interpolate("${A:?needed}", {"A": ""})


def test_validators_reject_broken_files(tmp_path: Path) -> None:
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    validator = compose_validator()
    assert list(validator.iter_errors({"services": {"x": {"image": "a", "imagee": "b"}}}))
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python\nRUN cd /src && pip install .\n")
    assert subprocess.run([tool("hadolint"), "--no-color", str(dockerfile)], check=False, capture_output=True, timeout=120).returncode != 0


# -- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(DEPLOY / "Dockerfile")], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_the_project_and_runs_teller() -> None:
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile")
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert froms == ["python:3.11-slim"]
    entrypoints = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoints] == [["teller"]]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "teller" in pyproject["project"]["scripts"]
    # COPY sources exist relative to the build context (the repository root, as compose builds it).
    for keyword, rest in instructions:
        if keyword == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    assert any(keyword == "RUN" and re.search(r"pip install\b.*\s\.(\s|$)", rest) for keyword, rest in instructions)
    (cmd,) = [json.loads(rest) for keyword, rest in instructions if keyword == "CMD"]
    assert cmd[0] in COMMANDS
    env: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            env.update(dockerfile_env(rest))
    for name in env:
        if name.startswith("TELLER_"):
            assert config_key(name), f"{name} is not a config key"
    load_config(env={k: v for k, v in env.items() if k.startswith("TELLER_")})


# -- docker compose ---------------------------------------------------------------------------


def compose_validator() -> jsonschema.protocols.Validator:
    text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    errors = sorted(compose_validator().iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_compose_has_the_cluster_services(services: dict[str, Any], teller_services: dict[str, Any]) -> None:
    for name in ("redis", "minio", "signal-1", "signal-2", "node-1", "node-2", "proxy"):
        assert name in services, name
    assert set(teller_services) == {"signal-1", "signal-2", "node-1", "node-2"}
    assert services["proxy"]["image"].startswith("caddy:")
    assert services["minio"]["image"].split("/")[-1].startswith("minio:")
    for name, service in teller_services.items():
        assert service["build"]["context"] == "..", name
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


def test_compose_teller_variables_are_config_keys(compose: dict[str, Any], teller_services: dict[str, Any]) -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    names = set(TELLER_VAR.findall(text))
    assert "TELLER_AUTH__SECRET" in names
    unknown = sorted(n for n in names if not config_key(n))
    assert not unknown, f"not config keys: {unknown}"
    for service in teller_services.values():
        compose_config(service)  # raises on unknown keys and wrong types


def test_compose_commands_are_tellers(teller_services: dict[str, Any]) -> None:
    for name, service in teller_services.items():
        command = service["command"]
        assert command[0] in COMMANDS, (name, command)
        assert command[0] == name.split("-")[0], (name, command)
        compose_config_file(service)


def test_compose_secret_comes_from_the_environment(compose: dict[str, Any], teller_services: dict[str, Any]) -> None:
    raw = compose["services"]
    for name, service in teller_services.items():
        value = environment(raw[name]).get("TELLER_AUTH__SECRET", "")
        assert re.fullmatch(r"\$\{TELLER_AUTH__SECRET:\?[^}]+\}", value), f"{name}: secret must be required from the env"
        assert compose_config(service).auth.secret == COMPOSE_ENV["TELLER_AUTH__SECRET"]
    with pytest.raises(KeyError):
        interpolated(compose["services"], {"MINIO_ROOT_PASSWORD": "x"})
    assert re.fullmatch(r"\$\{MINIO_ROOT_PASSWORD:\?[^}]+\}", environment(raw["minio"])["MINIO_ROOT_PASSWORD"])
    assert re.fullmatch(r"\$\{MINIO_KMS_SECRET_KEY:\?[^}]+\}", environment(raw["minio"])["MINIO_KMS_SECRET_KEY"])


def test_compose_teller_processes_store_recordings_in_minio(teller_services: dict[str, Any]) -> None:
    """Every process reaches MinIO with its credentials and keeps its data on a volume
    (a node's spool must survive a restart: it is uploaded then)."""
    for name, service in teller_services.items():
        config = compose_config(service)
        assert (config.objects.backend, config.objects.endpoint, config.objects.sse) == ("s3", "minio:9000", "s3")
        assert config.objects.secret_key == COMPOSE_ENV["MINIO_ROOT_PASSWORD"], name
        assert any(v.endswith(":/var/lib/teller") for v in service["volumes"]), name
        assert config.storage.data_dir == "/var/lib/teller"


def test_compose_teller_processes_share_redis(services: dict[str, Any], teller_services: dict[str, Any]) -> None:
    for name, service in teller_services.items():
        config = compose_config(service)
        assert config.state.backend == "redis", name
        url = urlsplit(config.state.redis_url)
        assert url.hostname in services, f"{name}: {config.state.redis_url} names no compose service"
        assert services[url.hostname]["image"].startswith("redis:")
        assert (url.port or 6379) == 6379
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert config.auth.dev_tokens is False, name


def test_compose_healthchecks_use_the_configured_port(teller_services: dict[str, Any]) -> None:
    for name, service in teller_services.items():
        config = compose_config(service)
        url = urlsplit(healthcheck_url(service["healthcheck"]["test"]))
        assert url.path == "/healthz", name
        assert url.hostname in ("127.0.0.1", "localhost"), name
        assert url.port == config.server.port, f"{name}: healthcheck port {url.port}, server.port {config.server.port}"
        assert config.server.host == "0.0.0.0", name


def test_compose_nodes_have_their_own_url_and_udp_range(services: dict[str, Any], teller_services: dict[str, Any]) -> None:
    nodes = {name: s for name, s in teller_services.items() if s["command"][0] == "node"}
    assert set(nodes) == {"node-1", "node-2"}
    ranges: dict[str, range] = {}
    urls = set()
    for name, service in nodes.items():
        config = compose_config(service)
        url = urlsplit(config.cluster.node_url)
        assert url.scheme == "http" and url.hostname == name, config.cluster.node_url
        assert url.port == config.server.port, f"{name}: node_url port {url.port}, server.port {config.server.port}"
        urls.add(config.cluster.node_url)
        assert 0 < config.sfu.udp_port_min <= config.sfu.udp_port_max
        wanted = range(config.sfu.udp_port_min, config.sfu.udp_port_max + 1)
        published = [udp_range(p) for p in service.get("ports", []) if str(p).endswith("/udp")]
        assert published, f"{name} publishes no UDP ports"
        assert [(h, c) for h, c in published] == [(wanted, wanted)], f"{name}: {service['ports']} vs {wanted}"
        ranges[name] = wanted
        assert config.sfu.announced_address, f"{name}: no announced address"
        grace = duration_s(service["stop_grace_period"])
        assert grace > config.cluster.drain_timeout_s, f"{name}: stop_grace_period {grace} s <= drain timeout"
    assert len(urls) == len(nodes)
    first, second = ranges.values()
    assert not set(first) & set(second), "the nodes' UDP ranges overlap"
    for service in services.values():
        for port in service.get("ports", []):
            assert "7881" not in str(port).split(":")[0], "a node's internal port is published"


def test_compose_dependency_and_mount_targets_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert "healthcheck" in services[dependency], f"{name} waits for {dependency}, which has no healthcheck"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"


# -- Caddyfile --------------------------------------------------------------------------------


def caddy_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PUBLIC_HOST"}
    env.update(HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    env.update(extra)
    return env


def caddy_json(tmp_path: Path, **extra: str) -> dict[str, Any]:
    result = subprocess.run(
        [tool("caddy"), "adapt", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
        check=False, capture_output=True, text=True, timeout=120, env=caddy_env(tmp_path, **extra),
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def walk(node: Any) -> Iterator[Any]:
    """Every value in a JSON document, depth first."""
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from walk(child)


def reverse_proxies(node: Any) -> list[dict[str, Any]]:
    return [n for n in walk(node) if isinstance(n, dict) and n.get("handler") == "reverse_proxy"]


def test_caddyfile_is_valid(tmp_path: Path) -> None:
    result = subprocess.run(
        [tool("caddy"), "validate", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
        check=False, capture_output=True, text=True, timeout=120, env=caddy_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    formatted = subprocess.run(
        [tool("caddy"), "fmt", str(DEPLOY / "Caddyfile")], check=False, capture_output=True, text=True, timeout=120
    )
    assert formatted.stdout == (DEPLOY / "Caddyfile").read_text(), "run `caddy fmt --overwrite deploy/Caddyfile`"


def test_caddy_balances_across_the_signal_services(
    tmp_path: Path, services: dict[str, Any], teller_services: dict[str, Any]
) -> None:
    signals = {name: s for name, s in teller_services.items() if s["command"][0] == "signal"}
    proxies = reverse_proxies(caddy_json(tmp_path))
    assert proxies
    for proxy in proxies:
        dialed = set()
        for upstream in proxy["upstreams"]:
            host, _, port = upstream["dial"].rpartition(":")
            assert host in services, f"Caddy dials {host}, which is no compose service"
            assert host in signals, f"Caddy sends traffic to {host}, which is not a signalling process"
            assert int(port) == compose_config(signals[host]).server.port, upstream["dial"]
            dialed.add(host)
        assert dialed == set(signals), f"a route balances over {sorted(dialed)} only"
    proxy = services["proxy"]
    assert any(v.split(":")[:2] == ["./Caddyfile", "/etc/caddy/Caddyfile"] for v in proxy["volumes"])
    assert {"443:443", "80:80"} <= {str(p) for p in proxy["ports"]}


def test_caddy_routes_the_websocket(tmp_path: Path) -> None:
    config = caddy_json(tmp_path)
    routes = [n for n in walk(config) if isinstance(n, dict) and "match" in n and "handle" in n]
    websocket = [
        r for r in routes
        if any("/v1/rtc" in m.get("path", []) for m in r["match"])
    ]
    assert len(websocket) == 1, "no route for the /v1/rtc WebSocket upgrade"
    assert reverse_proxies(websocket[0]["handle"])


def test_caddy_site_name_comes_from_the_compose_environment(tmp_path: Path, services: dict[str, Any]) -> None:
    text = (DEPLOY / "Caddyfile").read_text()
    variables = set(re.findall(r"\{\$([A-Za-z_][A-Za-z0-9_]*)", text))
    assert variables and variables <= set(environment(services["proxy"]))
    hosts = [n["host"] for n in walk(caddy_json(tmp_path, PUBLIC_HOST="teller.test")) if isinstance(n, dict) and "host" in n]
    assert ["teller.test"] in hosts
    assert services["signal-1"]["environment"]["TELLER_SERVER__PUBLIC_URL"] == "https://localhost"


# -- Kubernetes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_k8s_manifest_matches_the_kubernetes_schema(path: str) -> None:
    docs = [d for d in yaml.safe_load_all((K8S / path).read_text()) if d]
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            raise AssertionError(f"{path}: {doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}") from exc


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert listed[0] == "namespace.yaml"
    namespace = k8s("Namespace", kustomization["namespace"])
    for path, doc in k8s_documents():
        if doc is not namespace and doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace["metadata"]["name"], f"{path.name}: {doc['kind']}"


def test_k8s_has_the_cluster_workloads() -> None:
    assert k8s("Deployment", "signal")["spec"]["replicas"] == 2
    k8s("Service", "signal")
    k8s("DaemonSet", "node")
    k8s("Service", "redis")
    assert k8s("StatefulSet", "minio")["spec"]["template"]["spec"]["containers"][0]["image"].split("/")[-1].startswith("minio:")
    k8s("Service", "minio")
    k8s("Ingress", "signal")
    assert any(d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == "redis" for _, d in k8s_documents())


def test_k8s_configmap_loads_as_a_cluster_config(tmp_path: Path) -> None:
    try:
        config = load_config(configmap_toml(tmp_path), env={})
    except ConfigError as exc:
        raise AssertionError(f"configmap cluster.toml: {exc}") from exc
    assert config.state.backend == "redis"
    assert config.auth.dev_tokens is False
    assert config.auth.secret == "", "the secret belongs in the Secret, not the configmap"
    assert 0 < config.sfu.udp_port_min <= config.sfu.udp_port_max
    url = urlsplit(config.state.redis_url)
    service = k8s("Service", url.hostname.split(".")[0])
    assert (url.port or 6379) in [p["port"] for p in service["spec"]["ports"]]


def test_k8s_teller_variables_are_config_keys(tmp_path: Path) -> None:
    names: set[str] = set()
    for path in K8S.glob("*.yaml"):
        names |= set(TELLER_VAR.findall(path.read_text()))
    unknown = sorted(n for n in names if not config_key(n))
    assert not unknown, f"not config keys: {unknown}"
    for path, doc in k8s_documents():
        if doc["kind"] == "Secret":
            for key in doc.get("stringData", {}):
                if key.startswith("TELLER_"):
                    assert config_key(key), f"{path.name}: {key}"
    for workload in (k8s("Deployment", "signal"), k8s("DaemonSet", "node")):
        config = k8s_config(workload, tmp_path)
        assert config.auth.secret == SECRET_VALUE


def test_k8s_commands_are_tellers() -> None:
    for workload, command in ((k8s("Deployment", "signal"), "signal"), (k8s("DaemonSet", "node"), "node")):
        container = only_container(workload)
        assert "command" not in container, "keep the image's ENTRYPOINT (teller)"
        assert container["args"][0] in COMMANDS
        assert container["args"][0] == command


def test_k8s_signal_ports_probes_and_ingress(tmp_path: Path) -> None:
    deployment = k8s("Deployment", "signal")
    container = only_container(deployment)
    config = k8s_config(deployment, tmp_path)
    for probe, path in (("readinessProbe", "/healthz"), ("livenessProbe", "/livez")):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert named_port(container, get["port"]) == config.server.port, probe
    service = k8s("Service", "signal")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    for port in service["spec"]["ports"]:
        assert named_port(container, port["targetPort"]) == config.server.port
    ingress = k8s("Ingress", "signal")
    rules = ingress["spec"]["rules"]
    tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    for rule in rules:
        assert rule["host"] in tls_hosts, f"{rule['host']} is served without TLS"
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "signal"
            ports = service["spec"]["ports"]
            assert any(p.get("name") == backend["port"].get("name") or p["port"] == backend["port"].get("number") for p in ports)
    assert urlsplit(config.server.public_url).hostname in {r["host"] for r in rules}
    assert urlsplit(config.server.public_url).scheme == "https"


def test_k8s_nodes_use_the_host_network_and_drain_in_time(tmp_path: Path) -> None:
    daemonset = k8s("DaemonSet", "node")
    pod = daemonset["spec"]["template"]["spec"]
    container = only_container(daemonset)
    config = k8s_config(daemonset, tmp_path)
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["terminationGracePeriodSeconds"] > config.cluster.drain_timeout_s
    get = container["readinessProbe"]["httpGet"]
    assert get["path"] == "/healthz"
    assert named_port(container, get["port"]) == config.server.port
    live = container["livenessProbe"]["httpGet"]
    assert live["path"] == "/livez"  # never /healthz: a Redis outage must not restart a node
    assert named_port(container, live["port"]) == config.server.port
    env = {e["name"]: e for e in container["env"]}
    assert "$(POD_IP)" in env["TELLER_CLUSTER__NODE_URL"]["value"]
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    url = urlsplit(config.cluster.node_url)
    assert url.hostname == POD_IP and url.port == config.server.port
    assert config.server.port != k8s_config(k8s("Deployment", "signal"), tmp_path).server.port


# -- the Teller CLI ---------------------------------------------------------------------------


def used_commands() -> set[str]:
    commands = set()
    for service in yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"].values():
        if is_teller(service):
            commands.add(service["command"][0])
    for workload in (k8s("Deployment", "signal"), k8s("DaemonSet", "node")):
        commands.add(only_container(workload)["args"][0])
    for keyword, rest in dockerfile_instructions(DEPLOY / "Dockerfile"):
        if keyword == "CMD":
            commands.add(json.loads(rest)[0])
    return commands


def test_the_commands_used_exist_in_the_teller_cli() -> None:
    commands = used_commands()
    assert commands <= COMMANDS
    assert {"signal", "node", "serve"} <= commands
    for command in sorted(commands):
        result = subprocess.run(
            [sys.executable, "-m", "teller", command, "--help"], check=False, capture_output=True, text=True, timeout=120, cwd=ROOT
        )
        assert result.returncode == 0, f"teller {command}: {result.stderr}"
        assert "--config" in result.stdout, f"teller {command} takes no --config"
    result = subprocess.run([sys.executable, "-m", "teller", "node", "--help"], check=False, capture_output=True, text=True, timeout=120)
    assert "--drain" in result.stdout


# -- docs ---------------------------------------------------------------------------------------


def test_deploy_doc_names_only_real_config_variables() -> None:
    text = DOCS.read_text()
    names = set(TELLER_VAR.findall(text))
    assert names, "docs/deploy.md shows no TELLER_* variable"
    unknown = sorted(n for n in names if not config_key(n))
    assert not unknown, f"not config keys: {unknown}"
    # `teller <command>`, not `kubectl -n teller create`.
    for command in re.findall(r"(?<!-n )(?<![\w/.-])teller (\w+)", text):
        assert command in COMMANDS | {"token", "client", "cluster"}, command
