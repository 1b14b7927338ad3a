"""The 2-byte length framing of LINK-SPEC 1: whole frames out, however the bytes arrive.

A frame is a 2-byte unsigned big-endian length (1 to 4,096) and that many bytes.
A length of 0 or over 4,096 is a framing error after which the stream is dead.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from billhub.errors import FramingError
from billhub.iso8583.codec import Codec
from billhub.iso8583.framing import Framer, frame
from billhub.iso8583.message import Message
from billhub.iso8583.spec import load_spec

SPEC = load_spec()
CODEC = Codec(SPEC)
FAST = settings(max_examples=200, deadline=None)


def bodies() -> list[bytes]:
    msgs = [
        Message("0800", {7: "1124094512", 11: "000001", 70: "001"}),
        Message("0810", {7: "1124094512", 11: "000001", 39: "00", 70: "001"}),
        Message(
            "0200",
            {
                3: "310000",
                4: "000000000000",
                7: "1124094512",
                11: "000123",
                32: "600001",
                100: "100001",
                102: "0100123456",
            },
        ),
    ]
    return [CODEC.encode(m) for m in msgs]


def drain(framer: Framer) -> list[bytes]:
    out = []
    while (f := framer.next_frame()) is not None:
        out.append(f)
    return out


def feed(chunks: list[bytes]) -> list[bytes]:
    framer = Framer()
    out: list[bytes] = []
    for chunk in chunks:
        framer.receive_data(chunk)
        out += drain(framer)
    return out


def test_frame_helper_and_codec_frame_agree() -> None:
    msg = Message("0800", {7: "1124094512", 11: "000001", 70: "301"})
    body = CODEC.encode(msg)
    assert frame(body) == CODEC.frame(msg) == len(body).to_bytes(2, "big") + body


def test_one_frame_in_one_chunk() -> None:
    body = bodies()[0]
    framer = Framer()
    framer.receive_data(frame(body))
    assert framer.next_frame() == body
    assert framer.next_frame() is None
    assert not framer.partial


def test_split_at_every_byte_boundary_reassembles() -> None:
    wanted = bodies()
    stream = b"".join(frame(b) for b in wanted)
    for i in range(len(stream) + 1):
        assert feed([stream[:i], stream[i:]]) == wanted, i


def test_split_at_every_pair_of_boundaries_reassembles() -> None:
    wanted = bodies()[:2]
    stream = b"".join(frame(b) for b in wanted)
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            assert feed([stream[:i], stream[i:j], stream[j:]]) == wanted, (i, j)


def test_byte_by_byte() -> None:
    wanted = bodies()
    stream = b"".join(frame(b) for b in wanted)
    assert feed([bytes([c]) for c in stream]) == wanted


def test_many_frames_in_one_chunk() -> None:
    wanted = bodies() * 100
    framer = Framer()
    framer.receive_data(b"".join(frame(b) for b in wanted))
    assert drain(framer) == wanted
    assert not framer.partial


def test_partial_says_whether_a_frame_is_half_way() -> None:
    data = frame(bodies()[0])
    framer = Framer()
    assert not framer.partial
    framer.receive_data(data[:1])  # one byte of the header is already part of a frame
    assert framer.partial
    assert framer.next_frame() is None
    framer.receive_data(data[1:-1])
    assert framer.next_frame() is None
    assert framer.partial
    framer.receive_data(data[-1:])
    assert framer.next_frame() == bodies()[0]
    assert not framer.partial


def test_frame_followed_by_the_start_of_another() -> None:
    first, second = bodies()[0], bodies()[2]
    tail = frame(second)
    framer = Framer()
    framer.receive_data(frame(first) + tail[:5])
    assert framer.next_frame() == first  # exactly the declared length, nothing more
    assert framer.next_frame() is None
    assert framer.partial
    framer.receive_data(tail[5:])
    assert framer.next_frame() == second
    assert framer.next_frame() is None


def test_length_1_and_4096_are_accepted() -> None:
    framer = Framer()
    framer.receive_data(b"\x00\x01X" + b"\x10\x00" + b"y" * 4096)
    assert drain(framer) == [b"X", b"y" * 4096]


@pytest.mark.parametrize("header", [b"\x00\x00", b"\x10\x01", b"\xff\xff"])
def test_length_0_or_over_4096_is_a_framing_error(header: bytes) -> None:
    framer = Framer()
    framer.receive_data(header + b"0800")
    with pytest.raises(FramingError):
        framer.next_frame()
    # the stream cannot be resynchronised: the framer stays dead
    with pytest.raises(FramingError):
        framer.next_frame()
    with pytest.raises(FramingError):
        framer.receive_data(frame(bodies()[0]))


def test_bad_length_after_good_frames() -> None:
    framer = Framer()
    framer.receive_data(frame(bodies()[0]) + b"\x00\x00")
    assert framer.next_frame() == bodies()[0]
    with pytest.raises(FramingError):
        framer.next_frame()


def test_bad_length_is_detected_from_the_header_alone() -> None:
    framer = Framer()
    framer.receive_data(b"\x20")
    assert framer.next_frame() is None  # one header byte: cannot tell yet
    framer.receive_data(b"\x00")
    with pytest.raises(FramingError):
        framer.next_frame()


def test_smaller_maximum_is_honoured() -> None:
    framer = Framer(max_length=10)
    framer.receive_data(frame(b"x" * 10) + frame(b"x" * 11))
    assert framer.next_frame() == b"x" * 10
    with pytest.raises(FramingError):
        framer.next_frame()


def test_fail_kills_the_stream() -> None:
    framer = Framer()
    framer.receive_data(frame(bodies()[0])[:3])
    framer.fail()
    with pytest.raises(FramingError):
        framer.next_frame()


def test_long_stream_is_compacted_without_losing_bytes() -> None:
    # more than 64 KiB through one framer, in chunks that straddle frames
    wanted = [bytes([i % 256]) * (1 + (i * 997) % 4096) for i in range(60)]
    stream = b"".join(frame(b) for b in wanted)
    assert len(stream) > 65536
    chunks = [stream[i : i + 1000] for i in range(0, len(stream), 1000)]
    assert feed(chunks) == wanted


def reference(stream: bytes, max_length: int = 4096) -> tuple[list[bytes], bool]:
    """The frames in a stream, and whether a bad length stops it, read the simple way."""
    out: list[bytes] = []
    pos = 0
    while len(stream) - pos >= 2:
        n = int.from_bytes(stream[pos : pos + 2], "big")
        if n == 0 or n > max_length:
            return out, True
        if len(stream) - pos - 2 < n:
            break
        out.append(stream[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out, False


@FAST
@given(st.lists(st.binary(max_size=64), max_size=30))
@example([b"\x00\x03abc\x00", b"\x00"])
@example([b"\x10\x00"])
def test_random_chunks_give_only_frames_or_framing_error(chunks: list[bytes]) -> None:
    framer = Framer(max_length=40)
    got: list[bytes] = []
    failed = False
    for chunk in chunks:
        try:
            framer.receive_data(chunk)
            got += drain(framer)
        except FramingError:
            failed = True
            break
    wanted, bad = reference(b"".join(chunks), max_length=40)
    assert got == wanted
    assert failed == bad
    assert all(1 <= len(f) <= 40 for f in got)


@FAST
@given(
    st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=10),
    st.data(),
)
def test_valid_frames_in_random_chunks_come_out_whole(
    bodies_: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(frame(b) for b in bodies_)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert feed(chunks) == bodies_


@FAST
@given(st.binary(min_size=1, max_size=200), st.binary(min_size=1, max_size=200), st.data())
def test_framer_never_returns_bytes_beyond_a_frame(
    first: bytes, second: bytes, data: st.DataObject
) -> None:
    tail = frame(second)
    cut = data.draw(st.integers(0, len(tail) - 1))  # the next frame has not finished
    framer = Framer()
    framer.receive_data(frame(first) + tail[:cut])
    assert framer.next_frame() == first
    assert framer.next_frame() is None
    assert framer.partial == (cut > 0)
    framer.receive_data(tail[cut:])
    assert framer.next_frame() == second
