"""The test gate end to end: real, unmodified project layouts through TicketWorkflow on the dev server.

Each test creates a small project the way its ecosystem lays one out (no ticketflow-specific config),
a `command` agent that makes a real edit, and checks what ran (the command and why), the runner's real
counts, a failing test going back to the agent by its name, and runs that say nothing about the code
(no tests, a runner that is not there) blocking after one attempt with the reason and the fix.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.settings import RepoConfig, Settings
from clients import tickets
from tests.conftest import script_agent
from tests.fakes.repos import run_git
from tests.helpers import in_state, local_prs, result_of, submit, wait_for_status
from workflows.contracts import CheckOutcome, Stage, Ticket, TicketState, TicketStatus

pytestmark = pytest.mark.asyncio(loop_scope="session")

# The agent: iteration 1 writes the edit (with a bug when the recipe has one); a later iteration fixes it
# only when the feedback names the failing test, so the test proves the name reached the agent.
AGENT = """
import json, os, pathlib, sys
task = json.loads(pathlib.Path(os.environ["TICKETFLOW_TASK_FILE"]).read_text())
root = pathlib.Path(os.environ["TICKETFLOW_WORKTREE"])
recipe = json.loads({recipe!r})
feedback = task.get("feedback") or ""
if task["iteration"] == 1:
    files = recipe["first"]
elif recipe.get("failing") and recipe["failing"] in feedback:
    files = recipe["fixed"]
else:
    print("::ticketflow blocked::the feedback did not name the failing test: " + feedback[:300])
    sys.exit(0)
for name, text in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
print("::ticketflow step::edited " + ", ".join(files))
"""


def make_project(root: Path, name: str, files: dict[str, str]) -> Path:
    """A bare repository holding the project on main, as it would be cloned from its host."""
    seed = root / f"{name}-seed"
    seed.mkdir(parents=True)
    for relative, text in files.items():
        path = seed / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    run_git(seed, "init", "-q")
    run_git(seed, "add", "-A")
    run_git(seed, "commit", "-q", "-m", f"{name}: initial import")
    bare = root / f"{name}.git"
    run_git(root, "clone", "-q", "--bare", str(seed), str(bare))
    return bare


def use(
    worker: Settings, tmp_path: Path, name: str, files: dict[str, str], recipe: Mapping[str, object]
) -> None:
    worker.repos[name] = RepoConfig(url=str(make_project(tmp_path / "projects", name, files)))
    worker.agents[name] = script_agent(tmp_path, f"agent_{name}", AGENT.format(recipe=json.dumps(recipe)))


def ticket(name: str, title: str) -> Ticket:
    return Ticket(id=f"gate-{name}", title=title, body=f"{title}, with a test.", repo=name, agent=name)


def pr_of(worker: Settings, name: str) -> dict[str, object]:
    (pr,) = local_prs(Path(worker.repos[name].url))
    return pr


# ------------------------------------------------------------------------------------------ projects

PYTEST_LIB = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "shapes"
        version = "0.3.1"
        description = "Areas of simple shapes"
        requires-python = ">=3.9"
    """,
    "README.md": "# shapes\n\nAreas of simple shapes.\n",
    "shapes/__init__.py": """
        def square(side):
            return side * side


        def rectangle(width, height):
            return width * height
    """,
    "tests/__init__.py": "",
    "tests/test_shapes.py": """
        from shapes import rectangle, square


        def test_square():
            assert square(3) == 9


        def test_rectangle():
            assert rectangle(2, 5) == 10


        def test_square_of_zero():
            assert square(0) == 0
    """,
}
CUBE_TEST = "from shapes.cube import cube\n\n\ndef test_cube():\n    assert cube(2) == 8\n"


@pytest.mark.slow
async def test_pytest_library_without_config_fails_back_to_the_agent_by_name(
    client: Client, worker: Settings, tmp_path: Path
) -> None:
    recipe = {
        "first": {"shapes/cube.py": "def cube(x):\n    return x * x\n", "tests/test_cube.py": CUBE_TEST},
        "failing": "tests/test_cube.py::test_cube",
        "fixed": {"shapes/cube.py": "def cube(x):\n    return x * x * x\n"},
    }
    use(worker, tmp_path, "shapes", PYTEST_LIB, recipe)
    job = ticket("shapes", "Add the volume of a cube")
    await submit(client, worker, job)
    result = await result_of(client, job.id, timeout=240)

    assert result.state is TicketState.DONE, result.status.blocked_reason
    status = result.status
    assert status.test_command == "python -m pytest -q" and status.test_command_source == "detected"
    assert (
        "pytest-style tests" in status.test_command_reason
        and "tests/test_shapes.py" in status.test_command_reason
    )
    assert status.iteration == 2, "the failing test went back to the agent once"
    checks = status.last_checks
    assert checks is not None and checks.outcome is CheckOutcome.PASSED
    assert (checks.passed_count, checks.failed_count, checks.skipped_count) == (4, 0, 0)
    assert checks.counts_from == "junit" and "+ pytest" in checks.environment
    body = str(pr_of(worker, "shapes")["body"])
    assert "Counts: 4 passed, 0 failed, 0 skipped (JUnit report)" in body
    assert "(detected: pytest: pytest-style tests" in body
    notes = [e.note for e in status.events]
    assert any(n.startswith("test command: python -m pytest -q (detected: pytest") for n in notes)


