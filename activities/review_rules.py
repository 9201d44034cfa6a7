"""Rule-based review of a ticket's diff: pure functions from git output to findings.

Findings name the file and line of a problem but never quote added content, because a finding may be
about a secret and findings end up in workflow history, the UI and PR bodies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from unidiff.patch import PatchSet

from workflows.contracts import Finding, Severity

if TYPE_CHECKING:
    from activities.secrets_scan import SecretHit

MAX_FILE_BYTES = 1024 * 1024
MAX_CHANGED_LINES = 1000
MAX_PER_RULE = 10
_SEVERITY_ORDER: list[Severity] = ["critical", "high", "medium", "low", "info"]

_PRIVATE_KEY_NAMES = {"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519"}
_PRIVATE_KEY_SUFFIXES = (".key", ".p12", ".pfx", ".jks", ".keystore")
_CREDENTIAL_NAMES = {".env", "credentials", "credentials.json", ".netrc", ".pgpass", ".pypirc"}
_ENV_TEMPLATES = ("example", "sample", "template", "dist", "defaults")
_TEST_PATH = re.compile(
    r"(^|/)(tests?|__tests__)/|(^|/)test_[^/]*\.py$|_test\.(py|go)$|\.(test|spec)\.[cm]?[jt]sx?$"
)
_LINE_RULES: list[tuple[str, Severity, re.Pattern[str], str]] = [
    ("conflict-marker", "critical", re.compile(r"^(<{7}|>{7})(\s|$)"), "merge conflict marker added"),
    ("todo", "low", re.compile(r"\b(TODO|FIXME|XXX)\b"), "TODO/FIXME/XXX added"),
    (
        "debug-leftover",
        "low",
        re.compile(r"\bbreakpoint\(\)|\bpdb\.set_trace\(|\bconsole\.log\("),
        "debugging leftover added",
    ),
]


@dataclass(frozen=True)
class FileChange:
    status: str  # A, M, D, R, C, T (first letter of git's status)
    path: str
    old_path: str | None = None


@dataclass(frozen=True)
class AddedLine:
    file: str
    line: int
    text: str


@dataclass(frozen=True)
class DiffStat:
    files: int = 0
    insertions: int = 0
    deletions: int = 0


# ---------------------------------------------------------------------------------- parsing git output


def parse_name_status(output: str) -> list[FileChange]:
    """`git diff --name-status -z`: renames and copies carry two paths."""
    tokens = output.split("\0")
    changes, i = [], 0
    while i + 1 < len(tokens) and tokens[i]:
        status = tokens[i][0]
        if status in "RC":
            changes.append(FileChange(status, tokens[i + 2], tokens[i + 1]))
            i += 3
        else:
            changes.append(FileChange(status, tokens[i + 1]))
            i += 2
    return changes


def parse_numstat(output: str) -> DiffStat:
    """`git diff --numstat -z`: binary files count as changed files with no lines."""
    tokens = output.split("\0")
    stat, i = DiffStat(), 0
    while i < len(tokens) and tokens[i]:
        added, deleted, path = tokens[i].split("\t", 2)
        i += 1 if path else 3  # a rename has an empty path followed by old and new path
        stat = DiffStat(
            stat.files + 1,
            stat.insertions + (int(added) if added.isdigit() else 0),
            stat.deletions + (int(deleted) if deleted.isdigit() else 0),
        )
    return stat


def parse_tree_sizes(output: str) -> dict[str, int]:
    """`git ls-tree -r -l -z`: blob sizes by path (submodules have none)."""
    sizes: dict[str, int] = {}
    for entry in filter(None, output.split("\0")):
        meta, _, path = entry.partition("\t")
        size = meta.split()[-1]
        if size.isdigit():
            sizes[path] = int(size)
    return sizes


def added_lines(diff: str) -> list[AddedLine]:
    return [
        AddedLine(patched.path, line.target_line_no or 0, line.value.rstrip("\n"))
        for patched in PatchSet.from_string(diff)
        for hunk in patched
        for line in hunk
        if line.is_added
    ]


# ---------------------------------------------------------------------------------------------- rules


def _capped(rule: str, severity: Severity, findings: list[Finding]) -> list[Finding]:
    """At most MAX_PER_RULE findings of one rule, plus one line saying how many more there were."""
    if len(findings) <= MAX_PER_RULE:
        return findings
    extra = Finding(severity=severity, rule=rule, message=f"{len(findings) - MAX_PER_RULE} more like this")
    return [*findings[:MAX_PER_RULE], extra]


def empty_diff(stat: DiffStat) -> list[Finding]:
    if stat.files:
        return []
    return [Finding(severity="critical", rule="no-changes", message="the agent made no changes")]


def is_sensitive_file(path: str) -> str | None:
    """What kind of sensitive file path looks like, or None."""
    name = PurePosixPath(path).name.lower()
    if name in _PRIVATE_KEY_NAMES or name.endswith(_PRIVATE_KEY_SUFFIXES):
        return "private key file"
    if name in _CREDENTIAL_NAMES or (name.startswith(".env.") and not name.endswith(_ENV_TEMPLATES)):
        return "credentials file"
    if name.endswith(".env") and not name.removesuffix(".env").endswith(_ENV_TEMPLATES):
        return "credentials file"  # prod.env, staging.env (not example.env)
    return None


def sensitive_files(changes: Iterable[FileChange]) -> list[Finding]:
    return [
        Finding(severity="critical", rule="sensitive-file", file=c.path, message=f"{kind} added")
        for c in changes
        if c.status in "ACR" and (kind := is_sensitive_file(c.path))
    ]


def large_files(changes: Iterable[FileChange], sizes: dict[str, int]) -> list[Finding]:
    return [
        Finding(
            severity="critical",
            rule="large-file",
            file=c.path,
            message=f"file of {sizes[c.path] / 1024 / 1024:.1f} MB added",
        )
        for c in changes
        if c.status in "AC" and sizes.get(c.path, 0) > MAX_FILE_BYTES
    ]


def deleted_tests(changes: Iterable[FileChange]) -> list[Finding]:
    return [
        Finding(severity="high", rule="tests-deleted", file=c.path, message="test file deleted")
        for c in changes
        if c.status == "D" and _TEST_PATH.search(c.path)
    ]


def big_diff(stat: DiffStat) -> list[Finding]:
    changed = stat.insertions + stat.deletions
    if changed <= MAX_CHANGED_LINES:
        return []
    message = f"{changed} lines changed (more than {MAX_CHANGED_LINES})"
    return [Finding(severity="medium", rule="large-diff", message=message)]


def line_findings(lines: list[AddedLine]) -> list[Finding]:
    findings: list[Finding] = []
    for rule, severity, pattern, message in _LINE_RULES:
        hits = [
            Finding(severity=severity, rule=rule, file=a.file, line=a.line, message=message)
            for a in lines
            if pattern.search(a.text)
        ]
        findings += _capped(rule, severity, hits)
    return findings


def summary(stat: DiffStat) -> Finding:
    return Finding(
        severity="info",
        rule="diffstat",
        message=f"{stat.files} files changed, {stat.insertions} insertions(+), {stat.deletions} deletions(-)",
    )


# -------------------------------------------------------------------------------------------- secrets


@dataclass(frozen=True)
class CommitHits:
    """What the secrets scan found in one commit of the branch: its own diff and its message."""

    sha: str
    diff: list[SecretHit] = field(default_factory=list)
    message: list[SecretHit] = field(default_factory=list)


def _by_place(hits: Iterable[SecretHit]) -> dict[tuple[str | None, int], list[SecretHit]]:
    places: dict[tuple[str | None, int], list[SecretHit]] = {}
    for hit in hits:
        places.setdefault((hit.file, hit.line), []).append(hit)
    return places


def _kinds(hits: list[SecretHit]) -> str:
    return " / ".join(sorted({h.kind for h in hits}))


def secret_findings(net: list[SecretHit], commits: list[CommitHits]) -> list[Finding]:
    """Findings from the secrets scan: kind, file, line and commit, never the value.

    What blocks (critical) is what the PR would carry: a possible secret added by the net diff, named
    with the checkpoint commit that added it. open_pr pushes one squashed commit (the tree of HEAD on
    the base, with a message ticketflow writes), so a secret only in an intermediate checkpoint (added,
    then removed) or only in a checkpoint's message never leaves this host: it is reported as `high`,
    naming the commit, without blocking.
    """
    pushed = {hit.fingerprint for hit in net}
    added_in: dict[str, str] = {}
    for commit in commits:
        for hit in commit.diff:
            added_in.setdefault(hit.fingerprint, commit.sha)
    blocking = []
    for (file, line), hits in sorted(_by_place(net).items(), key=lambda item: (item[0][0] or "", item[0][1])):
        shas = sorted({added_in[h.fingerprint] for h in hits if h.fingerprint in added_in})
        where = f" (commit {', '.join(shas)})" if shas else ""
        message = f"possible {_kinds(hits)} added{where}"
        blocking.append(Finding(severity="critical", rule="secret", file=file, line=line, message=message))
    history = []
    for commit in commits:
        removed = [hit for hit in commit.diff if hit.fingerprint not in pushed]
        for (file, line), hits in _by_place(removed).items():
            message = (
                f"possible {_kinds(hits)} in checkpoint commit {commit.sha} only (removed later; it stays "
                "on this host: the PR is one squashed commit)"
            )
            history.append(
                Finding(severity="high", rule="secret-in-history", file=file, line=line, message=message)
            )
        for (_, line), hits in _by_place(commit.message).items():
            message = (
                f"possible {_kinds(hits)} in the message of checkpoint commit {commit.sha}, line {line} "
                "(not pushed: the PR commit message is ticketflow's)"
            )
            history.append(Finding(severity="high", rule="secret-in-message", message=message))
    return [
        *_capped("secret", "critical", blocking),
        *_capped("secret-in-history", "high", [f for f in history if f.rule == "secret-in-history"]),
        *_capped("secret-in-message", "high", [f for f in history if f.rule == "secret-in-message"]),
    ]


def by_severity(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: _SEVERITY_ORDER.index(f.severity))


def review_findings(
    stat: DiffStat, changes: list[FileChange], sizes: dict[str, int], lines: list[AddedLine]
) -> list[Finding]:
    """Every rule except the secrets scan (which needs a thread)."""
    rules: list[Callable[[], list[Finding]]] = [
        lambda: empty_diff(stat),
        lambda: sensitive_files(changes),
        lambda: large_files(changes, sizes),
        lambda: deleted_tests(changes),
        lambda: big_diff(stat),
        lambda: line_findings(lines),
    ]
    return [finding for rule in rules for finding in rule()] + [summary(stat)]
