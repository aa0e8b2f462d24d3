"""The HTTP receiver: signed SendGrid events, one-click unsubscribe, and what they change."""

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from starlette.testclient import TestClient

from abm.webhooks import SIGNATURE, TIMESTAMP, create_app
from core.settings import get_settings, reset_settings
from core.unsubscribe import make_token
from models.store import upsert_accounts, upsert_contacts
from models.tables import Contact, EngagementEvent, utcnow
from stages.delivery.send_rules import skip_reason, suppressed_contact_ids

PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    PRIVATE_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
INBOUND_TOKEN = "inbound-T0ken-for-tests"
INBOUND = f"/webhooks/sendgrid/inbound?token={INBOUND_TOKEN}"


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def sign(body: bytes, timestamp: str, key=PRIVATE_KEY) -> dict[str, str]:
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE: base64.b64encode(signature).decode(), TIMESTAMP: timestamp}


@pytest.fixture
def client(engine, monkeypatch):
    monkeypatch.setenv("ABM_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("ABM_SENDGRID_WEBHOOK_PUBLIC_KEY", PUBLIC_KEY)
    monkeypatch.setenv("ABM_SENDGRID_INBOUND_TOKEN", INBOUND_TOKEN)
    reset_settings()
    upsert_accounts(engine, [{"domain": "acme.example", "attributes": {}, "technologies": []}])
    upsert_contacts(
        engine,
        [
            {"email": "ana@acme.example", "account_domain": "acme.example", "attributes": {}},
            {"email": "bo@acme.example", "account_domain": "acme.example", "attributes": {}},
        ],
    )
    return TestClient(create_app(get_settings()))


def _events(**overrides) -> bytes:
    event = {
        "email": "ana@acme.example",
        "timestamp": int(time.time()),
        "event": "open",
        "sg_event_id": "evt-1",
        "sg_message_id": "sg-1",
    }
    return json.dumps([{**event, **overrides}]).encode()


def _stored(engine) -> list[tuple]:
    with engine.connect() as connection:
        return connection.execute(
            select(EngagementEvent.provider_event_id, EngagementEvent.type)
        ).all()


def test_a_validly_signed_event_is_stored_once_even_when_replayed(client, engine):
    body = _events()
    headers = sign(body, str(int(time.time())))
    first = client.post("/webhooks/sendgrid", content=body, headers=headers)
    again = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json()["stored"] == 1 and again.json()["stored"] == 0
    assert _stored(engine) == [("evt-1", "open")]


@pytest.mark.parametrize(
    ("tamper", "status"),
    [
        ("body", 403),
        ("key", 403),
        ("stale", 401),
        ("unsigned", 401),
    ],
)
def test_bad_signatures_are_refused_and_nothing_is_stored(client, engine, tamper, status):
    body, now = _events(), str(int(time.time()))
    headers = sign(body, now)
    if tamper == "body":
        body = _events(event="click")
    elif tamper == "key":
        headers = sign(body, now, ec.generate_private_key(ec.SECP256R1()))
    elif tamper == "stale":
        old = str(int(time.time()) - 3600)
        headers = sign(body, old)
    elif tamper == "unsigned":
        headers = {}
    response = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert response.status_code == status
    assert _stored(engine) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b'{"event": "open"}', "JSON array"),
        (b'[{"event": "open"}]', "sg_event_id"),
        (b'[{"event":"open","sg_event_id":"e","timestamp":"x","email":"a@b"}]', "number"),
    ],
)
def test_a_malformed_body_gets_400_with_the_reason(client, engine, body, reason):
    response = client.post(
        "/webhooks/sendgrid", content=body, headers=sign(body, str(int(time.time())))
    )
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert _stored(engine) == []


