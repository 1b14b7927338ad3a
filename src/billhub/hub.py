"""Build and run a hub from a :class:`~billhub.config.Config`: the wiring, in one place.

Kept apart from :mod:`billhub.cli` so that the demo, the tests and the
benchmarks start exactly the hub that ``billhub serve`` starts.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from datetime import UTC, date, datetime

from billhub.config import Config
from billhub.iso8583.codec import Codec
from billhub.iso8583.spec import load_spec
from billhub.link.core import Timers
from billhub.link.observer import LinkObserver
from billhub.observability.admin import AdminServer
from billhub.observability.logs import LogObserver, get_logger
from billhub.pipeline.ports import RequestHandler
from billhub.pipeline.unrouted import UnroutedHandler
from billhub.settlement.calendar import BusinessDay
from billhub.settlement.dispatch import HubDispatcher
from billhub.transport.server import HubServer, ServerLimits
from billhub.transport.tls import AllowList, server_context


def utc_today() -> date:
    return datetime.now(UTC).date()


@dataclass
class Hub:
    """A hub's parts, built but not yet listening."""

    config: Config
    codec: Codec
    server: HubServer

    admin: AdminServer | None = None
    admin_port: int | None = None

    async def start(self) -> int:
        """Listen on the link port, and on the admin port when enabled; returns the link port."""
        port = await self.server.start(self.config.link.host, self.config.link.port)
        if self.config.admin.enabled:
            self.admin = AdminServer(self.readiness)
            self.admin_port = await self.admin.start(self.config.admin.host, self.config.admin.port)
        return port

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready when at least one link is signed on: a hub no switch reaches earns nothing."""
        links = len(self.server.links)
        signed_on = self.server.signed_on_links
        problems = [] if signed_on else ["no signed-on link from the switch"]
        return not problems, {"links": links, "signed_on": signed_on, "problems": problems}

    async def stop(self, grace: float) -> None:
        await self.server.shutdown(grace)
        if self.admin is not None:
            await self.admin.stop()


def build_hub(
    config: Config,
    *,
    observer: LinkObserver | None = None,
    financial: RequestHandler | None = None,
) -> Hub:
    """Everything ``billhub serve`` runs, from a validated configuration."""
    spec = load_spec(config.link.spec_file)
    codec = Codec(spec)
    handler = HubDispatcher(
        spec.rules,
        financial or UnroutedHandler(spec.rules),
        BusinessDay(),
        utc_today,
    )
    lc = config.link
    server = HubServer(
        codec,
        handler,
        server_context(
            config.tls.cert_file,
            config.tls.key_file,
            config.tls.client_ca_file,
            min_version=config.tls.min_version,
        ),
        AllowList(config.tls.allowed_subjects),
        observer or LogObserver(),
        timers=Timers(
            read_timeout=lc.read_timeout_s,
            idle_interval=lc.idle_interval_s,
            echo_timeout=lc.echo_timeout_s,
            echo_max_missed=lc.echo_max_missed,
        ),
        limits=ServerLimits(
            max_links=lc.max_links,
            max_handshakes=lc.max_handshakes,
            handshake_timeout=lc.handshake_timeout_s,
            max_in_flight=lc.max_in_flight,
        ),
    )
    return Hub(config, codec, server)


async def serve(config: Config, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT; a second signal during shutdown forces it."""
    log = get_logger("billhub")
    hub = build_hub(config)
    port = await hub.start()
    log.info(
        "hub_listening",
        host=config.link.host,
        port=port,
        admin_port=hub.admin_port,
        spec=hub.codec.spec.name,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        log.info("signal", signal=signal.Signals(signum).name, count=signals)
        if signals == 1:
            stop.set()
        else:
            hub.server.abort()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("shutting_down", grace_s=config.link.shutdown_grace_s, links=len(hub.server.links))
    await hub.stop(config.link.shutdown_grace_s)
    log.info("stopped")
