import base64
import hashlib
import hmac
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from jinja2 import UndefinedError
from jinja2.sandbox import SecurityError

from connectors.email.outbox import OutboxBackend
from core.errors import ConfigError
from core.unsubscribe import BadToken, make_token, read_token
from core.vocabulary import FUNCTIONS, SENIORITIES
from stages.content.rendering import (
    EmailParts,
    Sender,
    TemplateKey,
    build_message,
    header_text,
    message_id,
    render_context,
    render_email_parts,
    template_environment,
    template_names,
)

SENDER = Sender.parse("Demo Co <marketing@demo.example>")
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def _context(**contact):
    person = {
        "email": "ana@acme.example",
        "first_name": "Ana",
        "last_name": "Núñez",
        "title": "CFO",
        "seniority": "c_level",
        "function": "finance",
        "role": "approver",
        **contact,
    }
    account = {
        "name": "Acme <script>alert(1)</script> {{ 7*7 }}",
        "domain": "acme.example",
        "industry": "Manufacturing",
        "tier": 2,
        "country": "ES",
        "employees": 900,
    }
    footer = {"postal_address": "1 Example St", "unsubscribe_url": "https://u.example/t"}
    return render_context(person, account, SENDER, {"guide": "https://g.example/"}, footer)


TIER_2_MANUFACTURING = TemplateKey(2, "Manufacturing", None)


def render_parts(env, channel, template, context, audience=TIER_2_MANUFACTURING):
    """The rendering entry point with this file's templates folder."""
    root = Path(env.loader.searchpath[0])
    return render_email_parts(env, template_names(root), template, audience, context)


def _message(parts: EmailParts, to_name: str = "Ana Núñez"):
    return build_message(
        parts,
        sender=SENDER,
        to_email="ana@acme.example",
        to_name=to_name,
        message_id="<abm.1.abc@demo.example>",
        unsubscribe_url="https://u.example/t",
        campaign_key="demo",
    )


def test_the_intro_template_personalises_and_escapes_contact_data():
    env = template_environment(TEMPLATES)
    parts = render_parts(env, "email", "intro", _context())
    assert parts.text.startswith("Hi Ana,")
    assert "&lt;script&gt;" in parts.html and "<script>" not in parts.html
    assert "{{ 7*7 }}" in parts.html and "49" not in parts.text
    assert "1 Example St" in parts.html and "https://u.example/t" in parts.text


def test_a_missing_first_name_falls_back_instead_of_leaving_a_blank():
    env = template_environment(TEMPLATES)
    parts = render_parts(env, "email", "intro", _context(first_name=None))
    assert parts.text.startswith("Hi there,")


def test_the_intro_template_renders_for_every_seniority_and_function():
    env = template_environment(TEMPLATES)
    for seniority in SENIORITIES:
        for function in FUNCTIONS:
            parts = render_parts(
                env, "email", "intro", _context(seniority=seniority, function=function)
            )
            assert parts.subject and "\n" not in parts.subject


def test_a_template_using_an_unknown_field_fails_loudly(tmp_path: Path):
    (tmp_path / "email" / "broken").mkdir(parents=True)
    for part in ("subject.j2", "body.html.j2"):
        (tmp_path / "email" / "broken" / part).write_text("{{ contact.nickname }}")
    with pytest.raises(UndefinedError, match="nickname"):
        render_parts(template_environment(tmp_path), "email", "broken", _context())


def test_templates_cannot_reach_python_internals(tmp_path: Path):
    (tmp_path / "email" / "evil").mkdir(parents=True)
    for part in ("subject.j2", "body.html.j2"):
        (tmp_path / "email" / "evil" / part).write_text(
            "{{ contact.__class__.__mro__[1].__subclasses__() }}"
        )
    with pytest.raises(SecurityError):
        render_parts(template_environment(tmp_path), "email", "evil", _context())


def test_line_breaks_never_reach_a_header():
    parts = EmailParts(subject=header_text("Hello\r\nBcc: victim@x.example"), text="t", html="h")
    message = _message(parts, to_name="Eve\r\nBcc: victim@x.example")
    raw = message.as_bytes()
    parsed = message_from_bytes(raw, policy=default)
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "Hello Bcc: victim@x.example"
    assert b"\r\nBcc:" not in raw and b"\nBcc:" not in raw


