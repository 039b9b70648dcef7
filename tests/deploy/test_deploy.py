"""deploy/: files parse and name only images, ports, paths, routes and settings that exist.

There is no container engine here, so these checks are by inspection: every environment name
is a Settings field (or an official DASHSCOPE_* name), every port matches the Dockerfile's
CMD, every mounted or copied file exists, and the alert rules pass ``promtool check rules``.
Exposure is checked the same way: only the gateway is published beyond loopback, the secrets
the shipped deployments need are required (compose's ``${VAR:?}``, a non-optional k8s
secretKeyRef), Prometheus sends the metrics token from a file, Grafana has no anonymous access.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from gateway.settings import Settings
from gateway.sim.config import SimConfig
from gateway.sim.exposure import CONTROL_TOKEN_ENV, exposure_problems

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GATEWAY_PORT = 8000


REQUIRED_COMPOSE_VARS = ("TALKGATE_ADMIN_KEY", "TALKGATE_METRICS_TOKEN", "GRAFANA_ADMIN_PASSWORD")
METRICS_SECRET = {"name": "talkgate-metrics", "key": "token"}


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _dockerfile(name: str) -> dict[str, Any]:
    text = (DEPLOY / name).read_text()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    cmd = next(json.loads(ln[4:]) for ln in reversed(lines) if ln.startswith("CMD "))
    copies = [ln.split()[1:-1] for ln in lines if ln.startswith("COPY ") and "--from" not in ln]
    expose = [int(p) for ln in lines if ln.startswith("EXPOSE ") for p in ln.split()[1:]]
    env = set(re.findall(r"\b((?:TALKGATE|DASHSCOPE)_[A-Z0-9_]+)=", text))
    return {"text": text, "cmd": cmd, "copies": copies, "expose": expose, "env": env}


def _setting_exists(env_name: str) -> bool:
    """TALKGATE_A__B -> Settings field a, sub-field b; DASHSCOPE_* -> the official SDK aliases."""
    if env_name.startswith("DASHSCOPE_"):
        return env_name.lower() in Settings.model_fields
    if not env_name.startswith("TALKGATE_"):
        return False
    model: Any = Settings
    for part in env_name[len("TALKGATE_") :].lower().split("__"):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        annotation = fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return True


def test_setting_name_checker() -> None:
    assert _setting_exists("TALKGATE_REDIS_URL") and _setting_exists("TALKGATE_LIPSYNC__DEVICE")
    assert _setting_exists("DASHSCOPE_API_KEY")
    assert not _setting_exists("TALKGATE_REDIS") and not _setting_exists("TALKGATE_LIPSYNC__GPU")
    assert not _setting_exists("DASHSCOPE_URL")


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles(name: str) -> None:
    d = _dockerfile(name)
    assert d["cmd"][:2] == ["talkgate", "serve"]
    port = int(d["cmd"][d["cmd"].index("--port") + 1])
    assert port == GATEWAY_PORT and d["expose"] == [GATEWAY_PORT]
    assert f"127.0.0.1:{GATEWAY_PORT}/healthz" in d["text"]
    for sources in d["copies"]:
        for src in sources:
            assert (ROOT / src).exists(), f"{name} copies {src}, which is not in the repository"
    assert d["env"] and all(_setting_exists(e) for e in d["env"]), d["env"]
    extras = re.findall(r"'\.\[([a-z,]+)\]'", d["text"])
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra in ",".join(extras).split(","):
        assert re.search(rf"^{extra} = \[", pyproject, re.M), f"extra [{extra}] is not in pyproject.toml"
    assert d["text"].startswith("# syntax=docker/dockerfile:1\n")
    assert "torch==2.13.0" in d["text"]
    if name.endswith(".cuda"):
        assert "TALKGATE_LIPSYNC__DEVICE=cuda" in d["text"]


def test_compose() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"gateway", "redis", "postgres", "prometheus", "grafana"} <= set(services)
    gw = services["gateway"]
    assert (ROOT / gw["build"]["dockerfile"]).is_file() and (
        DEPLOY / gw["build"]["context"]
    ).resolve() == ROOT
    assert gw["ports"] == [f"{GATEWAY_PORT}:{GATEWAY_PORT}"]
    for name in gw["environment"]:
        assert _setting_exists(name), name
    # /admin is refused without an admin key, so compose must not start the gateway without one;
    # likewise /metrics (tenant names, key ids) is never served without its token.
    assert gw["environment"]["TALKGATE_ADMIN_KEY"] == "${TALKGATE_ADMIN_KEY:?set TALKGATE_ADMIN_KEY}"
    assert (
        gw["environment"]["TALKGATE_METRICS_TOKEN"] == "${TALKGATE_METRICS_TOKEN:?set TALKGATE_METRICS_TOKEN}"
    )
    assert gw["environment"]["TALKGATE_REDIS_URL"].startswith("redis://redis:6379/")
    assert "@postgres:5432/" in gw["environment"]["TALKGATE_DATABASE_URL"]
    assert gw["environment"]["TALKGATE_DATABASE_URL"].startswith("postgresql+asyncpg://")
    # README promises `up -d redis postgres` gives the test suite its services on the default ports,
    # published on the host's loopback only (no auth on either: never on a public interface).
    assert services["redis"]["ports"] == ["127.0.0.1:6379:6379"]
    assert services["postgres"]["ports"] == ["127.0.0.1:5432:5432"]
    assert services["postgres"]["environment"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert "CREATE DATABASE test" in (DEPLOY / "postgres/init.sql").read_text()
    sim = services["sim"]
    assert sim["command"][:2] == ["talkgate", "sim"] and sim["image"] == gw["image"]
    for svc in services.values():
        assert re.fullmatch(r"[a-z0-9./_-]+:v?[0-9][\w.-]*", svc["image"]), svc["image"]  # pinned tags
        for volume in svc.get("volumes", ()):
            src = volume.split(":")[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), f"compose mounts {src}, which does not exist"
    prom_mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    assert prom_mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert prom_mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"


def test_prometheus_config_scrapes_the_gateway() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"gateway:{GATEWAY_PORT}"]
    for rule_file in config["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()


def test_prometheus_sends_the_metrics_token_from_the_compose_secret() -> None:
    """The gateway requires the token, so the scrape job must send it: read from a file that
    compose fills from the same TALKGATE_METRICS_TOKEN, never written in the repository."""
    (job,) = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())["scrape_configs"]
    auth = job["authorization"]
    assert auth.get("type", "Bearer") == "Bearer" and "credentials" not in auth
    assert "bearer_token" not in job and "basic_auth" not in job
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    (grant,) = compose["services"]["prometheus"]["secrets"]
    assert auth["credentials_file"] == f"/run/secrets/{grant['target']}"
    assert grant["mode"] == 0o444  # readable by the image's user (nobody) whatever compose's default
    assert compose["secrets"][grant["source"]] == {"environment": "TALKGATE_METRICS_TOKEN"}
    # the secret's variable is one compose refuses to start without
    assert "${TALKGATE_METRICS_TOKEN:?" in str(compose["services"]["gateway"]["environment"])


def _host_ip(port: Any) -> str | None:
    """The host address a compose port entry is published on; None means every interface."""
    if isinstance(port, dict):  # long syntax
        return port.get("host_ip")
    spec = str(port).split("/")[0]
    if spec.startswith("["):  # [::1]:8100:8100
        return spec[1 : spec.index("]")]
    parts = spec.split(":")
    return parts[0] if len(parts) == 3 else None


def test_port_parser() -> None:
    assert _host_ip("8000:8000") is None and _host_ip(8000) is None and _host_ip("9090") is None
    assert _host_ip("127.0.0.1:6379:6379") == "127.0.0.1" and _host_ip("[::1]:1:1/tcp") == "::1"
    assert _host_ip({"target": 80, "published": 80}) is None
    assert _host_ip({"target": 80, "host_ip": "127.0.0.1"}) == "127.0.0.1"


def test_compose_publishes_only_the_gateway() -> None:
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    public = {name for name, svc in services.items() for p in svc.get("ports", ()) if _host_ip(p) is None}
    assert public == {"gateway"}
    for name, svc in services.items():
        assert svc.get("network_mode") != "host", name
        for port in svc.get("ports", ()):
            assert _host_ip(port) in (None, "127.0.0.1"), (name, port)
    # Prometheus (no auth), Grafana (a login page) and the simulator (a test double) stay local
    for name in ("prometheus", "grafana", "sim", "redis", "postgres"):
        assert all(_host_ip(p) == "127.0.0.1" for p in services[name]["ports"]), name


_VAR = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (ValueError when unset/empty)."""

    def value(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"] or ""
        current = env.get(name)
        if op in (":?", "?") and (current is None or (op == ":?" and not current)):
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and (current is None or (op == ":-" and not current)):
            return arg
        return current or ""

    return _VAR.sub(value, text)


def test_compose_refuses_to_start_without_each_required_secret() -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    env = {name: f"value-of-{name.lower()}-0123456789" for name in REQUIRED_COMPOSE_VARS}
    compose = yaml.safe_load(_interpolate(text, env))
    gw_env = compose["services"]["gateway"]["environment"]
    assert gw_env["TALKGATE_ADMIN_KEY"] == env["TALKGATE_ADMIN_KEY"]
    assert gw_env["TALKGATE_METRICS_TOKEN"] == env["TALKGATE_METRICS_TOKEN"]
    grafana_env = compose["services"]["grafana"]["environment"]
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD"] == env["GRAFANA_ADMIN_PASSWORD"]
    for name in REQUIRED_COMPOSE_VARS:
        for missing in ({k: v for k, v in env.items() if k != name}, {**env, name: ""}):
            with pytest.raises(ValueError, match=f"{name} is missing a value: set {name}"):
                _interpolate(text, missing)
    # Only these are required: the simulator's settings must not block the default profile.
    required = {m["name"] for m in _VAR.finditer(text) if m["op"] in (":?", "?")}
    assert required == set(REQUIRED_COMPOSE_VARS)


def test_grafana_requires_a_login() -> None:
    grafana = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD}"


