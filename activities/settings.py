"""Configuration: a TOML file plus TICKETFLOW_* environment variables (environment wins).

The file is `$TICKETFLOW_CONFIG`, else `./ticketflow.toml`, else `<state_dir>/config.toml`. Settings are
read by workers and clients, never by workflow code: activity inputs are stored in history and shown in
the UI, so configuration and secrets stay out of them.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from workflows import policy
from workflows.contracts import REPO_CREDENTIALS_MESSAGE, repo_has_credentials


class RepoConfig(BaseModel):
    """A named repository tickets can refer to with `repo: <name>`."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: str
    host: Literal["local", "github", "gitlab", "gitea"] = "local"
    base_branch: str | None = None
    test_command: str | None = None
    # Prepares the project's environment (`uv sync`, `pip install -e .[test]`, `npm ci`): run once per
    # repository and hash of its dependency files, with network, in a venv whose bin comes first on the
    # tests' PATH. Unset: Python projects get a venv of their declared dependencies (docs/testing.md).
    setup_command: str | None = None
    # No test ran (none collected, or no test command): true = the ticket is BLOCKED; false = its PR
    # opens as a draft labelled `untested` that says so.
    require_tests: bool = True
    github_repo: str | None = Field(
        default=None, description="owner/name (GitLab: group/project) on the host"
    )
    api_url: str = "https://api.github.com"
    # Review requested on every PR/MR ticketflow opens: user names (GitLab's are resolved to user ids).
    reviewers: list[str] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        # A URL is logged, shown and stored in Temporal as it is; a token belongs in github_token etc.
        if repo_has_credentials(value.strip()):
            raise ValueError(REPO_CREDENTIALS_MESSAGE)
        return value


SandboxMode = Literal["auto", "required", "off"]
Capability = Literal["git", "llm"]
CAPABILITIES: tuple[Capability, ...] = ("git", "llm")
# Variables holding git host or Temporal credentials: no agent may ever see them, whatever its pass_env says.
FORBIDDEN_AGENT_ENV = re.compile(
    r"^(TICKETFLOW_.*|TEMPORAL_.*|GITHUB_TOKEN|GH_TOKEN|GITLAB_TOKEN|GITEA_TOKEN|.*_GIT_TOKEN)$"
)


