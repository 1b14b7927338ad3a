"""Outcomes the journal could not record: held in memory, written as soon as it can.

When the journal refuses a write (disk full, I/O error, a lock held too long) a
payment is answered `96` (specs/READINGS.md, "journal cannot write"). Two
things must still hold while the journal is failing, and both live here:

- *the answer stands*: a repeat of that key (0200 again or 0201, on any link of
  this process) gets the same `96`, never a `91` or a later `00`. The pipeline
  asks :meth:`UnrecordedOutcomes.get` under the key's lock before the journal;
- *the biller keeps nothing*: a payment whose posting may have reached the
  biller is held with a ``RESOLVE`` task. Once the journal accepts writes again,
  :meth:`UnrecordedOutcomes.flush` (the resolver calls it every turn) writes the
  payment and its task in one commit, and the resolver settles it with the
  biller like any uncertain payment, without a restart.

Only what could have reached a biller is precious. Declines that never reached
one are kept too (so that their answer stands), but at most ``max_declines`` of
them: past that the oldest is forgotten, which at worst lets a repeat of it be
decided afresh. Entries with a task are never dropped.

Should the process die while holding entries, the journal still has what it had:
a ``POSTING`` intent becomes uncertain (`91`) at start-up and is resolved, and a
key that never reached the journal is unknown, as it would be to any new hub.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from billhub.pipeline.model import PaymentKey, PaymentRecord, ResolverTask
from billhub.pipeline.ports import Journal


@dataclass(slots=True)
class _Held:
    record: PaymentRecord
    task: ResolverTask | None


class UnrecordedOutcomes:
    """Payments answered while the journal could not write, by key, until written."""

    def __init__(self, *, max_declines: int = 100_000) -> None:
        self.max_declines = max_declines
        self._held: OrderedDict[PaymentKey, _Held] = OrderedDict()
        self._flushing = asyncio.Lock()
        #: Entries forgotten because of ``max_declines`` (declines that reached no biller).
        self.dropped = 0
        #: Entries written to the journal since start.
        self.written = 0

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, record: PaymentRecord, task: ResolverTask | None) -> None:
        """Keep ``record`` (its answer already decided) and ``task`` until written."""
        self._held[record.key] = _Held(record, task)
        self._held.move_to_end(record.key)
        if len(self._held) > self.max_declines:
            self._drop_oldest_decline()

    def get(self, key: PaymentKey) -> PaymentRecord | None:
        """The held answer of ``key``, if this process answered it without recording it."""
        held = self._held.get(key)
        return held.record if held is not None else None

    def pending_tasks(self) -> int:
        """Held payments the biller may hold: what operators must see resolved."""
        return sum(1 for h in self._held.values() if h.task is not None)

    async def flush(self, journal: Journal, on_task: Callable[[], None] = lambda: None) -> int:
        """Write every held entry; returns how many were written.

        Each entry is written with its task in one commit; an entry whose write
        fails stays held for the next flush. ``on_task`` is called when a task
        reached the journal (the resolver wakes up for it).
        """
        if not self._held:
            return 0
        async with self._flushing:
            entries = list(self._held.values())
            results = await asyncio.gather(
                *(journal.write_outcome(h.record, task=h.task) for h in entries),
                return_exceptions=True,
            )
            written = 0
            for held, result in zip(entries, results, strict=True):
                if isinstance(result, BaseException):
                    continue  # still held: the next flush tries again
                if self._held.get(held.record.key) is held:
                    del self._held[held.record.key]
                written += 1
                if held.task is not None:
                    on_task()
            self.written += written
            return written

    def _drop_oldest_decline(self) -> None:
        for key, held in self._held.items():
            if held.task is None:
                del self._held[key]
                self.dropped += 1
                return
