"""Git hosts by name: adding one is a module implementing GitHost plus one line in HOSTS."""

from __future__ import annotations

from collections.abc import Callable

from activities.githosts.base import GitHost, GitHostError, PullRequestSpec
from activities.githosts.gitea import GiteaHost
from activities.githosts.github import GitHubHost, owner_repo_from_url
from activities.githosts.gitlab import GitLabHost, api_url_from_repo_url, project_path_from_url
from activities.githosts.local import LocalHost
from activities.repos import ResolvedRepo
from activities.settings import Settings

__all__ = ["HOSTS", "GitHost", "GitHostError", "PullRequestSpec", "git_host_for"]


def _reviewers(repo: ResolvedRepo, settings: Settings) -> tuple[str, ...]:
    """The configured repository's `reviewers`, cleaned: no blanks, no `@`, each name once.

    A repository named by path or URL has none; a configured one resolves under its key in settings.repos.
    """
    config = settings.repos.get(repo.name)
    names = (name.strip().lstrip("@") for name in (config.reviewers if config is not None else []))
    return tuple(dict.fromkeys(name for name in names if name))


def _github(repo: ResolvedRepo, settings: Settings) -> GitHost:
    owner_repo = repo.github_repo or owner_repo_from_url(repo.url)
    return GitHubHost(
        repo.api_url,
        owner_repo,
        settings.github_token,
        repo_url=repo.url,
        reviewers=_reviewers(repo, settings),
    )


GITHUB_API = "https://api.github.com"


def _api_url(repo: ResolvedRepo, suffix: str) -> str:
    # api_url defaults to GitHub's; on other hosts it is derived from the repository URL unless set.
    return api_url_from_repo_url(repo.url, suffix) if repo.api_url == GITHUB_API else repo.api_url


def _gitlab(repo: ResolvedRepo, settings: Settings) -> GitHost:
    project = repo.github_repo or project_path_from_url(repo.url)
    return GitLabHost(
        _api_url(repo, "/api/v4"),
        project,
        settings.gitlab_token,
        repo_url=repo.url,
        reviewers=_reviewers(repo, settings),
    )


def _gitea(repo: ResolvedRepo, settings: Settings) -> GitHost:
    owner_repo = repo.github_repo or owner_repo_from_url(repo.url)
    return GiteaHost(
        _api_url(repo, "/api/v1"),
        owner_repo,
        settings.gitea_token,
        repo_url=repo.url,
        reviewers=_reviewers(repo, settings),
    )


HOSTS: dict[str, Callable[[ResolvedRepo, Settings], GitHost]] = {
    "local": lambda repo, _settings: LocalHost(repo.url),
    "github": _github,
    "gitlab": _gitlab,
    "gitea": _gitea,
}


def git_host_for(repo: ResolvedRepo, settings: Settings) -> GitHost:
    factory = HOSTS.get(repo.host)
    if factory is None:
        known = ", ".join(sorted(HOSTS))
        raise GitHostError(
            f"unknown git host {repo.host!r} (known: {known})", kind="rejected", retryable=False
        )
    return factory(repo, settings)
