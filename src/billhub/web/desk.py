"""The companies' desk: staff log in, see their queue, act on requests, export, report.

Every route but the login page needs a live session (cookie ``bh_session``:
HttpOnly, SameSite=Strict, Secure unless configured off for plain-HTTP development),
and every POST needs the session's CSRF token. What a user may see or do is
decided by :meth:`~billhub.web.services.Services.authorize`, called by the
service functions every route uses; the routes add no rule of their own.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from billhub.requests.model import RequestError
from billhub.requests.states import APPROVAL, TRANSITIONS
from billhub.web.app import CSRF_COOKIE, SESSION_COOKIE, FormValues, Pages, check_csrf
from billhub.web.forms import parse_syp
from billhub.web.pages import _err, client_of, parse_date, parse_int, text
from billhub.web.services import Services, Staff


def router(ui: Pages, services: Services, *, secure_cookies: bool) -> APIRouter:
    r = APIRouter(prefix="/desk", include_in_schema=False)

    async def staff_of(request: Request) -> Staff:
        return await services.staff_session(request.cookies.get(SESSION_COOKIE))

    async def posted(request: Request) -> tuple[Staff, FormData]:
        staff = await staff_of(request)
        form = await request.form(max_files=0, max_fields=60)
        await check_csrf(request, text(form, "csrf"), staff.csrf)
        return staff, form

    @r.get("/login")
    async def login_form(request: Request) -> Response:
        return ui.render(request, "desk_login.html")

    @r.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=10)
        await check_csrf(request, text(form, "csrf"), request.cookies.get(CSRF_COOKIE, ""))
        try:
            token, _ = await services.login(
                text(form, "username"), text(form, "password"), client_of(request)
            )
        except RequestError as err:
            if err.code != "bad_login":
                raise
            return ui.render(
                request,
                "desk_login.html",
                401,
                form=FormValues(dict(form)),
                errors=_err(ui, request, err),
            )
        resp = RedirectResponse("/desk", status_code=303)
        resp.set_cookie(
            SESSION_COOKIE,
            token,
            httponly=True,
            secure=secure_cookies,
            samesite="strict",
            path="/desk",
        )
        return resp

    @r.post("/logout")
    async def logout(request: Request) -> Response:
        staff, _ = await posted(request)
        await services.logout(staff, request.cookies.get(SESSION_COOKIE, ""))
        resp = RedirectResponse("/desk/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/desk")
        return resp

    @r.get("")
    async def queue(request: Request, company: str = "", all: str = "") -> Response:
        staff = await staff_of(request)
        reqs = await services.queue(staff.user, company=company or None, open_only=not all)
        return ui.render(
            request,
            "desk_queue.html",
            staff=staff,
            queue=reqs,
            company=company,
            today=services.now().date().isoformat(),
        )

    @r.get("/requests/{ticket}")
    async def one(request: Request, ticket: str) -> Response:
        staff = await staff_of(request)
        return await _detail(request, staff, ticket, None)

    async def _detail(
        request: Request, staff: Staff, ticket: str, err: RequestError | None
    ) -> Response:
        req = await services.request_for(staff.user, ticket)
        can_write = staff.user.role != "ministry"
        colleagues = (
            [
                u.username
                for u in await services.store.all_staff()
                if u.company == req.company and not u.disabled
            ]
            if can_write
            else []
        )
        return ui.render(
            request,
            "desk_request.html",
            422 if err else 200,
            staff=staff,
            req=req,
            can_write=can_write,
            approval=APPROVAL[req.type].value,
            next_statuses=[s.value for s in sorted(TRANSITIONS[req.status], key=lambda s: s.value)],
            colleagues=colleagues,
            attachments=await services.store.attachments(req.ticket),
            handover=await services.store.handover(req.ticket),
            audit=await services.audit(staff.user, req.ticket),
            first_due=(services.now().date() + timedelta(days=30)).isoformat(),
            errors=_err(ui, request, err) if err else None,
        )

    @r.post("/requests/{ticket}/{action}")
    async def act(request: Request, ticket: str, action: str) -> Response:
        staff, form = await posted(request)
        try:
            await services.act(
                staff.user,
                ticket,
                action,
                status=text(form, "status"),
                note=text(form, "note"),
                public=not text(form, "internal"),
                assignee=text(form, "assignee"),
                outcome=text(form, "outcome"),
                count=parse_int(text(form, "count"), "count"),
                first_due=parse_date(text(form, "first_due"), "first_due"),
                new_amount=parse_syp(text(form, "new_amount"), "new_amount"),
            )
        except RequestError as err:
            if err.code in ("forbidden", "not_found", "login_required", "csrf", "bad_ticket"):
                raise
            return await _detail(request, staff, ticket, err)
        return RedirectResponse(f"/desk/requests/{ticket}", status_code=303)

    @r.get("/requests/{ticket}/attachments/{ident}")
    async def attachment(request: Request, ticket: str, ident: str) -> Response:
        staff = await staff_of(request)
        att, data = await services.attachment(staff.user, ticket, ident)
        ext = {"image/jpeg": "jpg", "image/png": "png", "application/pdf": "pdf"}[att.content_type]
        return Response(
            data,
            media_type=att.content_type,
            headers={
                "content-disposition": f'attachment; filename="{ticket}-{ident[:8]}.{ext}"',
                "cache-control": "no-store",
            },
        )

    @r.get("/export")
    async def export(request: Request, company: str = "", day: str = "") -> Response:
        staff = await staff_of(request)
        when = parse_date(day, "day") or services.now().date()
        body, path = await services.export(staff.user, company, when)
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{path.name}"'},
        )

    def _month(month: str) -> str:
        return month or services.now().strftime("%Y-%m")

    @r.get("/report")
    async def report(request: Request, month: str = "") -> Response:
        staff = await staff_of(request)
        rows = await services.monthly_report(staff.user, _month(month))
        return ui.render(request, "desk_report.html", staff=staff, rows=rows, month=_month(month))

    @r.get("/report.csv")
    async def report_csv(request: Request, month: str = "") -> Response:
        staff = await staff_of(request)
        rows = await services.monthly_report(staff.user, _month(month))
        return Response(
            services.report_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={
                "content-disposition": f'attachment; filename="requests-report-{_month(month)}.csv"'
            },
        )

    return r
