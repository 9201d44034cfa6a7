"""The bubblewrap sandbox: an agent that goes looking for keys, tokens or other files finds nothing.

Each probe also runs once without the sandbox, to show the same script really would find them there.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.agents import sandbox
from activities.agents.command import CommandAgent
from activities.proc import run_process
from activities.settings import AgentConfig, SandboxMode, Settings
from tests.agents.conftest import Harness

pytestmark = pytest.mark.asyncio(loop_scope="session")
PROBLEM = sandbox.bwrap_problem()
needs_bwrap = pytest.mark.skipif(PROBLEM is not None, reason=f"bubblewrap unusable here: {PROBLEM}")

SNOOP = """
import json, os, pathlib, sys
targets = json.loads(sys.argv[1])
found = {}
try:
    found["ssh_key"] = pathlib.Path(targets["key"]).read_text()
except OSError as exc:
    found["ssh_key"] = None
found["tokens"] = [os.environ.get(k, "") for k in ("GITHUB_TOKEN", "TICKETFLOW_GITHUB_TOKEN")]
for name, path in (("outside", targets["outside"]), ("repo", targets["repo"])):
    try:
        pathlib.Path(path).write_text("escaped")
        found[name] = True
    except OSError:
        found[name] = False
pathlib.Path("inside.txt").write_text("fine")
print("REPORT " + json.dumps(found), flush=True)
"""


@pytest.fixture
def degraded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reasons recorded as ticketflow_sandbox_degraded, in order."""
    reasons: list[str] = []
    monkeypatch.setattr(sandbox, "record_sandbox_degraded", reasons.append)
    return reasons


@pytest.fixture
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The worker's user: a home with an SSH key, and git host tokens in its environment."""
    home = tmp_path / "user-home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY----- secret")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_worker_token_123456")
    monkeypatch.setenv("TICKETFLOW_GITHUB_TOKEN", "ghp_worker_token_123456")
    yield home


async def snoop(harness: Harness, user_home: Path, mode: SandboxMode, tmp_path: Path) -> dict[str, object]:
    settings = Settings(state_dir=harness.root / "state")
    targets = {
        "key": str(user_home / ".ssh" / "id_rsa"),
        "outside": str(tmp_path / "outside.txt"),
        "repo": str(Path(__file__).resolve().parent / f"escaped-{mode}.txt"),
    }
    config = AgentConfig(command=[sys.executable, "-c", SNOOP, json.dumps(targets)], sandbox=mode)
    plan = sandbox.agent_plan(
        settings, config.sandbox_mode, True, harness.worktree, [harness.root / "runs"], (60, 0, 64)
    )
    run = harness.agent_run()
    run.wrap = lambda argv: sandbox.wrap(argv, plan)
    result = await CommandAgent("snoop", config).run(run)
    report = next(line for line in result.output_tail if line.startswith("REPORT "))
    Path(targets["repo"]).unlink(missing_ok=True)
    return dict(json.loads(report.removeprefix("REPORT ")))


@needs_bwrap
async def test_sandboxed_agent_finds_no_keys_tokens_or_writable_files(
    harness: Harness, user_home: Path, tmp_path: Path
) -> None:
    found = await snoop(harness, user_home, "required", tmp_path)

    assert found["ssh_key"] is None and found["tokens"] == ["", ""]
    assert found["repo"] is False, "the system (and this checkout) is read-only"
    # /tmp is private: the write lands in the sandbox's own tmpfs and vanishes with it.
    assert not (tmp_path / "outside.txt").exists()
    assert (harness.worktree / "inside.txt").read_text() == "fine", "the worktree stays writable"


async def test_without_the_sandbox_the_same_script_sees_the_key(
    harness: Harness, user_home: Path, tmp_path: Path
) -> None:
    found = await snoop(harness, user_home, "off", tmp_path)
    # The environment allowlist holds even unsandboxed; the filesystem does not.
    assert found["tokens"] == ["", ""]
    assert found["ssh_key"] and found["outside"] is True


