"""Amounts typed by people: ``12,500.50`` SYP → 1 250 050 minor units, never via float."""

from __future__ import annotations

import re

from billhub.requests.model import RequestError

_AMOUNT = re.compile(r"([0-9]{1,12})(?:\.([0-9]{1,2}))?")


def parse_syp(value: str, field: str) -> int | None:
    v = value.strip().replace(",", "").replace("٬", "")
    if not v:
        return None
    m = _AMOUNT.fullmatch(v)
    if m is None:
        raise RequestError(
            f"bad_{field}",
            "an amount such as 12500 or 12500.50",
            "مبلغ مثل 12500 أو 12500.50",
            field,
        )
    return int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))
