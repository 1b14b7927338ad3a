"""The web service's ASGI application: citizen pages, the desk, the JSON API, one error shape.

FastAPI (Starlette underneath) routes every request; pages are rendered on the
server with Jinja2 and work without JavaScript. Cross-cutting rules live here, once:

* **Security headers** on every answer: a CSP that allows only this site's own
  files (no inline script, no framing), ``frame-ancestors 'none'``, a strict
  referrer policy, ``nosniff``.
* **Body limit**: a request body larger than the upload limit (plus room for the
  form's other fields) is refused with 413 before it is read, so an oversized
  upload is never written anywhere.
* **Errors**: a :class:`~billhub.requests.model.RequestError` becomes, for the
  API, ``{"error": {"code", "message": {"ar", "en"}, "field"}}`` with its HTTP
  status, and for a page the error page in the reader's language. Anything else
  is logged and answered 500 with no detail: no traceback reaches anyone.
* **CSRF**: every POST form carries a token. The desk's is its session's; public
  forms use a random token in a SameSite=Strict HttpOnly cookie, repeated in the
  form (double submit).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import orjson
from fastapi import Request
from fastapi.responses import (
    HTMLResponse,
    Response,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billhub.money import Amount
from billhub.observability.logs import get_logger
from billhub.requests.model import RequestError
from billhub.web.i18n import LANGS, translate
from billhub.web.services import RateLimited, Services

TEMPLATES = Path(__file__).parent / "templates"
CSRF_COOKIE = "bh_csrf"
SESSION_COOKIE = "bh_session"
LANG_COOKIE = "bh_lang"
_FORM_ROOM = 64 * 1024

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cross-origin-opener-policy", b"same-origin"),
]

STATUS_OF: Mapping[str, int] = {
    "rate_limited": 429,
    "not_found": 404,
    "biller_unavailable": 503,
    "forbidden": 403,
    "login_required": 401,
    "csrf": 403,
    "upload_too_large": 413,
    "upload_type": 415,
    "changed_meanwhile": 409,
    "bad_login": 401,
}

log = get_logger("billhub.web")

Observe = Callable[[str, str, int, float], None]


class Guard:
    """ASGI middleware: security headers, the body limit, and per-route metrics."""

    def __init__(self, app: ASGIApp, *, max_body: int, observe: Observe | None) -> None:
        self.app = app
        self.max_body = max_body
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                await _too_large(send)
                self._observe(scope, 413, started)
                return
        seen = {"n": 0}

        async def limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["n"] += len(message.get("body", b""))
                if seen["n"] > self.max_body:
                    raise _BodyTooLarge
            return message

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited, with_headers)
        except _BodyTooLarge:
            await _too_large(send)
            status["code"] = 413
        self._observe(scope, status["code"], started)

    def _observe(self, scope: Scope, code: int, started: float) -> None:
        if self.observe is None:
            return
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        self.observe(scope.get("method", "GET"), path, code, time.perf_counter() - started)


class _BodyTooLarge(Exception):
    pass


_TOO_LARGE = orjson.dumps(
    {
        "error": {
            "code": "upload_too_large",
            "message": {"ar": "الطلب كبير جداً", "en": "the request is too large"},
            "field": None,
        }
    }
)


async def _too_large(send: Send) -> None:
    body = _TOO_LARGE
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def syp(minor: int | None) -> str:
    return "—" if minor is None else Amount(int(minor)).format()


class Pages:
    """Rendering pages: the language, the CSRF cookie, the templates' helpers."""

    def __init__(self, services: Services, *, secure_cookies: bool) -> None:
        self.services = services
        self.secure = secure_cookies
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
        )
        self.env.globals["syp"] = syp
        self.env.globals["company_name"] = self.company_name

    def company_name(self, code: str) -> str:
        c = self.services.companies.get(code)
        return c.name if c else code

    @staticmethod
    def lang(request: Request) -> str:
        wanted = request.cookies.get(LANG_COOKIE, "ar")
        return wanted if wanted in LANGS else "ar"

    @staticmethod
    def csrf_cookie(request: Request) -> str:
        token = request.cookies.get(CSRF_COOKIE, "")
        if len(token) < 20:
            token = getattr(request.state, "new_csrf", None) or secrets.token_urlsafe(24)
            request.state.new_csrf = token
        return token

    def render(
        self, request: Request, template: str, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        lang = self.lang(request)
        ctx.setdefault("errors", None)
        ctx.setdefault("form", _Blank())
        ctx.setdefault("staff", None)
        ctx.setdefault("now", self.services.now())
        csrf = self.csrf_cookie(request)
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        html = self.env.get_template(template).render(
            lang=lang,
            t=lambda key: translate(key, lang),
            csrf=csrf,
            here=here,
            companies=list(self.services.companies.values()),
            **ctx,
        )
        resp = HTMLResponse(html, status_code=status)
        resp.headers["cache-control"] = "no-store"
        self.set_csrf(request, resp)
        return resp

    def set_csrf(self, request: Request, resp: Response) -> None:
        new = getattr(request.state, "new_csrf", None)
        if new:
            resp.set_cookie(
                CSRF_COOKIE, new, httponly=True, samesite="strict", secure=self.secure, path="/"
            )

    def error_page(self, request: Request, err: RequestError, status: int) -> HTMLResponse:
        lang = self.lang(request)
        resp = self.render(
            request,
            "error.html",
            status,
            code=err.code,
            message=err.ar if lang == "ar" else err.en,
            retry_after=getattr(err, "retry_after", None),
        )
        return resp


class _Blank:
    """An empty form: every field reads as ""."""

    def __getattr__(self, name: str) -> str:
        return ""


class FormValues:
    """A submitted form's values for re-display (never the password or the file)."""

    def __init__(
        self, values: Mapping[str, Any], lists: Mapping[str, list[str]] | None = None
    ) -> None:
        self._v = {k: v for k, v in values.items() if isinstance(v, str) and k != "password"}
        self._lists = lists or {}

    def __getattr__(self, name: str) -> Any:
        if name in self._lists:
            return self._lists[name]
        return self._v.get(name, "")


def error_body(err: RequestError) -> dict[str, Any]:
    return {
        "error": {"code": err.code, "message": {"ar": err.ar, "en": err.en}, "field": err.field}
    }


def status_of(err: RequestError) -> int:
    if err.code in STATUS_OF:
        return STATUS_OF[err.code]
    return 422 if err.field else 400


def error_headers(err: RequestError) -> dict[str, str]:
    if isinstance(err, RateLimited):
        return {"Retry-After": str(err.retry_after)}
    if err.code == "biller_unavailable":
        return {"Retry-After": "60"}
    return {}


async def check_csrf(request: Request, form_token: str, expected: str) -> None:
    if not expected or not form_token or not secrets.compare_digest(form_token, expected):
        raise RequestError(
            "csrf",
            "the form expired; please reload the page",
            "انتهت صلاحية النموذج؛ يرجى إعادة تحميل الصفحة",
        )


Handler = Callable[..., Awaitable[Response]]
