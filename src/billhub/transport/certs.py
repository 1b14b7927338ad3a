"""A development PKI: the certificates a hub and a switch simulator need for mutual TLS.

Production certificates come from the switch operator's and the ministry's CAs (see
``certs.example/README.md``); this module exists so that a developer, the test suite
and the demo can run the real mutual-TLS path, with no ``openssl`` command lines to get
wrong. Two separate CAs are made on purpose, because that is how production is wired:
the *switch CA* signs the switch's client certificate and is what the hub trusts
(``tls.client_ca_file``); the *hub CA* signs the hub's server certificate and is what
the switch trusts. Keeping them apart in development catches a configuration that
points at the wrong bundle.

Keys are EC P-256: generating them takes microseconds, so tests can mint certificates
freely. Private keys are written unencrypted with mode 0600 and are never logged.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from billhub.errors import ConfigError

__all__ = [
    "CertificateObj",
    "PrivateKey",
    "init_dev_certs",
    "issue_cert",
    "make_ca",
    "write_pem",
]

CertificateObj = x509.Certificate
PrivateKey = ec.EllipticCurvePrivateKey

# A certificate that starts "now" is refused by a peer whose clock is a few seconds
# behind; back-dating by a few minutes avoids that flake without weakening anything.
_BACKDATE = timedelta(minutes=5)

#: Files made by :func:`init_dev_certs`, by the key of the dict it returns.
DEV_FILES: dict[str, str] = {
    "switch_ca_cert": "switch-ca.crt",
    "switch_ca_key": "switch-ca.key",
    "hub_ca_cert": "hub-ca.crt",
    "hub_ca_key": "hub-ca.key",
    "hub_cert": "hub.crt",
    "hub_key": "hub.key",
    "switch_cert": "switch.crt",
    "switch_key": "switch.key",
}


def _new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def make_ca(
    common_name: str, *, days: int = 3650, organization: str | None = None
) -> tuple[CertificateObj, PrivateKey]:
    """Make a self-signed CA that may sign end-entity certificates only.

    ``path_length=0`` keeps a leaked development CA from minting intermediates, and the
    key-usage and key-identifier extensions are present and critical where RFC 5280
    wants them, so that strict verifiers (Python 3.13's default
    ``VERIFY_X509_STRICT``) accept the chain as well as OpenSSL's defaults do.
    """
    key = _new_key()
    name = _name(common_name, organization)
    now = datetime.now(UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_cert(
    ca_cert: CertificateObj,
    ca_key: PrivateKey,
    common_name: str,
    *,
    server: bool,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    days: int = 825,
    dns_names: Sequence[str] | None = None,
    ip_addresses: Sequence[str] | None = None,
    organization: str | None = None,
) -> tuple[CertificateObj, PrivateKey]:
    """Issue an end-entity certificate for one side of the link.

    ``server=True`` gives the serverAuth extended key usage and a subject alternative
    name (``localhost`` and ``127.0.0.1`` unless ``dns_names``/``ip_addresses`` say
    otherwise), because a client with ``check_hostname`` matches the SAN, never the CN.
    ``server=False`` gives clientAuth and, unless names are passed, no SAN: the hub
    identifies the switch by its subject, through the allow-list.

    ``not_before``/``not_after`` default to a few minutes ago and ``days`` from now;
    pass them to make expired or not-yet-valid certificates for tests. Raises
    ``ValueError`` for an address that is not an IP address.
    """
    key = _new_key()
    now = datetime.now(UTC)
    start = not_before if not_before is not None else now - _BACKDATE
    end = not_after if not_after is not None else now + timedelta(days=days)
    if dns_names is None:
        dns_names = ("localhost",) if server else ()
    if ip_addresses is None:
        ip_addresses = ("127.0.0.1",) if server else ()
    public = key.public_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def write_pem(path: str | Path, obj: CertificateObj | PrivateKey) -> Path:
    """Write a certificate (mode 0644) or an unencrypted PKCS#8 key (mode 0600) as PEM.

    The key file is created with its final mode, and its mode is forced again when
    it already existed, so the key is never readable by others, not even briefly.
    Returns the path written.
    """
    p = Path(path)
    if isinstance(obj, x509.Certificate):
        data = obj.public_bytes(serialization.Encoding.PEM)
        mode = 0o644
    else:
        data = obj.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        mode = 0o600
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
    finally:
        os.close(fd)
    return p


def init_dev_certs(
    directory: Path,
    *,
    hub_name: str = "billhub-hub",
    switch_name: str = "switch-1",
    days: int = 825,
    force: bool = False,
) -> dict[str, Path]:
    """Create the development PKI in ``directory`` and return its files by role.

    The keys of the result are those of :data:`DEV_FILES` (``hub_cert``,
    ``switch_ca_cert``, ...). End-entity certificates are valid for ``days``; the CAs
    for ten years, or ``days`` if longer. Existing files are not overwritten unless
    ``force`` is true, because silently replacing a CA invalidates every certificate
    it signed: raises :class:`~billhub.errors.ConfigError` (key ``certs``) before
    writing anything.
    """
    directory = Path(directory)
    paths = {role: directory / name for role, name in DEV_FILES.items()}
    existing = [p.name for p in paths.values() if p.exists()]
    if existing and not force:
        raise ConfigError(
            "certs",
            f"{directory} already holds {', '.join(existing)}; use --force to replace them",
        )
    directory.mkdir(parents=True, exist_ok=True)

    ca_days = max(3650, days)
    switch_ca, switch_ca_key = make_ca("billhub dev switch CA", days=ca_days)
    hub_ca, hub_ca_key = make_ca("billhub dev hub CA", days=ca_days)
    hub, hub_key = issue_cert(hub_ca, hub_ca_key, hub_name, server=True, days=days)
    switch, switch_key = issue_cert(
        switch_ca,
        switch_ca_key,
        switch_name,
        server=False,
        days=days,
        organization="National Switch",
    )
    objects: dict[str, CertificateObj | PrivateKey] = {
        "switch_ca_cert": switch_ca,
        "switch_ca_key": switch_ca_key,
        "hub_ca_cert": hub_ca,
        "hub_ca_key": hub_ca_key,
        "hub_cert": hub,
        "hub_key": hub_key,
        "switch_cert": switch,
        "switch_key": switch_key,
    }
    for role, obj in objects.items():
        write_pem(paths[role], obj)
    return paths
