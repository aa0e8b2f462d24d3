"""Fuzzing the four ways data gets in: CSV imports, campaign files, templates (and the
contact data rendered through them) and webhook bodies. Whatever arrives, the answer is the
result or a clear error naming where the problem is; never a traceback, never half a write.

Deterministic (`derandomize`) and small enough for every CI run; the strategies live in
`fuzz_strategies.py`. The regression cases next to each property are what fuzzing found."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import shutil
import sqlite3
import stat
import time
import traceback
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fuzz_strategies import (
    any_csv_bytes,
    csv_bytes,
    data_text,
    optional_text,
    template_source,
    webhook_body,
    yaml_bytes,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2 import TemplateError
from markupsafe import escape
from sqlalchemy import create_engine, func, select
from starlette.testclient import TestClient

from abm.webhooks import SIGNATURE, TIMESTAMP, create_app
from core.campaign_file import CampaignFile, Step, load_campaign
from core.errors import ConfigError
from core.settings import Settings, get_settings, reset_settings
from models.db import get_engine, migrate
from models.store import upsert_accounts, upsert_contacts
from models.tables import Account, Contact, EngagementEvent, Suppression
from stages.content.compose import Composer
from stages.content.rendering import (
    Sender,
    TemplateKey,
    build_message,
    header_text,
    render_context,
    render_email_parts,
    template_environment,
    template_names,
)
from stages.delivery.preview import validate_campaign
from stages.importing import (
    ImportFileError,
    import_file,
    parse_accounts,
    parse_contacts,
    parse_suppressions,
    read_csv,
    rejects_path,
    warnings_path,
    write_rejects,
)


def _examples(n: int) -> int:
    """`n` for CI; ABM_FUZZ_SCALE=50 pytest tests/test_fuzz_inputs.py for a long hunt."""
    return n * int(os.environ.get("ABM_FUZZ_SCALE", "1"))


FUZZ = settings(
    max_examples=_examples(60),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KNOWN = {"acme.example", "globex.example"}
_counter = itertools.count()


def _fresh(directory: Path, name: str) -> Path:
    """A new path per example: hypothesis runs many examples in one test's tmp_path."""
    folder = directory / f"ex{next(_counter)}"
    folder.mkdir(parents=True)
    return folder / name


# --------------------------------------------------------------------------- CSV import


