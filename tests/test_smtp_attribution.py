"""Campaign attribution on mail relayed over SMTP: our own X-ABM-* headers plus the tag header
of the relay ABM_SMTP_RELAY names, read at the wire (a real SMTP server) and then fed, in the
shape each provider documents for its events, to our webhook parsers, which must match the
event to the message it is about."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default

import pytest
from aiosmtpd.controller import Controller
from hypothesis import given
from hypothesis import strategies as st
from smtp_server import RecordingHandler, smtp_server

from connectors.email import get_backend
from connectors.email.attribution import attribution_headers, ses_tag_text, ses_tag_value
from connectors.email.mailgun_events import mailgun_as_sendgrid
from connectors.email.sendgrid_events import parse_sendgrid
from core.campaign_file import Tracking
from core.settings import Settings
from stages.content.rendering import EmailParts, Sender, build_message

SENDER = Sender(name="Demo Co", email="marketing@demo.example", company="Demo Co")
MESSAGE_ID = "<abm.7.0123456789ab@demo.example>"
RECIPIENT = "ana.nunez@client.example"
SES_TAG = r"[A-Za-z0-9_-]{1,256}"


def message(
    step: str | None = "intro", variant: str | None = "b", tracking: Tracking | None = None
):
    built = build_message(
        EmailParts("Idée pour Acme", "Hello\n", "<p>Hello</p>"),
        sender=SENDER,
        to_email=RECIPIENT,
        to_name="Ana Núñez",
        message_id=MESSAGE_ID,
        unsubscribe_url="https://abm.example/unsubscribe/tok1",
        campaign_key="q3-manufacturing",
    )
    if step is not None:
        for name, value in attribution_headers(step, variant, tracking or Tracking()):
            built[name] = value
    return built


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def server(handler: RecordingHandler) -> Iterator[Controller]:
    with smtp_server(handler) as controller:
        yield controller


def relayed(server: Controller, handler: RecordingHandler, relay: str, msg=None):
    """The message as the relay received it, parsed back."""
    backend = get_backend(
        Settings(
            _env_file=None,
            public_url="https://abm.acme.com",
            email_backend="smtp",
            smtp_url=f"smtp://{server.hostname}:{server.port}",
            smtp_relay=relay,
        )
    )
    with backend:
        (result,) = backend.send_messages([msg or message()])
    assert result.accepted
    raw = handler.received[-1].content
    assert max(len(line) for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n")) <= 998
    return message_from_bytes(raw, policy=default)


@pytest.mark.parametrize("relay", ["generic", "sendgrid", "mailgun", "ses"])
def test_our_attribution_headers_go_with_every_relay_and_hold_no_personal_data(
    server, handler, relay
):
    received = relayed(server, handler, relay)
    assert received["X-ABM-Message-Id"] == MESSAGE_ID
    assert received["X-ABM-Campaign"] == "q3-manufacturing"
    assert received["X-ABM-Step"] == "intro"
    assert received["X-ABM-Variant"] == "b"
    ours = {
        "x-smtpapi",
        "x-mailgun-variables",
        "x-ses-message-tags",
        *(name.lower() for name in received if name.lower().startswith("x-abm-")),
    }
    for name in received:
        if name.lower() in ours:
            value = str(received[name]).lower()
            assert "ana" not in value and "client.example" not in value, (name, value)


def test_a_generic_relay_gets_no_provider_tag_header(server, handler):
    received = relayed(server, handler, "generic")
    assert not {"X-SMTPAPI", "X-Mailgun-Variables", "X-SES-MESSAGE-TAGS"} & set(received.keys())


def test_sendgrid_relay_events_carry_our_message_id_back(server, handler):
    received = relayed(
        server, handler, "sendgrid", message(tracking=Tracking(clicks=True, opens=False))
    )
    smtpapi = json.loads(str(received["X-SMTPAPI"]))
    assert smtpapi["unique_args"] == {
        "abm_message_id": MESSAGE_ID,
        "abm_campaign": "q3-manufacturing",
        "abm_step": "intro",
        "abm_variant": "b",
    }
    assert smtpapi["category"] == ["q3-manufacturing"]
    filters = smtpapi["filters"]
    assert filters["subscriptiontrack"] == {"settings": {"enable": 0}}
    assert filters["clicktrack"]["settings"]["enable"] == 1
    assert filters["opentrack"] == {"settings": {"enable": 0}}
    # SendGrid puts unique_args on every event as top-level fields (Unique Arguments docs)
    event = {
        "email": RECIPIENT,
        "timestamp": int(time.time()),
        "event": "click",
        "sg_event_id": "evt-1",
        "sg_message_id": "sg-1.filter",
        **smtpapi["unique_args"],
    }
    (parsed,) = parse_sendgrid(json.dumps([event]).encode())
    assert parsed["abm_message_id"] == received["Message-ID"] == MESSAGE_ID


def test_mailgun_relay_events_carry_our_message_id_back(server, handler):
    received = relayed(
        server, handler, "mailgun", message(tracking=Tracking(clicks=False, opens=True))
    )
    variables = json.loads(str(received["X-Mailgun-Variables"]))
    assert variables == {
        "abm_message_id": MESSAGE_ID,
        "abm_campaign": "q3-manufacturing",
        "abm_step": "intro",
        "abm_variant": "b",
    }
    assert (received["X-Mailgun-Track-Clicks"], received["X-Mailgun-Track-Opens"]) == ("no", "yes")
    # Mailgun returns the variables as `user-variables` of each event; a relay may have
    # rewritten the Message-ID it reports in message.headers
    event = {
        "event": "opened",
        "id": "mg-1",
        "timestamp": time.time(),
        "recipient": RECIPIENT,
        "user-variables": variables,
        "message": {"headers": {"message-id": "20261204.1@mg.demo.example"}},
    }
    assert mailgun_as_sendgrid(event)["abm_message_id"] == MESSAGE_ID


def test_ses_relay_tags_use_only_the_characters_ses_allows_and_read_back(server, handler):
    received = relayed(server, handler, "ses")
    pairs = [pair.strip().split("=", 1) for pair in str(received["X-SES-MESSAGE-TAGS"]).split(",")]
    assert all(len(pair) == 2 for pair in pairs)
    assert all(
        re.fullmatch(SES_TAG, name) and re.fullmatch(SES_TAG, value) for name, value in pairs
    )
    tags = dict(pairs)
    assert ses_tag_text(tags["abm_message_id"]) == MESSAGE_ID
    assert ses_tag_text(tags["abm_campaign"]) == "q3-manufacturing"
    assert (tags["abm_step"], tags["abm_variant"]) == ("intro", "b")


def test_a_message_without_step_headers_still_names_message_and_campaign(server, handler):
    received = relayed(server, handler, "sendgrid", message(step=None))
    args = json.loads(str(received["X-SMTPAPI"]))["unique_args"]
    assert args == {"abm_message_id": MESSAGE_ID, "abm_campaign": "q3-manufacturing"}
    assert received["X-ABM-Step"] is None


@given(st.text(st.characters(codec="utf-8"), max_size=20))
def test_ses_tag_values_round_trip_through_the_allowed_characters(text):
    value = ses_tag_value(text)  # 20 characters of 4 UTF-8 bytes, 3 characters each: 240
    assert value is not None and re.fullmatch(r"[A-Za-z0-9_-]*", value) and len(value) <= 256
    assert ses_tag_text(value) == text


def test_a_value_too_long_for_an_ses_tag_is_left_out_rather_than_cut():
    assert ses_tag_value("a" * 256) == "a" * 256
    assert ses_tag_value("a" * 257) is None
    assert ses_tag_value("." * 86) is None
