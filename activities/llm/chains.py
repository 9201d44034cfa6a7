"""Per-stage model chains: resolve them from config and the ticket, walk them, and record every call.

A chain is a list like ["local/qwen2.5-coder:7b", "hosted/gpt-4.1-mini"]: `provider/model`, or a bare
model name meaning the first configured provider. The ticket's `models:` front matter replaces the
configured chain of a stage. Walking a chain applies base.BEHAVIOUR to each failure; what cannot be
handled inside one activity attempt becomes a Temporal ApplicationError (to_application_error).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.llm.base import Behaviour, ChatReply, ModelClient, ModelError
from activities.llm.breaker import BreakerBoard
from activities.llm.ollama import OllamaClient
from activities.llm.openai_compat import OpenAICompatClient
from activities.llm.structured import structured_chat
from activities.settings import ProviderConfig, Settings
from workflows.contracts import Ticket, TokenUsage
from workflows.limit_gate import USAGE_LIMIT_ERROR  # the type the workflow recognises

log = logging.getLogger("ticketflow.llm")
T = TypeVar("T")
S = TypeVar("S", bound=BaseModel)
STAGES = ("classify", "code", "review")
MAX_SHRINKS = 3

# One board per worker process: every ticket this worker runs sees the same endpoint health.
_BOARDS: dict[tuple[int, float], BreakerBoard] = {}


class ModelsNotConfigured(Exception):
    pass


@dataclass(frozen=True)
class ModelRef:
    provider: str
    model: str

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass
class CallRecord:
    """One model call: which model served it (or failed), tokens and latency."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_seconds: float = 0.0
    error: str | None = None


@dataclass
class ChainResult(Generic[T]):
    value: T
    served_by: ModelRef
    calls: list[CallRecord] = field(default_factory=list)

    @property
    def tokens(self) -> TokenUsage:
        ok = [c for c in self.calls if c.error is None]
        return TokenUsage(
            prompt=sum(c.prompt_tokens for c in ok), completion=sum(c.completion_tokens for c in ok)
        )


class ChainFailed(Exception):
    def __init__(self, error: ModelError, behaviour: Behaviour, calls: list[CallRecord]) -> None:
        super().__init__(str(error))
        self.error = error
        self.behaviour = behaviour
        self.calls = calls


def parse_ref(ref: str, settings: Settings) -> ModelRef:
    providers = settings.models.providers
    if not providers:
        raise ModelsNotConfigured("no model providers configured: add [models.providers.<name>]")
    return split_ref(ref, list(providers))


def split_ref(ref: str, providers: list[str]) -> ModelRef:
    """`provider/model` when the prefix names a provider, else a model of the first provider."""
    head, sep, rest = ref.partition("/")
    if sep and head in providers:
        return ModelRef(head, rest)
    return ModelRef(providers[0], ref)


def chain_for(settings: Settings, stage: str, ticket: Ticket | None = None) -> list[ModelRef]:
    refs = (ticket.models.get(stage) if ticket else None) or getattr(settings.models, stage)
    return [parse_ref(ref, settings) for ref in refs] if refs else []


def stage_chain(settings: Settings, stage: str, ticket: Ticket | None = None) -> list[ModelRef]:
    """chain_for inside an activity: a configuration mistake fails fast with its one-line reason."""
    try:
        return chain_for(settings, stage, ticket)
    except ModelsNotConfigured as exc:
        raise ApplicationError(str(exc), type="ModelsNotConfigured", non_retryable=True) from None


def providers_for(settings: Settings, stage: str, ticket: Ticket | None = None) -> list[str]:
    """The providers a stage may call, in chain order: what a ticket checks at the limit gate."""
    return list(dict.fromkeys(ref.provider for ref in chain_for(settings, stage, ticket)))


def build_client(settings: Settings, provider: str) -> ModelClient:
    config: ProviderConfig | None = settings.models.providers.get(provider)
    if config is None:
        raise ModelsNotConfigured(f"model provider {provider!r} is not configured")
    api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
    if config.kind == "ollama":
        return OllamaClient(
            provider,
            config.base_url,
            num_ctx=config.num_ctx,
            keep_alive=config.keep_alive,
            connect_timeout=config.connect_timeout_seconds,
            read_timeout=config.read_timeout_seconds,
            api_key=api_key,
        )
    return OpenAICompatClient(
        provider,
        config.base_url,
        context_window=config.num_ctx,
        connect_timeout=config.connect_timeout_seconds,
        read_timeout=config.read_timeout_seconds,
        api_key=api_key,
    )


def board_for(settings: Settings) -> BreakerBoard:
    key = (settings.models.breaker_failures, settings.models.breaker_open_seconds)
    if key not in _BOARDS:
        _BOARDS[key] = BreakerBoard(*key)
    return _BOARDS[key]


Attempt = Callable[[ModelClient, ModelRef, int], Awaitable[tuple[T, list[ChatReply]]]]


