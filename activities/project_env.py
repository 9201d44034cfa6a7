"""The project's own environment: the interpreter, test runner and dependencies its tests need.

Tests never run on ticketflow's interpreter. A repository gets an environment under
`<state_dir>/envs/<repo key>-<hash>`, where the hash covers its dependency files, its setup_command,
the test runner and the interpreter: every ticket of the repository reuses it until one of those
changes. It is built once, under a file lock (workers sharing a state dir take turns), inside the same
sandbox as the tests but with network, and marked ready only when every step worked:

- with a `setup_command` (RepoConfig): a venv, then the command, run in a copy of the project taken for
  the environment (`uv sync`, `pip install -e .[test]`, `npm ci` all work there, and the copy keeps
  what they write out of the ticket's worktree);
- without one, for a Python project: a venv of the dependencies it declares (pyproject.toml
  [project] dependencies and test/dev extras and groups, setup.cfg, requirements files, a uv.lock
  through `uv sync`), plus pytest when the suite runs on pytest, plus tox/nox/hatch when those run it.
  The project itself is not installed: the tests import the worktree's code (PYTHONPATH), so a shared
  environment never runs another ticket's code;
- anything else needs no environment: its runner comes from the worker's PATH.

Tests then run with the environment's bin first on PATH, offline. A step that fails is an environment
error (EnvError: what failed, the output, what to do about it), which blocks the ticket at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activities import stack
from activities.agents import sandbox
from activities.proc import ProcessResult, run_process
from activities.settings import RepoConfig, Settings
from activities.workspace import file_lock

log = logging.getLogger("ticketflow.project_env")
ENV_FORMAT = "1"  # part of every hash: a change to how environments are built builds them again
MARKER = "ticketflow-env.json"
SETUP_TIMEOUT = 30 * 60.0
# An environment of a repository no ticket has used for this long goes when a newer one is built.
STALE_ENV_SECONDS = 7 * 24 * 3600.0
STEP_TAIL_LINES = 60
TEST_EXTRAS = ("test", "tests", "testing", "dev")
_REQUIREMENT_FILES = (
    "requirements.txt", "requirements-dev.txt", "requirements_dev.txt", "dev-requirements.txt",
    "requirements-test.txt", "requirements-tests.txt", "requirements_test.txt", "test-requirements.txt",
    "requirements-testing.txt", "requirements/test.txt", "requirements/tests.txt", "requirements/dev.txt",
    "requirements/testing.txt", "requirements/base.txt",
)  # fmt: skip
_DEPENDENCY_FILES = (
    "pyproject.toml", "setup.py", "setup.cfg", "Pipfile", "Pipfile.lock", "poetry.lock", "uv.lock",
    "pdm.lock", "tox.ini", "noxfile.py", "hatch.toml", "package.json", "package-lock.json",
    "npm-shrinkwrap.json", "pnpm-lock.yaml", "yarn.lock", "go.mod", "go.sum", "Cargo.toml", "Cargo.lock",
    ".python-version",
)  # fmt: skip
# What a setup step may see of the worker's environment besides the test allowlist: package index,
# proxy and certificate settings of the operator (they may carry index credentials: setup only).
SETUP_ENV_PREFIXES = ("PIP_", "UV_", "NPM_CONFIG_", "npm_config_", "CARGO_REGISTRIES_", "GOPROXY", "GOFLAGS")
SETUP_ENV_NAMES = (
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "SSL_CERT_FILE",
    "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "GOPRIVATE", "GONOSUMDB",
)  # fmt: skip
# The project's copy the setup runs in leaves these out (they are environments or build output).
_COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".tox", ".nox", ".venv", "venv", "node_modules", "__pycache__", "target", "build", "dist"
)
# Runners whose toolchain a rustup proxy finds in ~/.rustup.
_RUSTUP_TOOLS = ("cargo", "rustc", "rustup", "rustdoc")
# pip install --report lists what it installed; this removes the project itself again (its deps stay).
_UNINSTALL_PROJECT = """
import json, subprocess, sys
report = json.load(open(sys.argv[1]))
names = [item["metadata"]["name"] for item in report.get("install", [])
         if "dir_info" in item.get("download_info", {})]
