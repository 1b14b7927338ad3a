"""The link specification, loaded from data.

A :class:`LinkSpec` is everything the codec and the link need to know about one
switch's message layout: field formats for pyiso8583, the validators that
pyiso8583 does not apply (digits in ``n`` fields, patterns), and the rules of
LINK-SPEC 1 and 6 (mandatory fields, echo, response MTIs). It is built once at
start-up from a TOML file so that another layout is another file, not new code.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from billhub.errors import ConfigError

DEFAULT_SPEC = "link-v1.toml"

_FORMATS = ("n", "an", "ans", "b")
_CHARSETS: dict[str, str] = {
    "n": r"[0-9]",
    "an": r"[A-Za-z0-9 ]",
    # ans: printable; for UTF-8 fields anything but control characters (C0, DEL and C1).
    "ans": r"[^\x00-\x1f\x7f-\x9f]",
}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One data element: how it is laid out on the wire and what it may hold."""

    key: str
    name: str
    format: str
    prefix: int
    length: int
    encoding: str
    pattern: str | None
    check: Callable[[str], bool] = field(compare=False, repr=False)

    @property
    def fixed(self) -> bool:
        return self.prefix == 0

    def describe(self) -> str:
        """The format as an interface document writes it, e.g. ``n 6`` or ``LLVAR n ..11``."""
        if self.fixed:
            return f"{self.format} {self.length}"
        return f"{'L' * self.prefix}VAR {self.format} ..{self.length}"

    def pad(self, value: str) -> str:
        """Justify and fill a fixed field per LINK-SPEC 2; variable fields are unchanged."""
        if not self.fixed or self.format == "b":
            return value
        if self.format == "n":
            return value.rjust(self.length, "0")
        return value.ljust(self.length, " ")


@dataclass(frozen=True, slots=True)
class MandatoryRule:
    """Fields a message must carry, for the MTIs (and DE 3 / DE 70 value) named."""

    mtis: frozenset[str]
    fields: tuple[int, ...]
    processing_code: str | None = None
    network_code: str | None = None


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    """How to answer one request MTI (LINK-SPEC 1's echo rule, applied once)."""

    mti: str
    echo: tuple[int, ...]
    amount_except: frozenset[str]


