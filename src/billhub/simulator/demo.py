"""``billhub demo``: a hub and a simulated switch on loopback, and what they said.

No set-up: development certificates and a configuration are made in the
working folder on first run, the hub listens on a free loopback port with its
logs in ``hub.log`` there, and the switch runs a short script over mutual TLS.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from billhub.config import Config, load_config
from billhub.hub import build_hub
from billhub.iso8583.message import Message
from billhub.observability.logs import configure
from billhub.simulator import messages as m
from billhub.simulator.cli import describe
from billhub.simulator.switch import SwitchLink
from billhub.transport.certs import init_dev_certs
from billhub.transport.tls import client_context

CONFIG = """\
# Written by `billhub demo`: a hub on loopback with development certificates.
[link]
host = "127.0.0.1"
port = 0
idle_interval_s = 1.0      # short, so that the hub's own echo test shows in the demo
echo_timeout_s = 2.0

[tls]
cert_file = "certs/hub.crt"
key_file = "certs/hub.key"
client_ca_file = "certs/switch-ca.crt"
allowed_subjects = ["switch-1"]

[admin]
host = "127.0.0.1"
port = 0

[log]
format = "json"
level = "debug"
"""


def run_demo(workdir: Path) -> int:
    """Prepare the working folder (certificates, configuration), then run the script."""
    workdir.mkdir(parents=True, exist_ok=True)
    certs = workdir / "certs"
    if not (certs / "hub.crt").exists():
        init_dev_certs(certs, force=True)
    cfg_path = workdir / "billhub.toml"
    cfg_path.write_text(CONFIG, "utf-8")
    config = load_config(cfg_path)
    log_path = workdir / "hub.log"
    with log_path.open("w", encoding="utf-8") as log_file:
        configure("json", "debug", log_file)
        return asyncio.run(_script(config, certs, cfg_path, log_path))


async def _script(config: Config, certs: Path, cfg_path: Path, log_path: Path) -> int:
    hub = build_hub(config)
    port = await hub.start()
    rows: list[tuple[str, Message | None, Message]] = []
    ctx = client_context(certs / "switch.crt", certs / "switch.key", certs / "hub-ca.crt")
    link = await SwitchLink.connect("127.0.0.1", port, ctx, hub.codec)

    async def step(label: str, req: Message | None, coro: asyncio.Future[Message]) -> None:
        rows.append((label, req, await coro))

    before = m.inquiry("100001", "0100123456", "000000000001")
    await step("inquiry before sign-on", before, link.send(before))
    await step("sign-on", None, link.send(link.link.network_request("001")))
    await step("echo test (switch → hub)", None, link.send(link.link.network_request("301")))
    inq = m.inquiry("100001", "0100123456", "000000000002")
    await step("bill inquiry (no biller wired yet)", inq, link.send(inq))
    await asyncio.sleep(1.5)  # idle: the hub sends its own echo test, the switch answers
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%m%d")
    await step(
        f"cutover to {tomorrow}", None, link.send(link.link.network_request("201", tomorrow))
    )
    await step("sign-off", None, link.send(link.link.network_request("002")))
    hub_echoes = link.echoes_answered
    await link.close()
    await hub.stop(2.0)

    print(f"billhub demo: hub on 127.0.0.1:{port}, switch over mutual TLS (TLS 1.2+)\n")
    print(f"  {'step':<36} {'request':<8} {'answer':<7} {'code':<5}")
    for label, req, resp in rows:
        mti = req.mti if req is not None else "0800"
        d = describe(resp)
        print(f"  {label:<36} {mti:<8} {resp.mti:<7} {d['code'] or '':<5}")
    print(
        f"\n  echo tests sent by the hub on the idle link and answered by the switch: {hub_echoes}"
    )
    print("  codes: 00 approved, 91 not signed on, 96 not routed (billers come with issue 3)")
    print(f"\n  hub log (JSON lines, accounts masked): {log_path}")
    print(f"  configuration: {cfg_path}   certificates: {certs}")
    return 0
