"""A PostgreSQL cluster of the test's own, to stop and cut: never the shared server.

``initdb`` in a temporary folder owned by the ``postgres`` user, a free loopback
port, the socket in that folder, started and stopped with ``pg_ctl``. A test may
stop it (``immediate``: a crash, as a failed-over primary looks to its clients),
start it again, and terminate its backends; nothing else on the machine notices.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@dataclass
class PrivatePg:
    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        done = _as_postgres(
            BIN / "pg_ctl", "-D", self.data, "-l", self.directory / "server.log",
            "-o", options, "-w", "start",
        )  # fmt: skip
        if done.returncode != 0:
            log = (self.directory / "server.log").read_text()[-1500:]
            raise AssertionError(f"private PostgreSQL did not start: {done.stderr}{log}")

    def stop(self, mode: str = "immediate") -> None:
        _as_postgres(BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def sql(self, statement: str, database: str = "postgres") -> str:
        done = _as_postgres(
            "psql",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
            "-v", "ON_ERROR_STOP=1", "-qAtc", statement,
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()


@pytest.fixture
def private_pg() -> Iterator[PrivatePg]:
    if not (BIN / "initdb").exists() or shutil.which("runuser") is None:
        message = f"no PostgreSQL server binaries in {BIN} (apt-get install postgresql-15)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    directory = Path(tempfile.mkdtemp(prefix="billhub-pg-"))
    shutil.chown(directory, "postgres", "postgres")
    pg = PrivatePg(directory, _free_port())
    made = _as_postgres(
        BIN / "initdb", "-D", pg.data, "-U", "postgres", "-A", "trust", "--no-sync",
        timeout=120,
    )  # fmt: skip
    if made.returncode != 0:
        raise AssertionError(f"initdb failed: {made.stderr}")
    pg.start()
    try:
        pg.sql("CREATE DATABASE billhub")
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(directory, ignore_errors=True)