def _physical_lines(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") + 1


@FUZZ
@given(data=any_csv_bytes)
def test_any_csv_file_is_read_or_refused_naming_the_file(tmp_path: Path, data: bytes) -> None:
    """Every row read ends up a record or a reject with its line and a one-line reason; a
    file that cannot be read at all is an ImportFileError that starts with the file name.
    The rejects file reads back as exactly the rejected rows, so it can be fixed and
    imported again."""
    path = _fresh(tmp_path, "upload.csv")
    path.write_bytes(data)
    try:
        table = read_csv(path)
    except ImportFileError as exc:
        assert str(exc).startswith(str(path))
        return
    parsers = {
        "accounts": parse_accounts,
        "contacts": lambda t: parse_contacts(t, KNOWN),
        "suppressions": parse_suppressions,
    }
    for parse in parsers.values():
        try:
            result = parse(table)
        except ImportFileError as exc:
            assert str(exc).startswith(str(path))
            continue
        assert result.rows_read == (
            len(result.records) + result.duplicates_merged + len(result.rejects)
        )
        for reject in result.rejects:
            assert 1 <= reject.line <= _physical_lines(data)
            assert reject.reason and reject.reason == " ".join(reject.reason.split())
        kept = {n for lines in result.record_lines for n in lines}
        assert {w.line for w in result.warnings} <= kept
        written = write_rejects(path, table, result.rejects)
        if not result.rejects:
            assert written is None and not rejects_path(path).exists()
            continue
        again = read_csv(written)
        assert len(again.rows) + len(again.rejects) == len(result.rejects)
        assert again.header[: len(table.header)] == table.header


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file with two accounts and a contact, copied per example so every
    example starts from the same database."""
    path = tmp_path_factory.mktemp("fuzzdb") / "template.db"
    url = f"sqlite:///{path}"
    engine = get_engine(url)
    migrate(engine)
    upsert_accounts(
        engine,
        [
            {"domain": d, "name": d.split(".")[0].title(), "attributes": {}, "technologies": []}
            for d in sorted(KNOWN)
        ],
    )
    upsert_contacts(
        engine,
        [{"email": "old@acme.example", "account_domain": "acme.example", "attributes": {}}],
    )
    engine.dispose()
    get_engine.cache_clear()
    return path


def _snapshot(path: Path) -> dict[str, list[tuple]]:
    """Every row of the tables an import writes, without the update timestamps."""
    with sqlite3.connect(path) as connection:
        snapshot = {}
        for table, key in (("account", "domain"), ("contact", "email"), ("suppression", "value")):
            cursor = connection.execute(f"SELECT * FROM {table} ORDER BY {key}")
            names = [d[0] for d in cursor.description]
            snapshot[table] = [
                tuple(v for n, v in zip(names, row, strict=True) if n != "updated_at")
                for row in cursor
            ]
    return snapshot


KIND_TABLE = {"accounts": "account", "contacts": "contact", "suppressions": "suppression"}


@FUZZ
@given(
    kind=st.sampled_from(sorted(KIND_TABLE)),
    data=st.one_of(
        csv_bytes(["domain", "name", "employees", "tier", "country", "notes"]),
        csv_bytes(["email", "first_name", "title", "account_domain", "timezone", "consent"]),
        csv_bytes(["email", "domain", "channel", "reason"]),
        st.binary(max_size=200),
    ),
)
def test_an_import_writes_exactly_the_good_rows_or_nothing(
    tmp_path: Path, template_db: Path, kind: str, data: bytes
) -> None:
    """A file that cannot be imported leaves the database as it was (and no rejects file);
    otherwise the good rows are in, the other tables are untouched and the counts add up."""
    database = _fresh(tmp_path, "abm.db")
    shutil.copy(template_db, database)
    source = database.with_name(f"{kind}.csv")
    source.write_bytes(data)
    before = _snapshot(database)
    engine = create_engine(f"sqlite:///{database}")
    try:
        report = import_file(kind, source, engine, get_settings())
    except ImportFileError as exc:
        assert str(exc).startswith(str(source))
        assert _snapshot(database) == before
        assert not rejects_path(source).exists()
        assert not warnings_path(source).exists()
        return
    finally:
        engine.dispose()
    after = _snapshot(database)
    table = KIND_TABLE[kind]
    for other in set(after) - {table}:
        if kind == "suppressions" and other == "contact":  # may now be `suppressed`
            assert len(after[other]) == len(before[other])
        else:
            assert after[other] == before[other]
    changed = set(after[table]) - set(before[table])
    assert len(after[table]) == len(before[table]) + report.imported
    assert len(changed) == report.imported + report.updated
    assert (report.rejects_path is not None) == bool(report.rejects)
    for reject in report.rejects:
        assert 1 <= reject.line <= _physical_lines(data) and reject.reason
    assert (report.warnings_path is not None) == bool(report.warned)
    rejected = {r.line for r in report.rejects}
    for warning in report.warnings:  # on a row that went in, never on a rejected one
        assert 1 <= warning.line <= _physical_lines(data) and warning.line not in rejected
        assert warning.field and warning.action == " ".join(warning.action.split())
    if report.warnings_path is not None:
        again = read_csv(report.warnings_path)
        assert again.header == ["line", "field", "value", "action"]
        assert len(again.rows) == report.warning_count and not again.rejects


@settings(
    max_examples=_examples(20),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    cells=st.lists(
        st.sampled_from(["[/b]", "[red]x[/red]", "[link=https://evil.example]x", "\\[", "["])
        | data_text,
        min_size=2,
        max_size=4,
    )
)
def test_the_import_command_prints_every_reject_and_its_counts(
    cells: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path_factory: pytest.TempPathFactory,
    template_db: Path,
) -> None:
    """Rows whose cells look like rich markup (`[/b]` crashed the command) are printed as
    they are, and the last line is always the counts."""
    from abm import cli

    folder = tmp_path_factory.mktemp("cli")
    source = folder / "accounts.csv"
    lines = ["domain,name"] + [f"{json.dumps(c)},{json.dumps(c)}" for c in cells]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copy(template_db, folder / "abm.db")
    os.environ["ABM_DATABASE_URL"] = f"sqlite:///{folder / 'abm.db'}"
    reset_settings()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("sys.argv", ["abm", "import", "accounts", str(source)])
            with pytest.raises(SystemExit) as exited:
                cli.main()
    finally:
        del os.environ["ABM_DATABASE_URL"]
        reset_settings()
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if exited.value.code == 2:  # the file as a whole cannot be imported
        assert captured.err.startswith("error: ") and not captured.out
        return
    assert exited.value.code in (0, 1), captured.err
    counts = re.fullmatch(
        r"imported=(\d+) updated=(\d+) rejected=(\d+) warned=(\d+)", captured.out.splitlines()[-1]
    )
    assert counts, captured.out
    printed = [line for line in captured.err.splitlines() if line.startswith(f"{source}:")]
    rejects = [line for line in printed if ": warning: " not in line]
    assert len(rejects) == int(counts[3])
    assert (len(printed) > len(rejects)) == (int(counts[4]) > 0)


def test_a_rejects_file_is_never_more_readable_than_its_source(tmp_path: Path) -> None:
    source = tmp_path / "contacts.csv"
    source.write_text("email,first_name\nnot-an-email,Ana\n", encoding="utf-8")
    source.chmod(0o600)
    table = read_csv(source)
    written = write_rejects(source, table, parse_contacts(table, KNOWN).rejects)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


def test_a_rejects_file_keeps_an_unusual_delimiter_so_it_imports_again(tmp_path: Path) -> None:
    source = tmp_path / "accounts.csv"
    source.write_text("sep=|\ndomain|name\nnot a domain|Acme\n", encoding="utf-8")
    table = read_csv(source)
    written = write_rejects(source, table, parse_accounts(table).rejects)
    again = read_csv(written)
    assert again.delimiter == "|" and again.header == ["domain", "name"]
    assert again.rows[0].values == {"domain": "not a domain", "name": "Acme"}


def test_an_unnamed_column_keeps_its_name_through_the_rejects_file(tmp_path: Path) -> None:
    """It came back as column_4 (its place after `line` and `reason`), not column_2."""
    source = tmp_path / "contacts.csv"
    source.write_text("email,\nnot-an-email,x\n", encoding="utf-8")
    table = read_csv(source)
    again = read_csv(write_rejects(source, table, parse_contacts(table, KNOWN).rejects))
    assert table.header == again.header == ["email", "column_2"]


# --------------------------------------------------------------------------- campaign files


def _one_line_each(message: str, path: Path) -> None:
    for line in message.splitlines():
        assert line.startswith(f"{path}"), message


@settings(
    max_examples=_examples(80),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=yaml_bytes)
def test_any_campaign_file_loads_or_fails_naming_file_and_line(tmp_path: Path, data: bytes) -> None:
    path = _fresh(tmp_path, "campaign.yaml")
    path.write_bytes(data)
    try:
        load_campaign(path)
    except ConfigError as exc:
        _one_line_each(str(exc), path)


BILLION_LAUGHS = "\n".join(
    [
        "name: laughs",
        "a: &a [x, x, x, x, x, x, x, x, x, x]",
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]",
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]",
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]",
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]",
        "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]",
        "steps: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]",
    ]
).encode()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"name: x\nsteps: [{id: intro}]\nsending_window: {timezone: America}\n", ":3:"),
        (
            b"name: x\nsteps: [{id: intro}]\nsending_window: {timezone: " + b"a" * 300 + b"}\n",
            ":3:",
        ),
        (b"name: x\n\nsteps: \xff\xfe\n", ":3: not UTF-8"),
        ("name: x\nsteps: [{id: intro}]\n".encode("utf-16"), ":1: not UTF-8"),
        (b"[" * 600 + b"]" * 600, "nested too deeply"),
        (b"name: x\nsteps: [{id: intro}]\nx: \x00\n", ":3: not valid YAML: character U+0000"),
        (BILLION_LAUGHS, "aliases"),
        (b'name: x\nsteps: [{id: intro, "a\\r\\nb": 1}]\n', "steps[0].'a\\r\\nb'"),
        ('name: x\nsender: "Zoë <z@dü.example>"\nsteps: [{id: t}]\n'.encode(), ":2: sender"),
    ],
    ids=[
        *("tz-folder", "tz-too-long", "latin-1", "utf-16", "deep", "nul", "laughs", "key-crlf"),
        "non-ascii-sender",
    ],
)
def test_campaign_files_that_crashed_the_loader_now_get_a_clear_error(
    tmp_path: Path, data: bytes, expected: str
) -> None:
    path = tmp_path / "campaign.yaml"
    path.write_bytes(data)
    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        load_campaign(path)
    assert expected in str(raised.value)
    _one_line_each(str(raised.value), path)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ABM_SENDER", "Demo <m@démo.example>"), ("ABM_PUBLIC_URL", "https://ü.example")],
)
def test_settings_that_made_every_message_fail_are_refused_up_front(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """They went into headers as they were and every send failed with UnicodeEncodeError."""
    monkeypatch.setenv(variable, value)
    reset_settings()
    with pytest.raises(ConfigError, match=variable):
        get_settings()


# --------------------------------------------------------------------------- templates

SENDER = Sender.parse("Demo Co <marketing@demo.example>")
HEADERS = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "x-abm-campaign",
    "x-abm-step",
    "x-abm-tracking",
    "mime-version",
    "content-type",
]
ATTRIBUTION = ("x-abm-step", "x-abm-tracking")
ECHO = {
    "subject.j2": "Hi {{ contact.first_name }} at {{ account.name }}",
    "body.html.j2": (
        "<p>{{ contact.first_name }}|{{ contact.last_name }}|{{ contact.title }}|"
        "{{ account.name }}</p><p>{{ footer.postal_address }}</p>"
        '<a href="{{ footer.unsubscribe_url }}">unsubscribe</a>'
    ),
    "body.txt.j2": (
        "{{ contact.first_name }}|{{ contact.last_name }}|{{ contact.title }}|"
        "{{ account.name }}\n{{ footer.unsubscribe_url }}\n"
    ),
}


def _templates(folder: Path, files: dict[str, str | None]) -> Path:
    for name, source in files.items():
        if source is None:
            continue
        path = folder / "email" / "t" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return folder


def _parse_back(raw: bytes):  # type: ignore[no-untyped-def]
    parsed = message_from_bytes(raw, policy=default)
    names = [name.lower() for name in parsed]
    # a composer adds the attribution headers; a message built directly has none
    assert names in (HEADERS, [name for name in HEADERS if name not in ATTRIBUTION])
    assert not parsed.defects
    assert all(not part.defects for part in parsed.walk())
    head = raw.split(b"\n\n", 1)[0]
    assert all(len(line) <= 998 for line in head.split(b"\n"))
    return parsed


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _row(**data: object) -> dict[str, object]:
    return {
        "delivery_id": 7,
        "contact_id": 42,
        "email": "ana@acme.example",
        "first_name": "Ana",
        "last_name": "Núñez",
        "title": "CFO",
        "seniority": "c_level",
        "function": "finance",
        "role": "approver",
        "domain": "acme.example",
        "account_name": "Acme",
        "industry": "Manufacturing",
        "tier": 1,
        "country": "DE",
        "employees": 900,
        "variant": None,
        **data,
    }


@pytest.fixture(scope="module")
def echo_composer(tmp_path_factory: pytest.TempPathFactory) -> Composer:
    """The real composer, on templates that print every contact field they are given."""
    folder = _templates(tmp_path_factory.mktemp("echo"), ECHO)
    settings_ = Settings(templates_dir=folder, secret_key="fuzz-key")
    campaign = CampaignFile(name="Fuzz", steps=[Step(id="t")])
    return Composer(settings_, "fuzz", 1, campaign, campaign.steps[0])


@FUZZ
@given(
    first=optional_text,
    last=optional_text,
    title=optional_text,
    company=data_text,
    industry=optional_text,
    role=st.none() | st.sampled_from(["approver", "../../etc", "_", ""]),
)
def test_contact_data_is_printed_never_run_and_never_starts_a_header(
    echo_composer: Composer,
    first: str | None,
    last: str | None,
    title: str | None,
    company: str,
    industry: str | None,
    role: str | None,
) -> None:
    row = _row(
        first_name=first,
        last_name=last,
        title=title,
        account_name=company,
        industry=industry,
        role=role,
    )
    message = echo_composer.email(row)
    parsed = _parse_back(message.as_bytes())
    assert parsed["To"].addresses[0].addr_spec == "ana@acme.example"
    assert parsed["Message-ID"] == echo_composer.message_id(7, 42)
    shown = company or "acme.example"  # no name: the domain stands in
    subject = header_text(f"Hi {first} at {shown}")  # None prints None
    assert parsed["Subject"] == subject
    text = _lines(parsed.get_body(("plain",)).get_content())
    fields = [str(first), str(last), str(title), shown]
    assert text.startswith(_lines("|".join(fields) + "\n"))
    html = parsed.get_body(("html",)).get_content()
    assert "<script" not in html.lower()  # only data could have put one there
    for value in fields:
        assert str(escape(_lines(value))) in html or "\x00" in value


def test_template_syntax_in_data_stays_literal(echo_composer: Composer) -> None:
    code = "{{ 7*7 }}{% for x in range(3) %}{{ x }}{% endfor %}"
    message = echo_composer.email(_row(first_name=code, account_name=code))
    parsed = _parse_back(message.as_bytes())
    for part in ("plain", "html"):
        body = parsed.get_body((part,)).get_content()
        assert code in body and "49" not in body and "012" not in body
    assert code in parsed["Subject"]


def _from_a_template(exc: BaseException) -> bool:
    """True when the error was raised by template code (a frame of a `.j2` file): the
    template author's `{{ 1/0 }}`, not a failure of ours."""
    frames = traceback.extract_tb(exc.__traceback__)
    return any(frame.filename.endswith(".j2") for frame in frames)


SAMPLE_CONTEXT = render_context(
    {"email": "a@acme.example", "first_name": "Ana", "last_name": None, "title": None},
    {"name": "Acme", "domain": "acme.example", "industry": None, "tier": 1},
    SENDER,
    {"guide": "https://demo.example/guide"},
    {"postal_address": "1 Example St", "unsubscribe_url": "https://u.example/t"},
)


@FUZZ
@given(subject=template_source, html=template_source, text=st.none() | template_source)
def test_any_template_renders_or_fails_with_a_template_error(
    tmp_path: Path, subject: str, html: str, text: str | None
) -> None:
    folder = _templates(
        _fresh(tmp_path, "templates"),
        {"subject.j2": subject, "body.html.j2": html, "body.txt.j2": text},
    )
    env, names = template_environment(folder), template_names(folder)
    try:
        parts = render_email_parts(env, names, "t", TemplateKey(1, None, None), SAMPLE_CONTEXT)
    except (TemplateError, ConfigError):
        return
    except Exception as exc:
        assert _from_a_template(exc), traceback.format_exc()
        return
    message = build_message(
        parts,
        sender=SENDER,
        to_email="a@acme.example",
        to_name="Ana",
        message_id="<abm.1.x@demo.example>",
        unsubscribe_url="https://u.example/t",
        campaign_key="fuzz",
    )
    _parse_back(message.as_bytes())


@settings(
    max_examples=_examples(30),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(subject=template_source, html=template_source)
def test_campaign_validate_reports_any_template_problem_as_a_config_error(
    tmp_path: Path, subject: str, html: str
) -> None:
    """`abm campaign validate` turns every template failure into file, step and template
    line: `{{ 1/0 }}` and friends used to escape as raw tracebacks."""
    root = _fresh(tmp_path, "x").parent
    folder = _templates(root / "templates", {"subject.j2": subject, "body.html.j2": html})
    campaign = root / "fuzz.yaml"
    campaign.write_text(
        "name: Fuzz\naudience: {tiers: [1], roles: [approver]}\nsteps: [{id: t}]\n",
        encoding="utf-8",
    )
    settings_ = Settings(templates_dir=folder, secret_key="fuzz-key")
    try:
        validate_campaign(campaign, settings_)
    except ConfigError as exc:
        assert str(exc).startswith(f"{campaign}: step 't': ")


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("{{ 1/0 }}", "ZeroDivisionError"),
        ("{% for x in range(10**9) %}{% endfor %}", "OverflowError"),
        ("{{ '{x}'.format() }}", "KeyError"),
    ],
)
def test_validate_names_the_template_line_of_a_runtime_error(
    tmp_path: Path, source: str, error: str
) -> None:
    folder = _templates(
        tmp_path / "templates", {"subject.j2": "Hi", "body.html.j2": f"<p>ok</p>\n{source}"}
    )
    campaign = tmp_path / "fuzz.yaml"
    campaign.write_text("name: Fuzz\nsteps: [{id: t}]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        validate_campaign(campaign, Settings(templates_dir=folder, secret_key="k"))
    assert f"step 't': email/t/body.html.j2:2: {error}" in str(raised.value)


# --------------------------------------------------------------------------- webhooks

PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    PRIVATE_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
MAILGUN_KEY = "mailgun-fuzz-key"
INBOUND_TOKEN = "inbound-fuzz-token"


@pytest.fixture
def receiver(engine):  # type: ignore[no-untyped-def]
    upsert_accounts(engine, [{"domain": "acme.example", "attributes": {}, "technologies": []}])
    upsert_contacts(
        engine,
        [{"email": "ana@acme.example", "account_domain": "acme.example", "attributes": {}}],
    )
    config = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        sendgrid_webhook_public_key=PUBLIC_KEY,
        mailgun_webhook_signing_key=MAILGUN_KEY,
        sendgrid_inbound_token=INBOUND_TOKEN,
        secret_key="fuzz-key",
    )
    return TestClient(create_app(config), raise_server_exceptions=False)


