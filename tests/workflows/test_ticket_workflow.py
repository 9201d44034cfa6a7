"""TicketWorkflow end to end on the real dev server: real git, real agent processes, real test runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError

from activities.settings import Settings
from clients import tickets
from tests.conftest import script_agent
from tests.helpers import example_ticket, in_state, local_prs, result_of, submit, wait_for_status
from workflows.contracts import Stage, TicketState

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_happy_path_opens_one_pr(client: Client, worker: Settings, example_remote: Path) -> None:
    ticket = example_ticket("demo-1-multiply.md")
    await submit(client, worker, ticket)
    result = await result_of(client, ticket.id)

    assert result.state is TicketState.DONE
    status = result.status
    assert status.iteration == 1
    assert status.classification is not None and status.classification.kind == "feature"
    assert status.last_checks is not None and status.last_checks.passed
    assert status.last_checks.passed_count == 4
    assert status.last_review is not None and not status.last_review.blocking
    prs = local_prs(example_remote)
    assert [pr["head"] for pr in prs] == [ticket.branch]
    assert result.pr_url and result.pr_url.endswith("#pull/1")
    assert set(status.timings) >= {
        "classify",
        "prepare_workspace",
        "run_agent",
        "run_checks",
        "review",
        "open_pr",
    }
    assert [e.state for e in status.events][-1] is TicketState.DONE


async def test_a_done_tickets_worktree_goes_back_to_the_pool(client: Client, worker: Settings) -> None:
    ticket = example_ticket("demo-1-multiply.md", id="released-1")
    await submit(client, worker, ticket)
    result = await result_of(client, ticket.id)

    assert result.state is TicketState.DONE
    assert [e.note for e in result.status.events][-1] == "worktree recycled"
    assert not (worker.worktrees_dir / ticket.id).exists()
    assert len(list(worker.worktree_pool_dir.glob("*/*"))) == 1
    assert result.status.attempts["release_workspace"] == 1


async def test_failed_checks_go_back_to_the_agent(client: Client, worker: Settings) -> None:
    ticket = example_ticket("demo-3-power.md")
    await submit(client, worker, ticket)
    result = await result_of(client, ticket.id)

    assert result.state is TicketState.DONE
    assert result.status.iteration == 2
    assert result.status.attempts["run_agent"] == 2
    assert result.status.attempts["run_checks"] == 2


async def test_fix_loop_that_runs_out_blocks_then_unblock_finishes(client: Client, worker: Settings) -> None:
    ticket = example_ticket("demo-3-power.md", id="power-once", max_iterations=1)
    await submit(client, worker, ticket)
    blocked = await wait_for_status(client, ticket.id, in_state(TicketState.BLOCKED))
    assert blocked.blocked_reason and "fix loop ran out after 1 iteration" in blocked.blocked_reason

    await tickets.unblock(client, ticket.id, "the loop must run `exponent` times")
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE
    assert result.status.iteration == 2


async def test_blocked_agent_waits_for_guidance(client: Client, worker: Settings) -> None:
    ticket = example_ticket("demo-5-rounding.md")
    await submit(client, worker, ticket)
    blocked = await wait_for_status(client, ticket.id, in_state(TicketState.BLOCKED))
    assert blocked.blocked_reason and "banker's rounding" in blocked.blocked_reason
    assert blocked.unblock_command and f"ticketflow unblock {ticket.id}" in blocked.unblock_command

    metadata = await tickets.handle_for(client, ticket.id).query("__temporal_workflow_metadata")
    details = metadata.current_details
    assert "banker's rounding" in details and "ticketflow unblock demo-5" in details

    with pytest.raises(tickets.TicketOperationError, match="no ticket 'missing'"):
        await tickets.unblock(client, "missing", "x")
    with pytest.raises(tickets.TicketOperationError, match="not AWAITING_APPROVAL"):
        await tickets.approve(client, ticket.id)
    await tickets.unblock(client, ticket.id, "round half away from zero")
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE
    with pytest.raises(tickets.TicketOperationError):
        await tickets.unblock(client, ticket.id, "again")


async def test_cancel_stops_the_agent(client: Client, worker: Settings, tmp_path: Path) -> None:
    # The sandboxed agent sees its own pid namespace and a private /tmp: it marks itself alive in its
    # HOME (the ticket's run directory), and the test finds its host pid by its script's path.
    worker.agents["slow"] = script_agent(
        tmp_path,
        "slow",
        "import os, pathlib, time\n"
        "pathlib.Path(os.environ['HOME'], 'agent-alive').write_text('alive')\n"
        "for i in range(600):\n    print('thinking', i, flush=True); time.sleep(0.1)\n",
    )
    script = worker.agents["slow"].command[-1]
    ticket = example_ticket("demo-1-multiply.md", id="cancel-me", agent="slow")
    await submit(client, worker, ticket)
    runs = worker.state_dir / "runs" / ticket.id
    await wait_for_status(
        client, ticket.id, lambda s: s.stage is Stage.RUN_AGENT and any(runs.glob("*/home/agent-alive"))
    )
    pids = _running(script)
    assert pids, "the agent runs"

    await tickets.cancel(client, ticket.id, "changed my mind")
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.CANCELLED
    notes = [e.note for e in result.status.events]
    assert notes[-2:] == ["changed my mind", "worktree recycled"]
    assert not [pid for pid in pids if _alive(pid)], "the agent process must be ended with the ticket"
    assert not _running(script)


async def test_duplicate_submit_starts_nothing(client: Client, worker: Settings) -> None:
    ticket = example_ticket("demo-4-readme.md")
    first = await tickets.submit(client, worker, ticket)
    second = await tickets.submit(client, worker, ticket)
    assert first.started and not second.started
    assert second.workflow_id == first.workflow_id and second.existing_state is not None
    await result_of(client, ticket.id)
    third = await tickets.submit(client, worker, ticket)
    assert not third.started and third.existing_state == "DONE"


async def test_transient_agent_failure_is_retried(client: Client, worker: Settings, tmp_path: Path) -> None:
    demo = worker.agents["demo"].command
    # The flag lives in the ticket's run directory (HOME's grandparent), which outlives the sandbox.
    worker.agents["flaky"] = script_agent(
        tmp_path,
        "flaky",
        "import os, pathlib, subprocess, sys\n"
        "flag = pathlib.Path(os.environ['HOME']).parents[1] / 'failed-once'\n"
        "if not flag.exists():\n    flag.write_text('x'); print('network hiccup'); sys.exit(3)\n"
        f"sys.exit(subprocess.call({demo!r}))\n",
    )
    ticket = example_ticket("demo-1-multiply.md", id="flaky-1", agent="flaky")
    await submit(client, worker, ticket)
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE

    history = await tickets.handle_for(client, ticket.id).fetch_history()
    starts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert 2 in starts, "run_agent must have been retried by Temporal"


async def test_non_retryable_stage_failure_blocks_and_retry_resumes(client: Client, worker: Settings) -> None:
    ticket = example_ticket("demo-4-readme.md", id="needs-config", agent="not-yet")
    await submit(client, worker, ticket)
    blocked = await wait_for_status(client, ticket.id, in_state(TicketState.BLOCKED))
    assert blocked.failed_stage is Stage.RUN_AGENT
    assert blocked.blocked_reason and "not retryable" in blocked.blocked_reason
    assert "'not-yet' is not configured" in blocked.blocked_reason

    worker.agents["not-yet"] = worker.agents["demo"]  # the operator fixes the configuration
    assert "retries" in await tickets.retry(client, worker, ticket.id)
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE


async def test_blocked_too_long_fails_visibly_and_retry_restarts(client: Client, worker: Settings) -> None:
    worker.blocked_timeout_seconds = 2
    worker.reminder_interval_seconds = 0.5
    ticket = example_ticket("demo-5-rounding.md", id="ignored")
    await submit(client, worker, ticket)
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(client, ticket.id)
    assert "with no answer" in str(failure.value.cause)
    summary = await tickets.describe(client, ticket.id)
    assert summary.state == "FAILED" and summary.status == "FAILED"

    worker.blocked_timeout_seconds = 3600
    assert "restarted at run_agent" in await tickets.retry(client, worker, ticket.id)
    blocked = await wait_for_status(
        client, ticket.id, lambda s: s.state is TicketState.BLOCKED and s.runs == 2
    )
    assert blocked.reminders >= 1
    await tickets.unblock(client, ticket.id, "round half away from zero")
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE


async def test_approval_gate(client: Client, worker: Settings, example_remote: Path) -> None:
    ticket = example_ticket("demo-4-readme.md", id="needs-ok", require_approval=True)
    await submit(client, worker, ticket)
    waiting = await wait_for_status(client, ticket.id, in_state(TicketState.AWAITING_APPROVAL))
    assert waiting.pr_url is None and local_prs(example_remote) == []
    with pytest.raises(tickets.TicketOperationError, match="only applies to BLOCKED"):
        await tickets.unblock(client, ticket.id, "nothing to unblock")
    await tickets.approve(client, ticket.id, "looks fine")
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE and len(local_prs(example_remote)) == 1


async def test_long_history_continues_as_new(client: Client, worker: Settings) -> None:
    worker.history_event_limit = 50
    ticket = example_ticket("demo-3-power.md", id="long-history")
    await submit(client, worker, ticket)
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE
    assert result.status.runs >= 2
    assert any("continued as new" in e.note for e in result.status.events)


def _running(script: str) -> list[int]:
    """Host pids of the processes whose command line names `script`: the agent, bwrap, the launcher."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.name.isdigit() and script.encode() in argv:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