for name in names:
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", name], check=True)
print("installed the dependencies of", ", ".join(names) or "the project", "without the project itself")
"""


class EnvError(Exception):
    """The environment could not be made: what failed, the output, what a human can do about it."""

    def __init__(self, reason: str, hint: str, output: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint
        self.output = output


@dataclass(frozen=True)
class Step:
    describe: str
    argv: list[str]
    cwd: Path


@dataclass(frozen=True)
class EnvPlan:
    """How one repository's environment for one state of its dependency files is built."""

    name: str
    path: Path
    description: str
    steps: list[Step] = field(default_factory=list)
    copy_from: Path | None = None  # the project directory copied to <env>/src for setup_command


@dataclass(frozen=True)
class ProjectEnv:
    """An environment that is ready (or None paths: the project needs none)."""

    path: Path | None
    name: str = ""
    description: str = "no project environment: the runner comes from the worker's PATH"
    built: bool = False


# ------------------------------------------------------------------------------------ repositories


def repo_config_for(settings: Settings, repo_url: str) -> tuple[str, RepoConfig | None]:
    """The configured repository a workspace belongs to (by its URL), else ("", None)."""
    for name, cfg in settings.repos.items():
        if cfg.url == repo_url:
            return name, cfg
    with contextlib.suppress(OSError, RuntimeError):
        resolved = str(Path(repo_url).expanduser().resolve())
        for name, cfg in settings.repos.items():
            if "://" not in cfg.url and str(Path(cfg.url).expanduser().resolve()) == resolved:
                return name, cfg
    return "", None


def envs_dir(settings: Settings) -> Path:
    return settings.state_dir / "envs"


def cache_dir(settings: Settings, repo_key: str) -> Path:
    """Per repository, writable by setup and tests: cargo's target and home, go's build and module caches."""
    return envs_dir(settings) / f"{repo_key}-cache"


# ------------------------------------------------------------------------------------- planning


def dependency_files(project: Path) -> list[Path]:
    names = [*_DEPENDENCY_FILES, *_REQUIREMENT_FILES]
    found = {project / name for name in names if (project / name).is_file()}
    found |= {p for p in project.glob("*requirements*.txt") if p.is_file()}
    found |= {p for p in project.glob("requirements/*.txt") if p.is_file()}
    return sorted(found)


def env_hash(project: Path, files: Iterable[Path], *parts: str) -> str:
    digest = hashlib.sha256(ENV_FORMAT.encode())
    for part in parts:
        digest.update(b"\0" + part.encode())
    for path in files:
        digest.update(b"\0" + path.relative_to(project).as_posix().encode() + b"\0")
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def base_python() -> str:
    """The interpreter environments are made from: the worker's base install (never its venv), which
    the sandbox keeps readable (sandbox.interpreter_paths)."""
    return str(getattr(sys, "_base_executable", None) or sys.executable)


def _requirement_list(value: Any) -> list[str]:
    return (
        [str(item).strip() for item in value if isinstance(item, str) and item.strip()]
        if isinstance(value, list)
        else []
    )


def _dependency_group(groups: dict[str, Any], name: str, seen: set[str] | None = None) -> list[str]:
    """A PEP 735 dependency group with its include-group entries resolved."""
    seen = seen or set()
    if name in seen or not isinstance(groups.get(name), list):
        return []
    seen.add(name)
    found: list[str] = []
    for item in groups[name]:
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict) and isinstance(item.get("include-group"), str):
            found += _dependency_group(groups, item["include-group"], seen)
    return found


@dataclass(frozen=True)
class PythonDeps:
    """What a Python project declares it needs, as pip arguments, and whether it can only be learnt by
    building the project (dynamic dependencies, setup.py)."""

    requirements: list[str] = field(default_factory=list)
    requirement_files: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    needs_build: bool = False
    sources: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.requirements or self.requirement_files or self.needs_build)


