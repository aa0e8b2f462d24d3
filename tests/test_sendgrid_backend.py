"""The SendGrid backend against respx routes: every request body is checked against the
provider's own OpenAPI description of `POST /v3/mail/send` (operationId SendMail), made
strict so that a misspelt field name fails too."""

from __future__ import annotations

import json
import logging
import time

import httpx
import jsonschema
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests_support import SHARED

from connectors.email.attribution import attribution_headers
from connectors.email.sendgrid import SendGridBackend
from core.campaign_file import CampaignFile, Tracking
from core.errors import ConfigError
from stages.content.rendering import EmailParts, Sender, build_message

SPECS = SHARED / "specs"
if not SPECS.is_dir():
    pytest.skip(
        f"provider specs not found at {SPECS}: set ABM_SHARED_DIR to the shared folder",
        allow_module_level=True,
    )
SPEC = json.loads((SPECS / "sendgrid-mail-send-v3.openapi.json").read_text(encoding="utf-8"))
BASE = "https://api.sendgrid.com"
KEY = "SG.test-key.abcdefghijklmnopqrstuvwxyz0123456789"
SENDER = Sender.parse("Demo Co <marketing@demo.example>")


def _strict(schema):
    """The schema with `additionalProperties: false` wherever properties are listed."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
        strict["additionalProperties"] = False
    return strict


def _send_mail_validator() -> jsonschema.Draft7Validator:
    operation = SPEC["paths"]["/v3/mail/send"]["post"]
    assert operation["operationId"] == "SendMail"
    name = operation["requestBody"]["$ref"].rsplit("/", 1)[1]
    schema = SPEC["components"]["requestBodies"][name]["content"]["application/json"]["schema"]
    document = _strict({**schema, "components": SPEC["components"]})
    return jsonschema.Draft7Validator(
        document, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


VALIDATOR = _send_mail_validator()


def assert_valid(body: dict) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(body)]
    assert not errors, errors


def message(
    n: int,
    *,
    template: str = "intro",
    to: str | None = None,
    campaign: str = "q3-manufacturing",
    extra_html: str = "",
    **headers: str,
):
    """A message as the delivery flow renders it; bodies share a template, names differ."""
    name = f"Ana Núñez {n}"
    unsubscribe = f"https://abm.example/unsubscribe/tok{n:05d}x"
    if template == "intro":
        text = (
            f"Hi {name},\n\nTeams like Acme {n} cut downtime by 20%.\n"
            "The guide: https://demo.example/guide?utm_source=abm\n\n"
            f"Demo Co, 1 Example St. Unsubscribe: {unsubscribe}\n"
        )
        html = (
            f'<p style="margin:0 0 16px">Hi {name},</p>\n'
            f"<p>Teams like <b>Acme {n}</b> cut downtime by 20% – café ☕.</p>\n"
            '<p><a href="https://demo.example/guide?utm_source=abm">Read the guide</a></p>\n'
            f'<p style="font-size:12px">Demo Co, 1 Example St. <a href="{unsubscribe}">'
            "Unsubscribe</a></p>\n"
        )
    else:
        text = f"{name}, a different step altogether: the webinar on {n} May.\n{unsubscribe}\n"
        html = f"<h1>Webinar</h1><div>{name}: join us on {n} May</div><a href='{unsubscribe}'>x</a>"
    built = build_message(
        EmailParts(f"Idée pour Acme {n} ✓", text, html + extra_html),
        sender=SENDER,
        to_email=to or f"ana{n}@acme{n}.example",
        to_name=name,
        message_id=f"<abm.{n}.0123456789ab@demo.example>",
        unsubscribe_url=unsubscribe,
        campaign_key=campaign,
    )
    for header, value in headers.items():
        built[header.replace("_", "-")] = value
    return built


def parts_of(msg) -> list[tuple[str, str]]:
    return [
        (p.get_content_type(), p.get_payload(decode=True).decode(p.get_content_charset()))
        for p in msg.walk()
        if not p.is_multipart()
    ]


def bodies(route) -> list[dict]:
    return [json.loads(call.request.content) for call in route.calls]


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def router():
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def sendgrid(router):
    return router.post("/v3/mail/send", name="send")


def make_backend(router: respx.MockRouter, **options) -> SendGridBackend:
    """A backend whose transport is the respx router (no TLS set-up, no network)."""
    options.setdefault("sleep", Sleeps())
    return SendGridBackend(KEY, transport=httpx.MockTransport(router.handler), **options)


@pytest.fixture
def backend(router):
    return lambda **options: make_backend(router, **options)


def accepted(message_id: str = "msg-1", status: int = 202) -> httpx.Response:
    return httpx.Response(status, headers={"X-Message-Id": message_id})


def test_the_documented_limits_match_the_spec():
    operation_body = SPEC["components"]["requestBodies"]["PostMailSend"]
    schema = operation_body["content"]["application/json"]["schema"]
    personalization = schema["properties"]["personalizations"]
    assert SendGridBackend.batch_size == personalization["maxItems"] == 1000
    assert "72 hours" in personalization["items"]["properties"]["send_at"]["description"]
    assert "10,000 bytes" in personalization["items"]["properties"]["substitutions"]["description"]
    assert SPEC["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    assert "202" in SPEC["paths"]["/v3/mail/send"]["post"]["responses"]


def test_the_strict_validator_accepts_the_spec_examples_and_catches_typos():
    examples = SPEC["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"]
    for example in examples["examples"].values():
        assert_valid(example["value"])
    body = examples["examples"]["MailSendNoTemplate"]["value"]
    with pytest.raises(AssertionError):
        assert_valid({**body, "personalisations": body["personalizations"]})
    with pytest.raises(AssertionError):
        assert_valid({**body, "categories": "not-a-list"})


def test_request_is_valid_and_carries_what_webhooks_and_recipients_need(sendgrid, backend):
    sendgrid.side_effect = [accepted("x-msg-1")]
    messages = [message(n) for n in range(3)]
    results = backend().send_messages(messages)

    assert [r.outcome for r in results] == ["accepted"] * 3
    assert [r.provider_id for r in results] == ["x-msg-1"] * 3
    assert [r.message_id for r in results] == [m["Message-ID"] for m in messages]
    request = sendgrid.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    (body,) = bodies(sendgrid)
    assert_valid(body)
    assert body["from"] == {"email": "marketing@demo.example", "name": "Demo Co"}
    assert body["categories"] == ["q3-manufacturing"]
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert "mail_settings" not in body
    first = body["personalizations"][0]
    assert first["to"] == [{"email": "ana0@acme0.example", "name": "Ana Núñez 0"}]
    assert first["subject"] == "Idée pour Acme 0 ✓"
    assert first["custom_args"] == {
        "abm_message_id": "<abm.0.0123456789ab@demo.example>",
        "abm_campaign": "q3-manufacturing",
    }
    assert first["headers"] == {
        "List-Unsubscribe": "<https://abm.example/unsubscribe/tok00000x>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Message-ID": "<abm.0.0123456789ab@demo.example>",
        "X-ABM-Message-Id": "<abm.0.0123456789ab@demo.example>",
        "X-ABM-Campaign": "q3-manufacturing",
    }
    assert "send_at" not in first
    # explicit, never the account's defaults: SendGrid's own unsubscribe link stays off
    assert body["tracking_settings"] == {
        "click_tracking": {"enable": True, "enable_text": False},
        "open_tracking": {"enable": True},
        "subscription_tracking": {"enable": False},
    }


def test_every_recipient_gets_exactly_the_message_that_was_rendered(sendgrid, backend):
    """What SendGrid does with substitutions (plain replacement) rebuilds each message."""
    sendgrid.side_effect = [accepted()]
    messages = [message(n) for n in range(5)]
    backend().send_messages(messages)
    (body,) = bodies(sendgrid)
    assert "https://demo.example/guide?utm_source=abm" in body["content"][1]["value"]
    for msg, personalization in zip(messages, body["personalizations"], strict=True):
        rebuilt = []
        for content in body["content"]:
            value = content["value"]
            for tag, replacement in personalization.get("substitutions", {}).items():
                value = value.replace(tag, replacement)
            rebuilt.append((content["type"], value))
        assert rebuilt == parts_of(msg)


PIECES = ["<p>", "</p>", "Hi ", "\n", '<a href="https://demo.example/guide">', "guide</a>", "Acme"]
FREE_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]) | st.just("\n"), max_size=12
)


@st.composite
def related_bodies(draw) -> list[str]:
    """Bodies of one template: pieces kept, swapped for other text, dropped or extended."""
    base = draw(st.lists(st.sampled_from(PIECES) | FREE_TEXT, min_size=1, max_size=25))
    bodies = []
    for _ in range(draw(st.integers(1, 6))):
        body = []
        for piece in base:
            edit = draw(st.sampled_from(["keep", "keep", "keep", "swap", "drop", "add"]))
            if edit in ("keep", "add"):
                body.append(piece)
            if edit in ("swap", "add"):
                body.append(draw(FREE_TEXT))
        bodies.append("".join(body) or "-")
    return bodies


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(html_bodies=related_bodies())
def test_any_bodies_of_one_template_are_rebuilt_exactly(html_bodies):
    messages = [
        build_message(
            EmailParts(f"Subject {n}", f"Hi {n}\n", html),
            sender=SENDER,
            to_email=f"p{n}@acme.example",
            to_name=f"P {n}",
            message_id=f"<abm.{n}.x@demo.example>",
            unsubscribe_url=f"https://abm.example/u/{n}",
            campaign_key="demo",
        )
        for n, html in enumerate(html_bodies)
    ]
    with respx.mock(base_url=BASE) as router:
        route = router.post("/v3/mail/send").mock(return_value=accepted())
        results = make_backend(router).send_messages(messages)
    assert [r.outcome for r in results] == ["accepted"] * len(messages)
    rebuilt = {}
    for body in bodies(route):
        for personalization in body["personalizations"]:
            parts = []
            for content in body["content"]:
                value = content["value"]
                for tag, replacement in personalization.get("substitutions", {}).items():
                    value = value.replace(tag, replacement)
                parts.append((content["type"], value))
            rebuilt[personalization["custom_args"]["abm_message_id"]] = parts
    assert {m["Message-ID"]: parts_of(m) for m in messages} == rebuilt


def test_sandbox_mode_is_requested_and_its_200_counts_as_accepted(sendgrid, backend):
    sendgrid.side_effect = [httpx.Response(200)]
    results = backend(sandbox=True).send_messages([message(1)])
    (body,) = bodies(sendgrid)
    assert_valid(body)
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert results[0].outcome == "accepted" and results[0].provider_id is None


def test_429_then_202_waits_as_long_as_sendgrid_asks(sendgrid, backend):
    sendgrid.side_effect = [httpx.Response(429, headers={"Retry-After": "7"}), accepted()]
    sleeps = Sleeps()
    results = backend(sleep=sleeps).send_messages([message(1), message(2)])
    assert sleeps == [7.0]
    assert sendgrid.call_count == 2
    assert [r.outcome for r in results] == ["accepted", "accepted"]


def test_503_then_202_backs_off_and_succeeds(sendgrid, backend):
    sendgrid.side_effect = [httpx.Response(503, json={"errors": [{"message": "busy"}]}), accepted()]
    sleeps = Sleeps()
    results = backend(sleep=sleeps).send_messages([message(1)])
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5
    assert results[0].outcome == "accepted"


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_5xx_that_may_have_been_processed_is_uncertain_not_retried(sendgrid, backend, status):
    sendgrid.side_effect = [httpx.Response(status), accepted()]
    results = backend().send_messages([message(1), message(2)])
    assert sendgrid.call_count == 1  # sending again could deliver twice
    assert [r.outcome for r in results] == ["uncertain", "uncertain"]


def test_5xx_that_persists_is_retryable_for_every_message(sendgrid, backend):
    sendgrid.side_effect = [httpx.Response(503)] * 5
    sleeps = Sleeps()
    results = backend(sleep=sleeps).send_messages([message(1), message(2)])
    assert sendgrid.call_count == 5 and len(sleeps) == 4
    assert [r.outcome for r in results] == ["retryable", "retryable"]
    assert "HTTP 503" in (results[0].error or "")


def test_a_400_about_the_request_not_a_recipient_blocks_the_run(sendgrid, backend):
    errors = [{"field": "from.email", "message": "The from address does not match a sender"}]
    sendgrid.side_effect = [httpx.Response(400, json={"errors": errors})]
    results = backend().send_messages([message(1), message(2)])
    assert sendgrid.call_count == 1
    assert [r.outcome for r in results] == ["blocked", "blocked"]  # retryable once fixed
    assert "The from address does not match a sender" in (results[0].error or "")


def test_400_blaming_one_personalization_fails_only_that_message(sendgrid, backend):
    errors = [{"field": "personalizations.1.to", "message": "Does not contain a valid address."}]
    sendgrid.side_effect = [httpx.Response(400, json={"errors": errors}), accepted("again")]
    results = backend().send_messages([message(0), message(1), message(2)])
    assert [r.outcome for r in results] == ["accepted", "permanent", "accepted"]
    assert "Does not contain a valid address." in (results[1].error or "")
    first, second = bodies(sendgrid)
    assert len(first["personalizations"]) == 3
    assert [p["to"][0]["email"] for p in second["personalizations"]] == [
        "ana0@acme0.example",
        "ana2@acme2.example",
    ]
    assert_valid(second)


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_is_clear_and_stops_the_batch(sendgrid, status, backend):
    body = {"errors": [{"field": None, "message": "authorization required"}]}
    sendgrid.side_effect = [httpx.Response(status, json=body)]
    messages = [message(1), message(2, campaign="another-campaign")]
    results = backend().send_messages(messages)
    assert sendgrid.call_count == 1
    assert [r.outcome for r in results] == ["blocked", "blocked"]  # never dead
    for result in results:
        assert "credentials rejected" in (result.error or "")
        assert "ABM_SENDGRID_API_KEY" in (result.error or "")
        assert KEY not in (result.error or "")


def test_2500_personalised_messages_go_in_three_requests(sendgrid, backend):
    sendgrid.side_effect = [accepted("a"), accepted("b"), accepted("c")]
    messages = [message(n) for n in range(2500)]
    results = backend().send_messages(messages)
    sent = bodies(sendgrid)
    assert [len(b["personalizations"]) for b in sent] == [1000, 1000, 500]
    assert [r.provider_id for r in results] == ["a"] * 1000 + ["b"] * 1000 + ["c"] * 500
    ids = [p["custom_args"]["abm_message_id"] for b in sent for p in b["personalizations"]]
    assert ids == [m["Message-ID"] for m in messages]
    assert_valid(sent[2])


def test_other_templates_and_repeated_recipients_get_requests_of_their_own(sendgrid, backend):
    sendgrid.side_effect = [accepted("1"), accepted("2"), accepted("3")]
    messages = [
        message(1),
        message(2, template="webinar"),
        message(3),
        message(4, to="ana1@acme1.example"),
        message(5, template="webinar"),
    ]
    results = backend().send_messages(messages)
    sent = bodies(sendgrid)
    recipients = [[p["to"][0]["email"] for p in body["personalizations"]] for body in sent]
    assert recipients == [
        ["ana1@acme1.example", "ana3@acme3.example"],
        ["ana2@acme2.example", "ana5@acme5.example"],
        ["ana1@acme1.example"],
    ]
    assert [r.provider_id for r in results] == ["1", "2", "1", "3", "2"]
    for body in sent:
        assert_valid(body)


def test_a_message_too_different_for_substitutions_is_sent_literally(sendgrid, backend):
    sendgrid.side_effect = [accepted("1"), accepted("2")]
    long = message(2, extra_html="<p>" + "x" * 12_000 + "</p>")
    backend().send_messages([message(1), long, message(3)])
    shared, alone = bodies(sendgrid)
    assert len(shared["personalizations"]) == 2
    assert "substitutions" not in alone["personalizations"][0]
    assert [(c["type"], c["value"]) for c in alone["content"]] == parts_of(long)
    assert_valid(alone)


def test_send_at_is_passed_through_within_72_hours_and_refused_beyond(sendgrid, backend):
    sendgrid.side_effect = [accepted()]
    soon = int(time.time()) + 3600
    messages = [
        message(1, X_ABM_Send_At=str(soon)),
        message(2, X_ABM_Send_At=str(int(time.time()) + 73 * 3600)),
        message(3, X_ABM_Send_At="tomorrow"),
    ]
    results = backend().send_messages(messages)
    assert [r.outcome for r in results] == ["accepted", "permanent", "permanent"]
    assert "72 h" in (results[1].error or "")
    (body,) = bodies(sendgrid)
    assert_valid(body)
    assert [p["send_at"] for p in body["personalizations"]] == [soon]


def test_a_message_that_cannot_be_sent_keeps_its_place(sendgrid, backend):
    sendgrid.side_effect = [accepted()]
    broken = message(2)
    del broken["Message-ID"]
    no_address = message(3)
    no_address.replace_header("To", "nobody")
    results = backend().send_messages([message(1), broken, no_address, message(4)])
    assert [r.outcome for r in results] == ["accepted", "permanent", "permanent", "accepted"]
    assert results[1].message_id == "" and "Message-ID" in (results[1].error or "")
    assert "To" in (results[2].error or "")


def test_empty_batch_makes_no_request(sendgrid, backend):
    assert backend().send_messages([]) == []
    assert sendgrid.call_count == 0


def test_a_missing_key_is_a_configuration_error():
    with pytest.raises(ConfigError, match="ABM_SENDGRID_API_KEY"):
        SendGridBackend("  ")


def test_one_connection_serves_every_batch_while_open(sendgrid, backend):
    sendgrid.side_effect = [accepted("1"), accepted("2")]
    with backend() as open_backend:
        open_backend.send_messages([message(1)])
        open_backend.send_messages([message(2)])
    assert sendgrid.call_count == 2


def test_the_key_never_reaches_logs_or_results(sendgrid, caplog, backend):
    caplog.set_level(logging.DEBUG)
    echo = {"errors": [{"message": f"key {KEY} is not allowed"}]}
    sendgrid.side_effect = [
        httpx.Response(429, headers={"Retry-After": "1"}, json=echo),
        httpx.Response(503, json=echo),
        httpx.Response(401, json=echo),
    ]
    results = backend().send_messages([message(1)])
    assert results[0].outcome == "blocked"
    assert "***" in (results[0].error or "")
    assert KEY not in (results[0].error or "")
    assert KEY not in caplog.text
    assert all(KEY not in record.getMessage() for record in caplog.records)
    assert any("retrying" in record.getMessage() for record in caplog.records)


def with_step(msg, step: str, variant: str | None, tracking: Tracking):
    """The message as the composer marks it: step, variant and the campaign's tracking."""
    for name, value in attribution_headers(step, variant, tracking):
        msg[name] = value
    return msg


