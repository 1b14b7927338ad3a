"""The configuration file: what a good one gives, and how each mistake is named.

Every bad-input test asserts on ``ConfigError.key``, because the key is what lets an
operator find the line to fix; the reason is checked only where its wording is the
point (env variables, missing files).
"""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import pytest

from billhub.config import (
    Config,
    DatabaseSettings,
    JournalConfig,
    LinkConfig,
    RestSettings,
    load_config,
    parse_config,
)
from billhub.errors import ConfigError

MINIMAL = """
[tls]
cert_file = "certs/hub.crt"
key_file = "certs/hub.key"
client_ca_file = "certs/switch-ca.crt"
allowed_subjects = ["switch-1"]
"""

FULL = """
[link]
host = "127.0.0.1"
port = 18583
max_links = 4
max_handshakes = 2
handshake_timeout_s = 5
read_timeout_s = 2.5
idle_interval_s = 30
echo_timeout_s = 10
echo_max_missed = 3
max_in_flight = 256
answer_budget_s = 8
shutdown_grace_s = 0

[tls]
cert_file = "certs/hub.crt"
key_file = "certs/hub.key"
client_ca_file = "certs/switch-ca.crt"
allowed_subjects = ["switch-1", "CN=switch-2,O=National Switch"]
min_version = "1.3"

[admin]
host = "0.0.0.0"
port = 9200
enabled = false

[log]
format = "console"
level = "debug"

[journal]
kind = "postgresql"
dsn = "postgresql://hub:${JOURNAL_PASSWORD}@db/billhub"
group_commit_ms = 0

[[billers]]
code = "0011"
name = "Damascus Electricity"
kind = "rest"
budget_s = 6
max_concurrency = 8
rest = { base_url = "https://billing.damascus.example/api/", token = "${DAMASCUS_TOKEN}" }

[[billers]]
code = "12"
name = "Aleppo Electricity"
kind = "batch"
batch = { inbox = "exchange/aleppo/in", outbox = "/srv/exchange/aleppo/out" }

[[billers]]
code = "13"
name = "Homs Electricity"
kind = "database"

[billers.database]
dsn = "${HOMS_DSN}"
queries = { open_bills = "SELECT 1 WHERE :account = :account" }
"""

ENV = {"JOURNAL_PASSWORD": "pw-1", "DAMASCUS_TOKEN": "tok-secret", "HOMS_DSN": "mysql://x"}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "certs").mkdir()
    for name in ("hub.crt", "hub.key", "switch-ca.crt"):
        (tmp_path / "certs" / name).write_text("placeholder\n")
    return tmp_path


def parse(text: str, base: Path, env: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), base_dir=base, env=ENV if env is None else env)


def error(text: str, base: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, base, env)
    assert "\n" not in str(info.value)
    return info.value


# ------------------------------------------------------------------------ good files


def test_allowed_sources_are_networks(base: Path) -> None:
    cfg = parse(
        MINIMAL + '[link]\nallowed_sources = ["10.1.2.0/24", "192.0.2.7", "2001:db8::/32"]\n', base
    )
    assert cfg.link.allowed_sources == ("10.1.2.0/24", "192.0.2.7/32", "2001:db8::/32")
    err = error(MINIMAL + '[link]\nallowed_sources = ["10.1.2.300/24"]\n', base)
    assert err.key == "link.allowed_sources[0]"
    err = error(MINIMAL + "[link]\nallowed_sources = []\n", base)
    assert err.key == "link.allowed_sources"


def test_minimal_file_gets_every_default(base: Path) -> None:
    cfg = parse(MINIMAL, base)
    assert cfg.link == LinkConfig()
    assert cfg.link.host == "0.0.0.0"
    assert cfg.link.port == 8583
    assert cfg.link.spec_file is None
    assert cfg.link.max_links == 16
    assert cfg.link.max_handshakes == 64
    assert cfg.link.max_handshakes_per_source == 16
    assert cfg.link.hello_timeout_s == 2.0
    assert cfg.link.handshake_timeout_s == 10.0
    assert cfg.link.sign_on_timeout_s == 10.0
    assert cfg.link.allowed_sources is None
    assert cfg.link.read_timeout_s == 5.0
    assert cfg.link.idle_interval_s == 30.0
    assert cfg.link.echo_timeout_s == 10.0
    assert cfg.link.echo_max_missed == 3
    assert cfg.link.max_in_flight == 512
    assert cfg.link.answer_budget_s == 10.0
    assert cfg.link.shutdown_grace_s == 10.0
    assert cfg.tls.cert_file == base / "certs" / "hub.crt"
    assert cfg.tls.key_file == base / "certs" / "hub.key"
    assert cfg.tls.client_ca_file == base / "certs" / "switch-ca.crt"
    assert cfg.tls.allowed_subjects == ("switch-1",)
    assert cfg.tls.min_version == "1.2"
    assert (cfg.admin.host, cfg.admin.port, cfg.admin.enabled) == ("127.0.0.1", 9100, True)
    assert (cfg.log.format, cfg.log.level) == ("json", "info")
    assert cfg.journal == JournalConfig(kind="sqlite", path=base / "billhub.db")
    assert cfg.journal.group_commit_ms == 2.0
    assert cfg.billers == ()


