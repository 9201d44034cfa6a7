"""What can be checked of deploy/ without Docker or a cluster: files parse, names line up, paths exist.

No container engine runs here, so nothing is built or started: the compose file is checked as YAML
against what it must contain, the Dockerfile with a small instruction parser, the Kubernetes manifests
against the Kubernetes OpenAPI schemas vendored in kubernetes-validate (KEDA's ScaledObject, a CRD,
structurally), and every TICKETFLOW_* variable against the Settings fields it must set.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from activities.settings import Settings
from workflows import policy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
KUBE_DIR = DEPLOY / "kubernetes"


def compose() -> dict[str, Any]:
    data = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def workers() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services().items() if name.startswith("worker-")}


# Read by activities/settings.py itself, not fields: where the config file and the state home are.
NOT_FIELDS = {"TICKETFLOW_CONFIG", "TICKETFLOW_HOME"}


def assert_settings_variable(name: str) -> None:
    """TICKETFLOW_X must set the Settings field x (a typo would be silently ignored at run time)."""
    if name.startswith("TICKETFLOW_") and name not in NOT_FIELDS:
        field = name.removeprefix("TICKETFLOW_").lower()
        assert field in Settings.model_fields, f"{name} sets no Settings field"


# ----------------------------------------------------------------------------------------- compose


def test_compose_has_the_production_services() -> None:
    found = services()
    expected = {
        "postgresql",
        "temporal-admin-tools",
        "temporal",
        "temporal-create-namespace",
        "temporal-ui",
        "prometheus",
        "grafana",
    }
    assert expected <= found.keys()
    assert len(workers()) >= 2
    assert found["temporal"]["image"].startswith("temporalio/server:")  # not the deprecated auto-setup
    assert found["temporal-admin-tools"]["image"].startswith("temporalio/admin-tools:")
    assert found["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert found["temporal"]["environment"]["DB"] == "postgres12"
    assert found["temporal"]["depends_on"]["temporal-admin-tools"]["condition"] == (
        "service_completed_successfully"
    )


def test_every_worker_keeps_its_own_name_and_state() -> None:
    host_ids, volumes = set(), set()
    for name, worker in workers().items():
        env = worker["environment"]
        assert env["TICKETFLOW_HOST_ID"] == worker["hostname"] == name
        host_ids.add(env["TICKETFLOW_HOST_ID"])
        state = [v for v in worker["volumes"] if v.endswith(":/var/lib/ticketflow")]
        assert len(state) == 1, name
        volumes.add(state[0].split(":")[0])
        for variable in env:
            assert_settings_variable(variable)
        grace = int(worker["stop_grace_period"].removesuffix("s"))
        assert grace > policy.GRACEFUL_SHUTDOWN.total_seconds()
        assert worker["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (COMPOSE_DIR / worker["build"]["context"]).resolve() == ROOT
    assert len(host_ids) == len(volumes) == len(workers())
    assert volumes <= set(compose()["volumes"])


def test_compose_mounts_exist() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                assert source in compose()["volumes"], f"{name}: undeclared volume {source}"
                continue
            path = COMPOSE_DIR / source
            if path.name == "ticketflow.toml":  # the user's copy of ticketflow.example.toml
                path = path.with_name("ticketflow.example.toml")
            assert path.exists(), f"{name} mounts {source}, which does not exist"


def test_prometheus_scrapes_every_worker_and_uses_the_shared_alerts() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    targets = {
        target.split(":")[0]
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert set(workers()) <= targets
    assert "temporal" in targets
    assert config["rule_files"] == ["alerts.yml"]
    assert "../prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in services()["prometheus"]["volumes"]
    yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())


def test_grafana_datasource_matches_the_dashboards() -> None:
    ours = yaml.safe_load((COMPOSE_DIR / "grafana-datasource.yml").read_text())["datasources"][0]
    theirs = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ours["uid"] == theirs["datasources"][0]["uid"]
    assert ours["url"] == "http://prometheus:9090"


def test_setup_scripts_are_executable_shell() -> None:
    for script in (COMPOSE_DIR / "scripts").glob("*.sh"):
        assert script.stat().st_mode & 0o111, script
        subprocess.run(["sh", "-n", str(script)], check=True)


@pytest.mark.parametrize("path", [COMPOSE_DIR / "ticketflow.example.toml"], ids=["example-config"])
def test_example_config_is_valid(path: Path) -> None:
    Settings(**tomllib.loads(path.read_text()))


# -------------------------------------------------------------------------------------- Dockerfile

INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    parsed = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            parsed.append((word, rest.strip()))
    return parsed


def test_dockerfile_parses_and_runs_the_worker_as_non_root() -> None:
    steps = dockerfile()
    assert all(word in INSTRUCTIONS for word, _ in steps), [w for w, _ in steps if w not in INSTRUCTIONS]
    assert steps[0][0] == "FROM"
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_user = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    assert not [w for w, _ in steps[last_user:] if w == "RUN"], "installs after USER would run unprivileged"
    entrypoint = [json.loads(args) for word, args in steps if word == "ENTRYPOINT"][-1]
    cmd = [json.loads(args) for word, args in steps if word == "CMD"][-1]
    assert entrypoint[-1] == "ticketflow" and cmd == ["worker"]
    for word, args in steps:
        if word == "ENV":
            for variable in re.findall(r"(\w+)=", args):
                assert_settings_variable(variable)


def test_dockerfile_copies_every_installed_package() -> None:
    copied = {src for word, args in dockerfile() if word == "COPY" for src in args.split()[:-1]}
    for source in copied:
        assert (ROOT / source).exists(), source
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]
    assert set(packages["wheel"]["packages"]) <= copied
    assert {"pyproject.toml", "README.md"} <= copied


# -------------------------------------------------------------------------------------- Kubernetes


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    kustomization = yaml.safe_load((KUBE_DIR / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((KUBE_DIR / name).read_text()) if d]
    return docs


def test_core_manifests_pass_the_kubernetes_schema() -> None:
    core = [d for d in manifests() if not d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in core} >= {"Namespace", "ConfigMap", "Service", "StatefulSet"}
    for doc in core:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_worker_statefulset_names_its_host_and_probes_health() -> None:
    (statefulset,) = [d for d in manifests() if d["kind"] == "StatefulSet"]
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["TICKETFLOW_HOST_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for name in env:
        assert_settings_variable(name)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] > policy.GRACEFUL_SHUTDOWN.total_seconds()
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/ticketflow", "/etc/ticketflow"} <= mounts
    (configmap,) = [d for d in manifests() if d["kind"] == "ConfigMap"]
    Settings(**tomllib.loads(configmap["data"]["config.toml"]))


def test_scaledobject_scales_the_workers_on_the_shared_queue_backlog() -> None:
    (scaled,) = [d for d in manifests() if d["kind"] == "ScaledObject"]
    (statefulset,) = [d for d in manifests() if d["kind"] == "StatefulSet"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", statefulset["metadata"]["name"])
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "temporal"
    assert trigger["metadata"]["taskQueue"] == policy.TASK_QUEUE
    assert int(trigger["metadata"]["targetQueueSize"]) >= 1
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["selectPolicy"] == "Disabled"
