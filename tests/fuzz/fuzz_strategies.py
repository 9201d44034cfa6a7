"""Hypothesis strategies for malformed tickets, shared by the submit and intake fuzz tests."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import strategies as st

FIELDS = [
    "id",
    "title",
    "repo",
    "base_branch",
    "base",
    "priority",
    "labels",
    "agent",
    "test_command",
    "depends_on",
    "dependencies",
    "max_iterations",
    "require_approval",
    "agent_timeout_minutes",
    "models",
    "modelPreference",
    "budget",
    "status",
    "source",
]
# Repository values that stay on this machine (a random "host:path" would make git try ssh).
REPOS = st.one_of(
    st.sampled_from(
        ["calc", "nope", "", " ", "-calc", "../..", "/", "file:///nowhere.git", "calc\n", "cal c"]
    ),
    st.text(st.characters(blacklist_characters=":@"), max_size=30),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**9), 10**9), st.floats(), st.text(max_size=80))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
FRONT = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=7).flatmap(
    lambda meta: (
        st.fixed_dictionaries({"repo": REPOS}).map(lambda r: {**meta, **r})
        if "repo" in meta
        else st.just(meta)
    )
)
BODIES = st.one_of(
    st.text(max_size=200),
    st.just(""),
    st.just("x" * (64 * 1024 + 1)),
    st.text(st.characters(whitelist_categories=("Cc", "Zs")), max_size=20),
)


def document(meta: dict[str, Any], body: str) -> str:
    return "---\n" + yaml.safe_dump(meta, allow_unicode=True) + "---\n" + body


DOCUMENTS = st.one_of(
    st.builds(document, FRONT, BODIES),
    st.builds(lambda meta, body: "---\n" + meta + "\n---\n" + body, st.text(max_size=120), BODIES),
    st.text(max_size=300),
)
