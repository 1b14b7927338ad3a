"""The web service's Prometheus metrics, on its own admin port.

Requests by route (the route's template, never the URL: tickets and accounts stay
out of labels) and status, a latency histogram per route, biller calls of the
inquiry path, and the open and overdue citizen requests, refreshed by the web
service's escalation loop.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WebMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "billhub_web_requests",
            "Web requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "billhub_web_request_seconds",
            "Time to answer a web request",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.biller_calls = Counter(
            "billhub_web_biller_calls",
            "Biller calls of the web service",
            ["biller", "operation", "outcome"],
            registry=self.registry,
        )
        self.open = Gauge(
            "billhub_web_open_requests",
            "Citizen requests not yet decided",
            ["company", "type"],
            registry=self.registry,
        )
        self.overdue = Gauge(
            "billhub_web_overdue_requests",
            "Citizen requests past their turnaround, undecided",
            ["company"],
            registry=self.registry,
        )
        self.escalations = Counter(
            "billhub_web_escalations",
            "Requests escalated past their turnaround",
            registry=self.registry,
        )

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def biller_call(self, biller: str, operation: str, seconds: float, outcome: str) -> None:
        self.biller_calls.labels(biller, operation, outcome).inc()

    def set_counts(
        self,
        open_: Mapping[tuple[str, str], int],
        overdue: Mapping[str, int],
        companies: list[str],
        types: list[str],
    ) -> None:
        for c in companies:
            for t in types:
                self.open.labels(c, t).set(open_.get((c, t), 0))
            self.overdue.labels(c).set(overdue.get(c, 0))
