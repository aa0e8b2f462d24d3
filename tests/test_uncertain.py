"""`uncertain` is a state that ends. A message handed to a provider when a failure hit keeps
the Message-ID it was sent with (stored before the provider is called), so the provider's
events, a relay's log, the operator or the campaign file's policy can settle it; a re-send
goes out under the same Message-ID. SendGrid is mocked at the wire; the ledger, the send
loop, the backend and the CLI are the real ones."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import httpx
import respx
from cli_support import run_abm
from sendgrid_delivery import BASE, CAMPAIGN, deliver_through
from sqlalchemy import select, update

from core.campaign_file import UncertainPolicy, load_campaign
from core.settings import get_settings, reset_settings
from models.db import session_scope
from models.tables import Contact, Delivery, utcnow
from stages.content.compose import Composer
from stages.delivery.ledger import ledger_summary
from stages.delivery.uncertain import apply_policy, mark_sent_by_message_id, message_ids_in
from stages.engagement.ingest import ingest_sendgrid


def _fail_with_500(engine, context) -> list[str]:
    """Deliver the step into a 500 (the request may have been processed): the Message-IDs
    the request carried, as SendGrid saw them."""
    with respx.mock(base_url=BASE) as router:
        router.post("/v3/mail/send").mock(return_value=httpx.Response(500))
        deliver_through(engine, context, router)
        bodies = [json.loads(call.request.content) for call in router.calls]
    return [p["custom_args"]["abm_message_id"] for body in bodies for p in body["personalizations"]]


def _rows(engine, campaign_id: int) -> dict[int, tuple[str, str | None, int]]:
    with engine.connect() as connection:
        return {
            row.id: (row.state, row.message_id, row.contact_id)
            for row in connection.execute(
                select(Delivery.id, Delivery.state, Delivery.message_id, Delivery.contact_id).where(
                    Delivery.campaign_id == campaign_id
                )
            )
        }


def test_an_uncertain_message_keeps_the_message_id_it_went_out_with(engine, planned):
    campaign_id, context = planned
    requested = _fail_with_500(engine, context)
    uncertain = {i: r for i, r in _rows(engine, campaign_id).items() if r[0] == "uncertain"}
    assert uncertain and len(uncertain) == len(requested)
    composer = Composer(
        get_settings(),
        context.campaign_key,
        campaign_id,
        context.campaign,
        (context.campaign.steps[0]),
    )
    for row_id, (_, message_id, contact_id) in uncertain.items():
        assert message_id == composer.message_id(row_id, contact_id)
    assert sorted(message_id for _, message_id, _ in uncertain.values()) == sorted(requested)


def test_provider_events_settle_what_a_failure_left_uncertain(engine, planned):
    campaign_id, context = planned
    requested = _fail_with_500(engine, context)
    with engine.connect() as connection:
        emails = dict(
            connection.execute(
                select(Delivery.message_id, Contact.email).join(
                    Contact, Contact.id == Delivery.contact_id
                )
            ).all()
        )
    delivered = [
        {
            "event": "delivered",
            "sg_event_id": f"d{i}",
            "email": emails[mid],
            "abm_message_id": mid,
            "timestamp": 1_796_000_000,
        }
        for i, mid in enumerate(requested[:-1])
    ]
    report = ingest_sendgrid(engine, delivered)
    assert report.reconciled == len(requested) - 1
    summary = ledger_summary(engine, campaign_id)
    assert (summary["sent"], summary["uncertain"]) == (len(requested) - 1, 1)


def test_a_row_still_sending_after_its_lease_ran_out_is_settled_by_events(engine, planned):
    campaign_id, context = planned
    requested = _fail_with_500(engine, context)
    with session_scope(engine) as session:  # as a run killed mid-call leaves it
        session.execute(
            update(Delivery)
            .where(Delivery.state == "uncertain")
            .values(state="sending", lease_until=utcnow() - timedelta(seconds=1))
        )
    assert mark_sent_by_message_id(engine, requested, "test") == len(requested)
    assert ledger_summary(engine, campaign_id)["uncertain"] == 0


def test_resolve_marks_what_the_relay_log_names_and_resends_the_rest_under_the_same_id(
    engine, planned, capsys, monkeypatch, tmp_path
):
    campaign_id, context = planned
    monkeypatch.setenv("ABM_DATABASE_URL", engine.url.render_as_string(False))
    reset_settings()
    requested = _fail_with_500(engine, context)
    assert len(requested) >= 3
    seen, unseen = requested[:2], requested[2:]
    log = tmp_path / "mail.log"
    log.write_text(
        f"Dec  4 10:00:01 relay postfix/cleanup[812]: 4F1A2: message-id={seen[0]}\n"
        f"Dec  4 10:00:02 relay sm-mta[77]: x4B: from=<m@demo.example>, msgid={seen[1]}\n"
        "Dec  4 10:00:03 relay postfix/cleanup[812]: 4F1A3: message-id=<other@elsewhere.example>\n"
    )
    code, _, err = run_abm(capsys, monkeypatch, "campaign", "resolve", str(CAMPAIGN))
    assert code == 2 and f"{len(requested)} messages are uncertain" in err

    code, out, _ = run_abm(
        capsys, monkeypatch, "campaign", "resolve", str(CAMPAIGN),
        "--relay-log", str(log), "--resend", "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out) == {"marked_sent": 2, "resent": len(unseen), "left": 0}
    with respx.mock(base_url=BASE) as router:
        router.post("/v3/mail/send").mock(return_value=httpx.Response(202))
        outcome = deliver_through(engine, context, router)
        bodies = [json.loads(call.request.content) for call in router.calls]
    again = [p["custom_args"]["abm_message_id"] for b in bodies for p in b["personalizations"]]
    assert outcome.sent == len(unseen) and sorted(again) == sorted(unseen)
    headers = [p["headers"]["Message-ID"] for b in bodies for p in b["personalizations"]]
    assert sorted(headers) == sorted(unseen)
    summary = ledger_summary(engine, campaign_id)
    assert (summary["sent"], summary["uncertain"]) == (len(requested), 0)


def test_resolve_by_person_marks_only_that_message_sent(engine, planned, capsys, monkeypatch):
    campaign_id, context = planned
    monkeypatch.setenv("ABM_DATABASE_URL", engine.url.render_as_string(False))
    reset_settings()
    requested = _fail_with_500(engine, context)
    code, out, _ = run_abm(
        capsys, monkeypatch, "campaign", "people", str(CAMPAIGN), "--state", "uncertain", "--json"
    )
    people = json.loads(out)
    assert code == 0 and len(people) == len(requested)
    assert "abm campaign resolve" in people[0]["reason"]
    email = people[0]["email"].upper()  # as a person types it
    code, out, _ = run_abm(
        capsys, monkeypatch, "campaign", "resolve", str(CAMPAIGN),
        "--email", email, "--mark-sent", "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out) == {"marked_sent": 1, "resent": 0, "left": 0}
    assert ledger_summary(engine, campaign_id)["uncertain"] == len(requested) - 1
    code, _, err = run_abm(
        capsys, monkeypatch, "campaign", "resolve", str(CAMPAIGN), "--resend", "--mark-sent"
    )
    assert code == 2 and "one of --resend and --mark-sent" in err


def test_the_campaign_policy_settles_only_what_stayed_uncertain_long_enough(engine, planned):
    campaign_id, context = planned
    requested = _fail_with_500(engine, context)
    old = requested[: len(requested) // 2]
    with session_scope(engine) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.message_id.in_(old))
            .values(updated_at=utcnow() - timedelta(hours=7))
        )
    policy = UncertainPolicy(after="6h", then="resend")
    assert apply_policy(engine, campaign_id, policy) == len(old)
    rows = _rows(engine, campaign_id).values()
    assert sorted(mid for state, mid, _ in rows if state == "planned") == sorted(old)
    assert apply_policy(engine, campaign_id, None) == 0


def test_a_campaign_file_states_its_uncertain_policy(tmp_path):
    text = CAMPAIGN.read_text() + "\nuncertain:\n  after: 12h\n  then: mark_sent\n"
    path = tmp_path / "c.yaml"
    path.write_text(text)
    _, campaign = load_campaign(path)
    assert campaign.uncertain == UncertainPolicy(after="12h", then="mark_sent")
    path.write_text(CAMPAIGN.read_text() + "\nuncertain:\n  after: soon\n  then: resend\n")
    try:
        load_campaign(path)
    except Exception as exc:  # the project's own error, naming the field
        assert "after" in str(exc) and "soon" in str(exc)
    else:
        raise AssertionError("a wait of 'soon' was accepted")


def test_message_ids_are_found_in_the_logs_relays_write():
    lines = [
        "Dec  4 postfix/cleanup[1]: 4F1A2: message-id=<abm.1.aa@demo.example>",
        "Dec  4 sm-mta[2]: x: from=<m@demo.example>, size=1, msgid=<abm.2.bb@demo.example>",
        "2026-12-04 1qX-000 <= m@demo.example H=x P=esmtp S=1 id=abm.3.cc@demo.example",
        "<abm.4.dd@demo.example>",
        "no id here <not an id>",
    ]
    found = message_ids_in(lines)
    assert {
        f"<abm.{n}.{c}@demo.example>" for n, c in ((1, "aa"), (2, "bb"), (3, "cc"), (4, "dd"))
    } <= found
    assert "<not an id>" not in found


def test_a_template_that_fails_to_render_leaves_the_message_retryable(
    engine, planned, tmp_path, monkeypatch
):
    campaign_id, context = planned
    templates = tmp_path / "templates"
    shutil.copytree(get_settings().templates_dir, templates)
    for subject in (templates / "email" / "intro").rglob("subject.j2"):
        subject.write_text("{{ account.name }} {{ 1 // account.employees_missing }}")
    monkeypatch.setenv("ABM_TEMPLATES_DIR", str(templates))
    reset_settings()
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        route = router.post("/v3/mail/send").mock(return_value=httpx.Response(202))
        outcome = deliver_through(engine, context, router)
    assert route.call_count == 0 and outcome.sent == 0 and outcome.dead == 0
    with engine.connect() as connection:
        rows = connection.execute(select(Delivery.state, Delivery.attempts, Delivery.last_error))
        rows = rows.all()
    assert {row.state for row in rows} == {"failed"}
    assert {row.attempts for row in rows} == {0}  # nothing was sent: no attempt used
    assert all(row.last_error.startswith("render:") for row in rows)

    monkeypatch.delenv("ABM_TEMPLATES_DIR")  # the template is fixed
    reset_settings()
    with session_scope(engine) as session:  # and the retry is due
        session.execute(update(Delivery).values(due_at=utcnow()))
    with respx.mock(base_url=BASE) as router:
        router.post("/v3/mail/send").mock(return_value=httpx.Response(202))
        outcome = deliver_through(engine, context, router)
    assert outcome.sent == len(rows) and ledger_summary(engine, campaign_id)["failed"] == 0
