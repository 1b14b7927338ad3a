"""Mutual TLS for the switch link: contexts, the subject allow-list and refusal labels.

LINK-SPEC §1 ("security") asks three things of the hub, and each has one owner here:

* :func:`server_context` makes the handshake itself demand a client certificate that
  chains to the configured switch CA and is within its validity period. A bad
  configuration is found when the context is built, at start-up, as a
  :class:`~billhub.errors.ConfigError` that names the configuration key.
* :class:`AllowList` is checked right after a successful handshake, before any
  application byte is read or written: a certificate from the right CA is not enough,
  its subject must also be one the operator listed. With TLS 1.3 the client has
  finished its side before the server has judged its certificate, so the hub's only
  way to refuse is to close at once; the listener must do that, not read first.
* :func:`refusal_reason` turns whatever the handshake raised into a
  :class:`~billhub.errors.TlsRefused` with a short, stable ``reason`` label (for logs and
  a metric label) and a human ``detail``. The labels are :data:`REFUSAL_REASONS`.

The listener is expected to upgrade an accepted TCP connection with
``loop.start_tls(..., server_side=True, ssl_handshake_timeout=...)`` (or
``StreamWriter.start_tls``). What that raises server-side with OpenSSL 3, checked by
``tests/test_tls.py`` for TLS 1.2 and 1.3 alike:

=============================  ==========================================================
client                         server-side exception → label
=============================  ==========================================================
no certificate                 ``SSLError`` ``PEER_DID_NOT_RETURN_A_CERTIFICATE`` →
                               ``no_client_certificate``
certificate from another CA    ``SSLCertVerificationError`` code 20 (18, 19 if
                               self-signed) → ``unknown_ca``
expired certificate            ``SSLCertVerificationError`` code 10 →
                               ``certificate_expired``
not yet valid                  ``SSLCertVerificationError`` code 9 →
                               ``certificate_not_yet_valid``
wrong key usage, etc.          ``SSLCertVerificationError`` other codes (26: purpose) →
                               ``certificate_invalid``
TLS 1.2 client, 1.3 server     ``SSLError`` ``UNSUPPORTED_PROTOCOL`` → ``protocol_version``
no whole ClientHello in time   closed by the listener before TLS starts →
                               ``hello_timeout``
silent client                  ``ConnectionAbortedError`` ("SSL handshake is taking
                               longer than ...") from asyncio → ``handshake_timeout``
closes or resets mid-way       ``ConnectionResetError`` → ``connection_lost``
client refuses *our* cert      ``SSLError`` ``TLSV1_ALERT_UNKNOWN_CA`` (or another alert)
                               when the client sends an alert → ``handshake_failed``;
                               an asyncio client just drops the connection, which is
                               ``connection_lost``
not TLS at all                 ``SSLError`` ``WRONG_VERSION_NUMBER`` / ``HTTP_REQUEST`` →
                               ``handshake_failed``
=============================  ==========================================================

No private key material is ever put in an exception message: errors name files and
configuration keys only.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from billhub.errors import ConfigError, TlsRefused

__all__ = [
    "REFUSAL_REASONS",
    "AllowList",
    "client_context",
    "refusal_reason",
    "server_context",
]

#: Every ``TlsRefused.reason`` this module produces, so that a metric can expose
#: each label from start-up, at zero.
REFUSAL_REASONS: tuple[str, ...] = (
    "no_client_certificate",
    "unknown_ca",
    "certificate_expired",
    "certificate_not_yet_valid",
    "certificate_invalid",
    "subject_not_allowed",
    "protocol_version",
    "hello_timeout",
    "handshake_timeout",
    "connection_lost",
    "handshake_failed",
)

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# TLS 1.2 suites: forward secrecy and AEAD only. TLS 1.3 suites are all AEAD and are
# not affected by set_ciphers.
_CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20"

# OpenSSL X509_V_ERR_* codes (x509_vfy.h), as ssl.SSLCertVerificationError.verify_code.
_V_ERR_CERT_NOT_YET_VALID = 9
_V_ERR_CERT_HAS_EXPIRED = 10
_V_ERR_UNKNOWN_ISSUER = frozenset(
    {
        2,  # unable to get issuer certificate
        18,  # self-signed certificate (the client's own, not from our CA)
        19,  # self-signed certificate in chain (a chain up to a root we do not trust)
        20,  # unable to get local issuer certificate
        21,  # unable to verify the first certificate
    }
)

_PROTOCOL_REASONS = frozenset(
    {
        "UNSUPPORTED_PROTOCOL",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "WRONG_SSL_VERSION",
        "VERSION_TOO_LOW",
        "VERSION_TOO_HIGH",
        "NO_PROTOCOLS_AVAILABLE",
    }
)
_NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL"}
)
_NO_CERT_REASONS = frozenset(
    {"PEER_DID_NOT_RETURN_A_CERTIFICATE", "NO_CERTIFICATE_RETURNED", "CERTIFICATE_REQUIRED"}
)
# asyncio's sslproto aborts a slow handshake with ConnectionAbortedError, not a
# TimeoutError; its message is the only thing that tells the two aborts apart.
_ASYNCIO_HANDSHAKE_TIMEOUT = "handshake is taking longer than"


def _version(value: str, key: str) -> ssl.TLSVersion:
    try:
        return _VERSIONS[value]
    except KeyError:
        raise ConfigError(key, 'must be "1.2" or "1.3"') from None


def _read(path: str | Path, key: str) -> bytes:
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(key, f"file not found: {p}") from None
    except IsADirectoryError:
        raise ConfigError(key, f"is a directory, not a file: {p}") from None
    except OSError as exc:
        raise ConfigError(key, f"cannot read {p}: {exc.strerror}") from None


def _certificates(path: str | Path, key: str) -> list[x509.Certificate]:
    data = _read(path, key)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(key, f"no PEM certificate in {path}") from None


def _check_private_key(path: str | Path, key: str) -> None:
    """Fail early and clearly on a key OpenSSL would reject with "PEM lib".

    An encrypted key is refused here rather than handed to OpenSSL, which would
    otherwise prompt for a pass phrase on the terminal of a server process.
    """
    data = _read(path, key)
    try:
        serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            key, f"{path} is encrypted; billhub needs an unencrypted key (mode 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(key, f"no usable PEM private key in {path}") from None


def _check_ca_bundle(path: str | Path, key: str) -> None:
    """Refuse a bundle that holds an end-entity certificate instead of a CA.

    Putting the peer's own certificate where its CA belongs is the usual mistake; it
    would make every handshake fail with a confusing "unable to get local issuer".
    """
    for cert in _certificates(path, key):
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            continue  # a v1 root: OpenSSL decides
        if not constraints.value.ca:
            raise ConfigError(
                key,
                f"{path} holds an end-entity certificate ({cert.subject.rfc4514_string()}),"
                " not a CA certificate",
            )


def _load_chain(
    ctx: ssl.SSLContext, cert_file: str | Path, key_file: str | Path, prefix: str
) -> None:
    cert_key, key_key = f"{prefix}.cert_file", f"{prefix}.key_file"
    _certificates(cert_file, cert_key)
    _check_private_key(key_file, key_key)
    try:
        # A password callback keeps OpenSSL from ever prompting on a terminal.
        ctx.load_cert_chain(cert_file, key_file, password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(key_key, f"does not match the certificate in {cert_key}") from None
        raise ConfigError(cert_key, f"rejected by OpenSSL: {exc.reason or exc}") from None
    except OSError as exc:
        raise ConfigError(cert_key, f"cannot read: {exc.strerror}") from None


def _load_ca(ctx: ssl.SSLContext, ca_file: str | Path, key: str) -> None:
    _check_ca_bundle(ca_file, key)
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as exc:
        raise ConfigError(key, f"rejected by OpenSSL: {exc.reason or exc}") from None
    except OSError as exc:
        raise ConfigError(key, f"cannot read: {exc.strerror}") from None


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_ciphers(_CIPHERS_TLS12)


def server_context(
    cert_file: str | Path,
    key_file: str | Path,
    client_ca_file: str | Path,
    *,
    min_version: str = "1.2",
    key_prefix: str = "tls",
) -> ssl.SSLContext:
    """Build the hub's server context: mutual TLS 1.2+ (or 1.3 only) against the switch CA.

    The handshake itself enforces the chain and validity period (LINK-SPEC §1); the
    subject is left to :class:`AllowList`. Session tickets are turned off: a link
    lives for days, and a resumed session would skip the certificate check that the
    allow-list and expiry rules rely on.

    Raises :class:`~billhub.errors.ConfigError` naming ``{key_prefix}.cert_file``,
    ``.key_file``, ``.client_ca_file`` or ``.min_version`` with a one-line reason.
    """
    version = _version(min_version, f"{key_prefix}.min_version")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = version
    ctx.verify_mode = ssl.CERT_REQUIRED
    _harden(ctx)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    _load_chain(ctx, cert_file, key_file, key_prefix)
    _load_ca(ctx, client_ca_file, f"{key_prefix}.client_ca_file")
    return ctx


def client_context(
    cert_file: str | Path | None,
    key_file: str | Path | None,
    server_ca_file: str | Path,
    *,
    min_version: str = "1.2",
    max_version: str | None = None,
    key_prefix: str = "tls",
) -> ssl.SSLContext:
    """Build the switch side's context (the simulator, tests): verify the hub, present ours.

    The hub's certificate is checked against ``server_ca_file`` and its name
    (``check_hostname``), as the real switch does, so that a demo catches a wrong
    SAN before production does. ``cert_file=None`` presents no client certificate,
    which only tests want. ``max_version`` pins the protocol, e.g. to exercise TLS
    1.2 against a hub that allows 1.3.

    Raises :class:`~billhub.errors.ConfigError` naming ``{key_prefix}.cert_file``,
    ``.key_file``, ``.server_ca_file``, ``.min_version`` or ``.max_version``.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    ctx.minimum_version = _version(min_version, f"{key_prefix}.min_version")
    if max_version is not None:
        top = _version(max_version, f"{key_prefix}.max_version")
        if top < ctx.minimum_version:
            raise ConfigError(f"{key_prefix}.max_version", "is below min_version")
        ctx.maximum_version = top
    _harden(ctx)
    _load_ca(ctx, server_ca_file, f"{key_prefix}.server_ca_file")
    if (cert_file is None) != (key_file is None):
        missing = "key_file" if key_file is None else "cert_file"
        raise ConfigError(f"{key_prefix}.{missing}", "cert_file and key_file go together")
    if cert_file is not None and key_file is not None:
        _load_chain(ctx, cert_file, key_file, key_prefix)
    return ctx


