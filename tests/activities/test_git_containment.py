"""Host-side git an agent cannot steer (activities/git_guard.py), attacked on real repositories.

Every attack makes git run `touch <marker>` if ticketflow's host-side git honoured what the attacker
wrote; the marker must never appear. The activity-level tests use a worktree prepared by
WorkspaceActivities (a mirror and a worktree in ticketflow's layout); the workflow tests at the end run
a hostile `command` agent through TicketWorkflow on the dev server, with sandbox = "off" so only the
guard stands in the way, and once with the default sandbox.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities import git_guard
from activities.git_guard import GitTampered
from activities.gitops import GitError, commit_all, git, head
from activities.repos import ResolvedRepo, check_reachable, resolve_repo
from activities.settings import Settings
from activities.workspace import WorkspaceActivities
from clients import tickets
from tests.activities.conftest import git as setup_git
from tests.conftest import script_agent
from tests.fakes.repos import add_worktree, clone, make_remote
from tests.helpers import example_ticket, in_state, result_of, submit, wait_for_status
from workflows.contracts import ReleaseRequest, Ticket, TicketState, Workspace, WorkspaceRequest

MakeTicket = Callable[..., Ticket]


def hook_script(marker: Path) -> str:
    return f"#!/bin/sh\ntouch {marker}\n"


def plant_hook(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(hook_script(marker))
    path.chmod(0o755)


def dirs(workspace: Workspace) -> tuple[Path, Path, Path]:
    """(worktree, its entry in the mirror, the mirror), read the way ticketflow made them."""
    worktree = Path(workspace.path)
    entry = Path((worktree / ".git").read_text().removeprefix("gitdir:").strip())
    return worktree, entry, entry.parent.parent


def append_config(config: Path, text: str) -> None:
    with config.open("a") as handle:
        handle.write(text)


# ------------------------------------------------------------------------------- layout and config


def test_the_guards_layout_is_the_settings_layout(local_settings: Settings) -> None:
    state = local_settings.state_dir
    assert local_settings.mirrors_dir == state / git_guard.MIRRORS
    assert local_settings.worktrees_dir == state / git_guard.WORKTREES
    assert local_settings.worktree_pool_dir == state / git_guard.POOL


def test_only_keys_ticketflow_writes_are_allowed_in_a_mirror_config() -> None:
    listing = "\0".join(
        [
            "core.repositoryformatversion\n0",
            "core.bare\ntrue",
            "remote.origin.url\n/srv/x.git",
            "remote.origin.fetch\n+refs/heads/*:refs/remotes/origin/*",
            "user.name\nticketflow",
            "branch.ticketflow/T-1.merge\nrefs/heads/main",
            "core.fsmonitor\ntouch /tmp/x",
            "core.hooksPath\n/tmp/h",
            "filter.x.clean\nevil",
            "remote.evil.url\n/tmp/e",
            "remote.origin.uploadpack\nevil",
            "include.path\n/tmp/c",
            "extensions.worktreeconfig\ntrue",
            "credential.helper",
        ]
    )
    assert git_guard.unexpected_keys(listing) == [
        "core.fsmonitor",
        "core.hooksPath",
        "credential.helper",
        "extensions.worktreeconfig",
        "filter.x.clean",
        "include.path",
        "remote.evil.url",
        "remote.origin.uploadpack",
    ]


def test_subcommand_skips_options() -> None:
    assert git_guard.subcommand(("-c", "core.quotePath=false", "diff", "--no-color")) == "diff"
    assert git_guard.subcommand(("-c", "user.name=x", "-c", "user.email=y", "commit", "-m", "m")) == "commit"
    assert git_guard.subcommand(("--no-pager", "fetch", "origin")) == "fetch"


async def test_a_new_mirror_has_no_hooks_and_an_allowed_config(workspace: Workspace) -> None:
    _, entry, mirror = dirs(workspace)
    assert not (mirror / "hooks").exists() or not any((mirror / "hooks").iterdir())
    await git_guard.verify_mirror_config(mirror)  # raises when the clone wrote something unexpected
    assert entry.parent == mirror / "worktrees"


# ------------------------------------------------------------------------- pinning on a worktree


async def test_the_git_dir_comes_from_the_mirror(workspace: Workspace) -> None:
    worktree, entry, mirror = dirs(workspace)
    out = await git(worktree, "rev-parse", "--absolute-git-dir", "--git-common-dir", "--show-toplevel")
    assert out.splitlines() == [str(entry), str(mirror), str(worktree.resolve())]


async def test_fsmonitor_in_the_mirror_config_stops_every_git_call(
    workspace: Workspace, tmp_path: Path
) -> None:
    worktree, _, mirror = dirs(workspace)
    marker = tmp_path / "fsmonitor-ran"
    append_config(mirror / "config", f"[core]\n\tfsmonitor = touch {marker}; false\n")
    (worktree / "calc.py").write_text("changed = True\n")

    with pytest.raises(GitTampered, match=r"core\.fsmonitor"):
        await commit_all(worktree, "must not run")
    with pytest.raises(GitTampered):
        await git(mirror, "rev-parse", "HEAD")
    assert not marker.exists()


async def test_fsmonitor_and_hooks_path_in_config_worktree_are_ignored(
    workspace: Workspace, tmp_path: Path
) -> None:
    worktree, entry, _ = dirs(workspace)
    marker = tmp_path / "fsmonitor-ran"
    plant_hook(tmp_path / "evil-hooks" / "post-commit", marker)
    (entry / "config.worktree").write_text(
        f"[core]\n\tfsmonitor = touch {marker}; false\n\thooksPath = {tmp_path / 'evil-hooks'}\n"
    )
    (worktree / "calc.py").write_text("changed = True\n")

    assert await commit_all(worktree, "config.worktree is not read") is not None
    assert (await git(worktree, "status", "--porcelain")) == ""
    assert not marker.exists()


async def test_hooks_in_the_worktree_gitdir_and_the_mirror_never_run(
    workspace: Workspace, tmp_path: Path
) -> None:
    worktree, entry, mirror = dirs(workspace)
    marker = tmp_path / "hook-ran"
    for where in (entry / "hooks", mirror / "hooks"):
        for name in ("pre-commit", "post-commit", "reference-transaction", "post-index-change"):
            plant_hook(where / name, marker)
    (worktree / "calc.py").write_text("changed = True\n")

    commit = await commit_all(worktree, "no hook runs")
    assert commit is not None and commit == await head(worktree)
    await git(mirror, "update-ref", "refs/heads/scratch", commit)  # a reference transaction in the mirror
    assert not marker.exists()


async def test_a_rewritten_dot_git_file_is_never_followed(workspace: Workspace, tmp_path: Path) -> None:
    worktree, _, mirror = dirs(workspace)
    marker = tmp_path / "hostile-gitdir-used"
    hostile = tmp_path / "hostile.git"
    shutil.copytree(mirror, hostile, symlinks=True)
    plant_hook(hostile / "hooks" / "post-commit", marker)
    append_config(hostile / "config", f"[core]\n\tfsmonitor = touch {marker}; false\n")
    (worktree / ".git").write_text(f"gitdir: {hostile}\n")
    (worktree / "calc.py").write_text("changed = True\n")

    with pytest.raises(GitError, match="does not point at"):
        await commit_all(worktree, "must not run")
    with pytest.raises(GitTampered, match=r"\.git"):
        await git_guard.guard(worktree, workspace.branch)
    assert not marker.exists()


async def test_a_redirected_commondir_is_ignored(workspace: Workspace, tmp_path: Path) -> None:
    worktree, entry, mirror = dirs(workspace)
    marker = tmp_path / "hostile-common-used"
    hostile = tmp_path / "hostile-common.git"
    shutil.copytree(mirror, hostile, symlinks=True)
    append_config(hostile / "config", f"[core]\n\tfsmonitor = touch {marker}; false\n")
    (entry / "commondir").write_text(f"{hostile}\n")
    (worktree / "calc.py").write_text("changed = True\n")

    with pytest.raises(GitError, match="commondir does not point at the mirror"):
        await commit_all(worktree, "must not run")  # git's ref store would follow the file
    with pytest.raises(GitTampered, match="commondir"):
        await git_guard.guard(worktree, workspace.branch)
    assert not marker.exists()


async def test_a_nested_repository_runs_none_of_its_drivers(workspace: Workspace, tmp_path: Path) -> None:
    worktree = Path(workspace.path)
    marker = tmp_path / "nested-filter-ran"
    nested = worktree / "vendor" / "lib"
    nested.mkdir(parents=True)
    setup_git(nested, "init", "-q", "-b", "main")
    (nested / ".gitattributes").write_text("* filter=evil\n")
    (nested / "code.txt").write_text("one\n")
    setup_git(nested, "add", "-A")
    setup_git(nested, "commit", "-q", "-m", "nested")
    append_config(
        nested / ".git" / "config",
        f"[filter \"evil\"]\n\tclean = sh -c 'touch {marker}; cat'\n"
        f"[core]\n\tfsmonitor = touch {marker}; false\n",
    )
    assert await commit_all(worktree, "embed a repository") is not None
    (nested / "code.txt").write_text("two\n")  # a dirty nested repository: git status would look inside
    await commit_all(worktree, "again")
    await git(worktree, "status", "--porcelain")
    assert not marker.exists()


async def test_no_system_or_global_config_for_local_operations(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worktree = Path(workspace.path)
    marker = tmp_path / "global-filter-ran"
    home = tmp_path / "home-with-config"
    home.mkdir()
    (home / ".gitconfig").write_text(f"[filter \"evil\"]\n\tclean = sh -c 'touch {marker}; cat'\n")
    monkeypatch.setenv("HOME", str(home))
    (worktree / ".gitattributes").write_text("*.py filter=evil\n")
    (worktree / "calc.py").write_text("changed = True\n")

    assert await commit_all(worktree, "no global filter") is not None
    assert not marker.exists()


async def test_network_operations_keep_the_operators_global_config(
    tmp_path: Path, local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decision: clone/fetch/ls-remote/push read ~/.gitconfig (url rewrites, credential helpers, proxies)."""
    remote = make_remote(tmp_path / "hosted")
    home = tmp_path / "home-with-config"
    home.mkdir()
    (home / ".gitconfig").write_text(f'[url "{remote}"]\n\tinsteadOf = hosted:calc\n')
    monkeypatch.setenv("HOME", str(home))
    assert resolve_repo(str(remote), local_settings).url == str(remote)
    await check_reachable(ResolvedRepo(name="aliased", url="hosted:calc"), "main", 30)
    with pytest.raises(GitError):  # local operations do not see it: no url.* setting at all
        await git(remote, "config", "--get-regexp", "^url\\.")


