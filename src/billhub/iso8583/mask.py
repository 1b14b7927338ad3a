"""Masking for logs: the one place that decides what of a message may be logged.

Account numbers show their first 2 and last 4 characters; DE 48 (names, bill
data) is reduced to its tags. Raw frames are never logged anywhere.
"""

from __future__ import annotations

from typing import Any

from billhub.iso8583.message import Message


def mask_account(value: str | None) -> str | None:
    """``0100123456`` → ``01****3456``; short values are masked whole."""
    if value is None:
        return None
    if len(value) <= 6:
        return "*" * len(value)
    return value[:2] + "*" * (len(value) - 6) + value[-4:]


def log_fields(msg: Message) -> dict[str, Any]:
    """The fields of a message that one log event carries, safe to write."""
    out: dict[str, Any] = {"mti": msg.mti}
    if (v := msg.stan) is not None:
        out["stan"] = v
    if (v := msg.rrn) is not None:
        out["rrn"] = v
    if (v := msg.processing_code) is not None:
        out["processing_code"] = v
    if (v := msg.network_code) is not None:
        out["network_code"] = v
    if (v := msg.biller) is not None:
        out["biller"] = v
    if (v := msg.acquirer) is not None:
        out["acquirer"] = v
    if (v := msg.account) is not None:
        out["account"] = mask_account(v)
    if (v := msg.response_code) is not None:
        out["response_code"] = v
    if 4 in msg:
        out["amount"] = msg.amount
    return out