def _stored(engine) -> tuple:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        events = connection.execute(select(func.count()).select_from(EngagementEvent)).scalar()
        statuses = tuple(connection.execute(select(Contact.status).order_by(Contact.id)).scalars())
        suppressions = connection.execute(select(func.count()).select_from(Suppression)).scalar()
        accounts = tuple(connection.execute(select(Account.stage).order_by(Account.id)).scalars())
    return events, statuses, suppressions, accounts


def _signed(body: bytes) -> dict[str, bytes]:
    now = str(int(time.time()))
    signature = PRIVATE_KEY.sign(now.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE: base64.b64encode(signature), TIMESTAMP: now.encode()}


def _mailgun(event: object, token: str, signature: str | None = None) -> bytes:
    now = str(int(time.time()))
    digest = hmac.new(
        MAILGUN_KEY.encode(), (now + token).encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()
    block = {"timestamp": now, "token": token, "signature": signature or digest}
    return json.dumps({"signature": block, "event-data": event}).encode()


ROUTES = ["sendgrid-signed", "sendgrid", "mailgun-signed", "mailgun", "inbound", "unsubscribe"]
header_values = st.binary(max_size=24).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(
    max_examples=_examples(80),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(ROUTES),
    body=webhook_body,
    headers=st.dictionaries(
        st.sampled_from([SIGNATURE, TIMESTAMP, "Content-Type"]), header_values, max_size=3
    ),
    token=st.text(max_size=16),
)
def test_webhook_bodies_get_a_reason_never_a_500_and_a_refusal_stores_nothing(
    receiver: TestClient,
    engine,  # type: ignore[no-untyped-def]
    route: str,
    body: bytes,
    headers: dict[str, bytes],
    token: str,
) -> None:
    before = _stored(engine)
    if route == "sendgrid-signed":
        response = receiver.post("/webhooks/sendgrid", content=body, headers=_signed(body))
    elif route == "sendgrid":
        response = receiver.post("/webhooks/sendgrid", content=body, headers=headers)
    elif route == "mailgun-signed":
        try:
            events = json.loads(body)
        except (ValueError, RecursionError):
            events = body.decode("latin-1")
        event = events[0] if isinstance(events, list) and events else events
        response = receiver.post("/webhooks/mailgun", content=_mailgun(event, token))
    elif route == "mailgun":
        response = receiver.post("/webhooks/mailgun", content=body, headers=headers)
    elif route == "inbound":
        response = receiver.post(
            f"/webhooks/sendgrid/inbound?token={quote(token, safe='')}",
            content=body,
            headers=headers,
        )
    else:
        response = receiver.post(f"/unsubscribe/{quote(token, safe='') or 'x'}", content=body)
    assert response.status_code in (200, 400, 401, 403, 404, 413), response.text
    if response.status_code >= 400:
        assert response.text.strip()
        if route != "unsubscribe":
            assert response.json()["error"]
        assert _stored(engine) == before


NOW = int(time.time())
OPEN = {"email": "ana@acme.example", "event": "open", "sg_event_id": "e1", "timestamp": NOW}
MAILGUN_OPEN = {"event": "opened", "id": "m1", "timestamp": NOW, "recipient": "ana@acme.example"}


# What fuzzing found: each of these was a 500 (and on PostgreSQL a NUL also failed the insert).
CRASHERS = [
    ("sendgrid", [{**OPEN, "timestamp": 1e300}], 400, "timestamp"),
    ("sendgrid", [{**OPEN, "timestamp": 10**30}], 400, "timestamp"),
    ("sendgrid", [{**OPEN, "timestamp": -1e12}], 400, "timestamp"),
    (
        "sendgrid",
        b'[{"email":"ana@acme.example","event":"open","sg_event_id":"e","timestamp":NaN}]',
        400,
        "timestamp",
    ),
    ("sendgrid", [{**OPEN, "sg_event_id": "e\x00"}], 400, "sg_event_id"),
    ("sendgrid", [{**OPEN, "abm_message_id": "<a\x00@b>"}], 400, "abm_message_id"),
    (
        "sendgrid",
        b'[{"email":"ana@acme.example","event":"open","sg_event_id":"\\ud800","timestamp":1}]',
        400,
        "sg_event_id",
    ),
    ("sendgrid", b"[" * 100_000 + b"]" * 100_000, 400, "nested"),
    ("mailgun", b"[" * 100_000 + b"]" * 100_000, 400, "nested"),
    ("mailgun-sig", "é", 403, "signature"),
    ("mailgun", {**MAILGUN_OPEN, "message": "x"}, 400, "message"),
    ("mailgun", {**MAILGUN_OPEN, "user-variables": [1]}, 400, "user-variables"),
    ("mailgun", {**MAILGUN_OPEN, "timestamp": "inf"}, 400, "timestamp"),
    ("mailgun", {**MAILGUN_OPEN, "id": "m\x00"}, 400, "sg_event_id"),
    ("inbound-token", "é", 403, "token"),
    ("inbound", {"headers": "Message-ID: <a\x00@b>\n", "from": "ana@acme.example"}, 400, "NUL"),
    ("unsubscribe", "abc.%C3%A9", 404, "not valid"),
    ("unsubscribe", "%C3%A9.%C3%A9", 404, "not valid"),
]


def test_webhook_requests_that_used_to_crash_get_a_4xx_with_the_reason(
    receiver: TestClient,
    engine,  # type: ignore[no-untyped-def]
) -> None:
    before = _stored(engine)
    for route, payload, status, reason in CRASHERS:
        if route == "sendgrid":
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            response = receiver.post("/webhooks/sendgrid", content=body, headers=_signed(body))
        elif route == "mailgun":
            body = payload if isinstance(payload, bytes) else _mailgun(payload, "t")
            response = receiver.post("/webhooks/mailgun", content=body)
        elif route == "mailgun-sig":
            response = receiver.post(
                "/webhooks/mailgun", content=_mailgun(MAILGUN_OPEN, "t", str(payload))
            )
        elif route == "inbound-token":
            response = receiver.post(
                f"/webhooks/sendgrid/inbound?token={quote(str(payload))}",
                data={"headers": "x", "from": "ana@acme.example"},
            )
        elif route == "inbound":
            response = receiver.post(
                f"/webhooks/sendgrid/inbound?token={INBOUND_TOKEN}",
                data=payload,  # type: ignore[arg-type]
            )
        else:
            response = receiver.post(f"/unsubscribe/{payload}")
        case = f"{route} {str(payload)[:60]!r}"
        assert (response.status_code, reason in response.text) == (status, True), case
        assert _stored(engine) == before, case


def test_the_ingest_command_counts_unstorable_lines_as_malformed(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from abm import cli

    lines = [
        json.dumps({**OPEN, "sg_event_id": "good"}),
        json.dumps({**OPEN, "sg_event_id": "big", "timestamp": 1e300}),
        "[" * 100_000,
        json.dumps({**OPEN, "sg_event_id": "latin-1: \xff"}, ensure_ascii=False),
    ]
    export = tmp_path / "events.jsonl"
    text = "\n".join(lines) + "\n"
    export.write_bytes(text.encode("utf-8").replace("\xff".encode(), b"\xff"))
    os.environ["ABM_DATABASE_URL"] = sqlite_url
    reset_settings()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("sys.argv", ["abm", "engagement", "ingest", str(export), "--json"])
            with pytest.raises(SystemExit) as exited:
                cli.main()
    finally:
        del os.environ["ABM_DATABASE_URL"]
        reset_settings()
    captured = capsys.readouterr()
    assert exited.value.code == 1
    result = json.loads(captured.out)
    assert (result["received"], result["malformed"]) == (1, 3)
    assert f"{export}:2: " in captured.err and f"{export}:3: " in captured.err
