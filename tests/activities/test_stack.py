from __future__ import annotations

from pathlib import Path

import pytest

from activities.stack import StackInfo, detect, readme_head, render_context
from tests.activities.conftest import write_files


@pytest.mark.parametrize(
    ("files", "stack", "command"),
    [
        ({"app.py": ""}, ["python"], None),
        ({"app.py": "", "test_app.py": ""}, ["python"], "python -m unittest discover -v"),
        ({"setup.py": "", "tests/__init__.py": ""}, ["python"], "python -m unittest discover -v"),
        ({"setup.py": "", "tests/test_a.py": ""}, ["python"], "python -m unittest discover -s tests -v"),
        ({"pyproject.toml": "[tool.pytest.ini_options]\n"}, ["python"], "python -m pytest -q"),
        ({"pyproject.toml": "[project]\ndependencies = ['pytest>=8']\n"}, ["python"], "python -m pytest -q"),
        ({"requirements-dev.txt": "pytest\n", "a.py": ""}, ["python"], "python -m pytest -q"),
        ({"a.py": "", "pytest.ini": "[pytest]\n"}, ["python"], "python -m pytest -q"),
        ({"a.py": "", "src/pkg/conftest.py": ""}, ["python"], "python -m pytest -q"),
        ({"package.json": '{"scripts": {"test": "jest"}}'}, ["node"], "npm test --silent"),
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
            {"package.json": "{}", "app.py": "", "tests/__init__.py": ""},
            ["python", "node"],
            "python -m unittest discover -v",
        ),
        ({"README": "hello"}, [], None),
    ],
)
def test_detect(tmp_path: Path, files: dict[str, str], stack: list[str], command: str | None) -> None:
    write_files(tmp_path, files)
    assert detect(tmp_path) == StackInfo(stack, command)


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
    text = render_context(StackInfo(["python"], "make test"), "make test", readme, files, commits)
    assert len(text.encode()) <= 6000
    assert text.startswith("Stack: python\nTest command: make test\n")
    assert "abc0009 Commit number 9" in text
    assert text.endswith("(truncated)")


def test_render_context_counts_files_beyond_the_tree() -> None:
    files = [f"f{i}.py" for i in range(160)]
    text = render_context(StackInfo(), None, None, files, [])
    assert "Stack: unknown" in text and "Test command: (none detected)" in text
    assert "Files (160 tracked):" in text and "f149.py" in text and "f150.py" not in text
    assert text.endswith("(10 more)")