async def test_waits_for_dependencies_to_be_done(client: Client, worker: Settings) -> None:
    worker.dependency_poll_seconds = 0.5
    first = example_ticket("demo-1-multiply.md", id="dep-first")
    second = example_ticket("demo-4-readme.md", id="dep-second", depends_on=["dep-first"])
    await submit(client, worker, second)
    waiting = await wait_for_status(client, second.id, lambda s: s.stage is Stage.DEPENDENCIES)
    assert waiting.state is TicketState.QUEUED and waiting.waiting_on == ["dep-first (MISSING)"]

    await submit(client, worker, first)
    result = await result_of(client, second.id)
    assert result.state is TicketState.DONE and result.status.waiting_on == []
    first_done = (await result_of(client, first.id)).status.updated_at
    assert first_done is not None and result.status.started_at is not None
    assert any("waiting for dep-first" in event.note for event in result.status.events)


async def test_cancelled_dependency_asks_a_human(client: Client, worker: Settings) -> None:
    worker.dependency_poll_seconds = 0.5
    first = example_ticket("demo-5-rounding.md", id="dep-cancelled")
    second = example_ticket("demo-4-readme.md", id="dep-orphan", depends_on=["dep-cancelled"])
    await submit(client, worker, first)
    await submit(client, worker, second)
    await wait_for_status(client, first.id, in_state(TicketState.BLOCKED))
    await tickets.cancel(client, first.id, "not needed")
    blocked = await wait_for_status(client, second.id, in_state(TicketState.BLOCKED))
    assert blocked.blocked_reason and "dep-cancelled: CANCELLED" in blocked.blocked_reason
    await tickets.unblock(client, second.id, "go ahead without it")
    assert (await result_of(client, second.id)).state is TicketState.DONE


