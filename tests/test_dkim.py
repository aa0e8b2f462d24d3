"""DKIM signatures on the SMTP and outbox paths, checked as a receiver checks them: dkimpy's
verify against the TXT record the README tells users to publish (a stub DNS answer here),
for RSA and Ed25519 keys. A partial or unusable configuration is a configuration error."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim
import pytest
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from smtp_server import RecordingHandler, smtp_server

from connectors.email import get_backend
from connectors.email.outbox import OutboxBackend
from core.errors import ConfigError
from core.settings import Settings
from stages.content.rendering import EmailParts, Sender, build_message

DOMAIN, SELECTOR = "demo.example", "abm2026"
SIGNED = [
    "from",
    "subject",
    "date",
    "message-id",
    "to",
    "list-unsubscribe",
    "list-unsubscribe-post",
]
SENDER = Sender(name="Demo Co", email="marketing@demo.example", company="Demo Co")
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED25519_KEY = ed25519.Ed25519PrivateKey.generate()
KEYS = {"rsa": RSA_KEY, "ed25519": ED25519_KEY}


def txt_record(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    """The TXT record as the README says to publish it (RFC 6376 3.6.1, RFC 8463 4)."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def dns_for(key) -> Callable[..., bytes | None]:
    """A resolver that knows one record: SELECTOR._domainkey.DOMAIN."""
    records = {f"{SELECTOR}._domainkey.{DOMAIN}.".encode(): txt_record(key)}
    return lambda name, timeout=5: records.get(name)


def pem_file(directory: Path, key, pkcs8: bool = True) -> Path:
    form = (
        serialization.PrivateFormat.PKCS8
        if pkcs8
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    path = directory / "dkim.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())
    )
    return path


def settings(**values) -> Settings:
    return Settings(_env_file=None, secret_key="k", public_url="https://abm.acme.com", **values)


def dkim_settings(path: Path) -> dict[str, object]:
    return {"dkim_domain": DOMAIN, "dkim_selector": SELECTOR, "dkim_private_key": path}


def message(number: int = 1):
    return build_message(
        EmailParts(f"Idée {number} – for Acme", f"Hello {number}\n.leading dot\n", "<p>Hi</p>"),
        sender=SENDER,
        to_email=f"person{number}@client.example",
        to_name=f"Pérson {number}",
        message_id=f"<abm.{number}.0123456789ab@demo.example>",
        unsubscribe_url=f"https://abm.example/unsubscribe/t{number}",
        campaign_key="q3",
    )


def signature_tags(raw: bytes) -> dict[bytes, bytes]:
    d = dkim.DKIM(raw)
    (header,) = [value for name, value in d.headers if name.lower() == b"dkim-signature"]
    return dkim.util.parse_tag_value(header)


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def server(handler: RecordingHandler) -> Iterator[Controller]:
    with smtp_server(handler) as controller:
        yield controller


@pytest.mark.parametrize(
    ("kind", "algorithm", "pkcs8"),
    [
        ("rsa", b"rsa-sha256", True),
        ("rsa", b"rsa-sha256", False),  # BEGIN RSA PRIVATE KEY, as older openssl writes
        ("ed25519", b"ed25519-sha256", True),  # Ed25519 has no PKCS#1 form
    ],
)
def test_smtp_messages_arrive_signed_and_verify_against_the_published_record(
    tmp_path, server, handler, kind, algorithm, pkcs8
):
    key = KEYS[kind]
    backend = get_backend(
        settings(
            email_backend="smtp",
            smtp_url=f"smtp://{server.hostname}:{server.port}",
            **dkim_settings(pem_file(tmp_path, key, pkcs8)),
        )
    )
    with backend:
        results = backend.send_messages([message(1), message(2)])
    assert [r.outcome for r in results] == ["accepted", "accepted"]
    for received in handler.received:
        raw = received.content
        assert dkim.verify(raw, dnsfunc=dns_for(key))
        tags = signature_tags(raw)
        assert tags[b"a"] == algorithm
        assert tags[b"c"] == b"relaxed/relaxed"
        assert (tags[b"d"], tags[b"s"]) == (DOMAIN.encode(), SELECTOR.encode())
        signed = [h.strip().decode() for h in tags[b"h"].split(b":")]
        assert signed == SIGNED
        assert max(len(line) for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n")) <= 998


@pytest.mark.parametrize(
    ("header", "forged"),
    [
        (
            b"List-Unsubscribe: <https://abm.example/unsubscribe/t1>",
            b"List-Unsubscribe: <https://evil.example/u>",
        ),
        (
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            b"List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks",
        ),
        (b"Message-ID: <abm.1.", b"Message-ID: <abm.2."),
    ],
)
def test_the_signature_covers_the_one_click_unsubscribe_headers(tmp_path, header, forged):
    backend = get_backend(
        settings(
            email_backend="outbox",
            outbox_dir=tmp_path / "out",
            **dkim_settings(pem_file(tmp_path, RSA_KEY)),
        )
    )
    with backend:
        (result,) = backend.send_messages([message(1)])
    raw = (tmp_path / "out" / result.provider_id).read_bytes()
    assert dkim.verify(raw, dnsfunc=dns_for(RSA_KEY))
    assert header in raw
    assert not dkim.verify(raw.replace(header, forged), dnsfunc=dns_for(RSA_KEY))


def test_outbox_files_are_signed_with_an_ed25519_key(tmp_path):
    backend = get_backend(
        settings(
            email_backend="outbox",
            outbox_dir=tmp_path / "out",
            **dkim_settings(pem_file(tmp_path, ED25519_KEY)),
        )
    )
    with backend:
        (result,) = backend.send_messages([message(3)])
    raw = (tmp_path / "out" / result.provider_id).read_bytes()
    assert raw.startswith(b"DKIM-Signature: ")
    assert dkim.verify(raw, dnsfunc=dns_for(ED25519_KEY))


def test_without_dkim_settings_nothing_is_signed(tmp_path, server, handler):
    outbox = get_backend(settings(email_backend="outbox", outbox_dir=tmp_path / "out"))
    smtp = get_backend(
        settings(email_backend="smtp", smtp_url=f"smtp://{server.hostname}:{server.port}")
    )
    with outbox, smtp:
        (written,) = outbox.send_messages([message(1)])
        smtp.send_messages([message(1)])
    assert b"DKIM-Signature" not in (tmp_path / "out" / written.provider_id).read_bytes()
    assert b"DKIM-Signature" not in handler.received[0].content


@pytest.mark.parametrize("missing", ["dkim_domain", "dkim_selector", "dkim_private_key"])
@pytest.mark.parametrize("backend", ["outbox", "smtp"])
def test_a_partial_dkim_configuration_names_what_is_missing(tmp_path, missing, backend):
    values = dkim_settings(pem_file(tmp_path, RSA_KEY))
    del values[missing]
    with pytest.raises(ConfigError, match=f"ABM_{missing.upper()} is not set"):
        get_backend(settings(email_backend=backend, smtp_url="smtp://relay.example:587", **values))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot be read"),
        (b"not a key", "not a PEM private key"),
        ("ec", "RSA or Ed25519"),
        ("encrypted", "encrypted"),
    ],
)
def test_an_unusable_key_file_is_a_configuration_error_naming_the_setting(
    tmp_path, content, reason
):
    path = tmp_path / "key.pem"
    if content == "ec":
        pem_file(tmp_path, ec.generate_private_key(ec.SECP256R1())).rename(path)
    elif content == "encrypted":
        path.write_bytes(
            RSA_KEY.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"pass"),
            )
        )
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        get_backend(settings(email_backend="outbox", outbox_dir=tmp_path, **dkim_settings(path)))
    assert "ABM_DKIM_PRIVATE_KEY" in str(error.value) and reason in str(error.value)
    assert str(path) in str(error.value)


