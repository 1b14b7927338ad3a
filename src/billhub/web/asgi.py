"""The composition of the web application: the routers of the pages, the desk and the API
under the cross-cutting rules of :mod:`billhub.web.app` (errors, headers, body limit)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from billhub.requests.model import RequestError
from billhub.web import api, desk, pages
from billhub.web.app import (
    _FORM_ROOM,
    LANG_COOKIE,
    TEMPLATES,
    Guard,
    Observe,
    Pages,
    error_body,
    error_headers,
    log,
    status_of,
)
from billhub.web.i18n import LANGS
from billhub.web.services import Services


def create_app(
    services: Services,
    *,
    secure_cookies: bool = True,
    max_upload: int = 5 * 1024 * 1024,
    observe: Observe | None = None,
) -> ASGIApp:
    """The whole web service as one ASGI app (wrapped in :class:`Guard`)."""
    app = FastAPI(
        title="billhub citizen services",
        version="1",
        description="Bill inquiry, complaints, installment and bill-correction requests "
        'for the mobile app. Errors: {"error": {"code", "message": {"ar", "en"}, "field"}}.',
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    ui = Pages(services, secure_cookies=secure_cookies)
    app.state.ui = ui
    app.state.services = services

    def is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, exc: RequestError) -> Response:
        status = status_of(exc)
        if is_api(request):
            return JSONResponse(error_body(exc), status_code=status, headers=error_headers(exc))
        if exc.code == "login_required":
            return RedirectResponse("/desk/login", status_code=303)
        resp = ui.error_page(request, exc, status)
        resp.headers.update(error_headers(exc))
        return resp

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        err = RequestError(
            "invalid_field",
            f"{field or 'request'}: {first.get('msg', 'invalid')}",
            f"قيمة غير صالحة في الحقل {field or ''}".strip(),
            field,
        )
        return JSONResponse(error_body(err), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        err = RequestError(code, str(exc.detail), "الطلب غير صالح")
        if code == "not_found":
            err = RequestError("not_found", "no such page", "الصفحة غير موجودة")
        if is_api(request):
            return JSONResponse(error_body(err), status_code=exc.status_code)
        return ui.error_page(request, err, exc.status_code)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> Response:
        log.error("web_handler_failed", route=request.url.path, error=type(exc).__name__)
        err = RequestError("internal", "something went wrong on our side", "حدث خطأ لدينا")
        if is_api(request):
            return JSONResponse(error_body(err), status_code=500)
        return ui.error_page(request, err, 500)

    @app.get("/static/site.css", include_in_schema=False)
    async def css() -> Response:
        return PlainTextResponse(
            (TEMPLATES / "site.css").read_text(encoding="utf-8"),
            media_type="text/css",
            headers={"cache-control": "public, max-age=3600"},
        )

    @app.get("/lang/{code}", include_in_schema=False)
    async def set_lang(code: str, next: str = "/") -> Response:
        target = next if next.startswith("/") and not next.startswith("//") else "/"
        resp = RedirectResponse(quote(target, safe="/?=&"), status_code=303)
        resp.set_cookie(
            LANG_COOKIE,
            code if code in LANGS else "ar",
            samesite="lax",
            secure=secure_cookies,
            httponly=True,
        )
        return resp

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    # The API first: routes are matched in order, and the app's calls are the most.
    app.include_router(api.router(services))
    app.include_router(pages.router(ui, services))
    app.include_router(desk.router(ui, services, secure_cookies=secure_cookies))
    return Guard(app, max_body=max_upload + _FORM_ROOM, observe=observe)
