"""Connecting to Temporal the same way everywhere: CLI, worker, intake, webhook, tests and benchmarks.

One builder turns Settings into `Client.connect` arguments: address, namespace, TLS (server CA, client
certificate and key for mTLS, server name), API key and extra gRPC metadata. Settings already hold
Temporal's own client configuration (a `temporalio.envconfig` profile and the TEMPORAL_* variables)
under ticketflow's overrides (activities/settings.py), so what `describe_connection` prints is exactly
what `connect` uses. Every client gets the pydantic data converter and the tracing interceptor.

Importing this module is cheap: the Temporal client, its native runtime and OpenTelemetry load on the
first connect, not at import (the CLI's `--help` and argument errors never pay for them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from temporalio.client import Client, Interceptor
    from temporalio.runtime import Runtime
    from temporalio.service import TLSConfig

    from activities.settings import Settings

log = logging.getLogger("ticketflow.connect")

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class TemporalUnavailable(Exception):
    """Temporal cannot be reached, or the connection settings are unusable (one line, for `error:`)."""


@dataclass(frozen=True)
class Connection:
    """What `connect` passes to `Client.connect`, built from Settings."""

    address: str
    namespace: str
    tls: bool | TLSConfig = False
    api_key: str | None = None
    rpc_metadata: dict[str, str] = field(default_factory=dict)

    @property
    def uses_tls(self) -> bool:
        return self.tls is not False


def _is_pem(value: str) -> bool:
    return value.lstrip().startswith("-----BEGIN")


def _pem(setting: str, value: str | None) -> bytes | None:
    """A PEM setting's bytes: the value itself when it is PEM text, else the file it names."""
    if not value:
        return None
    if _is_pem(value):
        return value.encode()
    path = Path(value).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TemporalUnavailable(f"{setting}: cannot read {path}: {exc.strerror or exc}") from exc
    if b"-----BEGIN" not in data:
        raise TemporalUnavailable(f"{setting}: {path} holds no PEM data")
    return data


def connection_for(settings: Settings) -> Connection:
    """The connection Settings describe; unreadable or half-given TLS material is an error here."""
    from temporalio.service import TLSConfig

    key_setting = settings.temporal_tls_client_key
    key = _pem("temporal_tls_client_key", key_setting.get_secret_value() if key_setting else None)
    cert = _pem("temporal_tls_client_cert", settings.temporal_tls_client_cert)
    if (cert is None) != (key is None):
        raise TemporalUnavailable(
            "mTLS needs both temporal_tls_client_cert and temporal_tls_client_key "
            "(TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH)"
        )
    ca = _pem("temporal_tls_server_ca_cert", settings.temporal_tls_server_ca_cert)
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    wanted = settings.temporal_tls
    if wanted is None:  # as Temporal's SDKs do: an API key or any TLS material turns TLS on
        wanted = bool(api_key or cert or ca or settings.temporal_tls_server_name)
    tls: bool | TLSConfig = False
    if wanted:
        tls = TLSConfig(
            server_root_ca_cert=ca,
            domain=settings.temporal_tls_server_name,
            client_cert=cert,
            client_private_key=key,
        )
    return Connection(
        address=settings.temporal_address,
        namespace=settings.namespace,
        tls=tls,
        api_key=api_key,
        rpc_metadata=dict(settings.temporal_rpc_metadata),
    )


def describe_connection(settings: Settings) -> dict[str, str]:
    """The effective connection, for `config check` and the worker's start-up log: no secret in it."""

    def source(value: str | None) -> str:
        if not value:
            return "-"
        return "(inline PEM)" if _is_pem(value) else value

    key = settings.temporal_tls_client_key
    tls = settings.temporal_tls
    api_key = settings.temporal_api_key is not None
    certs = settings.temporal_tls_client_cert or settings.temporal_tls_server_ca_cert
    on = tls if tls is not None else bool(api_key or certs or settings.temporal_tls_server_name)
    return {
        "address": settings.temporal_address,
        "namespace": settings.namespace,
        "tls": "on" if on else "off",
        "server_ca_cert": source(settings.temporal_tls_server_ca_cert) if on else "-",
        "client_cert": source(settings.temporal_tls_client_cert) if on else "-",
        "client_key": source(key.get_secret_value() if key else None) if on else "-",
        "server_name": settings.temporal_tls_server_name or "-",
        "api_key": "set" if api_key else "-",
        "profile": settings.temporal_profile or "default",
    }


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _explain(conn: Connection, exc: BaseException) -> str:
    detail = _one_line(str(exc))
    lowered = detail.lower()
    where = f"Temporal at {conn.address}"
    if any(word in lowered for word in ("certificate", "tls", "handshake", "unknownissuer", "badsignature")):
        return (
            f"TLS with {where} failed ({detail}); check temporal_tls_server_ca_cert and, for mTLS, "
            "temporal_tls_client_cert/temporal_tls_client_key"
        )
    if any(word in lowered for word in ("unauthenticated", "permission", "unauthorized", "api key")):
        return f"{where} refused the credentials ({detail}); check temporal_api_key / TEMPORAL_API_KEY"
    if "after connection" in lowered:  # TCP (and TLS) worked, the first call did not
        needs = "credentials (temporal_api_key, mTLS)"
        if not conn.uses_tls:
            needs = "TLS (temporal_tls, TEMPORAL_TLS)"
        return f"{where} accepted the connection but refused the first call ({detail}); does it need {needs}?"
    host = conn.address.rpartition(":")[0]
    hint = "; start it with `ticketflow dev`" if not conn.uses_tls and host in LOCAL_HOSTS else ""
    return f"cannot reach {where} ({detail}){hint}"


