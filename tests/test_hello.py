"""How much of a ClientHello has arrived: the listener's hello deadline depends on it."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billhub.transport.hello import NotTls, hello_needed
from billhub.transport.tls import client_context


def real_hello(pki) -> bytes:  # type: ignore[no-untyped-def]
    ctx = client_context(pki.switch_cert, pki.switch_key, pki.hub_ca_cert)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_a_real_hello_is_whole_only_at_its_last_byte(pki) -> None:  # type: ignore[no-untyped-def]
    hello = real_hello(pki)
    assert hello_needed(hello) == 0
    for cut in (0, 1, 4, 5, 8, 9, len(hello) // 2, len(hello) - 1):
        need = hello_needed(hello[:cut])
        assert cut < need <= len(hello)


def test_a_hello_split_over_two_records_is_whole_with_the_second() -> None:
    body = b"\x01\x00\x00\x06" + b"abcdef"  # ClientHello, 6 bytes
    rec1 = b"\x16\x03\x01\x00\x04" + body[:4]
    rec2 = b"\x16\x03\x01\x00\x06" + body[4:]
    assert hello_needed(rec1) == len(rec1) + 5
    assert hello_needed(rec1 + rec2[:3]) == len(rec1) + 5
    assert hello_needed(rec1 + rec2) == 0


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"\x17\x03\x03\x00\x10",
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",
        b"\x16\x03\x01\x00\x04\x01\xff\xff\xff",
    ],
    ids=["http", "application-data", "server-hello", "huge"],
)
def test_what_cannot_begin_a_client_hello_is_refused(data: bytes) -> None:
    with pytest.raises(NotTls):
        hello_needed(data)


@given(st.binary(max_size=64))
def test_any_bytes_give_a_length_to_wait_for_or_not_tls(data: bytes) -> None:
    try:
        need = hello_needed(data)
    except NotTls:
        return
    assert need == 0 or need > len(data)
