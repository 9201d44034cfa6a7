"""Deciding a repository's test command: what its developers run, and why we think so.

`decide_test_command` is the one place a ticket's test command is chosen: the ticket's own, else the
repository's configured one, else what `detect` finds in the worktree (the root, or the one package
directory the repository declares when the root has none). Every caller (prepare_workspace, run_checks,
the agents that run tests themselves) goes through it or reads its result from the Workspace.

Pure, synchronous functions over a directory (activities call them through asyncio.to_thread).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workflows.contracts import TestCommandSource, Ticket, Workspace

PYTEST = "python -m pytest -q"
UNITTEST = "python -m unittest discover -v"

_PYTHON_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", "requirements.txt")
_PROJECT_MANIFESTS = ("pyproject.toml", "setup.py", "setup.cfg", "package.json", "go.mod", "Cargo.toml")
_MAKE_TARGET = r"^{}\s*:(?!=)"
# Directories never searched for tests: environments, dependencies, build output, VCS metadata.
_SKIP_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", ".tox", ".nox", ".venv", "venv", "env", ".env", "node_modules", "build",
        "dist", "site-packages", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", "target",
        ".eggs", "vendor", "third_party",
    }
)  # fmt: skip
MAX_SCANNED_FILES = 5000
MAX_TEST_FILES_READ = 300
_TEST_FILE = re.compile(r"^(test_.*|.*_test)\.py$")
_BARE_TEST = re.compile(r"^(async\s+)?def\s+test\w*\s*\(", re.MULTILINE)
_PYTEST_USE = re.compile(r"^\s*(import\s+pytest|from\s+pytest\s+import)|@pytest\.", re.MULTILINE)
_PLAIN_TEST_CLASS = re.compile(r"^class\s+Test\w*\s*(\(\s*(object)?\s*\))?\s*:", re.MULTILINE)
_UNITTEST_CLASS = re.compile(r"^class\s+\w+\s*\([^)]*TestCase[^)]*\)\s*:", re.MULTILINE)
PYTEST_WORD = re.compile(r"(?<![\w-])pytest(?![\w-])")
_NOX_SESSION = re.compile(r"@nox\.session[^\n]*\n\s*def\s+(tests?)\s*\(", re.MULTILINE)
# Leading `cd DIR &&` that decide_test_command puts before a command found in a package directory.
_CD_PREFIX = re.compile(r"^cd\s+(\S+)\s*&&\s*")


@dataclass(frozen=True)
class StackInfo:
    """What detect found: every stack in the directory, the test command of the first that has tests,
    why (the evidence, in one line), and the package directory it applies to ("" = the root)."""

    stack: list[str] = field(default_factory=list)
    test_command: str | None = None
    reason: str = ""
    directory: str = ""


@dataclass(frozen=True)
class TestCommand:
    """The decision: a command (None: there is none), where it came from and why."""

    __test__ = False  # not a pytest test class

    command: str | None
    source: TestCommandSource | None
    reason: str
    stack: list[str] = field(default_factory=list)

    @property
    def directory(self) -> str:
        """The package directory the command runs in, relative to the worktree ("" = the root)."""
        return command_directory(self.command or "")


def read_small(path: Path, limit: int = 256 * 1024) -> str:
    """Read a small text file; missing or unreadable files read as empty."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return fh.read(limit)
    except OSError:
        return ""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(read_small(path))
    except (tomllib.TOMLDecodeError, ValueError):
        return {}


def read_ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(read_small(path))
    except configparser.Error:
        return configparser.ConfigParser(interpolation=None)
    return parser


def is_python(root: Path) -> bool:
    """A Python project: a packaging or requirements file, or Python files at the root or one level down."""
    markers = any((root / m).is_file() for m in _PYTHON_MARKERS)
    return (
        markers or any(root.glob("*.py")) or any(p.parent.name not in _SKIP_DIRS for p in root.glob("*/*.py"))
    )


