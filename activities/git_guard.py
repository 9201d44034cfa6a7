"""Host-side git an agent cannot steer, and the check that an agent left git's metadata alone.

An agent edits files in its worktree, and with sandbox = "off" anything else it can reach. Git reads
configuration, hooks and a `.git` file from places an agent can write; ticketflow then runs git on the
host (commits, status, fetch, push) outside any sandbox. This module decides what every git process of
ticketflow's may read:

- Where. Every call pins GIT_DIR (and GIT_COMMON_DIR, and GIT_WORK_TREE for a worktree) to directories
  ticketflow created. A worktree's git directory is found from the mirror ticketflow owns: the entry
  <mirror>/worktrees/<name> whose `gitdir` file points back at <worktree>/.git. The worktree's own `.git`
  file (the agent can rewrite it) is never followed, nor the entry's `commondir` file. Paths in
  ticketflow's layout (<state>/mirrors/*, <state>/worktrees/*, <state>/worktree-pool/<mirror>/*) are
  "managed"; any other repository (a local git host's bare remote, a test's clone) is pinned to what is
  at that path. Commands that need no repository (clone, ls-remote by URL) run in an empty directory
  with GIT_CEILING_DIRECTORIES, so no repository is discovered around the worker's working directory.
- What configuration. Local operations read no system or global config (GIT_CONFIG_NOSYSTEM,
  GIT_CONFIG_GLOBAL=/dev/null). A managed mirror's config must hold only keys ticketflow writes
  (MIRROR_CONFIG_KEYS, checked on every call, re-read when the file changes): no filter, diff, merge or
  credential drivers, no core.sshCommand, includes or worktree config. Network operations (clone, fetch,
  ls-remote, push) keep the operator's system and global config, where ssh keys, credential helpers,
  proxies and CA bundles live; git host tokens are added by the host layer (githosts push_env).
- What git may run. PINNED_OPTIONS turn off core.fsmonitor, point core.hooksPath at an empty directory
  ticketflow owns (no repository's hooks/ is ever used), keep git from descending into nested
  repositories (diff.ignoreSubmodules=dirty: an embedded repository's own config would run its filters),
  and switch off automatic gc, signing, the ext:: transport and replace refs.

The tamper check (GitGuard) fingerprints a worktree's git metadata before an agent runs and compares it
afterwards (and before each checkpoint commit): the `.git` file, the worktree's git directory (HEAD,
commondir, gitdir, config.worktree, hooks/, info/), the mirror's config, hooks/, info/ and alternates,
and every ref except ticket branches and refs/remotes/origin/* (other tickets and fetches move those
while this agent runs). A change raises GitTampered naming it, before any host git touches it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.exceptions import ApplicationError

# ticketflow's on-disk layout under its state directory (Settings.mirrors_dir, worktrees_dir,
# worktree_pool_dir; tests/activities/test_git_containment.py keeps them in step).
MIRRORS = "mirrors"
WORKTREES = "worktrees"
POOL = "worktree-pool"

# Subcommands that talk to another repository; they keep the operator's system and global config.
NETWORK_COMMANDS = frozenset({"clone", "fetch", "ls-remote", "push"})

# The keys a mirror's config may hold: what `git clone --bare` writes, ticketflow's refspec and identity,
# and branch tracking (harmless). (section, subsection or None for "no subsection", "*" for any) -> keys.
MIRROR_CONFIG_KEYS: dict[tuple[str, str | None], frozenset[str]] = {
    ("core", None): frozenset(
        {
            "repositoryformatversion",
            "filemode",
            "bare",
            "symlinks",
            "ignorecase",
            "precomposeunicode",
            "logallrefupdates",
        }
    ),
    ("remote", "origin"): frozenset({"url", "fetch"}),
    ("user", None): frozenset({"name", "email"}),
    ("extensions", None): frozenset({"objectformat"}),
    ("branch", "*"): frozenset({"remote", "merge"}),
}

# Refs other tickets and fetches legitimately move while an agent runs; everything else is watched.
_MOVING_REFS = ("refs/heads/ticketflow/", "refs/remotes/origin/")
# A worktree git directory's files that decide what git does (the index and logs only record).
_WORKTREE_GIT_FILES = ("HEAD", "commondir", "gitdir", "config.worktree", "hooks", "info")
_MIRROR_FILES = ("config", "commondir", "hooks", "info", "objects/info/alternates", "objects/info/grafts")


class GitTampered(ApplicationError):
    """Git metadata ticketflow relies on was changed by someone else; no host git runs on it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type="GitTampered", non_retryable=True)


class GitLocateError(Exception):
    """The path is not a repository ticketflow can run git in; gitops turns it into a GitError."""


# ------------------------------------------------------------------------------- the empty directory

_empty: Path | None = None


