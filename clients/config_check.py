"""`ticketflow config check`: is this configuration, on this machine, one a worker can run with?

It loads the configuration exactly as the worker does (file, TICKETFLOW_* variables, Temporal's client
configuration; unknown keys are already errors by then), then checks what the configuration relies on:
git, the sandbox tools (bubblewrap, pasta) when a sandbox is asked for, each agent's CLI on PATH and its
version, the Temporal server (connecting as the worker would: TLS, API key), and each model server.
It prints every check and the effective configuration, secrets masked, as TOML: what the worker will use.
The worker logs the same effective configuration when it starts.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from activities.settings import Settings

OK, WARN, FAIL = "ok", "warn", "FAIL"
VERSION_TIMEOUT = 15.0
HTTP_TIMEOUT = 5.0
CLI_KINDS = ("claude", "codex", "aider", "gemini")


@dataclass
class Check:
    name: str
    result: str  # ok | warn | FAIL
    detail: str


def effective_config(settings: Settings) -> dict[str, Any]:
    """Every setting as the worker holds it, secrets masked (pydantic prints SecretStr as ********)."""
    from activities.settings import config_file

    data: dict[str, Any] = settings.model_dump(mode="json")
    data["config_file"] = str(config_file() or "(none: defaults and variables)")
    return data


def version_of(binary: str) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{binary} --version: {exc}"
    text = (done.stdout or done.stderr).strip().splitlines()
    first = text[0].strip() if text else "(no version printed)"
    return done.returncode == 0, first[:120]


def _tool(name: str, binary: str, *, required: bool, why: str) -> Check:
    found = shutil.which(binary)
    if found is None:
        return Check(name, FAIL if required else WARN, f"{binary} is not on PATH: {why}")
    ok, version = version_of(found)
    return Check(name, OK if ok else WARN, f"{version} ({found})")


def local_checks(settings: Settings) -> list[Check]:
    checks = [_tool("git", "git", required=True, why="every worktree, commit and push needs it")]
    modes = [agent.sandbox for agent in settings.agents.values()] + [settings.checks_sandbox]
    if any(mode != "off" for mode in modes):
        required = "required" in modes
        why = "sandbox = required refuses to run" if required else "agents and tests run unsandboxed (auto)"
        checks.append(_tool("bubblewrap", "bwrap", required=required, why=why))
        if any(a.network and a.sandbox != "off" for a in settings.agents.values()):
            checks.append(_tool("pasta", "pasta", required=False, why="sandboxed agents get no own network"))
    for name, agent in sorted(settings.agents.items()):
        if agent.kind in CLI_KINDS:
            binary = agent.binary or agent.kind
            checks.append(
                _tool(f"agent {name}", binary, required=True, why=f"the {agent.kind} agent runs it")
            )
        elif agent.kind == "command":
            program = agent.command[0]
            found = shutil.which(program) or (program if Path(program).is_file() else None)
            result = (
                (OK, f"{program} ({found})")
                if found
                else (WARN, f"{program} not found (relative to a worktree?)")
            )
            checks.append(Check(f"agent {name}", *result))
    if settings.agents and settings.default_agent not in settings.agents:
        checks.append(
            Check(
                "default_agent",
                FAIL,
                f"{settings.default_agent!r} is none of agents: {sorted(settings.agents)}",
            )
        )
    return checks


async def temporal_check(settings: Settings) -> Check:
    from clients.connect import TemporalUnavailable, connect, describe_connection

    shown = describe_connection(settings)
    where = f"{shown['address']} namespace {shown['namespace']}, TLS {shown['tls']}"
    try:
        client = await connect(settings)
        await client.count_workflows("WorkflowType = 'TicketWorkflow'")
    except TemporalUnavailable as exc:
        return Check("temporal", FAIL, str(exc))
    except Exception as exc:  # connected, but the namespace or visibility refuses
        return Check("temporal", FAIL, f"{where}: {' '.join(str(exc).split())}")
    return Check("temporal", OK, where)


async def model_checks(settings: Settings) -> list[Check]:
    import httpx

    checks = []
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        for name, provider in sorted(settings.models.providers.items()):
            base = provider.base_url.rstrip("/")
            if "://" not in base:
                base = f"http://{base}"
            url = f"{base}/api/tags" if provider.kind == "ollama" else f"{base}/models"
            try:
                response = await http.get(url)
            except httpx.HTTPError as exc:
                checks.append(Check(f"model server {name}", FAIL, f"{url}: {type(exc).__name__}"))
                continue
            if response.status_code >= 400 and response.status_code not in (401, 403):
                checks.append(Check(f"model server {name}", FAIL, f"{url}: HTTP {response.status_code}"))
            else:
                checks.append(Check(f"model server {name}", OK, f"{base} answers ({provider.kind})"))
    return checks


async def run_checks(settings: Settings) -> list[Check]:
    local = await asyncio.to_thread(local_checks, settings)
    temporal, models = await asyncio.gather(temporal_check(settings), model_checks(settings))
    return [*local, temporal, *models]


def render(checks: list[Check], config: dict[str, Any]) -> str:
    from activities.settings import to_toml

    lines = [f"{c.result:<5} {c.name:<24} {c.detail}" for c in checks]
    shown = {k: v for k, v in config.items() if k != "config_file"}
    lines += ["", f"# What the worker will use (config file: {config['config_file']}; secrets masked):", ""]
    return "\n".join(lines) + "\n" + to_toml(shown).rstrip("\n")


async def cmd_config_check(args: Any, settings: Settings) -> int:
    checks = await run_checks(settings)
    config = effective_config(settings)
    if args.json:
        print(json.dumps({"checks": [asdict(c) for c in checks], "settings": config}, indent=2))
    else:
        print(render(checks, config))
    return 1 if any(c.result == FAIL for c in checks) else 0