async def test_commands_without_a_repository_discover_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = clone(make_remote(tmp_path / "remote"), tmp_path / "clone")
    monkeypatch.chdir(repo)
    with pytest.raises(GitError, match="not a git repository"):
        await git(None, "rev-parse", "--git-dir")


async def test_a_bare_repository_that_is_no_mirror_keeps_its_own_config(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "srv" / "mirrors")  # named like ticketflow's folder, no mirror lock
    setup_git(remote, "config", "receive.denyNonFastForwards", "true")
    assert git_guard.locate(remote).mirror is None
    assert (await git(remote, "config", "receive.denyNonFastForwards")).strip() == "true"


async def test_an_unmanaged_linked_worktree_is_pinned_through_a_checked_gitfile(tmp_path: Path) -> None:
    repo = clone(make_remote(tmp_path / "remote"), tmp_path / "clone")
    worktree = tmp_path / "wt"
    add_worktree(repo, worktree, "ticketflow/t-9")
    out = await git(worktree, "rev-parse", "--absolute-git-dir", "--git-common-dir")
    assert out.splitlines() == [str(repo / ".git" / "worktrees" / "wt"), str(repo / ".git")]
    other = tmp_path / "other"
    other.mkdir()
    (other / ".git").write_text(f"gitdir: {repo / '.git' / 'worktrees' / 'wt'}\n")  # not its entry
    with pytest.raises(GitError, match="does not point back"):
        await git(other, "status")


