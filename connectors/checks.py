"""The configuration checks behind `abm doctor`, and the preflight a campaign run makes
before Prefect starts. Each check looks at one backend or provider and says, in the
settings' own names, what is missing or unsafe. They are worked out offline from the
settings (the database is the one thing opened) and never show a secret: SMTP URLs are
shown with the password masked, tokens and keys only as "set"."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connectors.email import get_backend
from connectors.email.imap_mailbox import ImapUrl
from connectors.email.sendgrid_events import load_public_keys
from connectors.email.smtp import SmtpUrl
from connectors.email.webhook_events import split_keys
from connectors.linkedin import account_urn
from core.errors import ConfigError
from core.safety import PRIVATE_SUFFIXES, REAL_EMAIL_BACKENDS, public_url_refusal
from core.settings import Settings, safe_url
from models.db import DatabaseError, get_engine, require_current_schema

Status = Literal["ok", "warn", "fail"]
# A token anyone could guess protects nothing; 16 characters is the least we call safe.
MIN_TOKEN_LENGTH = 16
# LinkedIn serves a monthly API version for about a year, then answers 426.
LINKEDIN_VERSION_MONTHS = 12


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    check: str
    status: Status
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_send_ready(settings: Settings) -> None:
    """The email backend the settings name can be made: the refusals a run would meet
    before it claims anything (no SMTP URL, no SendGrid key, a real backend with an
    unreachable ABM_PUBLIC_URL), raised up front so a run stops before Prefect starts."""
    get_backend(settings).close()


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


def _real(settings: Settings) -> bool:
    return settings.email_backend in REAL_EMAIL_BACKENDS


def check_database(settings: Settings) -> Check:
    """Reachable and migrated, without creating an empty SQLite file on the way."""
    shown = safe_url(settings.database_url)
    try:
        url = make_url(settings.database_url)
        file = url.database if url.get_backend_name() == "sqlite" else None
        if file and file != ":memory:" and not Path(file).exists():
            return Check("database", "fail", f"no database at {file}: run `abm init`")
        require_current_schema(get_engine(settings.database_url))
    except DatabaseError as exc:
        return Check("database", "fail", f"{exc} (ABM_DATABASE_URL={shown})")
    except (ArgumentError, ValueError):  # the parser's message may quote the password
        return Check("database", "fail", "ABM_DATABASE_URL is not a valid database URL")
    return Check("database", "ok", f"{shown}: reachable and migrated")


def check_secret_key(settings: Settings) -> Check:
    """Unsubscribe links are signed with it; links signed elsewhere fail here if it differs."""
    if settings.secret_key:
        if len(settings.secret_key) < MIN_TOKEN_LENGTH:
            return Check(
                "secret_key",
                "warn",
                f"ABM_SECRET_KEY is shorter than {MIN_TOKEN_LENGTH} characters: use a long "
                "random value, anyone who guesses it can forge unsubscribe links",
            )
        return Check("secret_key", "ok", "ABM_SECRET_KEY is set")
    generated = settings.state_dir / "secret"
    share = (
        "; set ABM_SECRET_KEY when the webhook server and the workers run on different "
        "machines, so that they agree"
    )
    if generated.exists():
        return Check("secret_key", "ok", f"a generated key in {generated}{share}")
    return Check(
        "secret_key",
        "warn",
        f"ABM_SECRET_KEY is not set: the first send generates {generated}{share}",
    )


def check_email_backend(settings: Settings) -> Check:
    described = {
        "outbox": f"outbox: writes .eml files to {settings.outbox_dir}; nothing leaves here",
        "console": "console: prints messages; nothing is sent",
        "smtp": "smtp: sends real email",
        "sendgrid": "sendgrid: sends real email through SendGrid's API",
    }
    return Check("email_backend", "ok", f"ABM_EMAIL_BACKEND={described[settings.email_backend]}")


def check_public_url(settings: Settings) -> Check:
    refusal = public_url_refusal(settings)
    if refusal:
        return Check("public_url", "fail", refusal)
    where = "unsubscribe links point at"
    if not _real(settings):
        return Check(
            "public_url", "ok", f"{where} {settings.public_url} (a local backend: fine here)"
        )
    return Check("public_url", "ok", f"{where} {settings.public_url}")


def check_postal_address(settings: Settings) -> Check:
    if settings.postal_address.strip() != _default("postal_address"):
        return Check("postal_address", "ok", "ABM_POSTAL_ADDRESS is your own")
    if not _real(settings):
        return Check("postal_address", "ok", "the demo address (a local backend: fine here)")
    return Check(
        "postal_address",
        "fail",
        "ABM_POSTAL_ADDRESS is the demo address: commercial email must carry your real "
        "postal address (CAN-SPAM), set ABM_POSTAL_ADDRESS",
    )


def _reserved_domain(domain: str) -> bool:
    return any(domain == s or domain.endswith(f".{s}") for s in PRIVATE_SUFFIXES)


def check_sender(settings: Settings) -> Check:
    domain = parseaddr(settings.sender)[1].rpartition("@")[2].lower().rstrip(".")
    demo = settings.sender == _default("sender") or _reserved_domain(domain)
    if not demo:
        return Check("sender", "ok", f"ABM_SENDER={settings.sender}")
    if not _real(settings):
        return Check("sender", "ok", f"{settings.sender} (a local backend: fine here)")
    return Check(
        "sender",
        "fail",
        f"ABM_SENDER={settings.sender} is a demo address on a domain that receives no "
        "mail: set ABM_SENDER to your own sending address",
    )


def _loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_smtp(settings: Settings) -> Check:
    """Parses, and encrypts what crosses the network (STARTTLS or TLS from the start)."""
    if not settings.smtp_url:
        return Check(
            "smtp",
            "fail",
            "ABM_EMAIL_BACKEND=smtp needs ABM_SMTP_URL "
            "(smtp://user:pass@host:587?starttls=1 or smtps://user:pass@host:465)",
        )
    try:
        url = SmtpUrl.parse(settings.smtp_url)
    except ConfigError as exc:
        return Check("smtp", "fail", f"ABM_SMTP_URL: {exc}")
    if url.implicit_tls or url.starttls:
        how = "TLS from the start" if url.implicit_tls else "STARTTLS"
        return Check("smtp", "ok", f"ABM_SMTP_URL={url} ({how})")
    if _loopback(url.host):
        return Check("smtp", "ok", f"ABM_SMTP_URL={url} (plain SMTP to a relay on this machine)")
    fix = "add ?starttls=1 (port 587) or use smtps:// (port 465) in ABM_SMTP_URL"
    if url.user is not None:
        return Check(
            "smtp",
            "fail",
            f"ABM_SMTP_URL={url} sends the password and every message unencrypted to "
            f"{url.host}: {fix}",
        )
    return Check("smtp", "warn", f"ABM_SMTP_URL={url} sends every message unencrypted: {fix}")


def check_sendgrid(settings: Settings) -> Check:
    key = (settings.sendgrid_api_key or "").strip()
    if not key:
        return Check(
            "sendgrid",
            "fail",
            "ABM_EMAIL_BACKEND=sendgrid needs ABM_SENDGRID_API_KEY (an API key with the "
            "Mail Send permission)",
        )
    if settings.sendgrid_sandbox:
        return Check(
            "sendgrid",
            "warn",
            "ABM_SENDGRID_SANDBOX is on: SendGrid validates and delivers nothing",
        )
    if not settings.sendgrid_base_url.startswith("https://"):
        return Check(
            "sendgrid",
            "warn",
            f"ABM_SENDGRID_BASE_URL={settings.sendgrid_base_url} is not https://: the API key "
            "would cross the network in clear",
        )
    if not key.startswith("SG."):
        return Check(
            "sendgrid", "warn", "ABM_SENDGRID_API_KEY does not look like a SendGrid key (SG....)"
        )
    return Check(
        "sendgrid",
        "ok",
        f"ABM_SENDGRID_API_KEY is set; the sender {parseaddr(settings.sender)[1]} must be a "
        "verified sender or on an authenticated domain in SendGrid (not checked offline)",
    )


def _dkim_key_problem(path: Path) -> str | None:
    """Why the file cannot sign DKIM (unreadable, not a PEM private key, a weak RSA key)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        return "is not an unencrypted PEM private key"
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            return f"is a {key.key_size}-bit RSA key: receivers ignore DKIM keys under 1024 bits"
        return None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        return "is neither an RSA nor an Ed25519 key"
    return None


