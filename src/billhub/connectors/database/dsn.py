"""A biller's connection string: which server, checked before the hub starts.

``postgresql://`` (or ``postgres://``) is a PostgreSQL server, ``mysql://`` (or
``mariadb://``) a MariaDB or MySQL server. What can be known without connecting is
checked here, so that a typo stops ``serve`` at start-up; whether the server answers
is a matter of the moment (a biller down is answered `91`, and the pool reconnects).

Errors name the key and never repeat the DSN: it holds a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from billhub.connectors.database.sql import Dialect
from billhub.errors import ConfigError

__all__ = ["Dsn", "parse_dsn"]

_SCHEMES: dict[str, Dialect] = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}
#: libpq options that asyncpg understands; anything else is a typo or unsupported.
_PG_OPTIONS = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "sslpassword",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "application_name",
        "target_session_attrs",
        "connect_timeout",
        "passfile",
        "host",
        "port",
        "user",
        "password",
        "dbname",
    }
)
_MYSQL_OPTIONS = frozenset({"unix_socket"})


@dataclass(frozen=True, slots=True)
class Dsn:
    """A parsed connection string; ``text`` (the original, for asyncpg) and the password
    stay out of ``repr``."""

    dialect: Dialect
    host: str
    port: int | None
    user: str | None
    database: str
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict)
    text: str = field(default="", repr=False)


def parse_dsn(code: str, text: str) -> Dsn:
    """Parse and check ``text``; raises :class:`ConfigError` keyed ``biller <code>:
    database.dsn`` with a reason that never quotes the string."""
    key = f"biller {code}: database.dsn"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ConfigError(key, "not a connection URL (port not a number?)") from None
    dialect = _SCHEMES.get(parts.scheme.lower())
    if dialect is None:
        raise ConfigError(
            key, "must start with postgresql:// or mysql:// (also postgres://, mariadb://)"
        )
    if parts.fragment:
        raise ConfigError(key, "must not have a #fragment")
    try:
        options = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        options = {} if not parts.query else {"": ""}
    allowed = _PG_OPTIONS if dialect == "postgresql" else _MYSQL_OPTIONS
    for name in options:
        if name not in allowed:
            raise ConfigError(key, f"unknown option {name!r}" if name else "bad ?options")
    host = unquote(parts.hostname or "")
    if not host and not (options.get("host") or options.get("unix_socket")):
        raise ConfigError(key, "names no host")
    database = unquote(parts.path.lstrip("/"))
    if dialect == "postgresql":
        database = database or options.get("dbname", "")
    if not database or "/" in database:
        raise ConfigError(key, "names no database (…/DATABASE)")
    return Dsn(
        dialect=dialect,
        host=host,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        database=database,
        password=unquote(parts.password) if parts.password is not None else None,
        options=options,
        text=text,
    )