@dataclass(frozen=True, slots=True)
class LinkRules:
    """LINK-SPEC 1 and 6 as data: echo, matching, response MTIs, mandatory fields."""

    echo: tuple[int, ...]
    echo_amount_except: frozenset[str]
    match_fields: tuple[int, ...]
    match_optional_fields: tuple[int, ...]
    responses: Mapping[str, str]
    processing_codes: Mapping[str, str]
    network_codes: Mapping[str, str]
    mandatory: tuple[MandatoryRule, ...]
    # Per request MTI: its response MTI and the fields a response copies, worked out
    # once (see response_plan); a cache, not part of the rules.
    _plans: dict[str, ResponsePlan] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # Per MTI that has any: its mandatory rules (see missing_fields); a cache too.
    _mandatory_of: dict[str, tuple[MandatoryRule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def response_plan(self, mti: str) -> ResponsePlan:
        """What a response to a request of ``mti`` is: its MTI and the fields it echoes.

        Built on the first request of each MTI and kept, so that answering looks
        nothing up in the rules. DE 4 is in the echo fields only as ``amount``: it is
        echoed unless DE 3 is one of ``echo_amount_except``, a per-message test.
        """
        plan = self._plans.get(mti)
        if plan is None:
            plan = ResponsePlan(self.response_mti(mti), self.echo, self.echo_amount_except)
            if len(self._plans) >= 10_000:  # MTIs are 4 digits; a bound all the same
                self._plans.clear()
            self._plans[mti] = plan
        return plan

    def response_mti(self, mti: str) -> str:
        """The response MTI of ``mti``: always a response (third digit 1 or 3), never a request.

        A request of the contract answers per the table. Any other request or advice
        (third digit 0 or 2, e.g. 0100, 0120) answers third digit + 1, repeat cleared.
        A function with no response (4-9: notifications, acknowledgements, negative
        acknowledgements, e.g. 0290 or 0890) is answered in its class's response, the
        contract's where it has one (0290 -> 0210, 0890 -> 0810), else ``class + "10"``
        (READINGS "MTIs with no response"): adding one to a 9 would wrap to a request.
        """
        known = self.responses.get(mti)
        if known is not None:
            return known
        if mti[2] in "02":
            return f"{mti[:2]}{int(mti[2]) + 1}0"
        for response in self.responses.values():
            if response[:2] == mti[:2]:
                return response
        return f"{mti[:2]}10"

    def is_request(self, mti: str) -> bool:
        """Whether the MTI is a request this contract defines (section 6)."""
        return mti in self.responses

    def missing_fields(self, mti: str, present: Mapping[int, str]) -> list[int]:
        """The mandatory fields a message of this MTI lacks, in number order.

        Asked of every message decoded, so the rules of each MTI are picked out once
        and kept (only MTIs some rule names: the cache is bounded by the spec, not by
        what a peer sends), and a complete message allocates nothing.
        """
        rules = self._mandatory_of.get(mti)
        if rules is None:
            rules = tuple(r for r in self.mandatory if mti in r.mtis)
            if not rules:
                return []
            self._mandatory_of[mti] = rules
        missing: set[int] | None = None
        for rule in rules:
            if rule.processing_code is not None and present.get(3) != rule.processing_code:
                continue
            if rule.network_code is not None and present.get(70) != rule.network_code:
                continue
            for f in rule.fields:
                if f not in present:
                    missing = missing or set()
                    missing.add(f)
        return sorted(missing) if missing else []


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A whole link layout; immutable, shared by every link of a hub."""

    name: str
    version: int
    length_header: int
    max_message_length: int
    currency: str
    currency_exponent: int
    fields: Mapping[str, FieldSpec]
    rules: LinkRules
    pyiso8583: dict[str, dict[str, Any]] = field(repr=False)
    source: str = ""

    def field(self, number: int) -> FieldSpec:
        return self.fields[str(number)]

    def data_fields(self) -> list[FieldSpec]:
        """The data elements (not MTI or bitmaps) in number order."""
        return [f for k, f in self.fields.items() if k.isdigit() and k != "1"]


def _checker(fmt: str, encoding: str, pattern: str | None) -> Callable[[str], bool]:
    """One check per field, built once: it runs for every field of every message.

    ``n`` uses the C string predicates (ASCII digits only: ``str.isdigit`` alone
    would let ``'٣'`` through); other formats one compiled regex each.
    """
    extra = re.compile(pattern).fullmatch if pattern is not None else None
    if fmt == "n":  # an empty value passes, as ``[0-9]*`` does: lengths are checked apart
        if extra is None:
            return lambda v: not v or (v.isascii() and v.isdigit())
        pat = extra
        return lambda v: (not v or (v.isascii() and v.isdigit())) and pat(v) is not None
    charset = _CHARSETS.get(fmt)
    if fmt == "ans" and encoding == "ascii":
        charset = r"[\x20-\x7e]"
    if charset is None:  # binary: bitmaps only, checked by the codec itself
        return lambda v: True
    base = re.compile(f"{charset}*").fullmatch
    if extra is None:
        return lambda v: base(v) is not None
    more = extra
    return lambda v: base(v) is not None and more(v) is not None


def _field(key: str, raw: Mapping[str, Any]) -> FieldSpec:
    where = f"fields.{key}"
    fmt = raw.get("format")
    if fmt not in _FORMATS:
        raise ConfigError(f"{where}.format", f"must be one of {', '.join(_FORMATS)}")
    prefix = raw.get("prefix", 0)
    if prefix not in (0, 1, 2, 3, 4):
        raise ConfigError(f"{where}.prefix", "must be 0 (fixed) or 1 to 4 length digits")
    size = raw.get("length") if prefix == 0 else raw.get("max")
    if not isinstance(size, int) or size <= 0:
        what = "length" if prefix == 0 else "max"
        raise ConfigError(f"{where}.{what}", "must be a positive integer")
    if prefix and size >= 10**prefix:
        raise ConfigError(f"{where}.max", f"does not fit a {prefix}-digit length prefix")
    encoding = raw.get("encoding", "ascii")
    if encoding not in ("ascii", "utf-8"):
        raise ConfigError(f"{where}.encoding", "must be ascii or utf-8")
    pattern = raw.get("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{where}.pattern", f"not a regular expression: {exc}") from None
    return FieldSpec(
        key=key,
        name=str(raw.get("name", key)),
        format=fmt,
        prefix=prefix,
        length=size,
        encoding=encoding,
        pattern=pattern,
        check=_checker(fmt, encoding, pattern),
    )


def _pyiso8583(fields: Mapping[str, FieldSpec]) -> dict[str, dict[str, Any]]:
    spec: dict[str, dict[str, Any]] = {
        "h": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0, "desc": ""}
    }
    for key, f in fields.items():
        spec[key] = {
            "data_enc": "b" if f.format == "b" else f.encoding,
            "len_enc": "ascii",
            "len_type": f.prefix,
            "max_len": f.length,
            "desc": f.name,
        }
    return spec


def _int_list(raw: Any, key: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(x, int) for x in raw):
        raise ConfigError(key, "must be a list of field numbers")
    return tuple(raw)


def _rules(raw: Mapping[str, Any], fields: Mapping[str, FieldSpec]) -> LinkRules:
    mandatory = []
    for i, rule in enumerate(raw.get("mandatory", [])):
        key = f"rules.mandatory[{i}]"
        nums = _int_list(rule.get("fields"), f"{key}.fields")
        for n in nums:
            if str(n) not in fields:
                raise ConfigError(f"{key}.fields", f"field {n} is not defined under [fields]")
        mandatory.append(
            MandatoryRule(
                mtis=frozenset(rule.get("mti", [])),
                fields=nums,
                processing_code=rule.get("processing_code"),
                network_code=rule.get("network_code"),
            )
        )
    return LinkRules(
        echo=_int_list(raw.get("echo", []), "rules.echo"),
        echo_amount_except=frozenset(raw.get("echo_amount_except_processing", [])),
        match_fields=_int_list(raw.get("match_fields", [7, 11]), "rules.match_fields"),
        match_optional_fields=_int_list(
            raw.get("match_optional_fields", []), "rules.match_optional_fields"
        ),
        responses=dict(raw.get("responses", {})),
        processing_codes=dict(raw.get("processing_codes", {})),
        network_codes=dict(raw.get("network_codes", {})),
        mandatory=tuple(mandatory),
    )


def parse_spec(text: str, source: str = "<string>") -> LinkSpec:
    """Build a :class:`LinkSpec` from TOML text; raises :class:`ConfigError` naming the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from None
    link = raw.get("link", {})
    raw_fields = raw.get("fields", {})
    for required in ("t", "p", "1"):
        if required not in raw_fields:
            raise ConfigError(f"fields.{required}", "is required (MTI and both bitmaps)")
    fields = {key: _field(key, value) for key, value in raw_fields.items()}
    for key in fields:
        if key not in ("t", "p") and not (key.isdigit() and 1 <= int(key) <= 128):
            raise ConfigError(f"fields.{key}", "field keys are t, p or 1 to 128")
    order = sorted(fields, key=lambda k: (k.isdigit(), int(k) if k.isdigit() else 0))
    ordered = {k: fields[k] for k in order}
    return LinkSpec(
        name=str(link.get("name", source)),
        version=int(link.get("version", 1)),
        length_header=int(link.get("length_header", 2)),
        max_message_length=int(link.get("max_message_length", 4096)),
        currency=str(link.get("currency", "760")),
        currency_exponent=int(link.get("currency_exponent", 2)),
        fields=ordered,
        rules=_rules(raw.get("rules", {}), ordered),
        pyiso8583=_pyiso8583(ordered),
        source=source,
    )


def load_spec(path: str | Path | None = None) -> LinkSpec:
    """Load a spec file, or the bundled LINK-SPEC v1 layout when ``path`` is None."""
    if path is None:
        text = (
            resources.files("billhub.iso8583")
            .joinpath("specs")
            .joinpath(DEFAULT_SPEC)
            .read_text("utf-8")
        )
        return parse_spec(text, DEFAULT_SPEC)
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise ConfigError("link.spec_file", f"cannot read {p}: {exc.strerror}") from None
    return parse_spec(text, str(p))
