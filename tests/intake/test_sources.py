"""Ticket sources on real files and our fake GitHub: what intake reads and what write-back changes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from temporalio.testing import ActivityEnvironment

from activities.settings import Settings
from activities.writeback import WriteBackActivities
from clients.sources import SourceError, open_source, source_for_ticket, ticket_id_from
from clients.sources.backlog_md import BacklogSource
from clients.sources.base import follow_ups_for, parse_spec, split_item_ref
from clients.sources.beads import BeadsSource
from clients.sources.github_issues import GitHubIssuesSource
from clients.ticket_files import TicketError, parse_ticket
from tests.fakes.githost_server import serve_github
from tests.intake.conftest import BacklogWriter, write_beads
from workflows.contracts import Finding, Ticket, TicketState, WriteBackRequest

TOKEN = "ghs_intakeTestToken0123456789abcdef"


def _settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", github_token=SecretStr(TOKEN))


# ------------------------------------------------------------------------------------- specs & ids


def test_spec_round_trip_and_item_refs() -> None:
    spec = parse_spec("github:acme/app?label=agent&repo=calc")
    assert (spec.kind, spec.location, spec.params) == (
        "github",
        "acme/app",
        {"label": "agent", "repo": "calc"},
    )
    again, item = split_item_ref(spec.item_ref("42"))
    assert (again, item) == (spec, "42")
    with pytest.raises(SourceError, match="KIND:LOCATION"):
        parse_spec("nothing")
    with pytest.raises(SourceError, match="names no item"):
        split_item_ref("backlog:/x")


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("bd-a1b2",), "bd-a1b2"),
        (("task-1.01",), "task-1-01"),
        (("acme-app", "42"), "acme-app-42"),
        (("..",), "ticket"),
    ],
)
def test_ticket_ids_follow_the_ticket_rules(parts: tuple[str, ...], expected: str) -> None:
    assert ticket_id_from(*parts) == expected
    assert len(ticket_id_from("x" * 200, "7")) == 63 and ticket_id_from("x" * 200, "7").endswith("-7")


def test_bare_paths_pick_backlog_or_beads(tmp_path: Path, backlog: Path) -> None:
    write_beads(tmp_path / "app", [])
    assert isinstance(open_source(str(backlog), _settings(tmp_path)), BacklogSource)
    assert isinstance(open_source(str(tmp_path / "app"), _settings(tmp_path)), BeadsSource)
    with pytest.raises(SourceError, match="unknown source kind 'jira'"):
        open_source("jira:PROJ", _settings(tmp_path))
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "missing"), _settings(tmp_path))


# ------------------------------------------------------------------------------------------ backlog


async def test_backlog_fetch_reads_todo_and_doing_with_clear_errors(
    backlog: Path, write_ticket: BacklogWriter, remote: Path
) -> None:
    write_ticket("a", priority="high", depends_on=["b"], modelPreference="claude-sonnet")
    write_ticket("b", folder="doing")
    write_ticket("c", folder="done")
    (backlog / "todo" / "broken.md").write_text("---\ntitle: [unclosed\n---\nbody\n")
    source = open_source(f"backlog:{backlog}?repo={remote}", _settings(backlog))

    fetched = await source.fetch()

    assert [t.id for t in fetched.tickets] == ["b", "a"]
    a = fetched.tickets[1]
    assert (a.priority, a.depends_on, a.models, a.repo) == (
        2,
        ["b"],
        {"code": ["claude-sonnet"]},
        str(remote),
    )
    assert a.source == f"backlog:{backlog}?repo={remote}#a.md"
    assert len(fetched.errors) == 1 and "broken.md: front matter is not valid YAML" in fetched.errors[0]
    assert await source.known_ids() >= {"a", "b", "c"}


async def test_backlog_without_repo_says_how_to_name_one(backlog: Path, write_ticket: BacklogWriter) -> None:
    write_ticket("a")
    fetched = await open_source(str(backlog), _settings(backlog)).fetch()
    assert fetched.tickets == [] and "?repo=NAME" in fetched.errors[0]


async def test_backlog_moves_files_through_its_folders(
    backlog: Path, write_ticket: BacklogWriter, remote: Path
) -> None:
    write_ticket("a")
    write_ticket("b")
    source = open_source(f"{backlog}?repo={remote}", _settings(backlog))
    a, b = (await source.fetch()).tickets

    await source.mark_started(a)
    await source.mark_started(a)  # idempotent
    assert (backlog / "doing" / "a.md").is_file() and not (backlog / "todo" / "a.md").exists()

    blocked = await source.write_back(a, TicketState.BLOCKED, None, "the agent needs help")
    assert blocked.changed and (backlog / "doing" / "a.md").read_text().endswith(
        "> ticketflow: BLOCKED: the agent needs help\n"
    )
    done = await source_for_ticket(str(a.source), _settings(backlog)).write_back(
        a, TicketState.DONE, "file:///r#pull/1", ""
    )
    again = await source.write_back(a, TicketState.DONE, "file:///r#pull/1", "")
    assert done.changed and not again.changed and done.action == "a.md -> done/a.md"
    text = (backlog / "done" / "a.md").read_text()
    assert "ticketflow: DONE, pull request file:///r#pull/1" in text and text.count("DONE") == 1
    assert text.startswith('---\nid: "a"')  # front matter untouched

    await source.write_back(b, TicketState.FAILED, None, "blocked for 7 days with no answer")
    assert (backlog / "failed" / "b.md").is_file() and not (backlog / "todo" / "b.md").exists()
    assert [t.id for t in (await source.fetch()).tickets] == []


async def test_backlog_write_back_of_a_vanished_file_is_a_clear_error(
    backlog: Path, write_ticket: BacklogWriter, remote: Path
) -> None:
    write_ticket("a")
    source = open_source(f"{backlog}?repo={remote}", _settings(backlog))
    (ticket,) = (await source.fetch()).tickets
    (backlog / "todo" / "a.md").unlink()
    with pytest.raises(SourceError, match=r"a\.md is in none of todo, doing, done, failed"):
        await source.write_back(ticket, TicketState.DONE, None, "")


_YAML_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**6),
    st.text(max_size=30),
    st.lists(st.text(max_size=8), max_size=3),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    meta=st.dictionaries(
        st.sampled_from(
            [
                "id",
                "title",
                "priority",
                "depends_on",
                "dependencies",
                "labels",
                "modelPreference",
                "suggestedModels",
                "base",
                "max_iterations",
                "budget",
                "status",
                "x-custom",
                "repo",
            ]
        ),
        _YAML_SCALARS,
        max_size=6,
    ),
    raw=st.text(max_size=60),
)
def test_any_front_matter_parses_or_fails_with_one_clear_line(meta: dict[str, object], raw: str) -> None:
    front = "\n".join(f"{k}: {json.dumps(v)}" for k, v in meta.items())
    for text in (f"---\n{front}\n---\nbody text\n", f"---\n{raw}\n---\nbody\n"):
        try:
            ticket = parse_ticket(text, "backlog/todo/task-1.md", {"repo": "calc"})
        except TicketError as exc:
            message = str(exc)
            assert message.startswith("backlog/todo/task-1.md: ") and "\n" not in message.strip()
        else:
            assert ticket.id and ticket.title and ticket.body


# -------------------------------------------------------------------------------------------- beads


def _bead(
    bead_id: str, status: str = "open", priority: int = 2, deps: tuple[str, ...] = (), **extra: object
) -> dict[str, object]:
    return {
        "id": bead_id,
        "title": f"Bead {bead_id}",
        "description": f"Do {bead_id}",
        "status": status,
        "priority": priority,
        "issue_type": "task",
        "dependencies": [{"issue_id": bead_id, "depends_on_id": d, "type": "blocks"} for d in deps]
        + [{"issue_id": bead_id, "depends_on_id": "bd-zz", "type": "related"}],
        **extra,
    }


async def test_beads_fetch_and_write_back_keep_every_other_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no `bd` here: the JSONL path is under test
    repo = tmp_path / "app"
    path = write_beads(
        repo,
        [
            _bead("bd-1", priority=0, labels=["backend"], custom={"keep": True}),
            _bead("bd-2", deps=("bd-1",)),
            _bead("bd-3", status="closed"),
            _bead("bd-4", status="in_progress", priority=4),
        ],
    )
    source = open_source(f"beads:{repo}", _settings(tmp_path))
    fetched = await source.fetch()

    assert [(t.id, t.priority, t.depends_on) for t in fetched.tickets] == [
        ("bd-1", 1, []),
        ("bd-2", 3, ["bd-1"]),
        ("bd-4", 5, []),
    ]
    assert fetched.tickets[0].repo == str(repo) and fetched.tickets[0].labels == ["backend"]
    assert await source.known_ids() == {"bd-1", "bd-2", "bd-3", "bd-4"}

    before = path.read_text().splitlines()
    first = fetched.tickets[0]
    await source.mark_started(first)
    done = await source.write_back(first, TicketState.DONE, "https://x/pull/1", "")
    again = await source.write_back(first, TicketState.DONE, "https://x/pull/1", "")
    after = path.read_text().splitlines()

    assert done.changed and not again.changed
    assert after[1:] == before[1:]  # other beads untouched, byte for byte
    record = json.loads(after[0])
    assert (record["status"], record["custom"], record["close_reason"]) == (
        "closed",
        {"keep": True},
        "ticketflow: DONE, pull request https://x/pull/1",
    )
    await source.write_back(fetched.tickets[1], TicketState.FAILED, None, "fix loop ran out")
    failed = json.loads(path.read_text().splitlines()[1])
    assert failed["status"] == "blocked" and failed["notes"] == "ticketflow: FAILED: fix loop ran out"


async def test_beads_bad_line_is_a_clear_error(tmp_path: Path) -> None:
    path = write_beads(tmp_path / "app", [_bead("bd-1")])
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(SourceError, match=r"issues.jsonl:2: not a JSON line"):
        await open_source(f"beads:{tmp_path / 'app'}", _settings(tmp_path)).fetch()


# ------------------------------------------------------------------------------------ github issues


async def test_github_issues_paginate_skip_pulls_and_map_fields(tmp_path: Path) -> None:
    with serve_github(TOKEN) as fake:
        for n in range(1, 131):
            fake.add_issue(f"Issue {n}", labels=("ticketflow",) if n % 2 else ("other",))
        fake.add_issue("A pull request", labels=("ticketflow",), pull=True)
        special = fake.add_issue("Urgent", "Fix it.\nDepends on: #1, #3", labels=("ticketflow", "P1", "bug"))
        source = open_source(f"github:acme/widgets?api={fake.url}&repo=calc", _settings(tmp_path))

        fetched = await source.fetch()

    assert len(fetched.tickets) == 66 and fetched.errors == []
    issue_gets = [r for r in fake.requests if r.method == "GET"]
    assert len(issue_gets) == 1  # 66 labelled issues fit one page of 100
    urgent = fetched.tickets[-1]
    assert (urgent.id, urgent.priority, urgent.labels, urgent.depends_on) == (
        f"acme-widgets-{special}",
        1,
        ["bug"],
        ["acme-widgets-1", "acme-widgets-3"],
    )
    assert urgent.source == f"github:acme/widgets?api={fake.url}&repo=calc#{special}"


async def test_github_issues_follow_link_headers(tmp_path: Path) -> None:
    with serve_github(TOKEN) as fake:
        for n in range(1, 251):
            fake.add_issue(f"Issue {n}", labels=("ticketflow",))
        fetched = await GitHubIssuesSource(
            parse_spec(f"github:acme/widgets?api={fake.url}"), SecretStr(TOKEN)
        ).fetch()

    assert [t.title for t in fetched.tickets] == [f"Issue {n}" for n in range(1, 251)]
    pages = [r.path for r in fake.requests]
    assert len(pages) == 3 and "page=3" in pages[-1]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in fake.requests)


async def test_github_issues_rate_limits(tmp_path: Path) -> None:
    with serve_github(TOKEN, retry_after=1, reset_in=3600) as fake:
        fake.add_issue("One", labels=("ticketflow",))
        source = GitHubIssuesSource(parse_spec(f"github:acme/widgets?api={fake.url}"), SecretStr(TOKEN))
        fake.inject("secondary_rate_limit")
        assert len((await source.fetch()).tickets) == 1  # a short Retry-After is waited out in place
        fake.inject("primary_rate_limit")
        with pytest.raises(SourceError) as err:
            await source.fetch()
    assert err.value.retryable and err.value.retry_after is not None and err.value.retry_after > 3000


async def test_github_write_back_comments_once_and_relabels(tmp_path: Path) -> None:
    with serve_github(TOKEN) as fake:
        number = fake.add_issue("Fix", labels=("ticketflow", "bug"))
        source = GitHubIssuesSource(parse_spec(f"github:acme/widgets?api={fake.url}"), SecretStr(TOKEN))
        (ticket,) = (await source.fetch()).tickets

        await source.write_back(ticket, TicketState.BLOCKED, None, "which API?")
        blocked_labels = [label["name"] for label in fake.issues[0]["labels"]]
        first = await source.write_back(
            ticket, TicketState.DONE, "https://github.com/acme/widgets/pull/9", ""
        )
        again = await source.write_back(
            ticket, TicketState.DONE, "https://github.com/acme/widgets/pull/9", ""
        )

    assert blocked_labels == ["ticketflow", "bug", "ticketflow:blocked"]
    assert first.changed and not again.changed
    assert [c["body"] for c in fake.comments[number]] == [
        "ticketflow: BLOCKED: which API?",
        "ticketflow: DONE, pull request https://github.com/acme/widgets/pull/9",
    ]
    assert [label["name"] for label in fake.issues[0]["labels"]] == ["bug", "ticketflow:done"]


def fake_bd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prints: str = "''") -> Path:
    """A stand-in `bd` first on PATH that records its argv (one JSON line per call) and prints `prints`
    (a Python expression); returns the file of recorded calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "bd-calls.jsonl"
    script = bin_dir / "bd"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"print({prints})\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return calls


