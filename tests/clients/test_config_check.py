"""`ticketflow config check` and the worker's start-up log of its effective configuration."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.settings import Settings
from clients import cli
from tests.fakes.ollama_server import FakeOllama, refused_url, serve
from workers.main import running_workers

TOKEN = "ghp_configchecksecret123"


def fake_cli(folder: Path, name: str, version: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '{version}'\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def configured(
    tmp_path: Path, temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    for name in list(os.environ):
        if name.startswith(("TICKETFLOW_", "TEMPORAL_")):
            monkeypatch.delenv(name)
    bin_dir = tmp_path / "bin"
    fake_cli(bin_dir, "claude", "1.0.99 (Claude Code)")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TICKETFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "none.toml"))
    monkeypatch.setenv("TICKETFLOW_GITHUB_TOKEN", TOKEN)
    config = tmp_path / "ticketflow.toml"
    monkeypatch.setenv("TICKETFLOW_CONFIG", str(config))
    address = temporal_env.client.service_client.config.target_host
    config.write_text(
        f'temporal_address = "{address}"\ndefault_agent = "coder"\n\n'
        '[agents.coder]\nkind = "claude"\nsandbox = "off"\n\n'
        '[agents.gone]\nkind = "codex"\nbinary = "no-such-codex"\nsandbox = "off"\n'
    )
    return config, bin_dir


def check_lines(out: str) -> dict[str, str]:
    """The check lines of the text report, by check name (`ok    agent coder     1.0.99 ...`)."""
    return {
        line[6:30].strip(): line for line in out.splitlines() if line[:5].strip() in ("ok", "warn", "FAIL")
    }


async def check(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, ["config", "check", *flags])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


async def test_config_check_reports_each_dependency_and_the_effective_config(
    configured: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = configured
    text = config.read_text()
    with serve(FakeOllama(models={"qwen2.5:3b"})) as ollama:
        config.write_text(text + f'\n[models.providers.local]\nbase_url = "{ollama.url}"\n')
        code, out = await check(capsys)
    lines = check_lines(out)
    assert code == 1  # the codex agent's CLI is missing
    assert lines["git"].startswith("ok ")
    assert lines["agent coder"].startswith("ok ") and "1.0.99 (Claude Code)" in lines["agent coder"]
    assert lines["agent gone"].startswith("FAIL") and "no-such-codex is not on PATH" in lines["agent gone"]
    assert lines["temporal"].startswith("ok ")
    assert any(line.startswith("ok    model server local") for line in out.splitlines())
    assert 'default_agent = "coder"' in out and TOKEN not in out and 'github_token = "**********"' in out


async def test_unreachable_servers_fail_the_check(
    configured: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = configured
    text = config.read_text().replace(
        '\n[agents.gone]\nkind = "codex"\nbinary = "no-such-codex"\nsandbox = "off"\n', ""
    )
    config.write_text(text + f'\n[models.providers.local]\nbase_url = "{refused_url()}"\n')
    monkeypatch.setenv("TICKETFLOW_TEMPORAL_ADDRESS", refused_url().removeprefix("http://"))
    code, out = await check(capsys, "--json")
    report = json.loads(out)
    results = {c["name"]: c["result"] for c in report["checks"]}
    assert code == 1
    assert results["temporal"] == "FAIL" and results["model server local"] == "FAIL"
    assert results["agent coder"] == "ok" and report["settings"]["github_token"] == "**********"


async def test_the_worker_logs_its_effective_configuration(
    client: Client, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from pydantic import SecretStr

    secret = settings.model_copy(update={"github_token": SecretStr(TOKEN)})
    with caplog.at_level(logging.INFO, "ticketflow.worker"):
        async with running_workers(client, secret):
            pass
    (line,) = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("effective configuration: ")
    ]
    logged = json.loads(line.removeprefix("effective configuration: "))
    assert logged["task_queue"] == settings.task_queue and logged["github_token"] == "**********"
    assert TOKEN not in line
