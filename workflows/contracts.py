"""Every pydantic model that crosses the workflow/activity/client boundary.

These payloads are stored in Temporal histories, so they are contracts: new fields are added only as
optional with defaults, and nothing is renamed once released. This module imports only the standard
library and pydantic, because the workflow sandbox re-imports it for every run.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_TITLE_CHARS = 200
MAX_BODY_BYTES = 64 * 1024
MAX_GUIDANCE_CHARS = 8000
MAX_OUTPUT_LINES = 20
SLUG_MAX = 40

_TICKET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_MODEL_STAGES = ("classify", "code", "review")


class Model(BaseModel):
    """Base for boundary models: unknown fields are rejected so typos surface at submit time."""

    # Errors never echo their input (a ticket's repository URL or body may hold a secret).
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class TicketState(StrEnum):
    QUEUED = "QUEUED"
    CLASSIFYING = "CLASSIFYING"
    WORKING = "WORKING"
    TESTING = "TESTING"
    REVIEWING = "REVIEWING"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    OPENING_PR = "OPENING_PR"
    BLOCKED = "BLOCKED"
    WAITING_FOR_LIMIT = "WAITING_FOR_LIMIT"
    # Every model of a stage's chain stayed unreachable/overloaded through the stage's retries: the ticket
    # tries the stage again on its own, with growing pauses, instead of asking a human.
    WAITING_FOR_MODEL = "WAITING_FOR_MODEL"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in (TicketState.DONE, TicketState.FAILED, TicketState.CANCELLED)


class Stage(StrEnum):
    DEPENDENCIES = "dependencies"
    CLASSIFY = "classify"
    PREPARE_WORKSPACE = "prepare_workspace"
    RUN_AGENT = "run_agent"
    RUN_CHECKS = "run_checks"
    REVIEW = "review"
    APPROVAL = "approval"
    OPEN_PR = "open_pr"


# --------------------------------------------------------------------------------------------- tickets


def slugify(text: str, limit: int = SLUG_MAX) -> str:
    """Lower-case ASCII slug safe for branch names and paths ("Fix: login!" -> "fix-login")."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:limit].rstrip("-")


def _has_control_chars(text: str) -> bool:
    """Control characters, line/paragraph separators and lone surrogates: none belong in one line."""
    return any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in text)


_HTTP_SCHEMES = ("http", "https", "ftp", "ftps")
REPO_CREDENTIALS_MESSAGE = (
    "must not carry credentials (user:password@, or a token as the user of an http(s) URL): name the "
    "repository without them and give the worker its token (github_token, gitlab_token or gitea_token)"
)


def repo_has_credentials(value: str) -> bool:
    """Whether a repository URL carries credentials: a password anywhere, any user in an http(s) URL.

    ssh's `git@host:owner/repo` and `ssh://git@host/...` name a user and no password: they are fine.
    """
    scheme, sep, rest = value.partition("://")
    if sep:
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        if "@" not in authority:
            return False
        userinfo = authority.rpartition("@")[0]
        return ":" in userinfo or scheme.lower() in _HTTP_SCHEMES
    # scp-like user@host:path: a colon before the @ is a password.
    head = value.split("/", 1)[0]
    return "@" in head and ":" in head.rpartition("@")[0]


def is_safe_ref_name(ref: str) -> bool:
    """The subset of `git check-ref-format` rules we accept for base branches."""
    if not ref or len(ref) > 200 or ref.startswith(("-", "/")) or ref.endswith(("/", ".", ".lock")):
        return False
    if ".." in ref or "//" in ref or "@{" in ref or ref == "HEAD" or _has_control_chars(ref):
        return False
    if any(part.startswith(".") or part.endswith(".lock") for part in ref.split("/")):
        return False
    return not any(ch in ref for ch in " ~^:?*[\\")


class Budget(Model):
    """Spending limits of one ticket; reaching one pauses the ticket for approval, it is never killed."""

    tokens: int | None = Field(default=None, ge=1)
    usd: float | None = Field(default=None, gt=0)


