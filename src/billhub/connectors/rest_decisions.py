"""A REST biller taking decided plans and corrections online (specs/BILLERS-requests.md).

The extension of BILLERS.md section 1: ``PUT /installment-plans/{ticket}`` and
``PUT /bill-corrections/{ticket}``, idempotent on the ticket, same token and TLS as
the biller's other calls. A 200 gives the company's reference; a 4xx of the
contract is a refusal (:class:`~billhub.requests.ports.HandoverRefused`); anything
else (time-out, connection, 5xx, 401) is retried later by the caller.
"""

from __future__ import annotations

import aiohttp

from billhub.config import RestSettings
from billhub.connectors.rest import _client_ssl_context
from billhub.errors import BillerUnavailable
from billhub.requests.ports import HandoverRefused

_REFUSALS = {404, 409, 422}


class RestDecisions:
    def __init__(self, code: str, settings: RestSettings, *, timeout_s: float = 10.0) -> None:
        self.code = code
        self._base = settings.base_url.rstrip("/")
        self._token = settings.token
        self._ssl = _client_ssl_context(code, settings, https=self._base.startswith("https:"))
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def hand_over(self, resource: str, ticket: str, body: dict[str, object]) -> str:
        if resource not in ("installment-plans", "bill-corrections"):
            raise ValueError(resource)
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.put(
                    f"{self._base}/{resource}/{ticket}",
                    json=body,
                    headers={"Authorization": f"Bearer {self._token}"},
                    ssl=self._ssl if self._ssl is not None else True,
                ) as resp,
            ):
                answer = await resp.json(content_type=None)
                if resp.status == 200 and isinstance(answer, dict):
                    reference = answer.get("reference")
                    if isinstance(reference, str) and reference:
                        return reference
                if resp.status in _REFUSALS and isinstance(answer, dict):
                    raise HandoverRefused(str(answer.get("error")), str(answer.get("message", "")))
                raise BillerUnavailable(f"{self.code} answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BillerUnavailable(f"{self.code} unreachable: {type(exc).__name__}") from None
