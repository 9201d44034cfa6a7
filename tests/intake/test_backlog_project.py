"""Real Backlog.md projects, made by the real `backlog` CLI (npm package backlog.md, pinned in .ci/run):
reading tasks (statuses from config.yml, priority, labels, dependencies, acceptance criteria, completed/),
and writing back through the CLI and, without it, by editing the files the way the CLI reads them.

The CLI is installed by .ci/run into .ci/node; outside CI these tests skip without it, in CI
(CI=true) a missing CLI fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from activities.settings import Settings
from clients.sources import open_source
from clients.sources.backlog_md import BacklogSource
from clients.sources.backlog_project import BacklogProjectSource
from clients.sources.base import FollowUp
from workflows.contracts import TicketState

ROOT = Path(__file__).resolve().parents[2]
PINNED = "1.52.0"  # .ci/run installs backlog.md@PINNED


@pytest.fixture(scope="module")
def backlog_cli() -> str:
    found = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "backlog"
    cli = str(found) if found.exists() else shutil.which("backlog")
    if cli is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the backlog CLI is missing: .ci/run installs it with npm into .ci/node")
        pytest.skip(
            "the backlog CLI is not installed (npm install --prefix .ci/node backlog.md@" + PINNED + ")"
        )
    version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert version == PINNED, f"backlog {version}; the tests are written against {PINNED}"
    return cli


def backlog(cli: str, project: Path, *args: str) -> str:
    done = subprocess.run(
        [cli, *args],
        cwd=project,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def project(tmp_path: Path, backlog_cli: str) -> Path:
    """A project as a person makes it with the CLI: four tasks in every status, one with criteria."""
    root = tmp_path / "app"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    backlog(backlog_cli, root, "init", "app", "--defaults", "--integration-mode", "none")
    backlog(backlog_cli, root, "config", "set", "remoteOperations", "false")
    multiply = ["Add multiply", "-d", "calc needs multiply.", "--priority", "high", "-l", "bug,calc"]
    multiply += ["--ac", "multiply(2, 3) == 6", "--ac", "tests pass"]
    backlog(backlog_cli, root, "task", "create", *multiply, "--plain")
    power = ["Add power", "-d", "calc needs pow.", "--dep", "task-1", "--priority", "low"]
    backlog(backlog_cli, root, "task", "create", *power, "--plain")
    backlog(backlog_cli, root, "task", "create", "Write docs", "-d", "docs.", "-s", "In Progress", "--plain")
    backlog(backlog_cli, root, "task", "create", "Old work", "-d", "done long ago.", "-s", "Done", "--plain")
    return root


def source(project: Path, query: str = "") -> BacklogProjectSource:
    found = open_source(f"{project}?repo=calc{query}", Settings())
    assert isinstance(found, BacklogProjectSource)
    return found


async def test_tasks_become_tickets(project: Path) -> None:
    fetched = await source(project).fetch()
    assert fetched.errors == []
    tickets = {t.id: t for t in fetched.tickets}
    assert sorted(tickets) == ["TASK-1", "TASK-2", "TASK-3"]  # Done is not open
    first, second = tickets["TASK-1"], tickets["TASK-2"]
    assert (first.title, first.priority, first.labels, first.repo) == (
        "Add multiply",
        2,
        ["bug", "calc"],
        "calc",
    )
    assert first.body == (
        "calc needs multiply.\n\nAcceptance criteria:\n- [ ] multiply(2, 3) == 6\n- [ ] tests pass"
    )
    assert (second.priority, second.depends_on) == (4, ["TASK-1"])
    assert first.source == f"backlog:{project / 'backlog'}?repo=calc#TASK-1"

    only_todo = await source(project, "&status=To Do").fetch()
    assert sorted(t.id for t in only_todo.tickets) == ["TASK-1", "TASK-2"]


async def test_done_tasks_count_as_met_dependencies_also_when_completed(
    project: Path, backlog_cli: str
) -> None:
    assert await source(project).done_ids() == {"TASK-4"}
    backlog(backlog_cli, project, "task", "complete", "task-4")
    assert list((project / "backlog" / "completed").glob("*.md"))
    assert await source(project).done_ids() == {"TASK-4"}
    assert await source(project).known_ids() == {"TASK-1", "TASK-2", "TASK-3", "TASK-4"}


@pytest.mark.parametrize("through", ["cli", "file"])
async def test_write_back_sets_status_and_notes_once(
    project: Path, backlog_cli: str, through: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = f"&cli={backlog_cli}" if through == "cli" else "&cli=none"
    src = source(project, query)
    (ticket,) = [t for t in (await src.fetch()).tickets if t.id == "TASK-1"]

    await src.mark_started(ticket)
    assert "Status: ◒ In Progress" in backlog(backlog_cli, project, "task", "view", "task-1", "--plain")

    blocked = await src.write_back(ticket, TicketState.BLOCKED, None, "which rounding?")
    done = await src.write_back(ticket, TicketState.DONE, "https://git.example/app/pull/3", "")
    again = await src.write_back(ticket, TicketState.DONE, "https://git.example/app/pull/3", "")

    assert blocked.changed and done.changed and not again.changed
    view = backlog(backlog_cli, project, "task", "view", "task-1", "--plain")  # the CLI reads what we wrote
    assert "Status: ✔ Done" in view
    assert "ticketflow: BLOCKED: which rounding?" in view
    assert view.count("ticketflow: DONE, pull request https://git.example/app/pull/3") == 1
    assert "multiply(2, 3) == 6" in view  # the rest of the task is intact
    assert "TASK-1" not in {t.id for t in (await src.fetch()).tickets}

    (failing,) = [t for t in (await src.fetch()).tickets if t.id == "TASK-3"]
    await src.write_back(failing, TicketState.FAILED, None, "no answer in 7 days")
    view = backlog(backlog_cli, project, "task", "view", "task-3", "--plain")
    assert "Status: ○ To Do" in view and "ticketflow: FAILED: no answer in 7 days" in view


@pytest.mark.parametrize("through", ["cli", "file"])
async def test_follow_ups_are_created_once(project: Path, backlog_cli: str, through: str) -> None:
    src = source(project, f"&cli={backlog_cli}" if through == "cli" else "&cli=none")
    (parent,) = [t for t in (await src.fetch()).tickets if t.id == "TASK-1"]
    follow = FollowUp("TASK-1-fu1", "Follow-up to TASK-1: tidy the rounding", "Tidy it.", 3)

    first = await src.add_follow_up(parent, follow)
    second = await src.add_follow_up(parent, follow)

    assert first == second == "TASK-5"
    listing = backlog(backlog_cli, project, "task", "list", "--plain")
    assert "TASK-5 - Follow-up to TASK-1: tidy the rounding" in listing
    (made,) = [t for t in (await src.fetch()).tickets if t.id == "TASK-5"]
    assert made.labels == ["follow-up"] and made.priority == 3 and made.body.startswith("Tidy it.")


def test_the_folder_layout_is_still_a_backlog(tmp_path: Path) -> None:
    for folder in ("todo", "doing", "done", "failed"):
        (tmp_path / "backlog" / folder).mkdir(parents=True)
    assert isinstance(open_source(str(tmp_path), Settings()), BacklogSource)
