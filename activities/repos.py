"""Turning a ticket's `repo` field into a concrete git URL and host, and checking it is reachable."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from activities.gitops import GitError, git
from activities.settings import Settings
from workflows.contracts import slugify


class RepoError(Exception):
    """The repository is unknown or cannot be reached; the message says which and why."""


@dataclass(frozen=True)
class ResolvedRepo:
    name: str
    url: str
    host: str = "local"
    base_branch: str | None = None
    test_command: str | None = None
    github_repo: str | None = None
    api_url: str = "https://api.github.com"

    @property
    def key(self) -> str:
        """Stable directory name for this repository's cached mirror."""
        digest = hashlib.sha1(self.url.encode()).hexdigest()[:10]
        return f"{slugify(Path(self.url.rstrip('/')).name, 30) or 'repo'}-{digest}"


def _looks_like_url(value: str) -> bool:
    return "://" in value or (value.count(":") == 1 and "@" in value.split(":")[0])


def resolve_repo(name: str, settings: Settings) -> ResolvedRepo:
    if name in settings.repos:
        cfg = settings.repos[name]
        return ResolvedRepo(
            name=name,
            url=cfg.url,
            host=cfg.host,
            base_branch=cfg.base_branch,
            test_command=cfg.test_command,
            github_repo=cfg.github_repo,
            api_url=cfg.api_url,
        )
    if _looks_like_url(name):
        return ResolvedRepo(name=name, url=name)
    try:
        path: Path | None = Path(name).expanduser()
        exists = path is not None and path.exists()
    except (RuntimeError, OSError):  # ~nosuchuser, names longer than the file system allows
        exists = False
    if exists and path is not None:
        return ResolvedRepo(name=name, url=str(path.resolve()))
    known = ", ".join(sorted(settings.repos)) or "none configured"
    raise RepoError(
        f"unknown repository {name!r}: not a configured repo name ({known}), an existing path or a git URL"
    )


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for git commands: never prompt, never page, no user-level surprises."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "LC_ALL": "C"})
    env.update(extra or {})
    return env


def _git_reason(stderr: str) -> str:
    """git's own one-line reason: its first fatal/error line, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith(("fatal:", "error:")):
            return line
    return lines[-1] if lines else "git failed"


async def check_reachable(repo: ResolvedRepo, base_branch: str, timeout: float) -> None:
    """`git ls-remote` the repository and make sure the base branch exists there."""
    try:
        out = await git(None, "ls-remote", "--heads", "--", repo.url, base_branch, timeout=timeout)
    except TimeoutError as exc:
        raise RepoError(f"repository {repo.name!r} did not answer within {timeout:.0f}s") from exc
    except GitError as exc:
        raise RepoError(f"repository {repo.name!r} is unreachable: {_git_reason(exc.stderr)}") from exc
    if f"refs/heads/{base_branch}" not in out:
        raise RepoError(f"repository {repo.name!r} has no branch {base_branch!r}")
