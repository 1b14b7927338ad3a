"""``billhub``: the command line, and the composition root.

Every command's help (``--help``) is for an operator: a description, every option
explained, examples for the main commands (a test walks them all). Every command
turns a :class:`~billhub.errors.BillhubError` (a bad configuration, a refused
connection) into one clear line on stderr and a non-zero exit: no traceback
reaches an operator.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from billhub import __version__
from billhub.app.ops import add_ops_parsers
from billhub.config import load_config
from billhub.errors import BillhubError, ConfigError
from billhub.iso8583.spec import load_spec
from billhub.iso8583.table import field_table
from billhub.money import Amount
from billhub.observability.logs import configure
from billhub.settlement.calendar import parse_day
from billhub.simulator.cli import add_switch_parser, run_switch
from billhub.transport.certs import init_dev_certs
from billhub.transport.eventloop import EVENT_LOOPS
from billhub.transport.eventloop import run as run_on_loop

EXIT_USAGE = 2
EXIT_ERROR = 1

DESCRIPTION = (
    "billhub: the ministry's hub between the national bill-payment switch (ISO 8583 over "
    "mutual TLS) and the electricity companies' billing systems."
)
FIRST_STEPS = """\
first steps (README.md, "Running a hub"):
  billhub demo                                  a hub, two billers and a switch on loopback
  billhub certs init certs                      development certificates
  billhub serve --config billhub.toml           run the hub
  billhub switch --certs certs echo             the simulated switch signs on, echoes
  billhub COMMAND --help                        each command's options and examples
