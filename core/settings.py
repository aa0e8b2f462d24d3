"""Configuration from the environment (and a `.env` file), as documented in shared/cli.md."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from datetime import timedelta
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import load_dotenv
from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.domains import normalise_domain
from core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"

EMAIL_BACKENDS = ("outbox", "console", "smtp", "sendgrid")
CHUNK_RUNNERS = ("auto", "threads", "processes", "dask")
SMTP_RELAYS = ("generic", "sendgrid", "mailgun", "ses")
# LinkedIn-Version: monthly (YYYYMM); LinkedIn serves each version for about a year after its
# release and then answers 426 NONEXISTENT_VERSION, so this is bumped, not forgotten.
LINKEDIN_VERSION = "202608"
# sourcePlatform of the DMP segments audience uploads create: LIST_UPLOAD is LinkedIn's value
# for an advertiser's own lists; a DMP partner uses the value LinkedIn assigned it.
LINKEDIN_SOURCE_PLATFORM = "LIST_UPLOAD"
CRM_BACKENDS = ("auto", "none", "hubspot", "salesforce", "sandbox")
# Salesforce REST API version of every call: Salesforce keeps each version for years, and a
# new one comes three times a year; bumped here, or set by ABM_SALESFORCE_API_VERSION.
SALESFORCE_API_VERSION = "v62.0"
CHOICES = {
    "crm": CRM_BACKENDS,
    "email_backend": EMAIL_BACKENDS,
    "chunk_runner": CHUNK_RUNNERS,
    "smtp_relay": SMTP_RELAYS,
}


class Settings(BaseSettings):
    """Every knob a user can turn, read from `ABM_*` variables."""

    model_config = SettingsConfigDict(env_prefix="ABM_", extra="ignore")

    database_url: str = Field(
        "sqlite:///.abm/abm.db", description="SQLAlchemy URL of the application database"
    )
    email_backend: str = Field("outbox", description="outbox, console, smtp or sendgrid")
    outbox_dir: Path = Field(Path(".abm/outbox"), description="where the outbox writes .eml")
    # Secrets are plain strings for the code that uses them, but `repr=False` keeps them out of
    # repr(settings) (tracebacks, debuggers, accidental logging); see docs/security.md.
    smtp_url: str | None = Field(None, repr=False)
    smtp_relay: str = Field(
        "generic",
        description="generic, sendgrid, mailgun or ses: which relay's tag header carries "
        "campaign attribution on SMTP (X-SMTPAPI, X-Mailgun-Variables, X-SES-MESSAGE-TAGS)",
    )
    dkim_domain: str | None = Field(None, description="d= of DKIM signatures (SMTP, outbox)")
    dkim_selector: str | None = Field(None, description="s= of DKIM signatures")
    dkim_private_key: Path | None = Field(
        None, description="PEM file of the DKIM private key (RSA or Ed25519)"
    )
    sendgrid_api_key: str | None = Field(None, repr=False)
    sendgrid_base_url: str = "https://api.sendgrid.com"
    sendgrid_sandbox: bool = Field(False, description="SendGrid validates but delivers nothing")
    sendgrid_webhook_public_key: str | None = Field(
        None,
        description="base64 public key(s) of SendGrid's signed event webhook; several, comma "
        "or whitespace separated, while a key is rotated",
    )
    sendgrid_inbound_token: str | None = Field(
        None,
        description="/webhooks/sendgrid/inbound requires ?token= with this value; without "
        "it the endpoint refuses every post",
        repr=False,
    )
    mailgun_webhook_signing_key: str | None = Field(
        None,
        description="Mailgun webhook signing key(s), comma or whitespace separated; a "
        "subaccount's events are accepted with the parent account's key",
        repr=False,
    )
    imap_url: str | None = Field(
        None,
        description="the monitored mailbox `abm engagement mailbox` reads: "
        "imaps://user:pass@host:993/INBOX, or imap://...:143/INBOX (STARTTLS)",
        repr=False,
    )
    imap_ca_file: Path | None = Field(
        None, description="PEM of the CA that signed the IMAP server's certificate (self-hosted)"
    )
    imap_processed_flag: str = Field(
        "$AbmProcessed",
        description="IMAP keyword set on every message the poller has read (empty: none; the "
        "stored UID cursor marks them either way)",
    )
    imap_max_bytes: int = Field(
        10_000_000, ge=10_000, description="larger messages are read up to this many bytes"
    )
    linkedin_mode: str = "sandbox"
    linkedin_access_token: str | None = Field(None, repr=False)
    linkedin_base_url: str = "https://api.linkedin.com"
    linkedin_ad_account: str | None = None
    linkedin_version: str = Field(
        LINKEDIN_VERSION, description="LinkedIn-Version header (YYYYMM) of every API call"
    )
    linkedin_source_platform: str = Field(
        LINKEDIN_SOURCE_PLATFORM,
        description="sourcePlatform of the DMP segments audience uploads create",
    )
    linkedin_sandbox_dir: Path | None = Field(
        None,
        description="sandbox mode reads analytics and lead forms from files here "
        "(default: <state dir>/sandbox/linkedin); it never invents any",
    )
    hubspot_access_token: str | None = Field(None, description="enables CRM write-back", repr=False)
    hubspot_base_url: str = "https://api.hubapi.com"
    hubspot_property_prefix: str = "abm_"
    crm: str = Field(
        "auto",
        description="the CRM pushed to and pulled from: hubspot, salesforce, sandbox (files "
        "in ABM_CRM_SANDBOX_DIR), none, or auto: hubspot when ABM_HUBSPOT_ACCESS_TOKEN is set",
    )
    crm_sandbox_dir: Path | None = Field(
        None,
        description="sandbox CRM: pushes are written to and pulls read from files here "
        "(default: <state dir>/sandbox/crm); it never invents any",
    )
    crm_stage_map: Path | None = Field(
        None, description="YAML table: CRM deal stage -> our stage, replacing the default"
    )
    salesforce_login_url: str = Field(
        "https://login.salesforce.com",
        description="where tokens come from: your My Domain URL for client credentials, "
        "https://test.salesforce.com for a sandbox org",
    )
    salesforce_client_id: str | None = Field(
        None, description="consumer key of the external client app (connected app)"
    )
    salesforce_client_secret: str | None = Field(
        None, description="consumer secret: OAuth 2.0 client-credentials flow", repr=False
    )
    salesforce_username: str | None = Field(
        None, description="the integration user: OAuth 2.0 JWT bearer flow (with the key)"
    )
    salesforce_private_key: Path | None = Field(
        None, description="PEM of the RSA key whose certificate the app holds (JWT bearer)"
    )
    salesforce_api_version: str = Field(
        SALESFORCE_API_VERSION,
        pattern=r"^v\d{2,3}\.0$",
        description="REST API version of every call, like v62.0",
    )
    salesforce_domain_field: str = Field(
        "ABM_Domain__c",
        description="the Account external id field (unique, text) holding the web domain",
    )
    salesforce_field_prefix: str = Field(
        "ABM_", description="prefix of the custom Account fields a push writes"
    )
    sender: str = "Demo Co <marketing@demo.example>"
    postal_address: str = "Demo Co, 1 Example Street, Springfield, 00000, United States"
    secret_key: str | None = Field(None, repr=False)
    public_url: str = "http://127.0.0.1:8025"
    # First-party tracking (abm/tracking.py): links, the open pixel and the site script
    previous_secret_keys: str | None = Field(
        None,
        description="keys ABM_SECRET_KEY had before a rotation, comma or whitespace "
        "separated: links they signed keep working while they are listed (keep one 180 days)",
        repr=False,
    )
    site_domains: str | None = Field(
        None,
        description="your own website's domains, comma separated: a tracked click on a link "
        "to one hands the site script a visitor id (a campaign's tracking.site_domains wins)",
    )
    click_scanner_seconds: int = Field(
        60, ge=0, le=3600, description="a click this soon after sending is a mail scanner's"
    )
    visitor_days: int = Field(
        90, ge=1, le=730, description="how long after a click the site's page views count"
    )
    icp_rules: Path | None = Field(None, description="ICP rules YAML replacing the default")
    title_rules: Path | None = Field(None, description="title table YAML merged over defaults")
    currency: str = Field(
        "USD", pattern=r"^[A-Z]{3}$", description="ISO code revenue is stored and compared in"
    )
    currency_rates: Path | None = Field(
        None, description="dated currency rates YAML replacing the indicative default"
    )
    engagement_rules: Path | None = Field(
        None, description="engagement rules YAML (weights, decay, stages) replacing the default"
    )
    templates_dir: Path = Field(REPO_ROOT / "templates", description="Jinja2 templates")
    # What the relay and the sender's reputation allow (stages/delivery/rates.py, reputation.py)
    send_rate_per_second: float | None = Field(
        None, gt=0, description="emails a second to the email backend, all workers together"
    )
    send_max_per_day: int | None = Field(
        None, ge=1, description="emails in any 24 hours, all workers and campaigns together"
    )
    warmup: str = Field(
        "off", description="off, on (the default ramp) or a YAML ramp file: day -> emails"
    )
    recipient_domain_limits: str | None = Field(
        None,
        description="emails per hour or day to one recipient domain, all campaigns together: "
        "gmail.com=500/h, outlook.com=2000/d",
    )
    pause_complaint_percent: float = Field(
        0.3, gt=0, le=100, description="pause a campaign at this share of spam complaints"
    )
    pause_bounce_percent: float = Field(
        5.0, gt=0, le=100, description="pause a campaign at this share of hard bounces"
    )
    reputation_window: int = Field(1000, ge=1, description="the last N emails the rates cover")
    reputation_min_sent: int = Field(500, ge=1, description="judge no fewer emails than this")
    chunk_size: int = Field(1000, ge=1, le=50_000, description="contacts per delivery task")
    chunk_runner: str = Field(
        "auto",
        description="threads (one core), processes (every core), dask (the workers of the "
        "Dask cluster at ABM_DASK_SCHEDULER, on any machines), or auto: processes for steps "
        "of 8 chunks or more",
    )
    dask_scheduler: str | None = Field(
        None,
        description="address of the Dask scheduler chunk tasks go to when ABM_CHUNK_RUNNER "
        "is dask, like tcp://dask-scheduler:8786",
    )
    chunk_workers: int | None = Field(
        None, ge=1, le=64, description="chunk tasks at once: 4 threads, or a process per core"
    )
    lease_seconds: int = Field(
        600, ge=1, description="how long a claimed chunk may take before it counts as crashed"
    )
    state_dir: Path = Field(Path(".abm"), description="local state: database, secret, demo")
    # The console (abm/console): who may sign in, and how
    console_users: Path | None = Field(
        None,
        description="YAML file of console users (name, role viewer or operator, argon2 "
        "password_hash), written by `abm console add-user` with mode 0600 and re-read when "
        "it changes (default: <state dir>/console-users.yaml)",
    )
    console_auth: str = Field(
        "password",
        description="how console users sign in: password (the users file's hashes) or proxy "
        "(a reverse proxy that has authenticated them names them in ABM_CONSOLE_PROXY_HEADER)",
    )
    console_proxy_header: str | None = Field(
        None,
        validate_default=True,
        description="ABM_CONSOLE_AUTH=proxy: the request header holding the signed-in user's "
        "name, like X-Forwarded-User; believed only from ABM_CONSOLE_TRUSTED_PROXIES",
    )
    console_trusted_proxies: str = Field(
        "127.0.0.1, ::1",
        description="ABM_CONSOLE_AUTH=proxy: addresses or networks (CIDR), comma separated, "
        "of the proxies whose user header is believed; from any other peer it is refused",
    )

    @field_validator("crm", "email_backend", "chunk_runner", "smtp_relay")
    @classmethod
    def _one_of_the_choices(cls, value: str, info: ValidationInfo) -> str:
        choices = CHOICES[info.field_name]
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    @field_validator("dask_scheduler")
    @classmethod
    def _dask_needs(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Chunks on other machines write to one shared ledger: PostgreSQL, and a scheduler
        to reach (checked here, before a run writes anything)."""
        if info.data.get("chunk_runner") != "dask":
            return value
        if not value:
            raise ValueError("ABM_CHUNK_RUNNER=dask needs the scheduler: tcp://HOST:8786")
        if not str(info.data.get("database_url", "")).startswith("postgresql"):
            raise ValueError(
                "ABM_CHUNK_RUNNER=dask runs chunks on other machines, which all write to one "
                "ledger: set ABM_DATABASE_URL to PostgreSQL (postgresql+psycopg://...), "
                "not SQLite"
            )
        return value

    @field_validator("console_auth")
    @classmethod
    def _console_auth(cls, value: str) -> str:
        if value not in ("password", "proxy"):
            raise ValueError("must be password or proxy")
        return value

    @field_validator("console_proxy_header")
    @classmethod
    def _console_proxy_header(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Proxy sign-in without a header to read would trust nothing or anything: refused
        at start, whatever the command."""
        if value is not None and not re.fullmatch(r"[A-Za-z0-9-]{1,80}", value):
            raise ValueError("must be an HTTP header name, like X-Forwarded-User")
        if info.data.get("console_auth") == "proxy" and not value:
            raise ValueError(
                "ABM_CONSOLE_AUTH=proxy needs the header your proxy names the user in: "
                "set ABM_CONSOLE_PROXY_HEADER, like X-Forwarded-User"
            )
        return value

    @field_validator("console_trusted_proxies")
    @classmethod
    def _console_trusted_proxies(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("sender")
    @classmethod
    def _sender_address(cls, value: str) -> str:
        return check_sender(value)

    @field_validator("recipient_domain_limits")
    @classmethod
    def _domain_limits(cls, value: str | None) -> str | None:
        parse_domain_limits(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        if not value.isascii() or any(ch.isspace() or ord(ch) < 32 for ch in value):
            # it goes into the List-Unsubscribe header, which is ASCII
            raise ValueError(
                "must be ASCII without spaces: an international domain as xn--..., "
                "other characters %-encoded"
            )
        return value

    @field_validator("site_domains")
    @classmethod
    def _site_domains(cls, value: str | None) -> str | None:
        for part in filter(None, (p.strip() for p in (value or "").split(","))):
            normalise_domain(part)  # a ValueError names the value that is not a domain
        return value

    @field_validator("imap_processed_flag")
    @classmethod
    def _imap_keyword(cls, value: str) -> str:
        # an IMAP atom: no space, parentheses, brackets, wildcards, quotes or backslash
        if value and not re.fullmatch(r"[!#$&'+,\-.0-9:;<=>?@A-Z^_`a-z|}~]{1,64}", value):
            raise ValueError("must be an IMAP keyword such as $AbmProcessed (no spaces)")
        return value

    @field_validator("linkedin_mode")
    @classmethod
    def _known_linkedin_mode(cls, value: str) -> str:
        if value not in ("sandbox", "api"):
            raise ValueError("must be sandbox or api")
        return value

    @field_validator("linkedin_version")
    @classmethod
    def _linkedin_version(cls, value: str) -> str:
        if not re.fullmatch(r"20\d\d(0[1-9]|1[0-2])", value):
            raise ValueError(f"must be a LinkedIn API version as YYYYMM, e.g. {LINKEDIN_VERSION}")
        return value

    @field_validator("linkedin_source_platform")
    @classmethod
    def _linkedin_source_platform(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Z][A-Z0-9_]*", value):
            raise ValueError(
                "must be a LinkedIn sourcePlatform value as LinkedIn spells it, in capitals: "
                f"{LINKEDIN_SOURCE_PLATFORM}, or the value LinkedIn assigned your DMP app"
            )
        return value

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        """The database URL is shown with its password masked."""
        for name, value in super().__repr_args__():
            yield name, (safe_url(value) if name == "database_url" else value)

    def signing_key(self) -> str:
        """The key that signs unsubscribe links, generated once into `.abm/secret`."""
        if self.secret_key:
            return self.secret_key
        path = self.state_dir / "secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        return path.read_text().strip()


def check_sender(value: str) -> str:
    """`Name <address>` whose address can go into a header as it is: ASCII, one @, no line
    break (the name may be anything: it is encoded). A non-ASCII address made every
    message fail to serialise, after the run had started."""
    _, address = parseaddr(value)
    if "@" not in address or any(ch in value for ch in "\r\n"):
        raise ValueError("must be an address like 'Demo Co <marketing@demo.example>'")
    if not address.isascii():
        raise ValueError(
            f"the address {address!r} must be ASCII: write an international domain as xn--..."
        )
    return value


_DOMAIN_LIMIT = re.compile(r"([a-z0-9.-]+\.[a-z]{2,})=([0-9]+)/(h|d)")


def parse_domain_limits(text: str | None) -> dict[str, tuple[int, timedelta]]:
    """`gmail.com=500/h, outlook.com=2000/d` as domain -> (emails, per how long)."""
    limits: dict[str, tuple[int, timedelta]] = {}
    for part in filter(None, (p.strip().lower() for p in (text or "").split(","))):
        found = _DOMAIN_LIMIT.fullmatch(part.replace(" ", ""))
        if found is None or int(found[2]) < 1:
            raise ValueError(f"{part!r}: write domain=N/h or domain=N/d, like gmail.com=500/h")
        limits[found[1]] = (int(found[2]), timedelta(hours=1 if found[3] == "h" else 24))
    return limits


def parse_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """`127.0.0.1, ::1, 10.0.0.0/8` as networks (an address is a network of one)."""
    networks = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(
                f"{part!r} is not an IP address or network: write 10.0.0.5 or 10.0.0.0/8"
            ) from None
    return networks


def safe_url(url: str) -> str:
    """A database URL fit to print: the password masked, the rest as given."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: show nothing that might be a password
        scheme, sep, _ = url.partition("://")
        return f"{scheme}://***" if sep else "***"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings for this process; `.env` in the working directory is read first.

    A bad value is a ConfigError naming the variable; the value itself is not repeated,
    since it may be a secret."""
    load_dotenv(Path.cwd() / ".env", override=False)
    try:
        return Settings()
    except ValidationError as exc:
        problems = [
            f"ABM_{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ConfigError("; ".join(problems)) from None


def reset_settings() -> None:
    """Forget cached settings (tests and the CLI change the environment)."""
    get_settings.cache_clear()
