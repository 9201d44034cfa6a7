"""Secrets must not leave the host: the scanner, redaction, and attacks through TicketWorkflow.

Every secret here is built at run time from a seeded generator, so this file does not itself look like
a leaked credential. The end-to-end attacks run a `command` agent that writes secrets into files, step
descriptions and its output, then search everything that leaves the worker for them: every object on the
bare remote, the ticket's whole Temporal history (payloads decoded), the worker's log, the per-attempt
log files and the status.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import random
import re
import string
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from activities import secrets_scan
from activities.redact import MASK, LineRedactor, RedactingFilter, redact, redact_lines
from activities.settings import Settings
from clients import tickets
from tests.conftest import script_agent
from tests.helpers import example_ticket, in_state, local_prs, submit, wait_for_status
from workers.logging_setup import setup_logging
from workflows.contracts import TicketState, TicketStatus

RNG = random.Random(1107)
ALNUM = string.ascii_letters + string.digits


def rand(chars: str, n: int) -> str:
    return "".join(RNG.choices(chars, k=n))


def mixed(n: int) -> str:
    """n random letters and digits with at least one of each class (a generated secret's shape)."""
    return (
        rand(string.ascii_uppercase, 2)
        + rand(string.digits, 2)
        + rand(string.ascii_lowercase, 2)
        + rand(ALNUM, n - 6)
    )


AWS_ID = "AKIA" + rand(string.ascii_uppercase + string.digits, 16)
AWS_SECRET = mixed(20) + "/" + mixed(19)
GH_TOKEN = "ghp" + "_" + mixed(36)
SLACK_HOOK = "https://hooks.slack.com/services/T" + rand(ALNUM, 8) + "/B" + rand(ALNUM, 8) + "/" + mixed(24)
PASSWORD = "hunter2-" + rand(string.ascii_lowercase, 6)
YAML_VALUE = mixed(32)
URL_PASSWORD = "pw-" + mixed(10)
PEM_BODY = [rand(ALNUM + "+/", 64) for _ in range(5)] + [rand(ALNUM + "+/", 40) + "=="]
PEM = "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *PEM_BODY, "-----END RSA PRIVATE KEY-----"]) + "\n"

# ------------------------------------------------------------------------------------ the scanner


def test_every_detect_secrets_plugin_is_used() -> None:
    import importlib
    import inspect
    import pkgutil

    import detect_secrets.plugins as package
    from detect_secrets.plugins.base import BasePlugin

    shipped = set()
    for module in pkgutil.iter_modules(package.__path__):
        loaded = importlib.import_module(f"detect_secrets.plugins.{module.name}")
        for _, cls in inspect.getmembers(loaded, inspect.isclass):
            if (
                issubclass(cls, BasePlugin)
                and not inspect.isabstract(cls)
                and cls.__module__ == loaded.__name__
            ):
                shipped.add(cls.__name__)
    used = {type(p).__name__ for p in secrets_scan.plugins()} | {
        base.__name__ for p in secrets_scan.plugins() for base in type(p).__mro__[1:2]
    }
    assert len(shipped) >= 27 and shipped <= used, shipped - used


@pytest.mark.parametrize(
    ("path", "line", "kind", "value"),
    [
        ("deploy/aws.py", f'KEY = "{AWS_ID}"', "AWS Access Key", AWS_ID),
        ("deploy/aws.py", f'AWS_SECRET_ACCESS_KEY = "{AWS_SECRET}"', "AWS", AWS_SECRET),
        ("scripts/release.sh", f"GITHUB_TOKEN={GH_TOKEN}", "GitHub Token", GH_TOKEN),
        ("config/notify.yaml", f"webhook: {SLACK_HOOK}", "Slack", SLACK_HOOK),
        ("deploy/prod.env", f"DB_PASSWORD={PASSWORD}", "Secret Keyword", PASSWORD),
        ("config/app.yaml", f"signing: {YAML_VALUE}", "High Entropy String", YAML_VALUE),
        ("config/app.yaml", f"api_secret: {YAML_VALUE}", "Secret Keyword", YAML_VALUE),
        ("src/db.py", f'DSN = "postgres://app:{URL_PASSWORD}@db/app"', "Basic Auth", URL_PASSWORD),
        ("keys/k.pem", "-----BEGIN RSA PRIVATE KEY-----", "Private Key", "BEGIN RSA PRIVATE KEY"),
        ("src/aws.py", f'creds = dict(key="{AWS_ID}")', "AWS Access Key", AWS_ID),  # an indirect reference
    ],
)
def test_each_kind_is_found_in_its_file(path: str, line: str, kind: str, value: str) -> None:
    hits = secrets_scan.line_hits(line, path)
    assert any(kind in k and v == value for k, v in hits), hits


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("calc.py", "def multiply(a, b):"),
        ("calc.py", "password = get_password()"),
        ("calc.py", "token_count = len(tokens)"),
        ("config/app.yaml", "token_url: https://example.com/oauth/token"),
        ("config/app.yaml", "password: ${DB_PASSWORD}"),
        ("deploy/prod.env", "DB_PASSWORD="),
        ("README.md", "Set DB_PASSWORD in the environment before you deploy."),
        ("docs/ops.md", "commit 5f2c1ab9e0d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0 fixed it"),
        ("requirements.txt", "detect-secrets==1.5.0"),
    ],
)
def test_ordinary_lines_are_not_secrets(path: str, line: str) -> None:
    assert secrets_scan.line_hits(line, path) == []


