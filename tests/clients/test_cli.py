"""The CLI on bad input: one-line `error: ...` messages, non-zero exit codes, no tracebacks.

Everything here fails before (or at) connecting to Temporal: the address points at a closed local port.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest

from activities.settings import RepoConfig, Settings
from clients import cli, tickets
from clients.ticket_files import load_ticket_file
from workflows.contracts import Ticket


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """No user configuration, a private state dir and a Temporal address nobody listens on."""
    for name in list(os.environ):
        if name.startswith(("TICKETFLOW_", "TEMPORAL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "no-such-temporal.toml"))
    address = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("TICKETFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TICKETFLOW_CONFIG", os.devnull)  # an empty configuration
    monkeypatch.setenv("TICKETFLOW_TEMPORAL_ADDRESS", address)
    monkeypatch.chdir(tmp_path)
    return address


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(err: str, expected_start: str) -> None:
    assert err.startswith(f"error: {expected_start}"), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err


def write_ticket(folder: Path, name: str, front: str, body: str = "Do the thing.") -> Path:
    path = folder / name
    path.write_text(f"---\n{front}\n---\n{body}\n", encoding="utf-8")
    return path


def git(cwd: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    identity = ["-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", *identity, *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# repo\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "branch", "trunk")
    return repo


def local_settings(tmp_path: Path, **changes: object) -> Settings:
    return Settings.model_validate(
        {"state_dir": tmp_path / "state", "repo_check_timeout_seconds": 10, **changes}
    )


def validate(ticket: Ticket, settings: Settings) -> Ticket:
    return asyncio.run(tickets.validate_repo(ticket, settings))


def validation_error(ticket: Ticket, settings: Settings) -> str:
    with pytest.raises(tickets.TicketOperationError) as info:
        validate(ticket, settings)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"ticket {ticket.id}: "), message
    return message


def ticket_for(repo: str, **changes: object) -> Ticket:
    return Ticket.model_validate({"id": "t-1", "title": "Fix it", "body": "Please.", "repo": repo, **changes})


# ---------------------------------------------------------------------------------- settings


def test_an_empty_config_means_defaults(tmp_path: Path, isolated: str) -> None:
    settings = Settings()
    assert settings.temporal_address == isolated
    assert settings.state_dir == tmp_path / "home"
    assert settings.repos == {}


def test_a_missing_explicit_config_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKETFLOW_CONFIG", str(tmp_path / "ticketfow.toml"))
    code, _, err = run(capsys, "list")
    assert code == 2
    assert_user_error(err, f"TICKETFLOW_CONFIG names {tmp_path / 'ticketfow.toml'}, which does not exist")


UNKNOWN_KEYS = [
    ('temporal_adress = "x:1"\n', "temporal_adress: unknown setting; did you mean temporal_address?"),
    (
        '[repos.calc]\nurl = "/srv/calc.git"\nhots = "github"\n',
        "repos.calc.hots: unknown setting; did you mean repos.calc.host?",
    ),
    ('[agents.a]\ncomand = ["x"]\n', "agents.a.comand: unknown setting; did you mean agents.a.command?"),
    (
        '[models.providers.o]\nbase_ur = "http://x"\n',
        "models.providers.o.base_ur: unknown setting; did you mean models.providers.o.base_url?",
    ),
    (
        '[[notify]]\nkind = "ntfy"\nurl = "https://ntfy.sh/t"\nevnts = ["DONE"]\n',
        "notify.0.evnts: unknown setting; did you mean notify.0.events?",
    ),
]


@pytest.mark.parametrize(("text", "expected"), UNKNOWN_KEYS)
def test_unknown_keys_are_errors_naming_the_closest_valid_one(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    expected: str,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    monkeypatch.setenv("TICKETFLOW_CONFIG", str(config))
    code, _, err = run(capsys, "list")
    assert code == 2
    assert_user_error(err, f"invalid configuration: {expected}")


def test_a_mistyped_variable_is_an_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKETFLOW_TEMPORAL_ADRESS", "x:1")
    code, _, err = run(capsys, "list")
    assert code == 2
    assert_user_error(
        err,
        "invalid configuration: TICKETFLOW_TEMPORAL_ADRESS is not a setting; "
        "did you mean TICKETFLOW_TEMPORAL_ADDRESS?",
    )
    monkeypatch.delenv("TICKETFLOW_TEMPORAL_ADRESS")
    monkeypatch.setenv("TICKETFLOW_CHAOS_SEED", "7")  # far from every setting: an agent's or a test's
    assert Settings().temporal_address


def test_invalid_setting_in_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKETFLOW_MAX_CONCURRENT_ACTIVITIES", "0")
    code, out, err = run(capsys, "status", "t-1")
    assert code == 2 and out == ""
    assert_user_error(err, "invalid configuration: max_concurrent_activities: Input should be greater than")


def test_invalid_value_in_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[repos.calc]\nurl = "/srv/calc.git"\ncolour = "red"\n')
    monkeypatch.setenv("TICKETFLOW_CONFIG", str(config))
    code, _, err = run(capsys, "status", "t-1")
    assert code == 2
    assert_user_error(err, "invalid configuration: repos.calc.colour: unknown setting")


def test_config_file_that_is_not_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("repos = [\n")
    monkeypatch.setenv("TICKETFLOW_CONFIG", str(config))
    code, _, err = run(capsys, "status", "t-1")
    assert code == 2
    assert_user_error(err, f"invalid configuration: {config}")


# ------------------------------------------------------------------------------------ submit


def test_malformed_ticket_file_is_rejected_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_ticket(tmp_path, "bad.md", "title: ''\nrepo: calc")
    code, out, err = run(capsys, "submit", str(path))
    assert code == 1 and out == ""
    assert err == f"error: {path}: title: must not be empty\n"


def test_one_bad_file_rejects_the_whole_batch_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_ticket(tmp_path, "good.md", "title: Fine\nrepo: calc")
    bad = write_ticket(tmp_path, "bad.md", "title: Fine\nrepo: calc\npriority: whenever")
    code, out, err = run(capsys, "submit", str(good), str(bad))
    assert code == 1 and out == ""
    assert_user_error(err, f"{bad}: priority: Input should be a valid integer")
    assert "Temporal" not in err  # rejected before any connection attempt


@pytest.mark.parametrize(
    ("front", "body", "reason"),
    [
        ("title: T\nrepo: calc", " ", "body: must not be empty"),
        ("title: '😀'\nrepo: calc", "x", "title: needs at least one ASCII letter or digit"),
        ("id: ../etc\ntitle: T\nrepo: calc", "x", "id: must be 1-63 characters"),
        ("title: T\nrepo: '-x'", "x", "repo: must not start with '-'"),
        (
            "title: T\nrepo: calc\nbase_branch: 'a..b'",
            "x",
            "base_branch: 'a..b' is not a valid git branch name",
        ),
        ("title: T\nrepo: calc\nlabels: [a", "x", "front matter is not valid YAML at line 4"),
        ("- just\n- a list", "x", "front matter must be a mapping of fields"),
        ("title: T\nrepo: calc\nprioirty: high", "x", "prioirty: Extra inputs are not permitted"),
        ("title: T\nrepo: calc", "x" * (64 * 1024 + 1), "body: is 65537 bytes; the limit is 65536"),
    ],
)
def test_submit_rejects_malformed_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], front: str, body: str, reason: str
) -> None:
    path = write_ticket(tmp_path, "t.md", front, body)
    code, out, err = run(capsys, "submit", str(path))
    assert code == 1 and out == ""
    assert_user_error(err, f"{path}: {reason}")


def test_submit_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.md"
    code, _, err = run(capsys, "submit", str(path))
    assert code == 1
    assert_user_error(err, f"{path}: cannot read ticket file")


def test_submit_of_a_binary_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "blob.md"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    code, _, err = run(capsys, "submit", str(path))
    assert code == 1
    assert_user_error(err, f"{path}: cannot read ticket file ('utf-8' codec can't decode")


def test_submit_without_a_ticket(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "submit", "--title", "T")
    assert code == 1
    assert err == "error: give a ticket FILE, or all of --title, --body and --repo (missing: body, repo)\n"


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (
            ["--title", "😀", "--body", "x", "--repo", "calc"],
            "title: needs at least one ASCII letter or digit",
        ),
        (["--title", "T", "--body", " ", "--repo", "calc"], "body: must not be empty"),
        (["--title", "T", "--body", "x", "--repo=-x"], "repo: must not start with '-'"),
        (
            ["--title", "T", "--body", "x", "--repo", "my repo"],
            "repo: must not start with '-' or contain spaces",
        ),
        (["--title", "T", "--body", "x", "--repo", "calc", "--id", "../x"], "id: must be 1-63 characters"),
    ],
)
def test_submit_from_flags_rejects_bad_fields(
    capsys: pytest.CaptureFixture[str], flags: list[str], reason: str
) -> None:
    code, out, err = run(capsys, "submit", *flags)
    assert code == 1 and out == ""
    assert_user_error(err, "")
    assert reason in err, err


def test_valid_ticket_with_temporal_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], isolated: str, git_repo: Path
) -> None:
    path = write_ticket(tmp_path, "ok.md", f"title: Fine\nrepo: {git_repo}")
    code, out, err = run(capsys, "submit", str(path))
    assert code == 1 and out == ""
    assert_user_error(err, f"cannot reach Temporal at {isolated} (")
    assert err.rstrip().endswith("start it with `ticketflow dev`")


def test_unknown_repository_is_rejected_even_when_temporal_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_ticket(tmp_path, "ok.md", f"id: t-1\ntitle: Fine\nrepo: {tmp_path / 'nope'}")
    code, _, err = run(capsys, "submit", str(path))
    assert code == 1
    assert_user_error(err, "ticket t-1: unknown repository")


def test_title_with_a_newline_from_flags_gives_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "submit", "--title", "Fix\nlogin", "--body", "x", "--repo", "calc")
    assert code == 1
    assert_user_error(err, "")
    assert "title: must be one line" in err


def test_title_from_flags_keeps_non_ascii_characters() -> None:
    args = cli.build_parser().parse_args(
        ["submit", "--title", "Add 😀 support", "--body", "x", "--repo", "calc"]
    )
    [ticket] = cli._tickets_from_args(args)
    assert ticket.title == "Add 😀 support"


def test_default_id_from_flags_uses_the_whole_title() -> None:
    args = cli.build_parser().parse_args(
        ["submit", "--title", "Use v1.2 of lib", "--body", "x", "--repo", "calc"]
    )
    [ticket] = cli._tickets_from_args(args)
    assert ticket.id == "use-v1-2-of-lib"


# ------------------------------------------------------------------------------ other commands


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "t-1"],
        ["list"],
        ["cancel", "t-1"],
        ["approve", "t-1"],
        ["retry", "t-1"],
        ["unblock", "t-1", "--guidance", "use the v2 API"],
    ],
)
def test_commands_with_temporal_down(
    capsys: pytest.CaptureFixture[str], isolated: str, argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert_user_error(err, f"cannot reach Temporal at {isolated} (")


@pytest.mark.parametrize("guidance", ["", "x" * 8001])
def test_bad_guidance_is_not_called_a_configuration_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, guidance: str
) -> None:
    async def no_server(settings: Settings) -> object:
        return object()  # UnblockRequest is validated before the client is used

    monkeypatch.setattr(cli, "connect", no_server)
    code, _, err = run(capsys, "unblock", "t-1", "--guidance", guidance)
    assert code == 1
    assert_user_error(err, "")
    assert "guidance" in err and "configuration" not in err


def test_unblock_needs_guidance(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["unblock", "t-1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ticketflow unblock")
    assert "error: the following arguments are required: --guidance" in err
    assert "Traceback" not in err


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_logs_of_an_unknown_ticket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "logs", "t-1")
    assert code == 1
    assert_user_error(err, f"no logs for ticket t-1 under {tmp_path / 'home' / 'logs' / 't-1'}")


# -------------------------------------------------------------------- repository validation


def test_unknown_repository_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    message = validation_error(ticket_for(str(missing)), local_settings(tmp_path))
    assert message == (
        f"ticket t-1: unknown repository '{missing}': not a configured repo name (none configured), "
        "an existing path or a git URL"
    )


def test_unknown_repository_name_lists_the_configured_ones(tmp_path: Path, git_repo: Path) -> None:
    settings = local_settings(
        tmp_path, repos={"calc": RepoConfig(url=str(git_repo)), "web": RepoConfig(url="x")}
    )
    message = validation_error(ticket_for("clac"), settings)
    assert "unknown repository 'clac': not a configured repo name (calc, web)" in message


def test_directory_that_is_not_a_git_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    message = validation_error(ticket_for(str(plain)), local_settings(tmp_path))
    assert message.startswith(f"ticket t-1: repository '{plain}' is unreachable: ")


def test_unreachable_repository_says_why(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    message = validation_error(ticket_for(str(plain)), local_settings(tmp_path))
    assert "does not appear to be a git repository" in message


def test_unreachable_url(tmp_path: Path) -> None:
    message = validation_error(ticket_for(f"file://{tmp_path}/gone.git"), local_settings(tmp_path))
    assert "is unreachable" in message


def test_missing_base_branch_from_a_ticket_file(tmp_path: Path, git_repo: Path) -> None:
    path = write_ticket(tmp_path, "t.md", f"id: t-1\ntitle: Fix it\nrepo: {git_repo}\nbase_branch: nope")
    message = validation_error(load_ticket_file(path), local_settings(tmp_path))
    assert message == f"ticket t-1: repository '{git_repo}' has no branch 'nope'"


def test_base_branch_must_match_a_whole_branch_name(tmp_path: Path, git_repo: Path) -> None:
    message = validation_error(ticket_for(str(git_repo), base_branch="mai"), local_settings(tmp_path))
    assert message.endswith("has no branch 'mai'")


def test_reachable_repository_and_branch(tmp_path: Path, git_repo: Path) -> None:
    ticket = ticket_for(str(git_repo))
    assert validate(ticket, local_settings(tmp_path)) == ticket


def test_configured_repository_supplies_the_base_branch(tmp_path: Path, git_repo: Path) -> None:
    settings = local_settings(tmp_path, repos={"calc": RepoConfig(url=str(git_repo), base_branch="trunk")})
    assert validate(ticket_for("calc"), settings).base_branch == "trunk"
    assert validate(ticket_for("calc", base_branch="main"), settings).base_branch == "main"


def test_configured_base_branch_that_does_not_exist(tmp_path: Path, git_repo: Path) -> None:
    settings = local_settings(tmp_path, repos={"calc": RepoConfig(url=str(git_repo), base_branch="gone")})
    assert (
        validation_error(ticket_for("calc"), settings) == "ticket t-1: repository 'calc' has no branch 'gone'"
    )


@pytest.mark.parametrize("repo", ["~no-such-user-xyz/repo", "r" * 300])
def test_odd_repository_paths_are_user_errors(tmp_path: Path, repo: str) -> None:
    message = validation_error(ticket_for(repo), local_settings(tmp_path))
    assert "unknown repository" in message


def test_a_dependency_cycle_in_one_submit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], isolated: str, git_repo: Path
) -> None:
    first = write_ticket(tmp_path, "a.md", f"id: a\ntitle: A\nrepo: {git_repo}\ndepends_on: [b]")
    second = write_ticket(tmp_path, "b.md", f"id: b\ntitle: B\nrepo: {git_repo}\ndepends_on: [a]")
    code, out, err = run(capsys, "submit", str(first), str(second))
    assert code == 1 and out == ""
    assert_user_error(err, "dependency cycle: a -> b -> a")