def _is_empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(os.scandir(path))
    except OSError:
        return False


def empty_dir() -> Path:
    """An empty directory of this process: core.hooksPath, and the cwd of commands without a repository.

    Checked on every use; should anything appear in it, a new one replaces it.
    """
    global _empty
    if _empty is None or not _is_empty_dir(_empty):
        _empty = Path(tempfile.mkdtemp(prefix="ticketflow-git-empty-")).resolve()
        _empty.chmod(0o555)
        atexit.register(shutil.rmtree, _empty, True)
    return _empty


def pinned_options() -> list[str]:
    """`-c` options on every git call: nothing from a repository may run code or reach elsewhere."""
    settings = {
        "core.fsmonitor": "false",
        "core.hooksPath": str(empty_dir()),
        "diff.ignoreSubmodules": "dirty",  # never run `git status` inside an embedded repository
        "submodule.recurse": "false",
        "fetch.recurseSubmodules": "false",
        "push.recurseSubmodules": "no",
        "gc.auto": "0",  # no background gc/maintenance outliving the call
        "maintenance.auto": "false",
        "commit.gpgSign": "false",
        "tag.gpgSign": "false",
        "log.showSignature": "false",
        "protocol.ext.allow": "never",
        # Local paths and file:// URLs are repositories ticketflow serves (host "local"); submodules,
        # the reason git restricts file://, are never followed.
        "protocol.file.allow": "always",
    }
    return [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]


# ------------------------------------------------------------------------------------ locating


@dataclass(frozen=True)
class Location:
    """What a git call is pinned to. git_dir None: a command that needs no repository."""

    git_dir: Path | None
    work_tree: Path | None = None
    common_dir: Path | None = None
    mirror: Path | None = None  # set when the repository is a ticketflow mirror or one of its worktrees


_worktree_cache: dict[Path, Path] = {}  # worktree -> its entry in a mirror, verified on every use


