"""The console's suppressions page: the list by kind and channel a page at a time, a posted
search (an email never in a URL), adding one that the next send honours, lifting one with a
reason (never an unsubscribe), the lifted history, a viewer refused, the audit log kept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from console_support import csrf_of, signed_in_client
from sqlalchemy import Engine, select, update

from abm.console.pages.suppressions import BadParameter, parse_listing
from connectors.email.outbox import OutboxBackend
from core.campaign_file import load_campaign
from core.settings import get_settings
from models.store import add_suppressions, upsert_accounts, upsert_contacts
from models.tables import Account, AuditLog, Contact, Delivery, LiftedSuppression, Suppression
from stages.delivery.ledger import DeliveryContext, due_delivery_ids, plan_step, register_campaign
from stages.delivery.send import deliver
from stages.targeting.audience import target_account_ids

LINK = re.compile(r'(?:href|action)="([^"]*)"')


def _audit(engine: Engine) -> list[tuple]:
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                select(AuditLog.actor, AuditLog.action, AuditLog.target, AuditLog.detail).order_by(
                    AuditLog.id
                )
            )
        ]


def _suppressions(engine: Engine) -> set[tuple[str, str, str]]:
    with engine.connect() as connection:
        return set(
            connection.execute(select(Suppression.kind, Suppression.value, Suppression.channel))
        )


def _no_email_in_links(html: str) -> None:
    for link in LINK.findall(html):
        assert "@" not in link and "%40" not in link, link


def test_an_added_email_is_skipped_at_the_next_send(db, database_url, tmp_path: Path):
    upsert_accounts(db, [{"domain": "acme.example", "name": "Acme", "attributes": {}}])
    upsert_contacts(
        db,
        [
            {"email": f"{name}@acme.example", "account_domain": "acme.example", "attributes": {}}
            for name in ("ana", "bo")
        ],
    )
    with db.begin() as connection:
        connection.execute(update(Account).values(tier=1))
    path = tmp_path / "c.yaml"
    path.write_text(
        "key: sup-check\nname: Sup\naudience:\n  tiers: [1]\nconsent_required: false\n"
        "caps:\n  per_contact: {max: 5, days: 7}\n  per_account: {max: 50, days: 7}\n"
        "links:\n  guide: https://demo.example/g\nsteps:\n  - id: intro\n    template: intro\n"
    )
    key, campaign = load_campaign(path)
    campaign_id = register_campaign(db, key, campaign, path)
    plan_step(db, campaign_id, key, campaign.steps, 0, target_account_ids(db, campaign.audience))

    client = signed_in_client(database_url, tmp_path, name="ana-operator")
    answer = client.post(
        "/console/suppressions/add",
        data={
            "csrf_token": csrf_of(client),
            "value": " Ana@Acme.example ",
            "channel": "email",
            "reason": "asked by phone",
        },
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/suppressions?notice=added"
    assert _suppressions(db) == {("email", "ana@acme.example", "email")}
    assert _audit(db) == [
        ("ana-operator", "suppression.add", "email ana@acme.example on email", "asked by phone")
    ]
    with db.begin() as connection:  # the send-time check reads the table itself
        connection.execute(update(Contact).values(status="active"))

    context = DeliveryContext(database_url, campaign, campaign_id, key, "intro")
    ids = due_delivery_ids(db, campaign_id, "intro")
    deliver(db, get_settings(), context, ids, OutboxBackend(tmp_path / "outbox"))
    with db.connect() as connection:
        states = dict(
            connection.execute(
                select(Contact.email, Delivery.skip_reason).join(
                    Contact, Contact.id == Delivery.contact_id
                )
            ).all()
        )
    assert states == {"ana@acme.example": "suppressed", "bo@acme.example": None}

    again = client.post(
        "/console/suppressions/add",
        data={"csrf_token": csrf_of(client), "value": "ana@acme.example", "channel": "email",
              "reason": "twice"},
    )  # fmt: skip
    assert again.headers["location"].endswith("?notice=exists")
    assert len(_audit(db)) == 1


def test_adding_refuses_what_it_cannot_read_and_says_why(db, database_url, tmp_path):
    client = signed_in_client(database_url, tmp_path)
    for value, channel, reason, words in (
        ("not an address", "all", "x", "is not a valid email or domain"),
        ("acme.example", "fax", "x", "the channel is one of all, email, linkedin"),
        ("acme.example", "all", "", "say why"),
    ):
        answer = client.post(
            "/console/suppressions/add",
            data={"csrf_token": csrf_of(client), "value": value, "channel": channel,
                  "reason": reason},
        )  # fmt: skip
        assert answer.status_code == 400 and words in answer.text, value
    assert _suppressions(db) == set() and _audit(db) == []
    domain = client.post(
        "/console/suppressions/add",
        data={"csrf_token": csrf_of(client), "value": "@Acme.example", "reason": "competitor"},
    )
    assert domain.status_code == 303
    assert _suppressions(db) == {("domain", "acme.example", "all")}


def test_the_list_filters_pages_and_searches_without_an_email_in_a_url(db, database_url, tmp_path):
    add_suppressions(
        db,
        [{"kind": "email", "value": f"p{i:03d}@acme.example", "reason": "bounced"}
         for i in range(60)]
        + [{"kind": "domain", "value": "rival.example", "channel": "linkedin",
            "reason": "competitor"}],
    )  # fmt: skip
    client = signed_in_client(database_url, tmp_path, role="viewer")
    first = client.get("/console/suppressions")
    assert first.status_code == 200
    assert "61 in all" in first.text and "page 1 of 2" in first.text
    assert "rival.example" in first.text  # domains sort first
    second = client.get("/console/suppressions", params={"page": "2"}).text
    assert "p059@acme.example" in second and "p000@acme.example" not in second
    only = client.get("/console/suppressions", params={"kind": "domain", "channel": "linkedin"})
    assert "1 in all" in only.text and "p001@acme.example" not in only.text
    bad = client.get("/console/suppressions", params={"channel": "fax"})
    assert bad.status_code == 400 and "channel: use one of" in bad.text

    found = client.post(
        "/console/suppressions/search",
        data={"csrf_token": csrf_of(client), "q": "P05", "kind": "email"},
    )
    assert found.status_code == 200
    assert "10 in all" in found.text and "p055@acme.example" in found.text
    assert "p100" not in found.text and "rival.example</td>" not in found.text
    for page in (first.text, second, only.text, found.text):
        _no_email_in_links(page)
    many = client.post(
        "/console/suppressions/search", data={"csrf_token": csrf_of(client), "q": "acme"}
    )
    assert "page 1 of 2" in many.text and 'name="page" value="2"' in many.text
    forged = client.post("/console/suppressions/search", data={"q": "acme"})
    assert forged.status_code == 403
    assert "/console/suppressions/add" not in first.text  # a viewer gets no add form
    assert "/console/suppressions/lift" not in first.text


def test_lifting_keeps_history_and_never_lifts_an_unsubscribe(db, database_url, tmp_path):
    add_suppressions(
        db,
        [
            {"kind": "email", "value": "ana@acme.example", "reason": "bounced"},
            {"kind": "email", "value": "bo@acme.example", "reason": "unsubscribed"},
        ],
    )
    client = signed_in_client(database_url, tmp_path, name="cy")
    page = client.get("/console/suppressions").text
    assert 'name="value" value="ana@acme.example"' in page  # a lift form for the bounce
    assert 'name="value" value="bo@acme.example"' not in page  # none for the unsubscribe
    assert "Only the person can take back an unsubscribe" in page
    assert "abm suppressions remove VALUE --person-asked" in page

    refused = client.post(
        "/console/suppressions/lift",
        data={"csrf_token": csrf_of(client), "value": "bo@acme.example", "channel": "all",
              "reason": "cleaning up"},
    )  # fmt: skip
    assert refused.status_code == 409
    assert "abm suppressions remove bo@acme.example --person-asked" in refused.text
    assert ("email", "bo@acme.example", "all") in _suppressions(db)

    no_reason = client.post(
        "/console/suppressions/lift",
        data={"csrf_token": csrf_of(client), "value": "ana@acme.example", "channel": "all"},
    )
    assert no_reason.status_code == 400 and "say why" in no_reason.text
    lifted = client.post(
        "/console/suppressions/lift",
        data={"csrf_token": csrf_of(client), "value": "ana@acme.example", "channel": "all",
              "reason": "the mailbox works again"},
    )  # fmt: skip
    assert lifted.headers["location"] == "/console/suppressions?notice=lifted"
    assert _suppressions(db) == {("email", "bo@acme.example", "all")}
    with db.connect() as connection:
        history = connection.execute(
            select(LiftedSuppression.value, LiftedSuppression.lifted_by,
                   LiftedSuppression.person_asked)
        ).all()  # fmt: skip
    assert history == [("ana@acme.example", "cy", False)]
    assert _audit(db) == [
        ("cy", "suppression.lift", "email ana@acme.example on all", "the mailbox works again")
    ]
    shown = client.get("/console/suppressions", params={"view": "lifted"}).text
    assert "the mailbox works again" in shown and "ana@acme.example" in shown
    gone = client.post(
        "/console/suppressions/lift",
        data={"csrf_token": csrf_of(client), "value": "ana@acme.example", "channel": "all",
              "reason": "again"},
    )  # fmt: skip
    assert gone.status_code == 404 and "no suppression of ana@acme.example" in gone.text


def test_a_viewer_cannot_add_or_lift(db, database_url, tmp_path):
    add_suppressions(db, [{"kind": "domain", "value": "acme.example", "reason": "x"}])
    viewer = signed_in_client(database_url, tmp_path, role="viewer")
    for path, data in (
        ("/console/suppressions/add", {"value": "bo@acme.example", "reason": "x"}),
        ("/console/suppressions/lift", {"value": "acme.example", "channel": "all",
                                        "reason": "x"}),
    ):  # fmt: skip
        answer = viewer.post(path, data={"csrf_token": csrf_of(viewer), **data})
        assert answer.status_code == 403 and "only an operator" in answer.text
    assert _suppressions(db) == {("domain", "acme.example", "all")} and _audit(db) == []


def test_a_viewer_sees_no_lift_column_and_a_domain_as_written(db, database_url, tmp_path):
    add_suppressions(
        db,
        [
            {"kind": "domain", "value": "xn--bergstrm-ab-xfb.se", "reason": "asked by phone"},
            {"kind": "email", "value": "bo@acme.example", "reason": "unsubscribed"},
        ],
    )
    viewer = signed_in_client(database_url, tmp_path, role="viewer").get("/console/suppressions")
    table = viewer.text[viewer.text.index("<table>") : viewer.text.index("</table>")]
    assert "<th>Lift</th>" not in table and "<form" not in table
    assert "Only the person can take back" not in table  # a lift column's words, not for them
    assert table.count("<th>") == table.split("<tr>")[2].count("<td>") == 6
    assert "an operator can add suppressions and lift them" in viewer.text
    assert "<td>bergström-ab.se</td>" in table

    operator = signed_in_client(database_url, tmp_path, name="cy").get("/console/suppressions")
    table = operator.text[operator.text.index("<table>") : operator.text.index("</table>")]
    assert "<th>Lift</th>" in table and "<td>bergström-ab.se</td>" in table
    assert 'name="value" value="xn--bergstrm-ab-xfb.se"' in table  # the form keeps it stored
    assert "Lift the suppression of bergström-ab.se" in table


def test_an_empty_list_says_where_suppressions_come_from(db, database_url, tmp_path):
    client = signed_in_client(database_url, tmp_path)
    assert "No suppressions yet" in client.get("/console/suppressions").text
    lifted = client.get("/console/suppressions", params={"view": "lifted"}).text
    assert "No suppression has been lifted yet" in lifted


def test_listing_parameters_are_checked():
    assert parse_listing({"kind": "email", "view": "lifted", "page": "3"}).params() == {
        "kind": "email",
        "view": "lifted",
    }
    assert parse_listing({"q": "ana@acme.example"}).search is None  # only a posted search
    assert parse_listing({"q": "ana@acme.example"}, search=True).params() == {}
    for bad in ({"kind": "phone"}, {"view": "all"}, {"page": "0"}, {"channel": "sms"}):
        with pytest.raises(BadParameter):
            parse_listing(bad)
