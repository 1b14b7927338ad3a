"""Mutual TLS at the real hub: who gets a link and who is refused, over TLS 1.2 and 1.3.

A refused peer must get no application data: the handshake fails, or (TLS 1.3,
where the client finishes first) the hub closes before reading or writing a
frame. Every refusal is reported with its reason.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest
from tests.hubharness import RunningHub, start_hub

from billhub.errors import BillhubError
from billhub.simulator.switch import SwitchLink
from billhub.transport.tls import client_context


@pytest.fixture
async def hub(pki):  # type: ignore[no-untyped-def]
    running = await start_hub(pki)
    yield running
    await running.hub.server.shutdown(1.0)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_allowed_switch_gets_a_link(hub: RunningHub, version: str) -> None:
    link = await hub.connect(max_version=version)
    assert (await link.echo()).fields[39] == "00"
    assert "CN=switch-1" in hub.recorder.opened[-1].subject
    await link.close()


async def _refused(hub: RunningHub, ctx: ssl.SSLContext) -> None:
    """Connect and try a sign-on; it must fail without any answer from the hub."""
    with pytest.raises((ssl.SSLError, ConnectionError, OSError, BillhubError, TimeoutError)):
        link = await SwitchLink.connect("127.0.0.1", hub.port, ctx, hub.hub.codec)
        await link.request(link.link.network_request("001"), timeout=3)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ("none", "no_client_certificate"),
        ("rogue", "unknown_ca"),
        ("expired", "certificate_expired"),
        ("intruder", "subject_not_allowed"),
    ],
)
async def test_refused_peers(hub: RunningHub, pki, version: str, who: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    if who == "none":
        ctx = client_context(None, None, pki.hub_ca_cert, max_version=version)
    else:
        ctx = client_context(
            getattr(pki, f"{who}_cert"),
            getattr(pki, f"{who}_key"),
            pki.hub_ca_cert,
            max_version=version,
        )
    await _refused(hub, ctx)
    await hub.recorder.wait_for(f"refused:{reason}", timeout=5)
    assert not hub.recorder.opened, "no link was opened for a refused peer"
    assert not hub.recorder.exchanges, "nothing was read or answered"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
async def test_tls_below_1_2_is_refused(hub: RunningHub, pki) -> None:  # type: ignore[no-untyped-def]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.hub_ca_cert)
    ctx.load_cert_chain(pki.switch_cert, pki.switch_key)
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        await asyncio.open_connection("127.0.0.1", hub.port, ssl=ctx, server_hostname="localhost")
    assert not hub.recorder.opened