class Ticket(Model):
    id: str
    title: str
    body: str
    repo: str
    base_branch: str = "main"
    labels: list[str] = Field(default_factory=list)
    priority: int = Field(default=3, ge=1, le=5)
    models: dict[str, list[str]] = Field(default_factory=dict)
    agent: str | None = None
    test_command: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    max_iterations: int = Field(default=3, ge=1, le=20)
    budget: Budget = Field(default_factory=Budget)
    require_approval: bool = False
    agent_timeout_minutes: int | None = Field(default=None, ge=1, le=48 * 60)
    source: str | None = None

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not _TICKET_ID.fullmatch(value):
            raise ValueError(
                "must be 1-63 characters of letters, digits, '-' or '_', starting with a letter or digit "
                "(it becomes part of a branch name and a directory name)"
            )
        return value

    @field_validator("title")
    @classmethod
    def _safe_title(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        if len(value) > MAX_TITLE_CHARS:
            raise ValueError(f"is {len(value)} characters; the limit is {MAX_TITLE_CHARS}")
        if _has_control_chars(value):
            raise ValueError("must be one line without control characters")
        if not slugify(value):
            raise ValueError("needs at least one ASCII letter or digit (it names the branch)")
        return value

    @field_validator("body")
    @classmethod
    def _bounded_body(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty: describe what the agent should do")
        size = len(value.encode())
        if size > MAX_BODY_BYTES:
            raise ValueError(f"is {size} bytes; the limit is {MAX_BODY_BYTES} (link large material instead)")
        return value

    @field_validator("repo")
    @classmethod
    def _plain_repo(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must name a configured repository, a path or a git URL")
        if value.startswith("-") or _has_control_chars(value) or any(ch.isspace() for ch in value):
            raise ValueError("must not start with '-' or contain spaces or control characters")
        if repo_has_credentials(value):
            raise ValueError(REPO_CREDENTIALS_MESSAGE)  # never the value itself
        return value

    @field_validator("base_branch")
    @classmethod
    def _safe_base(cls, value: str) -> str:
        if not is_safe_ref_name(value):
            raise ValueError(f"{value!r} is not a valid git branch name")
        return value

    @field_validator("labels")
    @classmethod
    def _clean_labels(cls, value: list[str]) -> list[str]:
        cleaned = [label.strip() for label in value if label.strip()]
        if any(_has_control_chars(label) or len(label) > 50 for label in cleaned):
            raise ValueError("each label must be one line of at most 50 characters")
        return cleaned

    @field_validator("models")
    @classmethod
    def _known_stages(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(value) - set(_MODEL_STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; use {list(_MODEL_STAGES)}")
        return value

    @field_validator("depends_on")
    @classmethod
    def _dependency_ids(cls, value: list[str]) -> list[str]:
        for dep in value:
            if not _TICKET_ID.fullmatch(dep):
                raise ValueError(f"{dep!r} is not a valid ticket id")
        return value

    @model_validator(mode="after")
    def _no_self_dependency(self) -> Ticket:
        if self.id in self.depends_on:
            raise ValueError(f"ticket {self.id} cannot depend on itself")
        return self

    @property
    def slug(self) -> str:
        return slugify(self.title)

    @property
    def branch(self) -> str:
        return f"ticketflow/{self.id}-{self.slug}"


def workflow_id_for(ticket_id: str) -> str:
    """One workflow id per ticket id, so a ticket can only ever have one live run."""
    return f"ticket-{ticket_id}"


# ------------------------------------------------------------------------------------ activity models


class TokenUsage(Model):
    prompt: int = 0
    completion: int = 0
    cost_usd: float = 0.0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def plus(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt=self.prompt + other.prompt,
            completion=self.completion + other.completion,
            cost_usd=round(self.cost_usd + other.cost_usd, 6),
        )


class ClassifyRequest(Model):
    ticket: Ticket


class Classification(Model):
    kind: Literal["feature", "bugfix", "refactor", "docs", "test", "chore"] = "feature"
    complexity: Literal["low", "medium", "high"] = "medium"
    risk: Literal["low", "medium", "high"] = "medium"
    rationale: str = ""
    model: str | None = None
    tokens: TokenUsage = Field(default_factory=TokenUsage)


class CheckOutcome(StrEnum):
    """What a test run showed. Only PASSED lets a ticket on; the others are told apart because each asks
    for something else: FAILED/TIMED_OUT go back to the agent, ENV_ERROR to a human at once (no agent can
    install a test runner), NO_TESTS/NO_COMMAND follow the repository's require_tests policy."""

    PASSED = "passed"  # at least one test ran, and the runner exited 0
    FAILED = "failed"
    NO_TESTS = "no_tests"  # the runner ran but collected no test (pytest exit 5, "Ran 0 tests", ...)
    NO_COMMAND = "no_command"  # no test command given, configured or detected
    ENV_ERROR = "env_error"  # runner not found (126/127), its module missing, the environment broken
    TIMED_OUT = "timed_out"


TestCommandSource = Literal["ticket", "configured", "detected"]
UNTESTED_LABEL = "untested"


class WorkspaceRequest(Model):
    ticket: Ticket


class Workspace(Model):
    path: str
    branch: str
    base_branch: str
    base_commit: str
    repo_url: str
    host_queue: str
    git_host: str = "local"
    test_command: str | None = None
    stack: list[str] = Field(default_factory=list)
    context_summary: str = ""
    # Where test_command came from (activities/stack.py decide_test_command) and why; None in workspaces
    # prepared before these fields existed.
    test_command_source: TestCommandSource | None = None
    test_command_reason: str = ""


class AgentCheckpoint(Model):
    """What a run_agent attempt heartbeats, so a retried attempt resumes instead of starting over."""

    session_id: str | None = None
    last_commit: str | None = None
    step: int = 0
    finished: bool = False


AgentOutcomeKind = Literal["done", "blocked", "usage_limit", "rate_limited", "failed"]


class AgentOutput(Model):
    """The newest lines a running agent printed (a signal to its ticket, redacted)."""

    lines: list[str] = Field(default_factory=list)


class AgentRequest(Model):
    ticket: Ticket
    workspace: Workspace
    classification: Classification
    iteration: int = 1
    feedback: str | None = None
    guidance: str | None = None
    session_id: str | None = None
    resume: bool = False
    tokens_left: int | None = None  # what remains of the ticket's token budget; None = no budget


class AgentResult(Model):
    outcome: AgentOutcomeKind
    reason: str = ""
    reset_at: datetime | None = None
    retry_after_seconds: float | None = None
    session_id: str | None = None
    agent: str = ""
    model: str | None = None
    steps: int = 0
    steps_redone: int = 0
    last_commit: str | None = None
    output_tail: list[str] = Field(default_factory=list)
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    duration_seconds: float = 0.0
    provider: str | None = None  # the model provider that reported usage_limit / rate_limited


class ChecksRequest(Model):
    workspace: Workspace
    test_command: str | None = None
    timeout_seconds: float = 1800


class CheckReport(Model):
    # Kept for histories recorded before `outcome`: true only for CheckOutcome.PASSED (a test ran, exit 0).
    passed: bool
    command: str
    exit_code: int | None = None
    timed_out: bool = False
    passed_count: int | None = None
    failed_count: int | None = None
    skipped_count: int | None = None
    duration_seconds: float = 0.0
    output_tail: str = ""
    outcome: CheckOutcome | None = None  # None: a report from before outcomes existed
    command_source: TestCommandSource | None = None
    command_reason: str = ""  # why this command (detection's evidence, or where it is configured)
    reason: str = ""  # what the outcome rests on, in one line
    first_failure: str | None = None  # the first failing test's name, as the runner reports it
    env_hint: str | None = None  # for ENV_ERROR / NO_TESTS / NO_COMMAND: what a human can do about it
    counts_from: str | None = None  # "junit" (the runner's XML report) or "summary" (its summary line)
    tests_required: bool = True  # the repository's require_tests: NO_TESTS/NO_COMMAND block the ticket
    environment: str = ""  # the project environment the tests ran in (envs/<repo>-<hash>), if any

    @property
    def verdict(self) -> CheckOutcome:
        """The outcome, also for reports from before outcomes existed (judged as they were then)."""
        if self.outcome is not None:
            return self.outcome
        if self.timed_out:
            return CheckOutcome.TIMED_OUT
        return CheckOutcome.PASSED if self.passed else CheckOutcome.FAILED

    @property
    def untested(self) -> bool:
        return self.verdict in (CheckOutcome.NO_TESTS, CheckOutcome.NO_COMMAND)


Severity = Literal["info", "low", "medium", "high", "critical"]


class Finding(Model):
    severity: Severity
    rule: str
    message: str
    file: str | None = None
    line: int | None = None


class ReviewRequest(Model):
    ticket: Ticket
    workspace: Workspace
    classification: Classification


class ReviewReport(Model):
    findings: list[Finding] = Field(default_factory=list)
    files_changed: int = 0
    insertions: int = 0
    deletions: int = 0
    model: str | None = None
    tokens: TokenUsage = Field(default_factory=TokenUsage)

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "critical"]


class DependencyRequest(Model):
    ticket_ids: list[str]


MISSING_TICKET = "MISSING"


class DependencyStates(Model):
    """Each dependency's TicketState value, or MISSING when no such ticket was submitted (yet)."""

    states: dict[str, str] = Field(default_factory=dict)


class PullRequestRequest(Model):
    ticket: Ticket
    workspace: Workspace
    classification: Classification
    checks: CheckReport | None = None
    review: ReviewReport | None = None
    models_used: list[str] = Field(default_factory=list)
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    iterations: int = 1
    workflow_id: str = ""
    trace_id: str | None = None


class PullRequestRef(Model):
    url: str
    number: int
    branch: str
    host: str
    created: bool = True
    head_commit: str | None = None


# ------------------------------------------------------------------------------ workflow-level models


class RunOptions(Model):
    """Per-run knobs resolved by the client from config, so the workflow itself reads no config."""

    reminder_interval_seconds: float = Field(default=4 * 3600, gt=0)
    blocked_timeout_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    approval_timeout_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    require_approval: bool = False
    history_event_limit: int = Field(default=10_000, ge=50)
    checks_timeout_seconds: float = Field(default=1800, gt=0)
    dependency_poll_seconds: float = Field(default=30, gt=0)
    notify: bool = False  # notification targets are configured: send BLOCKED/DONE/FAILED events
    ui_url: str = ""
    # stage -> the model providers its chain may call (activities.llm.chains.providers_for): the limit
    # gates a ticket passes before that stage.
    model_providers: dict[str, list[str]] = Field(default_factory=dict)
    # A model server that is down: first pause before the stage runs again, and the total wait after
    # which a human is asked (BLOCKED) instead.
    model_down_first_wait_seconds: float = Field(default=30, gt=0)
    model_down_max_wait_seconds: float = Field(default=24 * 3600, gt=0)


class StatusEvent(Model):
    at: datetime
    state: TicketState
    stage: Stage | None = None
    note: str = ""


class TicketStatus(Model):
    ticket_id: str
    title: str
    state: TicketState = TicketState.QUEUED
    stage: Stage | None = None
    iteration: int = 0
    max_iterations: int = 3
    attempts: dict[str, int] = Field(default_factory=dict)
    blocked_reason: str | None = None
    blocked_since: datetime | None = None
    unblock_command: str | None = None
    waiting_until: datetime | None = None
    failed_stage: Stage | None = None
    models_used: list[str] = Field(default_factory=list)
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    timings: dict[str, float] = Field(default_factory=dict)
    started_at: datetime | None = None
    updated_at: datetime | None = None
    branch: str | None = None
    pr_url: str | None = None
    classification: Classification | None = None
    last_checks: CheckReport | None = None
    last_review: ReviewReport | None = None
    last_output: list[str] = Field(default_factory=list)
    session_id: str | None = None
    events: list[StatusEvent] = Field(default_factory=list)
    reminders: int = 0
    runs: int = 1
    waiting_on: list[str] = Field(default_factory=list)
    last_commit: str | None = None  # the agent's newest checkpoint commit
    last_good_commit: str | None = None  # the newest one whose checks passed: where rollback returns
    trace_id: str | None = None
    token_budget: int | None = None  # the ticket's budget.tokens plus every approved extension
    # The test command chosen when the worktree was prepared, where it came from and why.
    test_command: str | None = None
    test_command_source: TestCommandSource | None = None
    test_command_reason: str = ""


class Carry(Model):
    """State handed from one run to the next on continue-as-new or on a retry of a failed ticket."""

    status: TicketStatus
    resume_stage: Stage
    workspace: Workspace | None = None
    feedback: str | None = None
    guidance: str | None = None
    resume_session: bool = False


class TicketRun(Model):
    """The workflow's one input."""

    ticket: Ticket
    options: RunOptions = Field(default_factory=RunOptions)
    carry: Carry | None = None


class TicketResult(Model):
    state: TicketState
    pr_url: str | None = None
    status: TicketStatus


class UnblockRequest(Model):
    guidance: Annotated[str, Field(min_length=1, max_length=MAX_GUIDANCE_CHARS)]
    by: str = "operator"


class ApproveRequest(Model):
    by: str = "operator"
    note: str = ""
    extra_tokens: int | None = Field(default=None, ge=1)


class RetryRequest(Model):
    by: str = "operator"


class RollbackRequest(Model):
    by: str = "operator"


class ResetRequest(Model):
    workspace: Workspace
    commit: str


class ResetResult(Model):
    head: str


class CancelRequest(Model):
    reason: str = "cancelled by operator"
    by: str = "operator"


class Ack(Model):
    """Reply of an update: what the ticket does next."""

    state: TicketState
    message: str


# ------------------------------------------------------------------------------------ write-back


class ReleaseRequest(Model):
    """A DONE or CANCELLED ticket gives its worktree back: recycled into the repository's pool of idle
    worktrees (so the next ticket checks out only what differs) or removed. Its branch stays in the
    mirror, so nothing the agent committed is lost."""

    ticket_id: str
    workspace: Workspace
    state: TicketState


class ReleaseResult(Model):
    action: str  # "recycled", "removed", "kept" (keep_worktrees is set) or "missing"


class WriteBackRequest(Model):
    """Report a ticket's outcome to the source it came from (ticket.source), e.g. move its file to done/."""

    ticket: Ticket
    state: TicketState
    pr_url: str | None = None
    reason: str = ""
    # The last review's findings; with `follow_up_tickets` on, non-blocking ones become new tickets.
    findings: list[Finding] = Field(default_factory=list)


class WriteBackResult(Model):
    changed: bool
    action: str = ""
    location: str | None = None
    follow_ups: list[str] = Field(default_factory=list)


class NotifyRequest(Model):
    """A ticket reached BLOCKED, DONE or FAILED; the notify activity tells the configured targets.

    Targets (webhook URLs are secrets) live in the worker's settings, never in this payload.
    """

    ticket_id: str
    title: str
    state: TicketState
    stage: Stage | None = None
    reason: str = ""
    pr_url: str | None = None
    unblock_command: str | None = None
    workflow_id: str = ""
    trace_id: str | None = None


# ------------------------------------------------------------------------------------------ intake


class IntakePollRequest(Model):
    """One scheduled poll of the configured ticket sources (specs as in docs/intake.md)."""

    sources: list[str] = Field(default_factory=list)


class IntakePollResult(Model):
    started: list[str] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


# ------------------------------------------------------------------------------------- limit gates


GateState = Literal["open", "limited", "probing"]


class GateTurn(Model):
    """A ticket asks to call a provider; the gate answers with a GatePass signal to `workflow_id`."""

    provider: str
    workflow_id: str


class GatePass(Model):
    provider: str
    probe: bool = False  # this ticket's call is the one that tests whether the limit has really reset
    limited_until: datetime | None = None


class GateReport(Model):
    """What a ticket learned from calling a provider: it answered, or it is limited until reset_at."""

    provider: str
    workflow_id: str
    limited: bool = False
    reset_at: datetime | None = None
    reason: str = ""


class GateSignal(Model):
    """Input of the limit_gate_signal activity: signal-with-start of the provider's gate."""

    turn: GateTurn | None = None
    report: GateReport | None = None


class GateStatus(Model):
    """A limit gate's state; also its input across continue-as-new."""

    provider: str
    state: GateState = "probing"  # a new gate lets one call find out before the others go
    limited_until: datetime | None = None
    probe: str | None = None
    probe_since: datetime | None = None
    waiting: list[str] = Field(default_factory=list)
    passes: int = 0
    probes: int = 0
    limits_reported: int = 0
    runs: int = 1