def test_full_file(base: Path) -> None:
    cfg = parse(FULL, base)
    assert cfg.link.port == 18583
    assert cfg.link.read_timeout_s == 2.5
    assert isinstance(cfg.link.handshake_timeout_s, float)
    assert cfg.link.shutdown_grace_s == 0.0
    assert cfg.tls.min_version == "1.3"
    assert cfg.tls.allowed_subjects == ("switch-1", "CN=switch-2,O=National Switch")
    assert cfg.admin.enabled is False
    assert (cfg.log.format, cfg.log.level) == ("console", "debug")
    assert cfg.journal.kind == "postgresql"
    assert cfg.journal.dsn == "postgresql://hub:pw-1@db/billhub"
    assert cfg.journal.path is None
    assert cfg.journal.group_commit_s == 0.0

    rest, batch, db = cfg.billers
    assert (rest.code, rest.kind, rest.budget_s, rest.max_concurrency) == ("0011", "rest", 6.0, 8)
    assert rest.rest == RestSettings("https://billing.damascus.example/api", "tok-secret")
    assert rest.batch is None and rest.database is None
    assert batch.budget_s == 8.0  # link.answer_budget_s
    assert batch.max_concurrency == 32
    assert batch.batch is not None
    assert batch.batch.inbox == base / "exchange" / "aleppo" / "in"
    assert batch.batch.outbox == Path("/srv/exchange/aleppo/out")
    assert db.database is not None
    assert db.database.dsn == "mysql://x"
    assert dict(db.database.queries) == {"open_bills": "SELECT 1 WHERE :account = :account"}
    assert cfg.biller("12") is batch
    assert cfg.biller("012") is None


def test_config_is_frozen(base: Path) -> None:
    cfg = parse(MINIMAL, base)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.link.port = 1  # type: ignore[misc]


def test_secrets_stay_out_of_repr(base: Path) -> None:
    cfg = parse(FULL, base)
    text = repr(cfg)
    for secret in ENV.values():
        assert secret not in text
    assert "tok-secret" not in repr(RestSettings("https://x", "tok-secret"))
    assert "mysql://x" not in repr(DatabaseSettings("mysql://x"))


def test_env_reference_whole_part_and_escaped(base: Path) -> None:
    text = MINIMAL.replace(
        '["switch-1"]', '["${SWITCH}", "CN=${SWITCH}-b,O=${ORG}", "$${LITERAL}"]'
    )
    cfg = parse(text, base, {"SWITCH": "switch-7", "ORG": "National Switch"})
    assert cfg.tls.allowed_subjects == (
        "switch-7",
        "CN=switch-7-b,O=National Switch",
        "${LITERAL}",
    )


