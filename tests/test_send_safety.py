"""Real email never leaves with unsubscribe links nobody can reach: a real backend (smtp,
sendgrid) refuses a loopback, private-network, `.local` or plain-http `ABM_PUBLIC_URL`
before anything is claimed or sent, and `campaign validate` / `campaign run` say so (exit 2)
before Prefect starts. The local backends (outbox, console) keep the loopback default."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run_abm
from sqlalchemy import func, select

from connectors.email import get_backend
from connectors.email.smtp import SmtpBackend
from core.errors import ConfigError
from core.safety import public_url_problem
from core.settings import Settings, reset_settings
from models.db import get_engine
from models.tables import Campaign, Delivery

CAMPAIGN = Path(__file__).resolve().parents[1] / "campaigns" / "demo.yaml"
SMTP_URL = "smtp://mailer:S3cret-pw@smtp.acme-mail.com:587?starttls=1"

UNSAFE = [
    "http://127.0.0.1:8025",
    "https://127.0.0.1",
    "https://127.1.2.3:8443",
    "https://localhost",
    "https://LOCALHOST.:8443",
    "https://abm.localhost",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://0.0.0.0",
    "https://10.1.2.3",
    "https://172.16.5.4",
    "https://192.168.0.10",
    "https://169.254.169.254",
    "https://100.64.0.1",
    "https://[fd00::1]",
    "https://[fe80::1]",
    "https://mailhost.local",
    "https://abm.internal",
    "https://abm.home.arpa",
    "https://abm.test",
    "https://abm.example",
    "https://intranet",
    "https://2130706433",
    "https://0x7f.1",
    "http://abm.acme.com",
]
SAFE = [
    "https://abm.acme.com",
    "https://abm.acme.com:8443/hooks",
    "https://93.184.215.14",
    "https://xn--bcher-kva.example.com",
]


@pytest.mark.parametrize("url", UNSAFE)
def test_unreachable_or_unencrypted_public_urls_are_named_as_problems(url: str) -> None:
    assert public_url_problem(url)


@pytest.mark.parametrize("url", SAFE)
def test_public_https_urls_are_fine(url: str) -> None:
    assert public_url_problem(url) is None


@pytest.mark.parametrize(
    "config",
    [
        {"email_backend": "smtp", "smtp_url": SMTP_URL},
        {"email_backend": "sendgrid", "sendgrid_api_key": "SG.test-key"},
    ],
    ids=["smtp", "sendgrid"],
)
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8025", "https://10.0.0.5", "http://abm.acme.com"]
)
def test_a_real_backend_refuses_to_be_made_with_an_unsafe_public_url(config, url) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as refused:
        get_backend(Settings(public_url=url, **config))
    message = str(refused.value)
    assert "ABM_PUBLIC_URL" in message and "https://" in message
    assert "S3cret-pw" not in message


def test_a_real_backend_is_made_with_a_public_https_url() -> None:
    backend = get_backend(
        Settings(email_backend="smtp", smtp_url=SMTP_URL, public_url="https://abm.acme.com")
    )
    assert isinstance(backend, SmtpBackend)


@pytest.mark.parametrize("name", ["outbox", "console"])
def test_local_backends_keep_the_loopback_default(name: str) -> None:
    assert get_backend(Settings(email_backend=name)).name == name


def _configure_smtp(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    monkeypatch.setenv("ABM_EMAIL_BACKEND", "smtp")
    monkeypatch.setenv("ABM_SMTP_URL", SMTP_URL)


def test_campaign_validate_fails_with_a_real_backend_and_the_default_public_url(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _configure_smtp(monkeypatch, sqlite_url)
    code, out, err = run_abm(capsys, monkeypatch, "campaign", "validate", str(CAMPAIGN))
    assert code == 2, err
    assert "ABM_PUBLIC_URL" in err and "S3cret-pw" not in out + err

    monkeypatch.setenv("ABM_PUBLIC_URL", "https://abm.acme.com")
    reset_settings()
    code, _, err = run_abm(capsys, monkeypatch, "campaign", "validate", str(CAMPAIGN))
    assert code == 0, err


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_campaign_run_stops_before_prefect_starts_or_anything_is_planned(
    sqlite_url: str,
    abm_state: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    dry_run: bool,
) -> None:
    _configure_smtp(monkeypatch, sqlite_url)
    args = ["campaign", "run", str(CAMPAIGN), "--json", *(["--dry-run"] if dry_run else [])]
    code, out, err = run_abm(capsys, monkeypatch, *args)
    assert code == 2, err
    assert "ABM_PUBLIC_URL" in err and out == ""
    assert not (abm_state / "logs").exists()  # Prefect's logging was never set up
    with get_engine(sqlite_url).connect() as connection:
        assert connection.execute(select(func.count()).select_from(Campaign)).scalar() == 0
        assert connection.execute(select(func.count()).select_from(Delivery)).scalar() == 0
