"""Incremental framing: bytes in, whole frames out (2-byte big-endian length header).

Sans-IO, in the shape of h11's receive buffer: :meth:`Framer.receive_data` only
buffers, :meth:`Framer.next_frame` returns a frame or ``None``. A length of 0 or
over the maximum raises :class:`FramingError`; after that the framer is dead,
because a byte stream cannot be resynchronised. The read timeout for a frame
that stops half-way belongs to the link, which asks :attr:`Framer.partial`.
"""

from __future__ import annotations

from billhub.errors import FramingError


class Framer:
    """Splits a byte stream into frames; never reads past a frame's length."""

    __slots__ = ("_buf", "_dead", "_header", "_max", "_pos")

    def __init__(self, max_length: int = 4096, header: int = 2) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._max = max_length
        self._header = header
        self._dead = False

    def receive_data(self, data: bytes) -> None:
        if self._dead:
            raise FramingError("stream already failed")
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    @property
    def partial(self) -> bool:
        """Whether the next frame has started to arrive but is not whole yet.

        Whole frames waiting to be taken do not count: a link that stops taking
        frames (its in-flight bound) must not trip its own read timeout.
        """
        avail = len(self._buf) - self._pos
        if avail == 0:
            return False
        if avail < self._header:
            return True
        length = int.from_bytes(self._buf[self._pos : self._pos + self._header], "big")
        return avail < self._header + length

    def next_frame(self) -> bytes | None:
        """The next whole frame's message, or ``None`` until more bytes arrive."""
        if self._dead:
            raise FramingError("stream already failed")
        avail = len(self._buf) - self._pos
        if avail < self._header:
            return None
        start = self._pos + self._header
        length = int.from_bytes(self._buf[self._pos : start], "big")
        if length == 0 or length > self._max:
            self._dead = True
            raise FramingError(f"frame length {length} outside 1..{self._max}")
        end = start + length
        if end > len(self._buf):
            return None
        frame = bytes(self._buf[start:end])
        self._pos = end
        if self._pos > 65536:  # compact now and then, not on every frame
            del self._buf[: self._pos]
            self._pos = 0
        return frame

    def fail(self) -> None:
        """Mark the stream failed (e.g. the read timeout fired mid-frame)."""
        self._dead = True


def frame(body: bytes, header: int = 2) -> bytes:
    """Prefix a message with its length header."""
    return len(body).to_bytes(header, "big") + body