def test_scan_diff_reports_a_pem_block_and_ignores_removed_lines() -> None:
    added = "".join(f"+{line}\n" for line in PEM.splitlines())
    diff = (
        "diff --git a/keys/k.pem b/keys/k.pem\nnew file mode 100644\n--- /dev/null\n+++ b/keys/k.pem\n"
        f"@@ -0,0 +1,{len(PEM.splitlines())} @@\n{added}"
        "diff --git a/old.env b/old.env\n--- a/old.env\n+++ b/old.env\n@@ -1 +1 @@\n"
        f"-DB_PASSWORD={PASSWORD}\n+DB_HOST=db\n"
    )
    hits = secrets_scan.scan_diff(diff)
    assert {(h.file, h.line) for h in hits if h.kind == "Private Key"} >= {("keys/k.pem", 1)}
    assert not any(h.file == "old.env" for h in hits)


# ---------------------------------------------------------------------------------------- redaction

ECHO = [
    f"export AWS_ACCESS_KEY_ID={AWS_ID}",
    f"aws_secret_access_key = {AWS_SECRET}",
    *PEM.splitlines(),
    f"posting to {SLACK_HOOK}",
    f"DB_PASSWORD={PASSWORD}",
    f"PASSWORD: {PASSWORD}",
    f"cloning https://deploy:{URL_PASSWORD}@git.example.com/app.git",
    f"token is {GH_TOKEN}",
    f"config says signing: {YAML_VALUE}",
]
SECRETS = [AWS_ID, AWS_SECRET, *PEM_BODY, SLACK_HOOK, PASSWORD, URL_PASSWORD, GH_TOKEN, YAML_VALUE]


def leaked(text: str) -> list[str]:
    """The secrets (or a distinctive part of them) present in text, JSON-escaped forms included."""
    return [s for s in SECRETS if s in text or json.dumps(s)[1:-1] in text or s[8:28] in text]


def test_redact_masks_every_kind_in_a_block_of_text() -> None:
    text = "\n".join(["collected 4 items", *ECHO, "4 passed in 0.12s"])
    masked = redact(text)
    assert leaked(masked) == []
    assert "collected 4 items" in masked and "4 passed in 0.12s" in masked
    assert "https://deploy:***@git.example.com/app.git" in masked


def test_streamed_lines_are_masked_one_at_a_time_a_key_whole() -> None:
    redactor = LineRedactor()
    out = [redactor(line) for line in ["start", *ECHO, "done"]]
    assert leaked("\n".join(out)) == [] and out[0] == "start" and out[-1] == "done"
    assert redact_lines(PEM.splitlines()) == [MASK] * len(PEM.splitlines())
    # A tail cut inside a key: the body lines still look like key material on their own.
    assert leaked("\n".join(redact_lines(PEM_BODY[:-1]))) == []