def python_dependencies(project: Path) -> PythonDeps:
    pyproject = stack.read_toml(project / "pyproject.toml")
    meta = pyproject.get("project") if isinstance(pyproject.get("project"), dict) else None
    requirements: list[str] = []
    extras: list[str] = []
    sources: list[str] = []
    needs_build = False
    if meta is not None:
        dynamic = meta.get("dynamic") if isinstance(meta.get("dynamic"), list) else []
        optional = meta.get("optional-dependencies")
        optional = optional if isinstance(optional, dict) else {}
        extras = [name for name in TEST_EXTRAS if name in optional]
        if "dependencies" in dynamic or "optional-dependencies" in dynamic:
            needs_build = True
            sources.append("pyproject.toml (dynamic dependencies: built to read them)")
        else:
            requirements += _requirement_list(meta.get("dependencies"))
            for extra in extras:
                requirements += _requirement_list(optional.get(extra))
            sources.append("pyproject.toml [project]" + (f" + extras {', '.join(extras)}" if extras else ""))
    groups = pyproject.get("dependency-groups")
    if isinstance(groups, dict):
        named = [name for name in TEST_EXTRAS if name in groups]
        for name in named:
            requirements += _dependency_group(groups, name)
        if named:
            sources.append(f"dependency groups {', '.join(named)}")
    setup_cfg = stack.read_ini(project / "setup.cfg")
    if meta is None and setup_cfg.has_option("options", "install_requires"):
        requirements += setup_cfg.get("options", "install_requires").split()
        requirements = [r for r in requirements if r]
        if setup_cfg.has_section("options.extras_require"):
            for extra in TEST_EXTRAS:
                if setup_cfg.has_option("options.extras_require", extra):
                    requirements += setup_cfg.get("options.extras_require", extra).split()
        sources.append("setup.cfg [options]")
    elif meta is None and (project / "setup.py").is_file():
        needs_build = True
        extras = [name for name in TEST_EXTRAS if f'"{name}"' in stack.read_small(project / "setup.py")]
        sources.append("setup.py (built to read its dependencies)")
    files = [name for name in _REQUIREMENT_FILES if (project / name).is_file()]
    if files:
        sources.append(", ".join(files))
    return PythonDeps(_joined_requirements(requirements), files, extras, needs_build, sources)


def _joined_requirements(items: list[str]) -> list[str]:
    """setup.cfg lists split on whitespace; put "pkg >= 1" style pieces back together."""
    joined: list[str] = []
    for item in items:
        if joined and (item[0] in "<>=!~;,[(" or joined[-1][-1] in "<>=!~;,"):
            joined[-1] += item
        else:
            joined.append(item)
    return joined


def _names_pytest(deps: PythonDeps, project: Path) -> bool:
    texts = [*deps.requirements, *(stack.read_small(project / f) for f in deps.requirement_files)]
    return any(stack.PYTEST_WORD.search(text) for text in texts)


