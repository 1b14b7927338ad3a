"""What the public may see of a customer: a paper bill's worth, and no more."""

from __future__ import annotations


def mask_name(name: str) -> str:
    """First name and the initial of the rest: ``محمد الأحمد`` → ``محمد ا.``.

    Arabic family names often start with the article ``ال``; its initial would
    say nothing, so the letter after it is kept (``محمد الأحمد`` → ``محمد أ.``).
    """
    parts = name.split()
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    rest = parts[1]
    if rest.startswith("ال") and len(rest) > 2:
        rest = rest[2:]
    return f"{parts[0]} {rest[0]}."


def mask_phone(phone: str) -> str:
    """``0944123456`` → ``09******56``: enough for the citizen to recognise it."""
    if len(phone) <= 4:
        return "*" * len(phone)
    return phone[:2] + "*" * (len(phone) - 4) + phone[-2:]
