"""Load: requests over L links for T seconds (or N requests), with latency percentiles.

Two engines drive the hub:

``run_load`` (engine ``link``)
    Each request is a :class:`Message` sent through :class:`SwitchLink` (the
    sans-IO :class:`Link` core and :class:`Codec`, i.e. pyiso8583). Exact, but
    it costs about as much CPU per message as the hub does, so on a small machine
    it measures itself.

``run_fast_load`` (engine ``fast``, the default of ``billhub switch load``)
    The same switch speaking the same protocol, cheaply. Each link connects and
    signs on through :class:`SwitchLink`; the same TLS connection is then handed
    to a :class:`FastLink`, which

    * sends requests made from templates: each request shape is encoded once by
      :meth:`Codec.frame` and then copied and patched per send at offsets found by
      walking the template's bitmap (DE 7, 11, 12, 13 and 37; for payments also
      DE 4, 102 and 48, whose lengths the template fixes);
    * reads answers with a minimal parser that walks the bitmap and the field
      lengths of the :class:`LinkSpec` (fixed lengths, LLVAR/LLLVAR prefixes) up
      to the last field it needs (DE 7, 11, 37, 39, 70), no pyiso8583;
    * matches answers on MTI class + DE 7 + DE 11 (LINK-SPEC 1);
    * writes every request made while handling one chunk of answers in one write;
    * formats DE 7, 12 and 13 once per second, not per request;
    * answers the hub's echo tests (0800/301) with 0810 ``00`` echoing DE 7, 11
      and 70 (decoded and encoded with the codec: they are rare).

    Every answer is checked: its DE 39 against the code expected for that
    request (``unexpected``, unless :meth:`Workload.excused` says the run made it
    right meanwhile: ``excused``), and its DE 37 against the request's
    (``rrn_mismatch``; ``rrn_missing`` when the answer lacks it).

Closed loop (default): each link keeps its share of ``in_flight`` requests
outstanding; as soon as an answer arrives the next request goes out, so
throughput is what the hub sustains at that concurrency. Open loop
(``rate``): requests leave on a schedule of ``rate`` per second whatever the
answers, up to ``in_flight`` outstanding, so latency is measured at a chosen load.
Latency is measured per request from its write to the arrival of the chunk that
held its answer.

Workloads for ``run_fast_load`` (:func:`make_workload`): ``echo``; ``inquiry`` of
one account; and, from demo subscribers (:func:`~billhub.simulator.demo_data.generate_accounts`
with the same prefix, count, seed and ``today`` as the biller's), ``inquiry``,
``payment`` and ``mix``. A payment pays one open bill of an active account, named
by DE 48 ``BI``, for that bill's amount, with a unique RRN and DE 15 the settlement
date; each bill is paid once, in order, and once every bill has been used the
workload starts over (those payments are expected to get ``51``).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from billhub.errors import BillhubError, DecodeError, LocalProtocolError
from billhub.iso8583.codec import Codec
from billhub.iso8583.de48 import build_tlv
from billhub.iso8583.message import Message
from billhub.iso8583.spec import LinkSpec
from billhub.link.responses import make_response
from billhub.simulator import messages as m
from billhub.simulator.demo_data import DemoAccount
from billhub.simulator.switch import SwitchLink

RequestFactory = Callable[[int], Message]


@dataclass
class LoadResult:
    links: int
    in_flight: int
    seconds: float
    sent: int = 0
    answered: int = 0
    failed: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Latency in seconds at percentile ``p`` (0-100), nearest-rank."""
        return _percentile(sorted(self.latencies), p)

    def summary(self) -> dict[str, object]:
        return {
            "links": self.links,
            "in_flight": self.in_flight,
            "seconds": round(self.seconds, 3),
            "answered": self.answered,
            "failed": self.failed,
            "throughput_per_s": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50) * 1000, 3),
            "p99_ms": round(self.percentile(99) * 1000, 3),
            "p999_ms": round(self.percentile(99.9) * 1000, 3),
            "codes": dict(self.codes),
        }

    def line(self) -> str:
        s = self.summary()
        return (
            f"{s['answered']} answered in {s['seconds']} s over {self.links} link(s), "
            f"{self.in_flight} in flight: {s['throughput_per_s']}/s, p50 {s['p50_ms']} ms, "
            f"p99 {s['p99_ms']} ms, p99.9 {s['p999_ms']} ms, failed {self.failed}, "
            f"codes {json.dumps(s['codes'], sort_keys=True)}"
        )


