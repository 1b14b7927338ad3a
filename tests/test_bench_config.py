"""The benchmarks' one configuration builder writes what the hub accepts.

``bench/harness.py`` drives the hub only through its TOML; if ``config.py`` changes
a key, the benches would fail minutes into a run. This catches it in CI instead.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from billhub.config import parse_config
from billhub.errors import ConfigError

_spec = importlib.util.spec_from_file_location(
    "bench_harness", Path(__file__).resolve().parent.parent / "bench" / "harness.py"
)
assert _spec is not None and _spec.loader is not None
harness = importlib.util.module_from_spec(_spec)
sys.modules["bench_harness"] = harness  # dataclasses look their module up
_spec.loader.exec_module(harness)  # by path: bench/ is not put on sys.path for every test


def _certs(tmp: Path) -> Path:
    for name in ("hub.crt", "hub.key", "switch-ca.crt"):
        (tmp / name).write_text("")
    return tmp


def test_every_biller_kind_and_journal_is_a_valid_configuration(tmp_path: Path) -> None:
    certs = _certs(tmp_path)
    billers = [
        harness.rest_biller("100001", "Damascus", "http://127.0.0.1:1", "t", max_concurrency=8),
        harness.batch_biller("100002", "Rural", tmp_path / "in", tmp_path / "out"),
        harness.database_biller("100003", "Aleppo", "postgresql://u@h/db"),
    ]
    sqlite = harness.HubConfig(certs, tmp_path / "j.db", billers, admin_port=0, metrics=False)
    cfg = parse_config(sqlite.toml(), base_dir=tmp_path, env={})
    assert [b.kind for b in cfg.billers] == ["rest", "batch", "database"]
    assert cfg.journal.kind == "sqlite" and cfg.journal.path == tmp_path / "j.db"
    assert cfg.admin.port == 0 and not cfg.admin.metrics
    assert cfg.billers[0].rest is not None and cfg.billers[0].rest.base_url.endswith(":1")

    pg = harness.HubConfig(certs, "postgresql://u@h/j", billers, port=8583, reuse_port=True)
    cfg = parse_config(pg.toml(), base_dir=tmp_path, env={})
    assert cfg.journal.kind == "postgresql" and cfg.link.reuse_port and cfg.link.port == 8583
    assert not cfg.admin.enabled


def test_reuse_port_on_sqlite_is_what_the_hub_refuses(tmp_path: Path) -> None:
    bad: Any = harness.HubConfig(_certs(tmp_path), tmp_path / "j.db", reuse_port=True)
    with pytest.raises(ConfigError, match="reuse_port"):
        parse_config(bad.toml(), base_dir=tmp_path, env={})


BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if "if __name__" in p.read_text("utf-8"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_starts_and_explains_itself(script: str) -> None:
    """Each bench script imports the shared helpers it names: a moved helper fails here,
    not minutes into someone's benchmark run."""
    import subprocess

    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
