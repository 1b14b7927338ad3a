"""Mutual TLS over real loopback sockets: who gets in, who is refused, and with which label.

The server here is deliberately the smallest thing shaped like the hub's listener:
accept plain TCP, upgrade with ``loop.start_tls(server_side=True)``, check the
allow-list, and only then write a byte. Each refusal is asserted on the *server's*
classification (``refusal_reason``), because that is what the hub logs and counts,
over TLS 1.2 and TLS 1.3 alike (the client pins its maximum version). With TLS 1.3
the client believes it is connected before the server has judged its certificate,
so every refusal also checks that the client never received application data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from billhub.errors import ConfigError, TlsRefused
from billhub.transport.certs import init_dev_certs, issue_cert, write_pem
from billhub.transport.tls import (
    REFUSAL_REASONS,
    AllowList,
    client_context,
    refusal_reason,
    server_context,
)
from conftest import Pki, load_ca

VERSIONS = ["1.2", "1.3"]
WELCOME = b"OK"


@dataclass
class Outcome:
    """What the server concluded about one connection, and what the client saw."""

    subject: str | None = None
    refused: TlsRefused | None = None
    version: str | None = None
    client_received: bytes = b""


class _Accepted(asyncio.Protocol):
    """Plain-TCP protocol that hands the connection to a coroutine and never reads."""

    def __init__(self, on_accept: Callable[[asyncio.Transport, asyncio.Protocol], None]) -> None:
        self._on_accept = on_accept

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # not a byte before TLS wraps the socket
        self._on_accept(transport, self)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused
        raise AssertionError("plain data read before TLS")


async def _serve_one(
    transport: asyncio.Transport,
    protocol: asyncio.Protocol,
    ctx: ssl.SSLContext,
    allow: AllowList,
    handshake_timeout: float,
) -> Outcome:
    """The hub's order of events: handshake, allow-list, and only then application data."""
    loop = asyncio.get_running_loop()
    outcome = Outcome()
    tls: asyncio.Transport | None = None
    try:
        tls = await loop.start_tls(
            transport, protocol, ctx, server_side=True, ssl_handshake_timeout=handshake_timeout
        )
        assert tls is not None
        obj = tls.get_extra_info("ssl_object")
        outcome.version = obj.version()
        outcome.subject = allow.check(obj.getpeercert(binary_form=True))
        tls.write(WELCOME)
        await asyncio.sleep(0.05)
        tls.close()
    except Exception as exc:
        outcome.refused = refusal_reason(exc)
        (tls or transport).abort()
    return outcome


