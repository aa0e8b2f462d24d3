"""The SMTP backend: one reused connection, one transaction per message, every reply mapped to
accepted, retryable or permanent.

SMTP cannot de-duplicate by Message-ID, so `batch_size` is 1: the ledger commits after every
message and a crash leaves at most one message uncertain. A per-message problem never raises;
the ledger always gets one result per message. Only a bad URL raises (`ConfigError`).

Each message goes out with `X-ABM-Message-Id` and the tag header of the relay (`relay`,
ABM_SMTP_RELAY), so that the relay's events name the message and not only the person, and
signed when a DKIM signer is given (connectors/email/attribution.py, dkim.py)."""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses
from functools import cache, lru_cache, partial
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from connectors.email.attribution import (
    MESSAGE_ID_HEADER,
    Attribution,
    read_tracking,
    relay_headers,
)
from connectors.email.base import EmailBackend, Outcome, SendResult
from connectors.email.dkim import DkimSigner
from connectors.email.message import header_block
from core.errors import ConfigError
from core.settings import SMTP_RELAYS

_CRLF = compat32.clone(linesep="\r\n")
_URL_FORMS = (
    "expected smtp://user:pass@host:port, smtp://user:pass@host:587?starttls=1 or "
    "smtps://user:pass@host:465, with @ : / ? # % in the user name or password percent-encoded"
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_ADDRESS = re.compile(r"[^\s<>@]+@[^\s<>@]+")
# One mailbox without quotes, comments, groups or lists: a To header as we write it. Other
# forms go through the standard library's parser.
_SIMPLE_MAILBOX = re.compile(
    r'[^<>",;:()\\@\[\]]*<([^\s<>@",;:()\\\[\]]+@[^\s<>@",;:()\\\[\]]+)>'
    r'|([^\s<>@",;:()\\\[\]]+@[^\s<>@",;:()\\\[\]]+)'
)
# a bare local@domain: smtplib.quoteaddr would give it back in <> unchanged
_PLAIN_ADDRESS = re.compile(r'[^\s<>@",;:()\\\[\]]+@[^\s<>@",;:()\\\[\]]+')
_STATUS_CODE = re.compile(r"^\d\.\d{1,3}\.\d{1,3}\s+")
_QUEUE_ID = (
    re.compile(r"queued as\s+<?([^\s<>]+?)>?(?:\s|$)", re.IGNORECASE),  # Postfix
    re.compile(r"\bid=<?([^\s<>;,]+?)>?(?:[\s;,]|$)", re.IGNORECASE),  # Exim
    re.compile(r"^([^\s<>]+)\s+message accepted for delivery", re.IGNORECASE),  # Sendmail
    re.compile(r"^ok\s+([^\s<>]*\d[^\s<>]*)$", re.IGNORECASE),  # Amazon SES
)


def _bad_url(problem: str) -> ConfigError:
    """Never quote the URL back: with an unencoded / ? or # any part of it may be password."""
    return ConfigError(f"SMTP URL: {problem}; {_URL_FORMS}")


@dataclass(frozen=True)
class SmtpUrl:
    """A parsed SMTP URL. `str()` and `repr()` mask the password."""

    host: str
    port: int
    implicit_tls: bool = False
    starttls: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> SmtpUrl:
        """`smtp://`, `smtp://...?starttls=1` or `smtps://`; user and password percent-decoded."""
        if not isinstance(url, str) or not url.strip():
            raise _bad_url("it is empty")
        try:
            parts = urlsplit(url.strip())
        except ValueError:
            raise _bad_url("it is not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise _bad_url("the scheme must be smtp or smtps")
        try:
            port = parts.port
        except ValueError:
            raise _bad_url("the port must be a number from 1 to 65535") from None
        if port == 0:
            raise _bad_url("the port must be a number from 1 to 65535")
        if not parts.hostname:
            raise _bad_url("it names no host")
        if parts.path not in ("", "/") or parts.fragment:
            raise _bad_url("it has a path or fragment after the host")
        starttls = False
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key.lower() != "starttls":
                raise _bad_url("the only query parameter understood is starttls")
            if value.lower() not in _TRUE | _FALSE:
                raise _bad_url("starttls must be 1 or 0")
            starttls = value.lower() in _TRUE
        if scheme == "smtps" and starttls:
            raise _bad_url("smtps:// is TLS from the start; starttls=1 is for smtp://")
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if user is None and password:
            raise _bad_url("it has a password but no user name")
        if user is not None and password is None:
            raise _bad_url("it has a user name but no password")
        if not f"{user or ''}{password or ''}".isascii():
            raise _bad_url("smtplib can only send an ASCII user name and password")
        default_port = 465 if scheme == "smtps" else 587 if starttls else 25
        return cls(
            host=parts.hostname,
            port=port or default_port,
            implicit_tls=scheme == "smtps",
            starttls=starttls,
            user=user,
            password=password,
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        credentials = f"{quote(self.user, safe='')}:***@" if self.user is not None else ""
        scheme = "smtps" if self.implicit_tls else "smtp"
        query = "?starttls=1" if self.starttls else ""
        return f"{scheme}://{credentials}{host}:{self.port}{query}"


class _Unavailable(Exception):
    """No usable connection (connect, TLS or AUTH failed): the rest of the batch must wait."""


class _Refused(_Unavailable):
    """The relay refuses our credentials or its certificate fails verification: nothing
    gets through until a person fixes a setting, so the run stops and nothing is dead."""


class _Dropped(Exception):
    """The connection went away under a transaction; the message may be tried again."""


@dataclass(frozen=True)
class _Envelope:
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    data: bytes

    @property
    def needs_smtputf8(self) -> bool:
        return not all(address.isascii() for address in (self.sender, *self.recipients))


class SmtpBackend(EmailBackend):
    """Sends over SMTP, reusing one connection across messages and batches until `close()`.

    The connection is made lazily at the first message, not in `open()`, so an unreachable
    server turns into `retryable` results for the ledger rather than an exception out of
    `with backend:`. Not thread-safe: use one instance per task.

    Outcomes: 2xx `accepted` (`provider_id` = the queue id from the final 250 reply, if the
    server names one); 4xx `retryable`; 5xx `permanent`, with code and text in `error`. A
    message goes to all its recipients or to none (RSET at the first refusal). A dropped
    connection, or a 421 reply, means reconnect and try that message once more; a second drop
    makes it `retryable`. A drop after the final dot but before the server's reply is the one
    case where that retry can deliver twice: SMTP gives no way to ask.

    If connecting fails (refused, timeout, TLS, STARTTLS missing, AUTH rejected), that message
    and the rest of the batch are `retryable` with the reason, and the next batch tries to
    connect again.
    """

    name = "smtp"
    idempotent = False
    batch_size = 1

    def __init__(
        self,
        url: str,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        relay: str = "generic",
        signer: DkimSigner | None = None,
    ) -> None:
        self.url = SmtpUrl.parse(url)
        if not timeout > 0:
            raise ConfigError("SMTP timeout must be a positive number of seconds")
        if relay not in SMTP_RELAYS:
            raise ConfigError(f"SMTP relay {relay!r}: use one of {', '.join(SMTP_RELAYS)}")
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.relay = relay
        self.signer = signer
        self._connection: smtplib.SMTP | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        relay: str = "generic",
        signer: DkimSigner | None = None,
    ) -> SmtpBackend:
        """The backend `ABM_SMTP_URL` describes."""
        return cls(url, timeout=timeout, ssl_context=ssl_context, relay=relay, signer=signer)

    def __repr__(self) -> str:
        return f"SmtpBackend({str(self.url)!r})"

    def open(self) -> None:
        """Nothing to do until the first message: see the class docstring."""

    def close(self) -> None:
        """QUIT the connection this backend made, if any; a dead one is simply dropped."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(OSError):
                connection.quit()
            connection.close()

    def send_messages(self, messages: Sequence[Message]) -> list[SendResult]:
        """One result per message, in order; a message or server problem never raises."""
        results: list[SendResult] = []
        unavailable: str | None = None
        for message in messages:
            envelope = _envelope(message, self.relay, self.signer)
            if isinstance(envelope, SendResult):
                results.append(envelope)
                continue
            if unavailable is None:
                try:
                    results.append(self._send(envelope))
                    continue
                except _Refused as exc:
                    unavailable, outcome = str(exc), "blocked"
                except _Unavailable as exc:
                    unavailable, outcome = str(exc), "retryable"
            results.append(SendResult(envelope.message_id, outcome, error=unavailable))
        return results

    def _send(self, envelope: _Envelope) -> SendResult:
        """One message; if the connection drops under it, once more on a fresh connection."""
        lost = ""
        for _ in range(2):
            connection = self._connection or self._connect()
            try:
                return self._transact(connection, envelope)
            except _Dropped as exc:
                self._discard()
                lost = self._redact(f"connection lost: {exc}")
        return SendResult(envelope.message_id, "retryable", error=lost)

    def _transact(self, connection: smtplib.SMTP, envelope: _Envelope) -> SendResult:
        """MAIL, RCPT per recipient, DATA; a refusal ends the transaction with RSET."""
        options: list[str] = []
        if envelope.needs_smtputf8:
            if not connection.has_extn("smtputf8"):
                return SendResult(
                    envelope.message_id,
                    "permanent",
                    error="a non-ASCII address needs SMTPUTF8, which the server does not offer",
                )
            options.append("SMTPUTF8")
        if not envelope.data.isascii() and connection.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        steps: list[tuple[str, Callable[[], tuple[int, bytes]]]] = [
            ("MAIL FROM", partial(_mail, connection, envelope.sender, options)),
            *(("RCPT TO", partial(_rcpt, connection, rcpt)) for rcpt in envelope.recipients),
            ("DATA", partial(_data, connection, envelope.data)),
        ]
        reply = b""
        try:
            for stage, step in steps:
                code, reply = step()
                if code == 421:
                    raise _Dropped(f"{stage}: {_reply_text(code, reply)}")
                if not 200 <= code < 300:
                    return self._refused(connection, envelope, stage, code, reply)
        except smtplib.SMTPServerDisconnected as exc:
            raise _Dropped(str(exc) or "server disconnected") from None
        except (smtplib.SMTPException, ValueError) as exc:
            self._reset(connection)
            return SendResult(envelope.message_id, "permanent", error=self._redact(_describe(exc)))
        except OSError as exc:
            raise _Dropped(f"{type(exc).__name__}: {exc}") from None
        return SendResult(envelope.message_id, "accepted", provider_id=queue_id(reply))

    def _refused(
        self, connection: smtplib.SMTP, envelope: _Envelope, stage: str, code: int, reply: bytes
    ) -> SendResult:
        self._reset(connection)
        outcome: Outcome = "permanent" if 500 <= code < 600 else "retryable"
        error = self._redact(f"{stage}: {_reply_text(code, reply)}")
        if outcome == "permanent" and stage == "MAIL FROM":
            # the server refuses our sender, not this recipient: no later message gets past
            outcome = "blocked"
            error += " (the relay refuses the From address: check ABM_SENDER and the relay)"
        return SendResult(envelope.message_id, outcome, error=error)

    def _reset(self, connection: smtplib.SMTP) -> None:
        """RSET so the next message can use the connection; drop it if even that fails."""
        try:
            code, _ = connection.rset()
        except OSError:
            code = 0
        if code != 250:
            self._discard()

    def _connect(self) -> smtplib.SMTP:
        """A connection ready for MAIL FROM: TLS as the URL asks, then AUTH if it has a user."""
        url = self.url
        stage = f"connecting to {url.host}:{url.port}"
        connection: smtplib.SMTP | None = None
        try:
            if url.implicit_tls:
                connection = smtplib.SMTP_SSL(
                    url.host,
                    url.port,
                    local_hostname=_local_hostname(),
                    timeout=self.timeout,
                    context=self._tls_context(),
                )
            else:
                connection = smtplib.SMTP(
                    url.host, url.port, local_hostname=_local_hostname(), timeout=self.timeout
                )
            connection.ehlo_or_helo_if_needed()
            if url.starttls:
                stage = "STARTTLS"
                if not connection.has_extn("starttls"):
                    raise _Unavailable("the server does not offer STARTTLS, which the URL asks for")
                connection.starttls(context=self._tls_context())
                connection.ehlo_or_helo_if_needed()
            if url.user is not None:
                stage = f"AUTH as {url.user}"
                connection.login(url.user, url.password or "")
        except (smtplib.SMTPAuthenticationError, ssl.SSLCertVerificationError) as exc:
            if connection is not None:
                connection.close()
            raise _Refused(
                self._redact(f"SMTP {stage} failed: {_describe(exc)} (check ABM_SMTP_URL)")
            ) from None
        except (_Unavailable, OSError, ValueError) as exc:
            if connection is not None:
                connection.close()
            raise _Unavailable(self._redact(f"SMTP {stage} failed: {_describe(exc)}")) from None
        self._connection = connection
        return connection

    def _discard(self) -> None:
        """Forget a connection that is gone or unusable, without the QUIT it cannot answer."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _tls_context(self) -> ssl.SSLContext:
        if self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()
        return self.ssl_context

    def _redact(self, text: str) -> str:
        """Belt and braces: a server or library echoing the password must not leak it."""
        password = self.url.password
        if password:
            for form in {password, quote(password, safe="")}:
                text = text.replace(form, "***")
        return text


def queue_id(reply: bytes) -> str | None:
    """The queue id in a final 250 reply (Postfix, Exim, Sendmail, Amazon SES), if any."""
    for line in reply.decode("utf-8", "replace").splitlines():
        line = _STATUS_CODE.sub("", line.strip())
        for pattern in _QUEUE_ID:
            match = pattern.search(line)
            if match:
                return match.group(1)
    return None


def _quoted(address: str) -> str:
    """`smtplib.quoteaddr(address)` without parsing a plain `local@domain` again (a tenth
    of a millisecond per message); property-tested against quoteaddr."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _mail(connection: smtplib.SMTP, sender: str, options: list[str]) -> tuple[int, bytes]:
    """`SMTP.mail` with `_quoted`. SMTPUTF8 goes through smtplib, which also switches the
    command encoding."""
    if "SMTPUTF8" in options:
        return connection.mail(sender, options)
    extra = " " + " ".join(options) if options and connection.does_esmtp else ""
    connection.putcmd("mail", f"from:{_quoted(sender)}{extra}")
    return connection.getreply()


def _rcpt(connection: smtplib.SMTP, recipient: str) -> tuple[int, bytes]:
    """`SMTP.rcpt` with `_quoted`."""
    connection.putcmd("rcpt", f"to:{_quoted(recipient)}")
    return connection.getreply()


def _data(connection: smtplib.SMTP, data: bytes) -> tuple[int, bytes]:
    """`SMTP.data` reporting a refused DATA command as a reply instead of raising."""
    try:
        return connection.data(data)
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code, exc.smtp_error


def _envelope(
    message: Message, relay: str = "generic", signer: DkimSigner | None = None
) -> _Envelope | SendResult:
    """MAIL FROM is the Sender address when there is one (a message sent as an account's
    owner: bounces still reach the campaign's sender, not the owner), else the From; RCPT TO
    the To addresses; a message without them fails. The data is the message with our
    attribution headers in front, signed by `signer`."""
    message_id = str(message.get("Message-ID") or "").strip()
    if not message_id:
        return SendResult("", "permanent", error="message has no Message-ID")
    header = "Sender" if message.get("Sender") else "From"
    senders = _addresses(message, header)
    recipients = _addresses(message, "To")
    if senders is None or len(senders) != 1:
        return SendResult(message_id, "permanent", error=f"{header} must hold exactly one address")
    if not recipients:
        return SendResult(message_id, "permanent", error="To holds no valid address")
    try:
        data = header_block(_attribution(message, message_id, relay)) + message.as_bytes(
            policy=_CRLF
        )
        if signer is not None:
            data = signer.sign(data)
    except Exception as exc:  # one malformed message must not stop the batch
        return SendResult(message_id, "permanent", error=f"cannot serialise message: {exc}")
    return _Envelope(message_id, senders[0], recipients, data)


def _attribution(message: Message, message_id: str, relay: str) -> list[tuple[str, str]]:
    """`X-ABM-Message-Id` (a relay may replace the Message-ID) and the relay's tag header."""
    headers = [] if message.get(MESSAGE_ID_HEADER) else [(MESSAGE_ID_HEADER, message_id)]
    if relay != "generic":
        attribution = Attribution.of(message, message_id)
        headers += relay_headers(relay, attribution, read_tracking(message))
    return headers


def _addresses(message: Message, header: str) -> tuple[str, ...] | None:
    """The addresses in a header, or None if any of them is not a plain mailbox."""
    values = message.get_all(header, [])
    if len(values) == 1:
        simple = _SIMPLE_MAILBOX.fullmatch(str(values[0]))
        if simple:  # `Name <a@b.example>` or `a@b.example`: what getaddresses would find
            return (simple[1] or simple[2],)
    return _mailboxes(tuple(str(value) for value in values))


@lru_cache(maxsize=256)
def _mailboxes(values: tuple[str, ...]) -> tuple[str, ...] | None:
    """Parsed once per distinct header: every message of a campaign has the same From."""
    addresses = [address for _, address in getaddresses(list(values)) if address]
    if not all(_ADDRESS.fullmatch(address) for address in addresses):
        return None
    return tuple(dict.fromkeys(addresses))


def _reply_text(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return f"{code} {' '.join(text.split())}".strip()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply_text(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, _Unavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@cache
def _local_hostname() -> str:
    """The EHLO name, worked out once as smtplib does: its own lookup runs per connection and
    can take seconds where reverse DNS is slow."""
    fqdn = socket.getfqdn()
    if "." in fqdn:
        return fqdn
    try:
        return f"[{socket.gethostbyname(socket.gethostname())}]"
    except OSError:
        return "[127.0.0.1]"
