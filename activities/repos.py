"""Turning a ticket's `repo` field into a concrete git URL and host, and checking it is reachable."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from activities.gitops import GitError, git
from activities.settings import Settings
from workflows.contracts import REPO_CREDENTIALS_MESSAGE, repo_has_credentials, slugify


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


# Public hosts whose repositories are recognised by URL alone: host name -> ticketflow's git host.
KNOWN_HOSTS = {"github.com": "github", "gitlab.com": "gitlab"}
_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?([^/:]+):(?!//)(.+)$")


def _looks_like_url(value: str) -> bool:
    return "://" in value or (value.count(":") == 1 and "@" in value.split(":")[0])


def _host_and_path(url: str) -> tuple[str, str] | None:
    """(host name, repository path without .git) of a network URL or scp-like address; None for others."""
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme.lower() in ("file", "") or not parts.hostname:
            return None
        host, path = parts.hostname, parts.path
    else:
        match = _SCP_LIKE.match(url)
        if match is None:
            return None
        host, path = match.group(1).lower(), match.group(2)
    return host, path.strip("/").removesuffix(".git").strip("/")


def display_url(url: str) -> str:
    """The URL without its user part, for messages (a ticket's URL never carries a password anyway)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def same_repository(a: str, b: str) -> bool:
    """Whether two repository URLs name the same repository: case of scheme and host, a trailing slash
    and .git do not matter."""

    def canonical(url: str) -> str:
        url = url.strip().rstrip("/").removesuffix(".git")
        if "://" in url:
            parts = urlsplit(url)
            url = parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower()).geturl()
        return url

    return canonical(a) == canonical(b)


def _configured(key: str, settings: Settings) -> ResolvedRepo:
    cfg = settings.repos[key]
    return ResolvedRepo(
        name=key,
        url=cfg.url,
        host=cfg.host,
        base_branch=cfg.base_branch,
        test_command=cfg.test_command,
        github_repo=cfg.github_repo,
        api_url=cfg.api_url,
    )


def _from_url(url: str, settings: Settings) -> ResolvedRepo:
    """A repository named by URL: a configured one with that URL, a known public host, or local files."""
    for key, cfg in sorted(settings.repos.items()):
        if same_repository(cfg.url, url):
            return _configured(key, settings)
    if url.lower().startswith("file://"):
        return ResolvedRepo(name=url, url=url, host="local")
    found = _host_and_path(url)
    if found is not None and found[0] in KNOWN_HOSTS and found[1].count("/") >= 1:
        host, path = found
        kind = KNOWN_HOSTS[host]
        if kind == "gitlab" or path.count("/") == 1:  # GitHub is owner/name; GitLab allows subgroups
            return ResolvedRepo(name=url, url=url, host=kind, github_repo=path)
    shown = display_url(url)
    raise RepoError(
        f"ticketflow cannot tell which git host serves {shown!r}: add [repos.NAME] with "
        f'url = "{shown}" and host = "github", "gitlab", "gitea" or "local" to ticketflow.toml and use '
        "repo: NAME (github.com and gitlab.com URLs, file:// URLs and local paths need no configuration)"
    )


def resolve_repo(name: str, settings: Settings) -> ResolvedRepo:
    """A configured repository by name or URL; a github.com or gitlab.com URL; a local path or file:// URL."""
    if name in settings.repos:
        return _configured(name, settings)
    if repo_has_credentials(name):  # Ticket refuses these; a caller that skipped validation too
        raise RepoError(f"the repository {REPO_CREDENTIALS_MESSAGE}")
    if _looks_like_url(name):
        return _from_url(name, settings)
    try:
        path: Path | None = Path(name).expanduser()
        exists = path is not None and path.exists()
    except (RuntimeError, OSError):  # ~nosuchuser, names longer than the file system allows
        exists = False
    if exists and path is not None:
        resolved = str(path.resolve())
        configured = [k for k, cfg in sorted(settings.repos.items()) if same_repository(cfg.url, resolved)]
        return _configured(configured[0], settings) if configured else ResolvedRepo(name, resolved)
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
