"""The bubblewrap sandbox: an agent that goes looking for keys, tokens or other files finds nothing.

Each probe also runs once without the sandbox, to show the same script really would find them there.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    sandbox.bwrap_problem.cache_clear()
    sandbox._warn_unsandboxed.cache_clear()
    plan = sandbox.SandboxPlan(mode="required", writable=(tmp_path,), network=False)
    try:
        with pytest.raises(ApplicationError) as caught:
            sandbox.wrap(["true"], plan)
        assert caught.value.type == "SandboxUnavailable" and caught.value.non_retryable
        assert "bwrap is not installed" in caught.value.message

        with caplog.at_level(logging.WARNING, logger="ticketflow.sandbox"):
            auto = sandbox.SandboxPlan(mode="auto", writable=(tmp_path,), network=False)
            assert sandbox.wrap(["true"], auto)[-1] == "true"
            sandbox.wrap(["true"], auto)
        assert len([r for r in caplog.records if "SANDBOX OFF" in r.getMessage()]) == 1
    finally:
        sandbox.bwrap_problem.cache_clear()
        sandbox._warn_unsandboxed.cache_clear()


async def test_git_host_tokens_cannot_be_passed_to_agents() -> None:
    for name in ("GITHUB_TOKEN", "TICKETFLOW_GITHUB_TOKEN", "GH_TOKEN", "GITLAB_TOKEN"):
        with pytest.raises(ValueError, match="never reach agents"):
            AgentConfig(kind="claude", pass_env=[name])
    assert AgentConfig(kind="claude", pass_env=["ANTHROPIC_API_KEY"]).sandbox_mode == "auto"
