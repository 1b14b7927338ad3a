"""How much of a TLS ClientHello has arrived, from the bytes peeked so far; pure.

The listener reads nothing before the TLS library does: it peeks at the socket and asks
:func:`hello_needed` how many bytes a whole ClientHello takes, so that a connection that
has not sent one within the hello deadline is closed before it costs a handshake
(RFC 8446 §5.1 records, §4 handshake header). A ClientHello may span records.
"""

from __future__ import annotations

__all__ = ["MAX_HELLO", "NotTls", "hello_needed"]

#: No ClientHello the switch sends is larger; one that claims more is refused.
MAX_HELLO = 32 * 1024
_HANDSHAKE = 22
_CLIENT_HELLO = 1
_RECORD_HEADER = 5
_MAX_RECORD = 16384 + 2048


class NotTls(ValueError):
    """The bytes are not the start of a TLS ClientHello (or claim one too large)."""


def hello_needed(data: bytes) -> int:
    """0 if ``data`` holds a whole ClientHello, else the total length that is needed next.

    The length returned is always more than ``len(data)``. Raises :class:`NotTls` for
    bytes that cannot begin a ClientHello: another record type, a handshake message
    that is not a ClientHello, a record or hello over the limits.
    """
    body = bytearray()
    pos = 0
    while True:
        if len(data) < pos + _RECORD_HEADER:
            return pos + _RECORD_HEADER
        kind, major = data[pos], data[pos + 1]
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if kind != _HANDSHAKE or major != 3 or not 0 < length <= _MAX_RECORD:
            raise NotTls("not a TLS handshake record")
        end = pos + _RECORD_HEADER + length
        if len(data) < end:
            # The handshake header may already tell the hello is bad.
            body += data[pos + _RECORD_HEADER :]
            _check(body)
            return end
        body += data[pos + _RECORD_HEADER : end]
        if len(body) >= 4 and len(body) >= 4 + _check(body):
            return 0
        pos = end


def _check(body: bytes | bytearray) -> int:
    """The ClientHello's length once its header is in ``body`` (else 0); raises NotTls."""
    if body and body[0] != _CLIENT_HELLO:
        raise NotTls("the first handshake message is not a ClientHello")
    if len(body) < 4:
        return 0
    length = int.from_bytes(body[1:4], "big")
    if length > MAX_HELLO:
        raise NotTls(f"a ClientHello of {length} bytes")
    return length
