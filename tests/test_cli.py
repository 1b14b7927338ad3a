"""The hub as an operator runs it: real processes, real signals, real files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tests.hubharness import base_config

from billhub.iso8583.spec import load_spec
from billhub.iso8583.table import field_table

ROOT = Path(__file__).resolve().parent.parent
BILLHUB = [sys.executable, "-m", "billhub.cli"]


def run(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [*BILLHUB, *args], check=False, capture_output=True, text=True, timeout=timeout, **kw
    )


def write_config(tmp: Path, pki, extra: str = "") -> Path:  # type: ignore[no-untyped-def]
    cfg = tmp / "billhub.toml"
    text = base_config(pki, tmp / "journal.db") + '[log]\nformat = "json"\nlevel = "info"\n'
    cfg.write_text(text + extra, "utf-8")
    return cfg


def start_serve(cfg: Path) -> tuple[subprocess.Popen[str], int, int]:
    proc = subprocess.Popen(
        [*BILLHUB, "serve", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        if event["event"] == "hub_listening":
            return proc, int(event["port"]), int(event["admin_port"])
    proc.kill()
    raise AssertionError(f"hub did not start: {proc.stderr.read() if proc.stderr else ''}")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[link]\nport = 'x'\n", "link.port"),
        ("[link]\nidle_interva_s = 3\n", "link.idle_interva_s"),
        ("[tls]\ncert_file = '/nonexistent/hub.crt'\n", "tls"),
    ],
)
def test_bad_configuration_exits_with_one_clear_line(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text, "utf-8")
    out = run("serve", "--config", str(cfg))
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert key in lines[0]
    assert "Traceback" not in out.stderr + out.stdout


def test_missing_configuration_file(tmp_path: Path) -> None:
    out = run("serve", "--config", str(tmp_path / "nope.toml"))
    assert out.returncode == 1
    assert "not found" in out.stderr and "Traceback" not in out.stderr


def test_serve_answers_the_switch_masks_accounts_and_stops_on_sigterm(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    proc, port, admin = start_serve(write_config(tmp_path, pki))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=5) as r:
            assert json.load(r)["status"] == "ok"
        base = [
            "switch",
            "--port",
            str(port),
            "--cert",
            str(pki.switch_cert),
            "--key",
            str(pki.switch_key),
            "--ca",
            str(pki.hub_ca_cert),
            "--json",
        ]
        echo = run(*base, "echo")
        assert echo.returncode == 0, echo.stderr
        answers = [json.loads(line) for line in echo.stdout.splitlines()]
        assert [(a["mti"], a["code"]) for a in answers] == [("0810", "00"), ("0810", "00")]
        inq = run(*base, "inquiry", "--biller", "100001", "--account", "0100987654")
        assert inq.returncode == 0, inq.stderr
        assert json.loads(inq.stdout.splitlines()[-1])["code"] == "92", "no biller configured"
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    names = [e["event"] for e in events]
    assert "shutting_down" in names and names[-1] == "stopped"
    msgs = [e for e in events if e["event"] == "message" and e.get("processing_code") == "310000"]
    assert msgs and msgs[0]["account"] == "01****7654" and msgs[0]["response_code"] == "92"
    assert "0100987654" not in stdout + stderr, "a full account number reached the log"
    assert "Traceback" not in stderr


def test_certs_init_makes_the_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = run("certs", "init", str(tmp_path / "c"))
    assert out.returncode == 0, out.stderr
    for name in ("hub.crt", "hub.key", "switch.crt", "switch.key", "switch-ca.crt", "hub-ca.crt"):
        assert (tmp_path / "c" / name).exists()
    assert oct((tmp_path / "c" / "hub.key").stat().st_mode & 0o777) == "0o600"
    again = run("certs", "init", str(tmp_path / "c"))
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_switch_cli_reports_an_unreachable_hub_in_one_line(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    out = run(
        "switch",
        "--port",
        "1",
        "--cert",
        str(pki.switch_cert),
        "--key",
        str(pki.switch_key),
        "--ca",
        str(pki.hub_ca_cert),
        "echo",
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_field_table_is_generated_from_the_spec_file() -> None:
    committed = (ROOT / "specs" / "link-v1-fields.md").read_text("utf-8")
    assert committed == field_table(load_spec()), (
        "run: billhub spec table > specs/link-v1-fields.md"
    )
    assert (ROOT / "specs" / "link-v1.toml").resolve() == (
        ROOT / "src" / "billhub" / "iso8583" / "specs" / "link-v1.toml"
    ).resolve(), "specs/ holds the very file the codec loads"


def test_demo_runs_on_a_fresh_folder(tmp_path: Path) -> None:
    out = run("demo", "--dir", str(tmp_path / "demo"), timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert re.search(r"sign-on\s+0800\s+0810\s+00", text)
    assert re.search(r"repeat of that payment \(0201\)\s+0201\s+0210\s+00 .*\(same answer\)", text)
    assert re.search(r"reversal of that payment \(0420\)\s+0420\s+0430\s+00 .*'cancelled'", text)
    assert re.search(r"payment, biller times out\s+0200\s+0210\s+91", text)
    assert re.search(
        r"resolver: the timed-out payment\s+cancelled; biller now says 'cancelled'", text
    )
    assert re.search(r"cutover to \d{4}\s+0800\s+0810\s+00", text)
    files = list((tmp_path / "demo" / "rural-damascus" / "outbox").glob("payments-100002-*.csv"))
    assert len(files) == 1
    trailer = files[0].read_text("utf-8").splitlines()[-1].split(",")
    rows = files[0].read_text("utf-8").splitlines()[1:-1]
    assert trailer[0] == "TOTAL" and int(trailer[1]) == len(rows) == 1
    assert int(trailer[2]) == sum(int(r.split(",")[4]) for r in rows)
    assert "Traceback" not in out.stderr
    # The citizen web service: its address, requests of each type, a user per company.
    assert re.search(r"citizen web service:\s+http://127\.0\.0\.1:\d+/", text)
    tickets = re.findall(r"(BH-[A-Z0-9]{4}-[A-Z0-9]{4})\s+(\w+)\s+(\w+)", text)
    assert sorted({kind for _, kind, _ in tickets}) == [
        "correction",
        "installment",
        "service_complaint",
        "transaction_complaint",
    ]
    # The "paid but still shown as due" about the demo's own payment is answered at once.
    assert ("transaction_complaint", "resolved") in {(k, st) for _, k, st in tickets}
    assert re.search(r"clerk-100001\s+clerk\s+100001\s+password \S{12,}", text)
    assert re.search(r"clerk-100002\s+clerk\s+100002\s+password \S{12,}", text)


def test_dockerfile_copies_only_paths_that_exist() -> None:
    text = (ROOT / "Dockerfile").read_text("utf-8")
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.M)
    assert copies
    for line in copies:
        for src in line.split():
            assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is missing"
    assert re.search(r"^USER\s+(?!root)\S+", text, re.M), "the image runs as a non-root user"
    assert "HEALTHCHECK" in text and re.search(r"^ENTRYPOINT\s+\[\"billhub\"\]", text, re.M)
    assert os.path.exists(ROOT / "pyproject.toml")


def test_dockerfile_state_volume_ports_pinned_base_and_locked_versions() -> None:
    """The image as operators run it: what its comment promises is what it declares."""
    text = (ROOT / "Dockerfile").read_text("utf-8")
    base = re.search(r"^FROM\s+(\S+)", text, re.M)
    assert base and re.fullmatch(
        r"[\w./-]+(:\d+\.\d+\.\d+[\w.-]*|@sha256:[0-9a-f]{64})", base[1]
    ), f"base image {base and base[1]} is not pinned to an exact version or digest"
    volume = re.search(r"^VOLUME\s+\[\"([^\"]+)\"\]", text, re.M)
    assert volume and volume[1] == "/var/lib/billhub"
    assert re.search(r"^WORKDIR\s+/var/lib/billhub", text, re.M)
    assert re.search(r"^RUN pip install --no-deps -r requirements\.lock", text, re.M)
    assert "pip check" in text
    cmd = re.search(r'^CMD\s+\["serve", "--config", "([^"]+)"\]', text, re.M)
    assert cmd and cmd[1] == "/etc/billhub/billhub.toml"
    assert "/etc/billhub:ro" in text and "docker/billhub.toml" in text

    # The container's configuration: absolute paths, state in the volume, admin reachable.
    raw = (ROOT / "docker" / "billhub.toml").read_text("utf-8")
    for value in re.findall(r'(?:path|_file|inbox|outbox)\s*=\s*"([^"]+)"', raw):
        assert value.startswith("/"), f"docker/billhub.toml: {value} is relative"
    assert re.search(r'\[admin\]\s*(?:#.*\n)*host = "0\.0\.0\.0"', raw)
    assert 'path = "/var/lib/billhub/billhub.db"' in raw
    exposed = set(re.findall(r"^EXPOSE\s+(.+)$", text, re.M)[0].split())
    assert {"8583", "9100"} <= exposed
    assert "http://127.0.0.1:9100/healthz" in text

    # The Compose example mounts the same places and publishes the same ports.
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text("utf-8"))
    svc = compose["services"]["billhub"]
    targets = {v.split(":")[1] for v in svc["volumes"]}
    assert {"/etc/billhub", "/var/lib/billhub", "/srv/exchange"} <= targets
    assert any(v.endswith(":/etc/billhub:ro") for v in svc["volumes"])
    assert {p.rsplit(":", 1)[1] for p in svc["ports"]} == {"8583", "9100"}
    assert "billhub-state" in compose["volumes"]

    ignored = (ROOT / ".dockerignore").read_text("utf-8").split()
    assert {".git", ".venv", "certs", "*.key", "billhub.toml", "*.db"} <= set(ignored)


def test_gitignore_covers_what_a_hub_in_the_repository_root_writes() -> None:
    listed = subprocess.run(
        [
            "git",
            "check-ignore",
            "--no-index",
            "billhub.toml",
            "billhub.db",
            "billhub.db-wal",
            "exchange/0020/inbox/x.csv",
            "reports/a.html",
            "certs/hub.key",
            "demo-run/journal.db",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert len(listed) == 7, listed


def test_requirements_lock_belongs_to_pyproject(tmp_path: Path) -> None:
    check = [sys.executable, str(ROOT / ".ci" / "lock.py"), "--check"]
    ok = subprocess.run(check, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    # A copy whose pyproject gained a dependency: the check names the problem.
    (tmp_path / ".ci").mkdir()
    for name in (".ci/lock.py", "requirements.lock", "pyproject.toml"):
        (tmp_path / name).write_text((ROOT / name).read_text("utf-8"), "utf-8")
    py = tmp_path / "pyproject.toml"
    py.write_text(
        py.read_text("utf-8").replace('"asyncpg>=0.30,<1",', '"asyncpg>=0.30,<1",\n  "rich>=13",'),
        "utf-8",
    )
    stale = subprocess.run(
        [sys.executable, str(tmp_path / ".ci" / "lock.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert stale.returncode == 1
    assert "rich is not pinned" in stale.stderr and "changed since" in stale.stderr
