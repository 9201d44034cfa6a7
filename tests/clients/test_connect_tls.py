"""Connecting the Temporal way, through a TLS-terminating proxy of ours in front of the real dev server.

mTLS (the proxy demands a client certificate from our test CA) and API keys (the proxy reads every
request's `authorization` header and drops a connection that lacks the right one) reach the server
through TEMPORAL_* variables, a profile of Temporal's config file and ticketflow's own settings (which
win); a wrong CA, a missing client certificate or a wrong key is a one-line `error:` from the CLI.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.settings import Settings
from clients import cli
from clients.connect import (
    TemporalUnavailable,
    connect,
    connection_for,
    describe_connection,
    ensure_search_attributes,
)
from tests.clients.tls_proxy import Authority, Issued, TlsProxy, free_port
from tests.helpers import example_ticket, result_of, submit
from workers.main import running_workers
from workflows.contracts import TicketState


@dataclass(frozen=True)
class Pki:
    ca: Authority
    server: Issued
    client: Issued
    rogue_ca: Authority
    rogue_client: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority(folder / "ca")
    rogue = Authority(folder / "rogue", name="someone else's CA")
    return Pki(
        ca=ca,
        server=ca.issue("localhost", server=True),
        client=ca.issue("ticketflow-worker", server=False),
        rogue_ca=rogue,
        rogue_client=rogue.issue("intruder", server=False),
    )


@pytest.fixture
def upstream(temporal_env: WorkflowEnvironment) -> str:
    return temporal_env.client.service_client.config.target_host


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user configuration of ticketflow's or Temporal's."""
    for name in list(os.environ):
        if name.startswith(("TICKETFLOW_", "TEMPORAL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TICKETFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TICKETFLOW_CONFIG", os.devnull)  # an empty configuration
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "no-such-temporal.toml"))
    monkeypatch.chdir(tmp_path)


def mtls_env(monkeypatch: pytest.MonkeyPatch, proxy: TlsProxy, ca: Path, client: Issued) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", proxy.address)
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(ca))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(client.cert))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(client.key))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


# ------------------------------------------------------------------------------------------ mTLS


