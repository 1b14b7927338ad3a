"""The event loop the hub and the switch run on: uvloop where installed, the stdlib's otherwise.

What an operator relies on: ``[server] event_loop`` (or ``--event-loop``) picks the
loop, a loop that cannot be had is a one-line configuration error, and on uvloop the
mutual-TLS link works as on the standard loop: sign-on, an inquiry answered, the peer's
certificate read for the allow-list, refusals and the handshake deadline labelled alike.
The link tests further down run on uvloop; they are skipped where it is not installed.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.hubharness import RunningHub, hub_config_text, start_hub

from billhub.config import parse_config
from billhub.errors import BillhubError, ConfigError
from billhub.iso8583.message import Message
from billhub.link.responses import make_response
from billhub.simulator import messages as m
from billhub.simulator.switch import SwitchLink
from billhub.transport import eventloop
from billhub.transport.tls import client_context

uvloop: Any
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency where it installs
    uvloop = None

needs_uvloop = pytest.mark.skipif(uvloop is None, reason="uvloop is not installed")


async def _running_loop() -> str:
    return eventloop.loop_name()


# -- choosing the loop -------------------------------------------------------------------


def test_asyncio_choice_runs_the_standard_loop() -> None:
    assert eventloop.run(_running_loop(), "asyncio") == "asyncio"


@needs_uvloop
def test_auto_and_uvloop_run_uvloop_where_it_is_installed() -> None:
    assert eventloop.run(_running_loop(), "auto") == "uvloop"
    assert eventloop.run(_running_loop(), "uvloop") == "uvloop"


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    yield


def test_auto_falls_back_to_the_standard_loop_without_uvloop(no_uvloop: None) -> None:
    assert not eventloop.uvloop_available()
    assert eventloop.run(_running_loop(), "auto") == "asyncio"


def test_insisting_on_uvloop_without_it_is_a_configuration_error(no_uvloop: None) -> None:
    coro = _running_loop()
    with pytest.raises(ConfigError) as info:
        eventloop.run(coro, "uvloop")
    assert info.value.key == "server.event_loop"
    assert "uvloop is not installed" in str(info.value)
    assert coro.cr_frame is None  # closed, not left to warn "never awaited"


def test_config_server_event_loop(pki) -> None:  # type: ignore[no-untyped-def]
    base = hub_config_text(pki)
    assert parse_config(base, base_dir=Path("."), env={}).server.event_loop == "auto"
    for choice in ("auto", "uvloop", "asyncio"):
        text = f'{base}\n[server]\nevent_loop = "{choice}"\n'
        assert parse_config(text, base_dir=Path("."), env={}).server.event_loop == choice
    with pytest.raises(ConfigError) as info:
        parse_config(f'{base}\n[server]\nevent_loop = "uv"\n', base_dir=Path("."), env={})
    assert info.value.key == "server.event_loop"
    with pytest.raises(ConfigError) as info:
        parse_config(f"{base}\n[server]\nloop = 1\n", base_dir=Path("."), env={})
    assert info.value.key == "server.loop"


# -- the mutual-TLS link on uvloop -----------------------------------------------------------
#
# Each scenario runs on a fresh uvloop through eventloop.run, as `billhub serve` does: the
# hub in process (its recorder hears the link facts), the simulated switch beside it.


class Approver:
    """Answers every financial request `00`, as a biller that knows every account would."""

    def __init__(self, hub: RunningHub) -> None:
        self.rules = hub.hub.codec.spec.rules
        self.seen: list[Message] = []

    async def handle(self, request: Message) -> Message:
        self.seen.append(request)
        return make_response(self.rules, request, "00")


def on_uvloop(pki: Any, scenario: Callable[[RunningHub], Awaitable[None]]) -> None:
    async def main() -> None:
        assert eventloop.loop_name() == "uvloop"
        running = await start_hub(pki, handshake_timeout_s=0.5)
        try:
            await scenario(running)
        finally:
            await running.hub.server.shutdown(1.0)

    eventloop.run(main(), "uvloop")


@needs_uvloop
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_sign_on_and_inquiry_over_mutual_tls_on_uvloop(pki, version: str) -> None:  # type: ignore[no-untyped-def]
    async def scenario(hub: RunningHub) -> None:
        approver = Approver(hub)
        hub.hub.server.handler.financial = approver  # type: ignore[attr-defined]
        link = await hub.connect(max_version=version)  # signs on, asserts `00`
        answer = await link.request(m.inquiry("100001", "0100123456", "000000000123"))
        assert (answer.mti, answer.fields[39], answer.rrn) == ("0210", "00", "000000000123")
        assert [r.account for r in approver.seen] == ["0100123456"]
        assert (await link.echo()).fields[39] == "00"
        assert "CN=switch-1" in hub.recorder.opened[-1].subject  # peer cert via ssl_object
        await link.close()

    on_uvloop(pki, scenario)


@needs_uvloop
@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ("none", "no_client_certificate"),
        ("rogue", "unknown_ca"),
        ("intruder", "subject_not_allowed"),
    ],
)
def test_refusals_are_labelled_as_on_the_standard_loop(pki, who: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    if who == "none":
        ctx = client_context(None, None, pki.hub_ca_cert)
    else:
        ctx = client_context(
            getattr(pki, f"{who}_cert"), getattr(pki, f"{who}_key"), pki.hub_ca_cert
        )

    async def scenario(hub: RunningHub) -> None:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError, BillhubError, TimeoutError)):
            link = await SwitchLink.connect("127.0.0.1", hub.port, ctx, hub.hub.codec)
            await link.request(link.link.network_request("001"), timeout=3)
        await hub.recorder.wait_for(f"refused:{reason}", timeout=5)
        assert not hub.recorder.opened
        assert not hub.recorder.exchanges

    on_uvloop(pki, scenario)


@needs_uvloop
def test_a_client_that_stalls_after_its_hello_hits_the_handshake_deadline(pki) -> None:  # type: ignore[no-untyped-def]
    async def scenario(hub: RunningHub) -> None:
        # A real ClientHello, then silence: the hub's TLS handshake must give up on its own.
        out = ssl.MemoryBIO()
        obj = hub.context().wrap_bio(ssl.MemoryBIO(), out, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        _, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        writer.write(out.read())
        await writer.drain()
        await hub.recorder.wait_for("refused:handshake_timeout", timeout=5)
        assert not hub.recorder.opened
        writer.close()

    on_uvloop(pki, scenario)
