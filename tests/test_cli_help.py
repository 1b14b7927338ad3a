"""The command line as a person reads it: every page of help, and every error, in one line.

The help test walks the whole command tree (``billhub``, the simulated switch and the
demo biller's own command), so a new option without a help text fails here. The error
tests run the real program the way the first hour of an operator goes wrong.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from billhub import __version__
from billhub.cli import build_parser, main
from billhub.simulator import rest_biller

BILLHUB = [sys.executable, "-m", "billhub.cli"]

#: What a message must not show: a call (``generate_accounts(``), a keyword argument
#: (``force=True``), a repr (``<urlopen error``), a traceback.
INTERNAL = re.compile(r"\b[a-z_]+\(|\b[a-z_]+=(True|False|None)\b|<[a-z]\w* |Traceback|Errno")
#: A snake_case word is a Python name unless it is a configuration key (``tls.cert_file``),
#: a path, or a name the documentation gives a person (a CSV column, a config key).
SNAKE = re.compile(r"(?<![./\w\[-])[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED = {
    word
    for doc in [*ROOT.glob("specs/*.md"), *ROOT.glob("docs/*.md")]
    for word in SNAKE.findall(doc.read_text("utf-8"))
}


def internal_names(text: str) -> list[str]:
    found = [m.group(0) for m in INTERNAL.finditer(text)]
    return found + [w for w in SNAKE.findall(text) if w not in DOCUMENTED]


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, (*path, name))


COMMANDS = list(walk(build_parser()))


def test_the_tree_is_all_there() -> None:
    paths = {" ".join(p) for p, _ in COMMANDS}
    for expected in ("serve", "certs init", "switch pay", "switch load", "journal show"):
        assert expected in paths
    assert {"report", "settle import", "status", "health", "demo", "spec table"} <= paths


@pytest.mark.parametrize(
    ("path", "parser"),
    [*COMMANDS, (("rest_biller",), rest_biller._parser())],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else "",
)
def test_every_command_and_option_is_described(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    assert parser.description, f"{' '.join(path)}: no description on its own page"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help is not argparse.SUPPRESS, (
            f"billhub {' '.join(path)}: {name} has no help"
        )
    page = parser.format_help()
    assert not internal_names(page), f"{' '.join(path)}: {internal_names(page)} in its help"


@pytest.mark.parametrize(
    "path",
    [p for p, _ in COMMANDS if p[:1] != ("switch",) or len(p) > 1],
    ids=lambda p: " ".join(p) or "billhub",
)
def test_help_pages_print_and_exit_0(path: tuple[str, ...], capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as done:
        main([*path, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: billhub")


@pytest.mark.parametrize(
    "path",
    [(), ("serve",), ("switch",), ("switch", "pay"), ("report",), ("journal", "show")],
    ids=lambda p: " ".join(p) or "billhub",
)
def test_main_commands_show_examples(path: tuple[str, ...], capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        main([*path, "--help"])
    out = capsys.readouterr().out
    heading = "first steps" if not path else "examples:"
    assert heading in out
    examples = out.split(heading, 1)[1]
    assert "billhub " + " ".join(path) in examples


def test_version(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"billhub {__version__}"


# -- errors: one line, naming the file or host, no internal names ------------------------


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BILLHUB, *args], check=False, capture_output=True, text=True, timeout=60, cwd=cwd
    )


def one_line(out: subprocess.CompletedProcess[str], *names: str) -> str:
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert line.startswith("billhub: error: ")
    for name in names:
        assert name in line
    assert not internal_names(line), line
    return line


def test_switch_with_no_hub_names_the_host_once(tmp_path: Path) -> None:
    assert run("certs", "init", "certs", cwd=tmp_path).returncode == 0
    line = one_line(run("switch", "--port", "1", "echo", cwd=tmp_path), "127.0.0.1:1")
    assert line.count("switch") <= 1 and "connection refused" in line


def test_switch_without_certificates_says_how_to_make_them(tmp_path: Path) -> None:
    line = one_line(run("switch", "echo", cwd=tmp_path), "certs/switch.crt")
    assert "billhub certs init certs" in line


def test_health_with_no_hub_names_the_url(tmp_path: Path) -> None:
    url = "http://127.0.0.1:1/healthz"
    line = one_line(run("health", "--url", url, cwd=tmp_path), url)
    assert "refused" in line.lower()


def test_settle_import_of_a_folder_and_of_a_bad_file(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    from tests.hubharness import base_config

    cfg = tmp_path / "billhub.toml"
    cfg.write_text(base_config(pki, tmp_path / "journal.db"), "utf-8")
    line = one_line(run("settle", "import", str(tmp_path), "--config", str(cfg), cwd=tmp_path))
    assert "folder" in line and str(tmp_path) in line
    bad = tmp_path / "settlement-2026-11-24.csv"
    bad.write_text("not,the,header\n", "utf-8")
    line = one_line(
        run("settle", "import", str(bad), "--config", str(cfg), cwd=tmp_path), str(bad), "line 1"
    )


def test_certs_init_twice_says_use_force(tmp_path: Path) -> None:
    assert run("certs", "init", "c", cwd=tmp_path).returncode == 0
    line = one_line(run("certs", "init", "c", cwd=tmp_path), "c already holds", "--force")
    assert "force=" not in line


def test_demo_in_a_file_names_it(tmp_path: Path) -> None:
    f = tmp_path / "taken"
    f.write_text("x", "utf-8")
    one_line(run("demo", "--dir", str(f), cwd=tmp_path), str(f), "not a folder")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("report", "1124", "--config", "x.toml"), "YYYY-MM-DD"),
        (("report", "2026-02-30", "--config", "x.toml"), "2026-02-30"),
        (("journal", "show", "--rrn", "1", "--date", "11/24"), "YYYY-MM-DD"),
    ],
)
def test_dates_are_yyyy_mm_dd(tmp_path: Path, args: tuple[str, ...], named: str) -> None:
    one_line(run(*args, cwd=tmp_path), named)


def test_switch_dates_take_yyyy_mm_dd_or_mmdd() -> None:
    parser = build_parser()
    pay = ["switch", "pay", "--biller", "1", "--account", "1", "--amount", "1", "--date"]
    assert parser.parse_args([*pay, "2026-11-24"]).date == "1124"
    assert parser.parse_args([*pay, "1124"]).date == "1124"
    assert parser.parse_args(["switch", "cutover", "--date", "2026-11-25"]).date == "1125"
    with pytest.raises(SystemExit):
        parser.parse_args([*pay, "1324"])


def test_read_only_commands_load_the_configuration_without_billers_secrets(
    tmp_path: Path, pki
) -> None:  # type: ignore[no-untyped-def]
    from tests.hubharness import base_config

    from billhub.config import load_config
    from billhub.errors import ConfigError

    cfg = tmp_path / "billhub.toml"
    biller = (
        '[[billers]]\ncode = "0010"\nname = "D"\nkind = "rest"\n'
        'rest = { base_url = "http://127.0.0.1:1", token = "${UNSET_TOKEN_FOR_TEST}" }\n'
    )
    cfg.write_text(base_config(pki, tmp_path / "journal.db") + biller, "utf-8")
    with pytest.raises(ConfigError, match="UNSET_TOKEN_FOR_TEST is not set"):
        load_config(cfg, env={})
    assert load_config(cfg, env={}, biller_secrets=False).billers[0].code == "0010"
    out = run("report", "2026-11-24", "--config", str(cfg), cwd=tmp_path)
    assert "UNSET_TOKEN_FOR_TEST" not in out.stderr
    one_line(out, "no journal at")


def test_status_with_no_hub_names_the_url(tmp_path: Path) -> None:
    url = "http://127.0.0.1:1"
    line = one_line(run("status", "--url", url, cwd=tmp_path), url)
    assert "refused" in line.lower()


def test_serve_on_a_port_in_use_names_the_key_and_the_address(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    import socket

    from tests.hubharness import base_config

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "billhub.toml"
        cfg.write_text(base_config(pki, tmp_path / "journal.db", port=port), "utf-8")
        line = one_line(run("serve", "--config", str(cfg), cwd=tmp_path), "link.port")
    assert f"127.0.0.1:{port}" in line and "address already in use" in line
