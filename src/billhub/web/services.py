"""The citizen services and the companies' desk: the functions behind every page and API route.

Pages and the JSON API call the same functions here, so they refuse the same things
with the same codes (:class:`~billhub.requests.model.RequestError`). Permissions are
checked in one place, :meth:`Services.authorize`, which every staff action goes
through: a clerk or supervisor acts only on their company's requests, the ministry
reads every company's and changes nothing. Every staff action and every change to
a request lands in the audit trail in the same commit as the change.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol

from billhub.errors import BillerError, BillerRejected, BillerTimeout, BillhubError
from billhub.observability.logs import get_logger
from billhub.pipeline.model import AccountBills, AccountStatus, Bill, StatusAnswer
from billhub.requests import states
from billhub.requests.filing import check_account, check_ticket, new_request, new_ticket
from billhub.requests.filing import normalise_phone as _phone
from billhub.requests.model import (
    CitizenRequest,
    Finding,
    Installment,
    RequestError,
    RequestType,
    Status,
)
from billhub.requests.plans import even_plan
from billhub.requests.ports import (
    Attachment,
    AuditEntry,
    CodeSender,
    Conflict,
    DecisionSink,
    Handover,
    HandoverRefused,
    PaymentLine,
    Query,
    RequestStore,
    StaffUser,
)
from billhub.requests.turnaround import TurnaroundPolicy
from billhub.web import auth
from billhub.web.masking import mask_name
from billhub.web.ratelimit import RateLimiter
from billhub.web.uploads import UploadStore, check

log = get_logger("billhub.web")
CODE_TTL = timedelta(minutes=10)
RECENT_PAYMENTS = 10


class RateLimited(RequestError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "rate_limited",
            f"too many requests; try again in {retry_after} s",
            f"طلبات كثيرة؛ يرجى المحاولة بعد {retry_after} ثانية",
        )
        self.retry_after = retry_after


class Forbidden(RequestError):
    def __init__(self) -> None:
        super().__init__("forbidden", "not allowed for this account", "غير مسموح لهذا الحساب")


class NotLoggedIn(RequestError):
    def __init__(self) -> None:
        super().__init__("login_required", "please log in", "يرجى تسجيل الدخول")


def not_found() -> RequestError:
    """One answer for an unknown account, an account of another company, an unknown
    ticket and a wrong phone: none of them tells which it was."""
    return RequestError(
        "not_found",
        "nothing found for what you entered; check the company and the number",
        "لم يتم العثور على نتيجة؛ يرجى التحقق من الشركة والرقم",
    )


def unavailable() -> RequestError:
    return RequestError(
        "biller_unavailable",
        "the company's billing system is not answering; please try again later",
        "نظام الفوترة لدى الشركة لا يستجيب حالياً؛ يرجى المحاولة لاحقاً",
    )


class BillerQuestions(Protocol):
    """What the web service asks a biller: the read questions of the Biller port."""

    async def open_bills(self, account: str) -> AccountBills: ...

    async def payment_status(self, payment_id: str) -> StatusAnswer: ...


@dataclass(frozen=True, slots=True)
class Company:
    code: str
    name: str
    budget_s: float
    biller: BillerQuestions | None  # None: no inquiry (yet) for this kind of biller


@dataclass(frozen=True, slots=True)
class Inquiry:
    company: Company
    account: str
    name: str  # masked
    status: AccountStatus
    bills: tuple[Bill, ...]

    @property
    def total_due(self) -> int:
        return sum(b.amount for b in self.bills)


@dataclass(frozen=True, slots=True)
class Staff:
    user: StaffUser
    csrf: str


@dataclass(frozen=True, slots=True)
class ReportRow:
    month: str
    company: str
    type: str
    received: int
    in_time: int
    late: int
    open_overdue: int


@dataclass
class Limits:
    client: RateLimiter
    account: RateLimiter
    login: RateLimiter

    def check(self, client: str, account: str | None = None) -> None:
        wait = self.client.hit(f"c:{client}")
        if wait is None and account is not None:
            wait = self.account.hit(f"a:{account}")
        if wait is not None:
            raise RateLimited(wait)


class Services:
    def __init__(
        self,
        *,
        store: RequestStore,
        companies: Sequence[Company],
        policy: TurnaroundPolicy,
        sender: CodeSender,
        uploads: UploadStore,
        exports: Path,
        limits: Limits,
        max_upload: int,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        session_hours: float = 8.0,
        observe_biller: Callable[[str, str, float, str], None] = lambda *_: None,
        sinks: Mapping[str, DecisionSink] | None = None,
    ) -> None:
        self.store = store
        self.companies: Mapping[str, Company] = {c.code: c for c in companies}
        self.policy = policy
        self.sender = sender
        self.uploads = uploads
        self.exports = exports
        self.limits = limits
        self.max_upload = max_upload
        self.now = now
        self._random = random_bytes
        self._session = timedelta(hours=session_hours)
        self._observe = observe_biller
        #: Companies whose billing system takes decisions online, and how.
        self.sinks: Mapping[str, DecisionSink] = sinks or {}

    # -- helpers --------------------------------------------------------------------------

    def company(self, code: str) -> Company:
        c = self.companies.get(code.strip())
        if c is None:
            raise RequestError(
                "bad_company", "choose a company from the list", "يرجى اختيار الشركة", "company"
            )
        return c

    async def _open_bills(self, company: Company, account: str) -> AccountBills:
        """The biller's answer within its budget; unknown account → not_found."""
        if company.biller is None:
            raise unavailable()
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = "ok"
        try:
            return await asyncio.wait_for(company.biller.open_bills(account), company.budget_s)
        except BillerRejected as exc:
            outcome = "rejected"
            if exc.code == "unknown_account":
                raise not_found() from None
            raise unavailable() from None
        except (TimeoutError, BillerTimeout):
            outcome = "timeout"
            raise unavailable() from None
        except BillerError:
            outcome = "unavailable"
            raise unavailable() from None
        finally:
            self._observe(company.code, "open_bills", loop.time() - started, outcome)

    # -- citizen: inquiry ---------------------------------------------------------------------

    async def inquiry(self, company_code: str, account: str, client: str) -> Inquiry:
        company = self.company(company_code)
        account = check_account(account)
        self.limits.check(client, f"{company.code}:{account}")
        bills = await self._open_bills(company, account)
        return Inquiry(company, account, mask_name(bills.customer_name), bills.status, bills.bills)

    def _code_key(self, company: str, account: str, phone: str) -> str:
        return f"{company}:{account}:{phone}"

    def _code_hash(self, key: str, code: str) -> str:
        return hashlib.sha256(f"{key}:{code}".encode()).hexdigest()

    async def send_code(self, company_code: str, account: str, phone: str, client: str) -> None:
        """Send a one-time code if ``phone`` is on file for the account (a phone given with
        one of its requests); the answer is the same either way."""
        company = self.company(company_code)
        account = check_account(account)
        phone = _phone(phone)
        self.limits.check(client, f"{company.code}:{account}")
        on_file = await self.store.find(Query(company=company.code, account=account))
        if not any(r.phone == phone for r in on_file):
            return
        code = f"{secrets.randbelow(10**6):06d}"
        key = self._code_key(company.code, account, phone)
        await self.store.put_code(key, self._code_hash(key, code), self.now() + CODE_TTL)
        await self.sender.send(phone, f"billhub: {code}")

    async def payments(
        self, company_code: str, account: str, phone: str, code: str, client: str
    ) -> list[PaymentLine]:
        company = self.company(company_code)
        account = check_account(account)
        phone = _phone(phone)
        self.limits.check(client, f"{company.code}:{account}")
        key = self._code_key(company.code, account, phone)
        if not await self.store.take_code(key, self._code_hash(key, code.strip()), self.now()):
            raise RequestError(
                "bad_code",
                "the code is wrong or expired",
                "الرمز غير صحيح أو منتهي الصلاحية",
                "code",
            )
        return await self.store.recent_payments(company.code, account, RECENT_PAYMENTS)

    # -- citizen: filing and tracking ------------------------------------------------------------

    async def file(
        self,
        kind: RequestType,
        *,
        client: str,
        company: str,
        account: str,
        phone: str,
        description: str = "",
        reference: str = "",
        paid_on: date | None = None,
        disposition: str = "",
        category: str = "",
        bill_ids: Sequence[str] = (),
        installments: int | None = None,
        reason: str = "",
        reading: str = "",
        photo: bytes | None = None,
    ) -> CitizenRequest:
        comp = self.company(company)
        account = check_account(account)
        self.limits.check(client, f"{comp.code}:{account}")
        checked = check(photo, self.max_upload) if photo else None
        open_bills: dict[str, int] = {}
        if kind in (RequestType.INSTALLMENT, RequestType.CORRECTION):
            bills = await self._open_bills(comp, account)
            open_bills = {b.bill_id: b.amount for b in bills.bills}
        now = self.now()
        req = new_request(
            kind,
            ticket=new_ticket(self._random),
            company=comp.code,
            account=account,
            phone=phone,
            description=description,
            now=now,
            policy=self.policy,
            reference=reference,
            paid_on=paid_on,
            disposition=disposition,
            category=category,
            bill_ids=bill_ids,
            open_bills=open_bills,
            installments=installments,
            reason=reason,
            reading=reading,
        )
        if kind == RequestType.TRANSACTION_COMPLAINT:
            req = await self._with_finding(req, comp)
        ident = None
        if checked is not None:
            ident = self.uploads.save(checked)
            req = replace(req, attachments=(ident,))
        try:
            await self.store.add(
                req, AuditEntry(now, "citizen", comp.code, "filed", req.ticket, kind.value)
            )
            if ident is not None and checked is not None:
                await self.store.add_attachment(
                    Attachment(
                        ident, req.ticket, checked.content_type, len(checked.data), checked.sha256
                    )
                )
        except BaseException:
            if ident is not None:
                self.uploads.remove(ident)
            raise
        stored = await self.store.get(req.ticket)
        assert stored is not None
        # account and phone are masked by the log pipeline (observability.logs)
        log.info(
            "request_filed",
            ticket=req.ticket,
            company=comp.code,
            type=kind.value,
            account=account,
            phone=req.phone,
            attachment=ident is not None,
        )
        return await self._answer_at_once(stored)

    async def _with_finding(self, req: CitizenRequest, comp: Company) -> CitizenRequest:
        """Attach what the journal and the biller say about the payment complained of."""
        d = req.details
        assert d.reference is not None
        found = await self.store.find_payment(comp.code, req.account, d.reference, d.paid_on)
        if found.payment_id is not None and comp.biller is not None:
            try:
                answer = await asyncio.wait_for(
                    comp.biller.payment_status(found.payment_id), comp.budget_s
                )
                found = replace(found, biller_status=answer.status.value)
            except (TimeoutError, BillhubError):
                found = replace(found, biller_status="unavailable")
        return replace(req, details=replace(d, finding=found))

    async def _answer_at_once(self, req: CitizenRequest) -> CitizenRequest:
        """A "paid but shown as due" the hub can prove posted is answered with the receipt."""
        f: Finding | None = req.details.finding
        if (
            req.type != RequestType.TRANSACTION_COMPLAINT
            or req.details.disposition != "paid_still_due"
            or f is None
            or f.outcome != "posted"
            or f.biller_status != "posted"
        ):
            return req
        when = f.paid_at.date().isoformat() if f.paid_at else ""
        note = (
            f"تم تسجيل دفعتك بتاريخ {when} لدى الشركة، رقم الإيصال {f.receipt}. "
            f"Your payment of {when} is posted at the company, receipt {f.receipt}."
        )
        now = self.now()
        done = states.decide(req, Status.RESOLVED, actor="hub", now=now, note=note)
        return await self.store.save(
            done, AuditEntry(now, "hub", req.company, "decided", req.ticket, "resolved: posted")
        )

    async def track(self, ticket: str, phone: str, client: str) -> CitizenRequest:
        ticket = check_ticket(ticket)
        phone = _phone(phone)
        self.limits.check(client, f"t:{ticket}")
        req = await self.store.get(ticket)
        if req is None or not auth.same(req.phone, phone):
            raise not_found()
        return req

    async def bills_for_request(self, company_code: str, account: str, client: str) -> Inquiry:
        """The open bills a citizen may name in an installment or correction request."""
        return await self.inquiry(company_code, account, client)

    # -- staff -----------------------------------------------------------------------------------

    async def login(self, username: str, password: str, client: str) -> tuple[str, StaffUser]:
        """A new session token for valid, enabled credentials; refused alike otherwise."""
        wait = self.limits.login.hit(f"l:{client}") or self.limits.login.hit(f"u:{username}")
        if wait is not None:
            raise RateLimited(wait)
        user = await self.store.staff(username.strip())
        ok = auth.verify_password(user.password_hash if user else None, password)
        if user is None or not ok or user.disabled:
            log.warning("staff_login_refused", username=username.strip()[:40], client=client)
            raise RequestError(
                "bad_login", "wrong user name or password", "اسم المستخدم أو كلمة المرور غير صحيحة"
            )
        token = auth.new_token()
        now = self.now()
        await self.store.add_session(
            auth.token_hash(token), user.username, auth.new_token(), now + self._session
        )
        await self.store.record(AuditEntry(now, user.username, user.company, "login", None, ""))
        return token, user

    async def staff_session(self, token: str | None) -> Staff:
        if not token:
            raise NotLoggedIn()
        found = await self.store.session(auth.token_hash(token), self.now())
        if found is None:
            raise NotLoggedIn()
        user = await self.store.staff(found[0])
        if user is None or user.disabled:
            raise NotLoggedIn()
        return Staff(user, found[1])

    async def logout(self, staff: Staff, token: str) -> None:
        await self.store.drop_session(auth.token_hash(token))
        await self.store.record(
            AuditEntry(self.now(), staff.user.username, staff.user.company, "logout", None, "")
        )

    @staticmethod
    def authorize(user: StaffUser, company: str | None, *, write: bool) -> None:
        """The one permission check: every staff route calls it before it reads or acts."""
        if user.disabled:
            raise Forbidden()
        if user.role == "ministry":
            if write:
                raise Forbidden()
            return
        if user.role not in ("clerk", "supervisor") or user.company is None:
            raise Forbidden()
        if company is None or company != user.company:
            raise Forbidden()

    async def queue(
        self, user: StaffUser, *, company: str | None = None, open_only: bool = True
    ) -> list[CitizenRequest]:
        """Requests soonest due first: a clerk's own company; the ministry's any or all."""
        if user.role != "ministry":
            company = user.company
            self.authorize(user, company, write=False)
        return await self.store.find(Query(company=company, open_only=open_only))

    async def request_for(self, user: StaffUser, ticket: str) -> CitizenRequest:
        req = await self.store.get(check_ticket(ticket))
        if req is None:
            raise not_found()
        self.authorize(user, req.company, write=False)
        return req

    async def act(
        self,
        user: StaffUser,
        ticket: str,
        action: str,
        *,
        status: str = "",
        note: str = "",
        public: bool = True,
        assignee: str = "",
        outcome: str = "",
        plan: Sequence[Installment] | None = None,
        first_due: date | None = None,
        count: int | None = None,
        new_amount: int | None = None,
    ) -> CitizenRequest:
        """One staff action on one request: ``status``, ``comment``, ``assign`` or ``decide``."""
        req = await self.request_for(user, ticket)
        self.authorize(user, req.company, write=True)
        now = self.now()
        who = user.username
        handover: Handover | None = None
        if action == "status":
            try:
                to = Status(status)
            except ValueError:
                raise RequestError(
                    "bad_status", "unknown status", "حالة غير معروفة", "status"
                ) from None
            changed = states.change_status(req, to, actor=who, now=now, note=note)
            detail = to.value
        elif action == "comment":
            changed = states.comment(req, note, actor=who, now=now, public=public)
            detail = "public" if public else "internal"
        elif action == "assign":
            target = await self.store.staff(assignee.strip())
            if target is None or target.company != req.company or target.disabled:
                raise RequestError(
                    "bad_assignee",
                    "assign to a staff member of this company",
                    "يرجى اختيار موظف من الشركة نفسها",
                    "assignee",
                )
            changed = states.assign(req, target.username, actor=who, now=now)
            detail = target.username
        elif action == "decide":
            try:
                result = Status(outcome)
            except ValueError:
                raise RequestError(
                    "bad_decision", "unknown decision", "قرار غير معروف", "outcome"
                ) from None
            the_plan: tuple[Installment, ...] = tuple(plan or ())
            if (
                not the_plan
                and req.type == RequestType.INSTALLMENT
                and result == Status.APPROVED
                and count is not None
            ):
                the_plan = even_plan(
                    req.details.total or 0, count, first_due or (now.date() + timedelta(days=30))
                )
            changed = states.decide(
                req, result, actor=who, now=now, note=note, plan=the_plan, new_amount=new_amount
            )
            detail = result.value
            if result in (Status.APPROVED, Status.CORRECTED) and req.company in self.sinks:
                handover = Handover(req.ticket, req.company, "pending", 0, now)
        else:
            raise RequestError("bad_action", "unknown action", "إجراء غير معروف", "action")
        try:
            return await self.store.save(
                changed, AuditEntry(now, who, req.company, action, req.ticket, detail), handover
            )
        except Conflict:
            raise RequestError(
                "changed_meanwhile",
                "someone changed this request meanwhile; look again",
                "تم تعديل الطلب من قبل شخص آخر؛ يرجى المراجعة",
            ) from None

    async def attachment(
        self, user: StaffUser, ticket: str, ident: str
    ) -> tuple[Attachment, bytes]:
        req = await self.request_for(user, ticket)
        for att in await self.store.attachments(req.ticket):
            if att.attachment_id == ident:
                data = self.uploads.read(ident)
                if data is not None:
                    await self.store.record(
                        AuditEntry(
                            self.now(),
                            user.username,
                            req.company,
                            "view_attachment",
                            req.ticket,
                            ident,
                        )
                    )
                    return att, data
        raise not_found()

    async def audit(self, user: StaffUser, ticket: str) -> list[AuditEntry]:
        req = await self.request_for(user, ticket)
        return await self.store.audit(ticket=req.ticket)

    # -- exports and reports ---------------------------------------------------------------------

    async def export(self, user: StaffUser, company: str, day: date) -> tuple[str, Path]:
        """Approved plans and corrections decided on ``day`` (UTC) as CSV, also written to
        ``exports/requests-<company>-<YYYYMMDD>.csv`` (temporary name, then renamed)."""
        self.company(company)
        self.authorize(user, company, write=False)
        start = datetime.combine(day, datetime.min.time(), UTC)
        rows = [
            r
            for r in await self.store.find(Query(company=company))
            if r.decision is not None
            and r.decision.status in (Status.APPROVED, Status.CORRECTED)
            and start <= r.decision.at < start + timedelta(days=1)
        ]
        rows.sort(key=lambda r: (r.decision.at if r.decision else start, r.ticket))
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(
            [
                "ticket",
                "type",
                "account",
                "bill_ids",
                "decided_at",
                "new_amount",
                "installment",
                "due_date",
                "amount",
            ]
        )
        for r in rows:
            assert r.decision is not None
            base = [
                r.ticket,
                r.type.value,
                r.account,
                " ".join(r.details.bill_ids),
                r.decision.at.isoformat(),
            ]
            if r.type == RequestType.CORRECTION:
                w.writerow([*base, r.decision.new_amount, "", "", ""])
            for inst in r.decision.plan:
                w.writerow([*base, "", inst.number, inst.due_date.isoformat(), inst.amount])
        text = out.getvalue()
        self.exports.mkdir(parents=True, exist_ok=True)
        path = self.exports / f"requests-{company}-{day.strftime('%Y%m%d')}.csv"
        tmp = path.with_suffix(".part")
        tmp.write_text(text, encoding="utf-8")
        tmp.rename(path)
        await self.store.record(
            AuditEntry(self.now(), user.username, company, "export", None, day.isoformat())
        )
        return text, path

    async def monthly_report(self, user: StaffUser, month: str) -> list[ReportRow]:
        """Per company and type, requests filed in ``month`` (YYYY-MM): received, decided
        within their turnaround, decided late, and still open past due."""
        if user.role not in ("ministry", "supervisor"):
            raise Forbidden()
        try:
            start = datetime.strptime(month + "-01", "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise RequestError(
                "bad_month", "a month is YYYY-MM", "الشهر بصيغة YYYY-MM", "month"
            ) from None
        end = (start + timedelta(days=32)).replace(day=1)
        company = None if user.role == "ministry" else user.company
        now = self.now()
        counts: dict[tuple[str, str], list[int]] = {}
        for r in await self.store.find(Query(company=company, filed_from=start, filed_before=end)):
            c = counts.setdefault((r.company, r.type.value), [0, 0, 0, 0])
            c[0] += 1
            if r.decision is not None:
                c[1 if r.decision.at <= r.due_at else 2] += 1
            elif r.overdue(now):
                c[3] += 1
        return [ReportRow(month, comp, kind, *v) for (comp, kind), v in sorted(counts.items())]

    @staticmethod
    def report_csv(rows: Sequence[ReportRow]) -> str:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(
            [
                "month",
                "company",
                "type",
                "received",
                "decided_in_time",
                "decided_late",
                "open_overdue",
            ]
        )
        for r in rows:
            w.writerow([r.month, r.company, r.type, r.received, r.in_time, r.late, r.open_overdue])
        return out.getvalue()

    # -- background ----------------------------------------------------------------------------

    async def escalate_due(self) -> int:
        """Escalate every open request past due (once each); returns how many now."""
        now = self.now()
        n = 0
        for r in await self.store.find(Query(open_only=True)):
            up = states.escalate(r, now)
            if up is None:
                continue
            try:
                await self.store.save(
                    up, AuditEntry(now, "hub", r.company, "escalated", r.ticket, "")
                )
                n += 1
            except Conflict:
                continue  # changed meanwhile: the next round looks again
        return n

    async def process_handovers(self) -> int:
        """Hand every due decision to its company's system; returns how many were answered.

        A refusal is final (shown on the desk and in the audit trail); anything else is
        tried again later, 30 s doubling up to an hour. The export file lists every
        decision either way."""
        now = self.now()
        done = 0
        for h in await self.store.due_handovers(now):
            req = await self.store.get(h.ticket)
            sink = self.sinks.get(h.company)
            if req is None or req.decision is None or sink is None:
                continue
            resource, body = handover_body(req)
            try:
                reference = await sink.hand_over(resource, req.ticket, body)
            except HandoverRefused as exc:
                update = replace(h, state="refused", attempts=h.attempts + 1, detail=str(exc)[:200])
            except Exception as exc:  # retried: the company's system is down or erring
                wait = min(3600, 30 * 2**h.attempts)
                update = replace(
                    h,
                    attempts=h.attempts + 1,
                    next_at=now + timedelta(seconds=wait),
                    detail=f"{type(exc).__name__}: {str(exc)[:160]}",
                )
            else:
                update = replace(h, state="accepted", attempts=h.attempts + 1, reference=reference)
            await self.store.update_handover(update)
            if update.state != "pending":
                done += 1
                await self.store.record(
                    AuditEntry(
                        now,
                        "hub",
                        h.company,
                        "handover",
                        h.ticket,
                        f"{update.state} {update.reference or update.detail}",
                    )
                )
        return done

    async def open_counts(self) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        """Open requests per (company, type), and overdue ones per company: for metrics."""
        now = self.now()
        open_: dict[tuple[str, str], int] = {}
        overdue: dict[str, int] = {}
        for r in await self.store.find(Query(open_only=True)):
            open_[(r.company, r.type.value)] = open_.get((r.company, r.type.value), 0) + 1
            if r.overdue(now):
                overdue[r.company] = overdue.get(r.company, 0) + 1
        return open_, overdue


def handover_body(req: CitizenRequest) -> tuple[str, dict[str, object]]:
    """The extension's resource and body for a decided plan or correction."""
    d = req.decision
    assert d is not None
    common: dict[str, object] = {
        "account": req.account,
        "decided_at": d.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "decided_by": d.by,
    }
    if req.type == RequestType.INSTALLMENT:
        return "installment-plans", {
            **common,
            "bill_ids": list(req.details.bill_ids),
            "total": req.details.total,
            "installments": [
                {"number": i.number, "due_date": i.due_date.isoformat(), "amount": i.amount}
                for i in d.plan
            ],
        }
    return "bill-corrections", {
        **common,
        "bill_id": req.details.bill_ids[0],
        "old_amount": req.details.total,
        "new_amount": d.new_amount,
        "reason": req.details.reason,
        "reading": req.details.reading,
    }
