"""``billhub``: the command line, and the composition root.

Every command turns a :class:`~billhub.errors.BillhubError` (a bad
configuration, a refused connection) into one clear line on stderr and a
non-zero exit: no traceback reaches an operator.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from billhub.app.clearing import import_settlement_file, write_report
from billhub.app.demo import run_demo
from billhub.app.hub import serve
from billhub.app.ops import add_ops_parsers
from billhub.config import load_config
from billhub.errors import BillhubError, ConfigError
from billhub.iso8583.spec import load_spec
from billhub.iso8583.table import field_table
from billhub.money import Amount
from billhub.observability.logs import configure
from billhub.simulator.cli import add_switch_parser, run_switch
from billhub.transport.certs import init_dev_certs

EXIT_USAGE = 2
EXIT_ERROR = 1


def _cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    configure(config.log.format, config.log.level)
    asyncio.run(serve(config))
    return 0


def _cmd_certs_init(args: argparse.Namespace) -> int:
    paths = init_dev_certs(
        Path(args.dir), hub_name=args.hub_name, switch_name=args.switch_name, force=args.force
    )
    for name, path in sorted(paths.items()):
        print(f"{name:>12}  {path}")
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
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        print(f"billhub: error: {args.url} unreachable: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _cmd_report(args: argparse.Namespace) -> int:
    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        raise ConfigError("date", f"{args.date!r} is not a date (YYYY-MM-DD)") from None
    config = load_config(Path(args.config))
    done = asyncio.run(write_report(config, day, Path(args.out)))
    print(
        f"settlement date {day}: collected {Amount(done.collected).format()} SYP, "
        f"{done.exceptions} exception(s)"
    )
    for path in done.files:
        print(f"  {path}")
    return 0


def _cmd_settle_import(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    path = Path(args.file)
    if not path.is_file():
        raise ConfigError("file", f"no such file: {path}")
    outcome = asyncio.run(import_settlement_file(config, path))
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


def _cmd_switch(args: argparse.Namespace) -> int:
    return run_switch(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(Path(args.dir))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="billhub", description=__doc__.splitlines()[0] if __doc__ else None
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the hub")
    s.add_argument("--config", required=True, help="TOML configuration file")
    s.set_defaults(func=_cmd_serve)

    c = sub.add_parser("certs", help="development certificates")
    csub = c.add_subparsers(dest="certs_command", required=True)
    ci = csub.add_parser("init", help="make a dev CA, hub server cert and switch client cert")
    ci.add_argument("dir")
    ci.add_argument("--hub-name", default="billhub-hub")
    ci.add_argument("--switch-name", default="switch-1")
    ci.add_argument("--force", action="store_true", help="overwrite existing files")
    ci.set_defaults(func=_cmd_certs_init)

    sp = sub.add_parser("spec", help="the link specification")
    spsub = sp.add_subparsers(dest="spec_command", required=True)
    st = spsub.add_parser("table", help="print the field table generated from the spec file")
    st.add_argument("--spec", default=None, help="link spec file (default: the bundled link-v1.toml)")
    st.set_defaults(func=_cmd_spec_table)

    add_switch_parser(sub, _cmd_switch)
    add_ops_parsers(sub)  # status, journal show

    h = sub.add_parser("health", help="check a running hub's admin endpoint")
    h.add_argument("--url", default="http://127.0.0.1:9100/healthz")
    h.add_argument("--timeout", type=float, default=3.0)
    h.set_defaults(func=_cmd_health)

    r = sub.add_parser("report", help="write a settlement date's clearing reports (CSV, HTML)")
    r.add_argument("date", help="settlement date, YYYY-MM-DD")
    r.add_argument("--config", required=True, help="the hub's TOML configuration")
    r.add_argument("--out", default="reports", help="folder for the files (default: reports)")
    r.set_defaults(func=_cmd_report)

    se = sub.add_parser("settle", help="the switch's settlement file")
    sesub = se.add_subparsers(dest="settle_command", required=True)
    si = sesub.add_parser("import", help="match the switch's daily settlement file")
    si.add_argument("file")
    si.add_argument("--config", required=True, help="the hub's TOML configuration")
    si.set_defaults(func=_cmd_settle_import)

    d = sub.add_parser("demo", help="run a hub and a simulated switch on loopback")
    d.add_argument("--dir", default="demo-run", help="working folder (certificates, config)")
    d.set_defaults(func=_cmd_demo)
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
        print(f"billhub: error: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
