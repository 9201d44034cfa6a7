"""classify: what kind of change a ticket asks for, how big and how risky (rule-based for now)."""

from __future__ import annotations

import re

from temporalio import activity

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


@activity.defn(name="classify")
async def classify(req: ClassifyRequest) -> Classification:
    return classify_ticket(req.ticket)