def check_dkim(settings: Settings) -> Check:
    values = {
        "ABM_DKIM_DOMAIN": settings.dkim_domain,
        "ABM_DKIM_SELECTOR": settings.dkim_selector,
        "ABM_DKIM_PRIVATE_KEY": settings.dkim_private_key,
    }
    missing = [name for name, value in values.items() if not value]
    if len(missing) == len(values):
        return Check("dkim", "ok", "not configured: messages carry the relay's signature, if any")
    if missing:
        return Check(
            "dkim",
            "fail",
            f"DKIM needs ABM_DKIM_DOMAIN, ABM_DKIM_SELECTOR and ABM_DKIM_PRIVATE_KEY together; "
            f"missing: {', '.join(missing)}",
        )
    path = Path(str(settings.dkim_private_key))
    problem = _dkim_key_problem(path)
    if problem:
        return Check("dkim", "fail", f"ABM_DKIM_PRIVATE_KEY={path} {problem}")
    domain = str(settings.dkim_domain).lower().rstrip(".")
    sender_domain = parseaddr(settings.sender)[1].rpartition("@")[2].lower()
    if sender_domain != domain and not sender_domain.endswith(f".{domain}"):
        return Check(
            "dkim",
            "warn",
            f"d={domain} does not align with the sender's domain {sender_domain}: DMARC "
            "needs them to match (set ABM_DKIM_DOMAIN or ABM_SENDER)",
        )
    return Check("dkim", "ok", f"d={domain} s={settings.dkim_selector}, key {path} readable")


