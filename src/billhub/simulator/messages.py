"""Requests as the switch builds them (LINK-SPEC 6), for tests, the demo and load.

DE 7 and DE 11 are left out: :meth:`SwitchLink.send` fills them per link.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from billhub.iso8583.de48 import build_tlv
from billhub.iso8583.elements import OriginalData, format_net
from billhub.iso8583.message import Message

INQUIRY, PAYMENT = "310000", "500000"


@dataclass(frozen=True, slots=True)
class Acquirer:
    """Where the citizen paid: the acquiring institution, the switch, a channel."""

    acquirer: str = "600001"
    forwarder: str = "700001"
    channel: str = "6013"
    terminal: str | None = None


def _local() -> tuple[str, str]:
    now = datetime.now(UTC)
    return now.strftime("%H%M%S"), now.strftime("%m%d")


def inquiry(biller: str, account: str, rrn: str, acq: Acquirer = Acquirer()) -> Message:
    hhmmss, mmdd = _local()
    msg = Message(
        "0200",
        {
            3: INQUIRY,
            4: "000000000000",
            12: hhmmss,
            13: mmdd,
            18: acq.channel,
            32: acq.acquirer,
            33: acq.forwarder,
            37: f"{rrn:0>12}",
            49: "760",
            100: biller,
            102: account,
        },
    )
    if acq.terminal:
        msg.fields[41] = f"{acq.terminal:<8}"
    return msg


def payment(
    biller: str,
    account: str,
    rrn: str,
    amount: int,
    settlement_date: str,
    *,
    bill_id: str | None = None,
    acq: Acquirer = Acquirer(),
) -> Message:
    msg = inquiry(biller, account, rrn, acq)
    msg.fields[3] = PAYMENT
    msg.fields[4] = f"{amount:012d}"
    msg.fields[15] = settlement_date
    if bill_id is not None:
        msg.fields[48] = build_tlv([("BI", bill_id)])
    return msg


def repeat(original: Message, mti: str = "0201") -> Message:
    """The same request re-sent: same key and content, new DE 7 and DE 11 (set on send)."""
    msg = Message(mti, original.fields)
    msg.fields.pop(7, None)
    msg.fields.pop(11, None)
    return msg


def reversal(original: Message, *, amount: int | None = None, mti: str = "0420") -> Message:
    """A reversal of ``original`` (which must have been sent: it needs DE 7 and DE 11)."""
    f = original.fields
    od = OriginalData(
        mti=original.mti,
        stan=f.get(11, "000000"),
        transmission_time=f.get(7, "0000000000"),
        acquirer=f.get(32, "0"),
        forwarder=f.get(33, "0"),
    )
    return Message(
        mti,
        {
            4: f"{amount if amount is not None else int(f[4]):012d}",
            15: f[15],
            32: f[32],
            33: f[33],
            37: f[37],
            49: f.get(49, "760"),
            90: od.format(),
            100: f[100],
        },
    )


def reconciliation(
    biller: str,
    settlement_date: str,
    *,
    count: int,
    total: int,
    reversal_count: int,
    reversal_total: int,
    forwarder: str = "700001",
) -> Message:
    return Message(
        "0500",
        {
            15: settlement_date,
            33: forwarder,
            74: f"{count:010d}",
            75: f"{reversal_count:010d}",
            86: f"{total:016d}",
            87: f"{reversal_total:016d}",
            97: format_net(total, reversal_total),
            100: biller,
        },
    )
