"""Every timeout, retry policy and task-queue name of ticketflow, in one place.

Changing a value here changes how new activities are scheduled; it never breaks replay of running
tickets, because these values are recorded in history when a command is issued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

TASK_QUEUE = "ticketflow"
WORKFLOW_TYPE = "TicketWorkflow"

# Error types (ApplicationError.type) that no retry can fix: they go straight to a human.
NON_RETRYABLE = [
    "InvalidTicket",
    "RepoNotFound",
    "AuthFailed",
    "NothingToPush",
    "AgentNotConfigured",
    "WorkspaceMissing",
    "AgentAuthFailed",
    "SandboxUnavailable",
]


def host_queue(base_queue: str, host_id: str) -> str:
    """Queue served only by the worker that owns a ticket's worktree (workspace affinity)."""
    return f"{base_queue}@{host_id}"


def llm_queue(base_queue: str) -> str:
    """Queue of the model-bound activities that need no worktree (classify): served by workers with the
    "llm" capability, with activity slots of their own, so model calls never queue behind git work."""
    return f"{base_queue}-llm"


@dataclass(frozen=True)
class ActivityPolicy:
    name: str
    start_to_close: timedelta
    heartbeat: timedelta | None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Wait for a cancelled activity to really stop (its agent process killed) before the ticket says so.
    cancellation: ActivityCancellationType = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
    # Bounds the wait for a worker too (schedule to close), for best-effort calls to a host queue whose
    # worker may never come back; None: wait as long as it takes.
    schedule_to_close: timedelta | None = None


def _retry(attempts: int, initial: float = 2, maximum: float = 60) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=initial),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=maximum),
        maximum_attempts=attempts,
        non_retryable_error_types=NON_RETRYABLE,
    )


CLASSIFY = ActivityPolicy("classify", timedelta(minutes=5), timedelta(seconds=30), _retry(3))
PREPARE_WORKSPACE = ActivityPolicy(
    "prepare_workspace", timedelta(minutes=20), timedelta(seconds=30), _retry(3)
)
# The agent is the long step: one attempt may run for hours, and its heartbeats are its checkpoints.
# Heartbeats go out every 2 s (HEARTBEAT_THROTTLE), so 20 s of silence means the worker is gone.
RUN_AGENT = ActivityPolicy(
    "run_agent", timedelta(hours=6), timedelta(seconds=20), _retry(3, initial=2, maximum=120)
)
RUN_CHECKS = ActivityPolicy("run_checks", timedelta(minutes=45), timedelta(seconds=30), _retry(2))
REVIEW = ActivityPolicy("review", timedelta(minutes=10), timedelta(seconds=30), _retry(3))
OPEN_PR = ActivityPolicy(
    "open_pr", timedelta(minutes=5), timedelta(seconds=30), _retry(5, initial=5, maximum=120)
)

# Reporting back to a ticket's source (file move, bead close, issue comment): cheap, retried a while.
WRITE_BACK = ActivityPolicy(
    "write_back",
    timedelta(minutes=2),
    None,
    _retry(6, initial=5, maximum=300),
    ActivityCancellationType.TRY_CANCEL,
)

# Giving a finished ticket's worktree back (workspace pool); best effort, it never holds up a ticket: it
# runs on the worktree's host queue, and a worker that is gone for good must not keep the ticket open.
RELEASE_WORKSPACE = ActivityPolicy(
    "release_workspace",
    timedelta(minutes=5),
    timedelta(seconds=30),
    _retry(3),
    schedule_to_close=timedelta(hours=1),
)

DEPENDENCY_STATES = ActivityPolicy("dependency_states", timedelta(seconds=30), None, _retry(5))

# Notifications are started without waiting (they never hold up a ticket); Temporal retries delivery
# for a few minutes at most, because a finished ticket waits for its last notification before closing.
NOTIFY = ActivityPolicy(
    "notify",
    timedelta(seconds=30),
    None,
    _retry(6, initial=2, maximum=60),
    ActivityCancellationType.TRY_CANCEL,
)
# One scheduled intake poll: reading every source and starting its new tickets.
POLL_SOURCES = ActivityPolicy("poll_sources", timedelta(minutes=10), None, _retry(3, initial=10, maximum=120))
INTAKE_WORKFLOW_TYPE = "IntakeWorkflow"
INTAKE_SCHEDULE_ID = "ticketflow-intake"

# A stage whose attempts all died with their workers runs again this many times before a human is asked.
WORKER_LOST_RERUNS = 5

# Model stages whose retries ran out on these (activities/llm/chains.py to_application_error: every model
# of the chain down, busy, timing out or rate-limited) wait for the server instead of asking a human:
# pauses start at MODEL_DOWN_FIRST_WAIT, double up to MODEL_DOWN_MAX_PAUSE, for MODEL_DOWN_MAX_WAIT in all.
MODEL_DOWN_ERRORS = frozenset(
    {
        "ModelUnreachable",
        "ModelServerError",
        "ModelOverloaded",
        "ModelTimeout",
        "ModelStreamError",
        "ModelRateLimited",
    }
)
MODEL_DOWN_FIRST_WAIT = timedelta(seconds=30)
MODEL_DOWN_MAX_PAUSE = timedelta(minutes=5)
MODEL_DOWN_MAX_WAIT = timedelta(hours=24)

RESET_WORKSPACE = ActivityPolicy("reset_workspace", timedelta(minutes=2), timedelta(seconds=30), _retry(3))

CHECKS_TIMEOUT = timedelta(minutes=30)
# Waiting on dependencies polls their states, backing off from the configured interval to this cap.
DEPENDENCY_POLL_MAX = timedelta(minutes=5)
# After this many polls (about an hour with the backoff) a never-submitted dependency asks a human.
DEPENDENCY_MISSING_POLLS = 20
# run_checks gets the test timeout plus this margin, so the test runner's own timeout is what fires.
CHECKS_MARGIN = timedelta(minutes=5)
REMINDER_INTERVAL = timedelta(hours=4)
BLOCKED_TIMEOUT = timedelta(days=7)
APPROVAL_TIMEOUT = timedelta(days=7)
# Continue-as-new once a ticket's history passes this many events (Temporal's hard limit is 51,200).
HISTORY_EVENT_LIMIT = 10_000

# Worker side.
GRACEFUL_SHUTDOWN = timedelta(seconds=30)
# Heartbeats (checkpoints, cancellation) reach the server at least this often, whatever the timeout.
HEARTBEAT_THROTTLE = timedelta(seconds=2)
STALL_KILL_GRACE = timedelta(seconds=10)

# Limit gates (workflows/limit_gate.py): one entity workflow per model provider.
LIMIT_GATE_WORKFLOW_TYPE = "LimitGate"
LIMIT_GATE_PASS_SIGNAL = "limit_gate_pass"
# Signal-with-start of a gate; a local activity, so passing an open gate costs no task-queue round trip.
LIMIT_GATE_SIGNAL = ActivityPolicy(
    "limit_gate_signal", timedelta(seconds=30), None, _retry(10, initial=0.5, maximum=10)
)
# A probe that reports nothing for this long has died with its ticket: the next waiter probes.
GATE_PROBE_TIMEOUT = timedelta(minutes=10)
# A limit reported without any reset time is assumed to last this long.
GATE_DEFAULT_LIMIT = timedelta(minutes=30)
GATE_HISTORY_EVENT_LIMIT = 5_000


def limit_gate_id(provider: str, task_queue: str) -> str:
    """Per provider and task queue: the gate runs on the queue its tickets' workers poll."""
    return f"limit-gate-{task_queue}-{provider}"
