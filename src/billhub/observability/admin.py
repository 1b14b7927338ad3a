"""The admin port: health, metrics and status, apart from the switch's port.

``/healthz`` says the process is alive and its event loop turns; ``/readyz``
says whether the hub can do its job (journal answering, a link signed on,
billers not all down) with a JSON body that names what is wrong (503 when not
ready); ``/metrics`` is the Prometheus text exposition; ``/status`` is the JSON
that ``billhub status`` renders. It never shares a port with the switch link.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from billhub.observability.metrics import CONTENT_TYPE

ReadinessResult = tuple[bool, dict[str, Any]]
Readiness = Callable[[], ReadinessResult | Awaitable[ReadinessResult]]
StatusSource = Callable[[], Awaitable[dict[str, Any]]]
MetricsSource = Callable[[], Awaitable[bytes | None]]


class AdminServer:
    """A small aiohttp server on loopback (by default) for health, metrics and status."""

    def __init__(
        self,
        readiness: Readiness,
        *,
        status: StatusSource | None = None,
        metrics: MetricsSource | None = None,
    ) -> None:
        self.readiness = readiness
        self.status = status
        self.metrics = metrics
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/status", self._status)
        self._runner: web.AppRunner | None = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        result = self.readiness()
        ready, detail = await result if inspect.isawaitable(result) else result
        body = {"status": "ready" if ready else "not_ready", **detail}
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        text = await self.metrics() if self.metrics is not None else None
        if text is None:
            return web.json_response(
                {"error": "metrics are off ([admin] metrics = false)"}, status=404
            )
        resp = web.Response(body=text)
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp

    async def _status(self, _: web.Request) -> web.Response:
        if self.status is None:
            return web.json_response({"error": "no status for this hub"}, status=404)
        return web.json_response(await self.status())

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
