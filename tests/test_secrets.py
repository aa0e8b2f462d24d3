"""Secrets and personal data stay where they belong (docs/security.md has the review).

Secrets (SendGrid key, SMTP password, HubSpot and LinkedIn tokens, webhook keys, the signing
key, the database password) appear in no log, exception, Prefect record or artifact, and no
`abm` output. Personal data (emails, names) never reaches Prefect, which everyone with access
to the workspace can read: only counts and ids go there."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from core.errors import ConfigError
from core.settings import get_settings, reset_settings
from models.db import DatabaseError, get_engine, migrate, require_current_schema
from models.tables import Account, Contact, Delivery, utcnow
from stages.importing import parse_contacts, read_csv, write_rejects

CAMPAIGN = Path(__file__).resolve().parents[1] / "campaigns" / "demo.yaml"
SECRETS = {
    "ABM_SENDGRID_API_KEY": "SG.sendgrid-Secret-0001",
    "ABM_SMTP_URL": "smtp://mailer:Smtp-Secret-0002@127.0.0.1:1",
    "ABM_HUBSPOT_ACCESS_TOKEN": "pat-hubspot-Secret-0003",
    "ABM_LINKEDIN_ACCESS_TOKEN": "linkedin-Secret-0004",
    "ABM_SECRET_KEY": "signing-Secret-0005",
    "ABM_MAILGUN_WEBHOOK_SIGNING_KEY": "mailgun-Secret-0006",
    "ABM_SENDGRID_INBOUND_TOKEN": "inbound-Secret-0007",
}
DB_PASSWORD = "Db-Secret-0008"
# What must never appear: the secrets themselves (the SMTP URL's password, not its host).
NEVER = [
    "SG.sendgrid-Secret-0001",
    "Smtp-Secret-0002",
    "pat-hubspot-Secret-0003",
    "linkedin-Secret-0004",
    "signing-Secret-0005",
    "mailgun-Secret-0006",
    "inbound-Secret-0007",
    DB_PASSWORD,
]


def _leaks(text: str) -> list[str]:
    return [secret for secret in NEVER if secret in text]


@pytest.fixture
def secrets_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    reset_settings()


def _abm(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str):  # type: ignore[no-untyped-def]
    """Run the `abm` entry point in this process: (exit code, stdout, stderr)."""
    from abm import cli

    monkeypatch.setattr("sys.argv", ["abm", *args])
    reset_settings()
    with pytest.raises(SystemExit) as exited:
        cli.main()
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


# --------------------------------------------------------------------------- settings


def test_settings_repr_shows_no_secret(secrets_set: None, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ABM_DATABASE_URL", f"postgresql+psycopg://abm:{DB_PASSWORD}@db/abm")
    reset_settings()
    settings = get_settings()
    for text in (repr(settings), str(settings), f"{settings!r}", repr([settings])):
        assert _leaks(text) == [], text
    assert "postgresql+psycopg://abm:***@db/abm" in repr(settings)
    # the code that needs them still gets them
    assert settings.sendgrid_api_key == SECRETS["ABM_SENDGRID_API_KEY"]
    assert make_url(settings.database_url).password == DB_PASSWORD


def test_a_bad_setting_names_the_variable_not_its_value(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ABM_LINKEDIN_MODE", "Value-Secret-0009")
    reset_settings()
    with pytest.raises(ConfigError, match="ABM_LINKEDIN_MODE") as raised:
        get_settings()
    assert "Value-Secret-0009" not in str(raised.value)
    code, out, err = _abm(monkeypatch, capsys, "accounts", "list")
    assert code == 2 and "ABM_LINKEDIN_MODE" in err
    assert "Value-Secret-0009" not in out + err and "Traceback" not in err


# --------------------------------------------------------------------------- database URL


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://abm@db.example:{DB_PASSWORD}/abm",  # the parser quoted it
        f"not a url {DB_PASSWORD}",
    ],
)
def test_a_malformed_database_url_is_refused_without_its_password(
    url: str, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DatabaseError) as raised:
        get_engine(url)
    assert _leaks(str(raised.value)) == []
    monkeypatch.setenv("ABM_DATABASE_URL", url)
    code, out, err = _abm(monkeypatch, capsys, "accounts", "list")
    assert code == 2 and "ABM_DATABASE_URL" in err
    assert _leaks(out + err) == [] and "Traceback" not in err


def test_an_unreachable_database_is_reported_without_its_password(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    url = f"postgresql+psycopg://abm:{DB_PASSWORD}@127.0.0.1:1/abm"
    with pytest.raises(DatabaseError) as raised:
        require_current_schema(get_engine(url))
    assert "cannot open the database" in str(raised.value) and _leaks(str(raised.value)) == []
    monkeypatch.setenv("ABM_DATABASE_URL", url)
    code, out, err = _abm(monkeypatch, capsys, "contacts", "list")
    assert code == 2 and _leaks(out + err) == []


def test_a_database_url_with_a_percent_sign_migrates(tmp_path: Path) -> None:
    """Alembic's config file syntax read `%` as interpolation: `abm init` failed with a
    ValueError quoting the whole URL, password included, for any percent-encoded password
    (p%40ss for p@ss) or a folder such as `100%`."""
    folder = tmp_path / "100% sure"
    url = f"sqlite:///{folder / 'abm.db'}"
    before, after = migrate(get_engine(url))
    assert before is None and after
    require_current_schema(get_engine(url))


def test_init_shows_the_database_with_its_password_masked(
    database_url: str, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        pytest.skip("a SQLite URL has no password")
    # the test server trusts local connections, so any password is accepted
    with_password = url.set(password=f"{DB_PASSWORD}%@/").render_as_string(hide_password=False)
    monkeypatch.setenv("ABM_DATABASE_URL", with_password)
    code, out, err = _abm(monkeypatch, capsys, "init")
    assert code == 0, err
    assert "***" in err and _leaks(out + err) == [] and DB_PASSWORD not in err


def test_a_failed_statement_does_not_echo_the_values_bound_to_it(sqlite_url: str) -> None:
    """SQLAlchemy puts bound parameters (emails, names) into error messages unless told
    not to; those messages reach Prefect's logs and the terminal."""
    engine = get_engine(sqlite_url)
    now = utcnow()
    with engine.begin() as connection:
        account = connection.execute(
            insert(Account).values(
                domain="acme.example",
                technologies=[],
                attributes={},
                icp_reasons=[],
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]
    row = {
        "email": "ana.private@acme.example",
        "first_name": "Anastasia-Private",
        "account_id": account,
        "attributes": {},
        "created_at": now,
        "updated_at": now,
    }
    with engine.begin() as connection:
        connection.execute(insert(Contact), [row])
    with pytest.raises(IntegrityError) as raised, engine.begin() as connection:
        connection.execute(insert(Contact), [row])
    assert "ana.private" not in str(raised.value)
    assert "Anastasia-Private" not in str(raised.value)


# --------------------------------------------------------------------------- files


def test_a_rejects_file_is_never_more_readable_than_its_source(tmp_path: Path) -> None:
    """It used to be made world-readable (0644) whatever the source's permissions."""
    source = tmp_path / "contacts.csv"
    source.write_text("email,first_name\nnot-an-email,Ana\n", encoding="utf-8")
    source.chmod(0o600)
    table = read_csv(source)
    written = write_rejects(source, table, parse_contacts(table, set()).rejects)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    source.chmod(0o640)
    written = write_rejects(source, table, parse_contacts(table, set()).rejects)
    assert stat.S_IMODE(written.stat().st_mode) == 0o640


# --------------------------------------------------------------------------- a whole run


class _EchoHandler(BaseHTTPRequestHandler):
    """A provider having a very bad day: every request is refused (401) with the request's
    own headers in the error message and the reason phrase, credentials included."""

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        echoed = "; ".join(f"{k}: {v}" for k, v in self.headers.items())
        body = json.dumps(
            {
                "errors": [{"field": None, "message": f"bad credentials: {echoed}"}],
                "message": f"bad credentials: {echoed}",
                "category": "INVALID_AUTHENTICATION",
            }
        ).encode()
        auth = self.headers.get("Authorization", "")
        self.send_response(401, f"Unauthorized {auth}")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _prefect_records() -> str:
    """Everything this test's flow runs left in Prefect: runs, task runs with their state
    messages, logs and artifacts, as one JSON text."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs()
        parts = [run.model_dump_json() for run in flow_runs]
        parts += [run.model_dump_json() for run in client.read_task_runs()]
        parts += [log.model_dump_json() for log in client.read_logs()]
        parts += [artifact.model_dump_json() for artifact in client.read_artifacts()]
    return "\n".join(parts)


@pytest.mark.slow
def test_a_failing_run_leaks_no_secret_and_no_personal_data_to_prefect(
    database_url: str,
    secrets_set: None,
    echo_server: str,
    tmp_path: Path,
    monkeypatch,
    capsys,
    prefect_server,
) -> None:  # type: ignore[no-untyped-def]
    """SendGrid and HubSpot both refuse the credentials and echo them back; the run fails.
    Neither Prefect (runs, task runs, logs, artifacts), nor the ledger, nor the error the
    command prints shows a secret, and Prefect holds no email or name."""
    from abm.demo_data import write_demo_csvs
    from stages.importing import import_file

    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":  # trust auth: any password is accepted
        database_url = url.set(password=DB_PASSWORD).render_as_string(hide_password=False)
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    monkeypatch.setenv("ABM_EMAIL_BACKEND", "sendgrid")
    monkeypatch.setenv("ABM_PUBLIC_URL", "https://abm.acme.com")  # a real backend needs one
    monkeypatch.setenv("ABM_SENDGRID_BASE_URL", echo_server)
    monkeypatch.setenv("ABM_HUBSPOT_BASE_URL", echo_server)
    reset_settings()
    engine = get_engine(database_url)
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=40)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())

    code, out, err = _abm(monkeypatch, capsys, "campaign", "run", str(CAMPAIGN), "--json")
    # HubSpot refused the token: a configuration error, naming the setting to check
    assert code == 2, err
    assert "error: HubSpot rejected the access token" in err and "ABM_HUBSPOT_ACCESS_TOKEN" in err

    records = _prefect_records()
    log_file = get_settings().state_dir / "logs" / "prefect.log"
    logged = log_file.read_text(encoding="utf-8") if log_file.exists() else ""
    with engine.connect() as connection:
        errors = " ".join(
            e or "" for e in connection.execute(select(Delivery.last_error)).scalars()
        )
        people = connection.execute(select(Contact.email, Contact.last_name)).all()
    assert "credentials" in errors  # the ledger says why, without the key
    assert "target accounts in tiers" in records and "HubSpotAuthError" in records
    for where, text in {
        "cli": out + err,
        "prefect": records,
        "log": logged,
        "ledger": errors,
    }.items():
        assert _leaks(text) == [], where
    assert people
    for email, last_name in people:
        assert email not in records
        assert not last_name or len(last_name) < 4 or last_name not in records


@pytest.mark.slow
def test_the_outbox_and_its_messages_hold_no_secret(
    sqlite_url: str, secrets_set: None, monkeypatch, tmp_path: Path, prefect_server
) -> None:  # type: ignore[no-untyped-def]
    """The .eml files carry a signed unsubscribe token and a Message-ID tag, never the key."""
    from abm.demo_data import write_demo_csvs
    from flows.campaign import run_campaign
    from stages.importing import import_file

    monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
    monkeypatch.delenv("ABM_HUBSPOT_ACCESS_TOKEN")  # no CRM write-back in this one
    reset_settings()
    engine = get_engine(sqlite_url)
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=30)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    summary = run_campaign(campaign_file=str(CAMPAIGN))
    files = sorted(get_settings().outbox_dir.glob("*.eml"))
    assert summary["sent"] == len(files) > 0
    for path in files:
        assert _leaks(path.read_text(encoding="ascii")) == [], path.name
    assert get_settings().signing_key() == SECRETS["ABM_SECRET_KEY"]  # it was in use
