"""Shared fixtures: a throw-away PKI made with billhub's own dev-PKI code.

The ``pki`` fixture is session-scoped because every TLS test wants the same
certificates and minting them once keeps the suite fast; tests must treat the files
as read-only.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from billhub.transport.certs import (
    CertificateObj,
    PrivateKey,
    init_dev_certs,
    issue_cert,
    make_ca,
    write_pem,
)


@dataclass(frozen=True)
class Pki:
    """Paths of a development PKI plus the bad certificates the refusal tests need.

    ``switch_*`` is the good client (CN ``switch-1``, O ``National Switch``) signed by
    the switch CA the hub trusts; ``rogue_*`` is a client with the same subject signed
    by a CA the hub does not trust; ``expired_*``/``not_yet_valid_*`` come from the
    switch CA but outside their validity; ``intruder_*`` is valid and from the switch
    CA, but its CN (``intruder``) is not on any allow-list.
    """

    directory: Path
    switch_ca_cert: Path
    switch_ca_key: Path
    hub_ca_cert: Path
    hub_ca_key: Path
    hub_cert: Path
    hub_key: Path
    switch_cert: Path
    switch_key: Path
    rogue_ca_cert: Path
    rogue_ca_key: Path
    rogue_cert: Path
    rogue_key: Path
    expired_cert: Path
    expired_key: Path
    not_yet_valid_cert: Path
    not_yet_valid_key: Path
    intruder_cert: Path
    intruder_key: Path


def make_pki(directory: Path) -> Pki:
    """Build the PKI in ``directory``; usable outside pytest (benchmarks, demos)."""
    dev = init_dev_certs(directory)
    switch_ca = load_ca(dev["switch_ca_cert"], dev["switch_ca_key"])
    now = datetime.now(UTC)
    extra: dict[str, Path] = {}

    rogue_ca, rogue_ca_key = make_ca("rogue CA")
    extra["rogue_ca_cert"] = write_pem(directory / "rogue-ca.crt", rogue_ca)
    extra["rogue_ca_key"] = write_pem(directory / "rogue-ca.key", rogue_ca_key)
    made = {
        # Same subject as the real switch: only the issuer is wrong.
        "rogue": issue_cert(
            rogue_ca, rogue_ca_key, "switch-1", server=False, organization="National Switch"
        ),
        "expired": issue_cert(
            *switch_ca,
            "switch-1",
            server=False,
            organization="National Switch",
            not_before=now - timedelta(days=30),
            not_after=now - timedelta(days=1),
        ),
        "not_yet_valid": issue_cert(
            *switch_ca,
            "switch-1",
            server=False,
            organization="National Switch",
            not_before=now + timedelta(days=1),
            not_after=now + timedelta(days=30),
        ),
        "intruder": issue_cert(*switch_ca, "intruder", server=False),
    }
    for name, (cert, key) in made.items():
        stem = name.replace("_", "-")
        extra[f"{name}_cert"] = write_pem(directory / f"{stem}.crt", cert)
        extra[f"{name}_key"] = write_pem(directory / f"{stem}.key", key)
    return Pki(directory=directory, **dev, **extra)


def load_ca(cert_file: Path, key_file: Path) -> tuple[CertificateObj, PrivateKey]:
    """Load a CA written by init_dev_certs, to sign more certificates with it."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``tmpfs(size_mb, ro=False)``: a fresh tmpfs mounted under ``tmp_path``, unmounted
    afterwards: a real disk that fills up (or refuses writes) for the journal tests.

    Needs root, as CI has; elsewhere the test skips saying so (in CI it fails).
    """
    mounted: list[Path] = []

    def mount(size_mb: int, *, ro: bool = False) -> Path:
        mnt = tmp_path / f"disk{len(mounted)}"
        mnt.mkdir()
        opts = f"size={size_mb}m" + (",ro" if ro else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            message = f"cannot mount a tmpfs (run as root): {done.stderr.strip()}"
            if os.environ.get("CI"):
                pytest.fail(f"{message}; CI is set, so this is a failure, not a skip")
            pytest.skip(message)
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_disk(path: Path) -> int:
    """Write zeros to ``path`` until its disk is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return written
                chunk = chunk[: len(chunk) // 2]


def _service_missing(what: str, start: str) -> None:
    """Skip (outside CI) or fail (in CI) a test whose database server is not up."""
    message = f"{what} is not reachable; start it with: {start}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so this is a failure, not a skip")
    pytest.skip(message)


def _psql(sql: str, database: str = "test") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-qAtc",
            sql,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture
def pg_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """A DSN of a fresh, empty PostgreSQL database on the machine's server, dropped after.

    Each test gets its own database, so tests (and several checkouts running their suites
    at once) never see each other's rows or schema versions.
    """
    name = f"bh_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**10}"
    made = _psql(f'CREATE DATABASE "{name}"')
    if made.returncode != 0:
        _service_missing(
            f"PostgreSQL at 127.0.0.1:5432 ({made.stderr.strip()})",
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        )
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _mariadb(sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mariadb", "-h", "127.0.0.1", "-P", "3306", "-u", "root", "-e", sql],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture
def mariadb_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """A DSN of a fresh, empty MariaDB database on the machine's server, dropped after."""
    name = f"bh_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**10}"
    made = _mariadb(f"CREATE DATABASE `{name}`")
    if made.returncode != 0:
        _service_missing(
            f"MariaDB at 127.0.0.1:3306 ({made.stderr.strip()})",
            "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
        )
    try:
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        _mariadb(f"DROP DATABASE IF EXISTS `{name}`")
