"""classify: what kind of change a ticket asks for, how big and how risky.

With a `classify` model chain configured (or the ticket's `models: {classify: [...]}`) a model answers
with structured output; without one the rules below decide, as they always did.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from temporalio import activity

from activities.heartbeat import with_heartbeats
from activities.llm.budget import shrink_text
from activities.llm.chains import stage_chain, structured_stage
from activities.llm.structured import schema_instruction
from activities.settings import Settings
from workflows.contracts import Classification, ClassifyRequest, Ticket

_KIND_WORDS: list[tuple[str, tuple[str, ...]]] = [
    ("bugfix", ("bug", "fix", "crash", "error", "broken", "regression", "fails", "wrong")),
    ("docs", ("doc", "docs", "readme", "documentation", "typo", "changelog")),
    ("test", ("test", "tests", "coverage", "flaky")),
    ("refactor", ("refactor", "cleanup", "clean up", "rename", "simplify", "restructure")),
    ("chore", ("bump", "upgrade", "dependency", "dependencies", "ci", "lint", "format")),
]
_RISKY_WORDS = ("auth", "security", "password", "token", "payment", "migration", "database", "delete", "prod")


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _kind(ticket: Ticket) -> tuple[str, str]:
    labels = {label.lower() for label in ticket.labels}
    title_words = _words(ticket.title)
    for kind, words in _KIND_WORDS:
        if labels & set(words) or kind in labels:
            return kind, f"label says {kind}"
    for kind, words in _KIND_WORDS:
        hit = title_words & set(words)
        if hit:
            return kind, f"title mentions {sorted(hit)[0]!r}"
    return "feature", "no bug, docs, test, refactor or chore signal: a feature"


def classify_ticket(ticket: Ticket) -> Classification:
    kind, why = _kind(ticket)
    size = len(ticket.body)
    complexity = "low" if size < 600 else "medium" if size < 3000 else "high"
    risky = sorted(_words(ticket.title + " " + ticket.body) & set(_RISKY_WORDS))
    risk = "high" if len(risky) >= 2 else "medium" if risky else "low"
    rationale = f"{why}; body {size} chars; " + (f"touches {', '.join(risky)}" if risky else "no risky areas")
    return Classification(kind=kind, complexity=complexity, risk=risk, rationale=rationale)


class ModelClassification(BaseModel):
    """What the model must answer (validated; one corrective retry, then the next model)."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["feature", "bugfix", "refactor", "docs", "test", "chore"]
    complexity: Literal["low", "medium", "high"]
    risk: Literal["low", "medium", "high"]
    rationale: str


_SYSTEM = (
    "You triage software tickets for an autonomous coding agent. Decide the kind of change, its "
    "complexity (low: a few lines in one file; high: many files or a design change) and its risk "
    "(high: auth, security, payments, data migrations, deletion). Give a one-sentence rationale. "
)


def classify_messages(ticket: Ticket, shrink: int) -> list[dict[str, Any]]:
    labels = ", ".join(ticket.labels) or "none"
    body = shrink_text(ticket.body, shrink)
    user = f"Title: {ticket.title}\nLabels: {labels}\n\n{body}"
    return [
        {"role": "system", "content": _SYSTEM + schema_instruction(ModelClassification)},
        {"role": "user", "content": user},
    ]


class ClassifyActivities:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @activity.defn(name="classify")
    async def classify(self, req: ClassifyRequest) -> Classification:
        chain = stage_chain(self._settings, "classify", req.ticket)
        if not chain:
            return classify_ticket(req.ticket)
        call = structured_stage(
            self._settings,
            chain,
            lambda shrink: classify_messages(req.ticket, shrink),
            ModelClassification,
            attempt=activity.info().attempt,
        )
        # A local model may take minutes to load: heartbeat so the 30 s heartbeat timeout does not fire.
        result = await with_heartbeats(call, 5.0, "classifying")
        answer = result.value
        return Classification(
            kind=answer.kind,
            complexity=answer.complexity,
            risk=answer.risk,
            rationale=answer.rationale[:500],
            model=result.served_by.label,
            tokens=result.tokens,
        )


@activity.defn(name="classify")
async def classify(req: ClassifyRequest) -> Classification:
    """The rule-based activity, for workers built without settings."""
    return classify_ticket(req.ticket)
