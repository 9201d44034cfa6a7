"""A TLS-terminating proxy in front of the real dev server, and the certificates it needs.

The proxy speaks TLS to the client (optionally demanding a client certificate signed by the test CA:
mTLS), and forwards the decrypted bytes to the plaintext dev server; HTTP/2 is just bytes to it. For
API keys it also reads the client's HTTP/2 HEADERS frames (framing by hand, header blocks through an
HPACK decoder, which must see every block in order) and closes any connection whose request carries no
`authorization: Bearer <key>` or a wrong one, before that request reaches the server. It runs its own
event loop in a thread, so synchronous tests can run the CLI (which has its own asyncio.run) against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hpack import Decoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, CONTINUATION = 0x1, 0x9
END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20


# ------------------------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass
class Authority:
    """A test CA that issues server and client certificates into a folder."""

    folder: Path
    name: str = "ticketflow test CA"
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self.cert = (
            self._builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = self.folder / f"{self.name.replace(' ', '-')}.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(
        self, subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(self, common_name: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = self._builder(subject, self.cert.subject, key.public_key()).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.folder / f"{common_name}.crt", self.folder / f"{common_name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return issued


# ------------------------------------------------------------------------------------------- proxy


class HeaderWatcher:
    """Reads the request headers out of a client's HTTP/2 byte stream, as the bytes pass by."""

    def __init__(self) -> None:
        self.buffer = b""
        self.preface_seen = False
        self.decoder = Decoder()
        self.block = b""

    def feed(self, data: bytes) -> list[dict[str, str]]:
        """The header lists completed by these bytes (one per request)."""
        self.buffer += data
        if not self.preface_seen:
            if len(self.buffer) < len(PREFACE):
                return []
            if not self.buffer.startswith(PREFACE):
                raise ValueError("not HTTP/2")
            self.buffer, self.preface_seen = self.buffer[len(PREFACE) :], True
        requests = []
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            kind, flags = self.buffer[3], self.buffer[4]
            payload, self.buffer = self.buffer[9 : 9 + length], self.buffer[9 + length :]
            if kind == HEADERS:
                pad = payload[0] if flags & PADDED else 0
                start = (1 if flags & PADDED else 0) + (5 if flags & PRIORITY else 0)
                self.block = payload[start : len(payload) - pad]
            elif kind == CONTINUATION:
                self.block += payload
            else:
                continue
            if flags & END_HEADERS:
                decoded = self.decoder.decode(self.block)
                requests.append({str(name): str(value) for name, value in decoded})
                self.block = b""
        return requests


class TlsProxy:
    """TLS in front, plaintext to the dev server behind; see the module docstring."""

    def __init__(
        self,
        upstream: str,
        server: Issued,
        *,
        client_ca: Path | None = None,
        api_key: str | None = None,
    ) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.api_key = api_key
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(server.cert, server.key)
        self.context.set_alpn_protocols(["h2"])
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(client_ca)
        self.client_names: list[str] = []  # common names of verified client certificates
        self.authorizations: list[str] = []  # `authorization` of every request seen
        self.refused = 0  # connections closed for a missing or wrong API key
        self.failed_handshakes = 0
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> TlsProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self._server = future.result(10)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> asyncio.Server:
        # TLS is done by hand after accepting, so a failed handshake is counted rather than logged.
        return await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # cancelled when the proxy stops
            await self._proxy(reader, writer)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await writer.start_tls(self.context)
        except (ssl.SSLError, ConnectionError, OSError):
            self.failed_handshakes += 1
            writer.close()
            return
        peer = writer.get_extra_info("peercert")
        if peer:
            subject = dict(item[0] for item in peer["subject"])
            self.client_names.append(str(subject.get("commonName", "")))
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        watcher = HeaderWatcher() if self.api_key is not None else None
        await asyncio.gather(
            self._pump(reader, up_writer, watcher, writer),
            self._pump(up_reader, writer, None, up_writer),
            return_exceptions=True,
        )

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        watcher: HeaderWatcher | None,
        other: asyncio.StreamWriter,
    ) -> None:
        try:
            while data := await source.read(65536):
                if watcher is not None and not self._authorized(watcher, data):
                    self.refused += 1
                    break
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError, ssl.SSLError):
            pass
        finally:
            for stream in (sink, other):
                with contextlib.suppress(Exception):
                    stream.close()

    def _authorized(self, watcher: HeaderWatcher, data: bytes) -> bool:
        for headers in watcher.feed(data):
            given = headers.get("authorization", "")
            self.authorizations.append(given)
            if given != f"Bearer {self.api_key}":
                return False
        return True


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


__all__ = ["Authority", "HeaderWatcher", "Issued", "TlsProxy", "free_port"]