async def test_a_running_agents_lines_reach_the_status(
    client: Client, worker: Settings, tmp_path: Path
) -> None:
    worker.live_output_seconds = 0.3
    worker.agents["chatty"] = script_agent(
        tmp_path,
        "chatty",
        "import time\nfor i in range(40):\n    print('reading module', i, flush=True); time.sleep(0.1)\n",
    )
    ticket = example_ticket("demo-4-readme.md", id="chatty-1", agent="chatty")
    await submit(client, worker, ticket)
    live = await wait_for_status(
        client,
        ticket.id,
        lambda s: s.stage is Stage.RUN_AGENT and any("reading module" in x for x in s.last_output),
    )
    assert live.state is TicketState.WORKING
    metadata = await tickets.handle_for(client, ticket.id).query("__temporal_workflow_metadata")
    assert "reading module" in metadata.current_details
    await tickets.cancel(client, ticket.id, "seen enough")
    assert (await result_of(client, ticket.id)).state is TicketState.CANCELLED


async def test_rollback_resets_the_worktree_before_the_agent_goes_on(
    client: Client, worker: Settings, tmp_path: Path, example_remote: Path
) -> None:
    # The flag lives in the ticket's run directory (HOME's grandparent), which outlives the sandbox.
    worker.agents["clumsy"] = script_agent(
        tmp_path,
        "clumsy",
        "import os, pathlib\n"
        "tried = pathlib.Path(os.environ['HOME']).parents[1] / 'tried-once'\n"
        "if not tried.exists():\n"
        "    tried.write_text('x'); pathlib.Path('mess.txt').write_text('oops')\n"
        "    print('::ticketflow step::made a mess'); print('::ticketflow blocked::I broke it')\n"
        "else:\n"
        "    assert not pathlib.Path('mess.txt').exists(), 'the rollback must have removed it'\n"
        "    pathlib.Path('NOTES.md').write_text('clean work\\n')\n",
    )
    ticket = example_ticket("demo-4-readme.md", id="rollback-1", agent="clumsy")
    await submit(client, worker, ticket)
    blocked = await wait_for_status(client, ticket.id, in_state(TicketState.BLOCKED))
    assert blocked.last_good_commit is None and blocked.last_commit is not None

    assert "rolls back to the base branch" in (await tickets.rollback(client, ticket.id)).message
    result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE
    assert any("rolled back to" in e.note for e in result.status.events)
    files = subprocess.run(
        ["git", "--git-dir", str(example_remote), "ls-tree", "--name-only", "-r", ticket.branch],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "NOTES.md" in files and "mess.txt" not in files
