"""Hypothesis-generated malformed tickets through `ticketflow submit`: never a crash, one clear line each.

The whole path runs: clients.cli.main parses the file (or the flags), Ticket validation, the repository
check (clients.tickets.validate_repo, real git against a real remote), then connecting. Whatever stops a
ticket must print exactly one line, `error: ...`, and exit non-zero; no traceback, no hang.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.cli import main
from tests.fuzz.fuzz_strategies import BODIES, DOCUMENTS, REPOS

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def submit(argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(["submit", *argv])
    return code, err.getvalue()


def assert_one_clear_line(code: int, stderr: str) -> None:
    # Nothing listens on the configured Temporal port, so not even a valid ticket can be submitted.
    assert code in (1, 2), (code, stderr)
    lines = stderr.strip("\n").split("\n")
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert len(lines[0]) > len("error: ") + 5, stderr
    assert "Traceback" not in stderr


@FUZZ
@given(text=DOCUMENTS)
def test_malformed_ticket_files(fuzz_env: Path, text: str) -> None:
    path = fuzz_env / "tickets" / f"t-{uuid.uuid4().hex[:8]}.md"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_one_clear_line(*submit([str(path)]))


@FUZZ
@given(data=st.binary(max_size=200))
def test_files_that_are_not_text(fuzz_env: Path, data: bytes) -> None:
    path = fuzz_env / "tickets" / f"b-{uuid.uuid4().hex[:8]}.md"
    path.write_bytes(b"---\ntitle: \xff\xfe\n---\n" + data)
    assert_one_clear_line(*submit([str(path)]))


@FUZZ
@given(title=st.text(max_size=120), body=BODIES, repo=REPOS, ticket_id=st.text(max_size=70))
def test_malformed_flags(fuzz_env: Path, title: str, body: str, repo: str, ticket_id: str) -> None:
    argv = [f"--title={title}", f"--body={body}", f"--repo={repo}"]
    if ticket_id:
        argv.append(f"--id={ticket_id}")
    assert_one_clear_line(*submit(argv))