def test_a_spam_report_suppresses_the_person_at_once(client, engine):
    body = _events(event="spamreport", sg_event_id="evt-spam")
    assert (
        client.post(
            "/webhooks/sendgrid", content=body, headers=sign(body, str(int(time.time())))
        ).status_code
        == 200
    )
    with engine.connect() as connection:
        ana = connection.execute(
            select(Contact.id, Contact.status).where(Contact.email == "ana@acme.example")
        ).one()
    assert ana.status == "suppressed"
    assert ana.id in suppressed_contact_ids(engine, [ana.id])


def test_one_click_unsubscribe_stops_the_next_send(client, engine):
    with engine.connect() as connection:
        ana_id = connection.execute(
            select(Contact.id).where(Contact.email == "ana@acme.example")
        ).scalar_one()
    token = make_token(ana_id, 1, get_settings().signing_key())
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200 and "a***@acme.example" in page.text
    response = client.post(
        f"/unsubscribe/{token}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert client.post(f"/unsubscribe/{token}").status_code == 200
    again = client.get(f"/unsubscribe/{token}")  # the link opened again: no second question
    assert again.status_code == 200 and "You are unsubscribed" in again.text
    assert "<form" not in again.text and "a***@acme.example" in again.text
    with engine.connect() as connection:
        status = connection.execute(select(Contact.status).where(Contact.id == ana_id)).scalar()
    assert status == "unsubscribed"
    assert skip_reason({"status": status}, suppressed=False, consent_required=False) == (
        "unsubscribed"
    )
    assert _stored(engine) == [(f"unsubscribe:{ana_id}", "unsubscribe")]


def test_a_forged_unsubscribe_token_changes_nothing(client, engine):
    forged = make_token(1, 1, "not-our-key")
    assert client.get(f"/unsubscribe/{forged}").status_code == 404
    assert client.post(f"/unsubscribe/{forged}").status_code == 404
    with engine.connect() as connection:
        assert set(connection.execute(select(Contact.status)).scalars()) == {"active"}


@pytest.mark.parametrize(("contact", "campaign"), [(2**70, 1), (1, 2**31), (-1, 1), (0, 1)])
def test_a_signed_token_with_an_id_no_row_can_have_is_not_found(client, contact, campaign):
    token = make_token(contact, campaign, "test-secret-key")  # signed with our key
    assert client.get(f"/unsubscribe/{token}").status_code == 404
    assert client.post(f"/unsubscribe/{token}").status_code == 404


def mailgun_body(
    key: str, event: dict, timestamp: int | None = None, parent: str | None = None
) -> bytes:
    """A Mailgun webhook body signed with `key`; with `parent`, also carrying the
    `parent-signature` Mailgun adds for an event on a subaccount's domain."""
    import hashlib
    import hmac

    stamp = str(timestamp or int(time.time()))
    token = "a" * 50
    block = {"timestamp": stamp, "token": token}
    for field, secret in (("signature", key), ("parent-signature", parent)):
        if secret is not None:
            block[field] = hmac.new(
                secret.encode(), (stamp + token).encode(), hashlib.sha256
            ).hexdigest()
    return json.dumps({"signature": block, "event-data": event}).encode()


MAILGUN_EVENT = {
    "event": "clicked",
    "id": "mg-1",
    "timestamp": 1764000000.5,
    "recipient": "ana@acme.example",
    "url": "https://demo.example/g",
}


def test_mailgun_events_are_checked_with_hmac_and_stored_once(client, engine, monkeypatch):
    monkeypatch.setenv("ABM_MAILGUN_WEBHOOK_SIGNING_KEY", "mg-key")
    reset_settings()
    mailgun = TestClient(create_app(get_settings()))
    good = mailgun_body("mg-key", MAILGUN_EVENT)
    assert mailgun.post("/webhooks/mailgun", content=good).json()["stored"] == 1
    assert mailgun.post("/webhooks/mailgun", content=good).json()["stored"] == 0
    assert (
        mailgun.post("/webhooks/mailgun", content=mailgun_body("other", MAILGUN_EVENT)).status_code
        == 403
    )
    stale = mailgun_body("mg-key", MAILGUN_EVENT, timestamp=int(time.time()) - 3600)
    assert mailgun.post("/webhooks/mailgun", content=stale).status_code == 401
    assert mailgun.post("/webhooks/mailgun", content=b"{}").status_code == 400
    assert _stored(engine) == [("mailgun:mg-1", "click")]


def test_a_temporary_mailgun_failure_is_not_a_hard_bounce(client, engine, monkeypatch):
    monkeypatch.setenv("ABM_MAILGUN_WEBHOOK_SIGNING_KEY", "mg-key")
    reset_settings()
    mailgun = TestClient(create_app(get_settings()))
    soft = {**MAILGUN_EVENT, "event": "failed", "id": "mg-2", "severity": "temporary"}
    mailgun.post("/webhooks/mailgun", content=mailgun_body("mg-key", soft))
    with engine.connect() as connection:
        assert set(connection.execute(select(Contact.status)).scalars()) == {"active"}


def test_an_inbound_reply_is_matched_to_the_message_it_answers(client, engine):
    from models.db import session_scope
    from models.store import insert_new_rows
    from models.tables import Campaign, Delivery

    with session_scope(engine) as session:
        session.add(Campaign(key="c", name="C"))
        session.flush()
        bo = session.execute(select(Contact.id).where(Contact.email == "bo@acme.example")).scalar()
        insert_new_rows(
            session,
            engine,
            Delivery.__table__,
            [
                {
                    "campaign_id": 1,
                    "step": "intro",
                    "contact_id": bo,
                    "account_id": 1,
                    "channel": "email",
                    "state": "sent",
                    "message_id": "<abm.9.x@demo.example>",
                    "attempts": 1,
                    "due_at": utcnow(),
                    "created_at": utcnow(),
                    "updated_at": utcnow(),
                }
            ],
            ["campaign_id", "step", "contact_id"],
        )
    headers = (
        "From: Someone Else <assistant@acme.example>\nMessage-ID: <reply-1@acme.example>\n"
        "In-Reply-To: <abm.9.x@demo.example>\nReferences: <abm.9.x@demo.example>\n"
    )
    form = {"headers": headers, "from": "assistant@acme.example", "text": "Let's talk"}
    first = client.post(INBOUND, data=form)
    assert first.json() == {"stored": 1, "unmatched": 0}
    assert client.post(INBOUND, data=form).json()["stored"] == 0
    with engine.connect() as connection:
        reply = connection.execute(
            select(EngagementEvent.type, EngagementEvent.contact_id, EngagementEvent.campaign_id)
        ).one()
    assert tuple(reply) == ("reply", bo, 1)
    assert client.post(INBOUND, data={"text": "x"}).status_code == 400


def test_provider_events_reconcile_a_message_a_crash_left_uncertain(client, engine):
    from models.db import session_scope
    from models.store import insert_new_rows
    from models.tables import Campaign, Delivery

    with session_scope(engine) as session:
        session.add(Campaign(key="c", name="C"))
        session.flush()
        insert_new_rows(
            session,
            engine,
            Delivery.__table__,
            [
                {
                    "campaign_id": 1,
                    "step": "intro",
                    "contact_id": 1,
                    "account_id": 1,
                    "channel": "email",
                    "state": "uncertain",
                    "message_id": "<abm.7.x@demo.example>",
                    "attempts": 1,
                    "due_at": utcnow(),
                    "created_at": utcnow(),
                    "updated_at": utcnow(),
                }
            ],
            ["campaign_id", "step", "contact_id"],
        )
    body = _events(event="processed", sg_event_id="evt-p", abm_message_id="<abm.7.x@demo.example>")
    response = client.post(
        "/webhooks/sendgrid", content=body, headers=sign(body, str(int(time.time())))
    )
    assert response.json()["reconciled"] == 1
    with engine.connect() as connection:
        assert connection.execute(select(Delivery.state)).scalar() == "sent"


def test_a_batch_is_matched_deduplicated_and_suppresses_in_one_go(client, engine):
    now = int(time.time())
    events = [
        {"event": "open", "sg_event_id": "a", "email": " Ana@Acme.example", "timestamp": now},
        {"event": "click", "sg_event_id": "a", "email": "ana@acme.example", "timestamp": now},
        {"event": "bounce", "type": "blocked", "sg_event_id": "b", "email": "bo@acme.example"},
        {"event": "bounce", "type": "bounce", "sg_event_id": "c", "email": "bo@acme.example"},
        {"event": "processed", "sg_event_id": "d", "email": "ana@acme.example"},
        {"event": "open", "sg_event_id": "e", "email": "nobody@acme.example"},
    ]
    for event in events:
        event.setdefault("timestamp", now)
    body = json.dumps(events).encode()
    response = client.post("/webhooks/sendgrid", content=body, headers=sign(body, str(now)))
    assert response.status_code == 200
    assert {k: response.json()[k] for k in ("received", "stored", "ignored", "unmatched")} == {
        "received": 6,
        "stored": 2,
        "ignored": 2,
        "unmatched": 1,
    }
    assert sorted(_stored(engine)) == [("a", "open"), ("c", "bounce")]
    with engine.connect() as connection:
        statuses = dict(connection.execute(select(Contact.email, Contact.status)).all())
    assert statuses == {"ana@acme.example": "active", "bo@acme.example": "bounced"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"message": "x"}, "message must be an object"),
        ({"message": {"headers": ["message-id"]}}, "message.headers must be an object"),
        ({"user-variables": [1]}, "user-variables must be an object"),
        ({"timestamp": [1]}, "timestamp is not a usable number"),
        ({"timestamp": "1e999"}, "timestamp is out of range"),
        ({"id": None}, "without 'id'"),
        ({"url": json.loads("[" * 100 + "]" * 100)}, "url is nested too deeply"),
    ],
    ids=[
        *("message", "headers", "user-variables", "timestamp-list", "timestamp-inf", "no-id"),
        "deep-url",
    ],
)
def test_a_malformed_mailgun_event_gets_400_naming_the_field(
    client, engine, monkeypatch, overrides, field
):
    monkeypatch.setenv("ABM_MAILGUN_WEBHOOK_SIGNING_KEY", "mg-key")
    reset_settings()
    mailgun = TestClient(create_app(get_settings()))
    event = {k: v for k, v in {**MAILGUN_EVENT, **overrides}.items() if v is not None}
    response = mailgun.post("/webhooks/mailgun", content=mailgun_body("mg-key", event))
    assert response.status_code == 400 and field in response.json()["error"]
    assert _stored(engine) == []


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("x", "event-data must be an object"),
        ({**MAILGUN_EVENT, "message": ["x"]}, "message must be an object"),
        ({**MAILGUN_EVENT, "message": {"headers": "x"}}, "message.headers must be an object"),
        ({**MAILGUN_EVENT, "user-variables": "x"}, "user-variables must be an object"),
        ({**MAILGUN_EVENT, "timestamp": {}}, "timestamp is not a usable number"),
    ],
)
def test_mailgun_as_sendgrid_raises_bad_events_never_attribute_error(event, reason):
    from connectors.email.mailgun_events import mailgun_as_sendgrid
    from connectors.email.webhook_events import BadEvents

    with pytest.raises(BadEvents, match=reason):
        mailgun_as_sendgrid(event)
    shaped = mailgun_as_sendgrid({**MAILGUN_EVENT, "message": {"headers": {"message-id": 1}}})
    assert shaped["abm_message_id"] == "<1>"


