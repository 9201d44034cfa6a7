"""Fixtures for the model-layer tests: our own fake Ollama and OpenAI-compatible servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.ollama_server import FakeOllama, serve
from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with serve(FakeOllama()) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with serve(FakeOpenAI(models={"small:latest", "big:latest"})) as fake:
        yield fake  # type: ignore[misc]
