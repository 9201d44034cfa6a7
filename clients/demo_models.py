"""Which model server the demo runs on: a real Ollama at OLLAMA_HOST, else our fake one, said plainly.

The recommended models per stage come from examples/ollama.toml (the file users copy), so the demo
asks a real Ollama for exactly what the README recommends. Without a reachable Ollama the demo starts
tests/fakes/ollama_server.py in the background: the same HTTP API, answering with replies written in
advance for the example backlog, so the whole model path (classify, the ollama agent's tool calls,
review) still runs through the real clients, just with no model thinking.
"""

from __future__ import annotations

import socket
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from activities.llm.chains import split_ref
from activities.settings import ModelsConfig, Settings
from clients import devserver
from clients.example_repo import examples_dir

DEFAULT_OLLAMA = "http://127.0.0.1:11434"
FAKE = devserver.BACKGROUND[2]
STAGES = ("classify", "code", "review")


class ModelServerError(Exception):
    """The demo cannot run on the model server it found (said with what to do about it)."""


@dataclass(frozen=True)
class ModelServer:
    url: str
    real: bool
    version: str
    models: ModelsConfig
    max_turns: int


def ollama_url(raw: str | None) -> str:
    """OLLAMA_HOST as Ollama itself reads it: scheme and port optional ("0.0.0.0" means this machine)."""
    value = (raw or "").strip() or DEFAULT_OLLAMA
    if "://" not in value:
        value = f"http://{value}"
    parts = urlsplit(value)
    host = parts.hostname or "127.0.0.1"
    host = "127.0.0.1" if host == "0.0.0.0" else host
    port = parts.port or (443 if parts.scheme == "https" else 11434)
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}"


def recommended() -> dict[str, Any]:
    """examples/ollama.toml as data: [models] chains and providers, [agents.ollama]."""
    with (examples_dir() / "ollama.toml").open("rb") as handle:
        return tomllib.load(handle)


def _installed(name: str, tags: set[str]) -> bool:
    return name in tags or (":" not in name and f"{name}:latest" in tags)


async def _probe(url: str) -> tuple[str, set[str]] | None:
    """Ollama's version and installed models, or None if nothing at url speaks Ollama's API."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=3.0) as http:
            version = (await http.get("/api/version")).raise_for_status().json()["version"]
            tags = (await http.get("/api/tags")).raise_for_status().json().get("models", [])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    return str(version), {str(t.get("name") or t.get("model")) for t in tags}


def _models_config(config: dict[str, Any], url: str) -> ModelsConfig:
    models = dict(config["models"])
    providers = {name: dict(p) for name, p in models.get("providers", {}).items()}
    for provider in providers.values():
        if provider.get("kind", "ollama") == "ollama":
            provider["base_url"] = url
    return ModelsConfig.model_validate({**models, "providers": providers})


def _model_names(models: ModelsConfig, stage: str) -> list[str]:
    """The stage's chain as the model names a server lists (without the provider prefix)."""
    return [split_ref(ref, list(models.providers) or ["local"]).model for ref in getattr(models, stage)]


def missing_models(models: ModelsConfig, installed: set[str]) -> dict[str, list[str]]:
    """Per stage with no installed model at all: the chain it would need (one pull is enough)."""
    chains = {stage: _model_names(models, stage) for stage in STAGES}
    return {
        stage: chain
        for stage, chain in chains.items()
        if not any(_installed(name, installed) for name in chain)
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fake_url_file(settings: Settings) -> Path:
    return settings.state_dir / f"{FAKE}.url"


async def start_fake(settings: Settings, models: list[str]) -> str:
    """Our fake Ollama in the background (reused while it runs); `ticketflow stop` ends it."""
    url_file = _fake_url_file(settings)
    if devserver.running_pid(settings, FAKE) and url_file.is_file():
        url = url_file.read_text().strip()
        if await _probe(url):
            return url
        devserver.stop_background(settings, FAKE)
    port = _free_port()
    command = [sys.executable, "-m", "tests.fakes.ollama_server", "--port", str(port), "--models", *models]
    devserver.start_background(settings, FAKE, command, cwd=examples_dir().parent)
    url = f"http://127.0.0.1:{port}"
    await devserver.wait_for_port(f"127.0.0.1:{port}", timeout=30)
    url_file.write_text(url)
    return url


async def choose(settings: Settings, ollama_host: str | None, *, offline: bool) -> ModelServer:
    """A real Ollama with the recommended models if one answers (and not `offline`), else the fake."""
    config = recommended()
    max_turns = int(config.get("agents", {}).get("ollama", {}).get("max_turns", 40))
    url = ollama_url(ollama_host)
    found = None if offline else await _probe(url)
    if found is not None:
        version, installed = found
        models = _models_config(config, url)
        missing = missing_models(models, installed)
        if missing:
            pulls = "; ".join(f"{stage}: ollama pull {chain[-1]}" for stage, chain in missing.items())
            raise ModelServerError(
                f"the Ollama at {url} (version {version}) has no model for {', '.join(missing)} "
                f"({pulls}); or run `ticketflow demo --offline` for the built-in fake server"
            )
        return ModelServer(url, True, version, models, max_turns)
    chains = _models_config(config, url)
    names = sorted({name for stage in STAGES for name in _model_names(chains, stage)})
    fake = await start_fake(settings, names)
    return ModelServer(fake, False, "fake", _models_config(config, fake), max_turns)


def describe(server: ModelServer, asked: str | None, offline: bool) -> str:
    chains = ", ".join(f"{s}: {' > '.join(getattr(server.models, s))}" for s in STAGES)
    if server.real:
        return f"Using the real Ollama at {server.url} (version {server.version}); models per stage: {chains}"
    why = "--offline was given" if offline else f"no Ollama answered at {ollama_url(asked)}"
    return (
        f"{why}, so this demo runs on ticketflow's FAKE Ollama server at {server.url}.\n"
        "  It speaks Ollama's API, but its replies were written in advance for the example tickets:\n"
        "  no model thinks here. Start Ollama (or set OLLAMA_HOST) and pull the models named in\n"
        f"  examples/ollama.toml to run the same demo on a real one. Model chains: {chains}"
    )