@needs_bwrap
async def test_checks_run_offline_and_rlimits_apply(harness: Harness, tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')"
    settings = Settings(state_dir=harness.root / "state")
    offline = sandbox.wrap([sys.executable, "-c", connect], sandbox.checks_plan(settings, harness.worktree))
    result = await run_process(offline, cwd=harness.worktree, env={"PATH": "/usr/bin:/bin"}, timeout=20)
    listener.close()
    assert result.exit_code != 0 and "CONNECTED" not in result.tail

    big = "open('big.bin', 'wb').write(b'x' * 3 * 1024 * 1024); print('WROTE')"
    plan = sandbox.agent_plan(settings, "required", False, harness.worktree, [], (60, 0, 1))
    capped = await run_process(
        sandbox.wrap([sys.executable, "-c", big], plan), cwd=harness.worktree, env={}, timeout=20
    )
    assert capped.exit_code != 0 and "WROTE" not in capped.tail


async def test_missing_bwrap_fails_when_required_and_warns_once_otherwise(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    degraded: list[str],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    sandbox.clear_probes()
    plan = sandbox.SandboxPlan(mode="required", writable=(tmp_path,), network=False)
    try:
        with pytest.raises(ApplicationError) as caught:
            sandbox.wrap(["true"], plan)
        assert caught.value.type == "SandboxUnavailable" and caught.value.non_retryable
        assert "bwrap is not installed" in caught.value.message
        assert degraded == [], "a refusal is not a degraded run"

        with caplog.at_level(logging.WARNING, logger="ticketflow.sandbox"):
            auto = sandbox.SandboxPlan(mode="auto", writable=(tmp_path,), network=False)
            assert sandbox.wrap(["true"], auto)[-1] == "true"
            sandbox.wrap(["true"], auto)
        assert len([r for r in caplog.records if "SANDBOX OFF" in r.getMessage()]) == 1
        assert degraded == ["bwrap", "bwrap"], "the warning is logged once, every degraded run is counted"
    finally:
        sandbox.clear_probes()


async def test_git_host_tokens_cannot_be_passed_to_agents() -> None:
    for name in ("GITHUB_TOKEN", "TICKETFLOW_GITHUB_TOKEN", "GH_TOKEN", "GITLAB_TOKEN"):
        with pytest.raises(ValueError, match="never reach agents"):
            AgentConfig(kind="claude", pass_env=[name])
    assert AgentConfig(kind="claude", pass_env=["ANTHROPIC_API_KEY"]).sandbox_mode == "auto"


# ------------------------------------------------------------------------------ defaults and config


@pytest.mark.parametrize("kind", ["command", "ollama", "claude", "codex", "aider", "gemini"])
async def test_every_agent_kind_is_sandboxed_by_default(kind: str) -> None:
    config = AgentConfig.model_validate({"kind": kind, "command": ["true"]})
    assert config.sandbox_mode == "auto" and config.network
    assert config.loopback_ports == [] and config.max_processes == 512 and config.tmp_size_mb == 512
    assert Settings().checks_sandbox == "auto" and not Settings().checks_network


@pytest.mark.parametrize(
    ("port", "named"),
    [
        (7999, "the Temporal frontend (temporal_address)"),
        (8233, "the Temporal Web UI (ui_port)"),
        (9464, "the worker's metrics_address"),
        (9465, "the worker's health_address"),
    ],
)
async def test_control_plane_ports_can_never_be_given_to_an_agent(port: int, named: str) -> None:
    agent = AgentConfig(command=["true"], loopback_ports=[11434, port])
    with pytest.raises(ValueError, match=rf"agents\.coder\.loopback_ports: {port} is {re.escape(named)}"):
        Settings(temporal_address="127.0.0.1:7999", agents={"coder": agent})
    allowed = Settings(temporal_address="127.0.0.1:7999", agents={"coder": AgentConfig(command=["true"])})
    assert allowed.agents["coder"].loopback_ports == []


async def test_loopback_ports_are_checked_again_when_settings_change_in_code(tmp_path: Path) -> None:
    settings = Settings(temporal_address="127.0.0.1:7999", state_dir=tmp_path)
    settings.agents["coder"] = AgentConfig(command=["true"], loopback_ports=[7999])
    with pytest.raises(ApplicationError) as caught:
        sandbox.config_plan(settings, "coder", tmp_path, [])
    assert caught.value.type == "SandboxMisconfigured" and caught.value.non_retryable
    with pytest.raises(ValueError, match="loopback_ports needs network = true"):
        AgentConfig(command=["true"], network=False, loopback_ports=[11434])
    with pytest.raises(ValueError, match="not TCP ports"):
        AgentConfig(command=["true"], loopback_ports=[70000])


# ------------------------------------------------------------------------------ argv building


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str | None]]:
    """What the probes find, set by each test (None = available); root unless `euid` says otherwise."""
    found: dict[str, str | None] = {"network": None, "cgroup": None, "tmp_size": None, "euid": "0"}
    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: None)
    monkeypatch.setattr(sandbox, "network_problem", lambda: found["network"])
    monkeypatch.setattr(sandbox, "cgroup_problem", lambda memory: found["cgroup"])
    monkeypatch.setattr(sandbox, "tmp_size_problem", lambda: found["tmp_size"])
    monkeypatch.setattr(os, "geteuid", lambda: int(found["euid"] or 0))
    sandbox._warn.cache_clear()
    yield found
    sandbox._warn.cache_clear()


