"""Running the real agent CLIs (installed by deploy/install-agent-clis.sh) against tests/fakes/model_apis.py.

`real_config(kind, fake)` is the AgentConfig a user would write for that CLI behind a self-hosted gateway,
plus the test-only settings that shorten each CLI's own retries; `real_env(kind, fake)` the variables the
worker holds for it (passed through pass_env). The sandbox stays on ("auto"): the CLI reaches the fake API
only through the sandbox's loopback_ports.

Missing binaries skip the real_cli tests on a developer machine and fail them in CI ($CI set).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from activities.settings import AgentConfig
from tests.fakes.model_apis import KEY, ModelAPIs

ROOT = Path(__file__).resolve().parents[2]
CLI_BIN = Path(os.environ.get("TICKETFLOW_AGENT_CLIS", ROOT / ".ci" / "agent-clis")) / "bin"
KINDS = ("claude", "codex", "gemini", "aider")
MODELS = {
    "claude": "claude-sonnet-4-5",
    "codex": "gpt-5-codex",
    "gemini": "gemini-2.5-pro",
    "aider": "openai/gpt-4o",
}
CODEX_PROVIDER = "gateway"


def binary(kind: str) -> Path:
    """The installed CLI, or a skip (a failure in CI) naming the install command."""
    path = CLI_BIN / kind
    if path.exists() and os.access(path, os.X_OK):
        return path  # the install script's launcher (a script, not a symlink: the sandbox binds it)
    found = shutil.which(kind) if os.environ.get("TICKETFLOW_AGENT_CLIS") == "PATH" else None
    if found:
        return Path(found)
    message = f"{kind} is not installed at {path}: run deploy/install-agent-clis.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def real_env(kind: str, fake: ModelAPIs, key: str = KEY, *, oauth: bool = False) -> dict[str, str]:
    """The worker's environment for this CLI: its key and the gateway's base URL, short retries.
    `oauth`: Claude on the subscription path (CLAUDE_CODE_OAUTH_TOKEN), the one with rate_limit_event."""
    if kind == "claude":
        return {
            "ANTHROPIC_BASE_URL": fake.url,
            "CLAUDE_CODE_OAUTH_TOKEN" if oauth else "ANTHROPIC_API_KEY": key,
            "CLAUDE_CODE_MAX_RETRIES": "1",
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
    if kind == "codex":
        return {"GATEWAY_API_KEY": key}
    if kind == "gemini":
        return {"GEMINI_API_KEY": key, "GOOGLE_GEMINI_BASE_URL": fake.url}
    return {
        "OPENAI_API_KEY": key,
        "OPENAI_API_BASE": f"{fake.url}/v1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


def codex_provider_args(base_url: str, *, retries: int = 0) -> list[str]:
    """Codex ignores OPENAI_BASE_URL: a gateway is a model provider of its own (also needed on resume)."""
    provider = f"model_providers.{CODEX_PROVIDER}"
    return [
        "-c",
        f"model_provider={CODEX_PROVIDER}",
        "-c",
        f'{provider}.name="{CODEX_PROVIDER}"',
        "-c",
        f'{provider}.base_url="{base_url}/v1"',
        "-c",
        f'{provider}.env_key="GATEWAY_API_KEY"',
        "-c",
        f'{provider}.wire_api="responses"',
        "-c",
        f"{provider}.request_max_retries={retries}",
        "-c",
        f"{provider}.stream_max_retries={retries}",
    ]


def real_config(kind: str, fake: ModelAPIs, *, oauth: bool = False, **changes: Any) -> AgentConfig:
    extra: list[str] = codex_provider_args(fake.url) if kind == "codex" else []
    config: dict[str, Any] = {
        "kind": kind,
        "binary": str(binary(kind)),
        "model": MODELS[kind],
        "pass_env": sorted(real_env(kind, fake, oauth=oauth)),
        "extra_args": extra,
        "sandbox": "auto",
        "loopback_ports": [fake.port],
        "max_turns": 8,
    }
    return AgentConfig.model_validate({**config, **changes})


def set_env(
    monkeypatch: pytest.MonkeyPatch, kind: str, fake: ModelAPIs, key: str = KEY, *, oauth: bool = False
) -> None:
    for name, value in real_env(kind, fake, key, oauth=oauth).items():
        monkeypatch.setenv(name, value)
