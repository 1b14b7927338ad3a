"""The image's layout built without Docker, and the hub run in it as the container runs it.

What the Dockerfile does, step by step, on this machine: a clean Python environment
gets exactly the locked versions (``--no-deps -r requirements.lock``), then billhub from
only the paths the Dockerfile copies, then ``pip check``. Then ``serve`` runs from that
environment with the container's configuration (``docker/billhub.toml``) and its
absolute paths moved under a temporary root: it must keep its state in the volume's
folder, write nothing on the configuration mount, answer the HEALTHCHECK and listen for
the admin port on every interface (what ``-p 9100:9100`` needs).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MOUNTS = ("/etc/billhub", "/var/lib/billhub", "/srv/exchange")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sh(*args: str | Path, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=600, check=False, **kw
    )
    assert out.returncode == 0, f"{' '.join(map(str, args))}\n{out.stdout}\n{out.stderr}"
    return out


def listening_on_all_interfaces(port: int) -> bool:
    """Whether a socket listens on 0.0.0.0:port (Linux's table of TCP sockets)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and local == f"00000000:{port:04X}":
            return True
    return False


@pytest.mark.slow
def test_the_image_layout_serves_with_the_containers_paths(tmp_path: Path) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text("utf-8")
    # 1. The build context as the Dockerfile copies it, and nothing else.
    context = tmp_path / "opt" / "billhub"
    context.mkdir(parents=True)
    for line in re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, re.M):
        for src in line.split():
            if (ROOT / src).is_dir():
                shutil.copytree(
                    ROOT / src, context / src, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy(ROOT / src, context / src)
    # 2. A clean environment, the locked versions, billhub without resolving, pip check.
    prefix = tmp_path / "image"
    sh(sys.executable, "-m", "venv", prefix)
    pip = [prefix / "bin" / "python", "-m", "pip", "-q"]
    sh(*pip, "install", "--no-deps", "-r", context / "requirements.lock")
    sh(*pip, "install", "--no-deps", context)
    sh(*pip, "check")
    billhub = prefix / "bin" / "billhub"

    # 3. The container's file system under a temporary root.
    root = tmp_path / "root"
    link_port, admin_port = free_port(), free_port()
    config_text = (ROOT / "docker" / "billhub.toml").read_text("utf-8")
    for mount in MOUNTS:
        (root / mount.lstrip("/")).mkdir(parents=True)
        config_text = config_text.replace(f'"{mount}/', f'"{root}{mount}/')
    config_text = re.sub(r"^port = 8583$", f"port = {link_port}", config_text, flags=re.M)
    config_text = re.sub(r"^port = 9100$", f"port = {admin_port}", config_text, flags=re.M)
    assert str(tmp_path) in config_text and "port = 8583" not in config_text
    etc, state = root / "etc" / "billhub", root / "var" / "lib" / "billhub"
    (etc / "billhub.toml").write_text(config_text, "utf-8")
    sh(billhub, "certs", "init", etc / "certs")
    for folder in ("inbox", "outbox"):
        (root / "srv" / "exchange" / "0020" / folder).mkdir(parents=True)
    mounted = sorted(p.relative_to(etc) for p in etc.rglob("*"))

    # 4. The image's CMD, from its WORKDIR, with the secret in the environment.
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])$", dockerfile, re.M)[1])  # type: ignore[index]
    assert cmd[:2] == ["serve", "--config"]
    proc = subprocess.Popen(
        [billhub, "serve", "--config", str(root) + cmd[2]],
        cwd=state,
        env={"PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "BILLER_0010_TOKEN": "t"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        event: dict[str, object] = {}
        while time.monotonic() < deadline and event.get("event") != "hub_listening":
            line = proc.stdout.readline()
            if not line:
                break
            event = json.loads(line)
        assert event.get("event") == "hub_listening", proc.stderr.read() if proc.stderr else ""
        assert event["admin_port"] == admin_port
        health = re.search(r'CMD \["billhub", "health", "--url", "([^"]+)"\]', dockerfile)
        assert health
        url = health[1].replace(":9100/", f":{admin_port}/")
        sh(billhub, "health", "--url", url)
        assert listening_on_all_interfaces(admin_port), "the admin port is not reachable"
        assert listening_on_all_interfaces(link_port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert (state / "billhub.db").is_file(), "the journal is in the volume"
    assert sorted(p.relative_to(etc) for p in etc.rglob("*")) == mounted, (
        "the hub wrote on the read-only configuration mount"
    )
