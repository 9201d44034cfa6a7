"""plan_intake: dependency cycles and unknown dependencies refused, the rest ordered by deps then priority."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clients.intake import failure_kind, find_cycles, plan_intake
from workflows.contracts import Ticket


def t(ticket_id: str, *deps: str, priority: int = 3) -> Ticket:
    return Ticket(
        id=ticket_id, title=f"T {ticket_id}", body="b", repo="r", depends_on=list(deps), priority=priority
    )


def test_dependencies_first_then_priority_then_file_order() -> None:
    plan = plan_intake(
        [t("a", "c"), t("b", priority=1), t("c", priority=5), t("d"), t("e", priority=1)], set()
    )

    assert [x.id for x in plan.order] == ["b", "e", "d", "c", "a"]
    assert plan.rejected == {}


def test_a_cycle_is_refused_with_its_path_spelled_out() -> None:
    plan = plan_intake([t("a", "b"), t("b", "c"), t("c", "a"), t("d", "a"), t("e")], set())

    assert [x.id for x in plan.order] == ["e"]
    assert plan.rejected["a"] == "dependency cycle a -> b -> c -> a"
    assert plan.rejected["b"] == plan.rejected["c"] == plan.rejected["a"]
    assert plan.rejected["d"] == "depends on a, which was refused"


def test_unknown_dependency_is_refused_but_known_ones_pass() -> None:
    plan = plan_intake([t("a", "ghost"), t("b", "old"), t("c", "a")], known={"old"})

    assert [x.id for x in plan.order] == ["b"]
    assert plan.rejected["a"] == "depends on unknown ticket(s) ghost"
    assert plan.rejected["c"] == "depends on a, which was refused"


def test_duplicate_ids_in_one_batch_are_refused() -> None:
    plan = plan_intake([t("a"), t("a", priority=1), t("b")], set())
    assert [x.id for x in plan.order] == ["b"] and "appears twice" in plan.rejected["a"]


def test_find_cycles_handles_long_chains_without_recursion() -> None:
    graph = {f"n{i}": [f"n{i + 1}"] for i in range(5000)}
    assert find_cycles(graph) == []
    graph["n4999"] = ["n0"]
    (cycle,) = find_cycles(graph)
    assert cycle[0] == cycle[-1] and len(cycle) == 5001


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 5), st.sets(st.integers(0, 11), max_size=3)), min_size=1, max_size=12)
)
def test_every_plan_respects_dependencies(spec: list[tuple[int, set[int]]]) -> None:
    tickets = [t(f"t{i}", *(f"t{d}" for d in deps if d != i), priority=p) for i, (p, deps) in enumerate(spec)]
    plan = plan_intake(tickets, set())

    position = {x.id: i for i, x in enumerate(plan.order)}
    assert set(position) | set(plan.rejected) == {x.id for x in tickets}
    for ticket in plan.order:
        assert all(dep in position and position[dep] < position[ticket.id] for dep in ticket.depends_on)
    for reason in plan.rejected.values():
        assert reason.startswith(("dependency cycle", "depends on"))


def test_failure_kinds() -> None:
    transient = "blocked for 7 days with no answer: open_pr failed (retries exhausted): host error (502)"
    assert failure_kind("TicketFailed", transient) == "transient"
    assert failure_kind(
        "TicketFailed", "blocked for 1 hour with no answer: run_checks failed (timed out): x"
    ) == ("transient")
    assert failure_kind(
        "TicketFailed", "blocked ...: open_pr failed (not retryable): authentication failed"
    ) == ("permanent")
    assert failure_kind(
        "TicketFailed", "blocked for 7 days with no answer: the agent needs help: which API?"
    ) == ("human")
    assert failure_kind("TicketFailed", "not approved within 7 days") == "human"
    assert failure_kind("WorkflowTaskFailed", "anything") == "permanent"
