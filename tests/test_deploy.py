"""The Kubernetes manifest names what billhub serves: its ports, probes and journal.

A manifest that parses but probes a path the hub does not serve, or a port its
configuration does not open, fails only in production; here it fails first. The
configuration it ships is validated as ``serve`` would, then run (on free ports,
the test PKI and a test database) to see the probes answer as a kubelet would.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from billhub.app.hub import build_hub
from billhub.config import parse_config

MANIFEST = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes" / "billhub.yaml"
ENV = {"JOURNAL_PASSWORD": "secret", "DAMASCUS_TOKEN": "token"}


def _docs() -> dict[tuple[str, str], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text("utf-8")) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _toml() -> str:
    text: str = _docs()[("ConfigMap", "billhub-config")]["data"]["billhub.toml"]
    return text


def _with_test_pki(text: str, pki: Any) -> str:
    """The shipped configuration with the test PKI where the pod mounts its Secret."""
    text = text.replace("/etc/billhub/tls/hub.crt", str(pki.hub_cert))
    text = text.replace("/etc/billhub/tls/hub.key", str(pki.hub_key))
    return text.replace("/etc/billhub/tls/switch-ca.crt", str(pki.switch_ca_cert))


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, dict(json.load(r))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.load(exc))


def test_the_manifest_runs_two_instances_probed_where_the_hub_listens(pki: Any) -> None:
    docs = _docs()
    config = parse_config(_with_test_pki(_toml(), pki), base_dir=Path("/etc/billhub"), env=ENV)
    assert config.journal.kind == "postgresql"
    deployment = docs[("Deployment", "billhub")]
    assert deployment["spec"]["replicas"] >= 2, "one instance is a single point of failure"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"link": config.link.port, "admin": config.admin.port}
    assert config.admin.host == "0.0.0.0", "a kubelet cannot probe a loopback admin port"
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert (ready["path"], ready["port"]) == ("/readyz", "admin")
    assert (live["path"], live["port"]) == ("/healthz", "admin")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > config.link.shutdown_grace_s, "payments in flight finish before the kill"
    # The switch's Service reaches the link port; the DSN names the database's Service.
    link = docs[("Service", "billhub-link")]
    assert link["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in link["spec"]["ports"]] == ["link"]
    assert config.journal.dsn is not None
    db_host = urlsplit(config.journal.dsn).hostname
    db = docs[("Service", str(db_host))]
    assert db["spec"]["ports"][0]["port"] == (urlsplit(config.journal.dsn).port or 5432)
    env = {e["name"] for e in container["env"]}
    assert set(re.findall(r"\$\{(\w+)\}", _toml())) <= env, "every ${NAME} is set in the pod"


async def test_the_probed_paths_answer_as_a_kubelet_expects(pki: Any, pg_dsn: str) -> None:
    """The shipped configuration run for real (free ports, test PKI, test database): an
    idle instance with no switch link is ready, so the Service sends it a first link."""
    text = _toml()
    text = re.sub(r"(?m)^port = \d+$", "port = 0", text)
    text = re.sub(r'(?m)^dsn = ".*"$', f'dsn = "{pg_dsn}"', text)
    text = re.sub(r'(?m)^host = "0.0.0.0"$', 'host = "127.0.0.1"', text)
    hub = build_hub(parse_config(_with_test_pki(text, pki), base_dir=Path("."), env=ENV))
    await hub.start()
    try:
        base = f"http://127.0.0.1:{hub.admin_port}"
        assert (await asyncio.to_thread(_get, f"{base}/healthz"))[0] == 200
        status, body = await asyncio.to_thread(_get, f"{base}/readyz")
        assert status == 200, body
    finally:
        await hub.stop(1.0)
