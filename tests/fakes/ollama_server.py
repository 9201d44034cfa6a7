"""Our own Ollama API on 127.0.0.1, faithful to what activities/llm relies on (research/adapters.md §1).

Speaks POST /api/chat (NDJSON stream or one object), GET /api/tags, POST /api/show, GET /api/version,
with Ollama's real error bodies and status codes. Each test scripts the replies: a queue per model (or
"*" for any), each entry a Reply or a Fault. Models not in `models` get Ollama's 404. A provider-wide
usage limit (`limit_until`) answers every chat with a 429 until then and counts the calls it refused.
Runs in a background thread so the test's event loop (and the worker on it) can call it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import yaml

FaultKind = Literal[
    "model_missing",  # 404 model not found
    "load_failure",  # 500 llama runner terminated
    "busy",  # 503 queue full
    "hang",  # accept, then say nothing for `seconds` (a read timeout)
    "midstream_error",  # 200, some chunks, then an {"error": ...} line
    "malformed",  # 200 with a line that is not JSON
    "rate_limited",  # 429 with Retry-After: `seconds`
    "usage_limit",  # 429 naming the reset time (header and message)
    "context",  # 400 saying the prompt exceeds the context length
    "auth",  # 401
]

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
LOAD_FAILURE_MESSAGE = "llama runner process has terminated: error loading model: out of memory"


@dataclass
class Reply:
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{"name": ..., "arguments": {...}}]
    prompt_tokens: int = 20
    completion_tokens: int = 10
    done_reason: str = "stop"


@dataclass
class Fault:
    kind: FaultKind
    seconds: float = 2.0  # hang duration, or the Retry-After / reset delay


Scripted = Reply | Fault
Responder = Callable[[dict[str, Any]], Scripted]


@dataclass
class Recorded:
    path: str
    body: dict[str, Any]
    at: float
    limited: bool = False


@dataclass
class ScriptedModelServer:
    """The state both fake servers share: installed models, scripts, limits and a request log."""

    models: set[str] = field(default_factory=lambda: {"small:latest", "big:latest"})
    scripts: dict[str, list[Scripted]] = field(default_factory=dict)
    responder: Responder | None = None
    requests: list[Recorded] = field(default_factory=list)
    limit_until: float = 0.0  # time.time() until which every chat gets a usage-limit 429
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def script(self, model: str, *items: Scripted) -> None:
        """Queue replies/faults for `model` ("*" = whichever model asks first)."""
        with self.lock:
            self.scripts.setdefault(model, []).extend(items)

    def limit_for(self, seconds: float) -> float:
        """A provider-wide usage limit from now on; returns the reset time (epoch seconds)."""
        with self.lock:
            self.limit_until = time.time() + seconds
            return self.limit_until

    def chats(self, model: str | None = None) -> list[Recorded]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r.path.endswith(("chat", "completions"))
                and (model is None or r.body.get("model") == model)
            ]

    @property
    def calls_while_limited(self) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.limited)

    def next_for(self, model: str, body: dict[str, Any]) -> Scripted:
        with self.lock:
            for key in (model, "*"):
                queue = self.scripts.get(key)
                if queue:
                    return queue.pop(0)
        if self.responder is not None:
            return self.responder(body)
        return Reply(content="{}")

    def record(self, path: str, body: dict[str, Any]) -> bool:
        """Log a request; True if it arrived while the provider is usage-limited."""
        with self.lock:
            limited = path.endswith("chat") or path.endswith("completions")
            limited = limited and time.time() < self.limit_until
            self.requests.append(Recorded(path, body, time.time(), limited))
            return limited

    def wait_or_stop(self, seconds: float) -> None:
        self.stopping.wait(seconds)


def reset_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _ollama_fault(fault: Fault, model: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    if fault.kind == "model_missing":
        return 404, {}, {"error": f'model "{model}" not found, try pulling it first'}
    if fault.kind == "load_failure":
        return 500, {}, {"error": LOAD_FAILURE_MESSAGE}
    if fault.kind == "busy":
        return 503, {}, {"error": BUSY_MESSAGE}
    if fault.kind == "rate_limited":
        return 429, {"Retry-After": f"{fault.seconds:g}"}, {"error": "too many requests, slow down"}
    if fault.kind == "usage_limit":
        reset = time.time() + fault.seconds
        return 429, {"Retry-After": f"{fault.seconds:g}"}, {"error": usage_message(reset)}
    if fault.kind == "context":
        return 400, {}, {"error": "the input length exceeds the context length"}
    if fault.kind == "auth":
        return 401, {}, {"error": "unauthorized"}
    raise ValueError(f"{fault.kind} is not a status fault")


def usage_message(reset: float) -> str:
    return f"you have reached your usage limit; it resets at {reset_iso(reset)}"


class FakeOllama(ScriptedModelServer):
    def handle(self, handler: BaseHTTPRequestHandler, method: str, path: str, body: dict[str, Any]) -> None:
        limited = self.record(path, body)
        if method == "GET" and path == "/api/version":
            return _send_json(handler, 200, {"version": "0.12.3"})
        if method == "GET" and path == "/api/tags":
            return _send_json(handler, 200, {"models": [_tag(m) for m in sorted(self.models)]})
        if method == "POST" and path == "/api/show":
            model = str(body.get("model", ""))
            if model not in self.models:
                return _send_json(handler, 404, {"error": f"model '{model}' not found"})
            return _send_json(handler, 200, _show(model))
        if method == "POST" and path == "/api/chat":
            return self._chat(handler, body, limited)
        return _send_json(handler, 404, {"error": "404 page not found"})

    def _chat(self, handler: BaseHTTPRequestHandler, body: dict[str, Any], limited: bool) -> None:
        model = str(body.get("model", ""))
        if limited:
            status, headers, payload = 429, {}, {"error": usage_message(self.limit_until)}
            headers["Retry-After"] = f"{max(0.0, self.limit_until - time.time()):.3f}"
            return _send_json(handler, status, payload, headers)
        if model not in self.models:
            return _send_json(handler, 404, {"error": f'model "{model}" not found, try pulling it first'})
        item = self.next_for(model, body)
        stream = body.get("stream", True)
        if isinstance(item, Fault):
            return self._fault(handler, item, model, stream)
        parts = _chunks(item, model)
        if not stream:
            final = {**parts[-1], "message": {**parts[-1]["message"], "content": item.content}}
            return _send_json(handler, 200, final)
        _send_stream(handler, [json.dumps(p) for p in parts])

    def _fault(self, handler: BaseHTTPRequestHandler, fault: Fault, model: str, stream: bool) -> None:
        if fault.kind == "hang":
            self.wait_or_stop(fault.seconds)
            return _send_json(handler, 200, _chunks(Reply(content="late"), model)[-1])
        if fault.kind == "midstream_error":
            first = _chunks(Reply(content="partial answer"), model)[0]
            error = {"error": "an error was encountered while running the model: unexpected EOF"}
            return _send_stream(handler, [json.dumps(first), json.dumps(error)])
        if fault.kind == "malformed":
            return _send_stream(handler, ['{"model": "' + model + '", "message": {"role": "assis'])
        if fault.kind == "usage_limit":
            self.limit_for(fault.seconds)  # a usage limit is provider-wide: later calls are refused too
        status, headers, payload = _ollama_fault(fault, model)
        _send_json(handler, status, payload, headers)


def _tag(model: str) -> dict[str, Any]:
    family = model.split(":")[0]
    return {
        "name": model,
        "model": model,
        "modified_at": "2026-11-01T10:00:00Z",
        "size": 4_700_000_000,
        "digest": "sha256:" + "0" * 64,
        "details": {
            "format": "gguf",
            "family": family,
            "parameter_size": "7B",
            "quantization_level": "Q4_K_M",
        },
    }


def _show(model: str) -> dict[str, Any]:
    return {
        "modelfile": f"FROM {model}",
        "parameters": "num_ctx 4096",
        "template": "{{ .Prompt }}",
        "details": _tag(model)["details"],
        "model_info": {"general.context_length": 32768},
        "capabilities": ["completion", "tools"],
    }


def _chunks(reply: Reply, model: str) -> list[dict[str, Any]]:
    """Content split into a few done:false chunks, then the done:true chunk with the metrics."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    pieces = [reply.content[i : i + 16] for i in range(0, len(reply.content), 16)] or [""]
    parts: list[dict[str, Any]] = [
        {"model": model, "created_at": now, "message": {"role": "assistant", "content": p}, "done": False}
        for p in pieces
    ]
    final_message: dict[str, Any] = {"role": "assistant", "content": ""}
    if reply.tool_calls:
        final_message["tool_calls"] = [
            {"function": {"name": c["name"], "arguments": c.get("arguments", {})}} for c in reply.tool_calls
        ]
    parts.append(
        {
            "model": model,
            "created_at": now,
            "message": final_message,
            "done": True,
            "done_reason": reply.done_reason,
            "total_duration": 5_191_566_416,
            "load_duration": 2_154_458,
            "prompt_eval_count": reply.prompt_tokens,
            "prompt_eval_duration": 383_809_000,
            "eval_count": reply.completion_tokens,
            "eval_duration": 4_799_921_000,
        }
    )
    return parts