async def test_beads_write_back_uses_bd_when_it_is_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in `bd` records its argv: with bd present, ticketflow leaves the JSONL to it."""
    calls = fake_bd(tmp_path, monkeypatch)
    repo = tmp_path / "app"
    path = write_beads(repo, [_bead("bd-1"), _bead("bd-2", status="closed")])
    source = open_source(f"beads:{repo}", _settings(tmp_path))
    (ticket,) = (await source.fetch()).tickets
    before = path.read_text()

    await source.mark_started(ticket)
    await source.write_back(ticket, TicketState.BLOCKED, None, "which API?")
    await source.write_back(ticket, TicketState.DONE, "https://x/pull/1", "")

    assert [json.loads(line) for line in calls.read_text().splitlines()] == [
        ["update", "bd-1", "--status", "in_progress"],
        ["update", "bd-1", "--status", "blocked", "--append-notes", "ticketflow: BLOCKED: which API?"],
        ["close", "bd-1", "--reason", "ticketflow: DONE, pull request https://x/pull/1"],
    ]
    assert path.read_text() == before  # bd owns the file when it is there


# ------------------------------------------------------------------------------------- follow-ups


def _findings() -> list[Finding]:
    return [
        Finding(severity="critical", rule="secret", message="blocking, never a follow-up"),
        Finding(
            severity="medium", rule="todo-left", message="A TODO was left\nin calc.py", file="calc.py", line=3
        ),
        Finding(severity="info", rule="style", message="too small to matter"),
        Finding(severity="high", rule="broad-except", message="bare except"),
    ]


def test_follow_ups_pick_medium_and_high_non_blocking_findings(remote: Path) -> None:
    parent = Ticket(id="task-3", title="Parent", body="b", repo=str(remote), priority=2)
    made = follow_ups_for(parent, _findings(), "https://x/pull/4")

    assert [(f.ticket_id, f.priority) for f in made] == [("task-3-fu1", 3), ("task-3-fu2", 3)]
    assert made[0].title == "Follow-up to task-3: A TODO was left in calc.py"
    assert "`calc.py` line 3" in made[0].body and "https://x/pull/4" in made[0].body
    child = parent.model_copy(update={"labels": ["follow-up"]})
    assert follow_ups_for(child, _findings(), None) == []
    many = [Finding(severity="high", rule="r", message=f"m{n}") for n in range(9)]
    assert len(follow_ups_for(parent, many, None)) == 5


async def test_backlog_follow_ups_through_the_write_back_activity(
    tmp_path: Path, backlog: Path, write_ticket: BacklogWriter, remote: Path
) -> None:
    write_ticket("task-3", priority=2)
    source = open_source(f"{backlog}?repo={remote}", _settings(tmp_path))
    (parent,) = (await source.fetch()).tickets
    request = WriteBackRequest(
        ticket=parent, state=TicketState.DONE, pr_url="file:///r#pull/1", findings=_findings()
    )
    switched_on = _settings(tmp_path).model_copy(update={"follow_up_tickets": True})
    env = ActivityEnvironment()

    first = await env.run(WriteBackActivities(switched_on).write_back, request)
    again = await env.run(WriteBackActivities(switched_on).write_back, request)

    assert first.follow_ups == again.follow_ups == ["task-3-fu1", "task-3-fu2"]
    fetched = await source.fetch()
    assert [(t.id, t.labels, t.priority, t.repo) for t in fetched.tickets] == [
        ("task-3-fu1", ["follow-up"], 3, str(remote)),
        ("task-3-fu2", ["follow-up"], 3, str(remote)),
    ]
    assert fetched.errors == []


async def test_follow_ups_are_off_by_default(
    tmp_path: Path, backlog: Path, write_ticket: BacklogWriter
) -> None:
    write_ticket("task-4", repo="calc")
    (parent,) = (await open_source(str(backlog), _settings(tmp_path)).fetch()).tickets
    request = WriteBackRequest(ticket=parent, state=TicketState.DONE, findings=_findings())
    result = await ActivityEnvironment().run(WriteBackActivities(_settings(tmp_path)).write_back, request)
    assert result.follow_ups == [] and list((backlog / "todo").iterdir()) == []


async def test_github_follow_up_issue_is_created_once(tmp_path: Path) -> None:
    with serve_github(TOKEN) as fake:
        fake.add_issue("Parent", labels=("ticketflow",))
        source = GitHubIssuesSource(parse_spec(f"github:acme/widgets?api={fake.url}"), SecretStr(TOKEN))
        (parent,) = (await source.fetch()).tickets
        (follow_up, _) = follow_ups_for(parent, _findings(), "https://github.com/acme/widgets/pull/2")
        refs = [await source.add_follow_up(parent, follow_up) for _ in range(2)]
        assert (await source.fetch()).tickets == [parent]  # follow-ups wait for a human to add the label

    assert refs == ["acme/widgets#2", "acme/widgets#2"] and len(fake.issues) == 2
    assert [label["name"] for label in fake.issues[1]["labels"]] == ["ticketflow:follow-up"]


async def test_beads_follow_ups_are_appended_once_without_bd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no `bd`: the JSONL is written directly
    repo = tmp_path / "app"
    path = write_beads(repo, [_bead("bd-1")])
    source = open_source(f"beads:{repo}", _settings(tmp_path))
    (parent,) = (await source.fetch()).tickets
    (follow_up, *_) = follow_ups_for(parent, _findings(), "https://x/pull/4")

    created = await source.add_follow_up(parent, follow_up)
    again = await source.add_follow_up(parent, follow_up)

    assert created is not None and created == again and created.startswith("bd-")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in records] == ["bd-1", created]
    bead = records[1]
    assert (bead["status"], bead["issue_type"], bead["labels"]) == ("open", "task", ["follow-up"])
    assert bead["dependencies"][0]["depends_on_id"] == "bd-1"
    assert bead["dependencies"][0]["type"] == "discovered-from"
    fetched = {t.id: t for t in (await source.fetch()).tickets}
    assert fetched[created].depends_on == []  # discovered-from does not block: it can start at once
    assert "follow-up" in fetched[created].labels  # so its own review breeds no further follow-ups


async def test_beads_follow_ups_go_through_bd_when_it_is_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_bd(tmp_path, monkeypatch, prints="json.dumps({'id': 'bd-new1', 'title': sys.argv[2]})")
    repo = tmp_path / "app"
    write_beads(repo, [_bead("bd-1")])
    source = open_source(f"beads:{repo}", _settings(tmp_path))
    (parent,) = (await source.fetch()).tickets
    (follow_up, *_) = follow_ups_for(parent, _findings(), None)

    assert await source.add_follow_up(parent, follow_up) == "bd-new1"
    (argv,) = [json.loads(line) for line in calls.read_text().splitlines()]
    assert argv[:2] == ["create", follow_up.title]
    assert argv[argv.index("--deps") + 1] == "discovered-from:bd-1"
    assert argv[argv.index("--external-ref") + 1] == f"ticketflow:{follow_up.ticket_id}"
    assert argv[argv.index("--priority") + 1] == "3" and argv[-1] == "--json"  # one below bd-1 (2)
