"""Structured output validated by pydantic: the schema goes to the server (Ollama `format`, OpenAI
`response_format`) and into the prompt; an invalid reply gets one corrective retry with the validation
error, then the chain moves on to the next model (invalid_output)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from activities.llm.base import ChatReply, ChatRequest, ModelClient, ModelError
from activities.llm.budget import ensure_fits

T = TypeVar("T", bound=BaseModel)


async def checked_chat(client: ModelClient, request: ChatRequest) -> ChatReply:
    """chat() behind the context check: a prompt that would be truncated is never sent."""
    ensure_fits(request, client.context_window, client.endpoint)
    return await client.chat(request)


def _short(error: ValidationError) -> str:
    lines = [f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in error.errors()[:5]]
    return "; ".join(lines)


def schema_instruction(schema_type: type[BaseModel]) -> str:
    schema = json.dumps(schema_type.model_json_schema(), separators=(",", ":"))
    return f"Answer with only one JSON object matching this JSON schema, no prose: {schema}"


async def structured_chat(
    client: ModelClient,
    model: str,
    messages: list[dict[str, Any]],
    schema_type: type[T],
    *,
    max_output_tokens: int = 1024,
) -> tuple[T, list[ChatReply]]:
    schema = schema_type.model_json_schema()
    request = ChatRequest(model=model, messages=messages, schema=schema, max_output_tokens=max_output_tokens)
    replies = [await checked_chat(client, request)]
    try:
        return schema_type.model_validate_json(replies[0].content), replies
    except ValidationError as first:
        problem = _short(first)
    retry = [
        *messages,
        {"role": "assistant", "content": replies[0].content[:4000]},
        {
            "role": "user",
            "content": f"That reply is not valid: {problem}. Reply again with only the corrected JSON.",
        },
    ]
    replies.append(await checked_chat(client, ChatRequest(model=model, messages=retry, schema=schema)))
    try:
        return schema_type.model_validate_json(replies[-1].content), replies
    except ValidationError as second:
        raise ModelError(
            "invalid_output",
            f"reply still invalid after one corrective retry: {_short(second)}",
            model=model,
            endpoint=client.endpoint,
        ) from second
