"""The native `ollama` coding agent: a tool-calling loop over the `code` model chain.

Tools: list, read, write and replace in files, search, run the test command, finish, ask a human. Every
path is confined to the worktree (resolved, so symlinks pointing out are refused too) and .git is off
limits. Each change is a step (a WIP commit via run.on_step). The loop ends with the Agent protocol's
outcomes: done (finish, or a reply without tool calls), blocked (a question, the turn limit, the token
budget), usage_limit (reset_at for the workflow's durable wait); other model failures become the
Temporal errors base.BEHAVIOUR prescribes.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio import activity

from activities import checks, stack
from activities.agents.base import AgentRun
from activities.llm.base import Behaviour, ChatReply, ChatRequest, ModelClient
from activities.llm.budget import TokenLedger, tool_results_shrunk
from activities.llm.chains import ChainFailed, ModelRef, run_chain, stage_chain, to_application_error
from activities.llm.structured import checked_chat
from activities.settings import AgentConfig, Settings
from workflows.contracts import AgentResult, TokenUsage

MAX_READ_CHARS = 20_000
MAX_TOOL_OUTPUT = 8_000
MAX_LIST = 400
MAX_HITS = 100
TEST_TIMEOUT_SECONDS = 600.0


class ToolError(Exception):
    """A tool call the agent got wrong: reported back to the model, never fatal."""


def _function(name: str, description: str, **params: str) -> dict[str, Any]:
    props = {key: {"type": "string", "description": text} for key, text in params.items()}
    required = [key for key in params if not params[key].startswith("optional")]
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }


TOOLS = [
    _function("list_files", "List files under a directory of the repository", path="optional: directory"),
    _function(
        "read_file",
        "Read a text file",
        path="file path",
        start_line="optional: first line",
        end_line="optional: last line",
    ),
    _function("write_file", "Create or overwrite a file", path="file path", content="the whole new content"),
    _function(
        "replace_in_file",
        "Replace one exact occurrence of `old` with `new` in a file",
        path="file path",
        old="exact text to replace (must occur once)",
        new="replacement text",
    ),
    _function("search", "Search files for a regular expression", pattern="regex", path="optional: directory"),
    _function("run_tests", "Run the project's test command and see its output"),
    _function("finish", "The ticket is done; summarise the change", summary="what you changed and why"),
    _function("ask_human", "Stop and ask a human a question you cannot answer yourself", question="question"),
]

_SYSTEM = (
    "You are a careful software engineer working in a git repository. Use the tools to inspect the "
    "code, make the smallest change that does what the ticket asks, add or update tests, run the tests, "
    "and call finish with a summary when they pass. Paths are relative to the repository root."
)


@dataclass
class Workspace:
    """The worktree as the tools see it."""

    root: Path
    test_command: str | None
    changed: list[str] = field(default_factory=list)

    def confined(self, relative: str, *, must_exist: bool = False) -> Path:
        if not relative or "\x00" in relative:
            raise ToolError("a path is required")
        root = self.root.resolve()
        target = (root / relative).resolve()  # resolve() follows symlinks: a link out is refused too
        if target != root and not target.is_relative_to(root):
            raise ToolError(f"{relative!r} is outside the repository")
        inside = target.relative_to(root).parts
        if inside and inside[0] == ".git":
            raise ToolError(".git is off limits")
        if must_exist and not target.exists():
            raise ToolError(f"{relative!r} does not exist")
        return target

    def show(self, path: Path) -> str:
        return str(path.relative_to(self.root.resolve()))


def _text(path: Path) -> str:
    if not path.is_file():
        raise ToolError(f"{path.name} is not a file")
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise ToolError(f"{path.name} is binary")
    return data.decode("utf-8", errors="replace")


def _files(ws: Workspace, base: Path) -> list[Path]:
    found = []
    for path in sorted(base.rglob("*")):
        parts = path.relative_to(ws.root.resolve()).parts
        if ".git" in parts or "__pycache__" in parts or not path.is_file():
            continue
        found.append(path)
    return found


def tool_list(ws: Workspace, path: str = ".") -> str:
    base = ws.confined(path or ".", must_exist=True)
    names = [ws.show(p) for p in _files(ws, base)]
    more = f"\n... {len(names) - MAX_LIST} more" if len(names) > MAX_LIST else ""
    return "\n".join(names[:MAX_LIST]) + more or "(empty)"


def tool_read(ws: Workspace, path: str, start_line: str = "", end_line: str = "") -> str:
    lines = _text(ws.confined(path, must_exist=True)).splitlines()
    start = max(1, int(start_line or 1))
    end = min(len(lines), int(end_line or len(lines)))
    numbered = "\n".join(f"{n:>5}  {lines[n - 1]}" for n in range(start, end + 1))
    return numbered[:MAX_READ_CHARS] or "(empty file)"


def tool_write(ws: Workspace, path: str, content: str) -> str:
    target = ws.confined(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content, encoding="utf-8")
    ws.changed.append(ws.show(target))
    return f"wrote {ws.show(target)} ({len(content.splitlines())} lines)"


def tool_replace(ws: Workspace, path: str, old: str, new: str) -> str:
    target = ws.confined(path, must_exist=True)
    text = _text(target)
    count = text.count(old) if old else 0
    if count != 1:
        raise ToolError(f"`old` occurs {count} times in {path}; it must occur exactly once")
    target.write_text(text.replace(old, new, 1), encoding="utf-8")
    ws.changed.append(ws.show(target))
    return f"replaced 1 occurrence in {ws.show(target)}"


def tool_search(ws: Workspace, pattern: str, path: str = ".") -> str:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ToolError(f"bad regular expression: {exc}") from exc
    hits: list[str] = []
    for file in _files(ws, ws.confined(path or ".", must_exist=True)):
        try:
            lines = _text(file).splitlines()
        except ToolError:
            continue
        hits.extend(
            f"{ws.show(file)}:{n}: {line[:200]}" for n, line in enumerate(lines, 1) if regex.search(line)
        )
        if len(hits) >= MAX_HITS:
            break
    return "\n".join(hits[:MAX_HITS]) or "no matches"


async def tool_run_tests(ws: Workspace, run: AgentRun, settings: Settings) -> str:
    """The same decision, project environment, sandbox and verdict as run_checks (activities/checks.py),
    although the tool loop itself runs in the worker."""
    timeout = min(TEST_TIMEOUT_SECONDS, run.timeout_seconds)
    request = run.request
    return await checks.run_for_agent(
        settings,
        ws.root,
        request.workspace,
        request.ticket.test_command,
        timeout,
        run.on_line,
        MAX_TOOL_OUTPUT,
    )


def task_prompt(run: AgentRun) -> str:
    req = run.request
    parts = [f"Ticket {req.ticket.id}: {req.ticket.title}", req.ticket.body]
    if req.workspace.context_summary:
        parts.append(f"Repository summary:\n{req.workspace.context_summary}")
    if req.feedback:
        parts.append(f"Your previous attempt did not pass; fix this:\n{req.feedback}")
    if req.guidance:
        parts.append(f"Guidance from a human:\n{req.guidance}")
    return "\n\n".join(parts)


class OllamaAgent:
    """AGENT_KINDS factory signature: (name, config); build_agent binds the worker's settings."""

    def __init__(self, name: str, config: AgentConfig, settings: Settings | None = None) -> None:
        self.name = name
        self.config = config
        self.settings = settings

    def bind_settings(self, settings: Settings) -> None:
        self.settings = settings

    async def run(self, run: AgentRun) -> AgentResult:
        if self.settings is None:
            raise RuntimeError("the ollama agent needs the worker's settings (build_agent binds them)")
        chain = stage_chain(self.settings, "code", run.request.ticket)
        if not chain:
            return AgentResult(
                outcome="failed", reason="the ollama agent needs a `code` model chain in [models]"
            )
        loop = _Loop(self.settings, chain, run, self.config.max_turns)
        return await loop.drive()


