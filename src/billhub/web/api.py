"""The mobile app's JSON API, ``/api/v1``: the same four services as the pages.

Bodies are validated by their models (a bad field is ``422`` with
``{"error": {"code": "invalid_field", "field": ...}}``); every refusal has the
one error shape of :func:`billhub.web.app.error_body`. The OpenAPI document is
generated from these models and served at ``/api/v1/openapi.json``. A photo is
sent base64-encoded in ``photo_base64`` and checked like an uploaded file.
"""

from __future__ import annotations

import base64
import binascii
from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from billhub.requests.model import CitizenRequest, RequestError, RequestType
from billhub.web.masking import mask_phone
from billhub.web.pages import client_of
from billhub.web.services import Services

Account = Annotated[str, Field(min_length=4, max_length=20, pattern=r"^[0-9]+$")]
Phone = Annotated[str, Field(min_length=9, max_length=20)]
CompanyCode = Annotated[str, Field(min_length=1, max_length=11, pattern=r"^[0-9]+$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorMessage(BaseModel):
    ar: str
    en: str


class ErrorDetail(BaseModel):
    code: str
    message: ErrorMessage
    field: str | None


class ErrorOut(BaseModel):
    error: ErrorDetail


class CompanyOut(BaseModel):
    code: str
    name: str
    online_inquiry: bool


class BillOut(BaseModel):
    bill_id: str
    period: str
    due_date: date
    amount: int = Field(description="minor units (1/100 SYP)")


class InquiryOut(BaseModel):
    company: str
    account: str
    customer_name: str = Field(description="first name and the family name's initial")
    status: str
    bills: list[BillOut]
    total_due: int


class CodeIn(_In):
    company: CompanyCode
    account: Account
    phone: Phone


class PaymentsIn(CodeIn):
    code: Annotated[str, Field(min_length=4, max_length=8)]


class PaymentOut(BaseModel):
    paid_at: datetime
    amount: int
    channel: str
    receipt: str | None
    state: str


class ComplaintIn(_In):
    kind: Literal["transaction", "service"]
    company: CompanyCode
    account: Account
    phone: Phone
    description: Annotated[str, Field(max_length=2000)] = ""
    reference: Annotated[str, Field(max_length=20)] = ""
    paid_on: date | None = None
    disposition: Literal["", "paid_still_due", "paid_twice", "wrong_amount", "wrong_account"] = ""
    category: Literal["", "billing", "meter", "supply", "staff", "other"] = ""
    photo_base64: str | None = None


class InstallmentIn(_In):
    company: CompanyCode
    account: Account
    phone: Phone
    bill_ids: Annotated[
        list[Annotated[str, Field(max_length=40)]], Field(min_length=1, max_length=50)
    ]
    installments: Annotated[int, Field(ge=2, le=24)]
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class CorrectionIn(_In):
    company: CompanyCode
    account: Account
    phone: Phone
    bill_id: Annotated[str, Field(max_length=40)]
    reason: Literal["wrong_reading", "estimated_reading", "tariff", "other"]
    reading: Annotated[str, Field(max_length=9)] = ""
    description: Annotated[str, Field(max_length=2000)] = ""
    photo_base64: str | None = None


class TrackIn(_In):
    ticket: Annotated[str, Field(min_length=12, max_length=14)]
    phone: Phone


class ChangeOut(BaseModel):
    at: datetime
    status: str
    note: str


class InstallmentOut(BaseModel):
    number: int
    due_date: date
    amount: int


class DecisionOut(BaseModel):
    status: str
    note: str
    at: datetime
    plan: list[InstallmentOut]
    new_amount: int | None


class FindingOut(BaseModel):
    outcome: str
    receipt: str | None
    amount: int | None
    biller_status: str | None


class RequestOut(BaseModel):
    ticket: str
    type: str
    company: str
    status: str
    phone: str = Field(description="masked")
    filed_at: datetime
    due_at: datetime
    finding: FindingOut | None
    decision: DecisionOut | None
    history: list[ChangeOut]


def request_out(r: CitizenRequest) -> RequestOut:
    f = r.details.finding
    d = r.decision
    return RequestOut(
        ticket=r.ticket,
        type=r.type.value,
        company=r.company,
        status=r.status.value,
        phone=mask_phone(r.phone),
        filed_at=r.filed_at,
        due_at=r.due_at,
        finding=None
        if f is None
        else FindingOut(
            outcome=f.outcome, receipt=f.receipt, amount=f.amount, biller_status=f.biller_status
        ),
        decision=None
        if d is None
        else DecisionOut(
            status=d.status.value,
            note=d.note,
            at=d.at,
            plan=[
                InstallmentOut(number=i.number, due_date=i.due_date, amount=i.amount)
                for i in d.plan
            ],
            new_amount=d.new_amount,
        ),
        history=[
            ChangeOut(at=c.at, status=c.status.value, note=c.note if c.action != "filed" else "")
            for c in r.public_history()
        ],
    )


def _photo(b64: str | None, limit: int) -> bytes | None:
    if not b64:
        return None
    if len(b64) > (limit * 4) // 3 + 8:
        raise RequestError(
            "upload_too_large",
            f"the file is larger than {limit // 1024} KiB",
            f"حجم الملف أكبر من {limit // 1024} كيلوبايت",
            "photo_base64",
        )
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            "bad_photo", "photo_base64 is not base64", "الصورة ليست بترميز base64", "photo_base64"
        ) from None


ERRORS = {
    400: {"model": ErrorOut},
    404: {"model": ErrorOut},
    422: {"model": ErrorOut},
    429: {"model": ErrorOut, "description": "too many requests; see Retry-After"},
    503: {"model": ErrorOut, "description": "the company's system is down; see Retry-After"},
}


def router(services: Services) -> APIRouter:
    r = APIRouter(prefix="/api/v1", responses=ERRORS)  # type: ignore[arg-type]

    @r.get("/companies", response_model=list[CompanyOut])
    async def companies() -> list[CompanyOut]:
        return [
            CompanyOut(code=c.code, name=c.name, online_inquiry=c.biller is not None)
            for c in services.companies.values()
        ]

    @r.get("/bills", response_model=InquiryOut, summary="Bill inquiry: what a paper bill shows")
    async def bills(
        request: Request,
        company: Annotated[str, Query(max_length=11)],
        account: Annotated[str, Query(max_length=20)],
    ) -> InquiryOut:
        q = await services.inquiry(company, account, client_of(request))
        return InquiryOut(
            company=q.company.code,
            account=q.account,
            customer_name=q.name,
            status=q.status.value,
            bills=[
                BillOut(bill_id=b.bill_id, period=b.period, due_date=b.due_date, amount=b.amount)
                for b in q.bills
            ],
            total_due=q.total_due,
        )

    @r.post("/payments/code", status_code=202, summary="Send a one-time code to the phone on file")
    async def payments_code(request: Request, body: CodeIn) -> dict[str, str]:
        await services.send_code(body.company, body.account, body.phone, client_of(request))
        return {"status": "sent_if_on_file"}

    @r.post(
        "/payments", response_model=list[PaymentOut], summary="Recent payments (needs the code)"
    )
    async def payments(request: Request, body: PaymentsIn) -> list[PaymentOut]:
        lines = await services.payments(
            body.company, body.account, body.phone, body.code, client_of(request)
        )
        return [
            PaymentOut(
                paid_at=p.paid_at,
                amount=p.amount,
                channel=p.channel,
                receipt=p.receipt,
                state=p.state,
            )
            for p in lines
        ]

    @r.post("/complaints", response_model=RequestOut, status_code=201)
    async def complaint(request: Request, body: ComplaintIn) -> RequestOut:
        kind = (
            RequestType.TRANSACTION_COMPLAINT
            if body.kind == "transaction"
            else RequestType.SERVICE_COMPLAINT
        )
        req = await services.file(
            kind,
            client=client_of(request),
            company=body.company,
            account=body.account,
            phone=body.phone,
            description=body.description,
            reference=body.reference,
            paid_on=body.paid_on,
            disposition=body.disposition,
            category=body.category,
            photo=_photo(body.photo_base64, services.max_upload),
        )
        return request_out(req)

    @r.post("/installments", response_model=RequestOut, status_code=201)
    async def installment(request: Request, body: InstallmentIn) -> RequestOut:
        req = await services.file(
            RequestType.INSTALLMENT,
            client=client_of(request),
            company=body.company,
            account=body.account,
            phone=body.phone,
            bill_ids=body.bill_ids,
            installments=body.installments,
            reason=body.reason,
        )
        return request_out(req)

    @r.post("/corrections", response_model=RequestOut, status_code=201)
    async def correction(request: Request, body: CorrectionIn) -> RequestOut:
        req = await services.file(
            RequestType.CORRECTION,
            client=client_of(request),
            company=body.company,
            account=body.account,
            phone=body.phone,
            bill_ids=[body.bill_id],
            reason=body.reason,
            reading=body.reading,
            description=body.description,
            photo=_photo(body.photo_base64, services.max_upload),
        )
        return request_out(req)

    @r.post("/track", response_model=RequestOut, summary="A request's status and history")
    async def track(request: Request, body: TrackIn) -> RequestOut:
        return request_out(await services.track(body.ticket, body.phone, client_of(request)))

    return r
