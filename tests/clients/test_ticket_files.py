"""Ticket files: Markdown with YAML front matter in Backlog.md style, and one-line errors naming the file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from clients.ticket_files import TicketError, load_ticket_file, parse_ticket
from workflows.contracts import Ticket, is_safe_ref_name

ORIGIN = "backlog/ticket.md"


def doc(front: str, body: str = "Make it work.") -> str:
    return f"---\n{front.strip()}\n---\n{body}"


def parse(front: str, body: str = "Make it work.", **kwargs: Any) -> Ticket:
    return parse_ticket(doc(front, body), ORIGIN, **kwargs)


def error_of(text: str, origin: str = ORIGIN, defaults: dict[str, Any] | None = None) -> str:
    with pytest.raises(TicketError) as info:
        parse_ticket(text, origin, defaults)
    message = str(info.value)
    assert_one_line(message, origin)
    return message


def assert_one_line(message: str, origin: str) -> None:
    assert len(message.splitlines()) == 1, message
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{origin}: "), message
    assert "Traceback" not in message


# ------------------------------------------------------------------------------------- fields


def test_all_fields_from_front_matter() -> None:
    ticket = parse(
        """
id: task-7
title: Fix login
repo: calc
base_branch: develop
labels: [auth, ui]
priority: 1
models: {classify: [small], code: [big, bigger], review: [mid]}
agent: claude
test_command: pytest -q
depends_on: [task-1, task-2]
max_iterations: 5
budget: {tokens: 1000, usd: 2.5}
require_approval: true
agent_timeout_minutes: 30
source: https://tracker/7
"""
    )
    assert ticket.id == "task-7"
    assert ticket.title == "Fix login"
    assert ticket.body == "Make it work."
    assert ticket.repo == "calc"
    assert ticket.base_branch == "develop"
    assert ticket.labels == ["auth", "ui"]
    assert ticket.priority == 1
    assert ticket.models == {"classify": ["small"], "code": ["big", "bigger"], "review": ["mid"]}
    assert ticket.agent == "claude"
    assert ticket.test_command == "pytest -q"
    assert ticket.depends_on == ["task-1", "task-2"]
    assert ticket.max_iterations == 5
    assert ticket.budget.tokens == 1000 and ticket.budget.usd == 2.5
    assert ticket.require_approval is True
    assert ticket.agent_timeout_minutes == 30
    assert ticket.source == "https://tracker/7"


def test_backlog_md_aliases_and_ignored_fields() -> None:
    ticket = parse(
        """