def test_cli_over_mtls_from_temporal_variables(
    pki: Pki, upstream: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with TlsProxy(upstream, pki.server, client_ca=pki.ca.cert_path) as proxy:
        mtls_env(monkeypatch, proxy, pki.ca.cert_path, pki.client)
        code, out, err = run(capsys, "list", "--json")
    assert (code, err) == (0, "")
    assert isinstance(json.loads(out), list)
    assert proxy.client_names and set(proxy.client_names) == {"ticketflow-worker"}


def test_ticketflow_settings_win_over_temporal_variables(
    pki: Pki,
    upstream: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """TEMPORAL_* point at a closed port with the wrong CA; ticketflow.toml and TICKETFLOW_* fix both,
    the client key given inline as PEM (as a Kubernetes secret in an environment variable would)."""
    with TlsProxy(upstream, pki.server, client_ca=pki.ca.cert_path) as proxy:
        mtls_env(monkeypatch, proxy, pki.rogue_ca.cert_path, pki.rogue_client)
        monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
        config = tmp_path / "ticketflow.toml"
        config.write_text(
            f'temporal_address = "{proxy.address}"\n'
            f'temporal_tls_server_ca_cert = "{pki.ca.cert_path}"\n'
            f'temporal_tls_client_cert = "{pki.client.cert}"\n'
        )
        monkeypatch.setenv("TICKETFLOW_CONFIG", str(config))
        monkeypatch.setenv("TICKETFLOW_TEMPORAL_TLS_CLIENT_KEY", pki.client.key.read_text())
        settings = Settings()
        code, _, err = run(capsys, "list")
    assert (code, err) == (0, "")
    assert set(proxy.client_names) == {"ticketflow-worker"}
    shown = describe_connection(settings)
    assert shown["address"] == proxy.address and shown["tls"] == "on"
    assert shown["client_key"] == "(inline PEM)" and "PRIVATE KEY" not in json.dumps(shown)


def test_a_profile_of_temporals_config_file(
    pki: Pki,
    upstream: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with TlsProxy(upstream, pki.server, client_ca=pki.ca.cert_path) as proxy:
        profile = tmp_path / "temporal.toml"
        profile.write_text(
            f'[profile.default]\naddress = "127.0.0.1:{free_port()}"\n\n'
            f'[profile.prod]\naddress = "{proxy.address}"\nnamespace = "default"\n\n'
            f'[profile.prod.tls]\nserver_ca_cert_path = "{pki.ca.cert_path}"\n'
            f'client_cert_path = "{pki.client.cert}"\nclient_key_path = "{pki.client.key}"\n'
        )
        monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(profile))
        monkeypatch.setenv("TEMPORAL_PROFILE", "prod")
        code, _, err = run(capsys, "list")
        assert (code, err) == (0, "")
        monkeypatch.delenv("TEMPORAL_PROFILE")
        monkeypatch.setenv("TICKETFLOW_TEMPORAL_PROFILE", "prod")  # the same, as a ticketflow setting
        code, _, err = run(capsys, "list")
        assert (code, err) == (0, "")
    assert proxy.client_names == ["ticketflow-worker"] * len(proxy.client_names) != []


def test_an_unknown_profile_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TEMPORAL_PROFILE", "staging")
    code, _, err = run(capsys, "list")
    assert code == 2
    assert_one_line_error(err, "Temporal client configuration", "staging")


def test_a_server_certificate_from_another_ca_is_refused(
    pki: Pki, upstream: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with TlsProxy(upstream, pki.server, client_ca=pki.ca.cert_path) as proxy:
        mtls_env(monkeypatch, proxy, pki.rogue_ca.cert_path, pki.client)
        code, out, err = run(capsys, "list")
    assert code == 1 and out == ""
    assert_one_line_error(err, f"TLS with Temporal at {proxy.address} failed", "temporal_tls_server_ca_cert")


@pytest.mark.parametrize("client", ["none", "rogue"])
def test_mtls_without_a_valid_client_certificate_is_refused(
    pki: Pki,
    upstream: str,
    client: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with TlsProxy(upstream, pki.server, client_ca=pki.ca.cert_path) as proxy:
        mtls_env(monkeypatch, proxy, pki.ca.cert_path, pki.rogue_client)
        if client == "none":
            monkeypatch.delenv("TEMPORAL_TLS_CLIENT_CERT_PATH")
            monkeypatch.delenv("TEMPORAL_TLS_CLIENT_KEY_PATH")
        code, out, err = run(capsys, "list")
    assert code == 1 and out == ""
    assert_one_line_error(err, f"Temporal at {proxy.address}")
    assert proxy.failed_handshakes >= 1 and proxy.client_names == []


def test_unusable_tls_material_is_named(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TICKETFLOW_TEMPORAL_TLS_CLIENT_CERT", str(pki.client.cert))
    code, _, err = run(capsys, "list")
    assert code == 1
    assert_one_line_error(err, "mTLS needs both temporal_tls_client_cert and temporal_tls_client_key")

    monkeypatch.setenv("TICKETFLOW_TEMPORAL_TLS_CLIENT_KEY", str(tmp_path / "missing.key"))
    code, _, err = run(capsys, "list")
    assert_one_line_error(err, "temporal_tls_client_key: cannot read", "missing.key")


# --------------------------------------------------------------------------------------- API keys


def test_api_key_is_sent_as_a_bearer_token_on_every_call(
    pki: Pki, upstream: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with TlsProxy(upstream, pki.server, api_key="tf-key-123") as proxy:
        monkeypatch.setenv("TEMPORAL_ADDRESS", proxy.address)
        monkeypatch.setenv("TEMPORAL_API_KEY", "tf-key-123")
        monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(pki.ca.cert_path))
        code, out, err = run(capsys, "list", "--json")
    assert (code, err) == (0, "") and json.loads(out) is not None
    assert len(proxy.authorizations) >= 2  # the connect check and the list itself
    assert set(proxy.authorizations) == {"Bearer tf-key-123"} and proxy.refused == 0


def test_a_wrong_api_key_never_reaches_the_server(
    pki: Pki, upstream: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with TlsProxy(upstream, pki.server, api_key="tf-key-123") as proxy:
        monkeypatch.setenv("TEMPORAL_ADDRESS", proxy.address)
        monkeypatch.setenv("TICKETFLOW_TEMPORAL_API_KEY", "guessed")
        monkeypatch.setenv("TICKETFLOW_TEMPORAL_TLS_SERVER_CA_CERT", str(pki.ca.cert_path))
        code, out, err = run(capsys, "list")
    assert code == 1 and out == ""
    assert_one_line_error(err, f"Temporal at {proxy.address}")
    assert "guessed" not in err
    assert proxy.refused >= 1 and set(proxy.authorizations) == {"Bearer guessed"}


# ------------------------------------------------------------------------------------ the worker


async def test_a_worker_runs_a_ticket_over_mtls(pki: Pki, settings: Settings, tmp_path: Path) -> None:
    """The worker's client (the same builder) through the mTLS proxy: a whole ticket runs to DONE."""
    with TlsProxy(settings.temporal_address, pki.server, client_ca=pki.ca.cert_path) as proxy:
        tls_settings = settings.model_copy(
            update={
                "temporal_address": proxy.address,
                "temporal_tls_server_ca_cert": str(pki.ca.cert_path),
                "temporal_tls_client_cert": str(pki.client.cert),
                "temporal_tls_client_key": SecretStr(pki.client.key.read_text()),
            }
        )
        assert connection_for(tls_settings).uses_tls
        client = await connect(tls_settings)
        async with running_workers(client, tls_settings):
            ticket = example_ticket("demo-1-multiply.md", id=f"tls-{uuid.uuid4().hex[:8]}")
            await submit(client, tls_settings, ticket)
            result = await result_of(client, ticket.id)
    assert result.state is TicketState.DONE
    assert set(proxy.client_names) == {"ticketflow-worker"}


async def test_connecting_without_tls_to_a_tls_port_is_one_clear_error(pki: Pki, upstream: str) -> None:
    with TlsProxy(upstream, pki.server) as proxy, pytest.raises(TemporalUnavailable) as info:
        await connect(Settings(temporal_address=proxy.address))
    assert "\n" not in str(info.value) and proxy.address in str(info.value)


# ------------------------------------------------------------------------------ search attributes


class DeniedOperator:
    def __init__(self, deny_list: bool) -> None:
        self.deny_list = deny_list
        self.calls: list[str] = []

    async def list_search_attributes(self, request: Any) -> Any:
        self.calls.append("list")
        if self.deny_list:
            raise RPCError("Request unauthorized.", RPCStatusCode.PERMISSION_DENIED, b"")

        class Existing:
            custom_attributes = {"TicketState": 2}

        return Existing()

    async def add_search_attributes(self, request: Any) -> Any:
        self.calls.append("add")
        raise RPCError("Request unauthorized.", RPCStatusCode.PERMISSION_DENIED, b"")


class FakeClient:
    namespace = "acme.a1b2c"

    def __init__(self, operator: DeniedOperator) -> None:
        self.operator_service = operator


@pytest.mark.parametrize("deny_list", [False, True])
async def test_missing_permission_for_search_attributes_is_a_clear_message(
    deny_list: bool, caplog: pytest.LogCaptureFixture
) -> None:
    operator = DeniedOperator(deny_list)
    with caplog.at_level(logging.INFO, "ticketflow.connect"):
        missing = await ensure_search_attributes(FakeClient(operator))  # type: ignore[arg-type]
    text = caplog.text
    assert "PERMISSION_DENIED" in text and "temporal operator search-attribute create" in text
    assert "--namespace acme.a1b2c" in text and "tcld" in text
    if deny_list:
        assert operator.calls == ["list"] and missing == []
    else:
        assert operator.calls == ["list", "add"]
        assert "TicketState" not in missing and "TicketStage" in missing
        assert "--name TicketStage --type Keyword" in text


async def test_search_attribute_registration_can_be_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    operator = DeniedOperator(deny_list=True)
    with caplog.at_level(logging.INFO, "ticketflow.connect"):
        await ensure_search_attributes(FakeClient(operator), register=False)  # type: ignore[arg-type]
    assert operator.calls == [] and "register_search_attributes" in caplog.text


def test_temporal_variables_fill_what_ticketflow_does_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", "acme.a1b2c.tmprl.cloud:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "acme.a1b2c")
    monkeypatch.setenv("TEMPORAL_API_KEY", "cloud-api-key-1")
    monkeypatch.setenv("TEMPORAL_GRPC_META_X_TEAM", "tickets")
    settings = Settings()
    conn = connection_for(settings)
    assert (conn.address, conn.namespace, conn.api_key) == (
        "acme.a1b2c.tmprl.cloud:7233",
        "acme.a1b2c",
        "cloud-api-key-1",
    )
    assert conn.uses_tls and conn.rpc_metadata == {"x-team": "tickets"}
    assert "cloud-api-key-1" in settings.secret_values()
    assert "cloud-api-key-1" not in json.dumps(describe_connection(settings))

    monkeypatch.setenv("TICKETFLOW_NAMESPACE", "mine")
    monkeypatch.setenv("TICKETFLOW_TEMPORAL_TLS", "false")
    overridden = connection_for(Settings())
    assert overridden.namespace == "mine" and not overridden.uses_tls