# RFC 4514 does not allow a space after the separating comma, but people write one.
_SPACE_AFTER_COMMA = re.compile(r"(?<!\\),\s+")


class AllowList:
    """The switch subjects the hub accepts once the handshake has verified the chain.

    Each entry matches a certificate whose subject common name is exactly the entry
    (only when the subject has a single CN, so that a second CN cannot smuggle a
    match), or whose whole subject, as ``cryptography``'s ``Name.rfc4514_string()``
    writes it, is the entry. RFC 4514 lists the most specific attribute first:
    ``CN=switch-1,O=National Switch``. An entry containing ``=`` is read as a
    distinguished name and normalised (attribute names, escaping, a space after a
    comma), so two spellings of one name match alike; values are compared exactly,
    case included. A common name that contains ``=`` must therefore be written as a
    DN with the ``=`` escaped: ``CN=a\\=b``.

    Raises :class:`~billhub.errors.ConfigError` (``tls.allowed_subjects``) for an empty
    list, an empty entry, or an entry with ``=`` that is not a distinguished name.
    """

    def __init__(self, entries: Iterable[str], *, key: str = "tls.allowed_subjects") -> None:
        self._entries: tuple[str, ...] = tuple(entries)
        if not self._entries:
            raise ConfigError(key, "must list at least one subject")
        names: set[str] = set()
        dns: set[str] = set()
        for i, entry in enumerate(self._entries):
            if not entry.strip():
                raise ConfigError(f"{key}[{i}]", "must not be empty")
            if "=" in entry:
                dns.add(_normalise_dn(entry, f"{key}[{i}]"))
            else:
                names.add(entry)
        self._names = frozenset(names)
        self._dns = frozenset(dns)

    @property
    def entries(self) -> tuple[str, ...]:
        """The entries as configured, for a start-up log line."""
        return self._entries

    def allows(self, subject: x509.Name) -> bool:
        """Whether ``subject`` matches an entry; for callers that already parsed it."""
        if subject.rfc4514_string() in self._dns:
            return True
        cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return len(cns) == 1 and cns[0].value in self._names

    def check(self, der: bytes | None) -> str:
        """Return the peer's subject (RFC 4514) if it is allowed, else raise TlsRefused.

        ``der`` is ``ssl_object.getpeercert(binary_form=True)`` after the handshake.
        Raises ``TlsRefused("no_client_certificate")`` for ``None`` (a context that did
        not require one), ``TlsRefused("subject_not_allowed", detail=<subject DN>)``
        for a subject not listed, and ``TlsRefused("certificate_invalid")`` for bytes
        that are not a certificate. The caller closes the connection without reading.
        """
        if der is None:
            raise TlsRefused("no_client_certificate", "the peer sent no certificate")
        try:
            subject = x509.load_der_x509_certificate(der).subject
        except ValueError:
            raise TlsRefused("certificate_invalid", "the peer certificate is not DER") from None
        dn = subject.rfc4514_string()
        if not self.allows(subject):
            raise TlsRefused("subject_not_allowed", dn)
        return dn

    def __repr__(self) -> str:
        return f"AllowList({list(self._entries)!r})"


