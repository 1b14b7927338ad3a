"""The compiled codec against pyiso8583, byte for byte, over the whole link spec.

What a peer of the link relies on did not change when the codec was compiled: for
every MTI and every field of ``specs/link-v1.toml`` a valid message encodes to the
bytes ``iso8583.encode(doc, spec.pyiso8583)`` gives and decodes to what
``iso8583.decode`` reads; anything broken is refused exactly as the pyiso8583-based
reference codec refuses it (the same field, offset, expectation and echoed fields);
and ``make_response`` still answers by LINK-SPEC 1's echo rule.
"""

from __future__ import annotations

import string
from pathlib import Path

import iso8583
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from billhub.errors import DecodeError, LocalProtocolError
from billhub.iso8583.codec import Codec
from billhub.iso8583.message import Message
from billhub.iso8583.reference import ReferenceCodec
from billhub.iso8583.spec import FieldSpec, LinkSpec, load_spec
from billhub.link.responses import make_response

SPEC_FILE = Path(__file__).resolve().parent.parent / "specs" / "link-v1.toml"
SPEC: LinkSpec = load_spec(SPEC_FILE)
FAST = Codec(SPEC)
REF = ReferenceCodec(SPEC)
RULES = SPEC.rules

CHECKED = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every MTI the spec names: requests, responses and those with mandatory fields.
SPEC_MTIS = sorted(
    set(RULES.responses)
    | set(RULES.responses.values())
    | {m for rule in RULES.mandatory for m in rule.mtis}
)
DATA_FIELDS = {int(f.key): f for f in SPEC.data_fields()}

_ALPHABETS = {
    ("n", "ascii"): string.digits,
    ("an", "ascii"): string.ascii_letters + string.digits + " ",
}
_ANS_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_ANS_UTF8 = st.one_of(
    st.characters(min_codepoint=0x0621, max_codepoint=0x064A),  # Arabic
    st.characters(exclude_categories=("Cc", "Cs")),
)


def _alphabet(f: FieldSpec) -> st.SearchStrategy[str]:
    if (f.format, f.encoding) in _ALPHABETS:
        return st.sampled_from(_ALPHABETS[(f.format, f.encoding)])
    return _ANS_UTF8 if f.encoding == "utf-8" else _ANS_ASCII


def value_strategy(f: FieldSpec) -> st.SearchStrategy[str]:
    """Values a caller may give: full-length, short (the codec pads) or empty variable."""
    if f.pattern is not None:
        return st.from_regex(f.pattern, fullmatch=True).filter(f.check)
    if f.fixed:
        return st.text(_alphabet(f), min_size=1, max_size=f.length)
    if f.encoding == "utf-8":
        return st.text(_alphabet(f), max_size=f.length).filter(
            lambda v: len(v.encode("utf-8")) <= f.length
        )
    return st.text(_alphabet(f), max_size=f.length)


FIELD_VALUES = {n: value_strategy(f) for n, f in DATA_FIELDS.items()}
MTIS = st.one_of(st.sampled_from(SPEC_MTIS), st.from_regex(r"[0-9]{4}", fullmatch=True))


def messages() -> st.SearchStrategy[Message]:
    """Any MTI with any subset of the spec's fields, in any insertion order."""
    return st.builds(
        lambda mti, fields, order: Message(mti, dict(sorted(fields.items(), key=order))),
        MTIS,
        st.fixed_dictionaries({}, optional=FIELD_VALUES),
        st.sampled_from([lambda kv: kv[0], lambda kv: -kv[0], lambda kv: hash(kv[1])]),
    )


def pyiso8583_bytes(msg: Message) -> bytes:
    """The reference bytes: pyiso8583 itself, given the fields as the wire carries them."""
    doc = {"t": msg.mti, **{str(n): v for n, v in REF.normalise(msg).fields.items()}}
    data, _ = iso8583.encode(doc, SPEC.pyiso8583)
    return bytes(data)


def pyiso8583_message(data: bytes) -> Message:
    doc, _ = iso8583.decode(data, SPEC.pyiso8583)
    fields = {int(k): v for k, v in doc.items() if k.isdigit() and k != "1"}
    return Message(doc["t"], fields)


def error_facts(exc: DecodeError) -> tuple[object, ...]:
    return (exc.field, exc.offset, exc.expected, exc.mti, exc.de7, exc.de11, exc.de32)