def test_messages_have_text_and_html_parts_and_one_click_unsubscribe():
    env = template_environment(TEMPLATES)
    message = _message(render_parts(env, "email", "intro", _context()))
    parsed = message_from_bytes(message.as_bytes(), policy=default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parsed.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert parsed["List-Unsubscribe"] == "<https://u.example/t>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Message-ID"] == "<abm.1.abc@demo.example>"
    assert parsed["To"].addresses[0].display_name == "Ana Núñez"


def test_message_ids_are_stable_per_ledger_row_and_differ_between_rows():
    first = message_id(7, "demo:intro:42", "demo.example", "k")
    assert first == message_id(7, "demo:intro:42", "demo.example", "k")
    assert first != message_id(8, "demo:intro:43", "demo.example", "k")
    assert first.startswith("<abm.7.") and first.endswith("@demo.example>")


def test_a_message_id_carries_the_hmac_of_its_ledger_key_under_the_signing_key():
    for secret in ("k", "another key"):
        tag = hmac.new(secret.encode(), b"demo:intro:42", hashlib.sha256).hexdigest()[:12]
        expected = f"<abm.7.{tag}@demo.example>"
        assert message_id(7, "demo:intro:42", "demo.example", secret) == expected


def test_unsubscribe_tokens_round_trip_and_forgeries_are_rejected():
    token = make_token(42, 3, "secret")
    assert read_token(token, "secret") == (42, 3)
    with pytest.raises(BadToken):
        read_token(token, "another-secret")
    forged = make_token(43, 3, "guess")
    with pytest.raises(BadToken):
        read_token(forged, "secret")
    payload, signature = token.split(".")
    with pytest.raises(BadToken):
        read_token(f"{payload}x.{signature}", "secret")
    with pytest.raises(BadToken):
        read_token("garbage", "secret")


def test_the_outbox_writes_one_eml_per_message_id_even_when_sent_twice(tmp_path: Path):
    env = template_environment(TEMPLATES)
    message = _message(render_parts(env, "email", "intro", _context()))
    backend = OutboxBackend(tmp_path / "outbox")
    with backend:
        first = backend.send_messages([message])
        again = backend.send_messages([message])
    files = list((tmp_path / "outbox").iterdir())
    assert [f.name for f in files] == ["abm.1.abc@demo.example.eml"]
    assert first[0].accepted and again[0].accepted
    parsed = message_from_bytes(files[0].read_bytes(), policy=default)
    assert parsed["Subject"] == message["Subject"]
    assert backend.send_messages([]) == []


def test_long_non_ascii_names_keep_every_header_in_the_header_block():
    long_name = "Ånnika-Maximiliane Lindqvist-Östergård von Hohenzollern-Sigmaringen"
    parts = EmailParts(subject="Ärger über Öl – " * 6, text="t", html="<p>h</p>")
    raw = _message(parts, to_name=long_name).as_bytes()
    head, _, _ = raw.partition(b"\n\n")
    assert b"\n\n" not in head
    parsed = message_from_bytes(raw, policy=default)
    assert parsed["Message-ID"] == "<abm.1.abc@demo.example>"
    assert parsed["To"].addresses[0].display_name == long_name
    assert parsed["Subject"] == header_text("Ärger über Öl – " * 6)
    assert max(len(line) for line in head.split(b"\n")) <= 998


def test_text_that_looks_like_an_encoded_word_reaches_the_reader_as_written():
    lookalike = "=?utf-8?b?QWRtaW4gcGFuZWw=?="  # "Admin panel" once decoded
    message = _message(EmailParts(lookalike, "t", "<p>h</p>"), to_name=lookalike)
    parsed = message_from_bytes(message.as_bytes(), policy=default)
    assert parsed["Subject"] == lookalike
    assert parsed["To"].addresses[0].display_name == lookalike


def test_a_sender_address_that_cannot_be_sent_is_refused_up_front():
    with pytest.raises(ConfigError, match="not an address"):
        Sender.parse("Demo <m@démo.example>")


def test_an_unsubscribe_token_is_the_payload_and_its_truncated_hmac_sha256():
    token = make_token(12, 3, "secret")
    payload, signature = token.split(".")
    digest = hmac.new(b"secret", b"unsubscribe:" + payload.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(payload + "==") == b"12.3"
    assert signature == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    assert read_token(token, "secret") == (12, 3)
    assert make_token(12, 3, "other") != token