CAMPAIGN_YAML = {
    "name": "Q3 manufacturing",
    "tracking": {"clicks": True, "opens": False},
    "steps": [{"id": "intro", "variants": [{"id": "a", "template": "intro"}]}],
}


def test_the_campaign_files_tracking_block_decides_sendgrids_tracking(sendgrid, backend):
    campaign = CampaignFile.model_validate(CAMPAIGN_YAML)
    assert campaign.tracking == Tracking(clicks=True, opens=False)
    assert CampaignFile.model_validate({**CAMPAIGN_YAML, "tracking": {}}).tracking == Tracking()
    sendgrid.side_effect = [accepted()]
    backend().send_messages(
        [with_step(message(n), "intro", "a", campaign.tracking) for n in range(3)]
    )
    (body,) = bodies(sendgrid)
    assert_valid(body)
    assert body["tracking_settings"] == {
        "click_tracking": {"enable": True, "enable_text": False},
        "open_tracking": {"enable": False},
        "subscription_tracking": {"enable": False},
    }
    for personalization in body["personalizations"]:
        assert personalization["custom_args"] == {
            "abm_message_id": personalization["headers"]["Message-ID"],
            "abm_campaign": "q3-manufacturing",
            "abm_step": "intro",
            "abm_variant": "a",
        }
        assert personalization["headers"]["X-ABM-Step"] == "intro"
        assert personalization["headers"]["X-ABM-Variant"] == "a"
        assert "X-ABM-Tracking" not in personalization["headers"]


