"""The citizen's pages: inquiry, recent payments, complaints, installment and correction
requests, tracking. Plain HTML forms (GET to look up, POST to file), no JavaScript.

A field error re-renders the form with the message beside the field and what the
citizen typed; any other refusal is the error page (403, 404, 429, 503...).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData, UploadFile

from billhub.requests.model import (
    CATEGORIES,
    CORRECTION_REASONS,
    DISPOSITIONS,
    RequestError,
    RequestType,
)
from billhub.web.app import CSRF_COOKIE, FormValues, Pages, check_csrf
from billhub.web.services import Inquiry, Services


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def read_form(request: Request, max_upload: int) -> FormData:
    return await request.form(max_files=1, max_fields=40, max_part_size=max_upload + 1024)


async def photo_of(form: FormData, limit: int) -> bytes | None:
    """The uploaded file's bytes (at most ``limit + 1``, so a larger one is refused)."""
    f = form.get("photo")
    if not isinstance(f, UploadFile):
        return None
    data = await f.read(limit + 1)
    await f.close()
    return data or None


def text(form: FormData, name: str) -> str:
    v = form.get(name)
    return v if isinstance(v, str) else ""


def parse_date(value: str, field: str) -> date | None:
    if not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise RequestError(
            f"bad_{field}", "a date YYYY-MM-DD", "تاريخ بصيغة YYYY-MM-DD", field
        ) from None


def parse_int(value: str, field: str) -> int | None:
    v = value.strip()
    if not v:
        return None
    if not v.isdigit() or len(v) > 12:
        raise RequestError(f"bad_{field}", "a whole number", "عدد صحيح", field)
    return int(v)


