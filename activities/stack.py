"""Guessing a repository's stack and test command from the files in its root.

Pure, synchronous functions over a directory (activities call them through asyncio.to_thread). The
guess is only a default: a ticket's or the repo config's test_command always wins.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

PYTEST = "python -m pytest -q"
UNITTEST = "python -m unittest discover -v"

_PYTHON_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", "requirements.txt")
_MAKE_TEST_TARGET = re.compile(r"^test\s*:(?!=)", re.MULTILINE)


@dataclass(frozen=True)
class StackInfo:
    stack: list[str] = field(default_factory=list)
    test_command: str | None = None


def _read(path: Path, limit: int = 256 * 1024) -> str:
    """Read a small text file; missing or unreadable files read as empty."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return fh.read(limit)
    except OSError:
        return ""


def is_python(root: Path) -> bool:
    return any((root / m).is_file() for m in _PYTHON_MARKERS) or any(root.glob("*.py"))


def _shallow_conftest(root: Path) -> bool:
    # conftest.py usually sits at the root or in tests/; deeper searches cost time on big repos.
    return any(any(root.glob(pattern)) for pattern in ("conftest.py", "*/conftest.py", "*/*/conftest.py"))


def uses_pytest(root: Path) -> bool:
    if (root / "pytest.ini").is_file() or _shallow_conftest(root):
        return True
    if "pytest" in _read(root / "pyproject.toml"):  # [tool.pytest...] or a pytest dependency
        return True
    if "[tool:pytest]" in _read(root / "setup.cfg") or "[pytest]" in _read(root / "tox.ini"):
        return True
    requirements = [*root.glob("requirements*.txt"), *root.glob("requirements/*.txt")]
    return any("pytest" in _read(path) for path in requirements)


def python_test_command(root: Path) -> str | None:
    if uses_pytest(root):
        return PYTEST
    for name in ("tests", "test"):
        # Since Python 3.11 discovery skips directories without __init__.py, so point at them directly.
        if (root / name).is_dir() and not (root / name / "__init__.py").is_file():
            return f"python -m unittest discover -s {name} -v"
    if (root / "tests").is_dir() or (root / "test").is_dir() or any(root.glob("test*.py")):
        return UNITTEST
    return None


def node_test_command(root: Path) -> str | None:
    try:
        scripts = json.loads(_read(root / "package.json")).get("scripts") or {}
    except (ValueError, AttributeError):
        return None
    test = scripts.get("test") if isinstance(scripts, dict) else None
    # `npm init` writes a test script that only fails; it is not a test suite.
    if not isinstance(test, str) or not test.strip() or "no test specified" in test:
        return None
    return "npm test --silent"


def make_test_command(root: Path) -> str | None:
    for name in ("Makefile", "makefile", "GNUmakefile"):
        if _MAKE_TEST_TARGET.search(_read(root / name)):
            return "make test"
    return None


def detect(root: Path) -> StackInfo:
    """Every stack found in root, and the test command of the first one that has tests."""
    found: list[tuple[str, str | None]] = []
    if is_python(root):
        found.append(("python", python_test_command(root)))
    if (root / "package.json").is_file():
        found.append(("node", node_test_command(root)))
    if (root / "go.mod").is_file():
        found.append(("go", "go test ./..."))
    if (root / "Cargo.toml").is_file():
        found.append(("rust", "cargo test"))
    commands = [cmd for _, cmd in found if cmd] + [cmd for cmd in [make_test_command(root)] if cmd]
    return StackInfo(stack=[name for name, _ in found], test_command=commands[0] if commands else None)


# ------------------------------------------------------------------------------ context for the agent

SUMMARY_LIMIT = 6000
README_LINES = 40
TREE_PATHS = 150
README_CHARS = 2500


def readme_head(root: Path, lines: int = README_LINES) -> tuple[str, list[str]] | None:
    """Name and first lines of the root README, if there is one."""
    candidates = sorted(p for p in root.glob("*") if p.name.lower().startswith("readme") and p.is_file())
    if not candidates:
        return None
    text = _read(candidates[0], limit=16 * 1024)
    return candidates[0].name, [line[:200] for line in text.splitlines()[:lines]]


def render_context(
    info: StackInfo,
    test_command: str | None,
    readme: tuple[str, list[str]] | None,
    files: list[str],
    commits: list[str],
    limit: int = SUMMARY_LIMIT,
) -> str:
    """A bounded plain-text overview of the repository, given to the agent before it starts."""
    parts = [
        f"Stack: {', '.join(info.stack) or 'unknown'}",
        f"Test command: {test_command or '(none detected)'}",
        "",
        "Recent commits:",
        *commits[:10],
    ]
    if readme:
        head = "\n".join(readme[1])[:README_CHARS]
        parts += ["", f"{readme[0]} (head):", head]
    parts += ["", f"Files ({len(files)} tracked):", *files[:TREE_PATHS]]
    if len(files) > TREE_PATHS:
        parts.append(f"({len(files) - TREE_PATHS} more)")
    text = "\n".join(parts)
    if len(text.encode()) <= limit:
        return text
    # The file tree comes last and goes first; cutting at a byte budget keeps workflow payloads small.
    return text.encode()[: limit - 20].decode(errors="ignore").rsplit("\n", 1)[0] + "\n(truncated)"
