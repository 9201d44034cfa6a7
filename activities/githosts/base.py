"""What every git host (local bare repo, GitHub, ...) offers the open_pr activity.

A host opens pull requests idempotently: a retried activity must find the PR its earlier attempt made
instead of opening a second one. Hosts raise GitHostError only, so the activity maps one error type to
Temporal retry behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

from workflows.contracts import PullRequestRef

ErrorKind = Literal["rate_limit", "auth", "unavailable", "rejected"]

# Name of the environment variable the push credential helper reads; the token itself never touches argv.
TOKEN_ENV = "TICKETFLOW_GIT_TOKEN"
DEFAULT_RATE_LIMIT_WAIT = 60.0


@dataclass(frozen=True)
class PullRequestSpec:
    title: str
    body: str
    head: str
    base: str
    draft: bool = False
    labels: tuple[str, ...] = ()


class GitHostError(Exception):
    """A host refused or failed; `retryable` and `retry_after` tell Temporal whether and when to retry."""

    def __init__(
        self, message: str, *, kind: ErrorKind, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.retryable = retryable
        self.retry_after = retry_after


class GitHost(Protocol):
    name: str

    async def find_open_pr(self, branch: str, base: str) -> PullRequestRef | None: ...

    async def open_pr(self, spec: PullRequestSpec) -> PullRequestRef:
        """Return the open PR for spec.head, creating it (created=True) only if none exists."""
        ...

    def push_env(self) -> dict[str, str]:
        """Extra environment that lets `git push` to this host authenticate."""
        ...


def rate_limit_wait(
    status: int, headers: Mapping[str, str], message: str, now: float | None = None
) -> float | None:
    """Seconds to wait if this response is a rate limit (GitHub's documented rules), else None."""
    if status not in (403, 429):
        return None
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(1.0, float(retry_after))
        except ValueError:
            return DEFAULT_RATE_LIMIT_WAIT
    if headers.get("x-ratelimit-remaining") == "0":
        # x-ratelimit-reset is an epoch timestamp, not a duration.
        try:
            reset = float(headers.get("x-ratelimit-reset", ""))
        except ValueError:
            return DEFAULT_RATE_LIMIT_WAIT
        return max(1.0, reset - (time.time() if now is None else now))
    if status == 429 or "rate limit" in message.lower():
        return DEFAULT_RATE_LIMIT_WAIT
    return None


def error_for_status(status: int, headers: Mapping[str, str], message: str) -> GitHostError:
    """Classify a failed HTTP response of a REST host."""
    wait = rate_limit_wait(status, headers, message)
    if wait is not None:
        return GitHostError(
            f"rate limited ({status}): {message}", kind="rate_limit", retryable=True, retry_after=wait
        )
    if status in (401, 403):
        return GitHostError(f"authentication failed ({status}): {message}", kind="auth", retryable=False)
    if status >= 500:
        return GitHostError(f"host error ({status}): {message}", kind="unavailable", retryable=True)
    return GitHostError(f"request rejected ({status}): {message}", kind="rejected", retryable=False)


def credential_env(repo_url: str, username: str, token: str) -> dict[str, str]:
    """Env-only git config: a credential helper for the repo's https origin that reads TOKEN_ENV.

    Nothing lands on argv (visible in `ps`), in .git/config or in a URL; inherited helpers are reset so a
    user-level helper cannot answer instead of (or leak to) this host.
    """
    parts = urlsplit(repo_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return {}
    origin = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    helper = f'!f() {{ test "$1" = get && echo username={username} && echo "password=${{{TOKEN_ENV}}}"; }}; f'
    return {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "credential.helper",
        "GIT_CONFIG_VALUE_0": "",
        "GIT_CONFIG_KEY_1": f"credential.{origin}.helper",
        "GIT_CONFIG_VALUE_1": helper,
        "GIT_TERMINAL_PROMPT": "0",
        TOKEN_ENV: token,
    }
