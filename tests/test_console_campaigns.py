"""The console's campaigns and campaign pages: status, steps and progress; the funnel and
A/B result as the report counts them; every person with state and reason, filtered and
paged by bookmark; pause, resume and the release of a held account by an operator (audited,
CSRF-checked, refused to a viewer), and a pause from the page that stops the next send."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from console_support import csrf_of, signed_in_client
from sqlalchemy import Engine, func, insert, select, update
from tests_support import write_file

from abm.console.pages.campaigns import BadParameter, parse_people
from connectors.email.outbox import OutboxBackend
from core.campaign_file import load_campaign
from core.settings import get_settings
from models.store import upsert_accounts, upsert_contacts
from models.tables import Account, AuditLog, Contact, Delivery, EngagementEvent, utcnow
from stages.delivery.ledger import (
    DeliveryContext,
    due_delivery_ids,
    plan_step,
    register_campaign,
    set_campaign_status,
)
from stages.delivery.people import campaign_people
from stages.delivery.send import deliver
from stages.report.data import campaign_results, report_data
from stages.targeting.audience import target_account_ids

HREF = re.compile(r'(?:href|action)="([^"]*)"')


def _campaign_file(tmp_path: Path, key: str = "console-check", extra: str = "") -> Path:
    return write_file(
        tmp_path / f"{key}.yaml",
        f"key: {key}\nname: Console check\naudience:\n  tiers: [1]\nconsent_required: false\n"
        "caps:\n  per_contact: {max: 5, days: 7}\n  per_account: {max: 50, days: 7}\n"
        "links:\n  guide: https://demo.example/guide\n"
        f"{extra}steps:\n  - id: intro\n    template: intro\n"
        "  - id: follow-up\n    template: intro\n    wait: 3d\n",
    )


def _people(engine: Engine, per_account: dict[str, int]) -> None:
    """People at tier-1 accounts: `n` people at each domain, named p0, p1, ..."""
    upsert_accounts(
        engine,
        [{"domain": d, "name": d.split(".")[0].title(), "attributes": {}} for d in per_account],
    )
    upsert_contacts(
        engine,
        [
            {
                "email": f"p{i}@{domain}",
                "account_domain": domain,
                "first_name": f"P{i}",
                "attributes": {},
            }
            for domain, n in per_account.items()
            for i in range(n)
        ],
    )
    with engine.begin() as connection:
        connection.execute(update(Account).values(tier=1))


def _planned(engine: Engine, path: Path) -> tuple[int, DeliveryContext]:
    """The campaign's first step planned for everyone in its audience."""
    key, campaign = load_campaign(path)
    campaign_id = register_campaign(engine, key, campaign, path)
    plan_step(
        engine, campaign_id, key, campaign.steps, 0, target_account_ids(engine, campaign.audience)
    )
    context = DeliveryContext(
        engine.url.render_as_string(False), campaign, campaign_id, key, "intro"
    )
    return campaign_id, context


def _sent(engine: Engine, campaign_id: int) -> int:
    with engine.connect() as connection:
        return connection.execute(
            select(func.count()).where(
                Delivery.campaign_id == campaign_id, Delivery.state == "sent"
            )
        ).scalar_one()


def _audit(engine: Engine) -> list[tuple[str, str, str, str | None]]:
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                select(AuditLog.actor, AuditLog.action, AuditLog.target, AuditLog.via).order_by(
                    AuditLog.id
                )
            )
        ]


def _no_email_in_links(html: str) -> None:
    for link in HREF.findall(html):
        assert "@" not in link and "%40" not in link, link


