from __future__ import annotations

from pathlib import Path

import pytest

from activities.stack import (
    StackInfo,
    command_directory,
    decide_test_command,
    detect,
    readme_head,
    render_context,
    runner_of,
)
from tests.activities.conftest import write_files

PYTEST_STYLE = "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"
UNITTEST_STYLE = (
    "import unittest\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertTrue(1)\n"
)


@pytest.mark.parametrize(
    ("files", "stack", "command"),
    [
        ({"app.py": ""}, ["python"], None),
        ({"app.py": "", "test_app.py": UNITTEST_STYLE}, ["python"], "python -m unittest discover -v"),
        (
            {"setup.py": "", "tests/__init__.py": "", "tests/test_a.py": UNITTEST_STYLE},
            ["python"],
            "python -m unittest discover -v",
        ),
        (
            {"setup.py": "", "tests/test_a.py": UNITTEST_STYLE},
            ["python"],
            "python -m unittest discover -s tests -v",
        ),
        # The case: pytest-style tests and no pytest configuration anywhere.
        (
            {"setup.py": "", "tests/__init__.py": "", "tests/test_a.py": PYTEST_STYLE},
            ["python"],
            "python -m pytest -q",
        ),
        ({"pkg/__init__.py": "", "pkg/calc_test.py": PYTEST_STYLE}, ["python"], "python -m pytest -q"),
        (
            {"a.py": "", "test_a.py": "class TestA:\n    def test_x(self):\n        assert 1\n"},
            ["python"],
            "python -m pytest -q",
        ),
        # pytest named in a dependency file runs the unittest-style suite too.
        (
            {"requirements-dev.txt": "pytest\n", "test_a.py": UNITTEST_STYLE},
            ["python"],
            "python -m pytest -q",
        ),
        ({"pyproject.toml": "[project]\nname = 'p'\n", "tests/test_a.py": "x = 1\n"}, ["python"], None),
        ({"pyproject.toml": "[tool.pytest.ini_options]\n"}, ["python"], "python -m pytest -q"),
        ({"pyproject.toml": "[project]\ndependencies = ['pytest>=8']\n"}, ["python"], "python -m pytest -q"),
        ({"requirements-dev.txt": "pytest\n", "a.py": ""}, ["python"], "python -m pytest -q"),
        ({"a.py": "", "pytest.ini": "[pytest]\n"}, ["python"], "python -m pytest -q"),
        ({"a.py": "", "src/pkg/conftest.py": ""}, ["python"], "python -m pytest -q"),
        ({"package.json": '{"scripts": {"test": "jest"}}'}, ["node"], "npm test --silent"),
        ({"package.json": '{"scripts": {"test": "vitest"}}', "pnpm-lock.yaml": ""}, ["node"], "pnpm test"),
        ({"package.json": '{"scripts": {"test": "mocha"}}', "yarn.lock": ""}, ["node"], "yarn test"),
        # tox, nox and hatch rebuild the package from the network on every run: the suite's own runner.
        ({"tox.ini": "[tox]\nenv_list = py\n", "test_a.py": PYTEST_STYLE}, ["python"], "python -m pytest -q"),
        (
            {"noxfile.py": "import nox\n\n@nox.session\ndef tests(session):\n    pass\n", "a.py": ""},
            ["python"],
            None,
        ),
        (
            {"pyproject.toml": "[tool.hatch.envs.default.scripts]\ntest = 'pytest'\n"},
            ["python"],
            "python -m pytest -q",
        ),
        ({"Makefile": "check:\n\t./run\n"}, [], "make check"),
        (
            {"package.json": '{"scripts": {"test": "echo \\"Error: no test specified\\" && exit 1"}}'},
            ["node"],
            None,
        ),
        ({"package.json": "not json"}, ["node"], None),
        ({"go.mod": "module example.com/m\n"}, ["go"], "go test ./..."),
        ({"Cargo.toml": "[package]\n"}, ["rust"], "cargo test"),
        ({"Makefile": "build:\n\tcc x.c\n\ntest: build\n\t./run-tests\n"}, [], "make test"),
        ({"Makefile": "test := yes\n"}, [], None),
        ({"go.mod": "", "Makefile": "test:\n\tgo vet\n"}, ["go"], "go test ./..."),
        (
            {"package.json": "{}", "app.py": "", "tests/__init__.py": "", "tests/test_a.py": UNITTEST_STYLE},
            ["python", "node"],
            "python -m unittest discover -v",
        ),
        ({"README": "hello"}, [], None),
        ({"app.py": "", "tests/__init__.py": ""}, ["python"], None),  # a tests package with no tests
    ],
)
def test_detect(tmp_path: Path, files: dict[str, str], stack: list[str], command: str | None) -> None:
    write_files(tmp_path, files)
    info = detect(tmp_path)
    assert (info.stack, info.test_command) == (stack, command)
    assert info.reason, "every decision says why"


