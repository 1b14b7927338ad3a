"""The admin port: health for the orchestrator, apart from the switch's port.

``/healthz`` says the process is alive and its event loop turns; ``/readyz``
says whether the hub can do its job (listening, links signed on) with a JSON
body that names what is wrong. Metrics and the operators' status API join this
server later; it never shares a port with the switch link.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

Readiness = Callable[[], tuple[bool, dict[str, Any]]]


class AdminServer:
    """A small aiohttp server on loopback (by default) for health checks."""

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self._runner: web.AppRunner | None = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, detail = self.readiness()
        body = {"status": "ready" if ready else "not_ready", **detail}
        return web.json_response(body, status=200 if ready else 503)

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