def test_compose_simulator_gets_what_a_non_loopback_bind_needs() -> None:
    """The sim binds 0.0.0.0 in its container, which it refuses without a key list and a control
    token; compose passes both through (and the sim exits with the reason if they are empty)."""
    sim = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["sim"]
    host = sim["command"][sim["command"].index("--host") + 1]
    assert exposure_problems(host, SimConfig(api_keys=[]), None)  # would be refused as is
    assert exposure_problems(host, SimConfig(api_keys=["sk-a"]), "t" * 32) == []
    assert sim["environment"] == {
        "TALKGATE_SIM_API_KEYS": "${TALKGATE_SIM_API_KEYS:-}",
        CONTROL_TOKEN_ENV: "${TALKGATE_SIM_CONTROL_TOKEN:-}",
    }
    assert sim["ports"] == ["127.0.0.1:8100:8100"]


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(
            "promtool not found: install the Debian package 'prometheus' (apt-get install -y prometheus)"
        )
    # `check config` also opens the scrape job's credentials file, which only exists inside the
    # Prometheus container (a compose secret): check a copy that points at a stand-in file.
    token_file = tmp_path / "talkgate_metrics_token"
    token_file.write_text("stand-in-token\n")
    shutil.copy(DEPLOY / "prometheus/alerts.yml", tmp_path / "alerts.yml")
    text = (DEPLOY / "prometheus/prometheus.yml").read_text()
    credentials = yaml.safe_load(text)["scrape_configs"][0]["authorization"]["credentials_file"]
    (tmp_path / "prometheus.yml").write_text(text.replace(credentials, str(token_file)))
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]):
        out = subprocess.run([promtool, *args], cwd=tmp_path, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "TalkgateBreakerOpen",
        "TalkgateHighErrorRatio",
        "TalkgateGpuMemoryHigh",
        "TalkgateQuotaNearlySpent",
    } <= names
    breaker = next(r for g in rules["groups"] for r in g["rules"] if r["alert"] == "TalkgateBreakerOpen")
    assert breaker["for"] == "1m" and "== 2" in breaker["expr"]