def _percentile(data: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted ``data``; 0.0 when empty."""
    if not data:
        return 0.0
    k = max(0, min(len(data) - 1, round(p / 100 * len(data) + 0.5) - 1))
    return data[k]


async def run_load(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    codec: Codec,
    make_request: RequestFactory,
    *,
    links: int = 2,
    in_flight: int = 64,
    duration: float = 5.0,
    warmup: float = 0.5,
    sign_on: bool = True,
    timeout: float = 30.0,
) -> LoadResult:
    """Drive the hub; counts only what completes after ``warmup`` and before the end."""
    loop = asyncio.get_running_loop()
    conns = [await SwitchLink.connect(host, port, ssl_context, codec) for _ in range(links)]
    if sign_on:
        for c in conns:
            await c.sign_on()
    result = LoadResult(links, in_flight, duration)
    start = loop.time() + warmup
    end = start + duration
    seq = 0

    async def worker(conn: SwitchLink) -> None:
        nonlocal seq
        while True:
            seq += 1
            msg = make_request(seq)
            t0 = loop.time()
            if t0 >= end:
                return
            try:
                resp = await conn.request(msg, timeout)
            except BillhubError:
                if t0 >= start:
                    result.failed += 1
                if conn.is_closed:
                    return
                continue
            t1 = loop.time()
            if t0 >= start and t1 <= end:
                result.answered += 1
                result.latencies.append(t1 - t0)
                result.codes[resp.fields.get(39, "--")] += 1

    workers = [worker(conns[i % links]) for i in range(in_flight)]
    await asyncio.gather(*workers)
    result.sent = seq
    for c in conns:
        await c.close()
    return result


# =========================================================================== fast engine

ECHO, INQUIRY, PAYMENT = 0, 1, 2
KIND_NAMES = ("echo", "inquiry", "payment")

# Slots of the fields the answer parser locates.
_S7, _S11, _S37, _S39, _S70 = 0, 1, 2, 3, 4
_WANTED = {7: _S7, 11: _S11, 37: _S37, 39: _S39, 70: _S70}

Expect = frozenset[bytes] | None
# (t0, kind, ref, rrn, expected codes); ref is a payment's bill index, an inquiry's
# account index (DemoWorkload), else -1.
Pending = tuple[float, int, int, bytes | None, Expect]
# What a workload says of a request it emitted: (match key, kind, ref, rrn, expected codes).
Emit = tuple[bytes, int, int, bytes | None, Expect]
# One step of a parse plan: (length-prefix digits, fixed length, slot or -1).
Step = tuple[int, int, int]

_PLACEHOLDER_DE7 = "0101000000"
_PLACEHOLDER_RRN = "000000000000"


class Layout:
    """Where fields sit in a message of a :class:`LinkSpec`, found without pyiso8583.

    Walks the bitmaps and, field by field, the spec's fixed lengths and ASCII
    length prefixes. A parse *plan* per bitmap (cached: a load sees a handful)
    merges runs of unwanted fixed fields into one skip and stops after the last
    wanted field, so locating DE 7/11/37/39 in an answer is a few slices.
    """

    def __init__(self, spec: LinkSpec) -> None:
        self.header = spec.length_header
        self.prefix = [0] * 129
        self.length = [0] * 129
        self.defined = [False] * 129
        for key, f in spec.fields.items():
            if key.isdigit() and key != "1":
                n = int(key)
                self.prefix[n], self.length[n], self.defined[n] = f.prefix, f.length, True
        self._plans: dict[bytes, tuple[tuple[Step, ...], int]] = {}

    @staticmethod
    def present(data: bytes, s: int) -> tuple[list[int], int]:
        """The field numbers present (2-128, in order) and where the first one starts."""
        primary = int.from_bytes(data[s + 4 : s + 12], "big")
        bits = primary
        pos = s + 12
        fields = [n for n in range(2, 65) if bits >> (64 - n) & 1]
        if primary >> 63:
            secondary = int.from_bytes(data[s + 12 : s + 20], "big")
            pos = s + 20
            fields += [n for n in range(65, 129) if secondary >> (128 - n) & 1]
        return fields, pos

    def offsets(self, data: bytes, s: int, e: int) -> dict[int, tuple[int, int]]:
        """Every field's value as (offset, length), prefixes excluded; ValueError if broken."""
        fields, pos = self.present(data, s)
        out: dict[int, tuple[int, int]] = {}
        for n in fields:
            if not self.defined[n]:
                raise ValueError(f"DE {n} is not in the spec")
            pre = self.prefix[n]
            ln = self.length[n]
            if pre:
                ln = int(data[pos : pos + pre])
                pos += pre
            out[n] = (pos, ln)
            pos += ln
        if pos != e:
            raise ValueError("fields do not fill the message")
        return out

    def plan(self, data: bytes, s: int) -> tuple[tuple[Step, ...], int]:
        """The parse plan for this message's bitmaps, and its body offset from ``s``."""
        secondary = data[s + 4] & 0x80
        bitmap = data[s + 4 : s + (20 if secondary else 12)]
        cached = self._plans.get(bitmap)
        if cached is not None:
            return cached
        fields, pos = self.present(data, s)
        wanted = [n for n in fields if n in _WANTED]
        last = wanted[-1] if wanted else 0
        steps: list[Step] = []
        skip = 0
        for n in fields:
            if n > last:
                break
            if not self.defined[n]:
                raise ValueError(f"DE {n} is not in the spec")
            pre, ln, slot = self.prefix[n], self.length[n], _WANTED.get(n, -1)
            if pre == 0 and slot < 0:
                skip += ln
                continue
            if skip:
                steps.append((0, skip, -1))
                skip = 0
            steps.append((pre, ln, slot))
        plan = (tuple(steps), pos - s)
        if len(self._plans) < 256:
            self._plans[bitmap] = plan
        return plan

    def locate(self, data: bytes, s: int, e: int) -> list[int]:
        """Offsets of DE 7, 11, 37, 39, 70 (-1 when absent) in the message data[s:e]."""
        steps, body = self.plan(data, s)
        off = [-1, -1, -1, -1, -1]
        pos = s + body
        for pre, size, slot in steps:
            if slot >= 0:
                off[slot] = pos + pre
            pos += pre + (int(data[pos : pos + pre]) if pre else size)
        if pos > e:
            raise ValueError("message cut short")
        return off


class WireClock:
    """DE 7 (MMDDhhmmss), DE 12 (hhmmss) and DE 13 (MMDD), UTC, re-formatted once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.de7 = self.de12 = self.de13 = b""
        self.tick(time.time())

    def tick(self, wall: float) -> None:
        sec = int(wall)
        if sec == self.second:
            return
        self.second = sec
        t = time.gmtime(sec)
        self.de13 = b"%02d%02d" % (t.tm_mon, t.tm_mday)
        self.de12 = b"%02d%02d%02d" % (t.tm_hour, t.tm_min, t.tm_sec)
        self.de7 = self.de13 + self.de12


class Template:
    """One request shape, encoded once by the codec; patched per send."""

    def __init__(self, codec: Codec, layout: Layout, msg: Message) -> None:
        msg = msg.copy()
        msg.fields.setdefault(7, _PLACEHOLDER_DE7)
        msg.fields.setdefault(11, "000000")
        self.frame = codec.frame(msg)
        self.cls = self.frame[layout.header : layout.header + 2]
        self.slots = layout.offsets(self.frame, layout.header, len(self.frame))

        def at(n: int) -> int:
            return self.slots[n][0] if n in self.slots else -1

        self.o7, self.o11, self.o12, self.o13, self.o37 = at(7), at(11), at(12), at(13), at(37)
        self.o4, self.o48, self.o102 = at(4), at(48), at(102)
        self.has_rrn = self.o37 >= 0

    def emit(self, out: bytearray, clock: WireClock, stan: bytes, rrn: bytes | None) -> int:
        """Append this request with the clock's DE 7/12/13, ``stan`` and ``rrn``; its offset."""
        base = len(out)
        out += self.frame
        o = base + self.o7
        out[o : o + 10] = clock.de7
        o = base + self.o11
        out[o : o + 6] = stan
        if self.o12 >= 0:
            o = base + self.o12
            out[o : o + 6] = clock.de12
        if self.o13 >= 0:
            o = base + self.o13
            out[o : o + 4] = clock.de13
        if rrn is not None and self.has_rrn:
            o = base + self.o37
            out[o : o + 12] = rrn
        return base


class Workload:
    """What to send next. Subclasses append one request to ``out`` and say what it was."""

    name = "workload"

    def emit(self, out: bytearray, clock: WireClock, stan: bytes) -> Emit:
        """Append one framed request; return (match key, kind, ref, rrn, expected codes)."""
        raise NotImplementedError

    def settle(self, ref: int, code: bytes) -> None:
        """A payment's answer arrived (``ref`` as emitted)."""

    def failed(self, ref: int) -> None:
        """A payment got no answer."""

    def excused(self, kind: int, ref: int, code: bytes) -> bool:
        """Whether an answer whose code was not among those expected when the request
        went out is right after all, by what the run did while it was in flight
        (asked only on a mismatch, so it costs nothing per answer)."""
        return False

    def state(self) -> dict[str, object]:
        return {}


_ONLY_00: frozenset[bytes] = frozenset({b"00"})
_ONLY_51: frozenset[bytes] = frozenset({b"51"})
_ONLY_58: frozenset[bytes] = frozenset({b"58"})
_00_OR_51: frozenset[bytes] = frozenset({b"00", b"51"})


def _expect_of(code: str | None) -> Expect:
    return None if code is None else frozenset({code.encode("ascii")})


class RrnSource:
    """RRNs (an 12) unique per run: a 4-digit tag then an 8-digit counter."""

    def __init__(self, tag: int) -> None:
        if not 0 <= tag <= 9999:
            raise ValueError("rrn tag must be 0-9999")
        self.tag = tag
        self.n = 0

    def __call__(self) -> bytes:
        self.n += 1
        return b"%04d%08d" % (self.tag, self.n % 100_000_000)


class EchoWorkload(Workload):
    name = "echo"

    def __init__(self, codec: Codec, layout: Layout, expect: str | None = "00") -> None:
        self.tpl = Template(codec, layout, Message("0800", {70: "301"}))
        self.expect = _expect_of(expect)

    def emit(self, out: bytearray, clock: WireClock, stan: bytes) -> Emit:
        self.tpl.emit(out, clock, stan, None)
        return self.tpl.cls + clock.de7 + stan, ECHO, -1, None, self.expect


class OneAccountInquiry(Workload):
    """Inquiries of one account (the engine ``link`` behaviour); codes unchecked by default."""

    name = "inquiry"

    def __init__(
        self,
        codec: Codec,
        layout: Layout,
        *,
        biller: str,
        account: str,
        rrns: RrnSource,
        acq: m.Acquirer,
        expect: str | None = None,
    ) -> None:
        self.tpl = Template(codec, layout, m.inquiry(biller, account, _PLACEHOLDER_RRN, acq))
        self.rrns = rrns
        self.expect = _expect_of(expect)

    def emit(self, out: bytearray, clock: WireClock, stan: bytes) -> Emit:
        rrn = self.rrns()
        self.tpl.emit(out, clock, stan, rrn)
        return self.tpl.cls + clock.de7 + stan, INQUIRY, -1, rrn, self.expect


class DemoWorkload(Workload):
    """Inquiries and payments over demo subscribers, with the answer each should get.

    Inquiries cycle over every account a biller knows (active, paid-up, blocked,
    closed with a bill): expected ``58`` for blocked or closed, ``51`` for an active
    account with nothing left unpaid (by the demo data and by this run's approved
    payments), else ``00`` (``00`` or ``51`` while its last bills are being paid).
    An inquiry expected ``00`` and answered ``51`` is excused (:meth:`excused`) when,
    by its answer, payments sent after it have taken the account's last bills: with
    several requests in flight, on several links, the hub may handle a later payment
    first, and ``51`` is then the true answer.
    Payments go through the open bills of active accounts in order, one per bill;
    expected ``00``, or ``51`` for a bill already paid. Bills before
    ``bill_offset`` are taken as paid by an earlier run against the same hub.
    """

    def __init__(
        self,
        codec: Codec,
        layout: Layout,
        *,
        biller: str,
        accounts: Sequence[DemoAccount],
        payment_share: float,
        settlement_date: str,
        rrns: RrnSource,
        acq: m.Acquirer,
        bill_offset: int = 0,
        account_offset: int = 0,
        expect: str | None = None,
    ) -> None:
        if not 0.0 <= payment_share <= 1.0:
            raise ValueError("payment share must be within 0..1")
        self.codec, self.layout, self.biller, self.acq = codec, layout, biller, acq
        self.mmdd = settlement_date
        self.rrns = rrns
        self.share = payment_share
        self.name = (
            "payment" if payment_share >= 1.0 else "inquiry" if payment_share <= 0 else "mix"
        )
        self.override = _expect_of(expect)
        self.accounts = list(accounts)
        # Inquiries: every account the biller knows (a closed account without bills is
        # in no bills file: a batch biller would answer 14, a REST biller 58).
        self.asked = [i for i, a in enumerate(self.accounts) if a.status == "active" or a.bills]
        self.blocked = [a.status != "active" for a in self.accounts]
        # Payments: every open bill of every active account, as (account index, bill).
        self.bills = [
            (i, b) for i, a in enumerate(self.accounts) if a.status == "active" for b in a.bills
        ]
        self.unpaid = [len(a.bills) if a.status == "active" else 0 for a in self.accounts]
        self.paying = [0] * len(self.accounts)
        self.bill_state = bytearray(len(self.bills))  # 0 open, 1 being paid, 2 paid
        if payment_share > 0 and not self.bills:
            raise ValueError("no open bill of an active account to pay")
        if payment_share < 1 and not self.asked:
            raise ValueError("no account to ask about")
        for j in range(min(bill_offset, len(self.bills))):
            self.bill_state[j] = 2
            self.unpaid[self.bills[j][0]] -= 1
        self.next_bill = bill_offset
        self.next_account = account_offset
        self._acc = 0.0
        self.wrapped = 0
        self._inq: dict[int, Template] = {}
        self._pay: dict[tuple[int, int], Template] = {}
        self._self_check()

    # -- templates ---------------------------------------------------------------

    def _inquiry_tpl(self, account: str) -> Template:
        tpl = self._inq.get(len(account.encode()))
        if tpl is None:
            msg = m.inquiry(self.biller, account, _PLACEHOLDER_RRN, self.acq)
            tpl = self._inq[len(account.encode())] = Template(self.codec, self.layout, msg)
        return tpl

    def _payment_tpl(self, account: str, bill_id: str) -> Template:
        shape = (len(account.encode()), len(bill_id.encode()))
        tpl = self._pay.get(shape)
        if tpl is None:
            msg = m.payment(
                self.biller, account, _PLACEHOLDER_RRN, 1, self.mmdd, bill_id=bill_id, acq=self.acq
            )
            tpl = self._pay[shape] = Template(self.codec, self.layout, msg)
        return tpl

    def _self_check(self) -> None:
        """Patched templates must equal what the codec encodes: checked on a sample."""
        clock = WireClock()
        rrn = b"000000000042"
        for j in range(0, len(self.bills), max(1, len(self.bills) // 16)):
            i, bill = self.bills[j]
            acc = self.accounts[i]
            out = bytearray()
            self._emit_payment(
                out,
                clock,
                b"000042",
                rrn=rrn,
                account=acc.account,
                bill_id=bill.bill_id,
                amount=bill.amount,
            )
            want = m.payment(
                self.biller,
                acc.account,
                rrn.decode(),
                bill.amount,
                self.mmdd,
                bill_id=bill.bill_id,
                acq=self.acq,
            )
            self._check(out, want, clock)
        for k in range(0, len(self.asked), max(1, len(self.asked) // 16)):
            acc = self.accounts[self.asked[k]]
            out = bytearray()
            self._emit_inquiry(out, clock, b"000042", rrn, acc.account)
            self._check(out, m.inquiry(self.biller, acc.account, rrn.decode(), self.acq), clock)

    def _check(self, out: bytearray, want: Message, clock: WireClock) -> None:
        want.fields[7] = clock.de7.decode()
        want.fields[11] = "000042"
        want.fields[12] = clock.de12.decode()
        want.fields[13] = clock.de13.decode()
        if bytes(out) != self.codec.frame(want):
            raise LocalProtocolError("a patched request template differs from the codec's")

    # -- requests ------------------------------------------------------------------

    def _emit_inquiry(
        self, out: bytearray, clock: WireClock, stan: bytes, rrn: bytes, account: str
    ) -> Template:
        tpl = self._inquiry_tpl(account)
        base = tpl.emit(out, clock, stan, rrn)
        a = account.encode()
        o = base + tpl.o102
        out[o : o + len(a)] = a
        return tpl

    def _emit_payment(
        self,
        out: bytearray,
        clock: WireClock,
        stan: bytes,
        *,
        rrn: bytes,
        account: str,
        bill_id: str,
        amount: int,
    ) -> Template:
        tpl = self._payment_tpl(account, bill_id)
        base = tpl.emit(out, clock, stan, rrn)
        o = base + tpl.o4
        out[o : o + 12] = b"%012d" % amount
        a = account.encode()
        o = base + tpl.o102
        out[o : o + len(a)] = a
        v = build_tlv([("BI", bill_id)]).encode()
        o = base + tpl.o48
        out[o : o + len(v)] = v
        return tpl

    def emit(self, out: bytearray, clock: WireClock, stan: bytes) -> Emit:
        rrn = self.rrns()
        self._acc += self.share
        if self._acc >= 1.0:
            self._acc -= 1.0
            j = self.next_bill % len(self.bills)
            if j == 0 and self.next_bill:
                self.wrapped += 1
            self.next_bill += 1
            i, bill = self.bills[j]
            acc = self.accounts[i]
            state = self.bill_state[j]
            expect = _ONLY_00 if state == 0 else _ONLY_51 if state == 2 else _00_OR_51
            if state == 0:
                self.bill_state[j] = 1
                self.paying[i] += 1
            tpl = self._emit_payment(
                out,
                clock,
                stan,
                rrn=rrn,
                account=acc.account,
                bill_id=bill.bill_id,
                amount=bill.amount,
            )
            ref = j if state == 0 else -1
            return tpl.cls + clock.de7 + stan, PAYMENT, ref, rrn, self.override or expect
        i = self.asked[self.next_account % len(self.asked)]
        self.next_account += 1
        acc = self.accounts[i]
        if self.blocked[i]:
            expect = _ONLY_58
        elif self.unpaid[i] > self.paying[i]:
            expect = _ONLY_00
        elif self.unpaid[i] == 0:
            expect = _ONLY_51
        else:
            expect = _00_OR_51
        tpl = self._emit_inquiry(out, clock, stan, rrn, acc.account)
        return tpl.cls + clock.de7 + stan, INQUIRY, i, rrn, self.override or expect

    def settle(self, ref: int, code: bytes) -> None:
        if ref < 0:
            return
        i = self.bills[ref][0]
        self.paying[i] -= 1
        if code in (b"00", b"51"):  # approved now, or paid before
            self.bill_state[ref] = 2
            self.unpaid[i] -= 1
        else:
            self.bill_state[ref] = 0

    def failed(self, ref: int) -> None:
        if ref >= 0:
            self.paying[self.bills[ref][0]] -= 1
            self.bill_state[ref] = 0

    def excused(self, kind: int, ref: int, code: bytes) -> bool:
        """An inquiry's ``51`` is right if every bill of its account not yet paid is
        being paid now: a payment sent after the inquiry took the last of them. An
        account with a bill nobody is paying answered ``51`` stays unexpected."""
        if kind != INQUIRY or ref < 0 or code != b"51" or self.override is not None:
            return False
        return not self.blocked[ref] and self.unpaid[ref] <= self.paying[ref]

    def state(self) -> dict[str, object]:
        return {
            "next_bill": self.next_bill,
            "next_account": self.next_account,
            "bills": len(self.bills),
            "bills_paid": self.bill_state.count(2),
            "accounts_asked": len(self.asked),
            "bill_cycles_wrapped": self.wrapped,
        }


def make_workload(
    codec: Codec,
    kind: str,
    *,
    biller: str = "100001",
    account: str = "0100123456",
    accounts: Sequence[DemoAccount] | None = None,
    payment_share: float = 0.5,
    settlement_date: str = "0101",
    rrn_tag: int = 0,
    acq: m.Acquirer | None = None,
    bill_offset: int = 0,
    account_offset: int = 0,
    expect: str | None = None,
) -> Workload:
    """The workload of a ``load`` kind: echo, inquiry, payment or mix."""
    layout = Layout(codec.spec)
    acq = acq or m.Acquirer()
    if kind == "echo":
        return EchoWorkload(codec, layout, expect or "00")
    rrns = RrnSource(rrn_tag)
    if kind == "inquiry" and not accounts:
        return OneAccountInquiry(
            codec, layout, biller=biller, account=account, rrns=rrns, acq=acq, expect=expect
        )
    if not accounts:
        raise ValueError(f"load kind {kind} needs demo accounts (--accounts N)")
    share = {"inquiry": 0.0, "payment": 1.0}.get(kind, payment_share)
    return DemoWorkload(
        codec,
        layout,
        biller=biller,
        accounts=accounts,
        payment_share=share,
        settlement_date=settlement_date,
        rrns=rrns,
        acq=acq,
        bill_offset=bill_offset,
        account_offset=account_offset,
        expect=expect,
    )


@dataclass
class FastLoadResult(LoadResult):
    """A :class:`LoadResult` with the fast engine's checks and per-kind numbers."""

    engine: str = "fast"
    kind: str = ""
    rate: float = 0.0
    total_answered: int = 0
    timed_out: int = 0
    unanswered: int = 0
    unmatched: int = 0
    malformed: int = 0
    rrn_mismatch: int = 0
    rrn_missing: int = 0
    echoes_answered: int = 0
    hub_requests: int = 0
    cap_hits: int = 0
    max_behind: int = 0
    unexpected: dict[str, Counter[str]] = field(default_factory=dict)
    # Answers not among the codes expected at sending, yet right by what the run did
    # while they were in flight (Workload.excused): shown, so that a reader sees them.
    excused: int = 0
    by_kind_codes: dict[str, Counter[str]] = field(default_factory=dict)
    all_codes: dict[str, Counter[str]] = field(default_factory=dict)
    by_kind_latencies: dict[str, list[float]] = field(default_factory=dict)
    workload_state: dict[str, object] = field(default_factory=dict)
    sign_on_codes: Counter[str] = field(default_factory=Counter)
    window: dict[str, float] = field(default_factory=dict)
    _sorted: list[float] | None = field(default=None, repr=False)

    def percentile(self, p: float) -> float:
        if self._sorted is None or len(self._sorted) != len(self.latencies):
            self._sorted = sorted(self.latencies)
        return _percentile(self._sorted, p)

    def summary(self) -> dict[str, object]:
        s = super().summary()
        by_kind: dict[str, object] = {}
        for name, lat in self.by_kind_latencies.items():
            data = sorted(lat)
            by_kind[name] = {
                "answered": len(data),
                "p50_ms": round(_percentile(data, 50) * 1000, 3),
                "p99_ms": round(_percentile(data, 99) * 1000, 3),
                "p999_ms": round(_percentile(data, 99.9) * 1000, 3),
                "max_ms": round(data[-1] * 1000, 3) if data else 0.0,
                "codes": dict(self.by_kind_codes.get(name, Counter())),
            }
        s.update(
            {
                "max_ms": round(self.percentile(100) * 1000, 3),
                "engine": self.engine,
                "kind": self.kind,
                "rate": self.rate,
                "sent": self.sent,
                "total_answered": self.total_answered,
                "timed_out": self.timed_out,
                "unanswered": self.unanswered,
                "unmatched": self.unmatched,
                "malformed": self.malformed,
                "unexpected": {k: dict(v) for k, v in self.unexpected.items() if v},
                "unexpected_total": sum(sum(v.values()) for v in self.unexpected.values()),
                "excused": self.excused,
                "rrn_mismatch": self.rrn_mismatch,
                "rrn_missing": self.rrn_missing,
                "echoes_answered": self.echoes_answered,
                "hub_requests": self.hub_requests,
                "cap_hits": self.cap_hits,
                "max_behind": self.max_behind,
                "by_kind": by_kind,
                "all_codes": {k: dict(v) for k, v in self.all_codes.items()},
                "workload": self.workload_state,
                "sign_on_codes": dict(self.sign_on_codes),
                "window": self.window,
            }
        )
        return s

    def line(self) -> str:
        s = self.summary()
        return (
            super().line()
            + f", unexpected {s['unexpected_total']}, rrn mismatches {self.rrn_mismatch}"
            + f" (+{self.rrn_missing} missing), unmatched {self.unmatched}"
        )


class _Run:
    """State shared by the links of one fast run."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        workload: Workload,
        codec: Codec,
        result: FastLoadResult,
        count: int,
    ) -> None:
        self.loop = loop
        self.workload = workload
        self.codec = codec
        self.layout = Layout(codec.spec)
        self.result = result
        self.clock = WireClock()
        self.start = float("inf")
        self.end = float("inf")
        self.closed_loop = True
        self.sending = False
        self.count = count  # requests still allowed (counted from the window start); <0: no cap
        self.last_answer = 0.0
        self.requests = frozenset(
            mti.encode("ascii") for mti in codec.spec.rules.responses
        )  # request MTIs: a frame with one of these is the hub asking us
        self.lat: list[list[float]] = [[], [], []]
        self.codes: list[dict[bytes, int]] = [{}, {}, {}]
        self.bad: list[dict[bytes, int]] = [{}, {}, {}]
        self.every: list[dict[bytes, int]] = [{}, {}, {}]  # codes of all answers, window or not


class FastLink(asyncio.Protocol):
    """One link on the fast path: templates out, a minimal parser in."""

    def __init__(self, run: _Run, transport: asyncio.Transport, stan_start: int = 1) -> None:
        self.run = run
        self.transport = transport
        self.pending: dict[bytes, Pending] = {}
        self.stan = stan_start
        self.buf = bytearray()
        self.lost: asyncio.Future[None] = run.loop.create_future()
        self.sent = 0

    # -- sending ----------------------------------------------------------------------

    def fill(self, out: bytearray, n: int, t0: float) -> int:
        """Append up to ``n`` requests to ``out`` (the run's count cap applies)."""
        run = self.run
        wl = run.workload
        clock = run.clock
        pending = self.pending
        made = 0
        for _ in range(n):
            if run.count == 0 and t0 >= run.start:
                break
            self.stan = self.stan % 999_999 + 1
            key, kind, ref, rrn, expect = wl.emit(out, clock, b"%06d" % self.stan)
            pending[key] = (t0, kind, ref, rrn, expect)
            if run.count > 0 and t0 >= run.start:
                run.count -= 1
            made += 1
        self.sent += made
        return made

    def send(self, n: int) -> int:
        run = self.run
        run.clock.tick(time.time())
        out = bytearray()
        made = self.fill(out, n, run.loop.time())
        if out and not self.transport.is_closing():
            self.transport.write(out)
        return made

    # -- receiving ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        run = self.run
        t1 = run.loop.time()
        if self.buf:
            self.buf += data
            data = bytes(self.buf)
            self.buf.clear()
        header = run.layout.header
        locate = run.layout.locate
        pending = self.pending
        res = run.result
        wl = run.workload
        start, end = run.start, run.end
        lat, codes, bad, every = run.lat, run.codes, run.bad, run.every
        requests = run.requests
        n = len(data)
        pos = 0
        answered = 0
        replies: bytearray | None = None
        while n - pos >= header:
            ln = int.from_bytes(data[pos : pos + header], "big")
            s = pos + header
            e = s + ln
            if e > n:
                break
            pos = e
            if data[s : s + 4] in requests:
                replies = replies if replies is not None else bytearray()
                self._answer_hub(data[s:e], replies)
                continue
            try:
                off = locate(data, s, e)
            except (ValueError, IndexError):
                res.malformed += 1
                continue
            o7, o11 = off[0], off[1]
            if o7 < 0 or o11 < 0:
                res.malformed += 1
                continue
            key = data[s : s + 2] + data[o7 : o7 + 10] + data[o11 : o11 + 6]
            pend = pending.pop(key, None)
            if pend is None:
                res.unmatched += 1
                continue
            answered += 1
            t0, kind, ref, rrn, expect = pend
            o39 = off[3]
            code = data[o39 : o39 + 2] if o39 >= 0 else b"--"
            if rrn is not None:
                o37 = off[2]
                if o37 < 0:
                    res.rrn_missing += 1
                elif data[o37 : o37 + 12] != rrn:
                    res.rrn_mismatch += 1
            if expect is not None and code not in expect:
                if wl.excused(kind, ref, code):
                    res.excused += 1
                else:
                    d = bad[kind]
                    d[code] = d.get(code, 0) + 1
            d = every[kind]
            d[code] = d.get(code, 0) + 1
            if kind == PAYMENT:
                wl.settle(ref, code)
            if t0 >= start and t1 <= end:
                lat[kind].append(t1 - t0)
                d = codes[kind]
                d[code] = d.get(code, 0) + 1
        if pos < n:
            self.buf += data[pos:]
        if answered:
            res.total_answered += answered
            run.last_answer = t1
            if run.sending and run.closed_loop and t1 < end:
                run.clock.tick(time.time())
                out = bytearray()
                self.fill(out, answered, t1)
                if replies:
                    out += replies
                    replies = None
                if out and not self.transport.is_closing():
                    self.transport.write(out)
        if replies and not self.transport.is_closing():
            self.transport.write(replies)

    def _answer_hub(self, body: bytes, out: bytearray) -> None:
        """A request from the hub: echo tests get 0810 ``00``, anything else ``12``."""
        run = self.run
        run.result.hub_requests += 1
        codec = run.codec
        try:
            msg = codec.decode(body)
        except DecodeError:
            run.result.malformed += 1
            return
        ok = msg.mti == "0800" and msg.fields.get(70) == "301"
        try:
            out += codec.frame(make_response(codec.spec.rules, msg, "00" if ok else "12"))
        except LocalProtocolError:
            return
        if ok:
            run.result.echoes_answered += 1

    def expire(self, now: float, timeout: float) -> int:
        """Drop requests older than ``timeout``; count them as failed. How many."""
        old = [k for k, p in self.pending.items() if now - p[0] > timeout]
        for k in old:
            p = self.pending.pop(k)
            if p[1] == PAYMENT:
                self.run.workload.failed(p[2])
            if p[0] >= self.run.start:
                self.run.result.timed_out += 1
        return len(old)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    async def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), 5)
        except TimeoutError:
            self.transport.abort()


class _HandoverLink(SwitchLink):
    """A :class:`SwitchLink` that can give its TLS connection to another protocol."""

    handed_over = False

    def _arm(self) -> None:
        if not self.handed_over:
            super()._arm()

    def hand_over(self, make: Callable[[asyncio.Transport], FastLink]) -> FastLink:
        """Stop this link's timers and let ``make(transport)`` receive from now on."""
        self.handed_over = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            raise BillhubError("the link closed before the hand-over")
        proto = make(transport)
        transport.set_protocol(proto)
        return proto


async def run_fast_load(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    codec: Codec,
    workload: Workload,
    *,
    links: int = 2,
    in_flight: int = 64,
    duration: float = 5.0,
    warmup: float = 0.5,
    sign_on: bool = True,
    timeout: float = 30.0,
    rate: float = 0.0,
    count: int = 0,
    drain: float | None = None,
) -> FastLoadResult:
    """Drive the hub with ``workload`` on the fast path.

    Closed loop unless ``rate`` > 0 (requests per second, open loop, at most
    ``in_flight`` outstanding). Counts what is sent after ``warmup`` and answered
    before the end: ``duration`` seconds later, or, with ``count`` > 0, once that
    many requests were sent and answered (``duration`` is then a time limit).
    """
    loop = asyncio.get_running_loop()
    result = FastLoadResult(links, in_flight, duration, kind=workload.name, rate=rate)
    run = _Run(loop, workload, codec, result, count if count > 0 else -1)
    run.closed_loop = rate <= 0
    switch_links: list[_HandoverLink] = []
    for _ in range(links):
        conn = await _HandoverLink.connect(host, port, ssl_context, codec)
        assert isinstance(conn, _HandoverLink)
        switch_links.append(conn)
    if sign_on:
        for c in switch_links:
            answer = await c.sign_on()  # not checked: a bare echo server answers without DE 39
            result.sign_on_codes[answer.fields.get(39, "--")] += 1

    def fast_link(i: int) -> Callable[[asyncio.Transport], FastLink]:
        return lambda t: FastLink(run, t, stan_start=1000 * (i + 1))

    fast = [c.hand_over(fast_link(i)) for i, c in enumerate(switch_links)]
    shares = [in_flight // links + (1 if i < in_flight % links else 0) for i in range(links)]
    t_begin = loop.time()
    run.start = t_begin + warmup
    run.end = run.start + duration
    run.sending = True

    async def sweep() -> None:
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            for i, f in enumerate(fast):
                lost = f.expire(now, timeout)
                if lost and run.sending and run.closed_loop and now < run.end:
                    f.send(min(lost, shares[i] - len(f.pending)))

    async def ticker() -> None:
        issued = 0
        rr = 0
        while run.sending:
            now = loop.time()
            if now >= run.end:
                return
            due = int((now - t_begin) * rate) - issued
            if due > 0:
                result.max_behind = max(result.max_behind, due)
                for _ in range(len(fast)):
                    i = rr % len(fast)
                    f = fast[i]
                    rr += 1
                    room = shares[i] - len(f.pending)
                    k = min(room, -(-due // len(fast)))
                    if room <= 0:
                        result.cap_hits += 1
                        continue
                    made = f.send(k)
                    issued += made
                    due -= made
                    if due <= 0 or (run.count == 0 and now >= run.start):
                        break
            if run.count == 0 and now >= run.start:
                return
            await asyncio.sleep(0.001)

    marks: dict[str, float] = {}

    def mark(which: str) -> None:
        if f"{which}_wall" not in marks:
            marks[f"{which}_wall"] = time.time()
            marks[f"{which}_cpu"] = time.process_time()

    loop.call_at(run.start, mark, "start")
    end_mark = loop.call_at(run.end, mark, "end")
    sweeper = loop.create_task(sweep())
    try:
        if run.closed_loop:
            for f, share in zip(fast, shares, strict=True):
                f.send(share)
        else:
            tick = loop.create_task(ticker())
        while loop.time() < run.end:
            if run.count == 0 and not any(f.pending for f in fast):
                break  # every counted request answered
            if any(f.lost.done() for f in fast):
                break
            await asyncio.sleep(0.01 if count > 0 else min(0.1, max(0.0, run.end - loop.time())))
        mark("start")
        mark("end")
        end_mark.cancel()
        run.sending = False
        if not run.closed_loop:
            await tick
        grace = loop.time() + (timeout if drain is None else drain)
        while any(f.pending for f in fast) and loop.time() < grace:
            if all(f.lost.done() for f in fast):
                break
            await asyncio.sleep(0.01)
    finally:
        sweeper.cancel()
    stopped = min(loop.time(), run.end)
    if count > 0 and run.count == 0:
        stopped = min(run.end, run.last_answer)
    result.seconds = max(0.0, stopped - run.start)
    for f in fast:
        result.unanswered += sum(1 for p in f.pending.values() if p[0] >= run.start)
        for p in f.pending.values():
            if p[1] == PAYMENT:
                workload.failed(p[2])
    result.failed = result.timed_out + result.unanswered
    result.sent = sum(f.sent for f in fast)
    for kind, name in enumerate(KIND_NAMES):
        if run.lat[kind]:
            result.by_kind_latencies[name] = run.lat[kind]
            result.by_kind_codes[name] = Counter(
                {k.decode("ascii", "replace"): v for k, v in run.codes[kind].items()}
            )
        if run.every[kind]:
            result.all_codes[name] = Counter(
                {k.decode("ascii", "replace"): v for k, v in run.every[kind].items()}
            )
        if run.bad[kind]:
            result.unexpected[name] = Counter(
                {k.decode("ascii", "replace"): v for k, v in run.bad[kind].items()}
            )
    for kind in range(3):
        result.latencies.extend(run.lat[kind])
        for k, v in run.codes[kind].items():
            result.codes[k.decode("ascii", "replace")] += v
    result.answered = len(result.latencies)
    result.workload_state = workload.state()
    result.window = {
        "epoch_start": marks["start_wall"],
        "epoch_end": marks["end_wall"],
        "cpu_s": round(marks["end_cpu"] - marks["start_cpu"], 4),
    }
    t_close = loop.time()
    for f in fast:
        await f.close()
    result.window["close_s"] = round(loop.time() - t_close, 3)
    return result