@pytest.mark.parametrize("given", ["é" * 64, "\ud800", "0" * 64, ""])
def test_a_mailgun_signature_is_compared_as_bytes_so_any_text_is_a_clean_refusal(given):
    from connectors.email.mailgun_events import verify_mailgun_signature
    from connectors.email.webhook_events import BadSignature

    now = time.time()
    block = {"timestamp": str(int(now)), "token": "t\ud800é", "signature": given}
    with pytest.raises(BadSignature, match="signature does not match"):
        verify_mailgun_signature("mg-key", block, now)


def test_a_mailgun_signature_over_any_token_text_is_accepted_when_it_matches():
    import hashlib
    import hmac

    from connectors.email.mailgun_events import verify_mailgun_signature

    now = time.time()
    stamp, token = str(int(now)), "tökén\ud800"
    digest = hmac.new(
        b"mg-key", (stamp + token).encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()
    block = {"timestamp": stamp, "token": token, "signature": digest}
    verify_mailgun_signature("mg-key", block, now)


def test_a_non_ascii_mailgun_signature_gets_403_not_a_500(client, engine, monkeypatch):
    monkeypatch.setenv("ABM_MAILGUN_WEBHOOK_SIGNING_KEY", "mg-key")
    reset_settings()
    mailgun = TestClient(create_app(get_settings()), raise_server_exceptions=False)
    body = json.loads(mailgun_body("mg-key", MAILGUN_EVENT))
    body["signature"]["signature"] = "é" * 64
    response = mailgun.post("/webhooks/mailgun", content=json.dumps(body).encode())
    assert response.status_code == 403 and "signature" in response.json()["error"]
    assert _stored(engine) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_events(timestamp=float("nan")), "event 0: timestamp"),
        (_events(sg_event_id="e\x00"), "event 0: sg_event_id"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        # parsed, but deep enough (~965 levels) not to serialise where it is stored: was a 500
        (_events(url="D").replace(b'"D"', b"[" * 100 + b"]" * 100), "event 0: url is nested"),
    ],
    ids=["nan", "nul", "deep", "deep-data"],
)
def test_a_sendgrid_body_the_database_could_not_store_gets_400_naming_the_field(
    client, engine, body, reason
):
    response = client.post(
        "/webhooks/sendgrid", content=body, headers=sign(body, str(int(time.time())))
    )
    assert response.status_code == 400 and reason in response.json()["error"]
    assert _stored(engine) == []


