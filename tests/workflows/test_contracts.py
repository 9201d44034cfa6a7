"""Ticket validation: a malformed ticket is rejected with a message naming the field and the reason.

No Temporal server is needed; `git check-ref-format` is the judge of what a valid branch name is.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from clients.ticket_files import explain
from workflows.contracts import (
    MAX_BODY_BYTES,
    MAX_TITLE_CHARS,
    SLUG_MAX,
    Ticket,
    is_safe_ref_name,
    slugify,
    workflow_id_for,
)

GOOD: dict[str, Any] = {"id": "t-1", "title": "Fix login", "body": "Make login work.", "repo": "calc"}

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def make(**changes: Any) -> Ticket:
    return Ticket.model_validate({**GOOD, **changes})


def rejection(**changes: Any) -> str:
    """The one-line explanation a user sees for a ticket with `changes` applied."""
    with pytest.raises(ValidationError) as info:
        make(**changes)
    return explain(info.value)


def assert_rejected(field: str, reason: str, **changes: Any) -> None:
    message = rejection(**changes)
    assert message.startswith(f"{field}: "), message
    assert reason in message, message
    assert "\n" not in message


def git_accepts_branch(name: str) -> bool:
    done = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True, check=False)
    return done.returncode == 0


# ------------------------------------------------------------------------------------------ good


def test_good_ticket_has_defaults_and_a_branch() -> None:
    ticket = make()
    assert ticket.base_branch == "main"
    assert ticket.priority == 3
    assert ticket.max_iterations == 3
    assert ticket.labels == [] and ticket.depends_on == [] and ticket.models == {}
    assert ticket.slug == "fix-login"
    assert ticket.branch == "ticketflow/t-1-fix-login"
    assert workflow_id_for(ticket.id) == "ticket-t-1"


def test_good_ticket_is_cleaned_up() -> None:
    ticket = make(title="  Fix login  ", repo="  calc ", labels=[" ui ", "", "  "])
    assert ticket.title == "Fix login"
    assert ticket.repo == "calc"
    assert ticket.labels == ["ui"]


def test_good_ticket_round_trips_through_json() -> None:
    ticket = make(
        labels=["ui", "auth"],
        priority=1,
        models={"code": ["a", "b"], "review": ["c"]},
        depends_on=["t-0"],
        budget={"tokens": 1000, "usd": 1.5},
        base_branch="release/1.0",
    )
    assert Ticket.model_validate_json(ticket.model_dump_json()) == ticket


@pytest.mark.parametrize("ticket_id", ["a", "A", "7", "t-1", "T_1", "a-", "x" * 63, "task-7"])
def test_accepted_ids(ticket_id: str) -> None:
    assert make(id=ticket_id).id == ticket_id


@pytest.mark.parametrize("priority", [1, 5])
def test_priority_bounds_are_inclusive(priority: int) -> None:
    assert make(priority=priority).priority == priority


def test_body_of_exactly_the_limit_is_accepted() -> None:
    assert len(make(body="x" * MAX_BODY_BYTES).body) == MAX_BODY_BYTES


def test_title_of_exactly_the_limit_is_accepted() -> None:
    assert make(title="x" * MAX_TITLE_CHARS).title == "x" * MAX_TITLE_CHARS


# ------------------------------------------------------------------------------------------ ids


@pytest.mark.parametrize(
    "ticket_id",
    ["", "../x", "a/b", "a b", "-rf", "_a", "x" * 64, "ticket.lock", "a.b", "..", "a\nb", "é", "a:b", "~a"],
)
def test_unsafe_ids_are_rejected(ticket_id: str) -> None:
    assert_rejected("id", "must be 1-63 characters of letters, digits", id=ticket_id)


# ---------------------------------------------------------------------------------------- title


@pytest.mark.parametrize("title", ["", "   ", "\t\n "])
def test_empty_title(title: str) -> None:
    assert_rejected("title", "must not be empty", title=title)


@pytest.mark.parametrize("title", ["😀", "🎉🎉 ✨", "---", "!!!", "修复", "   ...   "])
def test_title_that_slugifies_to_nothing(title: str) -> None:
    assert_rejected("title", "needs at least one ASCII letter or digit", title=title)


@pytest.mark.parametrize(
    "title", ["Fix\nlogin", "Fix\rlogin", "Fix\tlogin", "Fix\x00login", "Fix\x1b[31m", "a\x7fb"]
)
def test_title_with_newlines_or_control_characters(title: str) -> None:
    assert_rejected("title", "must be one line without control characters", title=title)


def test_overlong_title() -> None:
    assert_rejected(
        "title", f"is {MAX_TITLE_CHARS + 1} characters; the limit is {MAX_TITLE_CHARS}", title="x" * 201
    )


@pytest.mark.parametrize("title", ["Fix\u2028login", "Fix\u2029login"])
def test_title_with_unicode_line_separators(title: str) -> None:
    assert_rejected("title", "must be one line", title=title)


def test_title_with_lone_surrogate() -> None:
    assert_rejected("title", "", title="Fix \ud83d login")


# ----------------------------------------------------------------------------------------- body


@pytest.mark.parametrize("body", ["", " ", "\n\t  \n"])
def test_empty_body(body: str) -> None:
    assert_rejected("body", "must not be empty: describe what the agent should do", body=body)


def test_oversized_body() -> None:
    assert_rejected(
        "body",
        f"is {MAX_BODY_BYTES + 1} bytes; the limit is {MAX_BODY_BYTES}",
        body="x" * (MAX_BODY_BYTES + 1),
    )


def test_body_limit_counts_utf8_bytes_not_characters() -> None:
    body = "é" * (MAX_BODY_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
    assert len(body) < MAX_BODY_BYTES
    assert_rejected("body", f"is {MAX_BODY_BYTES + 2} bytes", body=body)


# ----------------------------------------------------------------------------------------- repo


@pytest.mark.parametrize("repo", ["", "   "])
def test_empty_repo(repo: str) -> None:
    assert_rejected("repo", "must name a configured repository, a path or a git URL", repo=repo)


@pytest.mark.parametrize(
    "repo", ["-x", "--upload-pack=touch /tmp/pwned", "my repo", "a\tb", "/tmp/a b", "calc\x00", "calc\x1b"]
)
def test_repo_with_option_or_spaces(repo: str) -> None:
    assert_rejected("repo", "must not start with '-' or contain spaces or control characters", repo=repo)


@pytest.mark.parametrize(
    "repo", ["calc", "/srv/git/calc.git", "git@github.com:o/r.git", "https://x.org/r.git"]
)
def test_repo_forms_accepted(repo: str) -> None:
    assert make(repo=repo).repo == repo


# ---------------------------------------------------------------------------------- base branch

BAD_BRANCHES = [
    "",
    "a..b",
    "..",
    "~",
    "a~1",
    " ",
    "a b",
    "main ",
    "x.lock",
    "feature/x.lock",
    "-x",
    "/x",
    "x/",
    "x.",
    "a//b",
    "a@{1}",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[b",
    "a\\b",
    "a\x7fb",
    "a\nb",
    "x" * 201,
]


@pytest.mark.parametrize("branch", BAD_BRANCHES)
def test_unsafe_base_branch(branch: str) -> None:
    assert_rejected("base_branch", "is not a valid git branch name", base_branch=branch)


@needs_git
@pytest.mark.parametrize("branch", [b for b in BAD_BRANCHES if len(b) <= 200])
def test_rejected_base_branches_are_rejected_by_git_too(branch: str) -> None:
    assert not git_accepts_branch(branch)


GOOD_BRANCHES = ["main", "master", "develop", "release/1.0", "feature/x-y_z", "v1.2.3", "été", "a@b"]


@needs_git
@pytest.mark.parametrize("branch", GOOD_BRANCHES)
def test_accepted_base_branches_are_valid_for_git(branch: str) -> None:
    assert make(base_branch=branch).base_branch == branch
    assert git_accepts_branch(branch)


@needs_git
@pytest.mark.parametrize("branch", [".hidden", "a/.b", "a.lock/b", "HEAD"])
def test_base_branch_rules_are_a_subset_of_git(branch: str) -> None:
    assert not git_accepts_branch(branch)
    assert not is_safe_ref_name(branch)


# ------------------------------------------------------------------------------ other fields


def test_self_dependency() -> None:
    message = rejection(depends_on=["t-0", "t-1"])
    assert message == "ticket: ticket t-1 cannot depend on itself"


@pytest.mark.parametrize("dep", ["../x", "a b", "-rf", "", "x" * 64])
def test_dependency_with_invalid_id(dep: str) -> None:
    assert_rejected("depends_on", f"{dep!r} is not a valid ticket id", depends_on=["ok-1", dep])


def test_unknown_model_stage() -> None:
    assert_rejected(
        "models",
        "unknown stage(s) ['coding', 'plan']; use ['classify', 'code', 'review']",
        models={"code": ["a"], "coding": ["b"], "plan": ["c"]},
    )


def test_model_lists_must_hold_strings() -> None:
    assert_rejected("models.code", "valid list", models={"code": "gpt"})


@pytest.mark.parametrize("priority", [0, 6, -1])
def test_priority_out_of_range(priority: int) -> None:
    message = rejection(priority=priority)
    assert message.startswith("priority: Input should be"), message


@pytest.mark.parametrize("iterations", [0, 21])
def test_max_iterations_out_of_range(iterations: int) -> None:
    assert rejection(max_iterations=iterations).startswith("max_iterations: Input should be")


def test_agent_timeout_out_of_range() -> None:
    assert rejection(agent_timeout_minutes=0).startswith("agent_timeout_minutes: Input should be")


@pytest.mark.parametrize("budget", [{"tokens": 0}, {"usd": 0}, {"usd": -1.0}])
def test_budget_must_be_positive(budget: dict[str, float]) -> None:
    assert rejection(budget=budget).startswith("budget.")


@pytest.mark.parametrize("labels", [["a\nb"], ["x" * 51], ["ok", "\x00"]])
def test_bad_labels(labels: list[str]) -> None:
    assert_rejected("labels", "each label must be one line of at most 50 characters", labels=labels)


def test_unknown_field_is_a_typo_caught_at_submit() -> None:
    assert_rejected("priorty", "Extra inputs are not permitted", priorty=1)


def test_every_problem_is_reported_at_once() -> None:
    message = rejection(id="../x", title="", body=" ", repo="-x")
    for field in ("id", "title", "body", "repo"):
        assert f"{field}: " in message
    assert "\n" not in message


# --------------------------------------------------------------------------------------- slugify


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("Fix: login!", "fix-login"),
        ("Café déjà vu", "cafe-deja-vu"),
        ("  --Hello--World--  ", "hello-world"),
        ("v1.2.3 release", "v1-2-3-release"),
        ("../../etc/passwd", "etc-passwd"),
        ("x.lock", "x-lock"),
        ("😀", ""),
        ("修复", ""),
        ("", ""),
        ("ÅNGSTRÖM", "angstrom"),
    ],
)
def test_slugify(text: str, slug: str) -> None:
    assert slugify(text) == slug


def test_slugify_truncates_without_a_trailing_dash() -> None:
    assert slugify("a" * 100) == "a" * SLUG_MAX
    assert slugify("abc def", limit=4) == "abc"
    assert slugify("word " * 20, limit=SLUG_MAX).endswith("word")


@given(st.text(max_size=120))
@settings(max_examples=200, deadline=None)
def test_slugify_is_always_safe(text: str) -> None:
    slug = slugify(text)
    assert len(slug) <= SLUG_MAX
    assert all(ch in "abcdefghijklmnopqrstuvwxyz0123456789-" for ch in slug)
    assert not slug.startswith("-") and not slug.endswith("-")
    assert "--" not in slug
    assert slugify(slug) == slug


# ------------------------------------------------------------------------------------- branches

TITLES = [
    "Fix: login!",
    "Café déjà vu",
    "x.lock",
    "a..b",
    "HEAD",
    "@{0}",
    "-rf /",
    "foo/bar//baz",
    "v1.2.3 release.",
    "~^:?*[\\ weird",
    "emoji 😀 in the middle",
    "x" * MAX_TITLE_CHARS,
    "word " * 39 + "end",
    "refs/heads/main",
    "-a-",
    "a",
]


@needs_git
@pytest.mark.parametrize("title", TITLES)
@pytest.mark.parametrize("ticket_id", ["t-1", "A_", "x" * 63, "9"])
def test_branch_is_a_valid_git_ref(ticket_id: str, title: str) -> None:
    branch = make(id=ticket_id, title=title).branch
    assert branch.startswith(f"ticketflow/{ticket_id}-")
    assert git_accepts_branch(branch), branch
    assert is_safe_ref_name(branch)


@needs_git
@given(
    ticket_id=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,62}\Z"),
    title=st.text(min_size=1, max_size=MAX_TITLE_CHARS),
)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
def test_any_valid_ticket_has_a_valid_branch(ticket_id: str, title: str) -> None:
    try:
        ticket = make(id=ticket_id, title=title)
    except ValidationError:
        return
    assert git_accepts_branch(ticket.branch), ticket.branch