def test_configured_secrets_and_ordinary_output_survive_as_they_should() -> None:
    assert redact("token my-own-config-value here", ["my-own-config-value"]) == "token *** here"
    ordinary = [
        "tests/test_calc.py::test_multiply PASSED",
        "HEAD is now at 5f2c1ab9e0d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0 wip",
        "- Workflow: http://localhost:8233/namespaces/default/workflows/ticket-T-7",
        "- Tokens: 12,345 (12,000 prompt, 345 completion), cost $0.0100",
        "::ticketflow step::documented the functions",
        "run 0192a1b2-c3d4-7e8f-9a0b-1c2d3e4f5a6b of ticket-PAY-12",
    ]
    assert [redact(line) for line in ordinary] == ordinary


def test_the_log_filter_masks_messages_arguments_and_exceptions() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactingFilter(["configured-secret-value"]))
    log = logging.getLogger("ticketflow.test.redacting")
    log.addHandler(handler)
    try:
        log.warning("pushing with %s and configured-secret-value", GH_TOKEN)
        try:
            raise RuntimeError(f"git failed: https://deploy:{URL_PASSWORD}@git.example.com")
        except RuntimeError:
            log.exception("push failed")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "pushing with *** and ***" in text and "RuntimeError" in text
    assert leaked(text) == [] and "configured-secret-value" not in text


def test_redaction_keeps_up_with_agent_output() -> None:
    lines = Path(__file__).read_text().splitlines() + ECHO
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < 1.0:
        for line in lines:
            redact(line, ["configured-secret-value"])
        count += len(lines)
    rate = count / (time.perf_counter() - started)
    # Measured about 19,000 lines/s on one core; agents print far fewer. A floor, not a benchmark.
    assert rate > 2000, f"{rate:.0f} lines/s"


# ------------------------------------------------------------------------ attacks through the workflow

WORKFLOW = pytest.mark.asyncio(loop_scope="session")

AGENT = """\
import json, pathlib, time
for step in json.loads({steps!r}):
    for name, content in step["files"].items():
        path = pathlib.Path(name)
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for line in step.get("say", []):
        print(line, flush=True)
    print("::ticketflow step::" + step["what"], flush=True)
    time.sleep({pause})  # ticketflow commits the step while the agent goes on: let it finish first
time.sleep({linger})
"""


@dataclass
class Attack:
    files: dict[str, str | None]
    secrets: list[str]
    expect: list[tuple[str, int]] = field(default_factory=list)  # blocking (file, line)
    what: str = "configured the deployment"


ATTACKS = {
    "aws-key-pair": Attack(
        {"deploy/aws.py": f'AWS_ACCESS_KEY_ID = "{AWS_ID}"\nAWS_SECRET_ACCESS_KEY = "{AWS_SECRET}"\n'},
        [AWS_ID, AWS_SECRET],
        [("deploy/aws.py", 1), ("deploy/aws.py", 2)],
    ),
    "github-token": Attack(
        {"scripts/release.sh": f"#!/bin/sh\nGITHUB_TOKEN={GH_TOKEN}\ngh release create\n"},
        [GH_TOKEN],
        [("scripts/release.sh", 2)],
    ),
    "pem-private-key": Attack({"deploy/service-key.pem": PEM}, PEM_BODY, [("deploy/service-key.pem", 1)]),
    "slack-webhook": Attack(
        {"config/notify.yaml": f"channel: ops\nwebhook: {SLACK_HOOK}\n"},
        [SLACK_HOOK],
        [("config/notify.yaml", 2)],
    ),
    "password-in-prod-env": Attack(
        {"deploy/prod.env": f"DB_HOST=db\nDB_PASSWORD={PASSWORD}\n"}, [PASSWORD], [("deploy/prod.env", 2)]
    ),
    "high-entropy-yaml": Attack(
        {"config/app.yaml": f"name: calc\nregion: eu\nsigning: {YAML_VALUE}\n"},
        [YAML_VALUE],
        [("config/app.yaml", 3)],
    ),
}


def attack_agent(
    tmp_path: Path, settings: Settings, name: str, steps: list[dict[str, Any]], linger: float = 0
) -> str:
    code = AGENT.format(steps=json.dumps(steps), linger=linger, pause=2.0 if len(steps) > 1 else 0)
    settings.agents[name] = script_agent(tmp_path, name, code)
    return name