def test_load_config_resolves_paths_against_the_file_directory(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = base / "billhub.toml"
    path.write_text(MINIMAL)
    monkeypatch.chdir("/")
    cfg = load_config(path)
    assert cfg.tls.cert_file == base / "certs" / "hub.crt"
    assert cfg.journal.path == base / "billhub.db"


def test_load_config_reads_os_environ(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = base / "billhub.toml"
    path.write_text(MINIMAL.replace('["switch-1"]', '["${BILLHUB_TEST_SUBJECT}"]'))
    monkeypatch.setenv("BILLHUB_TEST_SUBJECT", "switch-env")
    assert load_config(path).tls.allowed_subjects == ("switch-env",)
    assert load_config(path, env={"BILLHUB_TEST_SUBJECT": "x"}).tls.allowed_subjects == ("x",)


def test_example_file_in_repo_parses(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "billhub.example.toml"
    text = example.read_text(encoding="utf-8")
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("hub.crt", "hub.key", "switch-ca.crt"):
        (certs / name).write_text("placeholder\n")
    env = dict(os.environ) | {"BILLER_0010_TOKEN": "t", "BILLER_0030_DSN": "postgresql://x"}
    cfg = parse_config(text, base_dir=tmp_path, env=env)
    assert cfg.tls.client_ca_file == certs / "switch-ca.crt"
    assert cfg.billers


# ------------------------------------------------------------------------ bad files


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[link]\nidle_interval = 30\n", "link.idle_interval"),
        ("[links]\nport = 1\n", "links"),
        ("[admin]\nbind = '1.2.3.4'\n", "admin.bind"),
        ("[log]\ncolour = true\n", "log.colour"),
        ("[journal]\nkind = 'sqlite'\nwal = true\n", "journal.wal"),
        ("debug = true\n", "debug"),
    ],
)
def test_unknown_keys_are_errors(base: Path, extra: str, key: str) -> None:
    # Top-level keys must precede the first table header in TOML.
    text = extra + MINIMAL if extra.startswith("debug") else MINIMAL + extra
    err = error(text, base)
    assert err.key == key
    assert err.reason == "unknown key"


def test_unknown_key_in_tls_and_biller(base: Path) -> None:
    assert error(MINIMAL + "ciphers = 'ALL'\n", base).key == "tls.ciphers"
    biller = """
    [[billers]]
    code = "10"
    name = "x"
    kind = "rest"
    timeout = 3
    rest = { base_url = "http://x", token = "t" }
    """
    assert error(MINIMAL + biller, base).key == "billers[0].timeout"
    biller = biller.replace("timeout = 3\n", "").replace('token = "t"', 'token = "t", tokn = 1')
    assert error(MINIMAL + biller, base).key == "billers[0].rest.tokn"


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        (
            "[link]\nport = '8583'\n",
            "link.port",
            "must be an integer from 0 to 65535, not a string",
        ),
        (
            "[link]\nidle_interval_s = '30'\n",
            "link.idle_interval_s",
            "must be a number > 0, not a string",
        ),
        (
            "[link]\nidle_interval_s = true\n",
            "link.idle_interval_s",
            "must be a number > 0, not a boolean",
        ),
        ("[link]\nmax_links = 2.5\n", "link.max_links", "must be an integer >= 1, not a number"),
        ("[link]\nhost = 1\n", "link.host", "must be a string, not an integer"),
        ("[admin]\nenabled = 'yes'\n", "admin.enabled", "must be true or false, not a string"),
        ("link = 5\n", "link", "must be a table, not an integer"),
    ],
)
def test_wrong_types(base: Path, extra: str, key: str, reason: str) -> None:
    text = extra + MINIMAL if extra.startswith("link =") else MINIMAL + extra
    err = error(text, base)
    assert (err.key, err.reason) == (key, reason)


def test_wrong_types_in_tls(base: Path) -> None:
    err = error(MINIMAL.replace('["switch-1"]', '"switch-1"'), base)
    assert err.key == "tls.allowed_subjects"
    err = error(MINIMAL.replace('["switch-1"]', '["switch-1", 7]'), base)
    assert err.key == "tls.allowed_subjects[1]"
    err = error(MINIMAL + "min_version = 1.2\n", base)
    assert err.key == "tls.min_version"


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[link]\nport = 65536\n", "link.port"),
        ("[link]\nport = -1\n", "link.port"),
        ("[link]\nidle_interval_s = 0\n", "link.idle_interval_s"),
        ("[link]\nhandshake_timeout_s = -1\n", "link.handshake_timeout_s"),
        ("[link]\nread_timeout_s = nan\n", "link.read_timeout_s"),
        ("[link]\necho_timeout_s = inf\n", "link.echo_timeout_s"),
        ("[link]\necho_max_missed = 0\n", "link.echo_max_missed"),
        ("[link]\nmax_links = 0\n", "link.max_links"),
        ("[link]\nmax_handshakes = 0\n", "link.max_handshakes"),
        ("[link]\nmax_in_flight = 255\n", "link.max_in_flight"),
        ("[link]\nanswer_budget_s = 30\n", "link.answer_budget_s"),
        ("[link]\nshutdown_grace_s = -0.5\n", "link.shutdown_grace_s"),
        ("[admin]\nport = 70000\n", "admin.port"),
        ("[log]\nlevel = 'verbose'\n", "log.level"),
        ("[log]\nformat = 'text'\n", "log.format"),
        ("[journal]\nkind = 'mysql'\n", "journal.kind"),
        ("[journal]\ngroup_commit_ms = -1\n", "journal.group_commit_ms"),
        ("[journal]\nkind = 'sqlite'\ndsn = 'postgresql://x'\n", "journal.dsn"),
        ("[journal]\nkind = 'postgresql'\ndsn = 'x'\npath = 'a.db'\n", "journal.path"),
    ],
)
def test_out_of_range(base: Path, extra: str, key: str) -> None:
    assert error(MINIMAL + extra, base).key == key