def _account(engine, domain: str = "acme.example") -> tuple[float, str]:
    from models.tables import Account

    with engine.connect() as connection:
        row = connection.execute(
            select(Account.engagement_score, Account.stage).where(Account.domain == domain)
        ).one()
    return row.engagement_score, row.stage


def test_a_signed_batch_moves_the_account_before_the_response_returns(client, engine):
    from models.tables import StageChange

    now = int(time.time())
    events = [
        {"email": email, "event": "click", "sg_event_id": f"c{i}", "timestamp": now}
        for i, email in enumerate(["ana@acme.example", "bo@acme.example", "ana@acme.example"])
    ]
    body = json.dumps(events).encode()
    response = client.post("/webhooks/sendgrid", content=body, headers=sign(body, str(now)))
    assert response.status_code == 200
    # three clicks 15 + a second person engaged 4, no roles classified
    assert _account(engine) == (pytest.approx(19, abs=0.1), "engaged")
    with engine.connect() as connection:
        changes = connection.execute(
            select(StageChange.to_stage, StageChange.reason, StageChange.source)
        ).all()
    assert [tuple(change) for change in changes] == [
        ("engaged", "score 19 >= 15, 2 people, 0 roles engaged", "engagement")
    ]


def test_the_webhook_rolls_up_only_the_accounts_it_touched(client, engine):
    from models.tables import Account
    from stages.engagement.rollup import store_events

    upsert_accounts(engine, [{"domain": "globex.example", "attributes": {}, "technologies": []}])
    upsert_contacts(
        engine,
        [{"email": "gil@globex.example", "account_domain": "globex.example", "attributes": {}}],
    )
    with engine.connect() as connection:
        gil, globex = connection.execute(
            select(Contact.id, Contact.account_id).where(Contact.email == "gil@globex.example")
        ).one()
    store_events(
        engine,
        [
            {
                "provider": "test",
                "provider_event_id": "old-click",
                "type": "click",
                "channel": "email",
                "occurred_at": utcnow(),
                "account_id": globex,
                "contact_id": gil,
            }
        ],
    )
    body = _events(event="click", sg_event_id="c1")
    assert (
        client.post(
            "/webhooks/sendgrid", content=body, headers=sign(body, str(int(time.time())))
        ).json()["stored"]
        == 1
    )
    assert _account(engine)[0] > 0
    with engine.connect() as connection:
        untouched = connection.execute(
            select(Account.engagement_score).where(Account.id == globex)
        ).scalar()
    assert untouched == 0