async def connect(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    interceptors: Sequence[Interceptor] | None = None,
) -> Client:
    """A client with ticketflow's converter and the tracing interceptor (workers inherit both).

    `runtime` carries the worker's Prometheus endpoint; a process has one, so pass it on every connect.
    """
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from workers.tracing import tracing_interceptor

    conn = connection_for(settings)
    options: dict[str, Any] = {}
    if conn.rpc_metadata:
        options["rpc_metadata"] = conn.rpc_metadata
    try:
        return await Client.connect(
            conn.address,
            namespace=conn.namespace,
            api_key=conn.api_key,
            tls=conn.tls,
            data_converter=pydantic_data_converter,
            interceptors=[tracing_interceptor(), *(interceptors or ())],
            runtime=runtime,
            **options,
        )
    except (RuntimeError, ValueError) as exc:  # the bridge's connect errors; bad TLS material
        raise TemporalUnavailable(_explain(conn, exc)) from exc


async def ensure_search_attributes(client: Client, *, register: bool = True) -> list[str]:
    """Register ticketflow's search attributes where the namespace lacks them (an upsert of an unknown
    one would stall every ticket's workflow task). Returns the names still missing.

    A server that does not let this identity list or add them (Temporal Cloud API keys, a locked-down
    cluster) is not fatal: the missing names and the command that adds them are logged instead.
    """
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
    from temporalio.service import RPCError

    from workflows.visibility import SEARCH_ATTRIBUTES

    wanted = {key.name: key.indexed_value_type for key in SEARCH_ATTRIBUTES}
    if not register:
        log.info(
            "search attribute registration is off (register_search_attributes); the namespace %s "
            "must have: %s",
            client.namespace,
            search_attribute_list(wanted),
        )
        return []
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as exc:
        log.warning(
            "cannot list the search attributes of namespace %s (%s: %s); make sure it has %s, e.g. %s",
            client.namespace,
            exc.status.name,
            _one_line(exc.message),
            search_attribute_list(wanted),
            _create_hint(client.namespace, wanted),
        )
        return []
    missing = {name: kind for name, kind in wanted.items() if name not in existing.custom_attributes}
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={name: int(kind) for name, kind in missing.items()},  # type: ignore[misc]
            )
        )
    except RPCError as exc:
        log.error(
            "namespace %s lacks search attributes %s and this worker may not add them (%s: %s); tickets "
            "stall until they exist. Add them once: %s",
            client.namespace,
            search_attribute_list(missing),
            exc.status.name,
            _one_line(exc.message),
            _create_hint(client.namespace, missing),
        )
        return sorted(missing)
    log.info("registered search attributes %s", search_attribute_list(missing))
    return []


def search_attribute_list(attributes: dict[str, Any]) -> str:
    from clients.devserver import search_attribute_type

    return ", ".join(f"{name} ({search_attribute_type(kind)})" for name, kind in sorted(attributes.items()))


def _create_hint(namespace: str, attributes: dict[str, Any]) -> str:
    from clients.devserver import search_attribute_type

    args = " ".join(
        f"--name {name} --type {search_attribute_type(kind)}" for name, kind in sorted(attributes.items())
    )
    return (
        f"`temporal operator search-attribute create --namespace {namespace} {args}` "
        "(Temporal Cloud: `tcld namespace search-attributes add` or the Cloud UI)"
    )