def test_an_rsa_key_shorter_than_1024_bits_is_refused(tmp_path):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    get_backend(
        settings(
            email_backend="outbox", outbox_dir=tmp_path, **dkim_settings(pem_file(tmp_path, weak))
        )
    )
    path = tmp_path / "weak.pem"
    path.write_bytes(WEAK_512_BIT_KEY)
    with pytest.raises(ConfigError, match=r"ABM_DKIM_PRIVATE_KEY.*512 bits.*at least 1024"):
        get_backend(settings(email_backend="outbox", outbox_dir=tmp_path, **dkim_settings(path)))


def test_ses_rewrites_date_and_message_id_so_signing_before_it_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="ABM_SMTP_RELAY=ses"):
        get_backend(
            settings(
                email_backend="smtp",
                smtp_url="smtp://email-smtp.eu-west-1.amazonaws.com:587?starttls=1",
                smtp_relay="ses",
                **dkim_settings(pem_file(tmp_path, RSA_KEY)),
            )
        )


def test_signing_leaves_the_message_as_it_was_below_the_signature(tmp_path):
    plain, signed = tmp_path / "plain", tmp_path / "signed"
    key = pem_file(tmp_path, ED25519_KEY)
    built = message(4)  # once: two builds a second apart differ in their Date header
    with OutboxBackend(plain) as unsigned_backend:
        (first,) = unsigned_backend.send_messages([built])
    backend = get_backend(settings(email_backend="outbox", outbox_dir=signed, **dkim_settings(key)))
    with backend:
        backend.send_messages([built])
    raw_signed = (signed / first.provider_id).read_bytes()
    raw_plain = (plain / first.provider_id).read_bytes()
    assert raw_signed.endswith(raw_plain)
    assert raw_signed[: -len(raw_plain)].startswith(b"DKIM-Signature: ")


# 512 bits (made with `openssl genrsa -traditional 512`): cryptography refuses to make one.
WEAK_512_BIT_KEY = b"""-----BEGIN RSA PRIVATE KEY-----
MIIBOwIBAAJBAOTf/YOKqoiGhM2Xbbi9BO07Cwn+V/ePviDOkbPMFVDeqZxe5Ox4
porrS/HOrHo7iYM/2iMxarY2eUHoRrCnTwECAwEAAQJAfhUirD9MeI9aQ4PDDv0Z
5LIc/7FctmU6QQpq25h2uagU29rZviq+Gz8Bd+hE0Oa8I1398Sf0cxqpaHT4riei
0QIhAP3GJzb/nAAHqXWt9ySz8co9p+F4sLjo75F7vzQ+AE99AiEA5uHtL6Fl3sAI
JecU5XUSrfZhkYAmY3u5gO2MGf3ZnNUCIQDuvvU1sNQ60vqCU+AnD4NyGP9QCBN6
Yuq/nAQOSiZQoQIgDdWl17/NEd7h3huNpf4w41mrGQPbyQRF5lLVnU0XuA0CIQCu
f3ZN9LvSH3QfOK636+3oUsNhCs6VfoK3RLAAVK5SEQ==
-----END RSA PRIVATE KEY-----
"""
