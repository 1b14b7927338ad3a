"""The transaction pipeline: inquiry, payment (with repeats), reversal.

Exactly once, in this order, for a payment (LINK-SPEC 6.3):

1. under the key's lock, the payment is inserted in the journal *before* any
   biller is asked (state ``POSTING``); a key already there is a repeat and is
   answered from the journal (`94` if its content differs);
2. the biller is asked to post, with the hub payment id as idempotency key,
   within the biller's budget and concurrency bound;
3. the outcome is committed (``APPROVED`` with approval code and receipt,
   ``DECLINED`` with its code, or ``UNCERTAIN`` with a resolver task in the same
   commit) and only then is the answer returned for the wire.

A crash between 1 and 3 leaves ``POSTING``: recovery turns it into
``UNCERTAIN`` and the resolver makes sure the biller keeps nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import date, timedelta

from billhub.errors import (
    BillerError,
    BillerRejected,
    BillerTimeout,
    BillTaken,
    DateClosed,
    JournalError,
    JournalRefusal,
    KeyReversed,
    KeyTaken,
)
from billhub.iso8583 import codes as rc
from billhub.iso8583.message import Message
from billhub.iso8583.spec import LinkRules
from billhub.link.responses import make_response
from billhub.pipeline import decisions as d
from billhub.pipeline.inflight import InFlightDates
from billhub.pipeline.keylocks import KeyLocks
from billhub.pipeline.model import (
    AccountBills,
    PaymentKey,
    PaymentOrder,
    PaymentRecord,
    PaymentState,
    ResolverTask,
    ReversalRecord,
    TaskKind,
)
from billhub.pipeline.ports import (
    BusinessCalendar,
    Clock,
    IdSource,
    Journal,
    NullPipelineObserver,
    PipelineObserver,
    ResolverWake,
)
from billhub.pipeline.routes import BillerRoute
from billhub.pipeline.unrecorded import UnrecordedOutcomes

_NAMES_CACHE = 50_000
#: Waiting for an original another instance is posting: how often to look, and how
#: long past its budget its commit may take.
_SETTLE_POLL_S = 0.02
_SETTLE_MARGIN_S = 2.0
#: How long an approved payment waits for a name asked beside its posting.
_NAME_WAIT_S = 0.5


@dataclass
class PipelineCounters:
    """What happened, for metrics and the demo: counts only, never identifiers."""

    repeats: int = 0
    duplicates: int = 0
    uncertain: int = 0
    journal_errors: int = 0


class Pipeline:
    """The financial request handler: 0200 (inquiry, payment) and 0420/0421."""

    def __init__(
        self,
        rules: LinkRules,
        journal: Journal,
        routes: dict[str, BillerRoute],
        clock: Clock,
        ids: IdSource,
        *,
        calendar: BusinessCalendar,
        resolver: ResolverWake | None = None,
        quiet_period: float = 60.0,
        observer: PipelineObserver | None = None,
        unrecorded: UnrecordedOutcomes | None = None,
    ) -> None:
        self.rules = rules
        self.journal = journal
        self.routes = routes
        self.clock = clock
        self.ids = ids
        self.calendar = calendar
        self.resolver = resolver
        self.quiet_period = quiet_period
        self.observer = observer or NullPipelineObserver()
        self.unrecorded = unrecorded if unrecorded is not None else UnrecordedOutcomes()
        self.locks = KeyLocks()
        self.inflight = InFlightDates()
        self.counters = PipelineCounters()
        self._names: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def handle(self, request: Message) -> Message:
        cls = rc.mti_class(request.mti)
        if cls == rc.FINANCIAL:
            if request.fields.get(3) == rc.INQUIRY:
                return await self.inquiry(request)
            return await self.payment(request)
        if cls == rc.REVERSAL:
            return await self.reversal(request)
        return make_response(self.rules, request, rc.MALFUNCTION)

    # -- inquiry ----------------------------------------------------------------------

    async def inquiry(self, request: Message) -> Message:
        code = d.check_inquiry(request)
        route = self.routes.get(request.fields.get(100, ""))
        if code is None and route is None:
            code = rc.UNKNOWN_BILLER
        if code is not None or route is None:
            return d.decline(self.rules, request, code or rc.UNKNOWN_BILLER)
        account = request.fields[102]
        t0 = self.clock.monotonic()
        try:
            if route.online:
                async with asyncio.timeout(route.budget), route.slots:
                    bills = await route.biller.open_bills(account)
            else:  # the hub's own store answers from memory: no budget to police
                bills = await route.biller.open_bills(account)
        except BillerRejected as exc:
            self._observe(route.code, "open_bills", t0, "rejected")
            return d.decline(self.rules, request, d.refusal_code(exc))
        except (BillerError, TimeoutError) as exc:
            self._observe(route.code, "open_bills", t0, _outcome(exc))
            return d.decline(self.rules, request, rc.UNAVAILABLE)
        self._observe(route.code, "open_bills", t0, "ok")
        self._remember_name(route.code, account, bills)
        return d.inquiry_answer(self.rules, request, bills)

    def _remember_name(self, biller: str, account: str, bills: AccountBills) -> None:
        names = self._names
        names[(biller, account)] = bills.customer_name
        names.move_to_end((biller, account))
        if len(names) > _NAMES_CACHE:
            names.popitem(last=False)

    # -- payment -------------------------------------------------------------------------

    async def payment(self, request: Message) -> Message:
        started = self.clock.monotonic()
        key = d.payment_key(request)
        bill_id, bill_error = d.bill_id_of(request)
        async with self.locks.hold(key):
            now = self.clock.now()
            code = d.check_payment(request, bill_error)
            route = self.routes.get(request.fields.get(100, ""))
            if code is None and route is None:
                code = rc.UNKNOWN_BILLER
            sdate = self.calendar.settlement_date(key.settlement_mmdd)
            if code is None and sdate is None:
                code = rc.FORMAT_ERROR
            tracked = sdate or now.date()
            self.inflight.enter(tracked)  # before the closed-date check, no await between
            try:
                return await self._payment(
                    request,
                    key=key,
                    bill_id=bill_id,
                    code=code,
                    route=route,
                    sdate=sdate,
                    started=started,
                )
            finally:
                self.inflight.leave(tracked)

    async def _payment(
        self,
        request: Message,
        *,
        key: PaymentKey,
        bill_id: str | None,
        code: str | None,
        route: BillerRoute | None,
        sdate: date | None,
        started: float,
    ) -> Message:
        now = self.clock.now()
        if code is None and sdate is not None and self.calendar.is_closed(sdate):
            code = rc.CUTOFF
        record = PaymentRecord(
            payment_id=self.ids.payment_id(),
            key=key,
            settlement_date=sdate or now.date(),
            biller=request.fields.get(100, ""),
            account=request.fields.get(102, ""),
            bill_id=bill_id,
            amount=int(request.fields.get(4, "0")),
            currency=request.fields.get(49, ""),
            channel=request.fields.get(18, ""),
            forwarder=request.fields.get(33, ""),
            content=d.content_of(request, bill_id),
            received_at=now,
        )
        held = self.unrecorded.get(key)
        if held is not None:  # answered while the journal could not write: that answer stands
            return self._repeat(request, held, record.content)
        if code is not None:
            record.state, record.response_code, record.answered_at = (
                PaymentState.DECLINED,
                code,
                now,
            )
        elif route is not None and not route.online:
            return await self._post_local(request, route, record)
        try:
            stored, created = await self.journal.insert_payment(record)
        except KeyReversed:
            return await self._refused(request, record, rc.NO_ORIGINAL)
        except DateClosed:
            return await self._refused(request, record, rc.CUTOFF)
        except JournalError:
            return self._unrecorded(request, record, reached_biller=False)
        if not created:
            return self._repeat(request, await self._settled(stored), record.content)
        if stored.state is not PaymentState.POSTING or route is None:
            return d.payment_answer(self.rules, request, stored)
        remaining = route.budget - (self.clock.monotonic() - started)
        return await self._post(request, route, stored, remaining)

    async def _post_local(
        self,
        request: Message,
        route: BillerRoute,
        record: PaymentRecord,
        *,
        retried: bool = False,
    ) -> Message:
        """The hub's own store: post in memory first, then one durable write.

        Nothing leaves the process before the journal has the payment, so no
        ``POSTING`` intent is needed: a crash before the commit loses the
        in-memory posting with everything else, and the store is rebuilt from the
        journal at start-up. If the key turns out to be taken (a repeat) or
        reversed already, the in-memory posting is undone before answering.
        """
        if (route.code, record.account) not in self._names:
            await self._lookup_name(route, record.account, route.budget)
        t0 = self.clock.monotonic()
        posted = False
        try:
            receipt = await route.biller.post_payment(self._order(record))
        except BillerRejected as exc:
            self._observe(route.code, "post_payment", t0, "rejected")
            self._finish(record, PaymentState.DECLINED, d.refusal_code(exc))
        except BillerError as exc:
            self._observe(route.code, "post_payment", t0, _outcome(exc))
            self._finish(record, PaymentState.DECLINED, rc.UNAVAILABLE)  # nothing was posted
        else:
            self._observe(route.code, "post_payment", t0, "ok")
            posted = True
            self._approve(record, route, receipt)
            record.claims = route.biller.bills_taken(record.payment_id)
        try:
            stored, created = await self.journal.insert_payment(record)
        except (JournalRefusal, JournalError) as exc:
            await self._undo_local(route, record, posted)
            if isinstance(exc, BillTaken):
                # Another instance's payment took a bill first; the store now says
                # so (the cancel followed it), and the payment is decided again.
                if not retried:
                    again = _fresh(record, self.ids.payment_id())
                    return await self._post_local(request, route, again, retried=True)
                return await self._refused(
                    request, _fresh(record, record.payment_id), rc.NOTHING_DUE
                )
            if isinstance(exc, KeyReversed):
                return await self._refused(request, record, rc.NO_ORIGINAL)
            if isinstance(exc, DateClosed):
                return await self._refused(request, record, rc.CUTOFF)
            return self._unrecorded(request, record, reached_biller=False)
        if not created or stored.state is not PaymentState.APPROVED:
            await self._undo_local(route, record, posted)
        if not created:
            return self._repeat(request, await self._settled(stored), record.content)
        return d.payment_answer(self.rules, request, stored)

    async def _refused(self, request: Message, record: PaymentRecord, code: str) -> Message:
        """The journal kept an invariant (a reversal came first, the date closed): the
        payment is declined with ``code``, recorded so that its repeats get it too."""
        record.approval_code = record.receipt = record.answer_de48 = None
        self._finish(record, PaymentState.DECLINED, code)
        try:
            await self.journal.write_outcome(record)
        except JournalError:
            return self._unrecorded(request, record, reached_biller=False)
        return d.payment_answer(self.rules, request, record)

    async def _settled(self, stored: PaymentRecord) -> PaymentRecord:
        """``stored`` once its outcome is recorded, when it is still being posted.

        A repeat or a reversal on another hub instance can find the original
        ``POSTING`` while that instance waits for the biller (within one process
        the key's lock keeps that from happening). It waits for the outcome, as a
        repeat on the same instance would, up to the original's budget and a
        little more for its commit; after that the original's instance is gone
        or cannot record, and the payment is treated as never answered (`91`).
        """
        if stored.state is not PaymentState.POSTING:
            return stored
        route = self.routes.get(stored.biller)
        budget = (route.budget if route is not None else 0.0) + _SETTLE_MARGIN_S
        deadline = stored.received_at + timedelta(seconds=budget)
        while self.clock.now() < deadline:
            await asyncio.sleep(_SETTLE_POLL_S)
            try:
                again = await self.journal.get_payment(stored.key)
            except JournalError:
                continue
            if again is not None and again.state is not PaymentState.POSTING:
                return again
        return stored

    async def _undo_local(self, route: BillerRoute, record: PaymentRecord, posted: bool) -> None:
        if posted:
            with contextlib.suppress(BillerError):
                await route.biller.cancel_payment(record.payment_id)

    def _order(self, record: PaymentRecord) -> PaymentOrder:
        return PaymentOrder(
            payment_id=record.payment_id,
            account=record.account,
            bill_id=record.bill_id,
            amount=record.amount,
            settlement_date=record.settlement_date,
            acquirer=record.key.acquirer,
            rrn=record.key.rrn.strip(),
            channel=record.channel,
            paid_at=record.received_at,
        )

    def _approve(self, record: PaymentRecord, route: BillerRoute, receipt: str) -> None:
        record.approval_code = self.ids.approval_code()
        record.receipt = receipt
        record.customer_name = self._names.get((route.code, record.account))
        record.answer_de48 = d.approved_de48(receipt, record.customer_name)
        self._finish(record, PaymentState.APPROVED, rc.APPROVED)

    def _repeat(self, request: Message, stored: PaymentRecord, content: str) -> Message:
        if stored.content != content:
            self.counters.duplicates += 1
            return d.decline(self.rules, request, rc.DUPLICATE)
        self.counters.repeats += 1
        if stored.state is PaymentState.POSTING:  # its outcome was never recorded
            return d.decline(self.rules, request, rc.UNAVAILABLE)
        return d.payment_answer(self.rules, request, stored)

    async def _post(
        self, request: Message, route: BillerRoute, record: PaymentRecord, budget: float
    ) -> Message:
        order = self._order(record)
        asked = False
        task: ResolverTask | None = None
        t0 = self.clock.monotonic()
        # The customer's name for DE 48 CN, asked beside the posting when no inquiry of
        # this account came to this instance first (the posting does not return it).
        naming = None
        if (route.code, record.account) not in self._names:
            naming = asyncio.ensure_future(self._lookup_name(route, record.account, budget))
        try:
            async with asyncio.timeout(max(budget, 0.0)):
                async with route.slots:
                    asked = True
                    t0 = self.clock.monotonic()
                    receipt = await route.biller.post_payment(order)
        except BillerRejected as exc:
            self._observe(route.code, "post_payment", t0, "rejected")
            self._finish(record, PaymentState.DECLINED, d.refusal_code(exc))
        except (BillerError, TimeoutError, OSError, ValueError) as exc:
            if asked:
                self._observe(route.code, "post_payment", t0, _outcome(exc))
            if not asked and isinstance(exc, TimeoutError):
                # Over budget while queued for the biller: it was never asked.
                self._finish(record, PaymentState.DECLINED, rc.UNAVAILABLE)
            else:
                self._finish(record, PaymentState.UNCERTAIN, rc.UNAVAILABLE)
                task = self._resolve_task(record)
        else:
            self._observe(route.code, "post_payment", t0, "ok")
            if naming is not None:  # its own time-out: a slow name never delays the 00 long
                await asyncio.wait({naming}, timeout=_NAME_WAIT_S)
            self._approve(record, route, receipt)
        finally:
            if naming is not None and not naming.done():
                naming.cancel()
        try:
            await self.journal.finish_payment(record, task=task)
        except JournalError:
            # The biller may hold it (posted, or no answer in time): resolve it as soon as
            # the journal takes the write. A refusal, or never asked: it holds nothing.
            may_hold = asked and record.state is not PaymentState.DECLINED
            return self._unrecorded(request, record, reached_biller=may_hold)
        if task is not None:
            self.counters.uncertain += 1
            self._wake_resolver()
        return d.payment_answer(self.rules, request, record)

    async def _lookup_name(self, route: BillerRoute, account: str, budget: float) -> None:
        """Ask the biller for the account's name (LINK-SPEC 6.3 CN), into the cache; a
        failure only leaves CN out of the answer."""
        t0 = self.clock.monotonic()
        try:
            async with asyncio.timeout(max(budget, 0.0)):
                bills = await route.biller.open_bills(account)
        except (BillerError, TimeoutError, OSError, ValueError) as exc:
            self._observe(route.code, "open_bills", t0, _outcome(exc))
            return
        self._observe(route.code, "open_bills", t0, "ok")
        self._remember_name(route.code, account, bills)

    def _unrecorded(
        self, request: Message, record: PaymentRecord, *, reached_biller: bool
    ) -> Message:
        """Answer `96` for a payment whose outcome the journal refused, and hold it.

        Whatever had been decided (an approval, a refusal) was not recorded, so it
        was not given: the answer is `96` with nothing of the approval in it. If the
        biller may hold the payment, it is held as uncertain with a resolve task,
        which the resolver writes and works on as soon as the journal accepts
        writes (:mod:`billhub.pipeline.unrecorded`).
        """
        self.counters.journal_errors += 1
        record.approval_code = record.receipt = record.answer_de48 = None
        task = None
        if reached_biller:
            self._finish(record, PaymentState.UNCERTAIN, rc.MALFUNCTION)
            task = self._resolve_task(record)
        else:
            self._finish(record, PaymentState.DECLINED, rc.MALFUNCTION)
        self.unrecorded.hold(record, task)
        self._wake_resolver()
        return d.payment_answer(self.rules, request, record)

    def _wake_resolver(self) -> None:
        if self.resolver is not None:
            self.resolver.wake()

    def _observe(self, biller: str, operation: str, t0: float, outcome: str) -> None:
        self.observer.biller_call(biller, operation, self.clock.monotonic() - t0, outcome)

    def _finish(self, record: PaymentRecord, state: PaymentState, code: str) -> None:
        record.state = state
        record.response_code = code
        record.answered_at = self.clock.now()

    def _resolve_task(self, record: PaymentRecord) -> ResolverTask:
        now = self.clock.now()
        return ResolverTask(
            task_id=0,
            kind=TaskKind.RESOLVE,
            payment_id=record.payment_id,
            biller=record.biller,
            attempts=0,
            next_at=now,
            created_at=now,
            not_before_final=now + timedelta(seconds=self.quiet_period),
        )

    # -- reversal ---------------------------------------------------------------------------

    async def reversal(self, request: Message) -> Message:
        key = d.payment_key(request)
        amount = int(request.fields.get(4, "0"))
        if request.fields.get(49) != d.CURRENCY:
            return d.decline(self.rules, request, rc.FORMAT_ERROR)
        async with self.locks.hold(key):
            try:
                return await self._reverse(request, key, amount)
            except JournalError:
                self.counters.journal_errors += 1
                return d.decline(self.rules, request, rc.MALFUNCTION)

    async def _reverse(
        self, request: Message, key: PaymentKey, amount: int, *, retried: bool = False
    ) -> Message:
        previous = await self.journal.get_reversal(key)
        if previous is not None:  # a repeat: the first answer stands, nothing more changes
            self.counters.repeats += 1
            return d.decline(self.rules, request, previous.response_code)
        now = self.clock.now()
        sdate = self.calendar.settlement_date(key.settlement_mmdd) or now.date()
        payment = self.unrecorded.get(key) or await self.journal.get_payment(key)
        if payment is not None:
            payment = await self._settled(payment)
        reversal = ReversalRecord(
            key=key,
            settlement_date=sdate,
            biller=payment.biller if payment else request.fields.get(100, ""),
            amount=amount,
            received_at=now,
            response_code=rc.NO_ORIGINAL,
            payment_id=payment.payment_id if payment else None,
            booked_on=self.calendar.current or sdate,
        )
        if payment is None or payment.state is not PaymentState.APPROVED:
            # Never approved: 25, and remembered so that a late original is declined too.
            try:
                await self.journal.insert_reversal(reversal)
            except KeyTaken:
                if retried:
                    raise JournalError("a payment of this key keeps appearing") from None
                return await self._reverse(request, key, amount, retried=True)
            return d.decline(self.rules, request, rc.NO_ORIGINAL)
        if payment.amount != amount:
            return d.decline(self.rules, request, rc.INVALID_AMOUNT)  # full reversals only
        route = self.routes.get(payment.biller)
        task = None
        reversal.response_code = rc.APPROVED
        if route is not None and route.online:
            reversal.cancel_state = "pending"
            task = ResolverTask(0, TaskKind.CANCEL, payment.payment_id, payment.biller, 0, now, now)
        else:
            reversal.cancel_state = "in_file"
        await self.journal.insert_reversal(reversal, task=task)
        if task is not None:
            self._wake_resolver()
        elif route is not None:
            # The hub's own store: reopen the bills at once. Should that fail, the
            # store is rebuilt from the journal (reversed payments left out) at restart.
            with contextlib.suppress(BillerError):
                await route.biller.cancel_payment(payment.payment_id)
        return d.decline(self.rules, request, rc.APPROVED)


def _fresh(record: PaymentRecord, payment_id: str) -> PaymentRecord:
    """The payment as received, before any answer was decided for it, under a new
    payment id (the first one's posting was cancelled)."""
    return replace(
        record,
        payment_id=payment_id,
        state=PaymentState.POSTING,
        response_code=None,
        approval_code=None,
        answer_de48=None,
        receipt=None,
        customer_name=None,
        answered_at=None,
        claims=(),
    )


def _outcome(exc: BaseException) -> str:
    """A failed biller call as a metrics label."""
    if isinstance(exc, TimeoutError | BillerTimeout):
        return "timeout"
    if isinstance(exc, BillerError):
        return "unavailable"
    return "error"