def test_grafana_provisioning() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    (ds,) = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert ds["url"] == "http://prometheus:9090" and ds["type"] == "prometheus"
    (provider,) = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/talkgate.yml").read_text())[
        "providers"
    ]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    dash = json.loads((DEPLOY / "grafana/dashboards/talkgate.json").read_text())
    titles = {p["title"] for p in dash["panels"]}
    for wanted in (
        "CPU (cores)",
        "Resident memory",
        "GPU memory per module",
        "Requests/s by route",
        "Cache hit ratio",
    ):
        assert wanted in titles
    assert {"Top keys by calls (last hour)", "Breaker state (0 closed, 1 half-open, 2 open)"} <= titles
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == ds["uid"] and panel["targets"]


def _k8s() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += _load_all(DEPLOY / "k8s" / name)
    assert {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} == {
        *kustomization["resources"],
        "kustomization.yaml",
    }
    return docs


def _routes() -> set[str]:
    """Paths the gateway serves (every route module's router, as create_app includes them)."""
    from gateway.routes import ROUTERS

    return {route.path for router in ROUTERS for route in router.routes}


def test_kubernetes_manifests() -> None:
    docs = _k8s()
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"]
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    images = {compose["services"]["gateway"]["image"], "talkgate-cuda:0.1.0"}
    assert "talkgate-cuda:0.1.0" in (DEPLOY / "Dockerfile.cuda").read_text()
    routes = _routes()
    configmaps, secrets = by_kind["ConfigMap"], by_kind["Secret"]
    for name in ("talkgate", "talkgate-render"):
        dep = by_kind["Deployment"][name]
        pod = dep["spec"]["template"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        (container,) = pod["spec"]["containers"]
        assert container["image"] in images
        assert container["args"][:2] == ["talkgate", "serve"]
        assert int(container["args"][container["args"].index("--port") + 1]) == GATEWAY_PORT
        assert container["ports"] == [{"name": "http", "containerPort": GATEWAY_PORT}]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {"/readyz", "/healthz", "/metrics"} <= routes
        for src in container["envFrom"]:
            ref = src.get("configMapRef") or src.get("secretRef")
            assert ref["name"] in (configmaps if "configMapRef" in src else secrets)
        for var in container.get("env", ()):
            assert _setting_exists(var["name"]), var["name"]
        for volume in pod["spec"]["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"]
        service = next(
            s for s in by_kind["Service"].values() if s["spec"]["selector"] == pod["metadata"]["labels"]
        )
        assert service["spec"]["ports"][0]["targetPort"] == "http"
    render = by_kind["Deployment"]["talkgate-render"]["spec"]["template"]["spec"]["containers"][0]
    assert render["resources"]["limits"]["nvidia.com/gpu"] == 1
    hpa = by_kind["HorizontalPodAutoscaler"]["talkgate"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "talkgate" and hpa["spec"]["minReplicas"] >= 2
    for cm in configmaps.values():
        for key in cm["data"]:
            assert key == "config.yaml" or _setting_exists(key), key
    for key in next(iter(secrets.values()))["stringData"]:
        assert _setting_exists(key), key


def _deployments() -> list[dict[str, Any]]:
    return [d for d in _k8s() if d["kind"] == "Deployment"]


def test_kubernetes_requires_the_metrics_token() -> None:
    """Every gateway pod reads TALKGATE_METRICS_TOKEN from a Secret that is not shipped (so no
    placeholder can be deployed): until the operator creates it, the pods do not start."""
    docs = _k8s()
    for dep in _deployments():
        pod = dep["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        env = {v["name"]: v for v in container["env"]}
        ref = env["TALKGATE_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {**METRICS_SECRET, "optional": False}, dep["metadata"]["name"]
        # annotation-based scraping cannot send a token: it would only produce 401s
        assert not any(k.startswith("prometheus.io/") for k in pod["metadata"].get("annotations", {}))
    for secret in (d for d in docs if d["kind"] == "Secret"):
        assert secret["metadata"]["name"] != METRICS_SECRET["name"]
        assert "TALKGATE_METRICS_TOKEN" not in secret.get("stringData", {})
    assert "kubectl create secret generic talkgate-metrics" in (DEPLOY / "k8s/secret.yaml").read_text()


def test_kubernetes_exposes_nothing_outside_the_cluster() -> None:
    docs = _k8s()
    assert not {d["kind"] for d in docs} & {"Ingress", "Gateway", "HTTPRoute"}
    for svc in (d for d in docs if d["kind"] == "Service"):
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]
        assert "externalIPs" not in svc["spec"]
    for dep in _deployments():
        spec = dep["spec"]["template"]["spec"]
        assert not spec.get("hostNetwork") and not spec.get("hostPID")
        for container in spec["containers"]:
            assert all("hostPort" not in p for p in container["ports"])


def test_kubernetes_podmonitor_scrapes_with_the_token() -> None:
    (monitor,) = _load_all(DEPLOY / "k8s/monitoring/podmonitor.yaml")
    assert monitor["kind"] == "PodMonitor" and monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["authorization"]["type"] == "Bearer"
    assert endpoint["authorization"]["credentials"] == METRICS_SECRET
    selector = monitor["spec"]["selector"]["matchLabels"]
    for dep in _deployments():
        pod = dep["spec"]["template"]
        assert selector.items() <= pod["metadata"]["labels"].items()
        assert endpoint["port"] in {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}


def test_kubernetes_config_file_is_a_valid_talkgate_config(tmp_path: Path) -> None:
    """The YAML shipped in the ConfigMap loads into Settings and keeps every capability's route."""
    cm = next(d for d in _k8s() if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {}))
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    settings = Settings(config=path)
    assert set(settings.routes) == {"chat", "asr", "tts", "embedding", "rerank"}
    assert settings.routes == Settings().routes  # the shipped file matches the built-in defaults
