from __future__ import annotations

import os
import random
import string
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import review_rules as rules
from activities import secrets_scan
from activities.gitops import commit_all
from activities.review import ReviewActivities
from activities.settings import Settings
from tests.activities.conftest import git, write_files
from workflows.contracts import Classification, Finding, ReviewReport, ReviewRequest, Ticket, Workspace


async def review(local_settings: Settings, workspace: Workspace) -> ReviewReport:
    ticket = Ticket(id="T1", title="Improve calc", body="Make calc better.", repo="calc")
    req = ReviewRequest(ticket=ticket, workspace=workspace, classification=Classification())
    report: ReviewReport = await ActivityEnvironment().run(ReviewActivities(local_settings).review, req)
    return report


def by_rule(report: ReviewReport) -> dict[str, list[Finding]]:
    found: dict[str, list[Finding]] = {}
    for finding in report.findings:
        found.setdefault(finding.rule, []).append(finding)
    return found


def github_shaped_token() -> str:
    # Built at run time so this test file does not itself look like a leaked credential.
    body = "".join(random.Random(7).choices(string.ascii_letters + string.digits, k=36))
    return "ghp" + "_" + body


async def test_empty_diff_is_critical(local_settings: Settings, workspace: Workspace) -> None:
    report = await review(local_settings, workspace)
    assert report.files_changed == 0
    assert [f.rule for f in report.blocking] == ["no-changes"]
    assert report.model is None


async def test_clean_change(local_settings: Settings, workspace: Workspace) -> None:
    path = Path(workspace.path)
    write_files(path, {"calc.py": (path / "calc.py").read_text() + "\n\ndef mul(a, b):\n    return a * b\n"})
    await commit_all(path, "WIP: mul")
    report = await review(local_settings, workspace)
    assert (report.files_changed, report.insertions, report.deletions) == (1, 4, 0)
    assert [f.rule for f in report.findings] == ["diffstat"]
    assert report.findings[0].message == "1 files changed, 4 insertions(+), 0 deletions(-)"


async def test_secrets_are_critical_and_never_echoed(local_settings: Settings, workspace: Workspace) -> None:
    path = Path(workspace.path)
    aws_key, gh_token = "AKIAIOSFODNN7EXAMPLE", github_shaped_token()
    write_files(path, {"deploy.py": f'REGION = "eu"\nAWS_KEY = "{aws_key}"\nGH = "{gh_token}"\n'})
    await commit_all(path, "WIP: deploy")

    report = await review(local_settings, workspace)

    secrets = by_rule(report)["secret"]
    assert {(f.file, f.line, f.severity) for f in secrets} == {
        ("deploy.py", 2, "critical"),
        ("deploy.py", 3, "critical"),
    }
    assert any("AWS" in f.message for f in secrets) and any("GitHub" in f.message for f in secrets), secrets
    dumped = report.model_dump_json()
    assert aws_key not in dumped and gh_token not in dumped


async def test_a_secret_added_then_removed_is_named_by_its_commit(
    local_settings: Settings, workspace: Workspace
) -> None:
    path = Path(workspace.path)
    token = github_shaped_token()
    write_files(path, {"config.yaml": f"name: calc\napi_token: {token}\n"})
    leaked = await commit_all(path, "WIP: config")
    write_files(path, {"config.yaml": "name: calc\n"})
    await commit_all(path, "WIP: config without the token")

    report = await review(local_settings, workspace)

    found = by_rule(report)
    assert "secret" not in found and not report.blocking  # not in the squashed PR: not blocking
    [history] = found["secret-in-history"]
    assert (history.severity, history.file, history.line) == ("high", "config.yaml", 2)
    assert leaked and leaked[:12] in history.message and "GitHub Token" in history.message
    assert token not in report.model_dump_json()


async def test_a_secret_in_the_final_tree_names_the_commit_that_added_it(
    local_settings: Settings, workspace: Workspace
) -> None:
    path = Path(workspace.path)
    write_files(path, {"prod.env": "DEBUG=0\n"})
    await commit_all(path, "WIP: env")
    write_files(path, {"prod.env": "DEBUG=0\nDB_PASSWORD=hunter2-prod\n"})
    added = await commit_all(path, "WIP: password")

    report = await review(local_settings, workspace)

    [secret] = by_rule(report)["secret"]
    assert (secret.severity, secret.file, secret.line) == ("critical", "prod.env", 2)
    assert added and f"commit {added[:12]}" in secret.message and "hunter2" not in secret.message
    assert [f.file for f in by_rule(report)["sensitive-file"]] == ["prod.env"]
    assert "secret-in-history" not in by_rule(report)


async def test_a_secret_in_a_commit_message_is_named_without_its_value(
    local_settings: Settings, workspace: Workspace
) -> None:
    path = Path(workspace.path)
    token = github_shaped_token()
    write_files(path, {"NOTES.md": "notes\n"})
    sha = await commit_all(path, f"WIP: notes\n\nused {token} to fetch the fixtures")

    report = await review(local_settings, workspace)

    [finding] = by_rule(report)["secret-in-message"]
    assert finding.severity == "high" and sha and sha[:12] in finding.message and "line 3" in finding.message
    assert token not in report.model_dump_json()