def test_out_of_range_reasons_say_what_is_allowed(base: Path) -> None:
    assert error(MINIMAL + "[link]\nidle_interval_s = 0\n", base).reason == "must be a number > 0"
    assert (
        error(MINIMAL + "[link]\nmax_in_flight = 10\n", base).reason == "must be an integer >= 256"
    )
    assert error(MINIMAL + "min_version = '1.1'\n", base).reason == 'must be one of "1.2", "1.3"'


def test_tls_min_version_out_of_range(base: Path) -> None:
    assert error(MINIMAL + "min_version = '1.1'\n", base).key == "tls.min_version"


@pytest.mark.parametrize("missing", ["cert_file", "key_file", "client_ca_file", "allowed_subjects"])
def test_missing_required_tls_key(base: Path, missing: str) -> None:
    text = "\n".join(line for line in MINIMAL.splitlines() if not line.startswith(missing))
    err = error(text, base)
    assert (err.key, err.reason) == (f"tls.{missing}", "is required")


def test_missing_tls_section_and_empty_allow_list(base: Path) -> None:
    assert error("[link]\nport = 1\n", base).key == "tls"
    err = error(MINIMAL.replace('["switch-1"]', "[]"), base)
    assert err.key == "tls.allowed_subjects"
    assert error(MINIMAL.replace('["switch-1"]', '[" "]'), base).key == "tls.allowed_subjects[0]"


def test_missing_env_variable_names_key_and_variable(base: Path) -> None:
    err = error(FULL, base, {"DAMASCUS_TOKEN": "t", "HOMS_DSN": "x"})
    assert err.key == "journal.dsn"
    assert err.reason == "environment variable JOURNAL_PASSWORD is not set"
    err = error(FULL, base, {"JOURNAL_PASSWORD": "p", "HOMS_DSN": "x"})
    assert err.key == "billers[0].rest.token"
    assert "DAMASCUS_TOKEN" in err.reason
    err = error(FULL, base, {"JOURNAL_PASSWORD": "p", "DAMASCUS_TOKEN": "t"})
    assert err.key == "billers[2].database.dsn"
    assert "HOMS_DSN" in err.reason


def test_malformed_env_references(base: Path) -> None:
    err = error(MINIMAL.replace('"switch-1"', '"${UNCLOSED"'), base)
    assert err.key == "tls.allowed_subjects[0]"
    err = error(MINIMAL.replace('"switch-1"', '"${1BAD}"'), base)
    assert err.key == "tls.allowed_subjects[0]"


def test_env_variable_set_but_empty_is_not_a_value(base: Path) -> None:
    err = error(FULL, base, ENV | {"HOMS_DSN": ""})
    assert (err.key, err.reason) == ("billers[2].database.dsn", "must not be empty")


def test_missing_files(base: Path) -> None:
    (base / "certs" / "hub.key").unlink()
    err = error(MINIMAL, base)
    assert err.key == "tls.key_file"
    assert err.reason == f"file not found: {base / 'certs' / 'hub.key'}"
    err = error(MINIMAL.replace("certs/hub.key", "certs"), base)
    assert err.key == "tls.key_file"
    assert err.reason.startswith("not a regular file")


def test_missing_spec_file(base: Path) -> None:
    err = error(MINIMAL + "[link]\nspec_file = 'specs/none.toml'\n", base)
    assert err.key == "link.spec_file"
    assert err.reason.startswith("file not found: ")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.key == "config"
    assert info.value.reason == f"file not found: {tmp_path / 'nope.toml'}"