async def test_a_recycled_worktree_does_not_pass_planted_hooks_on(
    local_settings: Settings, workspace: Workspace, make_ticket: MakeTicket, tmp_path: Path
) -> None:
    worktree, entry, _ = dirs(workspace)
    plant_hook(entry / "hooks" / "post-checkout", tmp_path / "hook-ran")
    acts = WorkspaceActivities(local_settings)
    request = ReleaseRequest(ticket_id="T1", workspace=workspace, state=TicketState.DONE)
    assert (await ActivityEnvironment().run(acts.release_workspace, request)).action == "recycled"

    second = await ActivityEnvironment().run(
        acts.prepare_workspace, WorkspaceRequest(ticket=make_ticket("T2"))
    )
    _, claimed, _ = dirs(second)
    assert claimed == entry and not (claimed / "hooks").exists()  # the same worktree, without the hooks
    assert not (tmp_path / "hook-ran").exists()
    assert not worktree.exists()


# ---------------------------------------------------------------------------------- the tamper check


async def test_the_guard_sees_each_kind_of_tampering(workspace: Workspace, tmp_path: Path) -> None:
    worktree, entry, mirror = dirs(workspace)
    (worktree / "calc.py").write_text("changed = True\n")
    tip = await commit_all(worktree, "a commit main does not have")
    assert tip is not None
    restored = [entry / "HEAD", mirror / "config", mirror / "packed-refs"]
    planted = [
        entry / "config.worktree",
        entry / "hooks",
        mirror / "hooks",
        mirror / "info" / "attributes",
        mirror / "objects" / "info" / "alternates",
        mirror / "refs" / "tags" / "planted",
        mirror / "refs" / "heads" / "main",
    ]
    cases: list[tuple[str, Callable[[], object]]] = [
        ("HEAD changed", lambda: (entry / "HEAD").write_text("ref: refs/heads/main\n")),
        ("config.worktree appeared", lambda: (entry / "config.worktree").write_text("[core]\n")),
        ("hooks/post-commit appeared", lambda: plant_hook(entry / "hooks" / "post-commit", tmp_path / "m")),
        ("hooks/pre-push appeared", lambda: plant_hook(mirror / "hooks" / "pre-push", tmp_path / "m")),
        ("info/attributes appeared", lambda: (mirror / "info" / "attributes").write_text("* filter=x\n")),
        ("alternates appeared", lambda: (mirror / "objects" / "info" / "alternates").write_text("/tmp\n")),
        ("config changed", lambda: append_config(mirror / "config", "[user]\n\tname = someone\n")),
        ("ref refs/tags/planted appeared", lambda: (mirror / "refs" / "tags" / "planted").write_text(tip)),
        ("ref refs/heads/main changed", lambda: (mirror / "refs" / "heads" / "main").write_text(tip)),
    ]
    for expected, tamper in cases:
        saved = {path: path.read_bytes() for path in restored}
        checked = await git_guard.guard(worktree, workspace.branch)
        tamper()
        with pytest.raises(GitTampered, match=expected.replace(".", r"\.")):
            await checked.verify()
        for path, data in saved.items():
            path.write_bytes(data)
        for leftover in planted:
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink(missing_ok=True)
    await (await git_guard.guard(worktree, workspace.branch)).verify()  # all undone: nothing to report