async def _client(port: int, client: ssl.SSLContext) -> bytes:
    """Connect as the switch and return whatever application data the hub sent."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="localhost"
        )
    except (ssl.SSLError, ConnectionError):
        return b""  # TLS 1.2: the refusal reaches the client inside its handshake
    try:
        return await reader.read(100)
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


async def run_handshake(
    pki: Pki,
    client: ssl.SSLContext | str,
    *,
    server_min: str = "1.2",
    allowed: Sequence[str] = ("switch-1",),
    handshake_timeout: float = 5.0,
    blocking: bool = False,
) -> Outcome:
    """One connection against the minimal server. ``client`` is a context or a script.

    A context connects with asyncio, or with a blocking ``ssl`` socket in a thread
    when ``blocking`` (that client, unlike asyncio's, sends an alert when it rejects
    the hub). Scripts: ``"silent"`` connects and sends nothing; ``"close"`` connects
    and closes; ``"garbage"`` sends bytes that are not TLS.
    """
    loop = asyncio.get_running_loop()
    ctx = server_context(pki.hub_cert, pki.hub_key, pki.switch_ca_cert, min_version=server_min)
    allow = AllowList(allowed)
    served: asyncio.Future[asyncio.Task[Outcome]] = loop.create_future()

    def on_accept(transport: asyncio.Transport, protocol: asyncio.Protocol) -> None:
        task = loop.create_task(_serve_one(transport, protocol, ctx, allow, handshake_timeout))
        served.set_result(task)

    server = await loop.create_server(lambda: _Accepted(on_accept), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    received = b""
    try:
        if isinstance(client, ssl.SSLContext):
            if blocking:
                received = await asyncio.to_thread(_blocking_client, port, client)
            else:
                received = await asyncio.wait_for(_client(port, client), 10)
            outcome = await asyncio.wait_for(await served, 10)
        else:
            raw = socket.create_connection(("127.0.0.1", port))
            try:
                task = await asyncio.wait_for(served, 5)
                if client == "close":
                    raw.close()
                elif client == "garbage":
                    raw.sendall(b"\x00\x2e0800" + b"\x82" + bytes(46))
                outcome = await asyncio.wait_for(task, 10)
            finally:
                raw.close()
    finally:
        server.close()
        await server.wait_closed()
    outcome.client_received = received
    return outcome


def _blocking_client(port: int, client: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with client.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.recv(100)
        except (ssl.SSLError, ConnectionError):
            return b""


def switch_client(pki: Pki, version: str, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    return client_context(cert, key, pki.hub_ca_cert, max_version=version)


# ------------------------------------------------------------------------ handshakes


@pytest.mark.parametrize("version", VERSIONS)
async def test_valid_switch_is_admitted_and_its_subject_reported(pki: Pki, version: str) -> None:
    out = await run_handshake(pki, switch_client(pki, version, pki.switch_cert, pki.switch_key))
    assert out.refused is None
    assert out.version == f"TLSv{version}"
    assert out.subject == "CN=switch-1,O=National Switch"
    assert out.client_received == WELCOME


@pytest.mark.parametrize("version", VERSIONS)
async def test_client_without_certificate_is_refused(pki: Pki, version: str) -> None:
    out = await run_handshake(pki, switch_client(pki, version, None, None))
    assert out.refused is not None
    assert out.refused.reason == "no_client_certificate"
    assert out.client_received == b""


@pytest.mark.parametrize("version", VERSIONS)
async def test_certificate_from_another_ca_is_refused(pki: Pki, version: str) -> None:
    out = await run_handshake(pki, switch_client(pki, version, pki.rogue_cert, pki.rogue_key))
    assert out.refused is not None
    assert out.refused.reason == "unknown_ca"
    assert "unable to get local issuer certificate" in out.refused.detail
    assert out.client_received == b""


@pytest.mark.parametrize("version", VERSIONS)
async def test_expired_certificate_is_refused(pki: Pki, version: str) -> None:
    out = await run_handshake(pki, switch_client(pki, version, pki.expired_cert, pki.expired_key))
    assert out.refused is not None
    assert out.refused.reason == "certificate_expired"
    assert out.client_received == b""


@pytest.mark.parametrize("version", VERSIONS)
async def test_not_yet_valid_certificate_is_refused(pki: Pki, version: str) -> None:
    out = await run_handshake(
        pki, switch_client(pki, version, pki.not_yet_valid_cert, pki.not_yet_valid_key)
    )
    assert out.refused is not None
    assert out.refused.reason == "certificate_not_yet_valid"


@pytest.mark.parametrize("version", VERSIONS)
async def test_server_certificate_as_client_certificate_is_invalid(
    pki: Pki, tmp_path: Path, version: str
) -> None:
    # Right CA, right subject, but serverAuth only: OpenSSL says "unsuitable purpose".
    cert, key = issue_cert(
        *load_ca(pki.switch_ca_cert, pki.switch_ca_key),
        "switch-1",
        server=True,
        organization="National Switch",
    )
    c, k = write_pem(tmp_path / "c.crt", cert), write_pem(tmp_path / "c.key", key)
    out = await run_handshake(pki, switch_client(pki, version, c, k))
    assert out.refused is not None
    assert out.refused.reason == "certificate_invalid"


@pytest.mark.parametrize("version", VERSIONS)
async def test_subject_not_on_allow_list_is_refused_before_any_data(pki: Pki, version: str) -> None:
    out = await run_handshake(pki, switch_client(pki, version, pki.intruder_cert, pki.intruder_key))
    assert out.refused is not None
    assert out.refused.reason == "subject_not_allowed"
    assert out.refused.detail == "CN=intruder"
    assert out.client_received == b""


async def test_tls12_client_against_tls13_only_hub_is_protocol_version(pki: Pki) -> None:
    client = switch_client(pki, "1.2", pki.switch_cert, pki.switch_key)
    out = await run_handshake(pki, client, server_min="1.3")
    assert out.refused is not None
    assert out.refused.reason == "protocol_version"


async def test_silent_client_is_a_handshake_timeout(pki: Pki) -> None:
    out = await run_handshake(pki, "silent", handshake_timeout=0.2)
    assert out.refused is not None
    assert out.refused.reason == "handshake_timeout"


async def test_client_closing_mid_handshake_is_connection_lost(pki: Pki) -> None:
    out = await run_handshake(pki, "close")
    assert out.refused is not None
    assert out.refused.reason == "connection_lost"


async def test_client_speaking_plain_iso8583_is_handshake_failed(pki: Pki) -> None:
    out = await run_handshake(pki, "garbage")
    assert out.refused is not None
    assert out.refused.reason == "handshake_failed"
    assert "does not speak TLS" in out.refused.detail


@pytest.mark.parametrize("version", VERSIONS)
async def test_client_rejecting_the_hub_certificate(pki: Pki, version: str) -> None:
    # The client trusts another CA than the one that signed hub.crt. asyncio's client
    # drops the connection without an alert; a blocking ssl client sends "unknown ca".
    client = client_context(pki.switch_cert, pki.switch_key, pki.rogue_ca_cert, max_version=version)
    out = await run_handshake(pki, client)
    assert out.refused is not None
    assert out.refused.reason == "connection_lost"

    out = await run_handshake(pki, client, blocking=True)
    assert out.refused is not None
    assert out.refused.reason == "handshake_failed"
    assert "alert 'unknown ca'" in out.refused.detail


@pytest.mark.parametrize("version", VERSIONS)
async def test_blocking_openssl_client_gets_the_same_labels(pki: Pki, version: str) -> None:
    cases = [
        (pki.switch_cert, pki.switch_key, None),
        (None, None, "no_client_certificate"),
        (pki.rogue_cert, pki.rogue_key, "unknown_ca"),
        (pki.expired_cert, pki.expired_key, "certificate_expired"),
        (pki.intruder_cert, pki.intruder_key, "subject_not_allowed"),
    ]
    for cert, key, label in cases:
        out = await run_handshake(pki, switch_client(pki, version, cert, key), blocking=True)
        assert (out.refused.reason if out.refused else None) == label
        assert out.client_received == (WELCOME if label is None else b"")


# ------------------------------------------------------------------------ refusal_reason


def _ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] ...")
    exc.reason = reason
    return exc


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.reason = "CERTIFICATE_VERIFY_FAILED"
    exc.verify_code = code
    exc.verify_message = message
    return exc


@pytest.mark.parametrize(
    ("exc", "label"),
    [
        (_ssl_error("PEER_DID_NOT_RETURN_A_CERTIFICATE"), "no_client_certificate"),
        (_verify_error(20, "unable to get local issuer certificate"), "unknown_ca"),
        (_verify_error(19, "self-signed certificate in certificate chain"), "unknown_ca"),
        (_verify_error(18, "self-signed certificate"), "unknown_ca"),
        (_verify_error(10, "certificate has expired"), "certificate_expired"),
        (_verify_error(9, "certificate is not yet valid"), "certificate_not_yet_valid"),
        (_verify_error(26, "unsuitable certificate purpose"), "certificate_invalid"),
        (_verify_error(7, "certificate signature failure"), "certificate_invalid"),
        (_ssl_error("UNSUPPORTED_PROTOCOL"), "protocol_version"),
        (_ssl_error("TLSV1_ALERT_PROTOCOL_VERSION"), "protocol_version"),
        (_ssl_error("TLSV1_ALERT_UNKNOWN_CA"), "handshake_failed"),
        (_ssl_error("WRONG_VERSION_NUMBER"), "handshake_failed"),
        (_ssl_error("HTTP_REQUEST"), "handshake_failed"),
        (_ssl_error("NO_SHARED_CIPHER"), "handshake_failed"),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "connection_lost"),
        (TimeoutError(), "handshake_timeout"),
        (
            ConnectionAbortedError(
                "SSL handshake is taking longer than 10 seconds: aborting the connection"
            ),
            "handshake_timeout",
        ),
        (ConnectionResetError(), "connection_lost"),
        (ConnectionAbortedError("whatever"), "connection_lost"),
        (BrokenPipeError(), "connection_lost"),
        (OSError(113, "No route to host"), "connection_lost"),
        (asyncio.IncompleteReadError(b"", 2), "connection_lost"),
        (RuntimeError("odd"), "handshake_failed"),
    ],
)
def test_refusal_reason_labels(exc: BaseException, label: str) -> None:
    refused = refusal_reason(exc)
    assert refused.reason == label
    assert refused.reason in REFUSAL_REASONS
    assert refused.detail


def test_refusal_reason_names_the_alert_the_peer_sent() -> None:
    refused = refusal_reason(_ssl_error("SSLV3_ALERT_CERTIFICATE_EXPIRED"))
    assert refused.reason == "handshake_failed"
    assert "certificate expired" in refused.detail


def test_refusal_reason_passes_tls_refused_through() -> None:
    original = TlsRefused("subject_not_allowed", "CN=x")
    assert refusal_reason(original) is original


# ------------------------------------------------------------------------ allow-list


def _der(path: Path) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)


def test_allow_list_matches_common_name(pki: Pki) -> None:
    assert AllowList(["switch-1"]).check(_der(pki.switch_cert)) == ("CN=switch-1,O=National Switch")


def test_allow_list_matches_full_rfc4514_dn(pki: Pki) -> None:
    allow = AllowList(["CN=switch-1,O=National Switch"])
    assert allow.check(_der(pki.switch_cert)) == "CN=switch-1,O=National Switch"
    # A space after a comma is tolerated and normalised away.
    assert AllowList(["CN=switch-1, O=National Switch"]).check(_der(pki.switch_cert))


def test_allow_list_dn_must_be_whole_and_in_rfc4514_order(pki: Pki) -> None:
    der = _der(pki.switch_cert)
    for entry in ["CN=switch-1", "O=National Switch,CN=switch-1", "CN=switch-1,O=national switch"]:
        with pytest.raises(TlsRefused) as info:
            AllowList([entry]).check(der)
        assert info.value.reason == "subject_not_allowed"
        assert info.value.detail == "CN=switch-1,O=National Switch"


def test_allow_list_cn_is_exact(pki: Pki) -> None:
    with pytest.raises(TlsRefused, match="subject_not_allowed"):
        AllowList(["Switch-1", "switch", "switch-1 "]).check(_der(pki.switch_cert))


def test_allow_list_refuses_missing_certificate() -> None:
    with pytest.raises(TlsRefused) as info:
        AllowList(["switch-1"]).check(None)
    assert info.value.reason == "no_client_certificate"


def test_allow_list_refuses_bytes_that_are_not_a_certificate() -> None:
    with pytest.raises(TlsRefused) as info:
        AllowList(["switch-1"]).check(b"\x30\x03junk")
    assert info.value.reason == "certificate_invalid"


def test_allow_list_does_not_match_cn_when_subject_has_two(pki: Pki, tmp_path: Path) -> None:
    ca, ca_key = load_ca(pki.switch_ca_cert, pki.switch_ca_key)
    cert, _ = issue_cert(ca, ca_key, "intruder", server=False)
    two_cns = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "intruder"),
            x509.NameAttribute(NameOID.COMMON_NAME, "switch-1"),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(two_cns)
        .issuer_name(ca.subject)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    der = builder.sign(ca_key, hashes.SHA256()).public_bytes(Encoding.DER)
    with pytest.raises(TlsRefused, match="subject_not_allowed"):
        AllowList(["switch-1", "intruder"]).check(der)
    assert AllowList(["CN=switch-1,CN=intruder"]).check(der) == "CN=switch-1,CN=intruder"


@pytest.mark.parametrize(
    ("entries", "key"),
    [
        ([], "tls.allowed_subjects"),
        (["switch-1", "  "], "tls.allowed_subjects[1]"),
        (["CN=switch-1,=oops"], "tls.allowed_subjects[0]"),
    ],
)
def test_allow_list_rejects_bad_entries(entries: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        AllowList(entries)
    assert info.value.key == key


# ------------------------------------------------------------------------ contexts


def test_server_context_is_mutual_and_hardened(pki: Pki) -> None:
    ctx = server_context(pki.hub_cert, pki.hub_key, pki.switch_ca_cert)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_TICKET
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    assert all(name.startswith("ECDHE-") for name in tls12)
    assert all("GCM" in name or "CHACHA20" in name for name in tls12)
    ctx13 = server_context(pki.hub_cert, pki.hub_key, pki.switch_ca_cert, min_version="1.3")
    assert ctx13.minimum_version == ssl.TLSVersion.TLSv1_3


def test_server_context_names_the_missing_file(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    cases = [
        ((missing, pki.hub_key, pki.switch_ca_cert), "tls.cert_file"),
        ((pki.hub_cert, missing, pki.switch_ca_cert), "tls.key_file"),
        ((pki.hub_cert, pki.hub_key, missing), "tls.client_ca_file"),
    ]
    for args, key in cases:
        with pytest.raises(ConfigError) as info:
            server_context(*args)
        assert info.value.key == key
        assert info.value.reason == f"file not found: {missing}"


def test_server_context_rejects_bad_files_with_one_line_reasons(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a pem file\n")

    with pytest.raises(ConfigError) as info:
        server_context(garbage, pki.hub_key, pki.switch_ca_cert)
    assert info.value.key == "tls.cert_file"

    with pytest.raises(ConfigError) as info:
        server_context(pki.hub_cert, garbage, pki.switch_ca_cert)
    assert info.value.key == "tls.key_file"

    # The switch's key with the hub's certificate.
    with pytest.raises(ConfigError) as info:
        server_context(pki.hub_cert, pki.switch_key, pki.switch_ca_cert)
    assert info.value.key == "tls.key_file"
    assert "does not match" in info.value.reason

    # The switch's own certificate where its CA belongs.
    with pytest.raises(ConfigError) as info:
        server_context(pki.hub_cert, pki.hub_key, pki.switch_cert)
    assert info.value.key == "tls.client_ca_file"
    assert "not a CA" in info.value.reason

    with pytest.raises(ConfigError) as info:
        server_context(pki.hub_cert, pki.hub_key, garbage)
    assert info.value.key == "tls.client_ca_file"

    with pytest.raises(ConfigError) as info:
        server_context(pki.hub_cert, pki.hub_key, tmp_path)
    assert info.value.key == "tls.client_ca_file"

    with pytest.raises(ConfigError) as info:
        server_context(pki.hub_cert, pki.hub_key, pki.switch_ca_cert, min_version="1.1")
    assert info.value.key == "tls.min_version"

    for error in (info.value,):
        assert "\n" not in str(error)


def test_server_context_refuses_an_encrypted_key_without_prompting(
    pki: Pki, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.hub_key.read_bytes(), password=None)
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError) as info:
        server_context(pki.hub_cert, encrypted, pki.switch_ca_cert)
    assert info.value.key == "tls.key_file"
    assert "encrypted" in info.value.reason


def test_client_context_checks_versions_and_pairs(pki: Pki) -> None:
    ctx = client_context(pki.switch_cert, pki.switch_key, pki.hub_ca_cert, max_version="1.2")
    assert ctx.check_hostname
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ConfigError) as info:
        client_context(None, None, pki.hub_ca_cert, min_version="1.3", max_version="1.2")
    assert info.value.key == "tls.max_version"
    with pytest.raises(ConfigError) as info:
        client_context(pki.switch_cert, None, pki.hub_ca_cert)
    assert info.value.key == "tls.key_file"
    with pytest.raises(ConfigError) as info:
        client_context(None, None, pki.hub_key, key_prefix="simulator")
    assert info.value.key == "simulator.server_ca_file"


# ------------------------------------------------------------------------ dev PKI


def test_init_dev_certs_writes_private_keys_0600_and_refuses_to_overwrite(
    tmp_path: Path,
) -> None:
    target = tmp_path / "certs"
    files = init_dev_certs(target)
    assert {p.name for p in files.values()} == {
        "switch-ca.crt",
        "switch-ca.key",
        "hub-ca.crt",
        "hub-ca.key",
        "hub.crt",
        "hub.key",
        "switch.crt",
        "switch.key",
    }
    for path in files.values():
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if path.suffix == ".key":
            assert mode == 0o600
            assert b"PRIVATE KEY" in path.read_bytes()
        else:
            assert not mode & 0o022
    hub = x509.load_pem_x509_certificate(files["hub_cert"].read_bytes())
    assert hub.subject.rfc4514_string() == "CN=billhub-hub"
    san = hub.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    switch = x509.load_pem_x509_certificate(files["switch_cert"].read_bytes())
    assert switch.subject.rfc4514_string() == "CN=switch-1,O=National Switch"
    ca = x509.load_pem_x509_certificate(files["switch_ca_cert"].read_bytes())
    assert switch.issuer == ca.subject

    before = files["hub_ca_cert"].read_bytes()
    with pytest.raises(ConfigError) as info:
        init_dev_certs(target)
    assert info.value.key == "certs"
    assert files["hub_ca_cert"].read_bytes() == before

    files["hub_key"].chmod(0o644)
    init_dev_certs(target, force=True)
    assert files["hub_ca_cert"].read_bytes() != before
    assert stat.S_IMODE(os.stat(files["hub_key"]).st_mode) == 0o600


async def test_dev_certs_work_end_to_end_with_configured_names(tmp_path: Path) -> None:
    files = init_dev_certs(tmp_path, hub_name="hub-test", switch_name="switch-9")
    ctx = server_context(files["hub_cert"], files["hub_key"], files["switch_ca_cert"])
    client = client_context(files["switch_cert"], files["switch_key"], files["hub_ca_cert"])
    allow = AllowList(["switch-9"])
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await writer.start_tls(ctx, ssl_handshake_timeout=5)
            done.set_result(allow.check(writer.get_extra_info("ssl_object").getpeercert(True)))
        except Exception as exc:
            done.set_exception(refusal_reason(exc))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="localhost"
        )
        assert await asyncio.wait_for(done, 5) == "CN=switch-9,O=National Switch"
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