def test_an_inbound_reply_moves_the_account_at_once(client, engine):
    headers = "From: Bo <bo@acme.example>\nMessage-ID: <reply-2@acme.example>\n"
    form = {"headers": headers, "from": "Bo <bo@acme.example>", "text": "Interested"}
    assert client.post(INBOUND, data=form).json()["stored"] == 1
    assert _account(engine)[1] == "engaged"


def test_a_one_click_unsubscribe_updates_the_account_score_at_once(client, engine):
    from stages.engagement.rollup import store_events

    with engine.connect() as connection:
        people = dict(connection.execute(select(Contact.email, Contact.id)).all())
    store_events(
        engine,
        [
            {
                "provider": "test",
                "provider_event_id": f"click-{email}",
                "type": "click",
                "channel": "email",
                "occurred_at": utcnow(),
                "account_id": 1,
                "contact_id": contact_id,
            }
            for email, contact_id in people.items()
        ],
    )
    assert _account(engine) == (0, "target")  # stored, not rolled up yet
    token = make_token(people["ana@acme.example"], 1, get_settings().signing_key())
    assert client.post(f"/unsubscribe/{token}").status_code == 200
    # two clicks 10 + a second person 4, less the unsubscribe's 5
    assert _account(engine) == (pytest.approx(9, abs=0.1), "aware")


