"""Named parameters (``:account``) in a biller's SQL, turned into each driver's own style.

A biller's configuration holds SQL with named parameters because that is what a
company's database administrator reads and writes; the drivers want positions
(asyncpg ``$1``, PyMySQL ``%s``). This module is the one place that knows the
difference. It is pure: text in, text and a parameter order out, no I/O.

The scan skips what is not SQL code, so that a ``:word`` there is never taken for a
parameter: quoted strings and identifiers, comments, PostgreSQL's ``::`` casts and
dollar-quoted bodies, and (MySQL) backslash escapes and ``#`` comments. A literal
``%`` is doubled for PyMySQL, which formats the statement with ``%``. Positional
placeholders (``$1``, ``%s``, ``?``) and a second statement after a ``;`` are refused:
one question is one statement, and its parameters have names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["Dialect", "SqlError", "Statement", "parse_statement"]

Dialect = Literal["postgresql", "mysql"]


class SqlError(ValueError):
    """The SQL cannot be used as one statement with named parameters; ``str`` says why."""


_COMMON = r"""
  (?P<dq>"(?:[^"]|"")*")
| (?P<lc>--[^\n]*)
| (?P<bc>/\*.*?\*/)
| (?P<cast>::)
| (?P<param>:(?P<name>[A-Za-z_][A-Za-z0-9_]*))
| (?P<semi>;)
| (?P<q>\?)
"""
_PG = re.compile(
    r"""
  (?P<sq>[Ee]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*')
| (?P<dollar_quote>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*|)\$.*?\$(?P=tag)\$)
| (?P<positional>\$[0-9]+)
| (?P<pct>%)
|"""
    + _COMMON,
    re.VERBOSE | re.DOTALL,
)
_MYSQL = re.compile(
    r"""
  (?P<sq>'(?:[^'\\]|\\.|'')*')
| (?P<bq>`(?:[^`]|``)*`)
| (?P<hc>\#[^\n]*)
| (?P<positional>%s)
| (?P<pct>%)
|"""
    + _COMMON,
    re.VERBOSE | re.DOTALL,
)
_UNCLOSED = re.compile(r"""['"`]|/\*""")


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement ready for a driver: ``text`` in its style, ``order`` the names of its
    positional parameters in order (a name used twice appears twice for PyMySQL, once
    for asyncpg, whose ``$n`` may repeat)."""

    source: str
    text: str
    order: tuple[str, ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.order)

    def args(self, params: dict[str, object]) -> list[object]:
        """The values in positional order; ``KeyError`` names a parameter not given."""
        return [params[name] for name in self.order]


def parse_statement(sql: str, dialect: Dialect) -> Statement:
    """Translate ``sql`` for ``dialect``; raises :class:`SqlError` saying why it cannot."""
    if not sql.strip():
        raise SqlError("is empty")
    pattern = _PG if dialect == "postgresql" else _MYSQL
    out: list[str] = []
    order: list[str] = []
    numbers: dict[str, int] = {}
    pos = 0
    for m in pattern.finditer(sql):
        out.append(sql[pos : m.start()])
        _check_plain(sql[pos : m.start()])
        pos = m.end()
        token = m.group(0)
        if m.group("param") is not None:
            name = m.group("name")
            if dialect == "postgresql":
                if name not in numbers:
                    numbers[name] = len(numbers) + 1
                    order.append(name)
                out.append(f"${numbers[name]}")
            else:
                order.append(name)
                out.append("%s")
        elif m.group("positional") is not None or m.group("q") is not None:
            raise SqlError(f"uses a positional placeholder {token!r}: name it (:name)")
        elif m.group("semi") is not None:
            if _has_code(sql[m.end() :], pattern):
                raise SqlError("holds more than one statement")
            # A trailing ';' is dropped: drivers take one statement without it.
        elif m.group("pct") is not None:
            out.append("%%" if dialect == "mysql" else "%")
        elif dialect == "mysql":
            out.append(token.replace("%", "%%"))  # PyMySQL formats the whole text with %
        else:
            out.append(token)
    _check_plain(sql[pos:])
    out.append(sql[pos:])
    return Statement(sql, "".join(out).strip(), tuple(order))


def _check_plain(text: str) -> None:
    """Plain SQL between tokens: a quote or comment opener here was never closed."""
    m = _UNCLOSED.search(text)
    if m is not None:
        raise SqlError(f"has an unclosed {m.group(0)!r}")


def _has_code(rest: str, pattern: re.Pattern[str]) -> bool:
    """Whether anything but blanks and comments follows."""
    pos = 0
    for m in pattern.finditer(rest):
        if rest[pos : m.start()].strip():
            return True
        if not (m.group("lc") or m.group("bc") or m.groupdict().get("hc") or m.group("semi")):
            return True
        pos = m.end()
    return bool(rest[pos:].strip())