def plan_env(
    settings: Settings,
    repo_key: str,
    worktree: Path,
    command: str,
    setup_command: str | None,
    tool_path: str | None = None,
) -> EnvPlan | None:
    """The environment the command needs in this worktree, or None when it needs none."""
    project = worktree / stack.command_directory(command) if stack.command_directory(command) else worktree
    runner = stack.runner_of(command) or ""
    python = base_python()
    files = dependency_files(project)
    if setup_command:
        digest = env_hash(project, files, "setup", setup_command, runner, python)
        path = envs_dir(settings) / f"{repo_key}-{digest}"
        setup_steps = [
            Step("create a venv", [python, "-m", "venv", str(path)], worktree),
            Step(f"setup_command: {setup_command}", ["/bin/sh", "-c", setup_command], path / "src"),
        ]
        description = f"setup_command `{setup_command}` in a venv"
        return EnvPlan(path.name, path, description, setup_steps, copy_from=project)
    programs = command_programs(command)
    if programs and programs[0].startswith("/"):
        return None  # the command names its own interpreter or runner: that is its environment
    if not stack.is_python(project) and runner not in ("pytest", "unittest", "tox", "nox", "hatch"):
        return None
    deps = python_dependencies(project)
    uv = shutil.which("uv", path=tool_path) if (project / "uv.lock").is_file() else None
    digest = env_hash(project, files, "python", runner, python, "uv" if uv else "pip")
    path = envs_dir(settings) / f"{repo_key}-{digest}"
    env_python = str(path / "bin" / "python")
    extra_tools = {"pytest": "pytest", "tox": "tox", "nox": "nox", "hatch": "hatch"}
    wanted_tool = extra_tools.get(runner)
    add_tool = wanted_tool is not None and not (wanted_tool == "pytest" and _names_pytest(deps, project))
    sources = list(deps.sources)
    steps: list[Step] = []
    if uv:
        steps.append(
            Step(
                "uv sync (uv.lock)",
                [uv, "sync", "--frozen", "--no-install-project", "--python", python],
                project,
            )
        )
        sources = ["uv.lock (uv sync)"]
        if add_tool and wanted_tool:
            steps.append(
                Step(
                    f"add {wanted_tool}", [uv, "pip", "install", "--python", env_python, wanted_tool], project
                )
            )
    else:
        needs_pip = not deps.empty or add_tool
        venv = [python, "-m", "venv", *([] if needs_pip else ["--without-pip"]), str(path)]
        steps.append(Step("create a venv", venv, worktree))
        pip = [env_python, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "-q"]
        args = [*deps.requirements, *(a for f in deps.requirement_files for a in ("-r", f))]
        if add_tool and wanted_tool:
            args.append(wanted_tool)
        if args:
            steps.append(Step("install the declared dependencies", [*pip, *args], project))
        if deps.needs_build:
            report = str(path / "install-report.json")
            target = "./src" + (f"[{','.join(deps.extras)}]" if deps.extras else "")
            steps.append(
                Step(
                    "build the project to install its dependencies", [*pip, "--report", report, target], path
                )
            )
            steps.append(
                Step("remove the project itself", [env_python, "-c", _UNINSTALL_PROJECT, report], path)
            )
    if add_tool and wanted_tool:
        sources.append(f"+ {wanted_tool} (the suite runs on it)")
    tool_step = _tool_setup_step(runner, path, project)
    if tool_step is not None:
        steps.append(tool_step)
    description = "python venv of " + ("; ".join(sources) if sources else "the standard library only")
    copy_from = project if deps.needs_build and not uv else None
    return EnvPlan(path.name, path, description, steps, copy_from=copy_from)


def _tool_setup_step(runner: str, env: Path, project: Path) -> Step | None:
    """tox, nox and hatch make their own environments: with network now, so the tests run offline."""
    bin_dir = env / "bin"
    if runner == "tox":
        return Step("tox: create its env", [str(bin_dir / "tox"), "-e", "py", "--notest"], project)
    if runner == "nox":
        return Step("nox: install its session", [str(bin_dir / "nox"), "--install-only"], project)
    if runner == "hatch":
        return Step("hatch: create its env", [str(bin_dir / "hatch"), "env", "create"], project)
    return None


# ---------------------------------------------------------------------------------- environments


def tool_env(settings: Settings, repo_key: str, env: Path | None) -> dict[str, str]:
    """Where runners keep their state, the same for setup and tests: out of the worktree."""
    cache = cache_dir(settings, repo_key)
    values = {
        "CARGO_TARGET_DIR": str(cache / "cargo-target"),
        "CARGO_HOME": str(cache / "cargo-home"),
        "GOCACHE": str(cache / "go-build"),
        "GOMODCACHE": str(cache / "go-mod"),
        "GOFLAGS": "-modcacherw",
        # tox and hatch write their environments' state on every run: the repository's cache, not the
        # worktree (the agent's commits) nor the read-only project environment.
        "TOX_WORK_DIR": str(cache / "tox"),
        "HATCH_DATA_DIR": str(cache / "hatch"),
    }
    if env is not None:
        values |= {
            "VIRTUAL_ENV": str(env),
            "UV_PROJECT_ENVIRONMENT": str(env),
        }
    return values


def path_with(env: Path | None, base_path: str) -> str:
    entries = [str(env / "bin")] if env is not None else []
    return os.pathsep.join([*entries, base_path])