class AgentConfig(BaseModel):
    """One configured agent. `command`: argv run in the worktree; `claude`, `codex`, `aider`, `gemini`: that
    CLI (from PATH, or `binary`); `ollama`: the native tool-calling loop (its model chain is the `code`
    stage's). `pass_env` names extra variables it may see (e.g. ANTHROPIC_API_KEY)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["command", "ollama", "claude", "codex", "aider", "gemini"] = "command"
    command: list[str] = Field(default_factory=list)
    pass_env: list[str] = Field(default_factory=list)
    max_turns: int = Field(default=40, ge=1)
    binary: str | None = Field(default=None, description="path of the CLI; default: its name on PATH")
    model: str | None = None
    extra_args: list[str] = Field(default_factory=list, description="appended to the CLI's argv")
    # Sandbox (bubblewrap, activities/agents/sandbox.py), for every kind: auto = every protection this host
    # supports, a loud warning and ticketflow_sandbox_degraded{reason} for each one it cannot give;
    # required = refuse to run without all of them; off = run directly (rlimits only).
    sandbox: SandboxMode = "auto"
    network: bool = Field(
        default=True, description="own network namespace behind pasta: internet yes, host services no"
    )
    loopback_ports: list[int] = Field(
        default_factory=list, description="host 127.0.0.1 ports reachable from the sandbox (network = true)"
    )
    max_processes: int = Field(default=512, ge=0, description="cgroup pids.max of the sandbox; 0 = no limit")
    tmp_size_mb: int = Field(default=512, ge=1, description="size of the sandbox's private /tmp")
    cpu_seconds: int = Field(default=6 * 3600, ge=0, description="RLIMIT_CPU per process; 0 = no limit")
    memory_mb: int = Field(
        default=16 * 1024, ge=0, description="cgroup memory limit of the sandbox (else RLIMIT_DATA); 0 = none"
    )
    file_size_mb: int = Field(default=2048, ge=0, description="RLIMIT_FSIZE per process; 0 = no limit")

    @property
    def sandbox_mode(self) -> SandboxMode:
        return self.sandbox

    @field_validator("loopback_ports")
    @classmethod
    def _ports_in_range(cls, value: list[int]) -> list[int]:
        bad = [port for port in value if not 0 < port < 65536]
        if bad:
            raise ValueError(f"{bad} are not TCP ports")
        return sorted(set(value))

    @field_validator("pass_env")
    @classmethod
    def _no_git_tokens(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if FORBIDDEN_AGENT_ENV.match(name)]
        if bad:
            raise ValueError(f"{bad} may not be passed to an agent: git host tokens never reach agents")
        return value

    @model_validator(mode="after")
    def _command_has_argv(self) -> AgentConfig:
        if self.kind == "command" and not self.command:
            raise ValueError("a `command` agent needs `command = [argv...]`")
        if self.loopback_ports and not self.network:
            raise ValueError("loopback_ports needs network = true (without network there is no host)")
        return self


class ProviderConfig(BaseModel):
    """One model server: Ollama's native API or any OpenAI-compatible one (vLLM, llama.cpp, LM Studio)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["ollama", "openai"] = "ollama"
    # Ollama's own variable is the default, so a provider with no base_url follows OLLAMA_HOST.
    base_url: str = Field(default_factory=lambda: os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434")
    api_key_env: str | None = Field(default=None, description="name of the variable holding the key")
    num_ctx: int = Field(default=16384, ge=512, description="context window sent with every Ollama call")
    keep_alive: str = "30m"
    connect_timeout_seconds: float = Field(default=5, gt=0)
    read_timeout_seconds: float = Field(default=300, gt=0)


class ModelsConfig(BaseModel):
    """Providers plus a model chain per stage; `provider/model` names a provider, a bare name the first."""

    model_config = ConfigDict(extra="forbid")

    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    classify: list[str] = Field(default_factory=list)
    code: list[str] = Field(default_factory=list)
    review: list[str] = Field(default_factory=list)
    backoff_base_seconds: float = Field(default=2, gt=0)
    backoff_cap_seconds: float = Field(default=120, gt=0)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_open_seconds: float = Field(default=30, gt=0)


NotifyEvent = Literal["BLOCKED", "DONE", "FAILED"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("BLOCKED", "DONE", "FAILED")


class NotifyTarget(BaseModel):
    """Where BLOCKED/DONE/FAILED notifications go: a JSON webhook, a Slack-compatible webhook or ntfy.

    The URL is a secret (Slack and ntfy URLs carry their token): it stays in the worker's settings.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["webhook", "slack", "ntfy"]
    url: SecretStr = Field(description="webhook URL, or the ntfy topic URL, e.g. https://ntfy.sh/my-topic")
    events: list[NotifyEvent] = Field(default_factory=lambda: list(NOTIFY_EVENTS))


def default_state_dir() -> Path:
    return Path(os.environ.get("TICKETFLOW_HOME", Path.home() / ".ticketflow"))


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def to_toml(data: Mapping[str, Any], table: str = "") -> str:
    """A config file's TOML (what Settings reads back): strings, numbers, booleans, lists of them and
    nested tables. (JSON strings and arrays of scalars are valid TOML values.)"""
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping) and v is not None}
    lines = [f"[{table}]"] if table and scalars else []
    lines += [f"{_key(k)} = {json.dumps(v)}" for k, v in scalars.items()]
    text = "\n".join(lines) + ("\n\n" if lines else "")
    for key, value in data.items():
        if isinstance(value, Mapping):
            text += to_toml(value, f"{table}.{_key(key)}" if table else _key(key))
    return text


class ConfigFileMissing(ValueError):
    """$TICKETFLOW_CONFIG names a file that does not exist (a typo would otherwise mean defaults)."""


def config_file() -> Path | None:
    explicit = os.environ.get("TICKETFLOW_CONFIG")
    if explicit:
        if not Path(explicit).exists():
            raise ConfigFileMissing(f"TICKETFLOW_CONFIG names {explicit}, which does not exist")
        return Path(explicit)
    for candidate in (Path("ticketflow.toml"), default_state_dir() / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


# TICKETFLOW_ variables that are not settings: the config file and home (read here) and the token git
# credential helpers read (activities/githosts).
NOT_SETTINGS = frozenset({"TICKETFLOW_CONFIG", "TICKETFLOW_HOME", "TICKETFLOW_GIT_TOKEN"})


def closest_key(loc: tuple[str | int, ...]) -> str | None:
    """For an unknown key at `loc` (as pydantic reports it), the closest valid key there, if any."""
    model: Any = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:
            model = _model_of(field.annotation)
            if model is None:
                return None
        # else: a dict key (repos.<name>) or a list index (notify.0): the values' model goes on
    if model is None or not hasattr(model, "model_fields"):
        return None
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return close[0] if close else None


def _model_of(annotation: Any) -> Any:
    """The pydantic model an annotation holds: itself, a dict's values, a list's items."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _pem_source(source: Path | str | bytes | None) -> str | None:
    """A Temporal config data source as a setting's value: a file's path, or the PEM text itself."""
    if source is None:
        return None
    if isinstance(source, Path):
        return str(source)
    return source.decode() if isinstance(source, bytes) else source


def _port(address: str, default: int) -> int:
    """The port of `host:port` (`[v6]:port`), or the default when it has none."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or (host.startswith("[") and not host.endswith("]")):
        return default
    return int(port)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TICKETFLOW_", env_nested_delimiter="__", extra="forbid", hide_input_in_errors=True
    )

    temporal_address: str = "localhost:7233"
    namespace: str = "default"
    # Connection (docs/deploy.md, *Connecting to Temporal*). Temporal's own client configuration fills
    # every one of these that is not set here: a profile (temporal_profile, else $TEMPORAL_PROFILE, else
    # "default") of its TOML file ($TEMPORAL_CONFIG_FILE, else ~/.config/temporalio/temporal.toml) and
    # the TEMPORAL_* variables (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS,
    # TEMPORAL_TLS_SERVER_CA_CERT_PATH, TEMPORAL_TLS_CLIENT_CERT_PATH, TEMPORAL_TLS_CLIENT_KEY_PATH, ...).
    temporal_profile: str | None = None
    temporal_config_file: Path | None = None
    temporal_api_key: SecretStr | None = Field(default=None, description="sent as `authorization: Bearer`")
    temporal_tls: bool | None = Field(
        default=None, description="unset: TLS when an API key, a certificate or a server name is given"
    )
    temporal_tls_server_ca_cert: str | None = Field(default=None, description="a PEM file, or the PEM")
    temporal_tls_client_cert: str | None = Field(default=None, description="a PEM file, or the PEM (mTLS)")
    temporal_tls_client_key: SecretStr | None = Field(default=None, description="a PEM file, or the PEM")
    temporal_tls_server_name: str | None = Field(default=None, description="SNI and certificate name")
    temporal_rpc_metadata: dict[str, str] = Field(default_factory=dict, description="extra gRPC headers")
    # Workers add ticketflow's search attributes when the namespace lacks them. Off where the worker's
    # identity may not (Temporal Cloud: create them once with tcld or the Cloud UI; docs/deploy.md).
    register_search_attributes: bool = True
    task_queue: str = policy.TASK_QUEUE
    state_dir: Path = Field(default_factory=default_state_dir)
    host_id: str = Field(default_factory=socket.gethostname)
    ui_url: str = "http://localhost:8233"
    ui_port: int = 8233

    max_concurrent_activities: int = Field(default=8, ge=1)
    # What this worker process serves: "git" = the workflows, the shared queue and its host queue (the
    # worktree-bound stages); "llm" = the model-bound activities without a worktree (policy.llm_queue),
    # with max_concurrent_llm_activities slots of their own. Both by default; a deployment that splits
    # them runs at least one worker of each (docs/deploy.md).
    capabilities: list[Capability] = Field(default_factory=lambda: list(CAPABILITIES), min_length=1)
    max_concurrent_llm_activities: int = Field(default=8, ge=1)
    max_concurrent_workflow_tasks: int = Field(default=100, ge=1)

    default_agent: str = "command"
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    repos: dict[str, RepoConfig] = Field(default_factory=dict)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    github_token: SecretStr | None = None
    gitlab_token: SecretStr | None = None
    gitea_token: SecretStr | None = None
    # Ticket sources polled by the intake schedule (syntax in docs/intake.md) and the webhook's secret.
    sources: list[str] = Field(default_factory=list)
    intake_interval_minutes: float = Field(default=5.0, gt=0)
    webhook_secret: SecretStr | None = None
    # Addresses or networks of reverse proxies in front of the webhook: behind them, the rate limit counts
    # the client named in X-Forwarded-For (docs/intake.md, *Webhook*).
    webhook_trusted_proxies: list[str] = Field(default_factory=list)
    # Non-blocking review findings (medium/high) of a DONE ticket become follow-up tickets in its source.
    follow_up_tickets: bool = False

    live_output_seconds: float = Field(
        default=15, gt=0, description="how often a running agent's lines reach its ticket"
    )
    agent_stall_seconds: float = Field(default=15 * 60, gt=0, description="no output this long = stalled")
    # Test runs go through the same bubblewrap sandbox as agents, offline unless checks_network is set.
    checks_sandbox: SandboxMode = "auto"
    checks_network: bool = False
    checks_timeout_seconds: float = Field(default=policy.CHECKS_TIMEOUT.total_seconds(), gt=0)
    # A DONE or CANCELLED ticket's worktree goes back to a pool of idle worktrees per repository (up to
    # this many on each worker host; the rest are removed), so the next ticket checks out only what
    # differs instead of every file. keep_worktrees leaves finished worktrees where they are.
    worktree_pool_size: int = Field(default=4, ge=0)
    keep_worktrees: bool = False
    reminder_interval_seconds: float = Field(default=policy.REMINDER_INTERVAL.total_seconds(), gt=0)
    model_down_first_wait_seconds: float = Field(default=policy.MODEL_DOWN_FIRST_WAIT.total_seconds(), gt=0)
    model_down_max_wait_seconds: float = Field(default=policy.MODEL_DOWN_MAX_WAIT.total_seconds(), gt=0)
    blocked_timeout_seconds: float = Field(default=policy.BLOCKED_TIMEOUT.total_seconds(), gt=0)
    approval_timeout_seconds: float = Field(default=policy.APPROVAL_TIMEOUT.total_seconds(), gt=0)
    require_approval: bool = False
    dependency_poll_seconds: float = Field(default=30, gt=0)
    history_event_limit: int = Field(default=policy.HISTORY_EVENT_LIMIT, ge=50)
    repo_check_timeout_seconds: float = 20.0

    # Observability (docs/operations.md). An empty address turns that endpoint off.
    metrics_address: str = Field(default="127.0.0.1:9464", description="the worker's /metrics")
    health_address: str = Field(default="127.0.0.1:9465", description="the worker's /healthz and /readyz")
    health_refresh_seconds: float = Field(default=15.0, gt=0, description="tickets-by-state gauge refresh")
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: str = "INFO"
    otlp_endpoint: str | None = Field(default=None, description="else $OTEL_EXPORTER_OTLP_ENDPOINT")
    notify: list[NotifyTarget] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_path = config_file()
        if config_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_path))
        return tuple(sources)

    def control_ports(self) -> dict[int, str]:
        """Host ports no agent sandbox may be given (loopback_ports): through the Temporal frontend or its
        Web UI an agent could cancel or signal tickets; the worker's endpoints are the worker's."""
        reserved = {
            _port(self.temporal_address, 7233): "the Temporal frontend (temporal_address)",
            self.ui_port: "the Temporal Web UI (ui_port)",
        }
        for key in ("metrics_address", "health_address"):
            address = getattr(self, key)
            if address:
                reserved.setdefault(_port(address, 0), f"the worker's {key}")
        reserved.pop(0, None)
        return reserved

    def forbidden_loopback_port(self, agent: str) -> str | None:
        """Why agents.<agent>.loopback_ports is not allowed, or None."""
        reserved = self.control_ports()
        for port in self.agents[agent].loopback_ports:
            if port in reserved:
                return f"agents.{agent}.loopback_ports: {port} is {reserved[port]}; agents may never reach it"
        return None

    @model_validator(mode="before")
    @classmethod
    def _no_mistyped_variables(cls, data: Any) -> Any:
        """A TICKETFLOW_ variable that is no setting but nearly one is a typo: an error naming both.
        (Others, far from every setting, belong to agents and tests: TICKETFLOW_WORKTREE, ...)"""
        for name in os.environ:
            if not name.startswith("TICKETFLOW_") or name in NOT_SETTINGS:
                continue
            field = name.removeprefix("TICKETFLOW_").lower().split("__")[0]
            if field not in cls.model_fields:
                close = difflib.get_close_matches(field, list(cls.model_fields), n=1, cutoff=0.8)
                if close:
                    raise ValueError(f"{name} is not a setting; did you mean TICKETFLOW_{close[0].upper()}?")
        return data

    @model_validator(mode="after")
    def _ui_url_follows_ui_port(self) -> Settings:
        """Links to the Web UI (CLI output, PR bodies, notifications) point at the port the dev server's
        UI really uses when only ui_port (TICKETFLOW_UI_PORT) was set."""
        if "ui_url" not in self.model_fields_set and "ui_port" in self.model_fields_set:
            object.__setattr__(self, "ui_url", f"http://localhost:{self.ui_port}")
        return self

    @model_validator(mode="after")
    def _temporal_client_config(self) -> Settings:
        """Connection settings not given here come from Temporal's client configuration (file profile
        and TEMPORAL_* variables); ticketflow's own settings always win."""
        from temporalio.envconfig import ClientConfigProfile

        try:
            profile = ClientConfigProfile.load(self.temporal_profile, config_source=self.temporal_config_file)
        except Exception as exc:  # the bridge's ConfigError (profile not found, bad file, bad variable)
            raise ValueError(f"Temporal client configuration: {exc}") from exc
        given = self.model_fields_set

        def fill(name: str, value: object) -> None:
            if name not in given and value is not None:
                object.__setattr__(self, name, value)

        fill("temporal_address", profile.address)
        fill("namespace", profile.namespace)
        fill("temporal_api_key", SecretStr(profile.api_key) if profile.api_key else None)
        if profile.grpc_meta:
            fill("temporal_rpc_metadata", dict(profile.grpc_meta))
        if profile.tls is not None:
            tls = profile.tls
            fill("temporal_tls", None if tls.disabled is None else not tls.disabled)
            fill("temporal_tls_server_name", tls.server_name)
            fill("temporal_tls_server_ca_cert", _pem_source(tls.server_root_ca_cert))
            fill("temporal_tls_client_cert", _pem_source(tls.client_cert))
            key = _pem_source(tls.client_private_key)
            fill("temporal_tls_client_key", SecretStr(key) if key else None)
        return self

    @model_validator(mode="after")
    def _agents_cannot_reach_the_control_plane(self) -> Settings:
        for name in self.agents:
            if problem := self.forbidden_loopback_port(name):
                raise ValueError(problem)
        return self

    # Derived locations: everything ticketflow writes lives under state_dir.
    @property
    def mirrors_dir(self) -> Path:
        return self.state_dir / "mirrors"

    @property
    def worktrees_dir(self) -> Path:
        return self.state_dir / "worktrees"

    @property
    def worktree_pool_dir(self) -> Path:
        return self.state_dir / "worktree-pool"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def host_queue(self) -> str:
        return policy.host_queue(self.task_queue, self.host_id)

    def secret_values(self) -> list[str]:
        """Values that must never appear in agent environments, logs, PR bodies or payloads."""
        tokens = (
            self.github_token,
            self.gitlab_token,
            self.gitea_token,
            self.webhook_secret,
            self.temporal_api_key,
        )
        values = [t.get_secret_value() for t in tokens if t is not None]
        values += [target.url.get_secret_value() for target in self.notify]
        return [v for v in values if len(v) >= 6]