def _send_json(
    handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


def _send_stream(
    handler: BaseHTTPRequestHandler, lines: list[str], content_type: str = "application/x-ndjson"
) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for line in lines:
        data = (line + "\n").encode()
        handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        handler.wfile.flush()
    handler.wfile.write(b"0\r\n\r\n")


def _handler_for(server: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _dispatch(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                return _send_json(self, 400, {"error": "invalid JSON in request body"})
            with suppress(BrokenPipeError, ConnectionResetError):
                server.handle(self, method, self.path.split("?")[0], body)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serve(fake: ScriptedModelServer, port: int = 0) -> Iterator[ScriptedModelServer]:
    """Run `fake` on 127.0.0.1 (an ephemeral port unless given) for the duration of the block."""
    httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(fake))
    httpd.daemon_threads = True
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.stopping.set()
        httpd.shutdown()
        httpd.server_close()


def refused_url() -> str:
    """A 127.0.0.1 URL nothing listens on: connecting is refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ------------------------------------------------------------------ replies for the example backlog

_RECIPE = re.compile(r"<!--\s*demo-agent\s*\n(.*?)-->", re.DOTALL)
_NUMBERED = re.compile(r"^\s*\d+  ?", re.MULTILINE)


def example_backlog_responder(body: dict[str, Any]) -> Scripted:
    """Model replies for examples/backlog: structured answers for classify/review, and for the ollama
    agent the tool calls that carry out the ticket's `<!-- demo-agent -->` recipe (the same recipe the
    demo's command agent follows), one call per turn, then run_tests and finish."""
    if body.get("format"):
        return _structured_answer(body["format"])
    messages = body.get("messages", [])
    prompt = next((str(m.get("content", "")) for m in messages if m.get("role") == "user"), "")
    match = _RECIPE.search(prompt)
    if not match:
        return Reply(tool_calls=[_call("ask_human", question="no scripted replies for this ticket")])
    recipe: dict[str, Any] = yaml.safe_load(match.group(1)) or {}
    if recipe.get("ask") and "Guidance from a human" not in prompt:
        return Reply(tool_calls=[_call("ask_human", question=str(recipe["ask"]))])
    retry = "Your previous attempt did not pass" in prompt
    first_try = None if retry else recipe.get("first_try")
    edits: list[dict[str, Any]] = first_try or recipe.get("steps") or []
    actions = [action for edit in edits for action in _edit_actions(edit)]
    actions += [("run_tests", {}), ("finish", {"summary": "; ".join(str(e["describe"]) for e in edits)})]
    turn = sum(1 for m in messages if m.get("role") == "assistant")
    name, arguments = actions[min(turn, len(actions) - 1)]
    if name == "append_file":  # needs the file as the previous read_file returned it
        last_read = next(str(m["content"]) for m in reversed(messages) if m.get("tool_name") == "read_file")
        current = "" if last_read == "(empty file)" else _NUMBERED.sub("", last_read) + "\n"
        name, arguments = "write_file", {"path": arguments["path"], "content": current + arguments["append"]}
    return Reply(tool_calls=[_call(name, **arguments)], prompt_tokens=400 + 50 * turn, completion_tokens=60)


def _edit_actions(edit: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    path = str(edit["file"])
    if "write" in edit:
        return [("write_file", {"path": path, "content": str(edit["write"])})]
    if "replace" in edit:
        spec = edit["replace"]
        return [("replace_in_file", {"path": path, "old": str(spec["old"]), "new": str(spec["new"])})]
    return [("read_file", {"path": path}), ("append_file", {"path": path, "append": str(edit["append"])})]


def _call(name: str, **arguments: str) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def _structured_answer(schema: dict[str, Any]) -> Reply:
    properties = schema.get("properties", {})
    if "findings" in properties:
        return Reply(content=json.dumps({"findings": [], "summary": "the change does what the ticket asks"}))
    answer = {"kind": "feature", "complexity": "low", "risk": "low", "rationale": "a small, contained change"}
    return Reply(content=json.dumps(answer), prompt_tokens=150, completion_tokens=30)


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.fakes.ollama_server --port 11435`: serve the example-backlog replies until killed
    (for the offline demo: no real Ollama, but the whole model path still runs)."""
    import argparse

    parser = argparse.ArgumentParser(description="ticketflow's fake Ollama with replies for examples/backlog")
    parser.add_argument("--port", type=int, default=11435)
    parser.add_argument(
        "--models",
        nargs="*",
        default=[
            "qwen2.5:3b",
            "qwen2.5-coder:14b",
            "qwen2.5-coder:7b",
            "qwen3:14b",
            "small:latest",
            "big:latest",
        ],
    )
    args = parser.parse_args(argv)
    fake = FakeOllama(models=set(args.models), responder=example_backlog_responder)
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), _handler_for(fake))
    print(f"fake Ollama (replies written for examples/backlog) on http://127.0.0.1:{args.port}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
