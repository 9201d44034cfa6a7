"""Each injected fault, through the real classify activity, scheduled with its real retry policy on the
real dev server, against our fake model servers: the behaviour is the one base.BEHAVIOUR names."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from temporalio.client import Client

from activities.settings import Settings
from tests.fakes.ollama_server import FakeOllama, Fault, Reply, refused_url
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import example_ticket
from tests.llm.llm_helpers import StageOutcome, run_stage, with_models
from workflows.contracts import ClassifyRequest

GOOD = json.dumps({"kind": "bugfix", "complexity": "low", "risk": "low", "rationale": "a one-line fix"})
REQUEST = ClassifyRequest(ticket=example_ticket("demo-2-divide-by-zero.md"))


async def classify_with(client: Client, settings: Settings, url: str, *chain: str) -> StageOutcome:
    configured = with_models(settings, {"local": url}, classify=list(chain))
    return await run_stage(client, configured, "classify", REQUEST)


async def test_answer_is_validated_and_records_model_and_tokens(
    client: Client, settings: Settings, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script("small:latest", Reply(content=GOOD, prompt_tokens=120, completion_tokens=30))
    outcome = await classify_with(client, settings, fake_ollama.url, "small:latest")
    assert outcome.result is not None
    result = outcome.result
    assert (result["kind"], result["model"]) == ("bugfix", "local/small:latest")
    assert result["tokens"] == {"prompt": 120, "completion": 30, "cost_usd": 0.0}
    sent = fake_ollama.chats()[0].body
    assert sent["options"]["num_ctx"] == 8192 and sent["keep_alive"] == "30m"
    assert sent["format"]["properties"]["kind"]["enum"][0] == "feature"  # the JSON schema went to Ollama


async def test_missing_model_falls_back_to_the_next(
    client: Client, settings: Settings, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script("small:latest", Reply(content=GOOD))
    outcome = await classify_with(client, settings, fake_ollama.url, "not-pulled:7b", "small:latest")
    assert outcome.served_by == "local/small:latest"
    assert [r.body["model"] for r in fake_ollama.chats()] == ["not-pulled:7b", "small:latest"]


async def test_load_failure_falls_back_to_the_next(
    client: Client, settings: Settings, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script("big:latest", Fault("load_failure"))
    fake_ollama.script("small:latest", Reply(content=GOOD))
    outcome = await classify_with(client, settings, fake_ollama.url, "big:latest", "small:latest")
    assert outcome.served_by == "local/small:latest"


async def test_busy_hang_and_broken_stream_back_off_and_retry(
    client: Client, settings: Settings, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(
        "small:latest",
        Fault("busy"),
        Fault("hang", seconds=3),
        Fault("midstream_error"),
        Reply(content=GOOD),
    )
    configured = with_models(settings, {"local": fake_ollama.url}, classify=["small:latest"])
    # Three Temporal attempts is the classify policy: busy -> retry, hang -> retry, then the stream breaks.
    outcome = await run_stage(client, configured, "classify", REQUEST)
    assert outcome.error_type == "ModelStreamError" and not outcome.non_retryable
    assert len(fake_ollama.chats()) == 3  # one call per Temporal attempt: no hidden in-activity retries
    outcome = await run_stage(client, configured, "classify", REQUEST)
    assert outcome.result is not None and outcome.served_by == "local/small:latest"


async def test_connection_refused_moves_to_a_model_elsewhere(
    client: Client, settings: Settings, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script("small:latest", Reply(content=GOOD))
    configured = with_models(
        settings,
        {"down": refused_url(), "local": fake_ollama.url},
        classify=["down/small:latest", "local/small:latest"],
    )
    outcome = await run_stage(client, configured, "classify", REQUEST)
    assert outcome.served_by == "local/small:latest"


async def test_malformed_json_gets_one_corrective_retry_then_the_next_model(
    client: Client, settings: Settings, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script("big:latest", Reply(content="Sure! kind=bugfix"), Reply(content='{"kind": "urgent"}'))
    fake_ollama.script("small:latest", Reply(content="{not json"), Reply(content=GOOD))
    outcome = await classify_with(client, settings, fake_ollama.url, "big:latest", "small:latest")
    assert outcome.served_by == "local/small:latest"
    calls = fake_ollama.chats()
    assert [c.body["model"] for c in calls] == ["big:latest", "big:latest", "small:latest", "small:latest"]
    correction = calls[1].body["messages"][-1]["content"]
    assert correction.startswith("That reply is not valid") and "JSON" in correction


async def test_rate_limit_waits_at_least_retry_after(
    client: Client, settings: Settings, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("small:latest", Fault("rate_limited", seconds=1), Reply(content=GOOD))
    outcome = await classify_with(client, settings, "openai:" + fake_openai.url + "/v1", "small:latest")
    assert outcome.served_by == "local/small:latest"
    first, second = fake_openai.chats()
    assert second.at - first.at >= 0.95  # the server's Retry-After is the floor of the jittered delay


async def test_usage_limit_surfaces_its_reset_without_retrying(
    client: Client, settings: Settings, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script("small:latest", Fault("usage_limit", seconds=600))
    outcome = await classify_with(client, settings, "openai:" + fake_openai.url, "small:latest", "big:latest")
    assert (outcome.error_type, outcome.non_retryable) == ("UsageLimit", True)
    info = outcome.details[0]
    reset = datetime.fromisoformat(info["reset_at"])
    assert info["provider"] == "local" and 590 < (reset - datetime.now(UTC)).total_seconds() <= 600
    assert len(fake_openai.chats()) == 1  # no retry and no other model on a limited provider


async def test_usage_limit_on_ollama_is_read_from_its_message(
    client: Client, settings: Settings, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script("small:latest", Fault("usage_limit", seconds=900))
    outcome = await classify_with(client, settings, fake_ollama.url, "small:latest")
    assert outcome.error_type == "UsageLimit"
    assert outcome.details[0]["reset_at"] is not None


async def test_bad_credentials_fail_fast(client: Client, settings: Settings, fake_openai: FakeOpenAI) -> None:
    fake_openai.script("small:latest", Fault("auth"))
    outcome = await classify_with(client, settings, "openai:" + fake_openai.url, "small:latest")
    assert (outcome.error_type, outcome.non_retryable) == ("ModelAuth", True)
    assert len(fake_openai.chats()) == 1


async def test_an_oversized_prompt_is_shrunk_never_sent_whole(
    client: Client, settings: Settings, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script("small:latest", Reply(content=GOOD))
    huge = REQUEST.ticket.model_copy(update={"body": "The divide function crashes. " * 1500})
    configured = with_models(settings, {"local": fake_ollama.url}, classify=["small:latest"])
    outcome = await run_stage(client, configured, "classify", ClassifyRequest(ticket=huge))
    assert outcome.result is not None
    (sent,) = fake_ollama.chats()  # only the shrunk prompt reached the server
    assert "characters cut to fit the context" in sent.body["messages"][-1]["content"]


async def test_a_chain_without_providers_fails_fast_with_its_reason(
    client: Client, settings: Settings
) -> None:
    configured = with_models(settings, {}, classify=["small:latest"])
    outcome = await run_stage(client, configured, "classify", REQUEST)
    assert (outcome.error_type, outcome.non_retryable) == ("ModelsNotConfigured", True)
    assert "[models.providers.<name>]" in outcome.message