def check_sendgrid_webhook(settings: Settings) -> Check:
    keys, problems = load_public_keys(settings.sendgrid_webhook_public_key)
    if problems:
        return Check(
            "sendgrid_webhook",
            "fail",
            f"ABM_SENDGRID_WEBHOOK_PUBLIC_KEY: {'; '.join(problems)} (each must be the base64 "
            "public key SendGrid shows for its signed event webhook)",
        )
    if keys:
        return Check(
            "sendgrid_webhook", "ok", f"{len(keys)} valid public key(s): signed events accepted"
        )
    used = settings.email_backend == "sendgrid" or settings.smtp_relay == "sendgrid"
    return Check(
        "sendgrid_webhook",
        "warn" if used else "ok",
        "ABM_SENDGRID_WEBHOOK_PUBLIC_KEY is not set: /webhooks/sendgrid refuses every post"
        + (
            ", so SendGrid's opens, clicks, bounces and spam reports are not recorded"
            if used
            else ""
        ),
    )


def check_mailgun_webhook(settings: Settings) -> Check:
    keys = split_keys(settings.mailgun_webhook_signing_key)
    if keys:
        return Check("mailgun_webhook", "ok", f"{len(keys)} signing key(s) set")
    used = settings.smtp_relay == "mailgun"
    return Check(
        "mailgun_webhook",
        "warn" if used else "ok",
        "ABM_MAILGUN_WEBHOOK_SIGNING_KEY is not set: /webhooks/mailgun refuses every post",
    )


def check_inbound_token(settings: Settings) -> Check:
    token = settings.sendgrid_inbound_token or ""
    if not token:
        return Check(
            "inbound_token",
            "warn",
            "ABM_SENDGRID_INBOUND_TOKEN is not set: /webhooks/sendgrid/inbound refuses every "
            "post, so replies do not stop sequences; set it to a long random value and add "
            "?token=<that value> to the Inbound Parse URL",
        )
    if len(token) < MIN_TOKEN_LENGTH:
        return Check(
            "inbound_token",
            "warn",
            f"ABM_SENDGRID_INBOUND_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters: a "
            "guessed token lets anyone post fake replies",
        )
    return Check("inbound_token", "ok", "ABM_SENDGRID_INBOUND_TOKEN is set")


def _linkedin_version_problem(version: str, today: date) -> tuple[Status, str] | None:
    age = (today.year * 12 + today.month) - (int(version[:4]) * 12 + int(version[4:]))
    if age < 0:
        return "fail", f"ABM_LINKEDIN_VERSION={version} is in the future: LinkedIn answers 426"
    if age > LINKEDIN_VERSION_MONTHS:
        return (
            "fail",
            f"ABM_LINKEDIN_VERSION={version} is {age} months old: LinkedIn serves a version "
            "for about a year and then answers 426; set one from the last 12 months",
        )
    if age == LINKEDIN_VERSION_MONTHS:
        return "warn", f"ABM_LINKEDIN_VERSION={version} is a year old: LinkedIn sunsets it soon"
    return None


def check_linkedin(settings: Settings, today: date) -> Check:
    if settings.linkedin_mode == "sandbox":
        return Check(
            "linkedin", "ok", "sandbox: requests are written to files, none reach LinkedIn"
        )
    problems: list[str] = []
    if not settings.linkedin_access_token:
        problems.append("ABM_LINKEDIN_ACCESS_TOKEN is not set")
    urn = None
    if not settings.linkedin_ad_account:
        problems.append("ABM_LINKEDIN_AD_ACCOUNT is not set")
    else:
        try:
            urn = account_urn(settings.linkedin_ad_account)
        except ConfigError as exc:
            problems.append(str(exc))
    if not settings.linkedin_source_platform:
        problems.append(
            "ABM_LINKEDIN_SOURCE_PLATFORM is empty: audience uploads need it (LIST_UPLOAD, "
            "or the value LinkedIn assigned your app)"
        )
    version = _linkedin_version_problem(settings.linkedin_version, today)
    if version and version[0] == "fail":
        problems.append(version[1])
    if problems:
        return Check("linkedin", "fail", "api mode: " + "; ".join(problems))
    if version:
        return Check("linkedin", version[0], version[1])
    return Check(
        "linkedin",
        "ok",
        f"api mode: {urn}, version {settings.linkedin_version}, "
        f"sourcePlatform {settings.linkedin_source_platform}",
    )


