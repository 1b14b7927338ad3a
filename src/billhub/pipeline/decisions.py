"""Pure decisions of the pipeline: keys, content, checks, codes, answers.

No I/O and no clock: everything here takes what it needs as arguments, so the
rules of LINK-SPEC 5 and 6 can be tested one by one without sockets.
"""

from __future__ import annotations

import re

from billhub.errors import BillerRejected
from billhub.iso8583.codes import (
    APPROVED,
    FORMAT_ERROR,
    INVALID_ACCOUNT,
    INVALID_AMOUNT,
    MALFUNCTION,
    NOT_PERMITTED,
    NOTHING_DUE,
)
from billhub.iso8583.de48 import (
    MAX_BILLS,
    BillRecord,
    build_tlv,
    format_bills,
    parse_tlv,
    valid_bill_id,
)
from billhub.iso8583.message import Message
from billhub.iso8583.spec import LinkRules
from billhub.link.responses import make_response
from billhub.pipeline.model import AccountBills, AccountStatus, PaymentKey, PaymentRecord

CURRENCY = "760"
_ACCOUNT = re.compile(r"[\x21-\x7e]{1,28}")  # as printed on the bill: no spaces

#: BILLERS.md refusal codes → LINK-SPEC 5 response codes.
REFUSAL_CODES: dict[str, str] = {
    "unknown_account": INVALID_ACCOUNT,
    "account_blocked": NOT_PERMITTED,
    "nothing_due": NOTHING_DUE,
    "bill_not_open": NOTHING_DUE,
    "amount_not_acceptable": INVALID_AMOUNT,
}


def refusal_code(exc: BillerRejected) -> str:
    """The response code of a biller's refusal; one outside the table is `96`.

    ``payment_id_conflict`` and ``payment_cancelled`` mean the hub reused a
    payment id: a hub fault, never the citizen's, so `96`.
    """
    return REFUSAL_CODES.get(exc.code, MALFUNCTION)


def payment_key(msg: Message) -> PaymentKey:
    f = msg.fields
    return PaymentKey(f.get(32, ""), f.get(37, ""), f.get(15, ""))


def bill_id_of(msg: Message) -> tuple[str | None, str | None]:
    """DE 48 ``BI`` of a payment: ``(bill_id, None)`` or ``(None, error)`` if malformed."""
    raw = msg.fields.get(48)
    if raw is None:
        return None, None
    try:
        tags = parse_tlv(raw)
    except Exception:
        return None, "DE 48 is not valid TLV"
    bi = tags.get("BI")
    if bi is None:
        return None, None
    if not valid_bill_id(bi):
        return None, "DE 48 BI is not a bill id"
    return bi, None


def content_of(msg: Message, bill_id: str | None) -> str:
    """LINK-SPEC 6.3 content: DE 3, 4, 49, 100, 102 and ``BI``, joined."""
    f = msg.fields
    return "|".join(
        (f.get(3, ""), f.get(4, ""), f.get(49, ""), f.get(100, ""), f.get(102, ""), bill_id or "")
    )


def check_inquiry(msg: Message) -> str | None:
    """A code when the inquiry is refused before any biller is asked, else None."""
    if msg.fields.get(49) != CURRENCY:
        return FORMAT_ERROR
    if int(msg.fields.get(4, "0")) != 0:
        return FORMAT_ERROR  # LINK-SPEC 3: an inquiry request carries zeros
    if not _ACCOUNT.fullmatch(msg.fields.get(102, "")):
        return FORMAT_ERROR
    return None


def check_payment(msg: Message, bill_error: str | None) -> str | None:
    """A code when the payment is refused before any biller is asked, else None."""
    if msg.fields.get(49) != CURRENCY or bill_error is not None:
        return FORMAT_ERROR
    if not _ACCOUNT.fullmatch(msg.fields.get(102, "")):
        return FORMAT_ERROR
    if int(msg.fields.get(4, "0")) <= 0:
        return INVALID_AMOUNT
    return None


def amount_code(bills: AccountBills, bill_id: str | None, amount: int) -> str | None:
    """LINK-SPEC 6.3 acceptability; None when the amount is acceptable.

    Used where the hub holds the bills itself; online billers apply the same
    rules and answer ``amount_not_acceptable``.
    """
    if bills.status is not AccountStatus.ACTIVE:
        return NOT_PERMITTED
    if bill_id is not None:
        named = [b for b in bills.bills if b.bill_id == bill_id]
        if not named:
            return NOTHING_DUE
        due = named[0].amount
    else:
        due = bills.total_due
    if due <= 0:
        return NOTHING_DUE
    if bills.partial_allowed:
        ok = min(bills.min_payment, due) <= amount <= due
    else:
        ok = amount == due
    return None if ok else INVALID_AMOUNT


def inquiry_answer(rules: LinkRules, request: Message, bills: AccountBills) -> Message:
    """The 0210 of an inquiry from the biller's answer (LINK-SPEC 6.2)."""
    if bills.status is not AccountStatus.ACTIVE:
        return make_response(rules, request, NOT_PERMITTED)
    if not bills.bills or bills.total_due <= 0:
        resp = make_response(rules, request, NOTHING_DUE)
        resp.fields[48] = build_tlv([("CN", fit_name(bills.customer_name, 999 - 5))])
        return resp
    resp = make_response(rules, request, APPROVED)
    resp.fields[4] = f"{bills.total_due:012d}"
    records = [
        BillRecord(b.bill_id, b.period, b.due_date.strftime("%Y%m%d"), b.amount)
        for b in bills.bills[:MAX_BILLS]
    ]
    items = [("BL", format_bills(records)), ("PA", "Y" if bills.partial_allowed else "N")]
    if bills.partial_allowed:
        items.append(("MN", f"{bills.min_payment:012d}"))
    room = 999 - len(build_tlv(items).encode("utf-8")) - 5
    resp.fields[48] = build_tlv([("CN", fit_name(bills.customer_name, room)), *items])
    return resp


def fit_name(name: str, max_bytes: int) -> str:
    """A customer name cut (at a character) to fit ``max_bytes`` of UTF-8."""
    data = name.encode("utf-8")[: max(0, max_bytes)]
    return data.decode("utf-8", "ignore")


def approved_de48(receipt: str, customer_name: str | None) -> str:
    items = [("RN", receipt)]
    if customer_name:
        items.append(("CN", fit_name(customer_name, 999 - 5 - 5 - len(receipt))))
    return build_tlv(items)


def payment_answer(rules: LinkRules, request: Message, record: PaymentRecord) -> Message:
    """The 0210 for a payment or any repeat of it: the original DE 39, 38, 48, the
    other fields echoed from ``request`` (LINK-SPEC 6.3)."""
    resp = make_response(rules, request, record.response_code or MALFUNCTION)
    if record.approval_code:
        resp.fields[38] = record.approval_code
    if record.answer_de48:
        resp.fields[48] = record.answer_de48
    return resp


def decline(rules: LinkRules, request: Message, code: str) -> Message:
    return make_response(rules, request, code)