def plan_of(tmp_path: Path, mode: SandboxMode = "auto", network: bool = True) -> sandbox.SandboxPlan:
    settings = Settings(state_dir=tmp_path / "state")
    return sandbox.agent_plan(
        settings,
        mode,
        network,
        tmp_path,
        [],
        (60, 2048, 64),
        loopback_ports=[11434] if network else [],
        max_processes=100,
        tmp_size_mb=32,
    )


def split(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(launcher, bwrap, inner command) of a wrapped argv."""
    start = next(i for i, arg in enumerate(argv) if arg.endswith("bwrap"))
    end = start + argv[start:].index("--")
    return argv[:start], argv[start:end], argv[end + 1 :]


async def test_as_root_the_launcher_sets_up_netns_pasta_and_cgroup(
    host: dict[str, str | None], tmp_path: Path, degraded: list[str]
) -> None:
    launcher, box, inner = split(sandbox.wrap(["agent", "--go"], plan_of(tmp_path)))

    assert launcher == [
        sys.executable,
        "-I",
        "-S",
        str(sandbox.JAIL),
        "--parent",
        str(os.getpid()),
        "--netns",
        "11434",
        "--deny",
        "169.254.0.0/16",
        "--pids",
        "100",
        "--memory-mb",
        "2048",
        "--",
    ]
    assert "--unshare-net" not in box, "the launcher's namespace replaces the host's network"
    assert {"--unshare-pid", "--die-with-parent"} <= set(box)
    assert box[box.index("--cap-drop") + 1] == "ALL"
    assert ["--size", str(32 * sandbox.MB), "--tmpfs", "/tmp"] == box[
        box.index("/tmp") - 3 : box.index("/tmp") + 1
    ]
    assert box[box.index("/proc/sys") - 1 : box.index("/proc/sys") + 2] == [
        "--ro-bind",
        "/proc/sys",
        "/proc/sys",
    ]
    # Memory and processes are the cgroup's: no RLIMIT_AS (breaks Node), no RLIMIT_DATA, no RLIMIT_NPROC.
    assert inner[1:] == ["--cpu=60", f"--fsize={64 * sandbox.MB}", "--", "agent", "--go"]
    assert degraded == []


async def test_without_pasta_auto_cuts_the_network_and_required_refuses(
    host: dict[str, str | None], tmp_path: Path, degraded: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    host["network"] = "pasta is not installed"
    with caplog.at_level(logging.WARNING, logger="ticketflow.sandbox"):
        launcher, box, _ = split(sandbox.wrap(["agent"], plan_of(tmp_path)))
    assert "--unshare-net" in box, "never the host's loopback: no network at all"
    assert "--netns" not in launcher and "--pasta" not in launcher
    assert degraded == ["network"]
    assert any("SANDBOX NETWORK OFF: pasta is not installed" in r.getMessage() for r in caplog.records)

    with pytest.raises(ApplicationError, match="pasta is not installed") as caught:
        sandbox.wrap(["agent"], plan_of(tmp_path, "required"))
    assert caught.value.type == "SandboxUnavailable" and caught.value.non_retryable

    offline = split(sandbox.wrap(["agent"], plan_of(tmp_path, "required", network=False)))[1]
    assert "--unshare-net" in offline, "network = false never needs pasta"


async def test_without_a_cgroup_root_degrades_and_others_fall_back_to_rlimits(
    host: dict[str, str | None], tmp_path: Path, degraded: list[str]
) -> None:
    host["cgroup"] = "cannot create cgroup"
    launcher, _, inner = split(sandbox.wrap(["agent"], plan_of(tmp_path)))
    assert launcher[-5:] == ["--netns", "11434", "--deny", "169.254.0.0/16", "--"], "no cgroup options"
    assert f"--data={2048 * sandbox.MB}" in inner and not any(a.startswith("--nproc") for a in inner)
    assert degraded == ["cgroup"], "root ignores RLIMIT_NPROC: the process limit is gone"
    with pytest.raises(ApplicationError, match="cannot create cgroup"):
        sandbox.wrap(["agent"], plan_of(tmp_path, "required"))

    degraded.clear()
    host["euid"] = "1000"
    launcher, _, inner = split(sandbox.wrap(["agent"], plan_of(tmp_path, "required")))
    assert launcher[6:] == ["--pasta", "11434", "--"], "not root: pasta's own namespaces"
    assert "--nproc=100" in inner and f"--data={2048 * sandbox.MB}" in inner
    assert degraded == []


async def test_without_a_memory_controller_pids_stay_in_the_cgroup(
    host: dict[str, str | None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, degraded: list[str]
) -> None:
    monkeypatch.setattr(sandbox, "cgroup_problem", lambda memory: "no memory hierarchy" if memory else None)
    launcher, _, inner = split(sandbox.wrap(["agent"], plan_of(tmp_path, "required")))
    assert launcher[6:] == ["--netns", "11434", "--deny", "169.254.0.0/16", "--pids", "100", "--"]
    assert f"--data={2048 * sandbox.MB}" in inner
    assert degraded == []


async def test_a_remote_temporal_frontend_is_denied_like_the_metadata_service(tmp_path: Path) -> None:
    remote = Settings(temporal_address="192.0.2.77:7233", state_dir=tmp_path)
    assert sandbox.denied_networks(remote) == ["169.254.0.0/16", "192.0.2.77/32"]
    assert sandbox.denied_networks(Settings(temporal_address="[2001:db8::5]:7233")) == [
        "169.254.0.0/16",
        "2001:db8::5/128",
    ]
    assert sandbox.denied_networks(Settings(temporal_address="localhost:7233")) == ["169.254.0.0/16"]
    plan = sandbox.agent_plan(remote, "auto", True, tmp_path, [], (0, 0, 0))
    assert plan.deny_networks == ("169.254.0.0/16", "192.0.2.77/32")
    assert sandbox.agent_plan(remote, "auto", False, tmp_path, [], (0, 0, 0)).deny_networks == ()


async def test_test_runs_get_the_same_sandbox_and_limits(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    plan = sandbox.checks_plan(settings, tmp_path)
    assert plan.mode == "auto" and not plan.network and plan.loopback_ports == ()
    assert plan.max_processes == 512 and plan.tmp_size_mb == 512
    assert settings.state_dir.resolve() in plan.hidden and tmp_path.resolve() in plan.writable


async def test_an_old_bwrap_without_size_leaves_tmp_uncapped_loudly(
    host: dict[str, str | None], tmp_path: Path, degraded: list[str]
) -> None:
    host["tmp_size"] = "this bwrap cannot cap a tmpfs"
    _, box, _ = split(sandbox.wrap(["agent"], plan_of(tmp_path)))
    assert "--size" not in box and "/tmp" in box
    assert degraded == ["tmp_size"]


async def test_off_runs_directly_with_rlimits_only(tmp_path: Path) -> None:
    argv = sandbox.wrap(["agent"], plan_of(tmp_path, "off"))
    assert not any(a.endswith("bwrap") or a == str(sandbox.JAIL) for a in argv)
    assert argv[-1] == "agent" and f"--data={2048 * sandbox.MB}" in argv


async def test_git_metadata_is_read_only_and_the_host_secrets_hidden(tmp_path: Path) -> None:
    mirror, worktree = tmp_path / "mirror.git", tmp_path / "wt"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", "--bare", str(mirror)], check=True)
    seed = tmp_path / "seed"
    subprocess.run([*git, "clone", "-q", str(mirror), str(seed)], check=True, capture_output=True)
    (seed / "a.txt").write_text("a\n")
    subprocess.run([*git, "-C", str(seed), "add", "a.txt"], check=True)
    subprocess.run([*git, "-C", str(seed), "commit", "-qm", "a"], check=True)
    subprocess.run([*git, "-C", str(seed), "push", "-q", "origin", "HEAD:main"], check=True)
    subprocess.run([*git, "-C", str(mirror), "worktree", "add", "-q", str(worktree), "main"], check=True)

    plan = plan_of(worktree, "required", network=False)
    box = sandbox.bwrap_args(plan)
    own = mirror / "worktrees" / "wt"
    assert ["--ro-bind", str(worktree / ".git"), str(worktree / ".git")] == _mount(box, worktree / ".git")
    assert _mount(box, mirror.resolve())[0] == "--ro-bind"
    assert str(own) not in box, "its gitdir is inside the mirror's read-only bind"
    assert _mount(box, worktree.resolve())[0] == "--bind"
    assert box.index(str(worktree / ".git")) > box.index(str(worktree.resolve())), "on top of the worktree"
    assert "/etc/shadow" in box and "/run" in box


def _mount(box: list[str], path: Path) -> list[str]:
    at = len(box) - 1 - box[::-1].index(str(path))
    return box[at - 2 : at + 1] if box[at - 1] == str(path) else box[at - 1 : at + 1]


@needs_bwrap
async def test_symlinked_programs_run_wherever_link_and_target_live(tmp_path: Path) -> None:
    """A link on the visible root to a hidden target (the target is bound), and a link in a hidden
    directory to a visible program (the link is bound): both run by the name they were given."""
    script = tmp_path / "agent.sh"  # /tmp is replaced inside: hidden
    script.write_text("#!/bin/sh\necho ran $0\n")
    script.chmod(0o755)
    visible = Path(tempfile.mkdtemp(dir="/var/tmp"))
    try:
        (visible / "agent").symlink_to(script)
        (tmp_path / "true-link").symlink_to(shutil.which("true") or "/bin/true")
        plan = sandbox.agent_plan(
            Settings(state_dir=tmp_path / "state"), "required", False, tmp_path / "wt", [], (0, 0, 0)
        )
        for program in (str(visible / "agent"), str(tmp_path / "true-link")):
            done = subprocess.run(sandbox.wrap([program], plan), capture_output=True, text=True, timeout=20)
            assert done.returncode == 0, (program, done.stderr)
        done = subprocess.run(sandbox.wrap([str(visible / "agent")], plan), capture_output=True, text=True)
        assert done.stdout.strip() == f"ran {visible / 'agent'}"
    finally:
        shutil.rmtree(visible)
