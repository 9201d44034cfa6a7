"""Agent registry: adding an agent kind is one module plus one line in AGENT_KINDS."""

from __future__ import annotations

from collections.abc import Callable

from activities.agents.aider import AiderAgent
from activities.agents.base import Agent, AgentRun
from activities.agents.claude import ClaudeAgent
from activities.agents.codex import CodexAgent
from activities.agents.command import CommandAgent
from activities.agents.gemini import GeminiAgent
from activities.agents.ollama_agent import OllamaAgent
from activities.settings import AgentConfig, Settings

AGENT_KINDS: dict[str, Callable[[str, AgentConfig], Agent]] = {
    "command": CommandAgent,
    "ollama": OllamaAgent,
    "claude": ClaudeAgent,
    "codex": CodexAgent,
    "aider": AiderAgent,
    "gemini": GeminiAgent,
}


class AgentNotConfigured(Exception):
    pass


def build_agent(name: str, settings: Settings) -> Agent:
    config = settings.agents.get(name)
    if config is None:
        known = ", ".join(sorted(settings.agents)) or "none"
        raise AgentNotConfigured(
            f"agent {name!r} is not configured (configured: {known}); add [agents.{name}] with a command "
            "to ticketflow.toml"
        )
    agent = AGENT_KINDS[config.kind](name, config)
    if isinstance(agent, OllamaAgent):
        agent.bind_settings(settings)  # it calls the model servers configured in [models]
    return agent


__all__ = ["AGENT_KINDS", "Agent", "AgentNotConfigured", "AgentRun", "build_agent"]