def setup_environment(base: dict[str, str], settings: Settings, repo_key: str, env: Path) -> dict[str, str]:
    values = dict(base)
    for key, value in os.environ.items():
        if key.startswith(SETUP_ENV_PREFIXES) or key in SETUP_ENV_NAMES:
            values.setdefault(key, value)
    shared = envs_dir(settings) / ".cache"
    values |= tool_env(settings, repo_key, env)
    values |= {
        "PATH": path_with(env, base.get("PATH", os.defpath)),
        "PIP_CACHE_DIR": str(shared / "pip"),
        "UV_CACHE_DIR": str(shared / "uv"),
        "npm_config_cache": str(shared / "npm"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    return values


def toolchain_mounts(program: str, tool_path: str) -> list[Path]:
    """What the sandbox must show for a runner found on the worker's PATH inside a directory it hides
    (the home, where rustup, nvm and pyenv install): the runner's installation, read-only."""
    if "/" in program:
        return []  # a path, not a program looked up on PATH (absolute ones: readable_paths)
    found = shutil.which(program, path=tool_path)
    if found is None:
        return []
    binary = Path(found)
    home = Path.home()
    if not binary.is_relative_to(home) and not binary.resolve().is_relative_to(home):
        return []
    mounts = []
    for candidate in {binary, binary.resolve()}:
        prefix = candidate.parent.parent if candidate.parent.name == "bin" else candidate.parent
        if prefix != home and prefix.is_relative_to(home):
            mounts.append(prefix)
    if program in _RUSTUP_TOOLS and (home / ".rustup").is_dir():
        mounts.append(home / ".rustup")
    return sorted(set(mounts))


def command_programs(command: str) -> list[str]:
    """The programs a shell command starts, as far as a plain reading shows (for toolchain mounts)."""
    try:
        words = shlex.split(command, posix=True)
    except ValueError:
        return []
    programs = []
    expect = True
    for word in words:
        if word in ("&&", "||", ";", "|"):
            expect = True
            continue
        if expect and "=" in word and not word.startswith("="):
            continue
        if expect:
            if word not in ("cd", "exec", "env", "time"):
                programs.append(word)
            expect = word in ("exec", "env", "time")
    return programs


def named_paths(command: str) -> list[Path]:
    """Absolute paths a command names (a configured `/opt/venv/bin/python -m pytest`, say)."""
    try:
        words = shlex.split(command, posix=True)
    except ValueError:
        return []
    paths = []
    for word in words:
        value = word.split("=", 1)[1] if "=" in word and not word.startswith("/") else word
        if value.startswith("/") and len(value) > 1:
            paths.append(Path(value))
    return paths


def command_path_problem(command: str, settings: Settings) -> str | None:
    """Why the sandbox cannot run a command that names absolute paths, or None when it can.

    Paths that exist are shown to the tests read-only (readable_paths); paths that do not exist on this
    worker, and anything inside ticketflow's state directory (other tickets' worktrees, the mirrors),
    are refused with this reason, at submit and before a test run."""
    state = settings.state_dir.resolve()
    for path in named_paths(command):
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError):
            return f"{path} in the test command cannot be resolved on this worker"
        if resolved == state or resolved.is_relative_to(state):
            return (
                f"{path} in the test command is inside ticketflow's state directory, which the test "
                "sandbox hides (it holds other tickets' worktrees); use setup_command for the environment"
            )
        if not path.exists():
            return f"{path} in the test command does not exist on this worker ({settings.host_id})"
    return None


def readable_paths(command: str) -> list[Path]:
    """What a command's absolute paths need to be visible: a venv's root and its base interpreter."""
    found: list[Path] = []
    for path in named_paths(command):
        if not path.exists():
            continue
        found.append(path)
        for parent in path.parents:
            cfg = parent / "pyvenv.cfg"
            if cfg.is_file():
                found.append(parent)
                found += _venv_base(cfg)
                break
    return outermost(found)


def outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths not inside another one of them (a bind of a directory already shows its contents)."""
    unique = sorted(set(paths), key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in unique:
        if not any(path.is_relative_to(other) for other in kept):
            kept.append(path)
    return sorted(kept)


def _venv_base(cfg: Path) -> list[Path]:
    for line in stack.read_small(cfg).splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            home = Path(value.strip())
            prefix = home.parent if home.name == "bin" else home
            return [prefix, prefix.resolve()]
    return []


# ---------------------------------------------------------------------------------------- building


async def ensure_env(
    settings: Settings,
    repo_key: str,
    worktree: Path,
    command: str,
    setup_command: str | None,
    base_env: dict[str, str],
    on_line: Callable[[str], None] | None = None,
) -> ProjectEnv:
    """The ready environment for this command in this worktree: reused, or built now under a lock."""
    tool_path = base_env.get("PATH", os.defpath)
    plan = await asyncio.to_thread(plan_env, settings, repo_key, worktree, command, setup_command, tool_path)
    if plan is None:
        return ProjectEnv(None)
    marker = plan.path / MARKER
    if await asyncio.to_thread(marker.is_file):
        await asyncio.to_thread(os.utime, marker)  # last use, for whoever prunes old environments
        return ProjectEnv(plan.path, plan.name, plan.description)
    lock = envs_dir(settings) / f"{plan.name}.lock"
    async with file_lock(lock):
        if await asyncio.to_thread(marker.is_file):  # another worker built it while this one waited
            return ProjectEnv(plan.path, plan.name, plan.description)
        await _build(settings, repo_key, worktree, plan, base_env, on_line)
    removed = await asyncio.to_thread(prune_stale, settings, repo_key, plan.name)
    if removed:
        log.info("removed %d unused environment(s) of %s: %s", len(removed), repo_key, ", ".join(removed))
    return ProjectEnv(plan.path, plan.name, plan.description, built=True)


def prune_stale(
    settings: Settings, repo_key: str, keep: str, max_age: float = STALE_ENV_SECONDS
) -> list[str]:
    """Remove the repository's other environments unused for max_age (every use touches the marker);
    one that is being built (its lock is held) is left alone. Returns the names removed."""
    removed = []
    now = time.time()
    for marker in sorted(envs_dir(settings).glob(f"{repo_key}-*/{MARKER}")):
        env = marker.parent
        if env.name == keep or not re.fullmatch(rf"{re.escape(repo_key)}-[0-9a-f]{{16}}", env.name):
            continue
        with contextlib.suppress(OSError):
            if now - marker.stat().st_mtime < max_age:
                continue
            fd = os.open(envs_dir(settings) / f"{env.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            try:
                marker.unlink()  # first: a half-removed environment must never look ready
                shutil.rmtree(env, ignore_errors=True)
                (envs_dir(settings) / f"{env.name}.log").unlink(missing_ok=True)
                removed.append(env.name)
            finally:
                os.close(fd)
    return removed


async def _build(
    settings: Settings,
    repo_key: str,
    worktree: Path,
    plan: EnvPlan,
    base_env: dict[str, str],
    on_line: Callable[[str], None] | None,
) -> None:
    await asyncio.to_thread(shutil.rmtree, plan.path, True)  # a half-built one from a killed attempt
    await asyncio.to_thread(plan.path.mkdir, parents=True)
    # Builds get a scratch TMPDIR of their own: the sandbox's /tmp is small, wheels can be big.
    scratch = envs_dir(settings) / ".tmp" / plan.name
    writable = (cache_dir(settings, repo_key), envs_dir(settings) / ".cache", scratch)
    for directory in writable:
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    if plan.copy_from is not None:
        await asyncio.to_thread(
            shutil.copytree, plan.copy_from, plan.path / "src", symlinks=True, ignore=_COPY_IGNORE
        )
    env = setup_environment(base_env, settings, repo_key, plan.path) | {"TMPDIR": str(scratch)}
    log_path = envs_dir(settings) / f"{plan.name}.log"
    started = time.monotonic()
    try:
        with log_path.open("w", encoding="utf-8") as log:
            for step in plan.steps:
                log.write(f"$ {shlex.join(step.argv)}   (in {step.cwd})\n")
                log.flush()
                remaining = SETUP_TIMEOUT - (time.monotonic() - started)
                result = await _run_step(
                    settings, worktree, plan, step, env, writable, remaining, log, on_line
                )
                if not result.ok:
                    output = "\n".join(result.tail[-STEP_TAIL_LINES:])
                    how = "timed out" if result.timed_out else f"exited {result.exit_code}"
                    raise EnvError(
                        f"preparing the test environment failed: {step.describe} {how}",
                        setup_hint(step, log_path, result.exit_code, settings.checks_sandbox != "off"),
                        output,
                    )
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)
    info = {
        "name": plan.name,
        "description": plan.description,
        "steps": [s.describe for s in plan.steps],
        "built_seconds": round(time.monotonic() - started, 3),
    }
    (plan.path / MARKER).write_text(json.dumps(info, indent=1) + "\n")


async def _run_step(
    settings: Settings,
    worktree: Path,
    plan: EnvPlan,
    step: Step,
    env: dict[str, str],
    writable: tuple[Path, ...],
    timeout: float,
    log: Any,
    on_line: Callable[[str], None] | None,
) -> ProcessResult:
    def line(text: str) -> None:
        log.write(text + "\n")
        if on_line is not None:
            on_line(text)

    base = sandbox.checks_plan(settings, worktree)
    mounts = [m for program in step.argv[:1] for m in toolchain_mounts(program, env["PATH"])]
    # Setup is the one time the project's tools reach the network (package indexes).
    setup_plan = dataclasses.replace(
        base,
        network=True,
        writable=(*base.writable, plan.path, *writable),
        readable=(*base.readable, *mounts),
    )
    argv = sandbox.wrap(step.argv, setup_plan)
    return await run_process(
        argv, cwd=step.cwd, env=env, timeout=max(timeout, 1.0), on_line=line, tail_lines=400
    )


def setup_hint(step: Step, log_path: Path, exit_code: int | None, sandboxed: bool) -> str:
    where = f"the full log is {log_path} on the worker"
    offline = sandbox.network_problem() if sandboxed and sandbox.bwrap_problem() is None else None
    if offline is not None:
        where += f"; note that the sandbox gives setup no network on this host ({offline})"
    if exit_code in (126, 127):
        return f"`{step.argv[0]}` could not be started inside the sandbox: install it on the worker; {where}"
    if step.describe.startswith("setup_command"):
        return f"fix setup_command of the repository (it ran in a copy of the project); {where}"
    return (
        "the project's declared dependencies did not install: fix them in the repository, or configure a "
        f"setup_command for it (e.g. `pip install -e .[test]`, `uv sync`); {where}"
    )


def test_mounts(env: ProjectEnv, command: str, tool_path: str) -> list[Path]:
    """What the sandbox of a test run must show beyond the worktree, read-only: the environment, the
    runner's toolchain when it is installed under the hidden home, the paths the command names."""
    readable: list[Path] = [env.path] if env.path is not None else []
    for program in command_programs(command):
        readable += toolchain_mounts(program, tool_path)
    readable += readable_paths(command)
    return outermost(readable)


def test_environment(
    base: dict[str, str], settings: Settings, repo_key: str, env: ProjectEnv, project: Path
) -> dict[str, str]:
    """The test run's variables: the environment first on PATH, the worktree's code importable."""
    values = dict(base)
    values |= tool_env(settings, repo_key, env.path)
    values["PATH"] = path_with(env.path, base.get("PATH", os.defpath))
    if env.path is not None:
        imports = [str(project)]
        src = project / "src"
        if src.is_dir() and any(p.suffix == ".py" or (p / "__init__.py").is_file() for p in src.iterdir()):
            imports.insert(0, str(src))
        values["PYTHONPATH"] = os.pathsep.join(imports)
        node_modules = env.path / "src" / "node_modules"
        if node_modules.is_dir():
            values["NODE_PATH"] = str(node_modules)
            values["PATH"] = os.pathsep.join([str(node_modules / ".bin"), values["PATH"]])
    return values