async def test_work_and_other_tickets_are_not_tampering(
    local_settings: Settings, workspace: Workspace, make_ticket: MakeTicket
) -> None:
    worktree = Path(workspace.path)
    checked = await git_guard.guard(worktree, workspace.branch)
    (worktree / "calc.py").write_text("changed = True\n")
    await commit_all(worktree, "the agent's own step")  # moves the ticket's own branch
    other = await ActivityEnvironment().run(
        WorkspaceActivities(local_settings).prepare_workspace, WorkspaceRequest(ticket=make_ticket("T2"))
    )
    (Path(other.path) / "calc.py").write_text("other = True\n")
    await commit_all(Path(other.path), "another ticket's step")  # and another ticket's branch
    await checked.verify()


# ---------------------------------------------------------------------------- through the workflow

WORKFLOW = pytest.mark.asyncio(loop_scope="session")

PRELUDE = """\
import os, pathlib, shutil, json
wt = pathlib.Path(os.environ["TICKETFLOW_WORKTREE"])
(wt / "README.md").write_text((wt / "README.md").read_text() + "\\nSome honest work.\\n")
entry = pathlib.Path((wt / ".git").read_text().split(":", 1)[1].strip())
mirror = (entry / (entry / "commondir").read_text().strip()).resolve()
marker = pathlib.Path({marker!r})
command = "touch " + str(marker)
report = {{}}

def attempt(name, action):
    try:
        action()
        report[name] = "written"
    except OSError as exc:
        report[name] = "refused: " + type(exc).__name__

def hook(path):
    def write():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\\n" + command + "\\n")
        path.chmod(0o755)
    return write

def append(path, text):
    def write():
        with open(path, "a") as handle:
            handle.write(text)
    return write
"""

ATTACKS = {
    "fsmonitor": """
attempt("mirror config", append(mirror / "config", "[core]\\n\\tfsmonitor = " + command + "; false\\n"))
fsmonitor = "[core]\\n\\tfsmonitor = " + command + "; false\\n"
attempt("config.worktree", append(entry / "config.worktree", fsmonitor))
""",
    "gitdir-hooks": """
attempt("gitdir post-commit", hook(entry / "hooks" / "post-commit"))
attempt("gitdir reference-transaction", hook(entry / "hooks" / "reference-transaction"))
print("::ticketflow step::documented", flush=True)
""",
    "mirror-hooks": """
attempt("mirror post-commit", hook(mirror / "hooks" / "post-commit"))
attempt("mirror reference-transaction", hook(mirror / "hooks" / "reference-transaction"))
""",
    "dot-git": """
hostile = pathlib.Path(os.environ["HOME"]) / "hostile.git"
def rewrite():
    shutil.copytree(mirror, hostile, symlinks=True)
    hook(hostile / "hooks" / "post-commit")()
    append(hostile / "config", "[core]\\n\\tfsmonitor = " + command + "; false\\n")()
    (wt / ".git").write_text("gitdir: " + str(hostile) + "\\n")
attempt(".git", rewrite)
""",
}

