"""The demo's model-server choice and config file, without starting anything."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from activities.settings import ModelsConfig, Settings, to_toml
from clients.demo import demo_settings
from clients.demo_models import ModelServer, missing_models, ollama_url, recommended


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("gpu-box:8080", "http://gpu-box:8080"),
        ("https://ollama.example.com", "https://ollama.example.com:443"),
        ("http://[::1]:11434/", "http://[::1]:11434"),
    ],
)
def test_ollama_host_is_read_as_ollama_reads_it(raw: str | None, url: str) -> None:
    assert ollama_url(raw) == url


def test_a_stage_needs_only_one_installed_model_of_its_chain() -> None:
    models = ModelsConfig(classify=["local/qwen2.5:3b"], code=["local/a:14b", "b"], review=["c:1b"])
    installed = {"qwen2.5:3b", "b:latest"}
    assert missing_models(models, installed) == {"review": ["c:1b"]}


def test_the_recommended_chains_cover_every_stage() -> None:
    models = recommended()["models"]
    assert all(models[stage] for stage in ("classify", "code", "review"))


def test_the_demo_config_file_loads_as_the_settings_it_came_from(tmp_path: Path) -> None:
    chains = ModelsConfig.model_validate({**recommended()["models"], "classify": ['local/x "q":1b']})
    server = ModelServer("http://127.0.0.1:9", False, "fake", chains, max_turns=7)
    settings, config = demo_settings(Settings(state_dir=tmp_path), server)
    data = tomllib.loads(config.read_text())
    assert ModelsConfig.model_validate(data["models"]) == settings.models == chains
    assert data["agents"]["ollama"] == {"kind": "ollama", "max_turns": 7}
    assert data["repos"]["demo"]["url"] == settings.repos["demo"].url
    assert to_toml({"a.b": {"c": True}}) == "[a.b]\nc = true\n\n".replace("[a.b]", '["a.b"]')