UNITTEST_PKG = {
    "setup.py": """
        from setuptools import setup

        setup(name="tinyunit", version="1.0", packages=["tinyunit"])
    """,
    "tinyunit/__init__.py": """
        def greet(name):
            return "hello " + name
    """,
    "tests/__init__.py": "",
    "tests/test_greet.py": """
        import unittest

        from tinyunit import greet


        class GreetTest(unittest.TestCase):
            def test_greet(self):
                self.assertEqual(greet("ann"), "hello ann")

            def test_empty(self):
                self.assertEqual(greet(""), "hello ")
    """,
}
SHOUT_TEST = (
    "import unittest\n\nfrom tinyunit.shout import shout\n\n\nclass ShoutTest(unittest.TestCase):\n"
    "    def test_shout(self):\n        self.assertEqual(shout('hi'), 'HI!')\n"
)


@pytest.mark.slow
async def test_unittest_package_runs_unittest(client: Client, worker: Settings, tmp_path: Path) -> None:
    recipe = {
        "first": {
            "tinyunit/shout.py": "def shout(s):\n    return s.upper() + '!'\n",
            "tests/test_shout.py": SHOUT_TEST,
        }
    }
    use(worker, tmp_path, "tinyunit", UNITTEST_PKG, recipe)
    job = ticket("tinyunit", "Add shouting")
    await submit(client, worker, job)
    result = await result_of(client, job.id, timeout=240)

    assert result.state is TicketState.DONE, result.status.blocked_reason
    checks = result.status.last_checks
    assert checks is not None and checks.outcome is CheckOutcome.PASSED
    assert checks.command == "python -m unittest discover -v" and checks.command_source == "detected"
    assert "unittest.TestCase" in checks.command_reason
    assert (checks.passed_count, checks.failed_count, checks.skipped_count) == (3, 0, 0)
    assert checks.counts_from == "summary" and "setup.py" in checks.environment
    assert result.status.iteration == 1


NODE_PKG = {
    "package.json": json.dumps({"name": "tiny-sum", "version": "1.0.0", "scripts": {"test": "node --test"}}),
    "index.js": "exports.sum = (a, b) => a + b;\n",
    "test/sum.test.js": """
        const test = require('node:test');
        const assert = require('node:assert');
        const { sum } = require('../index.js');

        test('sums', () => assert.strictEqual(sum(1, 2), 3));
    """,
}
PRODUCT_TEST = (
    "const test = require('node:test');\nconst assert = require('node:assert');\n"
    "const { product } = require('../product.js');\n\n"
    "test('multiplies', () => assert.strictEqual(product(2, 3), 6));\n"
)


async def test_node_package_runs_npm_test(client: Client, worker: Settings, tmp_path: Path) -> None:
    recipe = {
        "first": {"product.js": "exports.product = (a, b) => a + b;\n", "test/product.test.js": PRODUCT_TEST},
        "failing": "multiplies",
        "fixed": {"product.js": "exports.product = (a, b) => a * b;\n"},
    }
    use(worker, tmp_path, "tinysum", NODE_PKG, recipe)
    job = ticket("tinysum", "Add a product function")
    await submit(client, worker, job)
    result = await result_of(client, job.id, timeout=120)

    assert result.state is TicketState.DONE, result.status.blocked_reason
    status = result.status
    assert status.iteration == 2
    checks = status.last_checks
    assert checks is not None and checks.outcome is CheckOutcome.PASSED
    assert checks.command == "npm test --silent" and "scripts.test = 'node --test'" in checks.command_reason
    assert (checks.passed_count, checks.failed_count, checks.skipped_count) == (2, 0, 0)


CRATE = {
    "Cargo.toml": """
        [package]
        name = "tally"
        version = "0.1.0"
        edition = "2021"

        [dependencies]
    """,
    ".gitignore": "/target\n",
    "src/lib.rs": """
        pub fn add(a: i64, b: i64) -> i64 {
            a + b
        }

        #[cfg(test)]
        mod tests {
            use super::*;

            #[test]
            fn adds() {
                assert_eq!(add(2, 2), 4);
            }
        }
    """,
}
CRATE_WITH_SUB = CRATE["src/lib.rs"].replace(
    "#[cfg(test)]", "pub fn sub(a: i64, b: i64) -> i64 {\n    a - b\n}\n\n#[cfg(test)]"
)


