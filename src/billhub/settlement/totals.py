"""0500/0510 totals: reading the switch's, writing the hub's, and comparing them. Pure."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from billhub.iso8583.elements import format_net, parse_net
from billhub.iso8583.message import Message
from billhub.money import Amount
from billhub.settlement.model import Finding, FindingKind, Totals


def totals_of(msg: Message) -> Totals:
    """The switch's figures from a 0500 (DE 74, 86, 75, 87)."""
    f = msg.fields
    return Totals(int(f[74]), int(f[86]), int(f[75]), int(f[87]))


def put_totals(msg: Message, totals: Totals) -> None:
    """Write the hub's figures into a 0510, DE 97 included."""
    f = msg.fields
    f[74] = f"{totals.count:010d}"
    f[75] = f"{totals.reversal_count:010d}"
    f[86] = f"{totals.amount:016d}"
    f[87] = f"{totals.reversal_amount:016d}"
    f[97] = format_net(totals.amount, totals.reversal_amount)


def _money(minor: int) -> str:
    return f"{Amount(minor).format()} SYP"


def compare(
    biller: str, settlement_date: date, switch: Totals, switch_net_de97: str, hub: Totals
) -> list[Finding]:
    """One finding per figure that differs, with both sides' values; empty when they agree.

    DE 97 is compared too: a 0500 whose net does not follow from its own DE 86
    and DE 87 disagrees with the hub even when the counts match.
    """
    out: list[Finding] = []
    pairs: list[tuple[str, int, int, Callable[[int], str]]] = [
        ("DE 74 payments count", switch.count, hub.count, str),
        ("DE 86 payments amount", switch.amount, hub.amount, _money),
        ("DE 75 reversals count", switch.reversal_count, hub.reversal_count, str),
        ("DE 87 reversals amount", switch.reversal_amount, hub.reversal_amount, _money),
        ("DE 97 net", parse_net(switch_net_de97), hub.net, _money),
    ]
    for label, theirs, ours, fmt in pairs:
        if theirs != ours:
            out.append(
                Finding(
                    kind=FindingKind.RECONCILIATION,
                    settlement_date=settlement_date,
                    biller=biller,
                    detail=f"{label} differs",
                    hub=fmt(ours),
                    switch=fmt(theirs),
                    source="0500",
                )
            )
    return out
