"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 and a free port, with a handler that
records what arrives and refuses or drops the connection on cue, so backends are tested
against the protocol rather than a mock of smtplib."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

DROP = "drop"
"""A reply that is no reply: the server aborts the connection instead."""


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool


@dataclass
class RecordingHandler:
    """Records envelopes, connections and commands; replies as the test sets it up.

    `rcpt_replies` and `data_replies` map a recipient to the reply for RCPT or for the end of
    DATA (or `DROP`); `mail_replies` maps a sender to the reply for MAIL FROM. With
    `drop_after=N` every connection is dropped (or answered 421) at the MAIL FROM after N
    delivered messages."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: dict[str, str] = field(default_factory=dict)
    mail_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str = "250 OK"
    drop_after: int | None = None
    drop_reply: str = DROP
    received: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    delivered_on: dict[int, int] = field(default_factory=dict)

    @property
    def connections(self) -> int:
        """Connections that started a transaction (the controller's own probe does not)."""
        return len(self.sessions)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        if id(session) not in self.delivered_on:
            self.sessions.append(session)
            self.delivered_on[id(session)] = 0
        self.commands.append("MAIL")
        if self.drop_after is not None and self.delivered_on[id(session)] >= self.drop_after:
            return _reply(server, self.drop_reply)
        reply = self.mail_replies.get(address)
        if reply:
            return _reply(server, reply)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        self.commands.append("RCPT")
        reply = self.rcpt_replies.get(address)
        if reply:
            return _reply(server, reply)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.commands.append("DATA")
        reply = self.data_replies.get(envelope.rcpt_tos[0], self.data_reply)
        if reply.startswith("250"):
            tls = server.transport.get_extra_info("ssl_object") is not None
            content = envelope.original_content or b""
            self.received.append(Received(envelope.mail_from, envelope.rcpt_tos, content, tls))
            self.delivered_on[id(session)] += 1
        return _reply(server, reply)

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.commands.append("RSET")
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.commands.append("QUIT")
        return "221 Bye"


def _reply(server: SMTP, reply: str) -> str:
    if reply == DROP:
        server.transport.abort()
        return "421 unreachable: the connection is gone"
    return reply


@dataclass
class Authenticator:
    """Accepts one user name and password; records each attempt's mechanism and login."""

    user: str
    password: str
    attempts: list[tuple[str, str, bool]] = field(default_factory=list)

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        success = login == self.user and password == self.password
        self.attempts.append((mechanism, login, success))
        return AuthResult(success=success, handled=False)


def free_port() -> int:
    """A port nobody listens on right now (aiosmtpd's port=0 support varies by version)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def smtp_server(handler: RecordingHandler, **options: Any) -> Iterator[Controller]:
    """An aiosmtpd server on 127.0.0.1; `options` go to `Controller` (ssl_context=) and to
    `SMTP` (authenticator=, auth_require_tls=, tls_context=, require_starttls=, ...)."""
    for attempt in range(5):
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **options)
        try:
            controller.start()
            break
        except OSError:  # another process took the port between probe and bind
            if attempt == 4:
                raise
    try:
        yield controller
    finally:
        controller.stop()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 and localhost, written to `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_tls_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context