EPILOGUE = """
(pathlib.Path(os.environ["HOME"]) / "attack-report.json").write_text(json.dumps(report))
print("attack report:", json.dumps(report), flush=True)
"""


def hostile_agent(tmp_path: Path, settings: Settings, kind: str, marker: Path, sandbox: str) -> str:
    code = PRELUDE.format(marker=str(marker)) + ATTACKS[kind] + EPILOGUE
    name = f"hostile-{kind}-{sandbox}"
    config = script_agent(tmp_path, name, code)
    settings.agents[name] = config.model_copy(update={"sandbox": sandbox})
    return name


def attack_report(settings: Settings, ticket_id: str) -> dict[str, str]:
    found = sorted((settings.state_dir / "runs" / ticket_id).glob("iter*/home/attack-report.json"))
    assert found, "the agent never ran"
    report: dict[str, str] = json.loads(found[-1].read_text())
    return report


async def blocked_by_tampering(client: Client, ticket_id: str, expected: str) -> None:
    status = await wait_for_status(client, ticket_id, in_state(TicketState.BLOCKED), timeout=90)
    reason = status.blocked_reason or ""
    assert "run_agent failed (not retryable)" in reason and "was changed" in reason, reason
    assert expected in reason, reason
    await tickets.cancel(client, ticket_id, "tampered with git")
    result = await result_of(client, ticket_id)
    assert result.state is TicketState.CANCELLED


@WORKFLOW
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("fsmonitor", "config changed"),
        ("gitdir-hooks", "hooks/post-commit appeared"),
        ("dot-git", ".git changed"),
    ],
)
async def test_a_hostile_agent_without_sandbox_fails_visibly_and_runs_nothing(
    client: Client, worker: Settings, tmp_path: Path, kind: str, expected: str
) -> None:
    marker = tmp_path / f"{kind}-ran-on-the-host"
    agent = hostile_agent(tmp_path, worker, kind, marker, "off")
    ticket = example_ticket("demo-4-readme.md", id=f"hostile-{kind}", agent=agent)
    await submit(client, worker, ticket)
    await blocked_by_tampering(client, ticket.id, expected)
    assert set(attack_report(worker, ticket.id).values()) == {"written"}
    assert not marker.exists()


@WORKFLOW
async def test_a_hook_planted_in_the_shared_mirror_never_runs_for_the_next_ticket(
    client: Client, worker: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "mirror-hook-ran-on-the-host"
    agent = hostile_agent(tmp_path, worker, "mirror-hooks", marker, "off")
    first = example_ticket("demo-4-readme.md", id="plants-hooks", agent=agent)
    await submit(client, worker, first)
    await blocked_by_tampering(client, first.id, "hooks/post-commit appeared")
    hooks = sorted(p.name for p in worker.mirrors_dir.glob("*/hooks/*"))
    assert hooks == ["post-commit", "reference-transaction"]  # still there: the next ticket meets them

    second = example_ticket("demo-1-multiply.md", id="after-the-hooks")
    await submit(client, worker, second)
    result = await result_of(client, second.id)
    assert result.state is TicketState.DONE  # commits, a pushed branch, a PR: and no hook ran
    assert not marker.exists()


@WORKFLOW
async def test_the_default_sandbox_refuses_the_writes_or_the_guard_catches_them(
    client: Client, worker: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "ran-on-the-host"
    code = PRELUDE.format(marker=str(marker)) + "".join(ATTACKS.values()).replace(
        '\nprint("::ticketflow step::documented", flush=True)', ""
    )
    config = script_agent(tmp_path, "hostile-sandboxed", code + EPILOGUE)
    worker.agents["hostile-sandboxed"] = config  # the default sandbox mode
    ticket = example_ticket("demo-4-readme.md", id="hostile-sandboxed", agent="hostile-sandboxed")
    await submit(client, worker, ticket)
    status = await wait_for_status(
        client, ticket.id, lambda s: s.state in (TicketState.DONE, TicketState.BLOCKED), timeout=120
    )
    report = attack_report(worker, ticket.id)
    assert len(report) == 7, report  # every attack was tried
    if status.state is TicketState.DONE:
        assert all(value.startswith("refused") for value in report.values()), report
    else:
        assert "was changed" in (status.blocked_reason or ""), status.blocked_reason
        await tickets.cancel(client, ticket.id, "tampered with git")
    await result_of(client, ticket.id)
    assert not marker.exists()