class _Loop:
    def __init__(self, settings: Settings, chain: list[ModelRef], run: AgentRun, max_turns: int) -> None:
        self.settings, self.chain, self.run, self.max_turns = settings, chain, run, max_turns
        req = run.request
        self.ws = Workspace(run.worktree, stack.agent_test_command(req.ticket, req.workspace))
        budget = req.tokens_left if req.tokens_left is not None else req.ticket.budget.tokens
        self.ledger = TokenLedger(budget=budget)
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": task_prompt(run)},
        ]
        self.model: str | None = None
        self.started = time.monotonic()

    def result(self, outcome: str, reason: str, **extra: Any) -> AgentResult:
        spent = self.ledger.spent
        return AgentResult.model_validate(
            {
                "outcome": outcome,
                "reason": reason[:500],
                "model": self.model,
                "tokens": TokenUsage(prompt=spent.get("prompt", 0), completion=spent.get("completion", 0)),
                "duration_seconds": round(time.monotonic() - self.started, 3),
                "output_tail": self.ledger.warnings[-3:],
                **extra,
            }
        )

    async def drive(self) -> AgentResult:
        for turn in range(1, self.max_turns + 1):
            try:
                reply = await self.ask()
            except ChainFailed as failed:
                return self.model_failure(failed)
            self.messages.append(_assistant_message(reply))
            if not reply.tool_calls:
                return self.result("done", reply.content.strip() or "the model ended without a summary")
            for call in reply.tool_calls:
                ended = await self.execute(call.name, call.arguments)
                if ended is not None:
                    return ended
            if self.ledger.exhausted:
                return self.result(
                    "blocked", f"token budget of {self.ledger.budget} reached after {turn} turns"
                )
        return self.result(
            "blocked", f"turn limit of {self.max_turns} reached before the agent called finish"
        )

    async def ask(self) -> ChatReply:
        async def one_model(
            client: ModelClient, ref: ModelRef, shrink: int
        ) -> tuple[ChatReply, list[ChatReply]]:
            request = ChatRequest(
                model=ref.model, messages=tool_results_shrunk(self.messages, shrink), tools=TOOLS
            )
            reply = await checked_chat(client, request)
            return reply, [reply]

        result = await run_chain(self.settings, self.chain, one_model)
        self.model = result.served_by.label
        self.ledger.add("prompt", result.tokens.prompt)
        self.ledger.add("completion", result.tokens.completion)
        return result.value

    def model_failure(self, failed: ChainFailed) -> AgentResult:
        error = failed.error
        if failed.behaviour is Behaviour.WAIT_RESET:
            extra: dict[str, Any] = {
                "reset_at": error.reset_at,
                "retry_after_seconds": error.retry_after,
                "provider": error.endpoint,
            }
            return self.result("usage_limit", f"{error.endpoint}: {error.message}", **extra)
        raise to_application_error(failed, activity.info().attempt, self.settings)

    async def execute(self, name: str, arguments: dict[str, Any]) -> AgentResult | None:
        self.run.on_line(f"tool {name} {json.dumps(arguments)[:200]}")
        if name == "finish":
            return self.result("done", str(arguments.get("summary") or "finished"))
        if name == "ask_human":
            return self.result("blocked", str(arguments.get("question") or "the agent asked for help"))
        try:
            output = await self.tool(name, {k: str(v) for k, v in arguments.items()})
        except ToolError as exc:
            output = f"error: {exc}"
        except KeyError as exc:
            output = f"error: missing argument {exc}"
        except (OSError, ValueError, TypeError) as exc:
            output = f"error: {type(exc).__name__}: {exc}"
        self.messages.append({"role": "tool", "tool_name": name, "content": output[:MAX_TOOL_OUTPUT]})
        if name in ("write_file", "replace_in_file") and not output.startswith("error"):
            await self.run.on_step(f"{name} {arguments.get('path', '')}")
        return None

    async def tool(self, name: str, args: dict[str, str]) -> str:
        ws = self.ws
        if name == "list_files":
            return tool_list(ws, args.get("path", "."))
        if name == "read_file":
            return tool_read(ws, args["path"], args.get("start_line", ""), args.get("end_line", ""))
        if name == "write_file":
            return tool_write(ws, args["path"], args["content"])
        if name == "replace_in_file":
            return tool_replace(ws, args["path"], args["old"], args["new"])
        if name == "search":
            return tool_search(ws, args["pattern"], args.get("path", "."))
        if name == "run_tests":
            return await tool_run_tests(ws, self.run, self.settings)
        raise ToolError(f"unknown tool {name!r}; use one of {[t['function']['name'] for t in TOOLS]}")


def _assistant_message(reply: ChatReply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"function": {"name": c.name, "arguments": c.arguments}} for c in reply.tool_calls
        ]
    return message
