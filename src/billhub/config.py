"""The hub's configuration: one TOML file, read into frozen dataclasses at start-up.

Everything LINK-SPEC and BILLERS leave open (addresses, certificates, timeouts, the
billers and how to reach them) is configuration, and all of it is checked here, once,
before a socket is opened: a hub that starts is a hub whose configuration made sense.
The rest of the code receives these dataclasses and never re-validates or re-reads.

Rules, each raising :class:`~billhub.errors.ConfigError` whose ``key`` is the dotted
TOML key (``link.idle_interval_s``, ``billers[2].rest.base_url``) and whose ``reason``
is one line:

* Unknown sections and keys are errors, so that a typo cannot silently leave a
  default in force.
* A string value may use ``${NAME}`` (whole or part of the string) for the
  environment variable ``NAME``; a variable that is not set is an error naming the
  key and the variable. ``$${`` writes a literal ``${``. Secrets (tokens, DSNs)
  belong there, not in the file.
* Relative paths are relative to the directory of the configuration file, not to
  the working directory, so a service manager can start the hub from anywhere.
* Times are float seconds (``*_s``), except ``journal.group_commit_ms``.

Secret fields (``RestSettings.token``, the DSNs) are left out of ``repr`` so that
logging a configuration object cannot leak them, and no error message repeats a
value that could be a secret.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

from billhub.errors import ConfigError

__all__ = [
    "AdminConfig",
    "BatchSettings",
    "BillerConfig",
    "Config",
    "DatabaseSettings",
    "JournalConfig",
    "LinkConfig",
    "LogConfig",
    "RestSettings",
    "ServerConfig",
    "TlsConfig",
    "load_config",
    "parse_config",
]

#: The switch waits 30 s for an answer (LINK-SPEC §6); an answer budget at or above
#: that would answer a switch that has already given up.
SWITCH_WAIT_S = 30.0
#: LINK-SPEC §1: "the hub accepts at least 256 at once per link".
MIN_IN_FLIGHT = 256
#: The database connector's statements (BILLERS §2), by the name their SQL is keyed on:
#: the four questions, and the statements posting and cancelling take besides
#: (``billhub.connectors.database.queries`` says what each does and may name).
DATABASE_QUERIES = (
    "open_bills",
    "post_payment",
    "cancel_payment",
    "payment_status",
    "pay_bill",
    "add_payment_bill",
    "payment_bills",
    "unpay_bill",
)

BillerKind = Literal["rest", "batch", "database"]
TlsVersion = Literal["1.2", "1.3"]
LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
EventLoop = Literal["auto", "uvloop", "asyncio"]


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """The switch-facing listener and the timers of every link (LINK-SPEC §1)."""

    host: str = "0.0.0.0"
    port: int = 8583
    spec_file: Path | None = None
    max_links: int = 16
    max_handshakes: int = 64
    max_handshakes_per_source: int = 16
    hello_timeout_s: float = 2.0
    handshake_timeout_s: float = 10.0
    sign_on_timeout_s: float = 10.0
    #: CIDRs a connection may come from; ``None``: any (a firewall in front decides).
    allowed_sources: tuple[str, ...] | None = None
    read_timeout_s: float = 5.0
    idle_interval_s: float = 30.0
    echo_timeout_s: float = 10.0
    echo_max_missed: int = 3
    max_in_flight: int = 512
    answer_budget_s: float = 10.0
    shutdown_grace_s: float = 10.0
    #: ``SO_REUSEPORT``: several hub processes of one host share the link port, the
    #: kernel spreading new links across them (one process is one core). Only with a
    #: journal they can share (PostgreSQL): a SQLite file has one writer.
    reuse_port: bool = False


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The process itself: which event loop it runs on.

    ``auto`` is uvloop where it can be imported, else the standard library's loop;
    ``uvloop`` insists (the hub refuses to start without it); ``asyncio`` forces the
    standard loop. The ``hub_listening`` log line says which one runs.
    """

    event_loop: EventLoop = "auto"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The hub's certificate, the switch CA it trusts, and the subjects it accepts."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path
    allowed_subjects: tuple[str, ...]
    min_version: TlsVersion = "1.2"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin HTTP endpoint (health, metrics); loopback by default."""

    host: str = "127.0.0.1"
    port: int = 9100
    enabled: bool = True
    metrics: bool = True  # /metrics and the counting behind it


@dataclass(frozen=True, slots=True)
class ResolverConfig:
    """How uncertain payments and reversals are settled with billers."""

    quiet_period_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 60.0
    poll_interval_s: float = 1.0
    call_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: LogFormat = "json"
    level: LogLevel = "info"


@dataclass(frozen=True, slots=True)
class JournalConfig:
    """Where the hub durably records what it did; ``path`` for sqlite, ``dsn`` else."""

    kind: Literal["sqlite", "postgresql"] = "sqlite"
    path: Path | None = None
    dsn: str | None = field(default=None, repr=False)
    group_commit_ms: float = 2.0
    #: PostgreSQL, several instances: an instance whose heartbeat is older than this is
    #: gone (its unfinished payments are recovered by the others).
    lease_s: float = 10.0
    #: PostgreSQL: how long a resolver task taken by an instance stays its own.
    claim_s: float = 30.0

    @property
    def group_commit_s(self) -> float:
        return self.group_commit_ms / 1000.0


@dataclass(frozen=True, slots=True)
class RestSettings:
    """An online biller's HTTP API (BILLERS §1); ``token`` is a secret."""

    base_url: str
    token: str = field(repr=False)
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """A file-exchange biller's folders (BILLERS §3); not checked at start-up."""

    inbox: Path
    outbox: Path


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """A biller database (BILLERS §2); ``queries`` overrides the shipped SQL by name."""

    dsn: str = field(repr=False)
    queries: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class BillerConfig:
    """One electricity company: its DE 100 code, its connector and its time budget."""

    code: str
    name: str
    kind: BillerKind
    budget_s: float
    max_concurrency: int = 32
    rest: RestSettings | None = None
    batch: BatchSettings | None = None
    database: DatabaseSettings | None = None


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The citizen web service (``billhub web``): its listener, admin port, limits."""

    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 9101
    uploads: Path | None = None  # outside any web root; default <config dir>/uploads
    exports: Path | None = None  # daily CSV files per company; default <config dir>/exports
    max_upload_bytes: int = 5 * 1024 * 1024
    client_per_minute: int = 30
    account_per_minute: int = 10
    staff_login_per_minute: int = 5
    secure_cookies: bool = True
    session_hours: float = 8.0
    code_file: Path | None = None  # development: one-time codes written here
    sms_url: str | None = None
    sms_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class RequestsConfig:
    """Citizen requests: working days and turnaround times (default and per company)."""

    holidays: tuple[date, ...] = ()
    weekend: tuple[int, ...] = (4, 5)  # Friday, Saturday
    turnaround_days: Mapping[str, int] = field(default_factory=dict)
    companies: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    #: Companies whose billing system takes decisions online (specs/BILLERS-requests.md).
    rest_handover: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration."""

    link: LinkConfig
    tls: TlsConfig
    admin: AdminConfig = field(default_factory=AdminConfig)
    log: LogConfig = field(default_factory=LogConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    resolver: ResolverConfig = field(default_factory=ResolverConfig)
    billers: tuple[BillerConfig, ...] = ()
    web: WebConfig = field(default_factory=WebConfig)
    requests: RequestsConfig = field(default_factory=RequestsConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    def biller(self, code: str) -> BillerConfig | None:
        """The biller whose DE 100 code is ``code``, or ``None`` (response code 92)."""
        for b in self.billers:
            if b.code == code:
                return b
        return None


# --------------------------------------------------------------------------- reading

_ENV_REF = re.compile(r"\$(\$?)\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand(value: str, key: str, env: Mapping[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(2) is None:
            raise ConfigError(key, "unterminated ${ in value (write $${ for a literal ${)")
        if m.group(1):
            return "${" + m.group(2) + "}"
        name = m.group(2)
        if not _ENV_NAME.fullmatch(name):
            raise ConfigError(key, f"${{{name}}} is not a valid environment variable name")
        try:
            return env[name]
        except KeyError:
            raise ConfigError(key, f"environment variable {name} is not set") from None

    return _ENV_REF.sub(one, value)


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return names.get(type(value), type(value).__name__)


class _Table:
    """One TOML table being read: typed getters that consume keys, then ``done()``.

    Reading through this class is what makes unknown keys errors: whatever was not
    asked for by the time ``done()`` runs is a typo or an option this version does not
    have.
    """

    def __init__(self, raw: Mapping[str, Any], path: str, ctx: _Context) -> None:
        self.raw = raw
        self.path = path
        self.ctx = ctx
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.raw

    def _get(self, name: str) -> Any:
        self.seen.add(name)
        return self.raw.get(name)

    def required(self, name: str) -> Any:
        """The raw value of a key that must be present."""
        value = self._get(name)
        if value is None:
            raise ConfigError(self.key(name), "is required")
        return value

    def _checked_string(self, name: str, value: object) -> str:
        if not isinstance(value, str):
            raise ConfigError(self.key(name), f"must be a string, not {_type_name(value)}")
        value = _expand(value, self.key(name), self.ctx.env)
        if not value.strip():
            raise ConfigError(self.key(name), "must not be empty")
        return value

    def string(self, name: str) -> str | None:
        value = self._get(name)
        return None if value is None else self._checked_string(name, value)

    def string_or(self, name: str, default: str) -> str:
        value = self.string(name)
        return default if value is None else value

    def required_string(self, name: str) -> str:
        return self._checked_string(name, self.required(name))

    def biller_secret(self, name: str) -> str:
        """A biller's token or DSN; left as written when the command needs no secrets.

        Commands that only read the journal (``report``, ``journal show``) load the
        configuration without the billers' secrets, so that they run where the
        billers' tokens are not in the environment.
        """
        if self.ctx.biller_secrets:
            return self.required_string(name)
        value = self.required(name)
        if not isinstance(value, str):
            raise ConfigError(self.key(name), f"must be a string, not {_type_name(value)}")
        return value

    def choice(self, name: str, options: tuple[str, ...], default: str | None) -> str:
        """One of ``options``; ``default=None`` makes the key required."""
        value = self.string(name) if default is not None else self.required_string(name)
        if value is None:
            return str(default)
        if value not in options:
            listed = ", ".join(f'"{o}"' for o in options)
            raise ConfigError(self.key(name), f"must be one of {listed}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"must be true or false, not {_type_name(value)}")
        return value

    def integer(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        value = self._get(name)
        if value is None:
            return default
        want = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(self.key(name), f"must be {want}, not {_type_name(value)}")
        if value < low or (high is not None and value > high):
            raise ConfigError(self.key(name), f"must be {want}")
        return value

    def number(
        self,
        name: str,
        default: float,
        *,
        positive: bool = True,
        below: float | None = None,
        at_most: float | None = None,
    ) -> float:
        """A float ``> 0`` (``>= 0`` when not ``positive``), optionally bounded above."""
        value = self._get(name)
        if value is None:
            return default
        want = "a number > 0" if positive else "a number >= 0"
        if below is not None:
            want += f" and < {below:g}"
        if at_most is not None:
            want += f" and <= {at_most:g}"
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(self.key(name), f"must be {want}, not {_type_name(value)}")
        v = float(value)
        if (
            not math.isfinite(v)
            or (v <= 0 if positive else v < 0)
            or (below is not None and v >= below)
            or (at_most is not None and v > at_most)
        ):
            raise ConfigError(self.key(name), f"must be {want}")
        return v

    def path_value(
        self, name: str, *, required: bool = False, must_exist: bool = False
    ) -> Path | None:
        text = self.required_string(name) if required else self.string(name)
        if text is None:
            return None
        p = Path(text).expanduser()
        if not p.is_absolute():
            p = self.ctx.base_dir / p
        if must_exist:
            if not p.exists():
                raise ConfigError(self.key(name), f"file not found: {p}")
            if not p.is_file():
                raise ConfigError(self.key(name), f"not a regular file: {p}")
            if not os.access(p, os.R_OK):
                raise ConfigError(self.key(name), f"file not readable: {p}")
        return p

    def table(self, name: str) -> _Table:
        value = self._get(name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(self.key(name), f"must be a table, not {_type_name(value)}")
        return _Table(value, self.key(name), self.ctx)

    def forbid(self, name: str, reason: str) -> None:
        if name in self.raw:
            raise ConfigError(self.key(name), reason)
        self.seen.add(name)

    def done(self) -> None:
        for name in self.raw:
            if name not in self.seen:
                raise ConfigError(self.key(name), "unknown key")


@dataclass(frozen=True, slots=True)
class _Context:
    base_dir: Path
    env: Mapping[str, str]
    biller_secrets: bool = True


# --------------------------------------------------------------------------- sections


def _link(t: _Table) -> LinkConfig:
    d = LinkConfig()
    cfg = LinkConfig(
        host=t.string_or("host", d.host),
        port=t.integer("port", d.port, low=0, high=65535),
        spec_file=t.path_value("spec_file", must_exist=True),
        max_links=t.integer("max_links", d.max_links, low=1),
        max_handshakes=t.integer("max_handshakes", d.max_handshakes, low=1),
        max_handshakes_per_source=t.integer(
            "max_handshakes_per_source", d.max_handshakes_per_source, low=1
        ),
        hello_timeout_s=t.number("hello_timeout_s", d.hello_timeout_s),
        handshake_timeout_s=t.number("handshake_timeout_s", d.handshake_timeout_s),
        sign_on_timeout_s=t.number("sign_on_timeout_s", d.sign_on_timeout_s),
        allowed_sources=_cidrs(t, "allowed_sources"),
        read_timeout_s=t.number("read_timeout_s", d.read_timeout_s),
        idle_interval_s=t.number("idle_interval_s", d.idle_interval_s),
        echo_timeout_s=t.number("echo_timeout_s", d.echo_timeout_s),
        echo_max_missed=t.integer("echo_max_missed", d.echo_max_missed, low=1),
        max_in_flight=t.integer("max_in_flight", d.max_in_flight, low=MIN_IN_FLIGHT),
        answer_budget_s=t.number("answer_budget_s", d.answer_budget_s, below=SWITCH_WAIT_S),
        shutdown_grace_s=t.number("shutdown_grace_s", d.shutdown_grace_s, positive=False),
        reuse_port=t.boolean("reuse_port", d.reuse_port),
    )
    t.done()
    return cfg


def _cidrs(t: _Table, name: str) -> tuple[str, ...] | None:
    """A list of networks (``10.1.2.0/24``, ``192.0.2.7``, IPv6 alike), checked here."""
    raw = t._get(name)
    if raw is None:
        return None
    key = t.key(name)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(key, "must be a non-empty array of addresses or CIDRs")
    out: list[str] = []
    for i, entry in enumerate(raw):
        where = f"{key}[{i}]"
        if not isinstance(entry, str):
            raise ConfigError(where, f"must be a string, not {_type_name(entry)}")
        try:
            out.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError:
            raise ConfigError(where, f"is not an IP address or CIDR: {entry!r}") from None
    return tuple(out)


def _server(t: _Table) -> ServerConfig:
    cfg = ServerConfig(
        event_loop=cast(EventLoop, t.choice("event_loop", ("auto", "uvloop", "asyncio"), "auto"))
    )
    t.done()
    return cfg


def _tls(t: _Table) -> TlsConfig:
    if not t.raw:
        raise ConfigError("tls", "section is required (cert_file, key_file, ...)")
    cert = t.path_value("cert_file", required=True, must_exist=True)
    key = t.path_value("key_file", required=True, must_exist=True)
    ca = t.path_value("client_ca_file", required=True, must_exist=True)
    assert cert is not None and key is not None and ca is not None
    subjects_key = t.key("allowed_subjects")
    raw = t.required("allowed_subjects")
    if not isinstance(raw, list):
        raise ConfigError(subjects_key, f"must be an array of strings, not {_type_name(raw)}")
    if not raw:
        raise ConfigError(subjects_key, "must list at least one subject")
    subjects: list[str] = []
    for i, entry in enumerate(raw):
        where = f"{subjects_key}[{i}]"
        if not isinstance(entry, str):
            raise ConfigError(where, f"must be a string, not {_type_name(entry)}")
        subject = _expand(entry, where, t.ctx.env).strip()
        if not subject:
            raise ConfigError(where, "must not be empty")
        subjects.append(subject)
    min_version = cast(TlsVersion, t.choice("min_version", ("1.2", "1.3"), "1.2"))
    t.done()
    return TlsConfig(cert, key, ca, tuple(subjects), min_version)


def _admin(t: _Table) -> AdminConfig:
    d = AdminConfig()
    cfg = AdminConfig(
        host=t.string_or("host", d.host),
        port=t.integer("port", d.port, low=0, high=65535),
        enabled=t.boolean("enabled", d.enabled),
        metrics=t.boolean("metrics", d.metrics),
    )
    t.done()
    return cfg


def _log(t: _Table) -> LogConfig:
    cfg = LogConfig(
        format=cast(LogFormat, t.choice("format", ("json", "console"), "json")),
        level=cast(LogLevel, t.choice("level", ("debug", "info", "warning", "error"), "info")),
    )
    t.done()
    return cfg


def _journal(t: _Table) -> JournalConfig:
    kind = t.choice("kind", ("sqlite", "postgresql"), "sqlite")
    group_commit_ms = t.number("group_commit_ms", 2.0, positive=False)
    if kind == "sqlite":
        t.forbid("dsn", 'is only used with kind = "postgresql"')
        t.forbid("lease_s", 'is only used with kind = "postgresql"')
        t.forbid("claim_s", 'is only used with kind = "postgresql"')
        path = t.path_value("path") or t.ctx.base_dir / "billhub.db"
        cfg = JournalConfig(kind="sqlite", path=path, group_commit_ms=group_commit_ms)
    else:
        t.forbid("path", 'is only used with kind = "sqlite"')
        dsn = t.required_string("dsn")
        lease_s = t.number("lease_s", 10.0)
        claim_s = t.number("claim_s", 30.0)
        cfg = JournalConfig(
            kind="postgresql",
            dsn=dsn,
            group_commit_ms=group_commit_ms,
            lease_s=lease_s,
            claim_s=claim_s,
        )
    t.done()
    return cfg


def _web(t: _Table) -> WebConfig:
    d = WebConfig()
    sms = t.table("sms")
    sms_url = sms.string("url")
    sms_token = sms.string("token")
    if sms_url is not None and not sms_url.startswith(("http://", "https://")):
        raise ConfigError(sms.key("url"), "must be an http:// or https:// URL")
    if (sms_url is None) != (sms_token is None):
        raise ConfigError(sms.key("token" if sms_url else "url"), "url and token go together")
    sms.done()
    cfg = WebConfig(
        host=t.string_or("host", d.host),
        port=t.integer("port", d.port, low=0, high=65535),
        admin_host=t.string_or("admin_host", d.admin_host),
        admin_port=t.integer("admin_port", d.admin_port, low=0, high=65535),
        uploads=t.path_value("uploads") or t.ctx.base_dir / "uploads",
        exports=t.path_value("exports") or t.ctx.base_dir / "exports",
        max_upload_bytes=t.integer("max_upload_bytes", d.max_upload_bytes, low=1024),
        client_per_minute=t.integer("client_per_minute", d.client_per_minute, low=1),
        account_per_minute=t.integer("account_per_minute", d.account_per_minute, low=1),
        staff_login_per_minute=t.integer("staff_login_per_minute", d.staff_login_per_minute, low=1),
        secure_cookies=t.boolean("secure_cookies", d.secure_cookies),
        session_hours=t.number("session_hours", d.session_hours),
        code_file=t.path_value("code_file"),
        sms_url=sms_url,
        sms_token=sms_token,
    )
    if cfg.code_file is None and cfg.sms_url is None:
        cfg = replace(cfg, code_file=t.ctx.base_dir / "codes.log")
    t.done()
    return cfg


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_REQUEST_TYPES = ("transaction_complaint", "service_complaint", "installment", "correction")


def _turnaround(t: _Table) -> dict[str, int]:
    days = {name: t.integer(name, 0, low=1, high=365) for name in _REQUEST_TYPES if t.has(name)}
    t.done()
    return days


def _requests(t: _Table, billers: Mapping[str, str]) -> RequestsConfig:
    holidays: list[date] = []
    raw_holidays = t.required("holidays") if t.has("holidays") else []
    if not isinstance(raw_holidays, list):
        raise ConfigError(t.key("holidays"), "must be an array of dates")
    for i, h in enumerate(raw_holidays):
        if isinstance(h, date) and not isinstance(h, datetime):
            holidays.append(h)
            continue
        try:
            holidays.append(date.fromisoformat(str(h)))
        except ValueError:
            raise ConfigError(f"{t.key('holidays')}[{i}]", "must be a date YYYY-MM-DD") from None
    raw_weekend = t.required("weekend") if t.has("weekend") else ["fri", "sat"]
    if not isinstance(raw_weekend, list) or any(w not in _WEEKDAYS for w in raw_weekend):
        raise ConfigError(t.key("weekend"), f"must be an array of {', '.join(_WEEKDAYS)}")
    if len(set(raw_weekend)) >= 7:
        raise ConfigError(t.key("weekend"), "leaves no working day")
    defaults = _turnaround(t.table("turnaround_days"))
    companies_t = t.table("companies")
    companies: dict[str, dict[str, int]] = {}
    handover: set[str] = set()
    for code in list(companies_t.raw):
        if code not in billers:
            raise ConfigError(companies_t.key(code), "is not a configured biller code")
        one = companies_t.table(code)
        companies[code] = _turnaround(one.table("turnaround_days"))
        if one.choice("handover", ("export", "rest"), "export") == "rest":
            if billers[code] != "rest":
                raise ConfigError(one.key("handover"), '"rest" needs a biller of kind "rest"')
            handover.add(code)
        one.done()
    companies_t.done()
    cfg = RequestsConfig(
        holidays=tuple(sorted(set(holidays))),
        weekend=tuple(sorted({_WEEKDAYS.index(w) for w in raw_weekend})),
        turnaround_days=defaults,
        companies=companies,
        rest_handover=frozenset(handover),
    )
    t.done()
    return cfg


def _resolver(t: _Table) -> ResolverConfig:
    d = ResolverConfig()
    cfg = ResolverConfig(
        quiet_period_s=t.number("quiet_period_s", d.quiet_period_s, positive=False),
        backoff_base_s=t.number("backoff_base_s", d.backoff_base_s),
        backoff_max_s=t.number("backoff_max_s", d.backoff_max_s),
        poll_interval_s=t.number("poll_interval_s", d.poll_interval_s),
        call_timeout_s=t.number("call_timeout_s", d.call_timeout_s),
    )
    t.done()
    return cfg


def _rest(t: _Table) -> RestSettings:
    base_url = t.required_string("base_url")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(t.key("base_url"), "must start with http:// or https://")
    token = t.biller_secret("token")
    cert = t.path_value("cert_file", must_exist=True)
    key = t.path_value("key_file", must_exist=True)
    if (cert is None) != (key is None):
        missing = "key_file" if key is None else "cert_file"
        raise ConfigError(t.key(missing), "cert_file and key_file go together (mutual TLS)")
    ca = t.path_value("ca_file", must_exist=True)
    t.done()
    return RestSettings(base_url.rstrip("/"), token, cert, key, ca)


def _batch(t: _Table) -> BatchSettings:
    inbox = t.path_value("inbox", required=True)
    outbox = t.path_value("outbox", required=True)
    assert inbox is not None and outbox is not None
    t.done()
    return BatchSettings(inbox, outbox)


def _database(t: _Table) -> DatabaseSettings:
    dsn = t.biller_secret("dsn")
    q = t.table("queries")
    queries = {name: q.required_string(name) for name in DATABASE_QUERIES if q.has(name)}
    q.done()
    t.done()
    return DatabaseSettings(dsn, MappingProxyType(queries))


_SECTIONS = frozenset(
    {"link", "tls", "admin", "log", "journal", "resolver", "billers", "web", "requests", "server"}
)
_KINDS: tuple[BillerKind, ...] = ("rest", "batch", "database")
_CODE = re.compile(r"[0-9]{1,11}")


def _billers(raw: Any, ctx: _Context, answer_budget_s: float) -> tuple[BillerConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(b, dict) for b in raw):
        raise ConfigError("billers", "must be an array of tables ([[billers]])")
    billers: list[BillerConfig] = []
    first_seen: dict[str, int] = {}
    for i, entry in enumerate(raw):
        t = _Table(entry, f"billers[{i}]", ctx)
        code_value = t.required("code")
        if not isinstance(code_value, str):
            raise ConfigError(
                t.key("code"),
                "must be a string of 1 to 11 digits (quoted: leading zeros count)",
            )
        code = _expand(code_value, t.key("code"), ctx.env)
        if not _CODE.fullmatch(code):
            raise ConfigError(t.key("code"), "must be 1 to 11 digits")
        if code in first_seen:
            raise ConfigError(
                t.key("code"), f"duplicate biller code {code} (also billers[{first_seen[code]}])"
            )
        first_seen[code] = i
        name = t.required_string("name")
        kind = cast(BillerKind, t.choice("kind", _KINDS, None))
        budget_s = t.number("budget_s", answer_budget_s, at_most=answer_budget_s)
        max_concurrency = t.integer("max_concurrency", 32, low=1)
        for other in _KINDS:
            if other != kind:
                t.forbid(other, f'is only used with kind = "{other}"')
        if not t.has(kind):
            raise ConfigError(t.key(kind), f'table is required for kind = "{kind}"')
        settings = t.table(kind)
        biller = BillerConfig(
            code=code,
            name=name,
            kind=kind,
            budget_s=budget_s,
            max_concurrency=max_concurrency,
            rest=_rest(settings) if kind == "rest" else None,
            batch=_batch(settings) if kind == "batch" else None,
            database=_database(settings) if kind == "database" else None,
        )
        t.done()
        billers.append(biller)
    return tuple(billers)


# --------------------------------------------------------------------------- entry points


def parse_config(
    text: str,
    *,
    base_dir: Path,
    env: Mapping[str, str],
    source: str = "config",
    biller_secrets: bool = True,
) -> Config:
    """Validate TOML ``text`` into a :class:`Config`; relative paths against ``base_dir``.

    ``env`` is where ``${NAME}`` references are looked up (``os.environ`` in
    production, a dict in tests). ``source`` is the key reported for a TOML syntax
    error, which has no dotted key of its own. ``biller_secrets=False`` leaves the
    billers' tokens and DSNs as written (``${NAME}`` unexpanded, no variable needed): a
    configuration for commands that never call a biller. Raises
    :class:`~billhub.errors.ConfigError` at the first problem.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from None
    ctx = _Context(Path(base_dir), env, biller_secrets)
    for name in raw:
        if name not in _SECTIONS:
            raise ConfigError(name, "unknown key")
    root = _Table(raw, "", ctx)
    link = _link(root.table("link"))
    tls = _tls(root.table("tls"))
    admin = _admin(root.table("admin"))
    log = _log(root.table("log"))
    journal = _journal(root.table("journal"))
    if link.reuse_port and journal.kind != "postgresql":
        # Each process behind the shared port would keep its own journal (or fight over
        # one file): a repeat landing on another process than the original would be
        # paid again. Only a journal every process shares makes the port shareable.
        raise ConfigError(
            "link.reuse_port",
            'needs [journal] kind = "postgresql": the hub processes sharing the port must '
            "share one journal, and a SQLite file takes one writer",
        )
    resolver = _resolver(root.table("resolver"))
    billers = _billers(root.raw.get("billers"), ctx, link.answer_budget_s)
    root.seen.add("billers")
    web = _web(root.table("web"))
    requests = _requests(root.table("requests"), {b.code: b.kind for b in billers})
    server = _server(root.table("server"))
    root.done()
    return Config(
        link=link,
        tls=tls,
        admin=admin,
        log=log,
        journal=journal,
        resolver=resolver,
        billers=billers,
        web=web,
        requests=requests,
        server=server,
    )


def load_config(
    path: str | Path, *, env: Mapping[str, str] | None = None, biller_secrets: bool = True
) -> Config:
    """Read and validate the configuration file at ``path`` (environment: ``os.environ``).

    Raises :class:`~billhub.errors.ConfigError` with key ``config`` if the file cannot
    be read, else as :func:`parse_config`.
    """
    p = Path(path).expanduser().absolute()
    if p.is_dir():
        raise ConfigError("config", f"{p} is a folder, not a configuration file")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config", f"file not found: {p}") from None
    except UnicodeDecodeError:
        raise ConfigError("config", f"not UTF-8: {p}") from None
    except OSError as exc:
        raise ConfigError("config", f"cannot read {p}: {exc.strerror}") from None
    return parse_config(
        text,
        base_dir=p.parent,
        env=os.environ if env is None else env,
        biller_secrets=biller_secrets,
    )