async def test_rust_crate_runs_cargo_test(client: Client, worker: Settings, tmp_path: Path) -> None:
    lib = (
        textwrap.dedent(CRATE_WITH_SUB)
        .lstrip()
        .replace(
            "    fn adds() {",
            "    fn subtracts() {\n        assert_eq!(sub(5, 3), 2);\n    }\n\n    #[test]\n    fn adds() {",
        )
    )
    use(worker, tmp_path, "tally", CRATE, {"first": {"src/lib.rs": lib}})
    job = ticket("tally", "Add subtraction")
    await submit(client, worker, job)
    result = await result_of(client, job.id, timeout=240)

    assert result.state is TicketState.DONE, result.status.blocked_reason
    checks = result.status.last_checks
    assert checks is not None and checks.outcome is CheckOutcome.PASSED, (
        checks.output_tail if checks else None
    )
    assert checks.command == "cargo test" and checks.command_reason == "cargo test: Cargo.toml"
    assert (checks.passed_count, checks.failed_count) == (2, 0)
    # cargo's build output went to the repository's cache, not into the worktree the agent commits.
    assert list((worker.state_dir / "envs").glob("*-cache/cargo-target"))


# ------------------------------------------------------------------------------- runs that test nothing


def blocked_at_checks(status: TicketStatus) -> bool:
    return status.state is TicketState.BLOCKED and status.stage is Stage.RUN_CHECKS


@pytest.mark.slow
async def test_no_tests_blocks_after_one_attempt_unless_tests_are_optional(
    client: Client, worker: Settings, tmp_path: Path
) -> None:
    files = {
        "pyproject.toml": """
            [project]
            name = "notes"
            version = "0.1.0"

            [project.optional-dependencies]
            test = ["pytest"]
        """,
        "notes.py": "def title(text):\n    return text.title()\n",
    }
    use(
        worker,
        tmp_path,
        "notes",
        files,
        {"first": {"notes.py": "def title(text):\n    return text.strip().title()\n"}},
    )
    job = ticket("notes", "Strip titles")
    await submit(client, worker, job)
    status = await wait_for_status(client, job.id, blocked_at_checks, timeout=240)

    assert status.attempts["run_agent"] == 1 and status.iteration == 1
    assert status.blocked_reason is not None
    assert status.blocked_reason.startswith("no test ran: pytest collected no tests (exit 5).")
    assert "require_tests = false" in status.blocked_reason
    checks = status.last_checks
    assert checks is not None and checks.outcome is CheckOutcome.NO_TESTS and not checks.passed
    assert checks.passed_count == 0 and checks.command_reason == "pytest: named in pyproject.toml"

    # The repository accepts untested work: retrying the checks opens a draft PR that says so.
    worker.repos["notes"] = worker.repos["notes"].model_copy(update={"require_tests": False})
    await tickets.retry(client, worker, job.id)
    result = await result_of(client, job.id, timeout=120)
    assert result.state is TicketState.DONE
    assert result.status.attempts["run_agent"] == 1
    pr = pr_of(worker, "notes")
    assert pr["draft"] is True and pr["labels"] == ["untested"]
    assert "> **Untested.** pytest collected no tests (exit 5)." in str(pr["body"])


async def test_missing_runner_blocks_after_one_attempt_with_the_fix(
    client: Client, worker: Settings, tmp_path: Path
) -> None:
    use(worker, tmp_path, "sums", NODE_PKG, {"first": {"README.md": "# tiny-sum\n"}})
    worker.repos["sums"] = worker.repos["sums"].model_copy(update={"test_command": "vitest-nowhere run"})
    job = ticket("sums", "Document the package")
    await submit(client, worker, job)
    status = await wait_for_status(client, job.id, blocked_at_checks, timeout=120)

    assert status.attempts["run_agent"] == 1 and status.iteration == 1
    reason = status.blocked_reason or ""
    assert reason.startswith("the test environment is broken: the test runner was not found (exit 127)")
    assert "vitest-nowhere" in reason and "Fix: install `vitest-nowhere` on the worker" in reason
    checks = status.last_checks
    assert checks is not None and checks.outcome is CheckOutcome.ENV_ERROR
    assert checks.command_source == "configured" and checks.command_reason == "[repos.sums] test_command"

    # The operator fixes the configuration and retries the checks: no agent iteration was spent.
    worker.repos["sums"] = worker.repos["sums"].model_copy(update={"test_command": None})
    await tickets.retry(client, worker, job.id)
    await wait_for_status(client, job.id, in_state(TicketState.DONE), timeout=120)
    done = await tickets.status(client, job.id)
    assert done.attempts["run_agent"] == 1
    assert done.last_checks is not None and done.last_checks.outcome is CheckOutcome.PASSED
    assert done.last_checks.command == "npm test --silent" and done.last_checks.passed_count == 1
