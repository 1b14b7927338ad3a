"""A real hub on loopback for the link tests: real TLS, real sockets, real wiring.

``start_hub`` builds the hub exactly as ``billhub serve`` does (``build_hub`` from a
parsed configuration); only the financial handler may be swapped, because the
pipeline is not what these tests exercise. ``Recorder`` subscribes to
the link facts and keeps what the hub reported (the facts the log turns into lines).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from billhub.app.hub import Hub, build_hub
from billhub.config import parse_config
from billhub.errors import DecodeError
from billhub.link.facts import (
    ConnectionRefusal,
    EchoRoundTrip,
    Exchanged,
    FormatErrorSeen,
    LinkClosed,
    LinkEvent,
    LinkInfo,
    LinkOpened,
    LinkStateChanged,
    TlsRefusal,
)
from billhub.pipeline.ports import RequestHandler
from billhub.simulator.switch import SwitchLink
from billhub.transport.tls import client_context


@dataclass
class Recorder:
    opened: list[LinkInfo] = field(default_factory=list)
    closed: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    conn_refused: list[str] = field(default_factory=list)
    exchanges: list[tuple[str | None, str, str | None, str]] = field(default_factory=list)
    format_errors: list[tuple[DecodeError, bool]] = field(default_factory=list)
    echo_rtts: list[float] = field(default_factory=list)
    states: list[tuple[str, str]] = field(default_factory=list)
    events: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    def __call__(self, event: LinkEvent) -> None:
        match event:
            case LinkOpened(link):
                self.opened.append(link)
            case LinkClosed(_, reason, detail):
                self.closed.append((reason, detail))
                self.events.put_nowait(f"closed:{reason}")
            case LinkStateChanged(_, old, new):
                self.states.append((old, new))
            case TlsRefusal(_, reason, detail):
                self.refused.append((reason, detail))
                self.events.put_nowait(f"refused:{reason}")
            case ConnectionRefusal(_, reason):
                self.conn_refused.append(reason)
            case Exchanged(_, request, response, _, reason):
                self.exchanges.append(
                    (
                        request.mti if request else None,
                        response.mti,
                        response.fields.get(39),
                        reason,
                    )
                )
            case FormatErrorSeen(_, error, answered):
                self.format_errors.append((error, answered))
            case EchoRoundTrip(_, rtt):
                self.echo_rtts.append(rtt)

    async def wait_for(self, event: str, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                if await self.events.get() == event:
                    return


def base_config(
    pki: Any,
    journal: Path,
    *,
    admin: bool = True,
    metrics: bool = True,
    journal_dsn: str | None = None,
    **link: Any,
) -> str:
    """The loopback hub every test starts from: link, TLS from the test PKI, admin, journal.

    ``journal_dsn``: the PostgreSQL journal there instead of the SQLite file ``journal``.

    ``link`` adds or overrides ``[link]`` keys; callers append their own sections
    (``[resolver]``, ``[[billers]]``, ``[log]``) after it.
    """
    settings = {"host": "127.0.0.1", "port": 0, **link}
    lines = ["[link]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines += [
        "[tls]",
        f'cert_file = "{pki.hub_cert}"',
        f'key_file = "{pki.hub_key}"',
        f'client_ca_file = "{pki.switch_ca_cert}"',
        'allowed_subjects = ["switch-1"]',
        "[admin]",
    ]
    if admin:
        lines += ['host = "127.0.0.1"', "port = 0"]
        if not metrics:
            lines.append("metrics = false")
    else:
        lines.append("enabled = false")
    if journal_dsn is None:
        lines += ["[journal]", f'path = "{journal}"']
    else:
        lines += ["[journal]", 'kind = "postgresql"', f"dsn = {json.dumps(journal_dsn)}"]
    return "\n".join(lines) + "\n"


def hub_config_text(pki: Any, **link: Any) -> str:
    journal = Path(tempfile.mkdtemp(prefix="billhub-test-")) / "journal.db"
    return base_config(pki, journal, **link)


@dataclass
class RunningHub:
    hub: Hub
    port: int
    recorder: Recorder
    pki: Any

    def context(
        self,
        cert: Path | None = None,
        key: Path | None = None,
        *,
        max_version: str | None = None,
    ) -> ssl.SSLContext:
        return client_context(
            cert or self.pki.switch_cert,
            key or self.pki.switch_key,
            self.pki.hub_ca_cert,
            max_version=max_version,
        )

    async def connect(self, *, sign_on: bool = True, **kw: Any) -> SwitchLink:
        link = await SwitchLink.connect("127.0.0.1", self.port, self.context(**kw), self.hub.codec)
        if sign_on:
            resp = await link.sign_on()
            assert resp.fields[39] == "00"
        return link

    async def raw(self, **kw: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.context(**kw), server_hostname="localhost"
        )


async def start_hub(pki: Any, handler: RequestHandler | None = None, **link: Any) -> RunningHub:
    config = parse_config(hub_config_text(pki, **link), base_dir=Path("."), env={})
    recorder = Recorder()
    hub = build_hub(config, subscribers=[recorder])
    if handler is not None:  # the link tests' own financial handler, in the pipeline's place
        hub.server.handler.financial = handler  # type: ignore[attr-defined]
    port = await hub.start()
    return RunningHub(hub, port, recorder, pki)
