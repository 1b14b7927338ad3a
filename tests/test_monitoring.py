"""The shipped dashboard and alert rules against what the hub really exports.

- every metric and label the Grafana dashboard and the Prometheus rules (and the
  rules' unit tests) reference is exported by :class:`billhub.observability.metrics.Metrics`;
- ``promtool check rules`` and ``promtool test rules`` pass, and every alert has a
  unit test in which it fires;
- a real Prometheus (Debian's ``prometheus``) scrapes a hub on loopback, loads the
  rules without error, answers a rate of the hub's counters and evaluates every
  dashboard query.

Without promtool/prometheus these tests skip, except under CI (env ``CI`` set), where
a missing binary is a failure: ``.ci/run`` installs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.txharness import REST, World, find, start_world

from billhub.iso8583.message import Message
from billhub.iso8583.spec import load_spec
from billhub.link.facts import EchoRoundTrip, Exchanged, LinkClosed, LinkInfo
from billhub.observability.metrics import (
    BILLER_OPERATIONS,
    BILLER_OUTCOMES,
    JOURNAL_FAILURES,
    METRICS,
    Metrics,
)
from billhub.observability.webmetrics import WebMetrics
from billhub.simulator import messages as m
from billhub.transport.tls import REFUSAL_REASONS

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "observability" / "grafana" / "billhub-dashboard.json"
RULES = ROOT / "observability" / "prometheus" / "billhub-rules.yml"
RULES_TEST = ROOT / "observability" / "prometheus" / "billhub-rules-test.yml"

SPEC = load_spec(None).rules
KNOWN_VALUES: dict[str, set[str]] = {
    "kind": {
        *SPEC.processing_codes.values(),
        *SPEC.network_codes.values(),
        "reversal",
        "reconciliation",
        "network_other",
        "other",
    },
    "outcome": set(BILLER_OUTCOMES) | {"loaded", "duplicate", "rejected", "ignored"},
    "operation": set(BILLER_OPERATIONS),
    "mti": {*SPEC.responses, *SPEC.responses.values()},
    "processing_code": {*SPEC.processing_codes, ""},
    "reason": set(REFUSAL_REASONS),
}
#: Where one label name means different things in different metrics.
KNOWN_BY_METRIC: dict[tuple[str, str], set[str]] = {
    ("billhub_journal_write_failures_total", "reason"): set(JOURNAL_FAILURES),
}
ADDED_BY_PROMETHEUS = {"job", "instance"}


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        msg = f"{binary} not installed (Debian package prometheus; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


# -- what the hub exports -----------------------------------------------------------------------


class _Link:
    info = LinkInfo("L1", "127.0.0.1:1", "CN=switch-1")
    in_flight = 0
    signed_on = True


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, from a registry where every metric has a child."""
    mx = Metrics(billers=["100001"], batch_billers=["100001"], rules=SPEC, refusal_reasons=["x"])
    mx.watch_links(lambda: [_Link()])
    mx.watch_billers(lambda: {"100001": True})
    req = Message("0200", {3: "310000", 100: "100001"})
    mx.link_event(Exchanged(_Link.info, req, Message("0210", {39: "00"}), 0.01, "handled"))
    mx.link_event(LinkClosed(_Link.info, "dead_peer", ""))
    mx.biller_call("100001", "open_bills", 0.01, "ok")
    mx.link_event(EchoRoundTrip(_Link.info, 0.001))
    mx.journal_commit(1, 0.001)
    mx.bills_file("100001", "loaded", 3)
    mx.reconciliation_finding("100001")
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(mx.render().decode()):
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    web = WebMetrics()  # billhub web's admin port
    web.request("GET", "/inquiry", 200, 0.01)
    web.biller_call("100001", "open_bills", 0.01, "ok")
    web.set_counts({("100001", "installment"): 1}, {"100001": 1}, ["100001"], ["installment"])
    web.escalations.inc()
    for family in text_string_to_metric_families(generate_latest(web.registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    for name, (kind, labels, _) in METRICS.items():  # the contract table agrees
        sample = name if kind != "histogram" else f"{name}_count"
        assert out[sample] == set(labels), name
    return out


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every query in the dashboard, the rules and their tests."""
    out: list[tuple[str, str]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    out.append((f"{where}.{k}", v))
                elif k == "query" and isinstance(v, str) and "billhub" in v:
                    out.append((f"{where}.query", v))
                else:
                    walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk(json.loads(DASHBOARD.read_text("utf-8")), "dashboard")
    for group in yaml.safe_load(RULES.read_text("utf-8"))["groups"]:
        for rule in group["rules"]:
            out.append((f"rules:{rule.get('alert') or rule.get('record')}", rule["expr"]))
    for i, test in enumerate(yaml.safe_load(RULES_TEST.read_text("utf-8"))["tests"]):
        for series in test.get("input_series", []):
            out.append((f"rules-test[{i}].input_series", series["series"]))
    return out


def recorded() -> set[str]:
    return {
        rule["record"]
        for group in yaml.safe_load(RULES.read_text("utf-8"))["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


_SELECTOR = re.compile(r"\b(billhub_[A-Za-z0-9_:]+)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(r"label_values\(\s*(billhub_\w+)[^,]*,\s*(\w+)\s*\)")


def test_dashboard_and_rules_reference_only_exported_metrics_and_labels() -> None:
    samples = exported()
    records = recorded()
    problems: list[str] = []
    exprs = expressions()
    assert len(exprs) > 40
    for where, expr in exprs:
        in_expr: set[str] = set(ADDED_BY_PROMETHEUS)
        for name, braces in _SELECTOR.findall(expr):
            if ":" in name:
                if name not in records:
                    problems.append(f"{where}: {name} is not recorded by the rules")
                in_expr |= {"biller", "kind"}  # what the recording rules keep
                continue
            if name not in samples:
                problems.append(f"{where}: {name} is not exported")
                continue
            labels = samples[name] | ADDED_BY_PROMETHEUS
            in_expr |= labels
            for label, _, val in _MATCHER.findall(braces):
                if label not in labels:
                    problems.append(f"{where}: {name} has no label {label}")
                elif (known := KNOWN_BY_METRIC.get((name, label), KNOWN_VALUES.get(label))) and (
                    "$" not in val
                ):
                    for alt in val.split("|"):
                        if alt not in known:
                            problems.append(f"{where}: {label}={alt!r} is never exported")
        for group in _GROUPING.findall(expr):
            for label in (x.strip() for x in group.split(",") if x.strip()):
                if label not in in_expr:
                    problems.append(f"{where}: groups by {label}, which its metrics lack")
        for name, label in _LABEL_VALUES.findall(expr):
            if label not in samples.get(name, set()) | ADDED_BY_PROMETHEUS:
                problems.append(f"{where}: label_values of {name}.{label}, not exported")
    assert not problems, "\n".join(problems)


def test_dashboard_covers_what_operators_watch() -> None:
    text = DASHBOARD.read_text("utf-8")
    for needle in (
        "histogram_quantile(0.99",
        "billhub_messages_sent_total",
        "response_code",
        "billhub_biller_up",
        "billhub_links_signed_on",
        "billhub_resolver_backlog_tasks",
        "billhub_journal_commit_duration_seconds_bucket",
        "billhub_journal_commit_group_size",
        "billhub_journal_write_failures_total",
        "billhub_journal_writable",
    ):
        assert needle in text, needle
    board = json.loads(text)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert all(
        p.get("datasource", {}).get("uid") == "${datasource}"
        for p in board["panels"]
        if p["type"] != "row"
    )


# -- promtool -------------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    promtool = need("promtool")
    out = subprocess.run(
        [promtool, "check", "rules", str(RULES)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules_and_every_alert_is_tested() -> None:
    promtool = need("promtool")
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text("utf-8"))["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in yaml.safe_load(RULES_TEST.read_text("utf-8"))["tests"]:
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts - fired == set(), "alerts never seen firing in a unit test"
    assert alerts - quiet == set(), "alerts never checked quiet in a unit test"
    out = subprocess.run(
        [promtool, "test", "rules", RULES_TEST.name],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULES_TEST.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


# -- a real Prometheus ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prometheus(tmp: Path, admin_port: int) -> Iterator[str]:
    binary = need("prometheus")
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "billhub",
                        "static_configs": [{"targets": [f"127.0.0.1:{admin_port}"]}],
                    }
                ],
            }
        ),
        "utf-8",
    )
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


async def _query(http: aiohttp.ClientSession, base: str, expr: str) -> dict[str, Any]:
    async with http.get(f"{base}/api/v1/query", params={"query": expr}) as r:
        body: dict[str, Any] = await r.json()
        return body


async def _traffic(world: World, stop: asyncio.Event) -> int:
    link = await world.link()
    acct = find(world.rest_accounts)
    n = 0
    while not stop.is_set():
        await link.request(m.inquiry(REST, acct.account, world.next_rrn()))
        n += 1
        await asyncio.sleep(0.01)
    return n


@pytest.mark.slow
async def test_real_prometheus_scrapes_the_hub_and_evaluates_rules_and_dashboard(
    tmp_path: Path,
    pki,  # type: ignore[no-untyped-def]
) -> None:
    world = await start_world(tmp_path, pki, admin=True)
    stop = asyncio.Event()
    traffic = asyncio.get_running_loop().create_task(_traffic(world, stop))
    try:
        assert world.hub.admin_port is not None
        with prometheus(tmp_path, world.hub.admin_port) as base:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                async with asyncio.timeout(60):
                    while True:  # Prometheus starting, then at least two scrapes in the window
                        with contextlib.suppress(aiohttp.ClientError, ValueError):
                            res = await _query(
                                http,
                                base,
                                'sum(rate(billhub_messages_received_total{job="billhub",'
                                'mti="0200",processing_code="310000"}[10s]))',
                            )
                            if res.get("status") == "success" and res["data"]["result"]:
                                rate = float(res["data"]["result"][0]["value"][1])
                                if rate > 0:
                                    break
                        await asyncio.sleep(0.25)
                assert rate > 1.0, f"inquiries every ~10 ms, rate {rate}/s"
                up = await _query(http, base, 'up{job="billhub"}')
                assert up["data"]["result"][0]["value"][1] == "1"
                signed = await _query(http, base, "billhub_links_signed_on")
                assert signed["data"]["result"][0]["value"][1] == "1"

                # Every rule loads and evaluates without error in a real server.
                async with asyncio.timeout(30):
                    while True:
                        async with http.get(f"{base}/api/v1/rules") as r:
                            groups = (await r.json())["data"]["groups"]
                        rules = [rule for g in groups for rule in g["rules"]]
                        if rules and all(rule["health"] == "ok" for rule in rules):
                            break
                        bad = [r for r in rules if r["health"] == "err"]
                        assert not bad, bad
                        await asyncio.sleep(0.25)
                assert {g["name"] for g in groups} == {
                    "billhub.recording",
                    "billhub.alerts",
                    "billhub.citizen",
                }

                # Every dashboard query is valid PromQL with Grafana's variables filled in.
                board = DASHBOARD.read_text("utf-8")
                exprs = [e for w, e in expressions() if w.startswith("dashboard") and "expr" in w]
                for expr in exprs:
                    filled = (
                        expr.replace("$__rate_interval", "10s")
                        .replace("$job", ".*")
                        .replace("$instance", ".*")
                        .replace("$biller", ".*")
                    )
                    res = await _query(http, base, filled)
                    assert res.get("status") == "success", (expr, res)
                assert board
    finally:
        stop.set()
        await traffic
        await world.close()
