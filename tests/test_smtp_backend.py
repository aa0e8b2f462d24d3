"""The SMTP backend against a real SMTP server (aiosmtpd on loopback): connection reuse,
reply codes mapped to outcomes, reconnects, AUTH, STARTTLS, implicit TLS and URL parsing."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import Message
from email.mime.text import MIMEText
from pathlib import Path
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from hypothesis import example, given, settings
from hypothesis import strategies as st
from smtp_server import (
    DROP,
    Authenticator,
    RecordingHandler,
    free_port,
    self_signed_certificate,
    server_tls_context,
    smtp_server,
)

from connectors.email.smtp import (
    SmtpBackend,
    SmtpUrl,
    _addresses,
    _mailboxes,
    _quoted,
    queue_id,
)
from core.errors import ConfigError
from stages.content.rendering import EmailParts, Sender, build_message

SENDER = Sender(name="Demo Co", email="marketing@demo.example", company="Demo Co")
PASSWORD = "s3cr@t:p/ss%w?rd#"


def make_message(number: int, to: str | None = None) -> Message:
    parts = EmailParts(
        subject=f"Hello {number} – über alles",
        text=f"Plain text {number}.\n.leading dot stays\n",
        html=f"<p>HTML {number}</p>",
    )
    return build_message(
        parts,
        sender=SENDER,
        to_email=to or f"person{number}@client.example",
        to_name=f"Pérson {number}",
        message_id=f"<abm.{number}.test@demo.example>",
        unsubscribe_url=f"http://127.0.0.1:8025/unsubscribe/t{number}",
        campaign_key="test",
    )


def url(
    controller: Controller, scheme: str = "smtp", credentials: str = "", query: str = ""
) -> str:
    """The backend URL of a test server."""
    return f"{scheme}://{credentials}{controller.hostname}:{controller.port}{query}"


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def server(handler: RecordingHandler) -> Iterator[Controller]:
    with smtp_server(handler) as controller:
        yield controller


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """Trusts the test certificate and nothing else; hostname checking stays on."""
    return ssl.create_default_context(cafile=str(certificate[0]))


def test_a_batch_goes_over_one_connection(server: Controller, handler: RecordingHandler) -> None:
    messages = [make_message(n) for n in range(5)]
    with SmtpBackend(url(server), timeout=5) as backend:
        results = backend.send_messages(messages)
    assert [r.outcome for r in results] == ["accepted"] * 5
    assert [r.message_id for r in results] == [m["Message-ID"] for m in messages]
    assert handler.connections == 1
    assert handler.commands[-1] == "QUIT"


def test_the_connection_is_reused_across_batches(
    server: Controller, handler: RecordingHandler
) -> None:
    with SmtpBackend(url(server), timeout=5) as backend:
        for n in range(3):
            assert backend.send_messages([make_message(n)])[0].accepted
    assert handler.connections == 1
    assert len(handler.received) == 3


def test_messages_arrive_intact(server: Controller, handler: RecordingHandler) -> None:
    message = make_message(7)
    with SmtpBackend(url(server), timeout=5) as backend:
        backend.send_messages([message])
    (received,) = handler.received
    assert received.mail_from == "marketing@demo.example"
    assert received.rcpt_tos == ["person7@client.example"]
    parsed = message_from_bytes(received.content, policy=policy.default)
    assert parsed["From"] == "Demo Co <marketing@demo.example>"
    assert parsed["To"] == "Pérson 7 <person7@client.example>"
    assert parsed["Subject"] == "Hello 7 – über alles"
    assert parsed["Message-ID"] == "<abm.7.test@demo.example>"
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == "Plain text 7.\n.leading dot stays\n"
    assert parsed.get_body(("html",)).get_content().rstrip() == "<p>HTML 7</p>"


def test_the_queue_id_in_the_250_reply_becomes_the_provider_id(
    server: Controller, handler: RecordingHandler
) -> None:
    handler.data_reply = "250 2.0.0 Ok: queued as 4F2A81C0123"
    with SmtpBackend(url(server), timeout=5) as backend:
        (result,) = backend.send_messages([make_message(1)])
    assert result.provider_id == "4F2A81C0123"


def test_a_plain_250_reply_gives_no_provider_id(server: Controller) -> None:
    with SmtpBackend(url(server), timeout=5) as backend:
        (result,) = backend.send_messages([make_message(1)])
    assert result.accepted and result.provider_id is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"2.0.0 Ok: queued as 4F2A81C0123", "4F2A81C0123"),
        (b"OK id=1kqJ8x-0003Ab-2C", "1kqJ8x-0003Ab-2C"),
        (b"2.0.0 x8QHn5Yq012345 Message accepted for delivery", "x8QHn5Yq012345"),
        (b"Ok 0100018c1b2a3b4c-5d6e7f80-000000", "0100018c1b2a3b4c-5d6e7f80-000000"),
        (b"OK", None),
        (b"2.0.0 Ok", None),
        (b"2.0.0 Message accepted for delivery", None),
        (b"Ok thanks", None),
    ],
)
def test_queue_ids_of_common_servers_are_recognised(reply: bytes, expected: str | None) -> None:
    assert queue_id(reply) == expected


@pytest.mark.parametrize(
    ("stage", "reply", "outcome"),
    [
        ("rcpt", "450 4.2.1 Mailbox busy, try later", "retryable"),
        ("rcpt", "550 5.1.1 User unknown", "permanent"),
        ("data", "451 4.3.0 Temporary local problem", "retryable"),
        ("data", "554 5.7.1 Rejected as spam", "permanent"),
        ("mail", "553 5.7.1 Sender not allowed", "blocked"),  # our sender, not them
    ],
)
def test_refusals_map_to_outcomes_and_the_connection_carries_on(
    server: Controller, handler: RecordingHandler, stage: str, reply: str, outcome: str
) -> None:
    refused = make_message(1)
    if stage == "mail":
        handler.mail_replies["marketing@demo.example"] = reply
        following = make_message(2)
    else:
        replies = handler.rcpt_replies if stage == "rcpt" else handler.data_replies
        replies["person1@client.example"] = reply
        following = make_message(2)
    with SmtpBackend(url(server), timeout=5) as backend:
        first, second = backend.send_messages([refused, following])
    assert first.outcome == outcome
    assert first.error is not None and reply.split()[0] in first.error
    assert reply.split(maxsplit=1)[1] in first.error
    if stage == "mail":
        assert second.outcome == outcome
    else:
        assert second.accepted
        assert [r.rcpt_tos for r in handler.received] == [["person2@client.example"]]
    assert "RSET" in handler.commands
    assert handler.connections == 1


@pytest.mark.parametrize("drop", [DROP, "421 4.3.2 Shutting down"])
def test_a_dropped_connection_is_reopened_and_each_message_delivered_once(
    server: Controller, handler: RecordingHandler, drop: str
) -> None:
    handler.drop_after, handler.drop_reply = 3, drop
    messages = [make_message(n) for n in range(10)]
    with SmtpBackend(url(server), timeout=5) as backend:
        results = backend.send_messages(messages)
    assert [r.outcome for r in results] == ["accepted"] * 10
    delivered = [r.rcpt_tos[0] for r in handler.received]
    assert delivered == [f"person{n}@client.example" for n in range(10)]
    assert handler.connections == 4


def test_a_connection_dropped_across_batches_is_reopened(
    server: Controller, handler: RecordingHandler
) -> None:
    handler.drop_after = 1
    with SmtpBackend(url(server), timeout=5) as backend:
        results = [backend.send_messages([make_message(n)])[0] for n in range(3)]
    assert all(r.accepted for r in results)
    assert len(handler.received) == 3


def test_a_message_dropped_twice_is_retryable_and_the_batch_carries_on(
    server: Controller, handler: RecordingHandler
) -> None:
    handler.rcpt_replies["person1@client.example"] = DROP
    with SmtpBackend(url(server), timeout=5) as backend:
        results = backend.send_messages([make_message(n) for n in range(3)])
    assert [r.outcome for r in results] == ["accepted", "retryable", "accepted"]
    assert results[1].error is not None and "connection lost" in results[1].error
    assert [r.rcpt_tos[0] for r in handler.received] == [
        "person0@client.example",
        "person2@client.example",
    ]
    assert handler.connections == 3


def test_an_unreachable_server_makes_every_message_retryable() -> None:
    backend = SmtpBackend(f"smtp://127.0.0.1:{free_port()}", timeout=2)
    with backend:
        results = backend.send_messages([make_message(n) for n in range(3)])
    assert [r.outcome for r in results] == ["retryable"] * 3
    assert [r.message_id for r in results] == [f"<abm.{n}.test@demo.example>" for n in range(3)]
    assert all("connecting to 127.0.0.1" in (r.error or "") for r in results)


def test_an_empty_batch_returns_no_results_and_connects_nowhere(
    server: Controller, handler: RecordingHandler
) -> None:
    with SmtpBackend(url(server), timeout=5) as backend:
        assert backend.send_messages([]) == []
    assert handler.connections == 0 and "QUIT" not in handler.commands


def test_open_twice_is_harmless_and_close_quits_once(
    server: Controller, handler: RecordingHandler
) -> None:
    backend = SmtpBackend(url(server), timeout=5)
    backend.open()
    backend.open()
    assert backend.send_messages([make_message(1)])[0].accepted
    backend.close()
    backend.close()
    assert handler.commands.count("QUIT") == 1


def test_a_message_without_message_id_or_recipient_is_permanent(server: Controller) -> None:
    no_id, no_to = make_message(1), make_message(2)
    del no_id["Message-ID"]
    del no_to["To"]
    with SmtpBackend(url(server), timeout=5) as backend:
        results = backend.send_messages([no_id, no_to, make_message(3)])
    assert [r.outcome for r in results] == ["permanent", "permanent", "accepted"]


@pytest.mark.parametrize("offered", [True, False])
def test_a_non_ascii_address_needs_smtputf8(handler: RecordingHandler, offered: bool) -> None:
    message = MIMEText("Hallo", "plain", "utf-8")
    message["From"], message["To"] = "marketing@demo.example", "jörg@client.example"
    message["Message-ID"] = "<abm.utf8.test@demo.example>"
    with smtp_server(handler, enable_SMTPUTF8=offered) as controller:
        backend = SmtpBackend(url(controller), timeout=5)
        with backend:
            (result,) = backend.send_messages([message])
    if offered:
        assert result.accepted
        assert handler.received[0].rcpt_tos == ["jörg@client.example"]
    else:
        assert result.outcome == "permanent" and "SMTPUTF8" in (result.error or "")
        assert handler.received == []


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_with_percent_encoded_credentials(handler: RecordingHandler, mechanism: str) -> None:
    authenticator = Authenticator("alice@demo.example", PASSWORD)
    other = "LOGIN" if mechanism == "PLAIN" else "PLAIN"
    options = {"auth_require_tls": False, "auth_exclude_mechanism": [other]}
    with smtp_server(handler, authenticator=authenticator, **options) as controller:
        credentials = f"{quote('alice@demo.example', safe='')}:{quote(PASSWORD, safe='')}@"
        with SmtpBackend(url(controller, credentials=credentials), timeout=5) as backend:
            (result,) = backend.send_messages([make_message(1)])
    assert result.accepted
    assert authenticator.attempts == [(mechanism, "alice@demo.example", True)]


def test_a_wrong_password_blocks_the_run_and_its_error_has_no_password(
    handler: RecordingHandler,
) -> None:
    authenticator = Authenticator("alice", "right-password")
    with smtp_server(handler, authenticator=authenticator, auth_require_tls=False) as controller:
        credentials = f"alice:{quote(PASSWORD, safe='')}@"
        backend = SmtpBackend(url(controller, credentials=credentials), timeout=5)
        with backend:
            results = backend.send_messages([make_message(1), make_message(2)])
    assert [r.outcome for r in results] == ["blocked", "blocked"]
    error = results[0].error or ""
    assert "AUTH as alice failed: 535" in error
    assert PASSWORD not in error and quote(PASSWORD, safe="") not in error
    assert PASSWORD not in repr(backend) and PASSWORD not in str(backend.url)
    assert handler.received == []


def test_starttls_with_a_self_signed_certificate_then_auth(
    handler: RecordingHandler, certificate: tuple[Path, Path], client_tls: ssl.SSLContext
) -> None:
    authenticator = Authenticator("alice", "pw")
    with smtp_server(
        handler,
        tls_context=server_tls_context(*certificate),
        require_starttls=True,
        authenticator=authenticator,
    ) as controller:
        address = url(controller, credentials="alice:pw@", query="?starttls=1")
        with SmtpBackend(address, timeout=5, ssl_context=client_tls) as backend:
            (result,) = backend.send_messages([make_message(1)])
    assert result.accepted
    assert handler.received[0].tls
    assert [success for *_, success in authenticator.attempts] == [True]


def test_starttls_required_but_not_offered_sends_nothing(
    server: Controller, handler: RecordingHandler
) -> None:
    with SmtpBackend(url(server, query="?starttls=1"), timeout=5) as backend:
        (result,) = backend.send_messages([make_message(1)])
    assert result.outcome == "retryable"
    assert "does not offer STARTTLS" in (result.error or "")
    assert handler.received == []


def test_an_untrusted_certificate_is_refused(
    handler: RecordingHandler, certificate: tuple[Path, Path]
) -> None:
    with smtp_server(handler, ssl_context=server_tls_context(*certificate)) as controller:
        backend = SmtpBackend(url(controller, scheme="smtps"), timeout=5)
        with backend:
            (result,) = backend.send_messages([make_message(1)])
    assert result.outcome == "blocked"
    assert "CERTIFICATE_VERIFY_FAILED" in (result.error or "")
    assert handler.received == []


def test_implicit_tls_smtps(
    handler: RecordingHandler, certificate: tuple[Path, Path], client_tls: ssl.SSLContext
) -> None:
    with smtp_server(handler, ssl_context=server_tls_context(*certificate)) as controller:
        address = url(controller, scheme="smtps")
        with SmtpBackend(address, timeout=5, ssl_context=client_tls) as backend:
            results = backend.send_messages([make_message(1), make_message(2)])
    assert [r.outcome for r in results] == ["accepted", "accepted"]
    assert handler.connections == 1 and all(r.tls for r in handler.received)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("smtp://mail.example", SmtpUrl("mail.example", 25)),
        ("smtp://mail.example?starttls=1", SmtpUrl("mail.example", 587, starttls=True)),
        ("smtp://mail.example:2525?starttls=0", SmtpUrl("mail.example", 2525)),
        ("smtps://mail.example", SmtpUrl("mail.example", 465, implicit_tls=True)),
        (
            "SMTP://u%40x.example:p%3Aw%2Fd@[::1]:26",
            SmtpUrl("::1", 26, user="u@x.example", password="p:w/d"),
        ),
        ("smtp://user:@mail.example", SmtpUrl("mail.example", 25, user="user", password="")),
    ],
)
def test_url_forms(address: str, expected: SmtpUrl) -> None:
    parsed = SmtpUrl.parse(address)
    assert parsed == expected
    assert parsed.password == expected.password


def test_the_url_shown_masks_the_password() -> None:
    parsed = SmtpUrl.parse(f"smtp://alice:{quote(PASSWORD, safe='')}@mail.example?starttls=1")
    assert str(parsed) == "smtp://alice:***@mail.example:587?starttls=1"
    assert PASSWORD not in repr(parsed)
    assert SmtpBackend.from_url("smtps://alice:pw@mail.example").url.port == 465


@pytest.mark.parametrize(
    "address",
    [
        "",
        "mail.example:25",
        "http://alice:{pw}@mail.example",
        "smtp://alice:{pw}@",
        "smtp://alice:{pw}@mail.example:notaport",
        "smtp://alice:{pw}@mail.example:0",
        "smtp://alice:{pw}@mail.example:70000",
        "smtp://alice:{pw}@mail.example/path",
        "smtp://alice:{pw}@mail.example?tls=1",
        "smtp://alice:{pw}@mail.example?starttls=maybe",
        "smtps://alice:{pw}@mail.example?starttls=1",
        "smtp://:{pw}@mail.example",
        "smtp://alice@mail.example",
        "smtp://alice:{pw}/#?x@mail.example",
        "smtp://alice:{pw}@[::1",
        "smtp://alice:{pw}wörd@mail.example",
    ],
)
def test_bad_urls_raise_config_error_without_the_password(address: str) -> None:
    with pytest.raises(ConfigError) as raised:
        SmtpBackend(address.format(pw="hunter2secret"))
    assert "SMTP URL" in str(raised.value)
    assert "hunter2" not in str(raised.value) and "secret" not in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None or raised.value.__suppress_context__


def test_a_non_positive_timeout_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        SmtpBackend("smtp://mail.example", timeout=0)


_HEADER_PIECES = st.sampled_from(
    [
        "Ann",
        " ",
        "Lee",
        ",",
        '"',
        "<",
        ">",
        "@",
        "(",
        ")",
        ";",
        ":",
        ".",
        "x.example",
        "a+b",
        "=?utf-8?b?w4VubmE=?=",
        "\\",
        "[",
        "]",
        "\t",
        "é",
        "ann@x.example",
        "<ann@x.example>",
    ]
)
_HEADERS = st.lists(_HEADER_PIECES, max_size=8).map("".join)


@settings(max_examples=1000, deadline=None)
@example("Ann Lee <ann@x.example>")
@example("ann@x.example")
@example("=?utf-8?b?w4VubmE=?= <ann@x.example>")
@example("Ann, Lee <ann@x.example>")
@example('"Lee, Ann" <ann@x.example>')
@example("Ann (Sales) <ann@x.example>")
@example("Ann <ann@x.example>, lee@x.example")
@example("Ann <ann@x.example> <lee@x.example>")
@example("ann@x.example@y.example")
@given(_HEADERS)
def test_the_quick_address_reading_agrees_with_the_standard_parser(value: str):
    message = Message()
    message["To"] = value
    assert _addresses(message, "To") == _mailboxes((value,))


@settings(max_examples=1000, deadline=None)
@example("Ann Lee <ann@x.example>")
@example('"Lee, Ann" <ann@x.example>')
@example('"ann lee"@x.example')
@example("Ann (Sales) <ann@x.example>")
@example("ann..lee@x.example")
@example('"ann@x.example,')
@given(_HEADERS)
def test_the_envelope_quotes_addresses_as_smtplib_would(value: str):
    """MAIL FROM and RCPT TO quote a plain address themselves instead of smtplib parsing it
    again; whatever the header held, the command line is smtplib's."""
    message = Message()
    message["To"] = value
    for address in (value, *(_addresses(message, "To") or ())):
        assert _quoted(address) == smtplib.quoteaddr(address)


def test_a_message_sent_as_an_owner_bounces_to_the_campaign_sender(
    server: Controller, handler: RecordingHandler
) -> None:
    """From is the account's owner, Sender the campaign's address (RFC 5322 3.6.2): MAIL FROM
    takes the Sender, so bounces reach the monitored mailbox, not the owner's."""
    message = make_message(8)
    message.replace_header("From", "Dana Whitfield <dana@demo.example>")
    message["Sender"] = "Demo Co <marketing@demo.example>"
    with SmtpBackend(url(server), timeout=5) as backend:
        assert backend.send_messages([message])[0].accepted
    (received,) = handler.received
    assert received.mail_from == "marketing@demo.example"
    parsed = message_from_bytes(received.content, policy=policy.default)
    assert parsed["From"] == "Dana Whitfield <dana@demo.example>"