def _is_bare(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def _points_at(entry: Path, dot_git: Path) -> bool:
    """Whether a mirror's worktree entry names dot_git as its worktree (no symlink is followed)."""
    try:
        text = (entry / "gitdir").read_text().strip()
    except OSError:
        return False
    return bool(text) and Path(os.path.abspath(text)) == dot_git


def _mirrors_for(worktree: Path) -> list[Path] | None:
    """The mirrors that may own a worktree in ticketflow's layout; None when the path is outside it."""
    parent = worktree.parent
    if parent.name == WORKTREES and (parent.parent / MIRRORS).is_dir():
        return sorted(p for p in (parent.parent / MIRRORS).iterdir() if p.is_dir() and _is_mirror(p))
    if parent.parent.name == POOL and (parent.parent.parent / MIRRORS).is_dir():
        mirror = parent.parent.parent / MIRRORS / parent.name
        return [mirror] if _is_mirror(mirror) else []
    return None


def _find_entry(worktree: Path, mirrors: list[Path]) -> Path:
    dot_git = worktree / ".git"
    cached = _worktree_cache.get(worktree)
    if cached is not None and cached.parent.parent in mirrors and _points_at(cached, dot_git):
        return cached
    found = [
        entry
        for mirror in mirrors
        if (mirror / "worktrees").is_dir()
        for entry in sorted((mirror / "worktrees").iterdir())
        if _points_at(entry, dot_git)
    ]
    if len(found) != 1:
        _worktree_cache.pop(worktree, None)
        why = "no" if not found else f"{len(found)} ({', '.join(map(str, found))})"
        raise GitLocateError(f"{worktree}: {why} worktree entries of ticketflow's mirrors point at it")
    _worktree_cache[worktree] = found[0]
    return found[0]


def _gitfile_target(worktree: Path) -> Path | None:
    """The directory a worktree's `.git` file names, or None when it is no such file."""
    dot_git = worktree / ".git"
    try:
        if dot_git.is_symlink() or not dot_git.is_file():
            return None
        text = dot_git.read_text(errors="replace").strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    return Path(os.path.abspath(worktree / text.removeprefix("gitdir:").strip()))


def _unmanaged(path: Path) -> Location:
    dot_git = path / ".git"
    if dot_git.is_dir() and not dot_git.is_symlink():
        return Location(git_dir=dot_git, work_tree=path, common_dir=dot_git)
    if dot_git.exists():
        # A linked worktree of someone else's repository: follow its .git file, but only to an entry
        # that points back at it, and pin the common directory that entry names.
        entry = _gitfile_target(path)
        if entry is None:
            raise GitLocateError(f"{dot_git} is not a gitdir file")
        if not _points_at(entry, dot_git):
            raise GitLocateError(f"{dot_git} names {entry}, which does not point back at it")
        return Location(git_dir=entry, work_tree=path, common_dir=_commondir_target(entry) or entry)
    if _is_bare(path):
        return Location(git_dir=path, common_dir=path)
    raise GitLocateError(f"{path} is not a git repository")


def _is_mirror(path: Path) -> bool:
    """A bare repository in <state>/mirrors next to the lock file WorkspaceActivities takes for it (a
    clone in progress, <name>.partial, shares its mirror's lock)."""
    lock = path.parent / f"{path.name.removesuffix('.partial')}.lock"
    return path.parent.name == MIRRORS and lock.is_file() and _is_bare(path)


def locate(cwd: Path | None) -> Location:
    """Where git must run for cwd (None: no repository), never from a file an agent could rewrite."""
    if cwd is None:
        return Location(git_dir=None)
    path = cwd.resolve()
    if _is_mirror(path):
        return Location(git_dir=path, common_dir=path, mirror=path)
    mirrors = _mirrors_for(path)
    if mirrors is None:
        return _unmanaged(path)
    entry = _find_entry(path, mirrors)
    if _gitfile_target(path) != entry:
        # Only compared, never followed: a missing or rewritten .git means the worktree is broken or
        # tampered with, and no git runs on it.
        raise GitLocateError(f"{path / '.git'} does not point at {entry}")
    mirror = entry.parent.parent
    if _commondir_target(entry) != mirror:
        # git's ref store reads this file even when GIT_COMMON_DIR is set (git 2.39): a redirected one
        # would put the ticket's commits in someone else's refs.
        raise GitLocateError(f"{entry / 'commondir'} does not point at the mirror {mirror}")
    return Location(git_dir=entry, work_tree=path, common_dir=mirror, mirror=mirror)


def _commondir_target(entry: Path) -> Path | None:
    try:
        text = (entry / "commondir").read_text(errors="replace").strip()
    except OSError:
        return None
    return Path(os.path.abspath(entry / text)) if text else None


def subcommand(args: tuple[str, ...] | list[str]) -> str:
    """The git subcommand in args, past leading options (`-c key=value` takes the next argument)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-c", "-C", "--git-dir", "--work-tree", "--namespace"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return ""


def pinned_env(location: Location, network: bool) -> dict[str, str]:
    """The GIT_* variables of a call (added after the caller's own, so they always win)."""
    env = {"GIT_NO_REPLACE_OBJECTS": "1", "GIT_ATTR_NOSYSTEM": "1", "GIT_PROTOCOL_FROM_USER": "0"}
    if not network:
        env |= {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    if location.git_dir is None:
        env["GIT_CEILING_DIRECTORIES"] = str(empty_dir().parent)
        return env
    env["GIT_DIR"] = str(location.git_dir)
    if location.common_dir is not None:
        env["GIT_COMMON_DIR"] = str(location.common_dir)
    if location.work_tree is not None:
        env["GIT_WORK_TREE"] = str(location.work_tree)
    return env


def cwd_for(location: Location) -> Path:
    if location.git_dir is None:
        return empty_dir()
    return location.work_tree or location.git_dir


# ------------------------------------------------------------------------------ mirror config


@dataclass
class _ConfigVerdict:
    stamp: tuple[int, int, int, int]
    unexpected: list[str]


_config_cache: dict[Path, _ConfigVerdict] = {}


def _stamp(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def unexpected_keys(listing: str) -> list[str]:
    """Keys of `git config --list --null` output that MIRROR_CONFIG_KEYS does not allow."""
    bad = []
    for item in listing.split("\0"):
        key = item.split("\n", 1)[0]
        if not key:
            continue
        section, _, rest = key.partition(".")
        subsection, _, name = rest.rpartition(".")
        allowed = MIRROR_CONFIG_KEYS.get((section.lower(), subsection or None))
        if allowed is None and subsection:
            allowed = MIRROR_CONFIG_KEYS.get((section.lower(), "*"))
        if allowed is None or name.lower() not in allowed:
            bad.append(key)
    return sorted(set(bad))


async def _list_config(config: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= pinned_env(Location(git_dir=None), network=False) | {"LC_ALL": "C"}
    proc = await asyncio.create_subprocess_exec(
        "git",
        "config",
        "--file",
        str(config),
        "--no-includes",
        "--null",
        "--list",
        cwd=str(empty_dir()),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        reason = err.decode(errors="replace").strip().splitlines()
        raise GitTampered(
            f"{config} cannot be read as git config: {reason[-1] if reason else proc.returncode}"
        )
    return out.decode(errors="replace")


async def verify_mirror_config(mirror: Path) -> None:
    """Raise GitTampered when the mirror's config holds a key ticketflow never writes."""
    config = mirror / "config"
    try:
        stamp = _stamp(config)
    except OSError as exc:
        raise GitTampered(f"{config} is missing: {exc.strerror}") from None
    verdict = _config_cache.get(config)
    if verdict is None or verdict.stamp != stamp:
        verdict = _ConfigVerdict(stamp, unexpected_keys(await _list_config(config)))
        _config_cache[config] = verdict
    if verdict.unexpected:
        raise GitTampered(
            f"the config of mirror {mirror} has settings ticketflow did not write: "
            f"{', '.join(verdict.unexpected)}; no git runs on it (remove the mirror to rebuild it)"
        )


# ------------------------------------------------------------------------------ the tamper check


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _describe(path: Path) -> Iterator[tuple[str, str]]:
    """(relative name, what it is) for path and, for a directory, everything under it."""
    if path.is_symlink():
        yield "", f"symlink to {os.readlink(path)}"
    elif path.is_file():
        yield "", f"file {_digest(path.read_bytes())}"
    elif path.is_dir():
        yield "", "directory"
        for root, dirs, files in os.walk(path):
            for name in sorted(dirs + files):
                entry = Path(root) / name
                rel = str(entry.relative_to(path))
                if entry.is_symlink():
                    yield rel, f"symlink to {os.readlink(entry)}"
                elif entry.is_file():
                    yield rel, f"file {_digest(entry.read_bytes())} mode {entry.stat().st_mode & 0o777:o}"
                elif entry.is_dir():
                    yield rel, "directory"
    elif path.exists():
        yield "", "special file"


def _files(base: Path, names: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in names:
        for rel, what in _describe(base / name):
            found[str(base / name / rel) if rel else str(base / name)] = what
    return found


def ref_values(common_dir: Path) -> dict[str, str]:
    """Every ref of a repository as git resolves it: packed-refs, overridden by loose refs."""
    refs: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in (common_dir / "packed-refs").read_text(errors="replace").splitlines():
            if line and line[0] not in "#^" and " " in line:
                value, name = line.split(" ", 1)
                refs[name] = value
    root = common_dir / "refs"
    for current, _, files in os.walk(root):
        for name in files:
            if name.endswith(".lock"):
                continue
            with contextlib.suppress(OSError):
                ref = Path(current) / name
                refs[str(ref.relative_to(common_dir))] = ref.read_text(errors="replace").strip()
    return refs


def _watched_refs(common_dir: Path, branch: str) -> dict[str, str]:
    own = f"refs/heads/{branch}"
    return {
        f"ref {name}": value
        for name, value in ref_values(common_dir).items()
        if name != own and not name.startswith(_MOVING_REFS)
    }


@dataclass
class GitGuard:
    """A worktree's git metadata as it was before an agent ran; verify() says what changed since."""

    worktree: Path
    branch: str
    location: Location
    baseline: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> dict[str, str]:
        loc = self.location
        assert loc.git_dir is not None and loc.common_dir is not None
        found = _files(self.worktree, (".git",))
        found |= _files(loc.git_dir, _WORKTREE_GIT_FILES)
        found |= _files(loc.common_dir, _MIRROR_FILES)
        found |= _watched_refs(loc.common_dir, self.branch)
        return found

    def changes(self) -> list[str]:
        now = self.snapshot()
        changed = []
        for key in sorted(set(self.baseline) | set(now)):
            before, after = self.baseline.get(key), now.get(key)
            if before == after:
                continue
            if before is None:
                changed.append(f"{key} appeared")
            elif after is None:
                changed.append(f"{key} disappeared")
            else:
                changed.append(f"{key} changed")
        return changed

    async def verify(self) -> None:
        """Raise GitTampered naming what changed; the caller then runs no git on this worktree."""
        changed = await asyncio.to_thread(self.changes)
        if changed:
            shown = "; ".join(changed[:8]) + (f"; and {len(changed) - 8} more" if len(changed) > 8 else "")
            raise GitTampered(f"git metadata of {self.worktree} was changed during the agent's run: {shown}")
        if self.location.mirror is not None:
            await verify_mirror_config(self.location.mirror)


async def guard(worktree: Path, branch: str) -> GitGuard:
    """Check the worktree's git metadata is ticketflow's and remember it, before an agent runs."""
    path = worktree.resolve()
    try:
        location = await asyncio.to_thread(locate, path)
    except GitLocateError as exc:
        raise GitTampered(f"cannot find the git directory of {path} in its mirror: {exc}") from None
    if location.git_dir is None or location.work_tree is None:
        raise GitTampered(f"{path} is not a worktree")
    if location.mirror is not None:
        await verify_mirror_config(location.mirror)
    checked = GitGuard(path, branch, location)
    checked.baseline = await asyncio.to_thread(checked.snapshot)
    return checked


def pinned_environment(location: Location, network: bool, extra: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of a git process: the worker's minus GIT_*, the caller's, then the pins."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "LC_ALL": "C"}
    env |= dict(extra)
    return env | pinned_env(location, network)
