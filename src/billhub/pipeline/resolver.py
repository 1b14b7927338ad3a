"""The resolver: makes sure a biller keeps nothing the hub did not approve.

Its work lives in the journal (``tasks``), so it survives a crash and a
restart. Two kinds:

- ``RESOLVE`` an uncertain payment (answered `91`): ask the biller's payment
  status; posted → cancel; cancelled → done; unknown → done only once the
  answer is final (at once for the hub's own store, after a quiet period for a
  remote biller, whose late posting may still land).
- ``CANCEL`` a reversed payment of an online biller: cancel until confirmed.

A failed try (time-out, biller down, journal busy) is retried with exponential
back-off, forever: nothing is given up, the backlog and its age are what
operators watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from billhub.errors import BillerError, BillerRejected, JournalError
from billhub.pipeline.model import PostingStatus, Resolution, ResolverTask, TaskKind
from billhub.pipeline.ports import (
    Biller,
    Clock,
    Journal,
    NullPipelineObserver,
    PipelineObserver,
)
from billhub.pipeline.unrecorded import UnrecordedOutcomes

#: The biller operation a task's work is counted under (a status call, then a cancel).
_OPERATION = {TaskKind.RESOLVE: "payment_status", TaskKind.CANCEL: "cancel_payment"}


@dataclass
class ResolverStats:
    resolved: int = 0
    cancelled_at_biller: int = 0
    never_posted: int = 0
    reversals_confirmed: int = 0
    retries: int = 0
    #: Turns of the loop that raised something other than a journal or biller failure.
    failed_turns: int = 0
    last_failure: str | None = None


class Resolver:
    def __init__(
        self,
        journal: Journal,
        billers: Mapping[str, Biller],
        clock: Clock,
        *,
        call_timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_max: float = 60.0,
        poll_interval: float = 1.0,
        concurrency: int = 16,
        observer: PipelineObserver | None = None,
        unrecorded: UnrecordedOutcomes | None = None,
        on_turn_failed: Callable[[str], None] | None = None,
    ) -> None:
        self.journal = journal
        #: Told the error's type of each failed turn (never its text: it may hold an
        #: account), so that an operator sees the loop is in trouble.
        self.on_turn_failed = on_turn_failed
        self.unrecorded = unrecorded
        self.billers = billers
        self.clock = clock
        self.call_timeout = call_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._active: set[int] = set()
        self._workers: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.stats = ResolverStats()
        self.observer = observer or NullPipelineObserver()

    def wake(self) -> None:
        """New work was committed: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Loop until :meth:`stop`; each due task runs once at a time.

        A turn that fails in a way nobody foresaw (a journal raising outside its
        contract) is counted and the loop goes on: while the hub answers, this loop
        is what cancels at the biller what the hub did not approve, and a loop that
        ended silently once left payments answered `96` posted at the biller.
        """
        while not self._stopping:
            self._wake.clear()
            try:
                await self._turn()
            except Exception as exc:  # the next turn tries again
                self.stats.failed_turns += 1
                self.stats.last_failure = type(exc).__name__
                if self.on_turn_failed is not None:
                    self.on_turn_failed(type(exc).__name__)
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except TimeoutError:
                pass

    async def _turn(self) -> None:
        if self.unrecorded is not None:
            # Outcomes the journal refused: written (with their tasks) once it takes them.
            await self.unrecorded.flush(self.journal, self.wake)
        try:
            tasks = await self.journal.due_tasks(self.clock.now())
        except JournalError:
            tasks = []
        for task in tasks:
            if task.task_id in self._active:
                continue
            self._active.add(task.task_id)
            worker = asyncio.get_running_loop().create_task(self._run_one(task))
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for w in list(self._workers):
            w.cancel()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)

    async def run_until_idle(self, timeout: float) -> None:
        """Work until no task is open (tests, the demo, shutdown); raises TimeoutError."""
        async with asyncio.timeout(timeout):
            while True:
                held = len(self.unrecorded) if self.unrecorded is not None else 0
                if not held and not await self.journal.open_tasks():
                    return
                self.wake()
                await asyncio.sleep(0.02)

    async def _run_one(self, task: ResolverTask) -> None:
        try:
            async with self._slots:
                await self._attempt(task)
        finally:
            self._active.discard(task.task_id)

    async def _attempt(self, task: ResolverTask) -> None:
        biller = self.billers.get(task.biller)
        t0 = self.clock.monotonic()
        try:
            if biller is None:
                raise BillerError(f"biller {task.biller} is not configured")
            async with asyncio.timeout(self.call_timeout):
                if task.kind is TaskKind.RESOLVE:
                    await self._resolve(task, biller)
                else:
                    await self._cancel(task, biller)
            self.observer.biller_call(task.biller, _OPERATION[task.kind], self._since(t0), "ok")
        except (BillerError, TimeoutError, JournalError, OSError) as exc:
            outcome = "timeout" if isinstance(exc, TimeoutError) else "unavailable"
            if isinstance(exc, BillerRejected):
                outcome = "rejected"
            if biller is not None and not isinstance(exc, JournalError):
                self.observer.biller_call(
                    task.biller, _OPERATION[task.kind], self._since(t0), outcome
                )
            await self._retry(task, type(exc).__name__)

    def _since(self, t0: float) -> float:
        return self.clock.monotonic() - t0

    async def _resolve(self, task: ResolverTask, biller: Biller) -> None:
        status = await biller.payment_status(task.payment_id)
        if status.status is PostingStatus.POSTED:
            try:
                await biller.cancel_payment(task.payment_id)
            except BillerRejected as exc:
                if exc.code != "unknown_payment":
                    raise
            self.stats.cancelled_at_biller += 1
            await self._done(task, Resolution.CANCELLED)
        elif status.status is PostingStatus.CANCELLED:
            await self._done(task, Resolution.CANCELLED)
        else:
            now = self.clock.now()
            final_at = task.not_before_final
            if biller.status_is_authoritative or final_at is None or now >= final_at:
                self.stats.never_posted += 1
                await self._done(task, Resolution.NEVER_POSTED)
            else:  # a late posting may still land: look again once it would have
                task.attempts += 1
                task.next_at = min(final_at, now + self._backoff(task.attempts))
                task.detail["last"] = "unknown"
                await self.journal.reschedule_task(task)

    async def _done(self, task: ResolverTask, resolution: Resolution) -> None:
        payment = await self.journal.get_payment_by_id(task.payment_id)
        if payment is None:
            raise JournalError(f"payment {task.payment_id} missing")
        payment.resolution = resolution
        task.attempts += 1
        task.next_at = self.clock.now()
        await self.journal.complete_task(task, outcome=resolution.value, payment=payment)
        self.stats.resolved += 1

    async def _cancel(self, task: ResolverTask, biller: Biller) -> None:
        outcome = "cancelled"
        try:
            await biller.cancel_payment(task.payment_id)
        except BillerRejected as exc:
            if exc.code != "unknown_payment":
                raise
            outcome = "not_held"
        payment = await self.journal.get_payment_by_id(task.payment_id)
        task.attempts += 1
        task.next_at = self.clock.now()
        await self.journal.complete_task(
            task, outcome=outcome, reversal_key=payment.key if payment else None
        )
        self.stats.reversals_confirmed += 1

    async def _retry(self, task: ResolverTask, why: str) -> None:
        self.stats.retries += 1
        task.attempts += 1
        task.next_at = self.clock.now() + self._backoff(task.attempts)
        task.detail["last"] = why
        try:
            await self.journal.reschedule_task(task)
        except JournalError:
            pass  # still due in the journal: the next poll takes it again

    def _backoff(self, attempts: int) -> timedelta:
        seconds = min(self.backoff_max, self.backoff_base * (2 ** min(attempts - 1, 20)))
        return timedelta(seconds=seconds)

    async def backlog(self) -> tuple[int, datetime | None]:
        """Open tasks and the creation time of the oldest: what operators alert on."""
        tasks = await self.journal.open_tasks()
        oldest = min((t.created_at for t in tasks), default=None)
        held = self.unrecorded.pending_tasks() if self.unrecorded is not None else 0
        return len(tasks) + held, oldest