def assert_decodes_like_the_reference(data: bytes) -> Message | None:
    """Both accept with the same message, or both refuse with the same error."""
    try:
        expected = REF.decode(data)
    except DecodeError as exc:
        with pytest.raises(DecodeError) as info:
            FAST.decode(data)
        assert error_facts(info.value) == error_facts(exc)
        assert info.value.field and isinstance(info.value.offset, int)
        return None
    got = FAST.decode(data)
    assert got == expected
    return got


# -- every MTI x every field -------------------------------------------------------


def sample_value(f: FieldSpec) -> str:
    """One full-length valid value per field, from its format (patterns by hand)."""
    by_hand = {"7": "1124094512", "15": "1124", "97": "D0000000000070000"}
    if f.key in by_hand:
        return by_hand[f.key]
    if f.format == "n":
        return "".join(str(i % 10) for i in range(1, f.length + 1))
    if f.encoding == "utf-8":
        return "CN010محمد"
    return ("AB 1x" * f.length)[: f.length] if f.format == "ans" else ("AB1 " * 30)[: f.length]


@pytest.mark.parametrize("mti", SPEC_MTIS)
def test_every_field_alone_and_all_together_encode_and_decode_as_pyiso8583(mti: str) -> None:
    every = {n: sample_value(f) for n, f in DATA_FIELDS.items()}
    shapes = [{n: v} for n, v in every.items()] + [every, {}]
    for fields in shapes:
        msg = Message(mti, fields)
        data = FAST.encode(msg)
        assert data == pyiso8583_bytes(msg) == REF.encode(msg)
        assert FAST.decode(data) == pyiso8583_message(data) == REF.normalise(msg)
        assert FAST.frame(msg) == REF.frame(msg)


def test_sample_values_cover_the_spec_and_are_valid() -> None:
    assert set(DATA_FIELDS) == {
        3, 4, 7, 11, 12, 13, 15, 18, 32, 33, 37, 38, 39, 41, 48, 49,
        70, 74, 75, 86, 87, 90, 97, 100, 102,
    }  # fmt: skip
    for f in DATA_FIELDS.values():
        assert f.check(sample_value(f)), f.key


# -- random valid messages -----------------------------------------------------------


@CHECKED
@given(messages())
def test_encode_is_pyiso8583_bytes_and_decode_is_pyiso8583_fields(msg: Message) -> None:
    data = FAST.encode(msg)
    assert data == pyiso8583_bytes(msg)
    assert FAST.decode(data) == pyiso8583_message(data) == REF.decode(data)
    framed = FAST.frame(msg)
    assert framed == REF.frame(msg)
    assert int.from_bytes(framed[:2], "big") == len(data)


@CHECKED
@given(messages(), st.sampled_from(["00", "30", "91"]))
def test_make_response_follows_the_echo_rule(request_msg: Message, code: str) -> None:
    resp = make_response(RULES, request_msg, code)
    f = request_msg.fields
    echoed = {n: f[n] for n in RULES.echo if n in f}
    if 4 in f and f.get(3) not in RULES.echo_amount_except:
        echoed[4] = f[4]
    assert resp.mti == RULES.response_mti(request_msg.mti)
    assert resp.fields == {**echoed, 39: code}
    assert resp.mti[2] in "13"  # always a response
    assert FAST.frame(resp) == REF.frame(resp)


def test_inquiry_response_does_not_echo_the_amount_but_a_payment_does() -> None:
    base = {3: "310000", 4: "000000000000", 7: "1124094512", 11: "000123"}
    assert 4 not in make_response(RULES, Message("0200", base), "00")
    paid = make_response(RULES, Message("0201", {**base, 3: "500000"}), "00")
    assert paid.mti == "0210"
    assert paid[4] == "000000000000"


# -- broken frames and messages: refused exactly as the reference refuses -------------

_MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("extend"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("set"), st.integers(0, 10_000), st.sampled_from(b" +-_0A\x80\xd9\xb2")),
)


def mutate(data: bytes, mutation: tuple[str, int, int]) -> bytes:
    kind, where, value = mutation
    buf = bytearray(data)
    i = where % (len(buf) + 1)
    if kind == "truncate":
        return bytes(buf[:i])
    if kind in ("insert", "extend"):
        buf.insert(len(buf) if kind == "extend" else i, value)
        return bytes(buf)
    if not buf:
        return b""
    i = where % len(buf)
    if kind == "flip":
        buf[i] ^= value
    elif kind == "set":
        buf[i] = value
    else:
        del buf[i]
    return bytes(buf)


@CHECKED
@given(messages(), st.lists(_MUTATION, min_size=1, max_size=3))
def test_corrupted_frames_are_refused_as_the_reference_refuses_them(
    msg: Message, mutations: list[tuple[str, int, int]]
) -> None:
    data = FAST.encode(msg)
    for m in mutations:
        data = mutate(data, m)
    assert_decodes_like_the_reference(data)