def router(ui: Pages, services: Services) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    async def public_csrf(request: Request, form: FormData) -> None:
        await check_csrf(request, text(form, "csrf"), request.cookies.get(CSRF_COOKIE, ""))

    @r.get("/")
    async def home(request: Request) -> Response:
        return ui.render(request, "home.html")

    @r.get("/inquiry")
    async def inquiry(request: Request, company: str = "", account: str = "") -> Response:
        form = FormValues({"company": company, "account": account})
        if not account:
            return ui.render(request, "inquiry.html", form=form, result=None)
        try:
            result = await services.inquiry(company, account, client_of(request))
        except RequestError as err:
            if err.field is None and err.code not in ("not_found",):
                raise
            return ui.render(
                request,
                "inquiry.html",
                status=404 if err.code == "not_found" else 422,
                form=form,
                result=None,
                errors=_err(ui, request, err),
            )
        return ui.render(request, "inquiry.html", form=form, result=result)

    @r.post("/inquiry/code")
    async def send_code(request: Request) -> Response:
        form = await request.form()
        await public_csrf(request, form)
        values = FormValues(dict(form))
        await services.send_code(
            text(form, "company"), text(form, "account"), text(form, "phone"), client_of(request)
        )
        return ui.render(request, "code.html", form=values, payments=None)

    @r.post("/inquiry/payments")
    async def payments(request: Request) -> Response:
        form = await request.form()
        await public_csrf(request, form)
        values = FormValues(dict(form))
        try:
            lines = await services.payments(
                text(form, "company"),
                text(form, "account"),
                text(form, "phone"),
                text(form, "code"),
                client_of(request),
            )
        except RequestError as err:
            if err.field != "code":
                raise
            return ui.render(
                request,
                "code.html",
                status=422,
                form=values,
                payments=None,
                errors=_err(ui, request, err),
            )
        return ui.render(request, "code.html", form=values, payments=lines)

    def complaint_page(request: Request, kind: str, status: int = 200, **ctx: Any) -> Response:
        return ui.render(
            request,
            "complaint.html",
            status,
            kind=kind,
            dispositions=DISPOSITIONS,
            categories=CATEGORIES,
            **ctx,
        )

    @r.get("/complaint")
    async def complaint_form(request: Request, kind: str = "service_complaint") -> Response:
        if kind not in ("transaction_complaint", "service_complaint"):
            kind = "service_complaint"
        return complaint_page(request, kind)

    @r.post("/complaint")
    async def complaint(request: Request) -> Response:
        form = await read_form(request, services.max_upload)
        await public_csrf(request, form)
        kind = text(form, "kind")
        if kind not in ("transaction_complaint", "service_complaint"):
            kind = "service_complaint"
        values = FormValues(dict(form))
        try:
            req = await services.file(
                RequestType(kind),
                client=client_of(request),
                company=text(form, "company"),
                account=text(form, "account"),
                phone=text(form, "phone"),
                description=text(form, "description"),
                reference=text(form, "reference"),
                paid_on=parse_date(text(form, "paid_on"), "paid_on"),
                disposition=text(form, "disposition"),
                category=text(form, "category"),
                photo=await photo_of(form, services.max_upload),
            )
        except RequestError as err:
            if err.field is None:
                raise
            return complaint_page(
                request, kind, _field_status(err), form=values, errors=_err(ui, request, err)
            )
        return ui.render(request, "filed.html", 201, req=req)

    async def bill_page(request: Request, kind: str, company: str, account: str) -> Response:
        form = FormValues({"company": company, "account": account}, {"bill_ids": []})
        ctx: dict[str, Any] = {"kind": kind, "reasons": CORRECTION_REASONS, "form": form}
        if not account:
            return ui.render(request, "billrequest.html", bills=None, **ctx)
        try:
            bills: Inquiry = await services.bills_for_request(company, account, client_of(request))
        except RequestError as err:
            if err.field is None and err.code != "not_found":
                raise
            return ui.render(
                request,
                "billrequest.html",
                404 if err.code == "not_found" else 422,
                bills=None,
                errors=_err(ui, request, err),
                **ctx,
            )
        return ui.render(request, "billrequest.html", bills=bills, **ctx)

    async def file_bill_request(request: Request, kind: RequestType) -> Response:
        form = await read_form(request, services.max_upload)
        await public_csrf(request, form)
        ids = [v for v in form.getlist("bill_ids") if isinstance(v, str)]
        values = FormValues(dict(form), {"bill_ids": ids})
        try:
            req = await services.file(
                kind,
                client=client_of(request),
                company=text(form, "company"),
                account=text(form, "account"),
                phone=text(form, "phone"),
                description=text(form, "description"),
                bill_ids=ids,
                installments=parse_int(text(form, "installments"), "installments"),
                reason=text(form, "reason"),
                reading=text(form, "reading"),
                photo=await photo_of(form, services.max_upload),
            )
        except RequestError as err:
            if err.field is None:
                raise
            bills = await services.bills_for_request(
                text(form, "company"), text(form, "account"), client_of(request)
            )
            return ui.render(
                request,
                "billrequest.html",
                _field_status(err),
                kind=kind.value,
                reasons=CORRECTION_REASONS,
                form=values,
                bills=bills,
                errors=_err(ui, request, err),
            )
        return ui.render(request, "filed.html", 201, req=req)

    @r.get("/installment")
    async def installment_form(request: Request, company: str = "", account: str = "") -> Response:
        return await bill_page(request, "installment", company, account)

    @r.post("/installment")
    async def installment(request: Request) -> Response:
        return await file_bill_request(request, RequestType.INSTALLMENT)

    @r.get("/correction")
    async def correction_form(request: Request, company: str = "", account: str = "") -> Response:
        return await bill_page(request, "correction", company, account)

    @r.post("/correction")
    async def correction(request: Request) -> Response:
        return await file_bill_request(request, RequestType.CORRECTION)

    @r.get("/track")
    async def track_form(request: Request) -> Response:
        return ui.render(request, "track.html", req=None)

    @r.post("/track")
    async def track(request: Request) -> Response:
        form = await request.form()
        await public_csrf(request, form)
        values = FormValues(dict(form))
        try:
            req = await services.track(
                text(form, "ticket"), text(form, "phone"), client_of(request)
            )
        except RequestError as err:
            if err.field is None and err.code != "not_found":
                raise
            return ui.render(
                request,
                "track.html",
                404 if err.code == "not_found" else 422,
                form=values,
                req=None,
                errors=_err(ui, request, err),
            )
        return ui.render(request, "track.html", form=values, req=req)

    return r


class _Shown:
    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        self.message = message


def _err(ui: Pages, request: Request, err: RequestError) -> _Shown:
    field = None if err.field == "company" else err.field  # shown above the form
    return _Shown(field, err.ar if ui.lang(request) == "ar" else err.en)


def _field_status(err: RequestError) -> int:
    return {"upload_too_large": 413, "upload_type": 415}.get(err.code, 422)