async def test_a_scan_that_fails_blocks(
    local_settings: Settings, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Path(workspace.path)
    write_files(path, {"NOTES.md": "notes\n"})
    await commit_all(path, "WIP: notes")

    def broken(text: str) -> list[object]:
        raise RuntimeError("scanner down")

    monkeypatch.setattr(secrets_scan, "scan_text", broken)
    report = await review(local_settings, workspace)
    assert [f.rule for f in report.blocking] == ["secret-scan"]


async def test_rule_findings(local_settings: Settings, workspace: Workspace) -> None:
    path = Path(workspace.path)
    write_files(
        path,
        {
            ".env": "DEBUG=1\n",
            ".env.example": "DEBUG=0\n",
            "deploy/id_rsa": "not really a key\n",
            "calc.py": (path / "calc.py").read_text()
            + "# TODO: tidy\nbreakpoint()\n<<<<<<< HEAD\n>>>>>>> other\n",
            "big.txt": "x = 1\n" * 1100,
        },
    )
    (path / "blob.bin").write_bytes(os.urandom(1024 * 1024 + 1))
    (path / "tests" / "test_calc.py").unlink()
    await commit_all(path, "WIP: everything wrong")

    report = await review(local_settings, workspace)

    found = by_rule(report)
    assert {(f.file, f.message) for f in found["sensitive-file"]} == {
        (".env", "credentials file added"),
        ("deploy/id_rsa", "private key file added"),
    }
    assert [(f.file, f.severity) for f in found["large-file"]] == [("blob.bin", "critical")]
    assert [(f.file, f.severity) for f in found["tests-deleted"]] == [("tests/test_calc.py", "high")]
    assert found["large-diff"][0].severity == "medium"
    assert [(f.line, f.severity) for f in found["conflict-marker"]] == [(9, "critical"), (10, "critical")]
    assert [(f.file, f.line) for f in found["todo"]] == [("calc.py", 7)]
    assert [(f.line, f.severity) for f in found["debug-leftover"]] == [(8, "low")]
    severities = [f.severity for f in report.findings]
    assert severities == sorted(severities, key=["critical", "high", "medium", "low", "info"].index)
    assert report.findings[-1].rule == "diffstat"
    assert report.files_changed == 7


async def test_renamed_test_file_is_not_a_deletion(local_settings: Settings, workspace: Workspace) -> None:
    path = Path(workspace.path)
    git(path, "mv", "tests/test_calc.py", "tests/test_arithmetic.py")
    await commit_all(path, "WIP: rename")
    report = await review(local_settings, workspace)
    assert "tests-deleted" not in by_rule(report)
    assert report.files_changed == 1


async def test_missing_worktree(local_settings: Settings, workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(ApplicationError) as err:
        await review(local_settings, workspace.model_copy(update={"path": str(tmp_path / "gone")}))
    assert err.value.type == "WorkspaceMissing"


# ----------------------------------------------------------------------------------- pure rule tests


def test_parse_numstat_with_rename_and_binary() -> None:
    output = "3\t1\tcalc.py\0-\t-\tlogo.png\0" + "0\t0\t\0tests/a.py\0tests/b.py\0"
    assert rules.parse_numstat(output) == rules.DiffStat(files=3, insertions=3, deletions=1)
    assert rules.parse_numstat("") == rules.DiffStat()


def test_parse_name_status() -> None:
    output = "M\0calc.py\0R087\0old name.py\0new name.py\0D\0gone.py\0"
    assert rules.parse_name_status(output) == [
        rules.FileChange("M", "calc.py"),
        rules.FileChange("R", "new name.py", "old name.py"),
        rules.FileChange("D", "gone.py"),
    ]


def test_parse_tree_sizes() -> None:
    output = "100644 blob 1f2e3d      42\tsrc/a b.py\x00160000 commit 9a8b7c       -\tvendor/lib\0"
    assert rules.parse_tree_sizes(output) == {"src/a b.py": 42}


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("id_ed25519", "private key file"),
        ("keys/server.key", "private key file"),
        ("id_ed25519.pub", None),
        (".env", "credentials file"),
        ("app/.env.production", "credentials file"),
        (".env.example", None),
        ("config/credentials.json", "credentials file"),
        ("environment.py", None),
        ("deploy/prod.env", "credentials file"),
        ("example.env", None),
    ],
)
def test_is_sensitive_file(path: str, kind: str | None) -> None:
    assert rules.is_sensitive_file(path) == kind


def test_line_findings_are_capped() -> None:
    lines = [rules.AddedLine("a.py", n, f"x = {n}  # FIXME") for n in range(1, 31)]
    findings = rules.line_findings(lines)
    assert len(findings) == rules.MAX_PER_RULE + 1
    assert findings[-1].message == "20 more like this"


def test_conflict_marker_needs_a_full_marker() -> None:
    lines = [
        rules.AddedLine("a.md", 1, "Title"),
        rules.AddedLine("a.md", 2, "======="),
        rules.AddedLine("a.py", 3, "x <<<<<<<< y"),
    ]
    assert rules.line_findings(lines) == []