def test_a_pause_from_the_page_stops_the_next_send_and_a_resume_sends_it(
    db, database_url, tmp_path
):
    _people(db, {"acme.example": 2, "beta.example": 2})
    campaign_id, context = _planned(db, _campaign_file(tmp_path))
    outbox = OutboxBackend(tmp_path / "outbox")
    ids = due_delivery_ids(db, campaign_id, "intro")
    assert len(ids) == 4
    deliver(db, get_settings(), context, ids[:2], outbox)
    assert _sent(db, campaign_id) == 2

    client = signed_in_client(database_url, tmp_path, name="ana")
    answer = client.post(
        "/console/campaigns/console-check/pause", data={"csrf_token": csrf_of(client)}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/campaigns/console-check?notice=paused"
    shown = client.get(answer.headers["location"])
    assert "Paused: nothing more is sent" in shown.text
    assert "paused by ana in the console" in shown.text and "Resume" in shown.text

    deliver(db, get_settings(), context, ids[2:], outbox)  # the next send: nothing goes
    assert _sent(db, campaign_id) == 2
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2

    answer = client.post(
        "/console/campaigns/console-check/resume", data={"csrf_token": csrf_of(client)}
    )
    assert answer.headers["location"].endswith("?notice=resumed")
    deliver(db, get_settings(), context, ids[2:], outbox)
    assert _sent(db, campaign_id) == 4
    assert [row[:3] for row in _audit(db)] == [
        ("ana", "campaign.pause", "console-check"),
        ("ana", "campaign.resume", "console-check"),
    ]


def test_pausing_a_paused_campaign_changes_and_records_nothing(db, database_url, tmp_path):
    _people(db, {"acme.example": 1})
    campaign_id, _ = _planned(db, _campaign_file(tmp_path))
    set_campaign_status(db, campaign_id, "paused", "the bounce rate passed 5%")
    client = signed_in_client(database_url, tmp_path)
    answer = client.post(
        "/console/campaigns/console-check/pause", data={"csrf_token": csrf_of(client)}
    )
    assert answer.headers["location"].endswith("?notice=already-paused")
    page = client.get(answer.headers["location"]).text
    assert "It was already paused: nothing changed." in page
    assert "Why: the bounce rate passed 5%" in page  # the rule's reason is kept
    assert _audit(db) == []


def test_a_viewer_sees_the_state_but_no_buttons_and_is_refused(db, database_url, tmp_path):
    _people(db, {"acme.example": 1})
    campaign_id, _ = _planned(db, _campaign_file(tmp_path))
    viewer = signed_in_client(database_url, tmp_path, role="viewer")
    page = viewer.get("/console/campaigns/console-check")
    assert page.status_code == 200
    assert "/pause" not in page.text and "an operator can pause" in page.text
    for action in ("pause", "resume", "release"):
        refused = viewer.post(
            f"/console/campaigns/console-check/{action}",
            data={"csrf_token": csrf_of(viewer), "account": "acme.example"},
        )
        assert refused.status_code == 403, action
        assert "only an operator" in refused.text
    with db.connect() as connection:
        assert connection.execute(select(Delivery.state)).scalars().all() == ["planned"]
    assert _audit(db) == []
    operator = signed_in_client(database_url, tmp_path)
    assert "/console/campaigns/console-check/pause" in operator.get(page.url).text
    forged = operator.post("/console/campaigns/console-check/pause", data={"csrf_token": "x"})
    assert forged.status_code == 403
    set_campaign_status(db, campaign_id, "active")
    assert _audit(db) == []


def test_the_campaigns_page_lists_status_steps_and_progress(db, database_url, tmp_path):
    _people(db, {"acme.example": 2})
    campaign_id, context = _planned(db, _campaign_file(tmp_path))
    ids = due_delivery_ids(db, campaign_id, "intro")
    deliver(db, get_settings(), context, ids[:1], OutboxBackend(tmp_path / "outbox"))
    gone = _campaign_file(tmp_path, "gone-one")
    other = register_campaign(db, *load_campaign(gone), gone)
    set_campaign_status(db, other, "paused", "the provider refused the API key")
    gone.unlink()

    client = signed_in_client(database_url, tmp_path, role="viewer")
    page = client.get("/console/campaigns")
    assert page.status_code == 200
    text = page.text
    assert 'href="/console/campaigns/console-check"' in text
    assert "intro" in text and "follow-up" in text and "1 of 2" in text
    # the bar counts each step the same: half of intro and follow-up not begun
    assert 'value="0.250" max="1"' in text  # no inline style
    assert "1 of 2 sent for intro; follow-up not planned yet" in text
    assert "the provider refused the API key" in text
    assert "file missing" in text and "gone-one" in text
    _no_email_in_links(text)


def test_a_first_run_shows_the_steps_not_planned_yet_and_no_finished_bar(
    db, database_url, tmp_path
):
    _people(db, {"acme.example": 1, "beta.example": 1, "xn--bergstrm-ab-xfb.se": 1})
    campaign_id, context = _planned(db, _campaign_file(tmp_path))
    deliver(
        db,
        get_settings(),
        context,
        due_delivery_ids(db, campaign_id, "intro"),
        OutboxBackend(tmp_path / "outbox"),
    )
    assert _sent(db, campaign_id) == 3  # every row of the ledger is sent: "3 of 3"

    client = signed_in_client(database_url, tmp_path, role="viewer")
    listing = client.get("/console/campaigns").text
    assert "3 of 3 sent for intro; follow-up not planned yet" in listing
    assert 'value="0.500" max="1"' in listing and 'max="3"' not in listing

    page = client.get("/console/campaigns/console-check").text
    funnel = page[page.index("Funnel per step") : page.index("A/B tests")]
    assert "intro" in funnel and "follow-up" in funnel
    row = funnel[funnel.index("follow-up") :]
    assert "not planned yet: the next run (or the advance-sequences schedule) plans it " in row
    assert "after its wait (3d)" in row
    assert row.split("</tr>")[0].count('<td class="num">0</td>') == 10
    assert "3 of 3 sent for intro; follow-up not planned yet" in page
    # the people's account shows as written, its link keeps the stored form
    assert ">bergström-ab.se</a>" in page and "p0@bergström-ab.se" in page
    assert 'href="/console/accounts/xn--bergstrm-ab-xfb.se"' in page


def test_a_campaign_with_no_row_yet_lists_its_first_step_as_the_next_runs(
    db, database_url, tmp_path
):
    path = _campaign_file(tmp_path)
    register_campaign(db, *load_campaign(path), path)
    client = signed_in_client(database_url, tmp_path, role="viewer")
    page = client.get("/console/campaigns/console-check").text
    assert "Nothing planned yet" in page
    funnel = page[page.index("Funnel per step") : page.index("A/B tests")]
    intro = funnel[funnel.index("intro") : funnel.index("follow-up")]
    assert "not planned yet: the next run plans it" in intro and "wait" not in intro
    listing = client.get("/console/campaigns").text
    assert "nothing planned yet" in listing and "<progress" not in listing


def test_no_campaign_yet_says_how_to_start_one(db, database_url, tmp_path):
    page = signed_in_client(database_url, tmp_path).get("/console/campaigns")
    assert page.status_code == 200 and "No campaign has run yet" in page.text
    missing = signed_in_client(database_url, tmp_path).get("/console/campaigns/nope")
    assert missing.status_code == 404 and "There is no campaign with the key nope" in missing.text


def _ledger(engine: Engine, campaign_id: int, rows: list[dict]) -> None:
    now = utcnow()
    ids = dict(engine.connect().execute(select(Contact.email, Contact.id)).all())
    accounts = dict(engine.connect().execute(select(Contact.id, Contact.account_id)).all())
    with engine.begin() as connection:
        for row in rows:
            contact = ids[row.pop("email")]
            connection.execute(
                insert(Delivery).values(
                    campaign_id=campaign_id,
                    contact_id=contact,
                    account_id=accounts[contact],
                    channel="email",
                    due_at=now,
                    **row,
                )
            )


def test_the_funnel_and_ab_result_are_the_reports_and_people_say_why(db, database_url, tmp_path):
    _people(db, {"acme.example": 4, "beta.example": 2})
    key, campaign = load_campaign(_campaign_file(tmp_path))
    campaign_id = register_campaign(db, key, campaign, tmp_path / "console-check.yaml")
    now = utcnow()
    _ledger(
        db,
        campaign_id,
        [
            {"email": "p0@acme.example", "step": "intro", "variant": "a", "state": "sent",
             "sent_at": now, "message_id": "<m0@x>"},
            {"email": "p1@acme.example", "step": "intro", "variant": "b", "state": "sent",
             "sent_at": now, "message_id": "<m1@x>"},
            {"email": "p2@acme.example", "step": "intro", "variant": "a", "state": "skipped",
             "skip_reason": "unsubscribed"},
            {"email": "p3@acme.example", "step": "intro", "variant": "b", "state": "planned",
             "last_error": "deferred: frequency cap per account"},
            {"email": "p0@beta.example", "step": "intro", "variant": "a", "state": "failed",
             "last_error": "the relay said 451"},
            {"email": "p0@acme.example", "step": "follow-up", "state": "planned"},
        ],
    )  # fmt: skip
    with db.begin() as connection:
        connection.execute(
            insert(EngagementEvent).values(
                type="click",
                occurred_at=now,
                contact_id=1,
                account_id=1,
                campaign_id=campaign_id,
                message_id="<m1@x>",
                provider="test",
                provider_event_id="c1",
                channel="email",
                data={},
            )
        )
    results = campaign_results(db, campaign_id)
    assert results == next(c for c in report_data(db, [])["campaigns"] if c["key"] == key)
    intro = results["steps"][0]
    assert (intro["planned"], intro["sent"], intro["clicks"]) == (5, 2, 1)

    page = signed_in_client(database_url, tmp_path, role="viewer").get(
        "/console/campaigns/console-check"
    )
    text = page.text
    assert page.status_code == 200
    assert "Funnel per step" in text and "Step intro" in text  # the A/B section
    assert "not enough data yet" in text
    assert "skipped 1: the person unsubscribed earlier" in text
    assert "frequency cap per account" in text and "the relay said 451" in text
    assert "p3@acme.example" in text and "P3" in text
    assert "intro (b)" in text
    _no_email_in_links(text)


def test_people_filter_by_state_and_account_and_page_by_bookmark(db, database_url, tmp_path):
    _people(db, {"acme.example": 60, "beta.example": 40, "gamma.example": 20})
    _planned(db, _campaign_file(tmp_path))
    with db.begin() as connection:  # some of them failed
        connection.execute(
            update(Delivery)
            .where(Delivery.contact_id % 10 == 0)
            .values(state="failed", last_error="mailbox full")
        )
    client = signed_in_client(database_url, tmp_path, role="viewer")
    base = "/console/campaigns/console-check"
    first = client.get(base).text
    assert "rows 1–50 of 120 in all" in first
    assert first.count("@acme.example</td>") == 50
    next_link = re.search(r'rel="next" href="([^"]*)"', first)[1].replace("&amp;", "&")
    assert "after=" in next_link and "@" not in next_link
    second = client.get(next_link).text
    assert "rows 51–100 of 120" in second
    assert second.count("@acme.example</td>") == 10 and second.count("@beta.example</td>") == 40
    third_link = re.search(r'rel="next" href="([^"]*)"', second)[1].replace("&amp;", "&")
    third = client.get(third_link).text
    assert "rows 101–120 of 120" in third and 'rel="next"' not in third
    back_link = re.search(r'rel="prev" href="([^"]*)"', third)[1].replace("&amp;", "&")
    back = client.get(back_link).text
    assert "rows 51–100 of 120" in back and back.count("@beta.example</td>") == 40
    for html in (first, second, third, back):
        _no_email_in_links(html)

    failed = client.get(base, params={"state": "failed"}).text
    assert "of 12 in all" in failed and "mailbox full" in failed
    at_gamma = client.get(base, params={"account": "Gamma.Example"}).text
    assert "of 20 in all" in at_gamma and "@acme.example</td>" not in at_gamma
    nobody = client.get(base, params={"state": "dead", "account": "gamma.example"}).text
    assert "Nobody in this campaign matches state dead at gamma.example" in nobody
    bad = client.get(base, params={"state": "lost"})
    assert bad.status_code == 400 and "state: use one of planned" in bad.text


def test_bookmark_pages_match_the_full_order_both_ways(db, tmp_path):
    _people(db, {"b.example": 7, "a.example": 5, "c.example": 9})
    campaign_id, _ = _planned(db, _campaign_file(tmp_path))
    steps = ["intro", "follow-up"]
    everyone = [row["delivery_id"] for row in campaign_people(db, campaign_id, steps)]
    assert len(everyone) == 21
    pages, after = [], None
    while True:
        page = list(campaign_people(db, campaign_id, steps, limit=4, after=after))
        if not page:
            break
        pages.append([row["delivery_id"] for row in page])
        after = page[-1]["delivery_id"]
    assert [i for page in pages for i in page] == everyone
    before = list(campaign_people(db, campaign_id, steps, limit=4, before=everyone[10]))
    assert [row["delivery_id"] for row in before] == everyone[6:10]
    assert [r["delivery_id"] for r in campaign_people(db, campaign_id, steps, limit=3)] == (
        everyone[:3]
    )


def test_bookmark_pages_of_a_large_campaign_skip_nobody_either_way(
    db, database_url, tmp_path, monkeypatch
):
    """Above SORTED_WHOLE rows a page reads its accounts first; from a bookmark at the last
    row of an account, that account adds nothing, and a page of one-person accounts came up
    a row short: the list ended at row 100 of 160."""
    import stages.delivery.people as people_module

    monkeypatch.setattr(people_module, "SORTED_WHOLE", 10)
    _people(db, {f"a{i:03d}.example": 1 for i in range(160)})
    campaign_id, _ = _planned(db, _campaign_file(tmp_path))
    with db.begin() as connection:
        connection.execute(
            update(Delivery).where(Delivery.contact_id % 4 == 0).values(state="failed")
        )
    client = signed_in_client(database_url, tmp_path, role="viewer")
    shown = re.compile(r"(p\d+@a\d+\.example)</td>")
    for state in (None, "planned", "failed"):
        everyone = [row["email"] for row in campaign_people(db, campaign_id, ["intro"], state)]
        link = "/console/campaigns/console-check" + (f"?state={state}" if state else "")
        pages = []
        while link:
            html = client.get(link).text
            pages.append(shown.findall(html))
            found = re.search(r'rel="next" href="([^"]*)"', html)
            link = found and found[1].replace("&amp;", "&")
        assert [email for page in pages for email in page] == everyone, state
        back = []
        while found := re.search(r'rel="prev" href="([^"]*)"', html):
            html = client.get(found[1].replace("&amp;", "&")).text
            back.insert(0, shown.findall(html))
        assert back == pages[:-1], state


def test_an_account_held_by_a_reply_is_released_from_the_page(db, database_url, tmp_path):
    _people(db, {"acme.example": 3})
    _planned(db, _campaign_file(tmp_path))
    later = utcnow() + timedelta(days=1)
    with db.begin() as connection:
        connection.execute(
            update(Delivery).values(
                due_at=later,
                last_error="deferred: someone at the account replied (paused until "
                "`abm campaign resume --account`)",
            )
        )
    client = signed_in_client(database_url, tmp_path, name="bo")
    page = client.get("/console/campaigns/console-check").text
    assert "Accounts held back by a reply" in page and 'name="account" value="acme.example"' in page
    assert "<th>Release</th>" in page
    viewer = signed_in_client(database_url, tmp_path, role="viewer").get(
        "/console/campaigns/console-check"
    )
    held = viewer.text[viewer.text.index("Accounts held back") : viewer.text.index("Funnel")]
    assert "acme.example" in held and "An operator can release them" in held
    assert "<th>Release</th>" not in held and "<th></th>" not in held and "<form" not in held
    answer = client.post(
        "/console/campaigns/console-check/release",
        data={"csrf_token": csrf_of(client), "account": "acme.example"},
    )
    assert answer.headers["location"].endswith("?notice=released")
    with db.connect() as connection:
        due = connection.execute(select(Delivery.due_at)).scalars().all()
    assert all(at.replace(tzinfo=None) < later.replace(tzinfo=None) for at in due)
    assert _audit(db) == [("bo", "campaign.release-account", "console-check", "console")]


def test_people_parameters_are_checked():
    assert parse_people({"state": "failed", "account": "https://www.Acme.com/x"}).domain == (
        "acme.com"
    )
    for bad in ({"state": "lost"}, {"account": "not a domain"}, {"after": "x"}):
        with pytest.raises(BadParameter):
            parse_people(bad)
    with pytest.raises(BadParameter):
        parse_people({"after": "1", "before": "2"})
    for odd in ("²", "9" * 25, "-3"):  # "²".isdigit(), yet int() refuses it: was a 500
        with pytest.raises(BadParameter):
            parse_people({"after": odd})


def test_the_report_is_shown_to_signed_in_users_under_its_own_policy(db, database_url, tmp_path):
    from console_support import console_client, console_settings

    from abm.console.pages.report import REPORT_CSP

    _people(db, {"acme.example": 2})
    _planned(db, _campaign_file(tmp_path))
    client = signed_in_client(database_url, tmp_path, role="viewer")
    answer = client.get("/console/report")
    assert answer.status_code == 200
    assert answer.headers["content-security-policy"] == REPORT_CSP
    assert "script-src" not in REPORT_CSP and "'unsafe-inline'" in REPORT_CSP
    assert answer.headers["cache-control"] == "no-store"
    text = answer.text
    assert "Account-based marketing report" in text and "Console check" in text
    assert "<script" not in text  # the policy allows none, and the report needs none
    assert 'href="/console/campaigns"' in text and "viewer" in text  # the console's bar
    assert "@acme.example" not in text  # the report holds no personal data
    anonymous = console_client(console_settings(database_url, tmp_path)).get("/console/report")
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith(
        "/console/login"
    )


def test_a_page_link_whose_row_is_gone_shows_the_first_page_and_says_so(db, database_url, tmp_path):
    _people(db, {"acme.example": 3})
    _planned(db, _campaign_file(tmp_path))
    client = signed_in_client(database_url, tmp_path, role="viewer")
    page = client.get("/console/campaigns/console-check", params={"after": "999999"})
    assert page.status_code == 200
    assert "no longer in this campaign: here is the first page" in page.text
    assert "rows 1–3 of 3 in all" in page.text