"""


def _cmd_serve(args: argparse.Namespace) -> int:
    from billhub.app.hub import serve

    config = load_config(Path(args.config))
    choice = args.event_loop or config.server.event_loop
    key = "--event-loop" if args.event_loop else "server.event_loop"
    configure(config.log.format, config.log.level)
    run_on_loop(serve(config), choice, key=key)
    return 0


#: What each file of ``certs init`` is, as an operator names it.
CERT_ROLES = {
    "hub_ca_cert": "hub CA certificate (for the switch)",
    "hub_ca_key": "hub CA key",
    "hub_cert": "hub server certificate",
    "hub_key": "hub server key",
    "switch_ca_cert": "switch CA certificate (for the hub)",
    "switch_ca_key": "switch CA key",
    "switch_cert": "switch client certificate",
    "switch_key": "switch client key",
}


def _cmd_certs_init(args: argparse.Namespace) -> int:
    paths = init_dev_certs(
        Path(args.dir), hub_name=args.hub_name, switch_name=args.switch_name, force=args.force
    )
    for role, path in sorted(paths.items()):
        print(f"  {CERT_ROLES.get(role, path.name):<36} {path}")
    print("development certificates only: never use these keys in production")
    return 0


def _cmd_spec_table(args: argparse.Namespace) -> int:
    sys.stdout.write(field_table(load_spec(args.spec)))
    return 0


def _cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the admin URL answers 200: the container HEALTHCHECK."""
    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as resp:  # noqa: S310
            print(resp.read().decode("utf-8", "replace"))
            return 0 if resp.status == 200 else EXIT_ERROR
    except urllib.error.HTTPError as exc:
        print(exc.read().decode("utf-8", "replace"))
        return EXIT_ERROR
    except urllib.error.URLError as exc:
        reason = exc.reason
        why = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        print(f"billhub: error: cannot reach {args.url}: {why}", file=sys.stderr)
        return EXIT_ERROR
    except (TimeoutError, OSError) as exc:
        why = "no answer in time" if isinstance(exc, TimeoutError) else exc.strerror or exc
        print(f"billhub: error: cannot reach {args.url}: {why}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError:
        print(f"billhub: error: --url {args.url!r} is not an http:// URL", file=sys.stderr)
        return EXIT_ERROR


def _cmd_report(args: argparse.Namespace) -> int:
    from billhub.app.clearing import write_report

    try:
        day = parse_day(args.date)
    except ValueError as exc:
        raise ConfigError("settlement date", str(exc)) from None
    config = load_config(Path(args.config), biller_secrets=False)
    done = asyncio.run(write_report(config, day, Path(args.out)))
    print(
        f"settlement date {day}: collected {Amount(done.collected).format()} SYP, "
        f"{done.exceptions} exception(s)"
    )
    for path in done.files:
        print(f"  {path}")
    return 0


def _cmd_settle_import(args: argparse.Namespace) -> int:
    from billhub.app.clearing import import_settlement_file
    from billhub.settlement.importfile import SettlementFileError

    path = Path(args.file)
    if path.is_dir():
        raise ConfigError("settlement file", f"{path} is a folder, not a file")
    if not path.is_file():
        raise ConfigError("settlement file", f"no such file: {path}")
    config = load_config(Path(args.config), biller_secrets=False)
    try:
        outcome = asyncio.run(import_settlement_file(config, path))
    except SettlementFileError as exc:
        raise ConfigError(str(path), f"{exc}; nothing was imported") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from None
    if outcome.already_imported:
        print(f"{path.name}: already imported; nothing changed")
        return 0
    print(
        f"{path.name}: {outcome.lines} line(s), {outcome.matched} matched, "
        f"{len(outcome.findings)} finding(s)"
    )
    for f in outcome.findings:
        print(
            f"  {f.kind.value:<18} biller {f.biller} acquirer {f.acquirer or '-'} "
            f"rrn {f.rrn or '-'}: {f.detail} (hub {f.hub or '-'}, switch {f.switch or '-'})"
        )
    return 0


def _cmd_web(args: argparse.Namespace) -> int:
    from billhub.app.web import run_web

    config = load_config(Path(args.config))
    configure(config.log.format, config.log.level)
    asyncio.run(run_web(config))
    return 0


def _cmd_web_users(args: argparse.Namespace) -> int:
    from billhub.app.web import users_add, users_disable, users_list

    config = load_config(Path(args.config))
    if args.users_command == "add":
        password = asyncio.run(users_add(config, args.username, args.role, args.company))
        print(f"added {args.username} ({args.role}{', ' + args.company if args.company else ''})")
        print(f"password: {password}")
    elif args.users_command in ("disable", "enable"):
        asyncio.run(users_disable(config, args.username, args.users_command == "disable"))
        print(f"{args.users_command}d {args.username}")
    else:
        for u in asyncio.run(users_list(config)):
            state = "disabled" if u.disabled else "active"
            print(f"{u.username:<24} {u.role:<10} {u.company or '-':<12} {state}")
    return 0


def _cmd_switch(args: argparse.Namespace) -> int:
    return run_switch(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from billhub.app.demo import run_demo

    workdir = Path(args.dir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError("demo --dir", f"{workdir} is a file, not a folder")
    return run_demo(workdir, database_biller=args.database_biller)


def _command(
    sub: Any, name: str, about: str, *, more: str = "", examples: Sequence[str] = ()
) -> argparse.ArgumentParser:
    """A sub-command whose page starts with its one-line description and ends with examples."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=about,
        description=f"{about[0].upper()}{about[1:]}.{' ' + more if more else ''}",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _cmd_biller_db(args: argparse.Namespace) -> int:
    from billhub.app.demo import fill_biller_database
    from billhub.simulator.demo_data import generate_accounts

    if not args.dsn:
        raise ConfigError("--dsn", "give a DSN or set BILLHUB_BILLER_DSN")
    today = date.fromisoformat(args.today) if args.today else datetime.now(UTC).date()
    accounts = generate_accounts(args.prefix, args.accounts, args.seed, today=today)
    try:
        rows = asyncio.run(fill_biller_database(args.dsn, accounts, empty=args.empty))
    except ConfigError as exc:
        raise ConfigError("--dsn", exc.reason) from None
    print(f"default biller schema ready; {rows} bill rows of {len(accounts)} subscribers written")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="billhub",
        description=DESCRIPTION,
        epilog=FIRST_STEPS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"billhub {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = _command(
        sub,
        "serve",
        "run the hub",
        more="It listens for the switch's links and serves the admin port until SIGTERM "
        "(graceful shutdown; a second signal stops at once). A bad configuration stops it "
        "at start-up with one line naming the key.",
        examples=["billhub serve --config billhub.toml"],
    )
    s.add_argument("--config", required=True, help="the hub's TOML configuration file")
    s.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=None,
        help="auto (uvloop if installed), uvloop or asyncio; overrides [server] event_loop",
    )
    s.set_defaults(func=_cmd_serve)

    c = sub.add_parser(
        "certs", help="development certificates", description="Development certificates."
    )
    csub = c.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")
    ci = _command(
        csub,
        "init",
        "make a development CA, the hub's server certificate and the switch's client one",
        more="For a local hub and `billhub switch` only: never use these keys in production "
        "(certs.example/README.md says what production needs).",
        examples=["billhub certs init certs", "billhub certs init certs --force"],
    )
    ci.add_argument("dir", metavar="FOLDER", help="folder to write the files to (made if missing)")
    ci.add_argument(
        "--hub-name",
        default="billhub-hub",
        help="common name of the hub's certificate (default billhub-hub)",
    )
    ci.add_argument(
        "--switch-name",
        default="switch-1",
        help="common name of the switch's certificate, for tls.allowed_subjects (default switch-1)",
    )
    ci.add_argument("--force", action="store_true", help="replace files already there")
    ci.set_defaults(func=_cmd_certs_init)

    sp = sub.add_parser(
        "spec", help="the link specification", description="The link specification."
    )
    spsub = sp.add_subparsers(dest="spec_command", required=True, metavar="COMMAND")
    st = _command(
        spsub,
        "table",
        "print the field table generated from the link spec file",
        examples=["billhub spec table > specs/link-v1-fields.md"],
    )
    st.add_argument(
        "--spec", default=None, help="link spec file (default: the bundled link-v1.toml)"
    )
    st.set_defaults(func=_cmd_spec_table)

    w = _command(
        sub,
        "web",
        "run the citizen web service",
        more="Bill inquiry, complaints, installment and bill-correction requests for "
        "citizens (pages in Arabic and English, and the mobile app's JSON API under "
        "/api/v1) and the companies' desk under /desk, beside the hub and on its "
        "journal's database, until SIGTERM. Its users sub-command manages the desk's "
        "staff accounts.",
        examples=[
            "billhub web --config billhub.toml",
            "billhub web --config billhub.toml users add clerk-dam --role clerk --company 100001",
        ],
    )
    w.add_argument("--config", required=True, help="the hub's TOML configuration file")
    w.set_defaults(func=_cmd_web)
    wsub = w.add_subparsers(dest="web_command", metavar="COMMAND")
    wu = _command(
        wsub,
        "users",
        "manage the desk's staff accounts",
        more="Passwords are stored as argon2id hashes; a new account's password is "
        "printed once. Disabling an account ends its sessions at once.",
        examples=["billhub web --config billhub.toml users list"],
    )
    wusub = wu.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    wa = _command(
        wusub,
        "add",
        "add a staff account and print its password",
        more="A clerk or supervisor belongs to one company (a biller code); the "
        "ministry's accounts read every company's requests and change nothing.",
        examples=[
            "billhub web --config billhub.toml users add clerk-dam --role clerk --company 100001",
            "billhub web --config billhub.toml users add ministry-1 --role ministry",
        ],
    )
    wa.add_argument("username", help="2-40 of a-z 0-9 . - and underscore")
    wa.add_argument(
        "--role", required=True, choices=["clerk", "supervisor", "ministry"], help="what it may do"
    )
    wa.add_argument("--company", default=None, help="its company's biller code (not for ministry)")
    for name, about in (
        ("disable", "disable a staff account (its sessions end)"),
        ("enable", "enable a disabled staff account again"),
    ):
        wd = _command(
            wusub,
            name,
            about,
            examples=[f"billhub web --config billhub.toml users {name} clerk-dam"],
        )
        wd.add_argument("username", help="the account's user name")
    _command(
        wusub,
        "list",
        "list the staff accounts",
        more="One line each: user name, role, company, active or disabled.",
        examples=["billhub web --config billhub.toml users list"],
    )
    wu.set_defaults(func=_cmd_web_users)

    add_switch_parser(sub, _cmd_switch)
    add_ops_parsers(sub)  # status, journal show

    h = _command(
        sub,
        "health",
        "check a running hub's admin endpoint",
        more="Exit status 0 when it answers 200 (the container's HEALTHCHECK).",
        examples=["billhub health", "billhub health --url http://127.0.0.1:9100/readyz"],
    )
    h.add_argument(
        "--url",
        default="http://127.0.0.1:9100/healthz",
        help="the URL to ask (default http://127.0.0.1:9100/healthz)",
    )
    h.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for an answer (default 3)"
    )
    h.set_defaults(func=_cmd_health)

    r = _command(
        sub,
        "report",
        "write a settlement date's clearing reports (CSV, HTML)",
        more="Reads the journal only: it can run beside the hub, and the billers' tokens "
        "are not needed.",
        examples=["billhub report 2026-11-24 --config billhub.toml --out reports/"],
    )
    r.add_argument("date", metavar="DATE", help="settlement date, YYYY-MM-DD")
    r.add_argument("--config", required=True, help="the hub's TOML configuration file")
    r.add_argument("--out", default="reports", help="folder for the files (default reports)")
    r.set_defaults(func=_cmd_report)

    se = sub.add_parser(
        "settle",
        help="the switch's settlement file",
        description="The switch's daily settlement file.",
    )
    sesub = se.add_subparsers(dest="settle_command", required=True, metavar="COMMAND")
    si = _command(
        sesub,
        "import",
        "match the switch's daily settlement file against the journal",
        more="Findings go to the journal and the report; importing the same file again "
        "changes nothing. The billers' tokens are not needed.",
        examples=["billhub settle import settlement-2026-11-24.csv --config billhub.toml"],
    )
    si.add_argument("file", metavar="FILE", help="the settlement file (CSV) from the switch")
    si.add_argument("--config", required=True, help="the hub's TOML configuration file")
    si.set_defaults(func=_cmd_settle_import)

    d = _command(
        sub,
        "demo",
        "run a hub, two demo billers and a simulated switch on loopback",
        more="Everything (certificates, configuration, journal, bills and payments files, "
        "the hub's log) is written in the working folder; nothing else is needed.",
        examples=["billhub demo", "billhub demo --dir /tmp/billhub-demo"],
    )
    d.add_argument(
        "--dir", default="demo-run", help="working folder, made if missing (default demo-run)"
    )
    d.add_argument(
        "--database-biller",
        metavar="DSN",
        default=None,
        help="also a database biller (Aleppo, 100003) on this PostgreSQL or MariaDB/MySQL "
        "database of your own: its default-schema tables are created, emptied and filled",
    )
    d.set_defaults(func=_cmd_demo)

    bd = _command(
        sub,
        "biller-db",
        "create the default biller database schema and fill it with demo bills",
        more="The schema of specs/biller-database.md, on PostgreSQL or MariaDB/MySQL; bills "
        "of the same id are replaced, so it may run again.",
        examples=[
            "billhub biller-db --dsn postgresql://postgres@127.0.0.1:5432/aleppo",
            "BILLHUB_BILLER_DSN=mysql://root@127.0.0.1:3306/aleppo billhub biller-db --empty",
        ],
    )
    bd.add_argument(
        "--dsn",
        default=os.environ.get("BILLHUB_BILLER_DSN"),
        help="postgresql://... or mysql://... (default $BILLHUB_BILLER_DSN)",
    )
    bd.add_argument("--accounts", type=int, default=1000, help="demo subscribers (default 1000)")
    bd.add_argument("--seed", type=int, default=1, help="demo data seed (default 1)")
    bd.add_argument("--prefix", default="03", help="2-digit account prefix (default 03, Aleppo)")
    bd.add_argument("--today", default=None, help="YYYY-MM-DD the bills are relative to")
    bd.add_argument("--empty", action="store_true", help="delete the tables' rows first")
    bd.set_defaults(func=_cmd_biller_db)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BillhubError as exc:
        print(f"billhub: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"billhub: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