async def run_chain(settings: Settings, chain: list[ModelRef], attempt: Attempt[T]) -> ChainResult[T]:
    """Try each model in turn; `attempt(client, ref, shrink_level)` does the stage's calls."""
    calls: list[CallRecord] = []
    passed: list[ModelError] = []
    board = board_for(settings)
    for ref in chain:
        config = settings.models.providers.get(ref.provider)
        breaker = board.get(f"{ref.provider}@{config.base_url if config else ''}")
        client = build_client(settings, ref.provider)
        try:
            outcome = await _try_model(client, ref, attempt, breaker.admit, calls)
        finally:
            await client.aclose()
        if isinstance(outcome, ModelError):
            breaker.record_failure(outcome)
            if outcome.behaviour not in (Behaviour.NEXT_MODEL, Behaviour.SHRINK):
                raise ChainFailed(outcome, outcome.behaviour, calls)
            passed.append(outcome)
            continue
        breaker.record_success()
        return ChainResult(value=outcome[0], served_by=ref, calls=calls)
    if not passed:
        raise ChainFailed(ModelError("bad_request", "the model chain is empty"), Behaviour.FAIL_FAST, calls)
    raise ChainFailed(passed[-1], _exhausted_behaviour(passed), calls)


async def _try_model(
    client: ModelClient,
    ref: ModelRef,
    attempt: Attempt[T],
    admit: Callable[[ModelClient], Awaitable[None]],
    calls: list[CallRecord],
) -> tuple[T, list[ChatReply]] | ModelError:
    for shrink in range(MAX_SHRINKS + 1):
        try:
            await admit(client)
            value, replies = await attempt(client, ref, shrink)
        except ModelError as error:
            error.model = error.model or ref.model
            calls.append(CallRecord(model=ref.label, error=str(error)))
            log.warning("model call to %s failed: %s -> %s", ref.label, error, error.behaviour.value)
            if error.behaviour is Behaviour.SHRINK and shrink < MAX_SHRINKS:
                continue
            return error
        served = [
            CallRecord(ref.label, r.prompt_tokens, r.completion_tokens, r.latency_seconds) for r in replies
        ]
        for record in served:
            log.info(
                "model call served by %s: %d prompt + %d completion tokens in %.2fs",
                record.model,
                record.prompt_tokens,
                record.completion_tokens,
                record.latency_seconds,
            )
        calls.extend(served)
        return value, replies
    raise AssertionError("unreachable: the loop returns")


def _exhausted_behaviour(errors: list[ModelError]) -> Behaviour:
    """Every model was passed over: retry later if any failure was transient, else a human must act."""
    if any(e.kind in ("unreachable", "server_error") for e in errors):
        return Behaviour.BACKOFF
    return Behaviour.FAIL_FAST


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """AWS "full jitter": uniform(0, min(cap, base * 2^(attempt-1)))."""
    return random.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))


def to_application_error(failed: ChainFailed, attempt: int, settings: Settings) -> ApplicationError:
    """The Temporal side of BEHAVIOUR: a jittered retry, a durable wait, or a non-retryable failure."""
    error = failed.error
    message = f"{failed.behaviour.name.lower()}: {error}"
    if failed.behaviour is Behaviour.BACKOFF:
        jitter = full_jitter(
            attempt, settings.models.backoff_base_seconds, settings.models.backoff_cap_seconds
        )
        delay = max(jitter, error.retry_after or 0.0, 0.05)
        return ApplicationError(
            message,
            type=f"Model{error.kind.title().replace('_', '')}",
            next_retry_delay=timedelta(seconds=delay),
            category=ApplicationErrorCategory.BENIGN,
        )
    if failed.behaviour is Behaviour.WAIT_RESET:
        info = {
            "provider": error.endpoint,
            "model": error.model,
            "reset_at": error.reset_at.isoformat() if error.reset_at else None,
            "retry_after_seconds": error.retry_after,
            "reason": error.message[:300],
        }
        return ApplicationError(message, info, type=USAGE_LIMIT_ERROR, non_retryable=True)
    kind = (
        "NoModelAvailable"
        if failed.behaviour is Behaviour.FAIL_FAST
        and error.kind
        in (
            "model_missing",
            "invalid_output",
            "context_exceeded",
        )
        else f"Model{error.kind.title().replace('_', '')}"
    )
    return ApplicationError(message, type=kind, non_retryable=True)


async def structured_stage(
    settings: Settings,
    chain: list[ModelRef],
    build_messages: Callable[[int], list[dict[str, Any]]],
    schema_type: type[S],
    *,
    attempt: int = 1,
) -> ChainResult[S]:
    """A classify/review style call: structured output over the chain; failures become Temporal errors.

    `build_messages(shrink_level)` must return a smaller prompt for each higher level.
    """

    async def one_model(client: ModelClient, ref: ModelRef, shrink: int) -> tuple[S, list[ChatReply]]:
        return await structured_chat(client, ref.model, build_messages(shrink), schema_type)

    try:
        return await run_chain(settings, chain, one_model)
    except ChainFailed as failed:
        raise to_application_error(failed, attempt, settings) from None