def test_the_webhook_uses_the_configured_engagement_rules(client, engine, monkeypatch, tmp_path):
    from core.settings import DEFAULTS_DIR

    rules = tmp_path / "engagement.yaml"
    default = (DEFAULTS_DIR / "engagement.yaml").read_text(encoding="utf-8")
    rules.write_text(default.replace("  click: 5\n", "  click: 50\n"), encoding="utf-8")
    monkeypatch.setenv("ABM_ENGAGEMENT_RULES", str(rules))
    reset_settings()
    custom = TestClient(create_app(get_settings()))
    body = _events(event="click", sg_event_id="c1")
    custom.post("/webhooks/sendgrid", content=body, headers=sign(body, str(int(time.time()))))
    assert _account(engine)[0] == pytest.approx(50, abs=0.1)


def test_a_bad_engagement_rules_file_stops_the_receiver_from_starting(
    client, monkeypatch, tmp_path
):
    from core.errors import ConfigError

    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv("ABM_ENGAGEMENT_RULES", str(missing))
    reset_settings()
    with pytest.raises(ConfigError) as refused:
        create_app(get_settings())
    assert "ABM_ENGAGEMENT_RULES" in str(refused.value) and str(missing) in str(refused.value)


def _our_log(caplog) -> str:
    """What the receiver itself logged (the test client logs every URL it requests)."""
    return " ".join(r.getMessage() for r in caplog.records if r.name.startswith("abm"))


REPLY_FORM = {
    "headers": "From: Bo <bo@acme.example>\nMessage-ID: <reply-9@acme.example>\n",
    "from": "Bo <bo@acme.example>",
    "text": "Please stop",
}


