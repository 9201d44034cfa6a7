"""Git hosts by name: adding one is a module implementing GitHost plus one line in HOSTS."""

from __future__ import annotations

from collections.abc import Callable

from activities.githosts.base import GitHost, GitHostError, PullRequestSpec
from activities.githosts.github import GitHubHost, owner_repo_from_url
from activities.githosts.local import LocalHost
from activities.repos import ResolvedRepo
from activities.settings import Settings

__all__ = ["HOSTS", "GitHost", "GitHostError", "PullRequestSpec", "git_host_for"]


def _github(repo: ResolvedRepo, settings: Settings) -> GitHost:
    owner_repo = repo.github_repo or owner_repo_from_url(repo.url)
    return GitHubHost(repo.api_url, owner_repo, settings.github_token, repo_url=repo.url)


HOSTS: dict[str, Callable[[ResolvedRepo, Settings], GitHost]] = {
    "local": lambda repo, _settings: LocalHost(repo.url),
    "github": _github,
}


def git_host_for(repo: ResolvedRepo, settings: Settings) -> GitHost:
    factory = HOSTS.get(repo.host)
    if factory is None:
        known = ", ".join(sorted(HOSTS))
        raise GitHostError(
            f"unknown git host {repo.host!r} (known: {known})", kind="rejected", retryable=False
        )
    return factory(repo, settings)
