"""Model chains from config: provider prefixes, bare names, the ticket's override, the example file."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.llm.chains import ModelRef, ModelsNotConfigured, chain_for, providers_for
from activities.settings import ModelsConfig, ProviderConfig, Settings
from tests.helpers import example_ticket

ROOT = Path(__file__).resolve().parents[2]


def configured() -> Settings:
    models = ModelsConfig(
        providers={
            "local": ProviderConfig(),
            "lab": ProviderConfig(kind="openai", base_url="http://lab:8000/v1"),
        },
        classify=["qwen2.5:3b"],
        code=["local/qwen2.5-coder:14b", "lab/Qwen/Qwen2.5-Coder-32B-Instruct"],
    )
    return Settings(models=models)


def test_chains_resolve_providers_and_bare_names() -> None:
    settings = configured()
    assert chain_for(settings, "classify") == [ModelRef("local", "qwen2.5:3b")]
    assert chain_for(settings, "code")[1] == ModelRef("lab", "Qwen/Qwen2.5-Coder-32B-Instruct")
    assert chain_for(settings, "review") == []  # no chain: the stage stays rule-based
    assert providers_for(settings, "code") == ["local", "lab"]


def test_a_ticket_overrides_a_stage_chain() -> None:
    ticket = example_ticket("demo-1-multiply.md", models={"code": ["lab/big-coder"]})
    assert chain_for(configured(), "code", ticket) == [ModelRef("lab", "big-coder")]
    assert chain_for(configured(), "classify", ticket) == [ModelRef("local", "qwen2.5:3b")]


def test_models_without_providers_say_what_is_missing() -> None:
    with pytest.raises(ModelsNotConfigured, match=r"\[models.providers.<name>\]"):
        chain_for(Settings(models=ModelsConfig(code=["qwen2.5-coder:7b"])), "code")


def test_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKETFLOW_CONFIG", str(ROOT / "examples" / "ollama.toml"))
    monkeypatch.setenv("OLLAMA_HOST", "http://gpu-box:11434")
    settings = Settings()
    assert settings.agents["ollama"].kind == "ollama" and settings.default_agent == "ollama"
    assert settings.models.providers["local"].base_url == "http://gpu-box:11434"
    assert [ref.model for ref in chain_for(settings, "code")] == ["qwen2.5-coder:14b", "qwen2.5-coder:7b"]