def test_without_an_inbound_token_every_reply_post_is_refused_and_logged_without_the_person(
    client, engine, monkeypatch, caplog
):
    """A fake reply would pause someone's sequence: with no token configured (the default)
    the endpoint accepts nothing, and says which setting turns it on."""
    monkeypatch.delenv("ABM_SENDGRID_INBOUND_TOKEN")
    reset_settings()
    caplog.set_level("INFO")
    open_door = TestClient(create_app(get_settings()))
    for path in ("/webhooks/sendgrid/inbound", INBOUND, "/webhooks/sendgrid/inbound?token="):
        response = open_door.post(path, data=REPLY_FORM)
        assert response.status_code == 403, path
        assert "ABM_SENDGRID_INBOUND_TOKEN" in response.json()["error"]
    assert _stored(engine) == []
    logged = _our_log(caplog)
    assert "ABM_SENDGRID_INBOUND_TOKEN" in logged
    assert "bo@acme.example" not in caplog.text and "Please stop" not in caplog.text


@pytest.mark.parametrize(
    "path",
    [
        "/webhooks/sendgrid/inbound",
        "/webhooks/sendgrid/inbound?token=",
        "/webhooks/sendgrid/inbound?token=inbound-T0ken-for-test",
        "/webhooks/sendgrid/inbound?token=inbound-T0ken-for-testsX",
        "/webhooks/sendgrid/inbound?token=%C3%A9",
    ],
    ids=["none", "empty", "prefix", "longer", "non-ascii"],
)
def test_a_missing_or_wrong_inbound_token_is_refused_and_stores_nothing(
    client, engine, path, caplog
):
    caplog.set_level("INFO")
    response = client.post(path, data=REPLY_FORM)
    assert response.status_code == 403 and response.json()["error"]
    assert _stored(engine) == []
    logged = _our_log(caplog)
    assert "inbound" in logged and INBOUND_TOKEN not in logged
    assert "bo@acme.example" not in caplog.text


@pytest.mark.parametrize(
    ("route", "setting"),
    [
        ("/webhooks/sendgrid", "ABM_SENDGRID_WEBHOOK_PUBLIC_KEY"),
        ("/webhooks/mailgun", "ABM_MAILGUN_WEBHOOK_SIGNING_KEY"),
    ],
)
@pytest.mark.parametrize("value", [None, "", " , "], ids=["unset", "empty", "separators"])
def test_a_signed_route_without_its_key_refuses_everything(
    client, engine, monkeypatch, route, setting, value
):
    if value is None:
        monkeypatch.delenv(setting, raising=False)
    else:
        monkeypatch.setenv(setting, value)
    reset_settings()
    closed = TestClient(create_app(get_settings()))
    body = _events() if route == "/webhooks/sendgrid" else mailgun_body("", MAILGUN_EVENT)
    response = closed.post(route, content=body, headers=sign(body, str(int(time.time()))))
    assert response.status_code == 403
    assert setting in response.json()["error"]
    assert _stored(engine) == []


def test_a_mailgun_subaccount_event_signed_with_the_parent_key_is_accepted(
    client, engine, monkeypatch
):
    """Mailgun signs a subaccount's events with the subaccount's key (`signature`) and the
    primary account's (`parent-signature`): configuring the parent's key is enough."""
    monkeypatch.setenv("ABM_MAILGUN_WEBHOOK_SIGNING_KEY", "parent-key")
    reset_settings()
    mailgun = TestClient(create_app(get_settings()))
    from_subaccount = mailgun_body("subaccount-key", MAILGUN_EVENT, parent="parent-key")
    response = mailgun.post("/webhooks/mailgun", content=from_subaccount)
    assert response.status_code == 200 and response.json()["stored"] == 1

    forged = mailgun_body("subaccount-key", {**MAILGUN_EVENT, "id": "mg-9"}, parent="guess")
    assert mailgun.post("/webhooks/mailgun", content=forged).status_code == 403
    assert _stored(engine) == [("mailgun:mg-1", "click")]