def test_an_unknown_tracking_key_in_a_campaign_file_is_an_error():
    with pytest.raises(ValueError, match="subscriptions"):
        CampaignFile.model_validate({**CAMPAIGN_YAML, "tracking": {"subscriptions": True}})


def test_messages_tracked_differently_never_share_a_request(sendgrid, backend):
    sendgrid.side_effect = [accepted("1"), accepted("2")]
    quiet = Tracking(clicks=False, opens=False)
    messages = [
        with_step(message(1), "intro", None, Tracking()),
        with_step(message(2), "intro", None, quiet),
        with_step(message(3), "intro", None, Tracking()),
    ]
    results = backend().send_messages(messages)
    assert [r.provider_id for r in results] == ["1", "2", "1"]
    first, second = bodies(sendgrid)
    assert len(first["personalizations"]) == 2 and len(second["personalizations"]) == 1
    assert second["tracking_settings"]["click_tracking"] == {"enable": False, "enable_text": False}
    assert second["tracking_settings"]["open_tracking"] == {"enable": False}
    assert "abm_variant" not in second["personalizations"][0]["custom_args"]
    for body in (first, second):
        assert_valid(body)


def test_a_reply_to_a_sendgrid_message_quotes_our_message_id(sendgrid, backend):
    """The Message-ID header is ours (not among the headers the spec reserves), so a reply's
    In-Reply-To names the ledger's message; X-ABM-Message-Id keeps it if it were replaced."""
    reserved = SPEC["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"][
        "schema"
    ]["properties"]["personalizations"]["items"]["properties"]["headers"]["description"]
    assert "Message-ID" not in reserved and "List-Unsubscribe" not in reserved
    assert "`Subject`" in reserved
    sendgrid.side_effect = [accepted()]
    backend().send_messages([message(9)])
    (body,) = bodies(sendgrid)
    headers = body["personalizations"][0]["headers"]
    assert (
        headers["Message-ID"] == headers["X-ABM-Message-Id"] == "<abm.9.0123456789ab@demo.example>"
    )


def test_reply_to_goes_in_reply_to_list_and_splits_requests_by_it(backend, sendgrid) -> None:
    """A message sent as an account's owner carries Reply-To: SendGrid takes it only as
    `reply_to_list` (never a personalization header), one list per request."""
    sendgrid.mock(return_value=accepted())
    owned = [message(n, Reply_To="Dana Whitfield <dana@demo.example>") for n in (1, 2)]
    both = message(3, Reply_To="Dana <dana@demo.example>, Demo Co <marketing@demo.example>")
    results = backend().send_messages([*owned, message(4), both])

    assert [r.outcome for r in results] == ["accepted"] * 4
    sent = bodies(sendgrid)
    for body in sent:
        assert_valid(body)
        assert all("Reply-To" not in p.get("headers", {}) for p in body["personalizations"])
    lists = sorted(((len(b["personalizations"]), b.get("reply_to_list")) for b in sent), key=str)
    assert lists == sorted(
        [
            (2, [{"email": "dana@demo.example", "name": "Dana Whitfield"}]),
            (1, None),
            (
                1,
                [
                    {"email": "dana@demo.example", "name": "Dana"},
                    {"email": "marketing@demo.example", "name": "Demo Co"},
                ],
            ),
        ],
        key=str,
    )
