"""What the load generator expects of the hub (``switch load --kind mix``): its
``unexpected`` count is what a benchmark reader takes for a hub bug, so it must count
the hub's wrong answers and nothing else."""

from __future__ import annotations

from datetime import date

from billhub.iso8583.codec import Codec
from billhub.iso8583.spec import load_spec
from billhub.simulator.demo_data import DemoAccount, generate_accounts
from billhub.simulator.load import INQUIRY, PAYMENT, DemoWorkload, WireClock, make_workload

TODAY = date(2026, 12, 3)


def _active_with(n_bills: int) -> DemoAccount:
    """A demo subscriber, active, with exactly ``n_bills`` open bills."""
    for acc in generate_accounts("02", 200, 7, today=TODAY):
        if acc.status == "active" and len(acc.bills) == n_bills:
            return acc
    raise AssertionError(f"no active demo account with {n_bills} open bills")


def _mix(acc: DemoAccount, expect: str | None = None) -> DemoWorkload:
    """Inquiry of ``acc``, then a payment of its first bill, and so on (share 0.5)."""
    wl = make_workload(
        Codec(load_spec()),
        "mix",
        biller="100002",
        accounts=[acc],
        payment_share=0.5,
        settlement_date="1203",
        rrn_tag=51,
        expect=expect,
    )
    assert isinstance(wl, DemoWorkload)
    return wl


def _unexpected(wl: DemoWorkload, emitted: tuple[int, int, frozenset[bytes]], code: bytes) -> bool:
    """As the load engine judges an answer: not among the codes expected at sending,
    and not excused by what happened while it was in flight."""
    kind, ref, expect = emitted
    return code not in expect and not wl.excused(kind, ref, code)


def _emit(wl: DemoWorkload) -> tuple[int, int, frozenset[bytes]]:
    _key, kind, ref, _rrn, expect = wl.emit(bytearray(), WireClock(), b"000001")
    assert expect is not None
    return kind, ref, expect


def test_inquiry_answered_51_after_a_later_payment_took_the_last_bill_is_expected() -> None:
    """Two links, many in flight: the hub may handle a payment sent after an inquiry
    first. The account's only bill is then paid, and 51 is the true answer."""
    wl = _mix(_active_with(1))
    inquiry = _emit(wl)
    assert inquiry[0] == INQUIRY and inquiry[2] == frozenset({b"00"})
    payment = _emit(wl)
    assert payment[0] == PAYMENT
    # The payment reaches the hub first, takes the bill; the inquiry is answered 51.
    assert not _unexpected(wl, inquiry, b"51")
    wl.settle(payment[1], b"00")
    assert not _unexpected(wl, inquiry, b"51")  # or its answer came after the payment's


def test_inquiry_answered_51_while_a_bill_is_left_open_is_unexpected() -> None:
    """A citizen told "nothing due" while a bill nobody is paying is open: a hub bug."""
    wl = _mix(_active_with(2))
    inquiry = _emit(wl)
    payment = _emit(wl)  # pays the first of the two bills
    assert _unexpected(wl, inquiry, b"51")
    wl.settle(payment[1], b"00")
    assert _unexpected(wl, inquiry, b"51")
    assert not _unexpected(wl, inquiry, b"00")


def test_inquiry_answered_51_with_no_payment_in_flight_is_unexpected() -> None:
    wl = _mix(_active_with(1))
    inquiry = _emit(wl)
    assert _unexpected(wl, inquiry, b"51")


def test_a_failed_payment_gives_the_bill_back_to_the_inquiry_expectation() -> None:
    """A payment that got no answer (or a decline) holds nothing: the bill is open."""
    wl = _mix(_active_with(1))
    inquiry = _emit(wl)
    payment = _emit(wl)
    wl.failed(payment[1])
    assert _unexpected(wl, inquiry, b"51")


def test_an_expected_code_given_on_the_command_line_is_never_excused() -> None:
    """``--expect 00`` (a server that approves everything): every 51 counts."""
    wl = _mix(_active_with(1), expect="00")
    inquiry = _emit(wl)
    _emit(wl)
    assert _unexpected(wl, inquiry, b"51")
