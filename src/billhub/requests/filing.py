"""Filing a request: the citizen's fields checked and normalised, the ticket and due time set.

Validation is here, not in the web layer, so the pages and the JSON API refuse
the same things with the same codes. Each refusal names its field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date, datetime

from billhub.requests.model import (
    CATEGORIES,
    CORRECTION_REASONS,
    DISPOSITIONS,
    CitizenRequest,
    Details,
    RequestError,
    RequestType,
)
from billhub.requests.plans import MAX_INSTALLMENTS
from billhub.requests.states import filed
from billhub.requests.turnaround import TurnaroundPolicy

_ACCOUNT = re.compile(r"[0-9]{4,20}")
_PHONE = re.compile(r"09[0-9]{8}")
_REFERENCE = re.compile(r"[A-Za-z0-9-]{1,20}")
_BILL_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_TICKET_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"  # no 0/O, 1/I/L, U
MAX_DESCRIPTION = 2000


def _bad(code: str, field: str, en: str, ar: str) -> RequestError:
    return RequestError(code, en, ar, field)


def check_account(account: str) -> str:
    a = account.strip()
    if not _ACCOUNT.fullmatch(a):
        raise _bad(
            "bad_account",
            "account",
            "the account number is 4 to 20 digits",
            "رقم الحساب من 4 إلى 20 رقماً",
        )
    return a


def normalise_phone(phone: str) -> str:
    """A Syrian mobile number as ``09xxxxxxxx`` (``+963 9...`` and ``00963 9...`` accepted)."""
    p = re.sub(r"[\s-]", "", phone)
    for prefix in ("+963", "00963"):
        if p.startswith(prefix):
            p = "0" + p[len(prefix) :]
    if not _PHONE.fullmatch(p):
        raise _bad(
            "bad_phone", "phone", "a mobile number such as 0944123456", "رقم جوال مثل 0944123456"
        )
    return p


def check_ticket(ticket: str) -> str:
    t = ticket.strip().upper()
    if not re.fullmatch(rf"BH-[{_TICKET_ALPHABET}]{{4}}-[{_TICKET_ALPHABET}]{{4}}", t):
        raise _bad(
            "bad_ticket",
            "ticket",
            "a ticket looks like BH-XXXX-XXXX",
            "رقم التذكرة مثل BH-XXXX-XXXX",
        )
    return t


def new_ticket(random_bytes: Callable[[int], bytes]) -> str:
    """``BH-XXXX-XXXX`` from 8 random letters of a 30-letter alphabet (~39 bits):
    not guessable within any rate limit, easy to read over the phone."""
    raw = random_bytes(8)
    letters = "".join(_TICKET_ALPHABET[b % len(_TICKET_ALPHABET)] for b in raw)
    return f"BH-{letters[:4]}-{letters[4:]}"


def _description(text: str, *, required: bool) -> str:
    t = text.strip()
    if required and not t:
        raise _bad(
            "description_required", "description", "describe the problem", "يرجى وصف المشكلة"
        )
    if len(t) > MAX_DESCRIPTION:
        raise _bad(
            "description_too_long",
            "description",
            f"at most {MAX_DESCRIPTION} characters",
            f"الوصف لا يتجاوز {MAX_DESCRIPTION} حرف",
        )
    return t


def _choice(value: str, options: Sequence[str], field: str) -> str:
    if value not in options:
        raise _bad(
            f"bad_{field}",
            field,
            f"choose one of: {', '.join(options)}",
            "يرجى اختيار قيمة من القائمة",
        )
    return value


def _bill_ids(ids: Sequence[str], open_bills: dict[str, int]) -> tuple[tuple[str, ...], int]:
    chosen = tuple(dict.fromkeys(i.strip() for i in ids if i.strip()))
    if not chosen:
        raise _bad(
            "bills_required",
            "bill_ids",
            "choose at least one bill",
            "يرجى اختيار فاتورة واحدة على الأقل",
        )
    for b in chosen:
        if not _BILL_ID.fullmatch(b) or b not in open_bills:
            raise _bad(
                "bill_not_open",
                "bill_ids",
                "that bill is not an open bill of this account",
                "الفاتورة المختارة ليست فاتورة مفتوحة لهذا الحساب",
            )
    return chosen, sum(open_bills[b] for b in chosen)


def new_request(
    kind: RequestType,
    *,
    ticket: str,
    company: str,
    account: str,
    phone: str,
    description: str,
    now: datetime,
    policy: TurnaroundPolicy,
    reference: str = "",
    paid_on: date | None = None,
    disposition: str = "",
    category: str = "",
    bill_ids: Sequence[str] = (),
    open_bills: dict[str, int] | None = None,
    installments: int | None = None,
    reason: str = "",
    reading: str = "",
) -> CitizenRequest:
    """A new request in ``received``, or RequestError naming the first bad field.

    ``open_bills`` (bill id → amount still due, from the biller) is needed for
    installment and correction requests: only open bills can be named, and the
    installment total is what the biller says is due.
    """
    account = check_account(account)
    phone = normalise_phone(phone)
    details: Details
    if kind == RequestType.TRANSACTION_COMPLAINT:
        ref = reference.strip()
        if not _REFERENCE.fullmatch(ref):
            raise _bad(
                "bad_reference",
                "reference",
                "the receipt or RRN (letters, digits, -)",
                "رقم الإيصال أو الرقم المرجعي",
            )
        if paid_on is None or paid_on > now.date():
            raise _bad(
                "bad_paid_on",
                "paid_on",
                "the date paid, not in the future",
                "تاريخ الدفع (ليس في المستقبل)",
            )
        details = Details(
            reference=ref,
            paid_on=paid_on,
            disposition=_choice(disposition, DISPOSITIONS, "disposition"),
        )
        text = _description(description, required=False)
    elif kind == RequestType.SERVICE_COMPLAINT:
        details = Details(category=_choice(category, CATEGORIES, "category"))
        text = _description(description, required=True)
    elif kind == RequestType.INSTALLMENT:
        chosen, total = _bill_ids(bill_ids, open_bills or {})
        if installments is None or not 2 <= installments <= MAX_INSTALLMENTS:
            raise _bad(
                "bad_installments",
                "installments",
                f"2 to {MAX_INSTALLMENTS} installments",
                f"عدد الأقساط من 2 إلى {MAX_INSTALLMENTS}",
            )
        text = _description(reason or description, required=True)
        details = Details(bill_ids=chosen, total=total, installments=installments, reason=text)
    else:
        chosen, total = _bill_ids(bill_ids, open_bills or {})
        if len(chosen) != 1:
            raise _bad(
                "one_bill",
                "bill_ids",
                "a correction names one bill",
                "طلب التصحيح يخص فاتورة واحدة",
            )
        reading = reading.strip()
        if reading and not re.fullmatch(r"[0-9]{1,9}", reading):
            raise _bad(
                "bad_reading",
                "reading",
                "the meter reading is digits only",
                "قراءة العداد أرقام فقط",
            )
        details = Details(
            bill_ids=chosen,
            total=total,
            reason=_choice(reason, CORRECTION_REASONS, "reason"),
            reading=reading or None,
        )
        text = _description(description, required=False)
    req = CitizenRequest(
        ticket=ticket,
        type=kind,
        company=company,
        account=account,
        phone=phone,
        description=text,
        filed_at=now,
        due_at=policy.due_at(company, kind, now),
        details=details,
    )
    return filed(req)
