"""Prometheus metrics: a link-fact subscriber and a :class:`PipelineObserver` that count.

:class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry` (never the
process-global one), so that two hubs in one process (tests) do not share counters and
``/metrics`` shows exactly what this hub registered.

Naming follows Prometheus conventions: units in names (``_seconds``), ``_total``
counters, and only *bounded* labels. Every label value is checked against what the
hub knows at start-up (the configured billers, the spec's MTIs, processing codes and
network codes); anything else is counted as ``other``/``unknown``. An account number,
RRN or STAN is never a label.

The hot path (:meth:`Metrics.link_event` given an :class:`~billhub.link.facts.Exchanged`,
once per message) is one tuple built from fields the message already holds, one dict
lookup for the label children of that combination (created once per label set and
cached), then plain integer increments and one ``bisect`` into the latency buckets: no
string formatting, no ``.labels()`` call, no lock. Those per-message families live on
the event loop's thread only and are turned into Prometheus families at scrape time
(:class:`_LoopFamily`); the rest (rare events, the journal's commits on its own thread)
uses prometheus-client's thread-safe metrics. ``bench/metrics.py`` measures the cost.

What changes between scrapes rather than per event (links connected and signed on,
requests in flight per link, billers' health) is read at scrape time by a collector
that calls back into the hub; the resolver backlog is set by the ``/metrics`` handler
just before rendering (it needs a journal read, which is async).

The metric names, labels and their meaning are listed in :data:`METRICS`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from billhub.iso8583 import codes as rc
from billhub.iso8583.spec import LinkRules
from billhub.link.facts import (
    ConnectionRefusal,
    EchoRoundTrip,
    Exchanged,
    FormatErrorSeen,
    HandlerFailed,
    LinkClosed,
    LinkEvent,
    LinkInfo,
    LinkOpened,
    TlsRefusal,
    Unmatched,
)
from billhub.pipeline.ports import PipelineObserver

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "METRICS",
    "FanoutPipelineObserver",
    "LinkView",
    "Metrics",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: End-to-end, biller-call and echo latency buckets: 1 ms to 30 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
#: Journal commit duration: fsync dominates, 100 µs to 5 s.
COMMIT_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    5.0,
)
#: Operations per group commit (the journal takes at most 512 at once).
GROUP_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

#: Biller call outcomes that mean the biller did not answer (``rejected`` is an answer).
FAILED_OUTCOMES = frozenset({"timeout", "unavailable", "error"})
BILLER_OPERATIONS = ("open_bills", "post_payment", "cancel_payment", "payment_status")
BILLER_OUTCOMES = ("ok", "rejected", "timeout", "unavailable", "error")
CONNECTION_REFUSALS = (
    "source_not_allowed",
    "handshake_displaced",
    "too_many_links",
    "shutting_down",
    "accept_failed",
)
BILLS_FILE_OUTCOMES = ("loaded", "duplicate", "rejected", "ignored")
#: Why the journal could not write (``journal.sqlite.write_failure``), as labels.
JOURNAL_FAILURES = (
    "disk_full",
    "io_error",
    "locked",
    "read_only",
    "cannot_open",
    "corrupt",
    "connection",
    "other",
)

#: name -> (type, labels, help): the contract the dashboard and the rules rely on.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "billhub_messages_received_total": (
        "counter",
        ("mti", "processing_code", "biller"),
        "Requests received from the switch and decoded, by MTI, DE 3 and biller (DE 100).",
    ),
    "billhub_messages_sent_total": (
        "counter",
        ("mti", "processing_code", "biller", "response_code"),
        "Responses sent to the switch, by MTI, DE 3, biller and response code (DE 39).",
    ),
    "billhub_request_duration_seconds": (
        "histogram",
        ("kind", "biller"),
        "End to end, from the request's last byte read to its answer written.",
    ),
    "billhub_biller_call_duration_seconds": (
        "histogram",
        ("biller", "operation"),
        "Time of one call to a biller's connector.",
    ),
    "billhub_biller_calls_total": (
        "counter",
        ("biller", "operation", "outcome"),
        "Calls to billers' connectors by outcome (ok, rejected, timeout, unavailable, error).",
    ),
    "billhub_biller_up": (
        "gauge",
        ("biller",),
        "1 unless the biller's recent calls all failed (timeouts, unreachable, 5xx).",
    ),
    "billhub_link_requests_in_flight": (
        "gauge",
        ("link", "subject"),
        "Requests handed to the application and not yet answered, per open link.",
    ),
    "billhub_links_connected": ("gauge", (), "Links past the TLS handshake and allow-list."),
    "billhub_links_signed_on": ("gauge", (), "Links signed on (LINK-SPEC 6.1)."),
    "billhub_links_opened_total": ("counter", (), "Links accepted after TLS and allow-list."),
    "billhub_links_closed_total": ("counter", ("reason",), "Links closed, by reason."),
    "billhub_echo_rtt_seconds": (
        "histogram",
        (),
        "Round-trip time of the hub's keep-alive echo tests.",
    ),
    "billhub_tls_refusals_total": (
        "counter",
        ("reason",),
        "TLS handshakes refused or failed, by reason.",
    ),
    "billhub_connections_refused_total": (
        "counter",
        ("reason",),
        "Connections closed before any TLS work (caps, shutdown), by reason.",
    ),
    "billhub_framing_errors_total": (
        "counter",
        (),
        "Links closed because a frame's length prefix was impossible.",
    ),
    "billhub_format_errors_total": (
        "counter",
        ("answered",),
        "Whole frames that could not be decoded; answered says whether a 30 went back.",
    ),
    "billhub_unmatched_responses_total": (
        "counter",
        (),
        "Responses from the switch that matched no request in flight.",
    ),
    "billhub_handler_failures_total": (
        "counter",
        (),
        "Requests whose handler raised (answered 96): a hub bug.",
    ),
    "billhub_journal_commit_duration_seconds": (
        "histogram",
        (),
        "Duration of one journal group commit (fsync included).",
    ),
    "billhub_journal_write_failures_total": (
        "counter",
        ("reason",),
        "Journal batches whose writes failed, by reason (disk_full, io_error, locked, ...).",
    ),
    "billhub_journal_writable": (
        "gauge",
        (),
        "1 while the journal's writes succeed, 0 from a failed write until one succeeds.",
    ),
    "billhub_journal_commit_group_size": (
        "histogram",
        (),
        "Operations sharing one journal commit.",
    ),
    "billhub_resolver_backlog_tasks": (
        "gauge",
        (),
        "Open resolver tasks (uncertain payments, reversals to cancel).",
    ),
    "billhub_resolver_oldest_task_age_seconds": (
        "gauge",
        (),
        "Age of the oldest open resolver task; 0 when there is none.",
    ),
    "billhub_reconciliation_findings_total": (
        "counter",
        ("biller",),
        "Differences found by reconciliation (0500 totals, biller files).",
    ),
    "billhub_bills_files_total": (
        "counter",
        ("biller", "outcome"),
        "Bills files taken from a batch biller's inbox, by outcome (rejected: a bad row).",
    ),
    "billhub_bills_file_rows_total": (
        "counter",
        ("biller",),
        "Rows of bills files loaded.",
    ),
}


class LinkView(Protocol):
    """What the scrape-time collector reads of an open link (the transport's protocol)."""

    @property
    def info(self) -> LinkInfo: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def signed_on(self) -> bool: ...


LinksSource = Callable[[], Iterable[LinkView]]
BillerStates = Callable[[], Mapping[str, bool]]


class _Count:
    """One counter child updated from the event loop's thread only: a plain int."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class _Hist:
    """One histogram child updated from the event loop's thread only.

    ``counts[i]`` counts observations in ``(bounds[i-1], bounds[i]]`` (the last slot:
    over every bound); an observation is ``counts[bisect_left(bounds, v)] += 1`` and
    ``total += v``. Cumulated into Prometheus buckets only at scrape time.
    """

    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * (size + 1)
        self.total = 0.0


class _LoopFamily:
    """A labelled counter or histogram whose children are plain Python numbers.

    The per-message metrics are updated on the event loop's thread and read by the
    ``/metrics`` handler on that same thread, so they need no lock: this saves the
    lock, the checks and the bucket loop of prometheus-client's children on every
    message (measured: 1.6 → 0.3 µs per exchange, 1.0 → 0.2 µs per biller call).
    Never update them from another thread.
    """

    def __init__(self, name: str, buckets: Sequence[float] = ()) -> None:
        kind, labels, doc = METRICS[name]
        self.name = name
        self.kind = kind
        self.labelnames = list(labels)
        self.doc = doc
        self.bounds = tuple(buckets)
        self.children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            child = _Hist(len(self.bounds)) if self.kind == "histogram" else _Count()
            self.children[values] = child
        return child

    def family(self) -> Metric:
        if self.kind == "counter":
            counter = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
            for values, c in self.children.items():
                counter.add_metric(list(values), c.n)
            return counter
        hist = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        les = [repr(float(b)) for b in self.bounds] + ["+Inf"]  # as prometheus-client
        for values, h in self.children.items():
            cumulative, acc = [], 0
            for le, n in zip(les, h.counts, strict=True):
                acc += n
                cumulative.append((le, float(acc)))
            hist.add_metric(list(values), cumulative, sum_value=h.total)
        return hist


class _LoopCollector:
    def __init__(self, families: Sequence[_LoopFamily]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return [f.family() for f in self.families]


_Children = tuple[Any, Any, Any]


class _ScrapeCollector:
    """Collects, at scrape time, what the hub holds rather than counts."""

    def __init__(self) -> None:
        self.links: LinksSource = tuple
        self.billers_up: BillerStates = dict

    def collect(self) -> Iterable[Metric]:
        links = list(self.links())
        connected = GaugeMetricFamily(
            "billhub_links_connected", METRICS["billhub_links_connected"][2]
        )
        connected.add_metric([], len(links))
        signed = GaugeMetricFamily("billhub_links_signed_on", METRICS["billhub_links_signed_on"][2])
        signed.add_metric([], sum(1 for link in links if link.signed_on))
        in_flight = GaugeMetricFamily(
            "billhub_link_requests_in_flight",
            METRICS["billhub_link_requests_in_flight"][2],
            labels=["link", "subject"],
        )
        for link in links:
            in_flight.add_metric([link.info.link_id, link.info.subject], link.in_flight)
        up = GaugeMetricFamily(
            "billhub_biller_up", METRICS["billhub_biller_up"][2], labels=["biller"]
        )
        for code, ok in sorted(self.billers_up().items()):
            up.add_metric([code], 1.0 if ok else 0.0)
        return [connected, signed, in_flight, up]


class Metrics:
    """Every billhub metric, in its own registry; observes links, the pipeline, the journal.

    ``billers``: the configured biller codes (any other DE 100 is labelled ``unknown``);
    ``batch_billers``: those whose bills-file counters are created at zero;
    ``rules``: the spec's MTIs, processing and network codes (the bounded label values);
    ``refusal_reasons``: every TLS refusal label, exposed at zero from start-up.
    All methods are cheap and never raise (the subscriber's and observer's contract).
    """

    def __init__(
        self,
        *,
        billers: Sequence[str] = (),
        batch_billers: Sequence[str] = (),
        rules: LinkRules | None = None,
        refusal_reasons: Sequence[str] = (),
        process_metrics: bool = True,
    ) -> None:
        # ``*_created`` series would double the scrape for nothing Prometheus uses.
        # (A process-wide switch: the hub is the process.)
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in the library
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._billers = frozenset(billers)
        mtis: set[str] = set()
        if rules is not None:
            mtis.update(rules.responses)
            mtis.update(rules.responses.values())
        self._mtis = frozenset(mtis)
        self._processing = dict(rules.processing_codes) if rules is not None else {}
        self._network = dict(rules.network_codes) if rules is not None else {}

        def counter(name: str) -> Counter:
            _, labels, doc = METRICS[name]
            return Counter(name, doc, labels, registry=reg)

        def histogram(name: str, buckets: Sequence[float]) -> Histogram:
            _, labels, doc = METRICS[name]
            return Histogram(name, doc, labels, registry=reg, buckets=buckets)

        def gauge(name: str) -> Gauge:
            _, labels, doc = METRICS[name]
            return Gauge(name, doc, labels, registry=reg)

        # Per message: plain numbers, event loop only (see _LoopFamily).
        self.received = _LoopFamily("billhub_messages_received_total")
        self.sent = _LoopFamily("billhub_messages_sent_total")
        self.duration = _LoopFamily("billhub_request_duration_seconds", LATENCY_BUCKETS)
        self.biller_duration = _LoopFamily("billhub_biller_call_duration_seconds", LATENCY_BUCKETS)
        self.biller_calls = _LoopFamily("billhub_biller_calls_total")
        reg.register(
            _LoopCollector(
                [self.received, self.sent, self.duration, self.biller_duration, self.biller_calls]
            )
        )
        self.links_opened = counter("billhub_links_opened_total")
        self.links_closed = counter("billhub_links_closed_total")
        self.echo = histogram("billhub_echo_rtt_seconds", LATENCY_BUCKETS)
        self.tls_refusals = counter("billhub_tls_refusals_total")
        self.conn_refusals = counter("billhub_connections_refused_total")
        self.framing_errors = counter("billhub_framing_errors_total")
        self.format_errors = counter("billhub_format_errors_total")
        self.unmatched_responses = counter("billhub_unmatched_responses_total")
        self.handler_failures = counter("billhub_handler_failures_total")
        self.commit_duration = histogram("billhub_journal_commit_duration_seconds", COMMIT_BUCKETS)
        self.commit_group = histogram("billhub_journal_commit_group_size", GROUP_BUCKETS)
        self.journal_failures = counter("billhub_journal_write_failures_total")
        self.journal_writable = gauge("billhub_journal_writable")
        self.journal_writable.set(1)
        self.backlog = gauge("billhub_resolver_backlog_tasks")
        self.oldest_age = gauge("billhub_resolver_oldest_task_age_seconds")
        self.findings = counter("billhub_reconciliation_findings_total")
        self.bills_files = counter("billhub_bills_files_total")
        self.bills_rows = counter("billhub_bills_file_rows_total")
        self._scrape = _ScrapeCollector()
        reg.register(self._scrape)
        if process_metrics:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)

        # Every label known at start-up is exposed at zero, so that rate() and
        # increase() see the first event and the dashboards show the rows.
        for reason in refusal_reasons:
            self.tls_refusals.labels(reason)
        for reason in CONNECTION_REFUSALS:
            self.conn_refusals.labels(reason)
        for answered in ("true", "false"):
            self.format_errors.labels(answered)
        for reason in JOURNAL_FAILURES:
            self.journal_failures.labels(reason)
        for code in billers:
            self.findings.labels(code)
            for op in BILLER_OPERATIONS:
                for outcome in BILLER_OUTCOMES:
                    self.biller_calls.labels(code, op, outcome)
        for code in batch_billers:
            self.bills_rows.labels(code)
            for outcome in BILLS_FILE_OUTCOMES:
                self.bills_files.labels(code, outcome)

        self._exchange: dict[tuple[str | None, ...], _Children] = {}
        self._calls: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._closed: dict[str, Any] = {}
        self._findings: dict[str, Any] = {}

    # -- wiring ------------------------------------------------------------------------

    def watch_links(self, links: LinksSource) -> None:
        """Read links connected, signed on and in flight from ``links()`` at each scrape."""
        self._scrape.links = links

    def watch_billers(self, states: BillerStates) -> None:
        """Read ``billhub_biller_up`` from ``states()`` (code -> up) at each scrape."""
        self._scrape.billers_up = states

    def set_resolver_backlog(self, tasks: int, oldest_age_seconds: float) -> None:
        self.backlog.set(tasks)
        self.oldest_age.set(oldest_age_seconds)

    def render(self) -> bytes:
        """The text exposition format of everything in this registry."""
        return generate_latest(self.registry)

    # -- label bounding (cache misses only) ------------------------------------------------

    def _biller_label(self, code: str | None) -> str:
        if code is None:
            return ""
        return code if code in self._billers else "unknown"

    def _kind(self, mti: str | None, pc: str | None, network: str | None) -> str:
        if mti is None:
            return "undecodable"
        cls = rc.mti_class(mti)
        if cls == rc.FINANCIAL:
            return self._processing.get(pc or "", "other")
        if cls == rc.REVERSAL:
            return "reversal"
        if cls == rc.RECONCILIATION:
            return "reconciliation"
        if cls == rc.NETWORK:
            return self._network.get(network or "", "network_other")
        return "other"

    def _mti_label(self, mti: str | None) -> str:
        if mti is None:
            return ""
        return mti if mti in self._mtis else "other"

    def _pc_label(self, pc: str | None) -> str:
        if pc is None:
            return ""
        return pc if pc in self._processing else "other"

    def _exchange_children(self, key: tuple[str | None, ...]) -> _Children:
        mti, pc, network, biller, resp_mti, code = key
        b = self._biller_label(biller)
        p = self._pc_label(pc)
        received = self.received.labels(self._mti_label(mti), p, b) if mti is not None else None
        sent = self.sent.labels(self._mti_label(resp_mti), p, b, _code_label(code))
        hist = self.duration.labels(self._kind(mti, pc, network), b) if mti is not None else None
        children = (received, sent, hist)
        if len(self._exchange) >= 4096:  # raw values are the peer's: keep the cache bounded
            self._exchange.clear()
        self._exchange[key] = children
        return children

    # -- link facts -------------------------------------------------------------------------

    def link_event(self, event: LinkEvent) -> None:
        """The link-fact subscriber (:mod:`billhub.link.facts`): counts what the hub saw."""
        # The per-message fact first and inline: ``match`` tries the cases in order, and
        # a bare class pattern is an isinstance (positional sub-patterns cost ~0.5 µs).
        match event:
            case Exchanged():
                request, response = event.request, event.response
                if request is None:
                    key: tuple[str | None, ...] = (
                        None,
                        None,
                        None,
                        None,
                        response.mti,
                        response.fields.get(39),
                    )
                else:
                    f = request.fields
                    code = response.fields.get(39)
                    key = (request.mti, f.get(3), f.get(70), f.get(100), response.mti, code)
                children = self._exchange.get(key)
                if children is None:
                    children = self._exchange_children(key)
                received, sent, hist = children
                if received is not None:
                    received.n += 1
                sent.n += 1
                if hist is not None:
                    latency = event.latency
                    hist.counts[bisect_left(LATENCY_BUCKETS, latency)] += 1
                    hist.total += latency
            case LinkOpened():
                self.links_opened.inc()
            case LinkClosed(reason=reason):
                child = self._closed.get(reason)
                if child is None:
                    child = self._closed[reason] = self.links_closed.labels(reason)
                child.inc()
                if reason == "framing_error":
                    self.framing_errors.inc()
            case TlsRefusal(reason=reason):
                self.tls_refusals.labels(reason).inc()
            case ConnectionRefusal(reason=reason):
                self.conn_refusals.labels(reason).inc()
            case FormatErrorSeen(answered=answered):
                self.format_errors.labels("true" if answered else "false").inc()
            case Unmatched():
                self.unmatched_responses.inc()
            case EchoRoundTrip(rtt=rtt):
                self.echo.observe(rtt)
            case HandlerFailed():
                self.handler_failures.inc()
            # LinkStateChanged: links signed on are read at scrape time.

    # -- PipelineObserver ---------------------------------------------------------------------

    def biller_call(self, biller: str, operation: str, seconds: float, outcome: str) -> None:
        key = (biller, operation, outcome)
        children = self._calls.get(key)
        if children is None:
            b = self._biller_label(biller)
            op = operation if operation in BILLER_OPERATIONS else "other"
            out = outcome if outcome in BILLER_OUTCOMES else "error"
            children = (self.biller_calls.labels(b, op, out), self.biller_duration.labels(b, op))
            self._calls[key] = children
        calls, duration = children
        calls.n += 1
        # The resolver reports failed tries without their time (0.0): they are counted,
        # but kept out of the latency histogram.
        if seconds > 0.0:
            duration.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            duration.total += seconds

    # -- the journal, settlement and batch billers -----------------------------------------------

    def journal_commit(self, group_size: int, seconds: float) -> None:
        """The journal's ``on_commit`` hook; runs on the journal's thread."""
        self.commit_group.observe(group_size)
        self.commit_duration.observe(seconds)

    def journal_write_failed(self, reason: str) -> None:
        """One journal batch that could not be written; the journal is not writable."""
        label = reason if reason in JOURNAL_FAILURES else "other"
        self.journal_failures.labels(label).inc()
        self.journal_writable.set(0)

    def journal_write_ok(self) -> None:
        """A write committed after failures: the journal is writable again."""
        self.journal_writable.set(1)

    def reconciliation_finding(self, biller: str) -> None:
        """One difference found by reconciliation for ``biller``."""
        child = self._findings.get(biller)
        if child is None:
            child = self._findings[biller] = self.findings.labels(self._biller_label(biller))
        child.inc()

    def bills_file(self, biller: str, outcome: str, rows: int = 0) -> None:
        """One bills file taken from ``biller``'s inbox (``LoadOutcome`` value)."""
        b = self._biller_label(biller)
        self.bills_files.labels(b, outcome if outcome in BILLS_FILE_OUTCOMES else "other").inc()
        if outcome == "loaded" and rows > 0:
            self.bills_rows.labels(b).inc(rows)


def _code_label(code: str | None) -> str:
    """DE 39 as a label: the hub writes it, but keep anything odd to a bounded set."""
    if code is None:
        return ""
    return code if len(code) == 2 and code.isalnum() else "other"


class FanoutPipelineObserver:
    """One :class:`PipelineObserver` that passes every report to several (health, metrics)."""

    def __init__(self, *observers: PipelineObserver) -> None:
        self.observers = observers

    def biller_call(self, biller: str, operation: str, seconds: float, outcome: str) -> None:
        for o in self.observers:
            o.biller_call(biller, operation, seconds, outcome)
