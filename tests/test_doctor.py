"""`abm doctor`: what is missing or unsafe in the configured backends, per provider, without
sending anything; exit 1 when something would stop (or should stop) a real send, each with
the setting to change; never a secret on the screen."""

from __future__ import annotations

import base64
import json
from datetime import date
from pathlib import Path

import pytest
from cli_support import run_abm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from core.settings import reset_settings

SECRETS = {
    "ABM_SMTP_URL": "smtp://mailer:Smtp-Secret-0001@smtp.acme-mail.com:587?starttls=1",
    "ABM_SENDGRID_API_KEY": "SG.Sendgrid-Secret-0002",
    "ABM_SENDGRID_INBOUND_TOKEN": "Inbound-Secret-0003-long-enough",
    "ABM_MAILGUN_WEBHOOK_SIGNING_KEY": "Mailgun-Secret-0004",
    "ABM_LINKEDIN_ACCESS_TOKEN": "Linkedin-Secret-0005",
    "ABM_HUBSPOT_ACCESS_TOKEN": "pat-Hubspot-Secret-0006",
    "ABM_SECRET_KEY": "Signing-Secret-0007",
}
SECRET_VALUES = ["Smtp-Secret-0001", "Sendgrid-Secret-0002", "Inbound-Secret-0003",
                 "Mailgun-Secret-0004", "Linkedin-Secret-0005", "Hubspot-Secret-0006",
                 "Signing-Secret-0007"]  # fmt: skip


def _public_key() -> str:
    der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


def _doctor(capsys, monkeypatch, **env: str) -> tuple[int, dict[str, dict], str]:  # type: ignore[no-untyped-def]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings()  # read the environment as it is now
    code, out, err = run_abm(capsys, monkeypatch, "doctor", "--json")
    checks = json.loads(out)
    assert isinstance(checks, list)
    for check in checks:
        assert set(check) >= {"check", "status", "message"}
        assert check["status"] in ("ok", "warn", "fail")
        assert check["message"].strip()
    return code, {c["check"]: c for c in checks}, out + err


def _last_months_version() -> str:
    """A LinkedIn version that is live whenever the test runs: last month's."""
    today = date.today()
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return f"{year}{month:02d}"


def _failing(checks: dict[str, dict]) -> set[str]:
    return {name for name, check in checks.items() if check["status"] == "fail"}