def test_invalid_toml_names_the_source(base: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[link\n", base_dir=base, env={}, source="billhub.toml")
    assert info.value.key == "billhub.toml"
    assert info.value.reason.startswith("not valid TOML")


def _biller(**fields: str) -> str:
    values = {
        "code": '"10"',
        "name": '"North"',
        "kind": '"rest"',
        "rest": '{ base_url = "https://x", token = "t" }',
    } | fields
    body = "".join(f"{k} = {v}\n" for k, v in values.items() if v != "DROP")
    return "[[billers]]\n" + body


def test_duplicate_biller_code(base: Path) -> None:
    text = MINIMAL + _biller() + _biller(name='"Other"') + _biller(code='"10"')
    err = error(text, base)
    assert err.key == "billers[1].code"
    assert err.reason == "duplicate biller code 10 (also billers[0])"


def test_biller_codes_keep_leading_zeros_and_are_distinct(base: Path) -> None:
    cfg = parse(MINIMAL + _biller(code='"010"') + _biller(code='"10"'), base)
    assert [b.code for b in cfg.billers] == ["010", "10"]


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"code": "10"}, "billers[0].code"),
        ({"code": '"1x"'}, "billers[0].code"),
        ({"code": '"123456789012"'}, "billers[0].code"),
        ({"code": "DROP"}, "billers[0].code"),
        ({"name": "DROP"}, "billers[0].name"),
        ({"kind": "DROP"}, "billers[0].kind"),
        ({"kind": '"soap"'}, "billers[0].kind"),
        ({"budget_s": "11"}, "billers[0].budget_s"),
        ({"budget_s": "0"}, "billers[0].budget_s"),
        ({"max_concurrency": "0"}, "billers[0].max_concurrency"),
        ({"rest": "DROP"}, "billers[0].rest"),
        ({"batch": '{ inbox = "i", outbox = "o" }'}, "billers[0].batch"),
        ({"rest": '{ token = "t" }'}, "billers[0].rest.base_url"),
        ({"rest": '{ base_url = "ftp://x", token = "t" }'}, "billers[0].rest.base_url"),
        ({"rest": '{ base_url = "https://x" }'}, "billers[0].rest.token"),
        (
            {"rest": '{ base_url = "https://x", token = "t", cert_file = "certs/hub.crt" }'},
            "billers[0].rest.key_file",
        ),
        (
            {"rest": '{ base_url = "https://x", token = "t", ca_file = "certs/ca.pem" }'},
            "billers[0].rest.ca_file",
        ),
        (
            {"kind": '"batch"', "rest": "DROP", "batch": '{ inbox = "i" }'},
            "billers[0].batch.outbox",
        ),
        ({"kind": '"database"', "rest": "DROP", "database": "{ }"}, "billers[0].database.dsn"),
        (
            {
                "kind": '"database"',
                "rest": "DROP",
                "database": '{ dsn = "x", queries = { find_bills = "SELECT 1" } }',
            },
            "billers[0].database.queries.find_bills",
        ),
    ],
)
def test_bad_billers(base: Path, fields: dict[str, str], key: str) -> None:
    assert error(MINIMAL + _biller(**fields), base).key == key


def test_biller_budget_may_equal_but_not_exceed_answer_budget(base: Path) -> None:
    cfg = parse(MINIMAL + _biller(budget_s="10"), base)
    assert cfg.billers[0].budget_s == 10.0
    err = error(MINIMAL + _biller(budget_s="10.5"), base)
    assert err.reason == "must be a number > 0 and <= 10"


def test_billers_must_be_an_array_of_tables(base: Path) -> None:
    assert error("billers = 3\n" + MINIMAL, base).key == "billers"


def test_biller_rest_with_mutual_tls_files(base: Path) -> None:
    rest = (
        '{ base_url = "https://x", token = "t", cert_file = "certs/hub.crt",'
        ' key_file = "certs/hub.key", ca_file = "certs/switch-ca.crt" }'
    )
    cfg = parse(MINIMAL + _biller(rest=rest), base)
    settings = cfg.billers[0].rest
    assert settings is not None
    assert settings.cert_file == base / "certs" / "hub.crt"
    assert settings.ca_file == base / "certs" / "switch-ca.crt"


def test_requests_handover_needs_a_rest_biller(tmp_path: Path) -> None:
    from tests.webharness import CONFIG

    text = CONFIG.format(
        certs=tmp_path,
        journal='path = "j.db"',
        a="100001",
        b="100003",
        batch="100002",
        url_a="http://127.0.0.1:1",
        url_b="http://127.0.0.1:2",
        token="t",
        client_limit=5,
        account_limit=5,
    )
    for name in ("hub.crt", "hub.key", "switch-ca.crt"):
        (tmp_path / name).write_text("x")
    bad = text.replace(
        '[requests.companies."100001"]\nhandover = "rest"',
        '[requests.companies."100002"]\nhandover = "rest"',
    )
    with pytest.raises(ConfigError) as e:
        parse_config(bad, base_dir=tmp_path, env={})
    assert e.value.key == "requests.companies.100002.handover"
    with pytest.raises(ConfigError) as e:
        parse_config(
            text.replace('handover = "rest"', 'handover = "fax"'), base_dir=tmp_path, env={}
        )
    assert e.value.key == "requests.companies.100001.handover"