def walk_files(root: Path, limit: int = MAX_SCANNED_FILES) -> list[Path]:
    """Files under root, skipping environments, dependencies and build output; at most `limit`."""
    found: list[Path] = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            found.append(Path(current) / name)
            if len(found) >= limit:
                return found
    return found


@dataclass(frozen=True)
class PythonTests:
    """The test files of a Python project, by style."""

    pytest_files: list[str] = field(default_factory=list)  # bare test functions, pytest imports/marks
    unittest_files: list[str] = field(default_factory=list)  # only unittest.TestCase classes
    other_files: list[str] = field(default_factory=list)  # named like tests, but neither style found
    conftests: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.pytest_files or self.unittest_files or self.conftests)


def scan_python_tests(root: Path) -> PythonTests:
    pytest_files: list[str] = []
    unittest_files: list[str] = []
    other: list[str] = []
    conftests: list[str] = []
    read = 0
    for path in walk_files(root):
        relative = path.relative_to(root).as_posix()
        if path.name == "conftest.py":
            conftests.append(relative)
            continue
        if not _TEST_FILE.match(path.name) or read >= MAX_TEST_FILES_READ:
            continue
        read += 1
        text = read_small(path, 64 * 1024)
        if (
            _BARE_TEST.search(text)
            or _PYTEST_USE.search(text)
            or (_PLAIN_TEST_CLASS.search(text) and not _UNITTEST_CLASS.search(text))
        ):
            pytest_files.append(relative)
        elif _UNITTEST_CLASS.search(text) or "unittest" in text:
            unittest_files.append(relative)
        else:
            other.append(relative)
    return PythonTests(pytest_files, unittest_files, other, conftests)


def pytest_mentions(root: Path) -> list[str]:
    """Dependency and configuration files of root that name pytest (a dependency, or its config)."""
    candidates = [
        root / name
        for name in (
            "pyproject.toml", "setup.cfg", "setup.py", "tox.ini", "pytest.ini", "noxfile.py", "Pipfile",
            "environment.yml", "hatch.toml", "uv.lock", "poetry.lock",
        )
    ]  # fmt: skip
    candidates += sorted(root.glob("requirements*.txt")) + sorted(root.glob("requirements/*.txt"))
    candidates += sorted(root.glob("*requirements*.txt"))
    named = []
    for path in dict.fromkeys(candidates):
        if path.name == "pytest.ini" and path.is_file():
            named.append(path.name)
        elif PYTEST_WORD.search(read_small(path)):
            named.append(path.relative_to(root).as_posix())
    return named