def _normalise_dn(entry: str, key: str) -> str:
    try:
        name = x509.Name.from_rfc4514_string(_SPACE_AFTER_COMMA.sub(",", entry.strip()))
    except ValueError:
        raise ConfigError(
            key,
            "contains '=' but is not an RFC 4514 distinguished name"
            " (write e.g. CN=switch-1,O=National Switch)",
        ) from None
    return name.rfc4514_string()


def _alert_name(reason: str) -> str:
    # "TLSV1_ALERT_UNKNOWN_CA" -> "unknown ca"; "SSLV3_ALERT_BAD_CERTIFICATE" -> "bad certificate"
    return reason.split("_ALERT_", 1)[1].replace("_", " ").lower()


def refusal_reason(exc: BaseException) -> TlsRefused:
    """Classify why a server-side handshake failed, for the refusal log line and metric.

    Never raises: anything unrecognised is ``handshake_failed`` with the exception's
    type and reason as detail. A :class:`~billhub.errors.TlsRefused` (from
    :meth:`AllowList.check`) is returned unchanged, so a listener can classify every
    failure of "handshake, then allow-list" in one place.
    """
    if isinstance(exc, TlsRefused):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        message = exc.verify_message or str(exc)
        detail = f"{message} (X509 verify code {code})"
        if code in _V_ERR_UNKNOWN_ISSUER:
            return TlsRefused("unknown_ca", f"not signed by the configured switch CA: {detail}")
        if code == _V_ERR_CERT_HAS_EXPIRED:
            return TlsRefused("certificate_expired", detail)
        if code == _V_ERR_CERT_NOT_YET_VALID:
            return TlsRefused("certificate_not_yet_valid", detail)
        return TlsRefused("certificate_invalid", detail)
    if isinstance(exc, ssl.SSLZeroReturnError | ssl.SSLEOFError):
        return TlsRefused("connection_lost", "the peer closed the connection mid-handshake")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _NO_CERT_REASONS:
            return TlsRefused("no_client_certificate", "the peer sent no client certificate")
        if reason in _PROTOCOL_REASONS:
            return TlsRefused(
                "protocol_version", f"no TLS version in common with the peer ({reason})"
            )
        if reason in _NOT_TLS_REASONS:
            return TlsRefused("handshake_failed", f"the peer does not speak TLS ({reason})")
        if "_ALERT_" in reason:
            return TlsRefused(
                "handshake_failed",
                f"the peer aborted the handshake with alert '{_alert_name(reason)}'"
                " (it may not trust the hub's certificate)",
            )
        return TlsRefused("handshake_failed", reason or str(exc) or type(exc).__name__)
    if isinstance(exc, TimeoutError):
        return TlsRefused("handshake_timeout", "the handshake did not finish in time")
    if isinstance(exc, ConnectionAbortedError) and _ASYNCIO_HANDSHAKE_TIMEOUT in str(exc):
        return TlsRefused("handshake_timeout", str(exc))
    if isinstance(exc, ConnectionError | EOFError):
        return TlsRefused(
            "connection_lost", f"the peer went away mid-handshake ({type(exc).__name__})"
        )
    if isinstance(exc, OSError):
        why = exc.strerror or str(exc) or type(exc).__name__
        return TlsRefused("connection_lost", f"socket error mid-handshake: {why}")
    return TlsRefused("handshake_failed", f"{type(exc).__name__}: {exc}")