def test_detection_says_why(tmp_path: Path) -> None:
    write_files(tmp_path, {"setup.py": "", "tests/test_a.py": PYTEST_STYLE, "tests/conftest.py": ""})
    info = detect(tmp_path)
    assert info.reason == "pytest: pytest-style tests (bare test functions) in tests/test_a.py"
    write_files(tmp_path, {"tests/test_a.py": UNITTEST_STYLE})
    assert detect(tmp_path).reason == "pytest: tests/conftest.py"


def test_a_configured_tool_is_named_in_the_reason(tmp_path: Path) -> None:
    write_files(tmp_path, {"tox.ini": "[testenv]\ncommands = pytest\n", "tests/test_a.py": PYTEST_STYLE})
    info = detect(tmp_path)
    assert info.test_command == "python -m pytest -q"
    assert info.reason.endswith(
        "; the project also configures tox (tox.ini), which needs the network on every run"
    )


def test_tests_in_environments_and_dependencies_do_not_count(tmp_path: Path) -> None:
    write_files(
        tmp_path, {"a.py": "", ".venv/lib/test_x.py": PYTEST_STYLE, "node_modules/m/test_y.py": PYTEST_STYLE}
    )
    assert detect(tmp_path).test_command is None


def test_the_package_directory_the_repository_declares(tmp_path: Path) -> None:
    write_files(
        tmp_path, {"README.md": "docs", "python/pyproject.toml": "", "python/tests/test_a.py": PYTEST_STYLE}
    )
    info = detect(tmp_path)
    assert info.test_command == "cd python && python -m pytest -q" and info.directory == "python"
    assert info.reason.endswith("(in python/)")
    assert command_directory(info.test_command) == "python"
    write_files(tmp_path, {"web/package.json": '{"scripts": {"test": "node --test"}}'})
    several = detect(tmp_path)
    assert several.test_command is None and "python/, web/" in several.reason


def test_decide_test_command_ticket_then_configured_then_detected(tmp_path: Path) -> None:
    write_files(tmp_path, {"test_a.py": PYTEST_STYLE})
    assert decide_test_command(tmp_path, "make t", "tox", "calc").source == "ticket"
    configured = decide_test_command(tmp_path, None, "tox", "calc")
    assert (configured.command, configured.source, configured.reason) == (
        "tox",
        "configured",
        "[repos.calc] test_command",
    )
    detected = decide_test_command(tmp_path, " ", None)
    assert (detected.command, detected.source, detected.stack) == (
        "python -m pytest -q",
        "detected",
        ["python"],
    )
    empty = decide_test_command(tmp_path / "nothing", None, None)
    assert (empty.command, empty.source) == (None, None) and empty.reason


@pytest.mark.parametrize(
    ("command", "runner"),
    [
        ("python -m pytest -q", "pytest"),
        ("python3.12 -m unittest discover", "unittest"),
        ("/opt/venv/bin/python -m pytest", "pytest"),
        ("PYTHONPATH=src pytest -x", "pytest"),
        ("cd pkg && npm test --silent", "npm"),
        ("uv run pytest", "uv"),
        ("cargo test", "cargo"),
        ("python -m mypkg.tests", "python -m mypkg"),
        ("./run-tests.sh", None),
        ("unbalanced 'quote", None),
    ],
)
def test_runner_of(command: str, runner: str | None) -> None:
    assert runner_of(command) == runner


def test_readme_head(tmp_path: Path) -> None:
    assert readme_head(tmp_path) is None
    write_files(tmp_path, {"README.md": "".join(f"line {i}\n" for i in range(100))})
    name, lines = readme_head(tmp_path) or ("", [])
    assert name == "README.md"
    assert lines == [f"line {i}" for i in range(40)]


def test_render_context_is_bounded() -> None:
    files = [f"src/module_{i:04d}/a_rather_long_file_name_{i}.py" for i in range(500)]
    commits = [f"abc{i:04d} Commit number {i}" for i in range(10)]
    readme = ("README.md", ["# Big"] + ["x" * 200] * 40)
    info = StackInfo(["python"], "make test", "make test: Makefile has a `test` target")
    text = render_context(info, "make test", readme, files, commits)
    assert len(text.encode()) <= 6000
    assert text.startswith(
        "Stack: python\nTest command: make test\nWhy: make test: Makefile has a `test` target\n"
    )
    assert "abc0009 Commit number 9" in text
    assert text.endswith("(truncated)")


def test_render_context_counts_files_beyond_the_tree() -> None:
    files = [f"f{i}.py" for i in range(160)]
    text = render_context(StackInfo(), None, None, files, [])
    assert "Stack: unknown" in text and "Test command: (none detected)" in text
    assert "Files (160 tracked):" in text and "f149.py" in text and "f150.py" not in text
    assert text.endswith("(10 more)")