def _listed(paths: list[str], limit: int = 3) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _table(data: Any, *keys: str) -> dict[str, Any]:
    """data[k1][k2]... when each level is a table, else {}."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}


def configured_tool(root: Path) -> str | None:
    """A test entry point the project configures for its own tool (hatch scripts, a nox session, tox),
    named in the reason. These tools build and install the package into environments of their own on
    every run, from the network, and then test that installed copy: offline and on the worktree's code
    they cannot run, so the suite runs on its own runner in the project environment instead (a
    configured `test_command` with checks_network = true can still run the tool)."""
    pyproject = read_toml(root / "pyproject.toml")
    hatch_envs = _table(pyproject, "tool", "hatch", "envs") or _table(read_toml(root / "hatch.toml"), "envs")
    for env_name in ("default", "test", "tests"):
        scripts = _table(hatch_envs, env_name, "scripts")
        for script in ("test", "tests"):
            if script in scripts:
                target = script if env_name == "default" else f"{env_name}:{script}"
                return f"hatch script `{target}`"
    session = _NOX_SESSION.search(read_small(root / "noxfile.py"))
    if session:
        return f"nox session `{session.group(1)}`"
    tox_ini = read_ini(root / "tox.ini")
    if tox_ini.has_section("tox") or tox_ini.has_section("testenv"):
        return "tox (tox.ini)"
    if _table(pyproject, "tool", "tox") or read_ini(root / "setup.cfg").has_section("tox:tox"):
        return "tox"
    return None


def python_test_command(root: Path) -> tuple[str | None, str]:
    """pytest for pytest-style suites, unittest only for unittest-only ones."""
    command, reason = _python_runner(root)
    tool = configured_tool(root)
    if command is not None and tool is not None:
        reason += f"; the project also configures {tool}, which needs the network on every run"
    return command, reason


def _python_runner(root: Path) -> tuple[str | None, str]:
    tests = scan_python_tests(root)
    mentions = pytest_mentions(root)
    if tests.pytest_files:
        return PYTEST, f"pytest: pytest-style tests (bare test functions) in {_listed(tests.pytest_files)}"
    if tests.conftests:
        return PYTEST, f"pytest: {_listed(tests.conftests)}"
    if mentions and (tests.unittest_files or tests.other_files):
        return PYTEST, f"pytest: named in {_listed(mentions)}; it also runs the unittest-style tests"
    if tests.unittest_files:
        evidence = f"unittest: only unittest.TestCase suites ({_listed(tests.unittest_files)}), no pytest"
        for name in ("tests", "test"):
            # Since Python 3.11 discovery skips directories without __init__.py, so point at them directly.
            if (root / name).is_dir() and not (root / name / "__init__.py").is_file():
                return f"python -m unittest discover -s {name} -v", evidence
        return UNITTEST, evidence
    if mentions:
        return PYTEST, f"pytest: named in {_listed(mentions)}"
    return None, "python: no test files (test_*.py, *_test.py) and no pytest in any config"


def node_test_command(root: Path) -> tuple[str | None, str]:
    try:
        scripts = json.loads(read_small(root / "package.json")).get("scripts") or {}
    except (ValueError, AttributeError):
        return None, "node: package.json is not valid JSON"
    test = scripts.get("test") if isinstance(scripts, dict) else None
    # `npm init` writes a test script that only fails; it is not a test suite.
    if not isinstance(test, str) or not test.strip() or "no test specified" in test:
        return None, "node: package.json has no test script"
    script = test.strip()[:80]
    if (root / "pnpm-lock.yaml").is_file():
        return "pnpm test", f"pnpm test: package.json scripts.test = {script!r}, pnpm-lock.yaml"
    if (root / "yarn.lock").is_file():
        return "yarn test", f"yarn test: package.json scripts.test = {script!r}, yarn.lock"
    return "npm test --silent", f"npm test: package.json scripts.test = {script!r}"


def make_test_command(root: Path) -> tuple[str | None, str]:
    for name in ("Makefile", "makefile", "GNUmakefile"):
        text = read_small(root / name)
        for target in ("test", "check"):
            if re.search(_MAKE_TARGET.format(target), text, re.MULTILINE):
                return f"make {target}", f"make {target}: {name} has a `{target}` target"
    return None, ""


def _detect_here(root: Path) -> StackInfo:
    found: list[tuple[str, str | None, str]] = []
    if is_python(root):
        found.append(("python", *python_test_command(root)))
    if (root / "package.json").is_file():
        found.append(("node", *node_test_command(root)))
    if (root / "go.mod").is_file():
        found.append(("go", "go test ./...", "go test: go.mod"))
    if (root / "Cargo.toml").is_file():
        found.append(("rust", "cargo test", "cargo test: Cargo.toml"))
    make = make_test_command(root)
    candidates = [(cmd, why) for _, cmd, why in found if cmd] + ([make] if make[0] else [])
    stacks = [name for name, _, _ in found]
    if candidates:
        command, why = candidates[0]
        return StackInfo(stacks, command, why)
    misses = "; ".join(why for _, _, why in found if why)
    return StackInfo(stacks, None, misses)


def package_directories(root: Path, depth: int = 2) -> list[str]:
    """Subdirectories (up to `depth` deep) that declare a project of their own: a manifest file."""
    found: list[str] = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        level = len(here.relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        if level >= depth:
            dirs[:] = []
        if level and any(m in files for m in _PROJECT_MANIFESTS):
            found.append(here.relative_to(root).as_posix())
            dirs[:] = []  # a package's own subpackages belong to it
    return found


def detect(root: Path) -> StackInfo:
    """The test command of the root, else of the one package directory the repository declares."""
    info = _detect_here(root)
    if info.test_command:
        return info
    packages = [(d, _detect_here(root / d)) for d in package_directories(root)]
    with_tests = [(d, sub) for d, sub in packages if sub.test_command]
    if len(with_tests) == 1:
        directory, sub = with_tests[0]
        command = f"cd {shlex.quote(directory)} && {sub.test_command}"
        return StackInfo(sub.stack, command, f"{sub.reason} (in {directory}/)", directory)
    if len(with_tests) > 1:
        dirs = ", ".join(f"{d}/" for d, _ in with_tests)
        reason = f"several package directories have tests ({dirs}): configure test_command"
        return StackInfo(info.stack or with_tests[0][1].stack, None, reason)
    searched = ("test_*.py/*_test.py, pytest config, package.json scripts.test, go.mod, Cargo.toml, "
                "a Makefile test/check target")  # fmt: skip
    reason = info.reason or f"nothing found at the root (looked for {searched})"
    return StackInfo(info.stack, None, reason)


def command_directory(command: str) -> str:
    """The directory a `cd DIR && ...` command runs in ("" for the root)."""
    match = _CD_PREFIX.match(command.strip())
    if not match:
        return ""
    try:
        return shlex.split(match.group(1))[0]
    except ValueError:
        return ""


def runner_of(command: str) -> str | None:
    """The test runner a command starts: pytest, unittest, tox, nox, hatch, uv, npm, pnpm, yarn, go,
    cargo, make; None when it is something else (a script of the project)."""
    try:
        words = shlex.split(_CD_PREFIX.sub("", command.strip()))
    except ValueError:
        return None
    while words and "=" in words[0] and not words[0].startswith("="):
        words = words[1:]  # leading VAR=value assignments
    if not words:
        return None
    program = Path(words[0]).name
    if re.fullmatch(r"python[\d.]*", program) and len(words) >= 3 and words[1] == "-m":
        module = words[2].split(".")[0]
        return module if module in ("pytest", "unittest", "tox", "nox", "hatch") else f"python -m {module}"
    if program in ("pytest", "py.test"):
        return "pytest"
    if program == "uv" and len(words) >= 3 and words[1] == "run":
        return "uv"
    if program in ("tox", "nox", "hatch", "npm", "pnpm", "yarn", "go", "cargo", "make"):
        return program
    return None


def decide_test_command(
    root: Path, ticket_command: str | None, repo_command: str | None, repo_name: str = ""
) -> TestCommand:
    """THE decision of a ticket's test command: the ticket's, else the repository's, else detected."""
    stack = _detect_here(root).stack
    if ticket_command and ticket_command.strip():
        return TestCommand(ticket_command.strip(), "ticket", "test_command in the ticket", stack)
    if repo_command and repo_command.strip():
        where = f"[repos.{repo_name}] test_command" if repo_name else "the repository's test_command"
        return TestCommand(repo_command.strip(), "configured", where, stack)
    info = detect(root)
    source: TestCommandSource | None = "detected" if info.test_command else None
    return TestCommand(info.test_command, source, info.reason, info.stack)


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
    text = read_small(candidates[0], limit=16 * 1024)
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
        *([f"Why: {info.reason}"] if info.reason else []),
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


def agent_test_command(ticket: Ticket, workspace: Workspace) -> str | None:
    """The test command an agent is told about and runs: decided when the worktree was prepared
    (decide_test_command), the ticket's own first."""
    return ticket.test_command or workspace.test_command