id: task-3
title: Add dark mode
status: To Do
assignee: [alice]
created_date: 2025-01-02 10:00
updatedDate: 2025-01-03
parent: task-1
ordinal: 1000
base: trunk
dependencies: [task-1]
testCommand: make test
maxIterations: 2
requireApproval: yes
repo: calc
"""
    )
    assert ticket.base_branch == "trunk"
    assert ticket.depends_on == ["task-1"]
    assert ticket.test_command == "make test"
    assert ticket.max_iterations == 2
    assert ticket.require_approval is True


def test_depends_on_camel_case_alias() -> None:
    assert parse("title: T\nrepo: calc\ndependsOn: [a, b]").depends_on == ["a", "b"]


@pytest.mark.parametrize(
    ("word", "number"),
    [
        ("critical", 1),
        ("urgent", 1),
        ("high", 2),
        ("High", 2),
        (" HIGH ", 2),
        ("medium", 3),
        ("normal", 3),
        ("low", 4),
        ("lowest", 5),
        ("2", 2),
    ],
)
def test_priority_words(word: str, number: int) -> None:
    assert parse(f"title: T\nrepo: calc\npriority: {word!r}").priority == number


@pytest.mark.parametrize("value", ["asap", "0", "6", "[1]"])
def test_bad_priority_names_the_field(value: str) -> None:
    message = error_of(doc(f"title: T\nrepo: calc\npriority: {value}"))
    assert message.startswith(f"{ORIGIN}: priority: ")


def test_model_preference_becomes_the_code_models() -> None:
    assert parse("title: T\nrepo: calc\nmodelPreference: big").models == {"code": ["big"]}


def test_suggested_models_become_the_code_models() -> None:
    assert parse("title: T\nrepo: calc\nsuggestedModels: [a, b]").models == {"code": ["a", "b"]}


def test_explicit_code_models_win_over_model_preference() -> None:
    ticket = parse("title: T\nrepo: calc\nmodels: {code: [a], review: [r]}\nmodelPreference: b")
    assert ticket.models == {"code": ["a"], "review": ["r"]}


def test_models_as_a_plain_list_are_the_code_models() -> None:
    assert parse("title: T\nrepo: calc\nmodels: [a, b]").models == {"code": ["a", "b"]}


def test_unknown_model_stage_names_the_field() -> None:
    message = error_of(doc("title: T\nrepo: calc\nmodels: {plan: [a]}"))
    assert message == f"{ORIGIN}: models: unknown stage(s) ['plan']; use ['classify', 'code', 'review']"


def test_labels_and_dependencies_as_comma_strings() -> None:
    ticket = parse("title: T\nrepo: calc\nlabels: 'bug, ui ,, backend'\ndepends_on: 'task-1, task-2'")
    assert ticket.labels == ["bug", "ui", "backend"]
    assert ticket.depends_on == ["task-1", "task-2"]


def test_bad_dependency_in_a_comma_string() -> None:
    message = error_of(doc("id: t-9\ntitle: T\nrepo: calc\ndependencies: 'task-1, ../etc'"))
    assert message == f"{ORIGIN}: depends_on: '../etc' is not a valid ticket id"


def test_self_dependency() -> None:
    message = error_of(doc("id: t-9\ntitle: T\nrepo: calc\ndependencies: [t-9]"))
    assert message == f"{ORIGIN}: ticket: ticket t-9 cannot depend on itself"


def test_numeric_id_is_a_string() -> None:
    assert parse("id: 7\ntitle: T\nrepo: calc").id == "7"


def test_unknown_field_is_reported_as_a_typo() -> None:
    message = error_of(doc("title: T\nrepo: calc\npriorty: high"))
    assert message == f"{ORIGIN}: priorty: Extra inputs are not permitted"


# -------------------------------------------------------------------------- title, id and body


def test_title_from_a_leading_heading() -> None:
    ticket = parse("repo: calc", "\n# Fix the login page\n\nIt 500s on submit.\n")
    assert ticket.title == "Fix the login page"
    assert ticket.body == "It 500s on submit."


def test_heading_stays_in_the_body_when_the_front_matter_has_a_title() -> None:
    ticket = parse("title: Real title\nrepo: calc", "# Context\nDetails.")
    assert ticket.title == "Real title"
    assert ticket.body == "# Context\nDetails."


def test_file_without_front_matter_uses_heading_and_file_name() -> None:
    ticket = parse_ticket(
        "# Add dark mode\n\nUsers want it.\n", "backlog/tasks/task-12 - Add-dark-mode.md", {"repo": "calc"}
    )
    assert ticket.id == "task-12-add-dark-mode"
    assert ticket.title == "Add dark mode"
    assert ticket.body == "Users want it."


def test_id_from_the_file_name_when_missing() -> None:
    assert parse_ticket(doc("title: T\nrepo: calc"), "/x/y/Fix Login.md").id == "fix-login"


def test_file_name_that_slugifies_to_nothing_gives_a_clear_id_error() -> None:
    message = error_of(doc("title: T\nrepo: calc"), origin="/x/😀.md")
    assert message.startswith("/x/😀.md: id: must be 1-63 characters")


def test_description_is_the_body_when_the_body_is_empty() -> None:
    ticket = parse("title: T\nrepo: calc\ndescription: From the front matter.", "\n\n")
    assert ticket.body == "From the front matter."


def test_crlf_line_endings() -> None:
    ticket = parse_ticket("---\r\ntitle: T\r\nrepo: calc\r\n---\r\nBody line.\r\n", ORIGIN)
    assert ticket.title == "T" and ticket.body == "Body line."


def test_defaults_fill_in_and_the_file_wins() -> None:
    assert parse("title: T", defaults={"repo": "calc"}).repo == "calc"
    assert parse("title: T\nrepo: other", defaults={"repo": "calc"}).repo == "other"


# ----------------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (doc("repo: calc", ""), "title: must not be empty"),
        (doc("title: T\nrepo: calc", "  \n\n "), "body: must not be empty"),
        (doc("repo: calc", "# only a heading\n"), "body: must not be empty"),
        (doc("title: '   '\nrepo: calc"), "title: must not be empty"),
        (doc("title: T"), "repo: Field required"),
        (doc("title: T\nrepo: '-x'"), "repo: must not start with '-'"),
        (doc("title: T\nrepo: my repo"), "repo: must not start with '-' or contain spaces"),
        (doc("title: '😀🎉'\nrepo: calc"), "title: needs at least one ASCII letter or digit"),
        (doc('title: "a\\nb"\nrepo: calc'), "title: must be one line without control characters"),
        (doc("id: ../x\ntitle: T\nrepo: calc"), "id: must be 1-63 characters"),
        (doc("id: '-rf'\ntitle: T\nrepo: calc"), "id: must be 1-63 characters"),
        (doc(f"id: {'x' * 64}\ntitle: T\nrepo: calc"), "id: must be 1-63 characters"),
        (
            doc("title: T\nrepo: calc\nbase_branch: a..b"),
            "base_branch: 'a..b' is not a valid git branch name",
        ),
        (doc("title: T\nrepo: calc\nbase: x.lock"), "base_branch: 'x.lock' is not a valid git branch name"),
        (doc("title: T\nrepo: calc\nmax_iterations: 0"), "max_iterations: Input should be greater than"),
        (doc("title: T\nrepo: calc", "x" * (64 * 1024 + 1)), "body: is 65537 bytes; the limit is 65536"),
        (doc("title: [a, b]\nrepo: calc"), "title: Input should be a valid string"),
    ],
)
def test_malformed_tickets_are_rejected_with_the_reason(text: str, expected: str) -> None:
    message = error_of(text)
    assert message.startswith(f"{ORIGIN}: {expected}"), message


def test_invalid_yaml_names_the_file_and_line() -> None:
    text = "---\ntitle: ok\nrepo: calc\nlabels: [a, b\n---\nbody\n"
    assert error_of(text) == f"{ORIGIN}: front matter is not valid YAML at line 4"


def test_invalid_yaml_mapping_names_the_line() -> None:
    text = "---\ntitle: ok\nrepo: calc\n\nbad: a: b\n---\nbody\n"
    assert error_of(text) == f"{ORIGIN}: front matter is not valid YAML at line 5"


@pytest.mark.parametrize("front", ["- a\n- b", "just a sentence", "42", "'quoted'"])
def test_front_matter_that_is_not_a_mapping(front: str) -> None:
    assert error_of(doc(front)) == f"{ORIGIN}: front matter must be a mapping of fields"


def test_several_problems_are_reported_on_one_line() -> None:
    message = error_of(doc("id: ../x\ntitle: ''\nrepo: '-x'", " "))
    for field in ("id", "title", "body", "repo"):
        assert f"{field}: " in message


# ----------------------------------------------------------------------------------------- files


def test_load_ticket_file(tmp_path: Path) -> None:
    path = tmp_path / "task-1 - Fix login.md"
    path.write_text("---\ntitle: Fix login\npriority: high\n---\nDo it.\n", encoding="utf-8")
    ticket = load_ticket_file(path, {"repo": "calc"})
    assert (ticket.id, ticket.title, ticket.priority, ticket.repo) == (
        "task-1-fix-login",
        "Fix login",
        2,
        "calc",
    )


def test_load_ticket_file_error_starts_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "t.md"
    path.write_text("---\ntitle: ''\nrepo: calc\n---\nDo it.\n", encoding="utf-8")
    with pytest.raises(TicketError) as info:
        load_ticket_file(path)
    assert str(info.value) == f"{path}: title: must not be empty"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.md"
    with pytest.raises(TicketError) as info:
        load_ticket_file(path)
    assert_one_line(str(info.value), str(path))
    assert "cannot read ticket file" in str(info.value)
    assert "No such file or directory" in str(info.value)


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(TicketError) as info:
        load_ticket_file(tmp_path)
    assert_one_line(str(info.value), str(tmp_path))
    assert "cannot read ticket file" in str(info.value)


@pytest.mark.parametrize(
    "data", [b"\xff\xfe\x00\x01binary", b"---\ntitle: caf\xe9\n---\nbody", b"\x89PNG\r\n\x1a\n"]
)
def test_binary_or_non_utf8_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "blob.md"
    path.write_bytes(data)
    with pytest.raises(TicketError) as info:
        load_ticket_file(path)
    assert_one_line(str(info.value), str(path))
    assert "cannot read ticket file" in str(info.value)
    assert "utf-8" in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.md"
    path.write_text("---\ntitle: T\nrepo: calc\n---\nbody\n")
    path.chmod(0)
    try:
        with pytest.raises(TicketError) as info:
            load_ticket_file(path)
    finally:
        path.chmod(0o600)
    assert_one_line(str(info.value), str(path))
    assert "Permission denied" in str(info.value)


def test_example_backlog_parses() -> None:
    folder = Path(__file__).resolve().parents[2] / "examples" / "backlog"
    files = sorted(folder.glob("*.md"))
    assert files
    for path in files:
        ticket = load_ticket_file(path, {"repo": "calc"})
        assert ticket.title and ticket.body


# ------------------------------------------------------------------------------------ known bugs


@pytest.mark.parametrize("value", ["5", "true", "1.5"])
def test_scalar_model_preference_is_a_ticket_error(value: str) -> None:
    error_of(doc(f"title: T\nrepo: calc\nmodelPreference: {value}"))


def test_model_preference_and_suggested_models_together() -> None:
    ticket = parse("title: T\nrepo: calc\nmodelPreference: a\nsuggestedModels: [a, b]")
    assert ticket.models["code"][0] == "a"


@pytest.mark.parametrize("front", ['"a\\nb": 1', 'budget: {"x\\ny": 1}'])
def test_error_for_a_key_with_a_line_break_is_one_line(front: str) -> None:
    error_of(doc(f"title: T\nrepo: calc\n{front}"))


def test_null_id_is_not_the_string_none() -> None:
    ticket = parse_ticket(doc("id: null\ntitle: T\nrepo: calc"), "backlog/t-5.md")
    assert ticket.id == "t-5"


# ------------------------------------------------------------------------------------ property

FIELD_NAMES = [
    *Ticket.model_fields,
    "base",
    "dependencies",
    "dependsOn",
    "testCommand",
    "maxIterations",
    "requireApproval",
    "modelPreference",
    "suggestedModels",
    "description",
    "status",
    "assignee",
    "created_date",
    "ordinal",
]
# Keys with line breaks are a known bug (see test_error_for_a_key_with_a_line_break_is_one_line).
plain_text = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=12)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(plain_text, inner, max_size=4),
    max_leaves=10,
)
optional_good: dict[str, st.SearchStrategy[Any]] = {
    "id": st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,10}\Z"),
    "priority": st.sampled_from(["high", "low", "medium", 1, 5, 0, "urgent"]),
    "labels": st.sampled_from(["a, b", ["x"], "", [""]]),
    "depends_on": st.sampled_from(["a, b", ["t-1"], [], "x/y"]),
    "base_branch": st.sampled_from(["main", "release/1.0", "develop", "a..b"]),
    "modelPreference": st.sampled_from(["m", ["m", "n"]]),
}
required_good: dict[str, st.SearchStrategy[Any]] = {
    "title": st.sampled_from(["Fix login", "Café déjà vu", "v1.2 release"])
    | st.text(min_size=1, max_size=40),
    "repo": st.sampled_from(["calc", "/srv/calc.git", "git@h:o/r.git", "-x"]),
}
# Mostly plausible tickets (so that valid ones are common), with random extra fields on top half the time.
good_fields = st.fixed_dictionaries(required_good, optional=optional_good) | st.fixed_dictionaries(
    {}, optional={**required_good, **optional_good}
)
extra_fields: st.SearchStrategy[dict[str, Any]] = st.just({}) | st.dictionaries(
    st.sampled_from(FIELD_NAMES) | plain_text, values, max_size=6
)
front_matter = st.builds(lambda extra, good: {**extra, **good}, extra_fields, good_fields)


def hits_known_bug(meta: dict[str, Any]) -> bool:
    """A scalar modelPreference/suggestedModels raises TypeError (see test_scalar_model_preference...)."""
    for key in ("modelPreference", "suggestedModels"):
        value = meta.get(key)
        if value and not isinstance(value, str | list | dict):
            return True
    return False


def check_outcome(text: str) -> None:
    try:
        ticket = parse_ticket(text, ORIGIN)
    except TicketError as exc:
        assert_one_line(str(exc), ORIGIN)
        return
    assert isinstance(ticket, Ticket)
    assert Ticket.model_validate_json(ticket.model_dump_json()) == ticket
    assert is_safe_ref_name(ticket.branch)
    assert ticket.title == ticket.title.strip() and ticket.body.strip()


@given(meta=front_matter, body=st.just("Do the thing.") | st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_any_front_matter_gives_a_ticket_or_a_ticket_error(meta: dict[str, Any], body: str) -> None:
    assume(not hits_known_bug(meta))
    check_outcome(f"---\n{yaml.safe_dump(meta, allow_unicode=True)}---\n{body}")


@given(text=st.text(max_size=400))
@settings(max_examples=200, deadline=None)
def test_any_text_gives_a_ticket_or_a_ticket_error(text: str) -> None:
    check_outcome(text)
    check_outcome(f"---\n{text}")
    check_outcome(f"---\n{text}\n---\nbody")