@pytest.mark.parametrize("cut", range(1, 60))
def test_every_truncation_of_a_full_message_names_the_field_and_offset(cut: int) -> None:
    every = {n: sample_value(f) for n, f in DATA_FIELDS.items()}
    data = FAST.encode(Message("0200", every))
    assert assert_decodes_like_the_reference(data[:-cut]) is None
    with pytest.raises(DecodeError) as info:
        FAST.decode(data[:-cut])
    assert info.value.field.startswith("DE ")
    assert 20 <= info.value.offset < len(data) - cut + 1


@CHECKED
@given(st.binary(max_size=120))
@example(b"0800" + bytes(8))
@example(b"0800" + bytes(8) + b"x")
@example(b"0800\x80" + bytes(15))
@example(b"0800\x00\x00\x00\x00\x00\x00\x00\x00")
@example(b"0800\x00\x00\x00\x00\x00\x00\x00\x00"[:11])
def test_random_bytes_are_refused_as_the_reference_refuses_them(data: bytes) -> None:
    assert_decodes_like_the_reference(data)


@CHECKED
@given(st.from_regex(r"[0-9]{4}", fullmatch=True), st.binary(min_size=8, max_size=16),
       st.binary(max_size=80))  # fmt: skip
def test_random_bitmaps_and_bodies_are_refused_as_the_reference_refuses_them(
    mti: str, bitmaps: bytes, body: bytes
) -> None:
    assert_decodes_like_the_reference(mti.encode() + bitmaps + body)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (b"06600001", b" 6600001", "DE 32"),  # pyiso8583 reads " 6" as 6
        (b"06600001", b"-6600001", "DE 32"),
        (b"06600001", b"1_600001", "DE 32"),
        (b"06600001", b"\xd9\xa0600001", "DE 32"),
        (b"000123", b"00A123", "DE 11"),
        (b"1124094512", b"1324094512", "DE 7"),
        (b"760", b"7\xb20", "DE 49"),
    ],
)
def test_broken_fields_name_the_field_as_the_reference_does(
    old: bytes, new: bytes, field: str
) -> None:
    msg = Message("0200", {3: "310000", 7: "1124094512", 11: "000123", 32: "600001", 49: "760"})
    data = FAST.encode(msg)
    assert data.count(old) == 1
    assert assert_decodes_like_the_reference(data.replace(old, new)) is None
    with pytest.raises(DecodeError) as info:
        FAST.decode(data.replace(old, new))
    assert info.value.field == field


BAD_VALUES = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["\ud800", "٣", "²", "x" * 1000, "م" * 500, "1" * 43]),
)


@CHECKED
@given(messages(), st.sampled_from(sorted(DATA_FIELDS)), BAD_VALUES)
def test_any_value_is_encoded_or_refused_as_the_reference_does(
    msg: Message, number: int, value: str
) -> None:
    msg.fields[number] = value
    try:
        expected = REF.encode(msg)
    except LocalProtocolError as exc:
        with pytest.raises(LocalProtocolError) as info:
            FAST.encode(msg)
        assert str(info.value) == str(exc)
        return
    assert FAST.encode(msg) == expected


@pytest.mark.parametrize("mti", ["200", "02000", "02A0", "", "٠٢٠٠", "²200"])
def test_bad_mti_is_refused_as_the_reference_does(mti: str) -> None:
    msg = Message(mti, {7: "1124094512", 11: "000001"})
    with pytest.raises(LocalProtocolError) as expected:
        REF.encode(msg)
    with pytest.raises(LocalProtocolError) as info:
        FAST.encode(msg)
    assert str(info.value) == str(expected.value)


@pytest.mark.parametrize("number", [1, 2, 65, 128])
def test_fields_not_in_the_spec_are_refused_as_the_reference_does(number: int) -> None:
    msg = Message("0800", {7: "1124094512", number: "1", 11: "000001"})
    with pytest.raises(LocalProtocolError) as info:
        FAST.encode(msg)
    assert str(info.value) == f"DE {number} is not defined in spec {SPEC.name}"


@CHECKED
@given(messages())
def test_mandatory_check_is_the_reference_check(msg: Message) -> None:
    try:
        REF.check_mandatory(msg)
    except DecodeError as exc:
        with pytest.raises(DecodeError) as info:
            FAST.check_mandatory(msg)
        assert error_facts(info.value) == error_facts(exc)
        return
    FAST.check_mandatory(msg)