def check_crm(settings: Settings) -> Check:
    """Which CRM `abm crm push/pull` use and whether its settings are complete: built as a
    push would build it, without calling it."""
    from connectors.crm import crm_choice, crm_sandbox_dir, get_crm

    choice = crm_choice(settings)
    if choice == "none":
        return Check("crm", "ok", f"ABM_CRM={settings.crm}: no CRM, nothing pushed or pulled")
    try:
        get_crm(settings)
    except ConfigError as exc:
        return Check("crm", "fail", str(exc))
    if choice == "hubspot":
        if not (settings.hubspot_access_token or "").startswith("pat-"):
            return Check(
                "crm",
                "warn",
                "ABM_HUBSPOT_ACCESS_TOKEN does not look like a private app token (pat-...)",
            )
        return Check("crm", "ok", "HubSpot: ABM_HUBSPOT_ACCESS_TOKEN is set (push and pull)")
    if choice == "salesforce":
        flow = "JWT bearer" if settings.salesforce_username else "client credentials"
        return Check(
            "crm",
            "ok",
            f"Salesforce, {flow} at {settings.salesforce_login_url}, API "
            f"{settings.salesforce_api_version}, domain field {settings.salesforce_domain_field}",
        )
    folder = crm_sandbox_dir(settings)
    found = sorted(p.name for p in folder.glob("*.csv")) if folder.is_dir() else []
    return Check(
        "crm",
        "ok",
        f"sandbox CRM in {folder}: pulls read {', '.join(found) or 'no files yet'}; "
        "nothing is invented",
    )


def check_mailbox(settings: Settings) -> Check:
    """The monitored mailbox: without one, replies, bounces and complaints to mail sent over
    SMTP are never read. Its URL is parsed here, never shown with the password."""
    if not settings.imap_url:
        unread = "replies, bounces and complaints to this SMTP mail are never read"
        if settings.email_backend == "smtp":
            return Check("mailbox", "warn", f"ABM_IMAP_URL is not set: {unread}")
        return Check("mailbox", "ok", "ABM_IMAP_URL is not set: no monitored mailbox")
    try:
        url = ImapUrl.parse(settings.imap_url)
    except ConfigError as exc:
        return Check("mailbox", "fail", f"ABM_IMAP_URL: {exc}")
    if settings.imap_ca_file and not settings.imap_ca_file.is_file():
        return Check("mailbox", "fail", f"ABM_IMAP_CA_FILE: no file at {settings.imap_ca_file}")
    if url.tls == "none" and not _loopback(url.host):
        return Check(
            "mailbox",
            "warn",
            f"ABM_IMAP_URL={url}: plain IMAP, the password crosses the network unencrypted; "
            "use imaps:// or imap:// with STARTTLS",
        )
    return Check("mailbox", "ok", f"ABM_IMAP_URL={url}: read by `abm engagement mailbox`")


def check_previous_keys(settings: Settings) -> Check:
    """Retired signing keys that still verify tracked links and unsubscribe links."""
    keys = split_keys(settings.previous_secret_keys)
    if not keys:
        return Check(
            "previous_keys",
            "ok",
            "ABM_PREVIOUS_SECRET_KEYS is not set: after a key rotation, list the old key "
            "there (for 180 days) so links already sent keep working",
        )
    if settings.secret_key and settings.secret_key in keys:
        return Check(
            "previous_keys", "warn", "ABM_PREVIOUS_SECRET_KEYS lists the current ABM_SECRET_KEY"
        )
    if any(len(key) < MIN_TOKEN_LENGTH for key in keys):
        return Check(
            "previous_keys",
            "warn",
            f"ABM_PREVIOUS_SECRET_KEYS holds a key shorter than {MIN_TOKEN_LENGTH} characters: "
            "anyone who guesses it can forge links; drop it once its links may expire",
        )
    return Check("previous_keys", "ok", f"{len(keys)} retired keys still verify old links")


def run_checks(settings: Settings, today: date | None = None) -> list[Check]:
    """Every check that applies to the configured backends, in a stable order."""
    today = today or date.today()
    email: list[Callable[[Settings], Check]] = [check_email_backend]
    if settings.email_backend == "smtp":
        email.append(check_smtp)
    if settings.email_backend == "sendgrid":
        email.append(check_sendgrid)
    checks: list[Callable[[Settings], Check]] = [
        check_database,
        check_secret_key,
        *email,
        check_public_url,
        check_postal_address,
        check_sender,
        check_dkim,
        check_sendgrid_webhook,
        check_mailgun_webhook,
        check_inbound_token,
        check_mailbox,
        check_previous_keys,
    ]
    return [
        *(check(settings) for check in checks),
        check_linkedin(settings, today),
        check_crm(settings),
    ]
