"""Installment plans: amounts in integer minor units that sum exactly to the total.

A plan the company proposes is checked, never repaired: the citizen is promised
what the company decided. :func:`even_plan` is the default the desk offers (the
remainder of the division goes to the first installments, one minor unit each).
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date

from billhub.requests.model import Installment, RequestError

MAX_INSTALLMENTS = 24


def add_months(day: date, months: int) -> date:
    """Same day ``months`` later, clamped to the month's end (31 Jan + 1 → 28/29 Feb)."""
    y, m = divmod(day.month - 1 + months, 12)
    year, month = day.year + y, m + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def even_plan(total: int, count: int, first_due: date) -> tuple[Installment, ...]:
    """``count`` monthly installments of ``total`` (minor units), the first on ``first_due``."""
    if not isinstance(total, int) or total <= 0:
        raise RequestError("bad_total", "nothing to split", "لا يوجد مبلغ للتقسيط", "total")
    if not 1 <= count <= MAX_INSTALLMENTS or count > total:
        raise RequestError(
            "bad_installments",
            f"the number of installments must be 1 to {MAX_INSTALLMENTS}",
            f"عدد الأقساط يجب أن يكون بين 1 و {MAX_INSTALLMENTS}",
            "installments",
        )
    base, extra = divmod(total, count)
    return tuple(
        Installment(i + 1, add_months(first_due, i), base + (1 if i < extra else 0))
        for i in range(count)
    )


def check_plan(plan: Sequence[Installment], total: int) -> None:
    """Raise RequestError unless ``plan`` is 1..24 numbered installments of positive whole
    amounts, due dates strictly rising, summing to ``total``."""
    if not 1 <= len(plan) <= MAX_INSTALLMENTS:
        raise RequestError(
            "bad_plan",
            f"a plan has 1 to {MAX_INSTALLMENTS} installments",
            f"الخطة من 1 إلى {MAX_INSTALLMENTS} قسطاً",
            "plan",
        )
    for i, inst in enumerate(plan):
        if inst.number != i + 1:
            raise RequestError(
                "bad_plan", "installments are numbered 1, 2, ...", "ترقيم الأقساط غير صحيح", "plan"
            )
        if not isinstance(inst.amount, int) or isinstance(inst.amount, bool) or inst.amount <= 0:
            raise RequestError(
                "bad_plan",
                f"installment {inst.number}: the amount must be a whole number > 0",
                f"القسط {inst.number}: المبلغ يجب أن يكون عدداً صحيحاً موجباً",
                "plan",
            )
        if i and inst.due_date <= plan[i - 1].due_date:
            raise RequestError(
                "bad_plan",
                f"installment {inst.number} is due before or with the one before it",
                f"تاريخ استحقاق القسط {inst.number} يجب أن يلي القسط السابق",
                "plan",
            )
    got = sum(inst.amount for inst in plan)
    if got != total:
        raise RequestError(
            "plan_total",
            f"the installments sum to {got}, the bills to {total}",
            "مجموع الأقساط لا يساوي المبلغ المستحق",
            "plan",
        )