def test_the_local_default_configuration_blocks_nothing(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, checks, _ = _doctor(capsys, monkeypatch, ABM_DATABASE_URL=sqlite_url)
    assert code == 0, checks
    assert _failing(checks) == set()
    assert checks["database"]["status"] == "ok"
    assert checks["public_url"]["status"] == "ok"  # the outbox sends nothing: loopback is fine
    assert {"email_backend", "linkedin", "inbound_token", "secret_key"} <= set(checks)


def test_a_real_backend_with_demo_values_lists_each_blocker_with_its_setting(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, checks, _ = _doctor(
        capsys,
        monkeypatch,
        ABM_DATABASE_URL=sqlite_url,
        ABM_EMAIL_BACKEND="smtp",
        ABM_SMTP_URL="smtp://mailer:Smtp-Secret-0001@smtp.acme-mail.com:25",
    )
    assert code == 1
    assert {"public_url", "postal_address", "sender", "smtp"} <= _failing(checks)
    assert "ABM_PUBLIC_URL" in checks["public_url"]["message"]
    assert "ABM_POSTAL_ADDRESS" in checks["postal_address"]["message"]
    assert "ABM_SENDER" in checks["sender"]["message"]
    assert "starttls" in checks["smtp"]["message"]  # credentials would cross the net in clear


def test_a_real_backend_configured_well_passes(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "dkim.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    code, checks, shown = _doctor(
        capsys,
        monkeypatch,
        **SECRETS,
        ABM_DATABASE_URL=sqlite_url,
        ABM_EMAIL_BACKEND="smtp",
        ABM_PUBLIC_URL="https://abm.acme.com",
        ABM_SENDER="Acme Marketing <marketing@acme.com>",
        ABM_POSTAL_ADDRESS="Acme Inc., 500 Market Street, San Francisco, CA 94105, USA",
        ABM_SENDGRID_WEBHOOK_PUBLIC_KEY=f"{_public_key()},{_public_key()}",
        ABM_DKIM_DOMAIN="acme.com",
        ABM_DKIM_SELECTOR="abm",
        ABM_DKIM_PRIVATE_KEY=str(pem),
        ABM_LINKEDIN_MODE="api",
        ABM_LINKEDIN_AD_ACCOUNT="123456",
        ABM_LINKEDIN_VERSION=_last_months_version(),
    )
    assert code == 0, checks
    assert _failing(checks) == set()
    for name in ("smtp", "dkim", "sendgrid_webhook", "linkedin", "crm", "inbound_token"):
        assert checks[name]["status"] == "ok", checks[name]
    assert not any(secret in shown for secret in SECRET_VALUES)


@pytest.mark.parametrize(
    ("env", "check", "setting"),
    [
        ({"ABM_EMAIL_BACKEND": "sendgrid"}, "sendgrid", "ABM_SENDGRID_API_KEY"),
        ({"ABM_EMAIL_BACKEND": "smtp"}, "smtp", "ABM_SMTP_URL"),
        ({"ABM_EMAIL_BACKEND": "smtp", "ABM_SMTP_URL": "smtp://a:b@"}, "smtp", "ABM_SMTP_URL"),
        ({"ABM_SENDGRID_WEBHOOK_PUBLIC_KEY": "bm90LWEta2V5"}, "sendgrid_webhook",
         "ABM_SENDGRID_WEBHOOK_PUBLIC_KEY"),
        ({"ABM_LINKEDIN_MODE": "api"}, "linkedin", "ABM_LINKEDIN_ACCESS_TOKEN"),
        ({"ABM_LINKEDIN_MODE": "api", "ABM_LINKEDIN_ACCESS_TOKEN": "t"}, "linkedin",
         "ABM_LINKEDIN_AD_ACCOUNT"),
        ({"ABM_LINKEDIN_MODE": "api", "ABM_LINKEDIN_ACCESS_TOKEN": "t",
          "ABM_LINKEDIN_AD_ACCOUNT": "123", "ABM_LINKEDIN_SOURCE_PLATFORM": ""}, "linkedin",
         "ABM_LINKEDIN_SOURCE_PLATFORM"),
        ({"ABM_LINKEDIN_MODE": "api", "ABM_LINKEDIN_ACCESS_TOKEN": "t",
          "ABM_LINKEDIN_AD_ACCOUNT": "123", "ABM_LINKEDIN_VERSION": "202301"}, "linkedin",
         "ABM_LINKEDIN_VERSION"),
        ({"ABM_DKIM_DOMAIN": "acme.com"}, "dkim", "ABM_DKIM_SELECTOR"),
        ({"ABM_DKIM_DOMAIN": "acme.com", "ABM_DKIM_SELECTOR": "abm",
          "ABM_DKIM_PRIVATE_KEY": "/nowhere/dkim.pem"}, "dkim", "ABM_DKIM_PRIVATE_KEY"),
        ({"ABM_CRM": "hubspot"}, "crm", "ABM_HUBSPOT_ACCESS_TOKEN"),
        ({"ABM_CRM": "salesforce"}, "crm", "ABM_SALESFORCE_CLIENT_ID"),
        ({"ABM_CRM": "salesforce", "ABM_SALESFORCE_CLIENT_ID": "3MVG9x",
          "ABM_SALESFORCE_USERNAME": "abm@acme.com",
          "ABM_SALESFORCE_PRIVATE_KEY": "/nowhere/sf.pem"}, "crm", "ABM_SALESFORCE_PRIVATE_KEY"),
    ],
    ids=["sendgrid-key", "smtp-url", "smtp-url-bad", "webhook-key", "li-token", "li-account",
         "li-platform", "li-version-sunset", "dkim-partial", "dkim-unreadable", "crm-hubspot",
         "crm-salesforce", "crm-salesforce-key"],
)  # fmt: skip
def test_each_missing_or_broken_setting_fails_its_check_naming_the_setting(
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    check: str,
    setting: str,
) -> None:
    code, checks, _ = _doctor(capsys, monkeypatch, ABM_DATABASE_URL=sqlite_url, **env)
    assert code == 1
    assert checks[check]["status"] == "fail", checks[check]
    assert setting in checks[check]["message"]


def test_an_uninitialised_database_fails_and_says_to_run_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, checks, _ = _doctor(
        capsys, monkeypatch, ABM_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}"
    )
    assert code == 1
    assert checks["database"]["status"] == "fail"
    assert "abm init" in checks["database"]["message"]


def test_without_an_inbound_token_replies_are_a_warning_not_a_blocker(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, checks, _ = _doctor(capsys, monkeypatch, ABM_DATABASE_URL=sqlite_url)
    assert code == 0
    assert checks["inbound_token"]["status"] == "warn"
    assert "ABM_SENDGRID_INBOUND_TOKEN" in checks["inbound_token"]["message"]


def test_an_invalid_setting_is_reported_as_a_failing_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, checks, _ = _doctor(capsys, monkeypatch, ABM_LINKEDIN_VERSION="last-month")
    assert code == 1
    assert checks["settings"]["status"] == "fail"
    assert "ABM_LINKEDIN_VERSION" in checks["settings"]["message"]


def test_the_human_output_lists_checks_and_never_a_secret(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ABM_EMAIL_BACKEND", "sendgrid")
    code, out, err = run_abm(capsys, monkeypatch, "doctor")
    assert code == 1  # the default public URL and the demo postal address
    assert "public_url" in out and "ABM_PUBLIC_URL" in out
    assert "fail" in out and "ok" in out
    assert not any(secret in out + err for secret in SECRET_VALUES)


def test_the_monitored_mailbox_is_checked_without_showing_its_password(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp = {"ABM_EMAIL_BACKEND": "smtp", "ABM_SMTP_URL": SECRETS["ABM_SMTP_URL"]}
    _, checks, _ = _doctor(capsys, monkeypatch, ABM_DATABASE_URL=sqlite_url, **smtp)
    assert checks["mailbox"]["status"] == "warn" and "never read" in checks["mailbox"]["message"]

    plain = "imap://bounces:Imap-Secret-0008@mail.acme-mail.com/INBOX?starttls=0"
    _, checks, shown = _doctor(capsys, monkeypatch, ABM_IMAP_URL=plain)
    assert checks["mailbox"]["status"] == "warn" and "unencrypted" in checks["mailbox"]["message"]
    assert "Imap-Secret-0008" not in shown

    monkeypatch.setenv("ABM_IMAP_CA_FILE", "/no/such/ca.pem")
    _, checks, _ = _doctor(
        capsys,
        monkeypatch,
        ABM_IMAP_URL="imaps://bounces:Imap-Secret-0008@mail.acme-mail.com/INBOX",
    )
    assert (
        checks["mailbox"]["status"] == "fail" and "ABM_IMAP_CA_FILE" in checks["mailbox"]["message"]
    )
    monkeypatch.delenv("ABM_IMAP_CA_FILE")

    code, checks, shown = _doctor(capsys, monkeypatch, ABM_IMAP_URL="imaps://Imap-Secret-0008@")
    assert code == 1 and checks["mailbox"]["status"] == "fail"
    assert "ABM_IMAP_URL" in checks["mailbox"]["message"] and "Imap-Secret-0008" not in shown

    good = "imaps://bounces:Imap-Secret-0008@mail.acme-mail.com/Bounces"
    _, checks, shown = _doctor(capsys, monkeypatch, ABM_IMAP_URL=good)
    assert checks["mailbox"]["status"] == "ok" and "Imap-Secret-0008" not in shown


def test_retired_signing_keys_are_checked(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, checks, _ = _doctor(capsys, monkeypatch, ABM_DATABASE_URL=sqlite_url)
    assert checks["previous_keys"]["status"] == "ok"
    assert "180 days" in checks["previous_keys"]["message"]
    current = "a-current-key-long-enough-0001"
    monkeypatch.setenv("ABM_SECRET_KEY", current)
    _, checks, shown = _doctor(
        capsys, monkeypatch, ABM_PREVIOUS_SECRET_KEYS=f"old-short, {current}"
    )
    assert (
        checks["previous_keys"]["status"] == "warn"
        and "current" in checks["previous_keys"]["message"]
    )
    _, checks, shown = _doctor(capsys, monkeypatch, ABM_PREVIOUS_SECRET_KEYS="old-short")
    assert checks["previous_keys"]["status"] == "warn" and "old-short" not in shown
    retired = "retired-key-long-enough-0001 retired-key-long-enough-0002"
    _, checks, shown = _doctor(capsys, monkeypatch, ABM_PREVIOUS_SECRET_KEYS=retired)
    assert checks["previous_keys"] == {
        "check": "previous_keys",
        "status": "ok",
        "message": "2 retired keys still verify old links",
    }
    assert "retired-key-long-enough" not in shown