def test_mailgun_accepts_any_of_several_signing_keys(client, engine, monkeypatch):
    monkeypatch.setenv("ABM_MAILGUN_WEBHOOK_SIGNING_KEY", "old-key,\n new-key")
    reset_settings()
    mailgun = TestClient(create_app(get_settings()))
    for number, key in enumerate(("old-key", "new-key")):
        event = {**MAILGUN_EVENT, "id": f"mg-{number}"}
        assert (
            mailgun.post("/webhooks/mailgun", content=mailgun_body(key, event)).status_code == 200
        )
    stranger = mailgun_body("old-key,\n new-key", {**MAILGUN_EVENT, "id": "mg-x"})
    assert mailgun.post("/webhooks/mailgun", content=stranger).status_code == 403
    assert len(_stored(engine)) == 2


@pytest.mark.parametrize("separator", [",", " ", "\n", " , "])
def test_sendgrid_accepts_any_of_several_public_keys_so_a_key_can_be_rotated(
    client, engine, monkeypatch, separator
):
    new_key = ec.generate_private_key(ec.SECP256R1())
    monkeypatch.setenv(
        "ABM_SENDGRID_WEBHOOK_PUBLIC_KEY", separator.join([PUBLIC_KEY, public_key_b64(new_key)])
    )
    reset_settings()
    rotated = TestClient(create_app(get_settings()))
    now = str(int(time.time()))
    for number, key in enumerate((PRIVATE_KEY, new_key)):
        body = _events(sg_event_id=f"evt-{number}")
        response = rotated.post("/webhooks/sendgrid", content=body, headers=sign(body, now, key))
        assert response.status_code == 200, response.text
    body = _events(sg_event_id="evt-other")
    other = ec.generate_private_key(ec.SECP256R1())
    assert (
        rotated.post("/webhooks/sendgrid", content=body, headers=sign(body, now, other)).status_code
        == 403
    )
    assert len(_stored(engine)) == 2


def test_a_malformed_sendgrid_key_does_not_shut_out_the_good_one_but_alone_refuses_all(
    client, engine, monkeypatch
):
    monkeypatch.setenv("ABM_SENDGRID_WEBHOOK_PUBLIC_KEY", f"not-a-key {PUBLIC_KEY}")
    reset_settings()
    mixed = TestClient(create_app(get_settings()))
    body = _events()
    headers = sign(body, str(int(time.time())))
    assert mixed.post("/webhooks/sendgrid", content=body, headers=headers).status_code == 200

    monkeypatch.setenv("ABM_SENDGRID_WEBHOOK_PUBLIC_KEY", "bm90LWEta2V5")
    reset_settings()
    broken = TestClient(create_app(get_settings()))
    response = broken.post("/webhooks/sendgrid", content=body, headers=headers)
    assert response.status_code == 403
    assert "ABM_SENDGRID_WEBHOOK_PUBLIC_KEY" in response.json()["error"]


def test_sendgrid_keys_are_read_bare_or_wrapped_in_pem_lines_and_bad_ones_named():
    from connectors.email.sendgrid_events import load_public_keys

    wrapped = "-----BEGIN PUBLIC KEY-----\n" + PUBLIC_KEY[:40] + "\n" + PUBLIC_KEY[40:]
    wrapped += "\n-----END PUBLIC KEY-----"
    other = public_key_b64(ec.generate_private_key(ec.SECP256R1()))
    keys, problems = load_public_keys(f"{wrapped}\n{other}, bm90LWEta2V5")
    assert len(keys) == 2
    assert problems == ["key 3 of 3: not base64 of a DER public key"]
    assert load_public_keys(None) == ([], []) and load_public_keys(" , ") == ([], [])