@pytest.fixture
def worker_log() -> Iterator[io.StringIO]:
    """The worker's own log handler (JSON, with its redaction) at DEBUG, for the test's duration."""
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = setup_logging("json", "DEBUG", stream=out)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def remote_dump(remote: Path) -> str:
    """Everything on the bare remote: every commit with its patch under any ref, every object, PR records."""
    log = subprocess.run(
        ["git", "--git-dir", str(remote), "log", "--all", "-p", "--format=%H%n%B"],
        capture_output=True,
        check=True,
    ).stdout
    objects = subprocess.run(
        ["git", "--git-dir", str(remote), "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True,
        check=True,
    ).stdout
    records = "\n".join(json.dumps(pr) for pr in local_prs(remote))
    return log.decode(errors="replace") + objects.decode(errors="replace") + records


def mirror_messages(settings: Settings) -> str:
    return "\n".join(
        subprocess.run(
            ["git", "--git-dir", str(m), "log", "--all", "--format=%B"], capture_output=True, text=True
        ).stdout
        for m in settings.mirrors_dir.iterdir()
    )


def _strings(node: Any, out: list[str]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("data"), str) and "metadata" in node:
            out.append(base64.b64decode(node["data"]).decode(errors="replace"))
        for value in node.values():
            _strings(value, out)
    elif isinstance(node, list):
        for value in node:
            _strings(value, out)
    elif isinstance(node, str):
        out.append(node)


async def history_text(client: Client, ticket_id: str) -> str:
    """The ticket's whole history as text, every payload decoded (they are base64 in the JSON)."""
    history = await tickets.handle_for(client, ticket_id).fetch_history()
    out: list[str] = []
    _strings(history.to_json_dict(), out)
    return "\n".join(out)


async def settled(client: Client, ticket_id: str) -> TicketStatus:
    """The ticket once DONE, BLOCKED or FAILED (a blocked ticket never returns a result)."""
    final = {TicketState.DONE, TicketState.BLOCKED, TicketState.FAILED}
    return await wait_for_status(client, ticket_id, lambda s: s.state in final, timeout=120)


async def assert_nothing_leaked(
    client: Client,
    settings: Settings,
    ticket_id: str,
    title: str,
    secrets: list[str],
    log: io.StringIO,
    remote: Path,
) -> None:
    places = {
        "remote": remote_dump(remote),
        "history": await history_text(client, ticket_id),
        "worker log": log.getvalue(),
        "attempt logs": "\n".join(p.read_text() for p in (settings.logs_dir / ticket_id).glob("*.log")),
        "status": (await tickets.status(client, ticket_id)).model_dump_json(),
    }
    # The searches can find things: the ticket's own title is in its history and status.
    assert title in places["history"] and title in places["status"]
    for where, text in places.items():
        found = [s for s in secrets if s in text or json.dumps(s)[1:-1] in text]
        assert not found, f"{len(found)} secret(s) leaked into the {where}"


@WORKFLOW
@pytest.mark.parametrize("kind", list(ATTACKS))
async def test_a_secret_in_the_work_blocks_the_ticket_and_leaves_nothing(
    client: Client, worker: Settings, tmp_path: Path, example_remote: Path, worker_log: io.StringIO, kind: str
) -> None:
    attack = ATTACKS[kind]
    agent = attack_agent(tmp_path, worker, f"leak-{kind}", [{"what": attack.what, "files": attack.files}])
    ticket = example_ticket("demo-4-readme.md", id=f"leak-{kind}", agent=agent, max_iterations=1)
    await submit(client, worker, ticket)

    status = await wait_for_status(client, ticket.id, in_state(TicketState.BLOCKED), timeout=120)
    assert status.blocked_reason and "the review found" in status.blocked_reason
    assert status.last_review is not None
    secrets = [f for f in status.last_review.blocking if f.rule == "secret"]
    assert {(f.file, f.line) for f in secrets} >= set(attack.expect), secrets
    assert all(re.search(r"\(commit [0-9a-f]{12}\)", f.message) for f in secrets)
    assert local_prs(example_remote) == []
    assert (
        subprocess.run(
            ["git", "--git-dir", str(example_remote), "rev-parse", "--verify", "--quiet", ticket.branch]
        ).returncode
        != 0
    ), "nothing may be pushed"
    await assert_nothing_leaked(
        client, worker, ticket.id, ticket.title, attack.secrets, worker_log, example_remote
    )
    await tickets.cancel(client, ticket.id, "attack test done")


@WORKFLOW
async def test_a_secret_written_then_deleted_never_reaches_the_remote(
    client: Client, worker: Settings, tmp_path: Path, example_remote: Path, worker_log: io.StringIO
) -> None:
    steps = [
        {"what": "added the config", "files": {"config/app.yaml": f"name: calc\napi_token: {YAML_VALUE}\n"}},
        {
            "what": "moved the token to the environment",
            "files": {"config/app.yaml": "name: calc\nsecret_source: env\n"},
        },
    ]
    agent = attack_agent(tmp_path, worker, "leak-then-delete", steps)
    ticket = example_ticket("demo-4-readme.md", id="leak-then-delete", agent=agent, max_iterations=1)
    await submit(client, worker, ticket)
    status = await settled(client, ticket.id)

    assert status.state is TicketState.DONE, status.blocked_reason
    review = status.last_review
    assert review is not None and not review.blocking
    [history] = [f for f in review.findings if f.rule == "secret-in-history"]
    assert (history.severity, history.file, history.line) == ("high", "config/app.yaml", 2)
    assert re.search(r"checkpoint commit [0-9a-f]{12}", history.message)
    # The remote has one squashed commit on main with the final tree, and never saw the token.
    count = subprocess.run(
        ["git", "--git-dir", str(example_remote), "rev-list", "--count", f"main..{ticket.branch}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert count.stdout.strip() == "1"
    assert "secret_source: env" in remote_dump(example_remote)
    await assert_nothing_leaked(
        client, worker, ticket.id, ticket.title, [YAML_VALUE], worker_log, example_remote
    )


@WORKFLOW
async def test_a_secret_in_a_step_description_is_in_no_commit_message(
    client: Client, worker: Settings, tmp_path: Path, example_remote: Path, worker_log: io.StringIO
) -> None:
    steps = [
        {"what": f"fetched fixtures with {GH_TOKEN} and {AWS_SECRET}", "files": {"NOTES.md": "fixtures\n"}}
    ]
    agent = attack_agent(tmp_path, worker, "leak-message", steps)
    ticket = example_ticket("demo-4-readme.md", id="leak-message", agent=agent, max_iterations=1)
    await submit(client, worker, ticket)
    status = await settled(client, ticket.id)

    assert status.state is TicketState.DONE, status.blocked_reason
    messages = mirror_messages(worker)
    assert "fetched fixtures with ***" in messages  # the checkpoint exists, its message masked
    assert GH_TOKEN not in messages and AWS_SECRET not in messages
    await assert_nothing_leaked(
        client, worker, ticket.id, ticket.title, [GH_TOKEN, AWS_SECRET], worker_log, example_remote
    )


@WORKFLOW
async def test_an_agent_echoing_secrets_leaks_them_nowhere(
    client: Client, worker: Settings, tmp_path: Path, example_remote: Path, worker_log: io.StringIO
) -> None:
    worker.live_output_seconds = 0.2
    steps = [
        {
            "what": "documented the functions",
            "files": {"NOTES.md": "notes\n"},
            "say": ["working on it", *ECHO],
        }
    ]
    agent = attack_agent(tmp_path, worker, "leak-echo", steps, linger=1.0)
    ticket = example_ticket("demo-4-readme.md", id="leak-echo", agent=agent, max_iterations=1)
    await submit(client, worker, ticket)
    status = await settled(client, ticket.id)

    assert status.state is TicketState.DONE, status.blocked_reason
    assert any("working on it" in line for line in status.last_output)  # output did reach the status
    attempt_logs = "\n".join(p.read_text() for p in (worker.logs_dir / ticket.id).glob("*.log"))
    assert "working on it" in attempt_logs
    await assert_nothing_leaked(client, worker, ticket.id, ticket.title, SECRETS, worker_log, example_remote)
