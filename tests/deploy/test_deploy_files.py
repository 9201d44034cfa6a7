"""What can be checked of deploy/ without Docker or a cluster: files parse, names line up, paths exist.

No container engine runs here, so nothing is built or started: the compose file is checked as YAML
against what it must contain, the Dockerfile with a small instruction parser, the Kubernetes manifests
against the Kubernetes OpenAPI schemas vendored in kubernetes-validate (KEDA's ScaledObjects, a CRD,
structurally), and every TICKETFLOW_* variable against the Settings fields it must set. Each worker's
environment and config file are parsed into `Settings` as the worker itself would, so the two pools
(git, llm) are checked by the capabilities the worker will really have.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from activities.settings import CAPABILITIES, Settings
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


def runs_image(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("ticketflow-worker:")


def workers() -> dict[str, dict[str, Any]]:
    """Every service that runs `ticketflow worker` (the image's default command), whatever its pool."""
    return {
        name: svc
        for name, svc in services().items()
        if runs_image(svc) and svc.get("command") in (None, ["worker"])
    }


def compose_settings(service: dict[str, Any]) -> Settings:
    """What the worker of this service runs with: its environment plus the example config file."""
    env = {name: interpolate(str(value)) for name, value in service["environment"].items()}
    return settings_from(env, (COMPOSE_DIR / "ticketflow.example.toml").read_text())


def git_workers() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in workers().items() if "git" in compose_settings(svc).capabilities}


def llm_workers() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in workers().items() if "llm" in compose_settings(svc).capabilities}


def interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` with NAME unset: the default (or empty)."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


# Read by activities/settings.py itself, not fields: where the config file and the state home are.
NOT_FIELDS = {"TICKETFLOW_CONFIG", "TICKETFLOW_HOME"}


def assert_settings_variable(name: str) -> None:
    """TICKETFLOW_X must set the Settings field x (a typo would be silently ignored at run time)."""
    if name.startswith("TICKETFLOW_") and name not in NOT_FIELDS:
        field = name.removeprefix("TICKETFLOW_").lower()
        assert field in Settings.model_fields, f"{name} sets no Settings field"


def settings_from(env: Mapping[str, str], config_toml: str) -> Settings:
    """`Settings()` as a worker with exactly this environment and config file builds it (pydantic-settings
    parses the values: JSON lists such as TICKETFLOW_CAPABILITIES included); ours are left out."""
    with tempfile.TemporaryDirectory() as home:
        config = Path(home) / "config.toml"
        config.write_text(config_toml)
        outer = {k: v for k, v in os.environ.items() if not k.startswith("TICKETFLOW_")}
        environment = {**outer, "TICKETFLOW_HOME": home, **env, "TICKETFLOW_CONFIG": str(config)}
        with mock.patch.dict(os.environ, environment, clear=True):
            return Settings()


def scaled_queue(settings: Settings) -> str:
    """The queue a single-capability pool is scaled on: the shared queue (workflows, prepare_workspace)
    for git workers, the LLM queue for llm workers; host queues are per worker and never scaled on."""
    (capability,) = settings.capabilities
    return settings.task_queue if capability == "git" else policy.llm_queue(settings.task_queue)


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
    assert len(git_workers()) >= 2
    assert len(llm_workers()) >= 1
    assert found["temporal"]["image"].startswith("temporalio/server:")  # not the deprecated auto-setup
    assert found["temporal-admin-tools"]["image"].startswith("temporalio/admin-tools:")
    assert found["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert found["temporal"]["environment"]["DB"] == "postgres12"
    assert found["temporal"]["depends_on"]["temporal-admin-tools"]["condition"] == (
        "service_completed_successfully"
    )


def test_every_worker_runs_the_image_with_valid_settings() -> None:
    for name, worker in workers().items():
        for variable in worker["environment"]:
            assert_settings_variable(variable)
        compose_settings(worker)  # parses: capabilities and every other value are valid Settings
        grace = int(worker["stop_grace_period"].removesuffix("s"))
        assert grace > policy.GRACEFUL_SHUTDOWN.total_seconds(), name
        assert worker["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (COMPOSE_DIR / worker["build"]["context"]).resolve() == ROOT
        assert "./ticketflow.toml:/etc/ticketflow/config.toml:ro" in worker["volumes"], name


def test_every_git_worker_keeps_its_own_name_and_state() -> None:
    host_ids, volumes = set(), set()
    for name, worker in git_workers().items():
        env = worker["environment"]
        assert compose_settings(worker).capabilities == ["git"], name
        assert env["TICKETFLOW_HOST_ID"] == worker["hostname"] == name
        host_ids.add(env["TICKETFLOW_HOST_ID"])
        state = [v for v in worker["volumes"] if v.endswith(":/var/lib/ticketflow")]
        assert len(state) == 1, name
        volumes.add(state[0].split(":")[0])
    assert len(host_ids) == len(volumes) == len(git_workers())
    assert volumes <= set(compose()["volumes"])


def test_llm_workers_need_no_name_or_state_so_they_scale() -> None:
    for name, worker in llm_workers().items():
        assert compose_settings(worker).capabilities == ["llm"], name
        # `docker compose up --scale llm-worker=N`: nothing that must differ per replica.
        assert not {"hostname", "container_name", "ports"} & worker.keys(), name
        assert "TICKETFLOW_HOST_ID" not in worker["environment"], name
        assert not [v for v in worker["volumes"] if v.endswith(":/var/lib/ticketflow")], name


def test_compose_serves_every_capability() -> None:
    served = {c for worker in workers().values() for c in compose_settings(worker).capabilities}
    assert served == set(CAPABILITIES)


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
        for group in job.get("static_configs", [])
        for target in group["targets"]
    }
    # Scaled services (the LLM workers) are found by name through Docker's DNS, every replica.
    targets |= {
        name
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    assert set(workers()) <= targets
    assert "temporal" in targets
    assert config["rule_files"] == ["alerts.yml"]
    assert "../prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in services()["prometheus"]["volumes"]
    yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())


def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("`promtool` is not installed (Debian package prometheus; .ci/run installs it)")
    # Laid out as the container sees it: alerts.yml next to prometheus.yml.
    shutil.copy(COMPOSE_DIR / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


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


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == kind]


def workloads() -> list[dict[str, Any]]:
    """The worker pools: the git StatefulSet and the LLM Deployment (not the webhook's Deployment)."""
    return [
        w for w in of_kind("StatefulSet") + of_kind("Deployment") if container_of(w).get("args") == ["worker"]
    ]


def pool(kind: str) -> dict[str, Any]:
    (workload,) = [w for w in workloads() if w["kind"] == kind]
    return workload


def container_of(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def kube_settings(workload: dict[str, Any]) -> Settings:
    """What the pod's worker runs with: its literal env values plus the ConfigMap's ticketflow.toml."""
    env = {e["name"]: e["value"] for e in container_of(workload)["env"] if "value" in e}
    (configmap,) = of_kind("ConfigMap")
    return settings_from(env, configmap["data"]["config.toml"])


def test_core_manifests_pass_the_kubernetes_schema() -> None:
    core = [d for d in manifests() if not d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in core} >= {"Namespace", "ConfigMap", "Service", "StatefulSet", "Deployment"}
    for doc in core:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_worker_statefulset_names_its_host_and_probes_health() -> None:
    statefulset = pool("StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    container = container_of(statefulset)
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
    (configmap,) = of_kind("ConfigMap")
    Settings(**tomllib.loads(configmap["data"]["config.toml"]))


def test_statefulset_is_the_git_pool() -> None:
    assert kube_settings(pool("StatefulSet")).capabilities == ["git"]


def test_llm_deployment_is_the_llm_pool_without_state() -> None:
    deployment, statefulset = pool("Deployment"), pool("StatefulSet")
    assert kube_settings(deployment).capabilities == ["llm"]
    container, git = container_of(deployment), container_of(statefulset)
    for name in (e["name"] for e in container["env"]):
        assert_settings_variable(name)
    # Same worker, same config: only its capabilities, slots and resources differ.
    assert (container["image"], container.get("args")) == (git["image"], git.get("args"))
    assert container["envFrom"] == git["envFrom"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == git[probe]["httpGet"], probe
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] > policy.GRACEFUL_SHUTDOWN.total_seconds()
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/ticketflow"}
    assert [v["configMap"]["name"] for v in pod["volumes"]] == ["ticketflow-config"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["resources"] != git["resources"]
    # Upgrades never leave the LLM queue without a poller.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # Neither pool's selector may claim the other's pods.
    for owner, other in ((deployment, statefulset), (statefulset, deployment)):
        selector = owner["spec"]["selector"]["matchLabels"].items()
        assert not selector <= other["spec"]["template"]["metadata"]["labels"].items()


def test_every_capability_is_served_by_a_workload() -> None:
    served = {c for workload in workloads() for c in kube_settings(workload).capabilities}
    assert served == set(CAPABILITIES)


def test_each_pool_is_scaled_on_its_own_queue_backlog() -> None:
    scaled_objects = of_kind("ScaledObject")
    assert len(scaled_objects) == len(workloads())
    by_target = {
        (s["spec"]["scaleTargetRef"]["kind"], s["spec"]["scaleTargetRef"]["name"]): s for s in scaled_objects
    }
    for workload in workloads():
        scaled = by_target[(workload["kind"], workload["metadata"]["name"])]
        settings = kube_settings(workload)
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        assert scaled["spec"]["scaleTargetRef"]["apiVersion"] == workload["apiVersion"]
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "temporal"
        assert trigger["metadata"]["taskQueue"] == scaled_queue(settings)
        assert trigger["metadata"]["endpoint"] == settings.temporal_address
        assert trigger["metadata"]["namespace"] == settings.namespace
        assert int(trigger["metadata"]["targetQueueSize"]) >= 1
        # At least one worker of each capability always runs: a ticket waits for the missing one.
        assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
        assert workload["spec"]["replicas"] == scaled["spec"]["minReplicaCount"]


def test_git_pool_scales_on_the_shared_queue_and_never_down() -> None:
    (scaled,) = [s for s in of_kind("ScaledObject") if s["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["taskQueue"] == policy.TASK_QUEUE
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["selectPolicy"] == "Disabled"


def test_llm_pool_scales_on_the_llm_queue() -> None:
    (scaled,) = [s for s in of_kind("ScaledObject") if s["spec"]["scaleTargetRef"]["kind"] == "Deployment"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["taskQueue"] == policy.llm_queue(policy.TASK_QUEUE)
    # Only activity tasks are sent there; the workflows run in the git pool.
    assert trigger["metadata"]["queueTypes"] == "activity"


# ----------------------------------------------------------------------------------------- webhook


def webhook_command(args: list[str]) -> tuple[str, int]:
    """(host, port) of a `ticketflow webhook --host H --port P` argv, as the CLI parses it."""
    from clients import cli

    parsed = cli.build_parser().parse_args(args)
    assert cli.resolve(parsed.handler).__name__ == "cmd_webhook"
    return parsed.host, parsed.port


def assert_webhook_settings(settings: Settings) -> None:
    from clients.webhook import issue_sources, parse_networks

    parse_networks(settings.webhook_trusted_proxies)  # valid addresses and networks
    assert issue_sources(settings)  # at least one github:, gitlab: or gitea: source to serve


def test_compose_runs_the_webhook_with_health_state_and_secret() -> None:
    (name,) = [
        n for n, svc in services().items() if runs_image(svc) and svc.get("command", [""])[0] == "webhook"
    ]
    webhook = services()[name]
    host, port = webhook_command(webhook["command"])
    assert host == "0.0.0.0" and f"{port}:{port}" in webhook["ports"]
    env = webhook["environment"]
    for variable in env:
        assert_settings_variable(variable)
    assert "TICKETFLOW_WEBHOOK_SECRET" in env
    settings = compose_settings(webhook)
    assert_webhook_settings(settings)
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(webhook["healthcheck"]["test"])
    state = [v for v in webhook["volumes"] if v.endswith(":/var/lib/ticketflow")]
    assert len(state) == 1 and state[0].split(":")[0] in compose()["volumes"]
    shared = {v.split(":")[0] for svc in workers().values() for v in svc["volumes"]}
    assert state[0].split(":")[0] not in shared  # its own deliveries.log, not a worker's disk


def test_kubernetes_webhook_is_served_probed_and_keeps_its_deliveries() -> None:
    (deployment,) = [d for d in of_kind("Deployment") if container_of(d)["args"][0] == "webhook"]
    container = container_of(deployment)
    host, port = webhook_command(container["args"])
    assert host == "0.0.0.0"
    (http,) = container["ports"]
    assert http["containerPort"] == port
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": http["name"]}
    for variable in (e["name"] for e in container["env"]):
        assert_settings_variable(variable)
    assert_webhook_settings(kube_settings(deployment))
    assert container["envFrom"] == container_of(pool("StatefulSet"))["envFrom"]  # the webhook secret
    # One writer of deliveries.log on its own volume: never two pods at once.
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    (state,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/var/lib/ticketflow"]
    assert claims[state["name"]] in {c["metadata"]["name"] for c in of_kind("PersistentVolumeClaim")}
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The Service reaches the webhook pod and no worker pod.
    (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "ticketflow-webhook"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == http["name"]
    for worker in workloads():
        assert (
            not service["spec"]["selector"].items()
            <= worker["spec"]["template"]["metadata"]["labels"].items()
        )
