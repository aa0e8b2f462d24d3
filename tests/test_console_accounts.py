"""The console's accounts list and account page: the filters (coverage worked out in SQL
against the ICP rules' committee), the orders, the pages, refusals of parameters the list
cannot use, and one account's reasons, gaps, timeline and campaigns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from models.queries import AccountFilters, AccountSort, account_page, list_accounts
from models.tables import (
    Account,
    Campaign,
    Contact,
    CrmDeal,
    Delivery,
    EngagementEvent,
    StageChange,
)

REQUIRED = ("decision_maker", "approver", "specifier", "reviewer", "influencer")
STAGES = ("target", "aware", "engaged", "mqa", "opportunity", "customer")
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def _account(engine: Engine, domain: str, **values: Any) -> int:
    row = {"domain": domain, "technologies": [], "attributes": [], "icp_reasons": []}
    row["attributes"] = {}
    row.update(values)
    with engine.begin() as connection:
        return connection.execute(insert(Account).values(**row).returning(Account.id)).scalar_one()


def _sources(**points: float) -> dict[str, Any]:
    """A breakdown as the rollup keeps it (stages/engagement/sources.py stored_sources)."""
    kept = {source: points.get(source, 0.0) for source in ("email", "linkedin", "web", "intent")}
    return {**kept, "other": 0.0, "breadth": 0.0, "as_of": T0.isoformat()}


def _contacts(engine: Engine, account_id: int, *people: tuple[str, str | None, str]) -> list[int]:
    """(email, role, status) each."""
    ids = []
    with engine.begin() as connection:
        for email, role, status in people:
            ids.append(
                connection.execute(
                    insert(Contact)
                    .values(
                        email=email,
                        account_id=account_id,
                        role=role,
                        status=status,
                        attributes={},
                        first_name=email.split("@")[0].title(),
                        title=f"{role or 'no role'} title",
                        seniority="director",
                        function="it",
                    )
                    .returning(Contact.id)
                ).scalar_one()
            )
    return ids


@pytest.fixture
def five(engine: Engine) -> Engine:
    """Five accounts whose coverage, tier, stage and sources differ in known ways."""
    full = _account(
        engine,
        "full.example",
        name="Full Coverage Inc",
        icp_score=90,
        tier=1,
        stage="mqa",
        engagement_score=40.0,
        engagement_sources=_sources(email=30.0, linkedin=10.0),
        updated_at=T0,
    )
    _contacts(engine, full, *((f"{r}@full.example", r, "active") for r in REQUIRED))
    gapped = _account(
        engine,
        "gapped.example",
        name="Gapped Ltd",
        icp_score=70,
        tier=2,
        stage="engaged",
        engagement_score=12.0,
        engagement_sources=_sources(web=12.0),
        updated_at=T0 + timedelta(days=1),
    )
    _contacts(
        engine,
        gapped,
        ("dm@gapped.example", "decision_maker", "active"),
        ("ap@gapped.example", "approver", "unsubscribed"),
        ("sp@gapped.example", "specifier", "active"),
        ("us@gapped.example", "user", "active"),
    )
    nobody = _account(
        engine,
        "nobody.example",
        name="Nobody Reachable",
        icp_score=40,
        tier=3,
        stage="target",
        updated_at=T0 + timedelta(days=2),
    )
    _contacts(engine, nobody, ("dm@nobody.example", "decision_maker", "bounced"))
    _account(engine, "empty.example", name=None, stage="aware", updated_at=T0 + timedelta(days=3))
    script = _account(
        engine,
        "script.example",
        name="<script>alert(1)</script>",
        icp_score=55,
        tier=2,
        stage="target",
        engagement_score=5.0,
        engagement_sources=_sources(intent=5.0),
        updated_at=T0 + timedelta(days=4),
    )
    _contacts(engine, script, ("dm@script.example", "decision_maker", "active"))
    return engine


def _domains(engine: Engine, sort: AccountSort | None = None, **filters: Any) -> list[str]:
    rows, total = account_page(
        engine,
        AccountFilters(required_roles=REQUIRED, **filters),
        sort or AccountSort(key="name", descending=False, stages=STAGES),
        page=1,
    )
    assert total == len(rows)
    return [row["domain"] for row in rows]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["empty", "full", "gapped", "nobody", "script"]),
        ({"coverage": "full"}, ["full"]),
        # an unsubscribed approver is no cover; a bounced decision maker neither
        ({"coverage": "missing:approver"}, ["empty", "gapped", "nobody", "script"]),
        ({"coverage": "missing:decision_maker"}, ["empty", "nobody"]),
        ({"coverage": "missing:influencer"}, ["empty", "gapped", "nobody", "script"]),
        ({"coverage": "unreachable"}, ["empty", "nobody"]),
        ({"source": "email"}, ["full"]),
        ({"source": "linkedin"}, ["full"]),
        ({"source": "web"}, ["gapped"]),
        ({"source": "intent"}, ["script"]),
        ({"tier": 2}, ["gapped", "script"]),
        ({"tier": "none"}, ["empty"]),
        ({"stage": "target"}, ["nobody", "script"]),
        ({"search": "GAPPED"}, ["gapped"]),
        ({"search": "coverage inc"}, ["full"]),
        ({"search": "%"}, []),
        ({"tier": 2, "coverage": "missing:approver", "source": "intent"}, ["script"]),
    ],
)
def test_filters_narrow_the_list_to_the_accounts_they_name(five, filters, expected):
    assert sorted(_domains(five, **filters)) == [f"{d}.example" for d in expected]


def test_an_unknown_coverage_or_a_role_not_required_is_refused(five):
    with pytest.raises(ValueError, match="coverage"):
        _domains(five, coverage="missing:user")
    with pytest.raises(ValueError, match="sort"):
        _domains(five, sort=AccountSort(key="colour"))


@pytest.mark.parametrize(
    ("key", "descending", "expected"),
    [
        ("score", True, ["full", "gapped", "script", "nobody", "empty"]),
        # no score goes last both ways
        ("score", False, ["nobody", "script", "gapped", "full", "empty"]),
        ("engagement", True, ["full", "gapped", "script", "empty", "nobody"]),
        # the journey's order, not the alphabet's; the domain breaks ties
        ("stage", True, ["full", "gapped", "empty", "nobody", "script"]),
        ("stage", False, ["nobody", "script", "empty", "gapped", "full"]),
        ("tier", False, ["full", "gapped", "script", "nobody", "empty"]),
        ("changed", True, ["script", "empty", "nobody", "gapped", "full"]),
        ("name", True, ["nobody", "gapped", "full", "empty", "script"]),
    ],
)
def test_each_order_both_ways(five, key, descending, expected):
    sort = AccountSort(key=key, descending=descending, stages=STAGES)
    assert _domains(five, sort=sort) == [f"{d}.example" for d in expected]


def test_pages_cover_every_account_once_and_the_total_counts_them_all(five):
    sort = AccountSort(key="name", descending=False, stages=STAGES)
    seen = []
    for number in (1, 2, 3):
        rows, total = account_page(five, AccountFilters(required_roles=REQUIRED), sort, number, 2)
        assert total == 5
        seen += [row["domain"] for row in rows]
    assert seen == _domains(five)
    rows, total = account_page(five, AccountFilters(required_roles=REQUIRED), sort, 4, 2)
    assert (rows, total) == ([], 5)


def test_a_page_rows_carry_their_contacts_and_reachable_roles(five):
    rows, _ = account_page(
        five, AccountFilters(required_roles=REQUIRED, search="gapped"), AccountSort(), 1
    )
    assert rows[0]["contacts"] == 4
    assert rows[0]["reachable_roles"] == ["decision_maker", "specifier", "user"]


def test_accounts_list_command_query_still_filters_by_tier_and_stage(five):
    assert [r["domain"] for r in list_accounts(five, tier=2)] == [
        "gapped.example",
        "script.example",
    ]
    assert [r["domain"] for r in list_accounts(five, stage="target")] == [
        "script.example",
        "nobody.example",
    ]
    assert list_accounts(five)[0]["contacts"] == 5


# The pages, through the whole web app signed in as a viewer (reading needs no more).


@pytest.fixture
def client(database_url, tmp_path):
    from console_support import signed_in_client

    return signed_in_client(database_url, tmp_path, role="viewer")


def test_the_list_shows_rows_coverage_and_top_source_with_names_as_text(five, client):
    answer = client.get("/console/accounts")
    assert answer.status_code == 200, answer.text
    html = answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html
    assert 'href="/console/accounts/gapped.example"' in html
    # gapped: decision maker and specifier reachable; the unsubscribed approver is a gap
    gapped = html[html.index("gapped.example</a>") :]
    gapped = gapped[: gapped.index("</tr>")]
    assert "2 of 5" in gapped
    assert "missing approver, reviewer, influencer" in gapped
    assert "web" in gapped
    assert "5 in all" in html


def test_the_list_filters_and_sorts_from_the_query_string(five, client):
    html = client.get("/console/accounts?coverage=unreachable&sort=name&dir=asc").text
    rows = [d for d in ("empty", "nobody", "full", "gapped") if f">{d}.example</a>" in html]
    assert rows == ["empty", "nobody"]
    assert html.index(">empty.example</a>") < html.index(">nobody.example</a>")
    assert "2 accounts match no reachable contacts" in html


def test_a_page_past_the_end_shows_the_last_one_and_says_so(five, client):
    html = client.get("/console/accounts?page=9").text
    assert "There is no page 9" in html
    assert ">full.example</a>" in html


def test_an_empty_list_says_why(engine, client):
    html = client.get("/console/accounts").text
    assert "No accounts imported yet" in html and "abm import accounts" in html
    _account(engine, "one.example", name="One", tier=1)
    html = client.get("/console/accounts?tier=2&stage=mqa").text
    assert "No account matches" in html
    assert "tier 2, stage mqa" in html


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("tier=4", "tier"),
        ("stage=won", "stage"),
        ("coverage=missing:user", "coverage"),
        ("coverage=partial", "coverage"),
        ("source=tv", "source"),
        ("sort=colour", "sort"),
        ("dir=sideways", "dir"),
        ("page=0", "page"),
        ("page=two", "page"),
        ("q=" + "x" * 201, "q"),
    ],
)
def test_a_parameter_the_list_cannot_use_gets_400_naming_it(five, client, query, name):
    answer = client.get(f"/console/accounts?{query}")
    assert answer.status_code == 400
    assert f"The list cannot use {name}=" in answer.text


def test_an_internationalised_domain_shows_as_written_and_links_by_its_stored_form(engine, client):
    account = _account(engine, "xn--bergstrm-ab-xfb.se", name=None, tier=1)
    _contacts(engine, account, ("eva@xn--bergstrm-ab-xfb.se", "approver", "active"))
    html = client.get("/console/accounts").text
    assert '<a href="/console/accounts/xn--bergstrm-ab-xfb.se">bergström-ab.se</a>' in html
    page = client.get("/console/accounts/xn--bergstrm-ab-xfb.se")
    assert page.status_code == 200
    assert "<title>bergström-ab.se" in page.text and "<h1>bergström-ab.se" in page.text
    assert "eva@bergström-ab.se" in page.text
    assert "xn--" not in page.text.replace("abm accounts show xn--bergstrm-ab-xfb.se", "")


def test_the_domain_filter_decodes_each_label_and_leaves_what_does_not_decode():
    from abm.console.render import environment

    domain = environment.filters["domain"]
    assert domain("xn--bergstrm-ab-xfb.se") == "bergström-ab.se"
    assert domain("eva@shop.xn--bergstrm-ab-xfb.se") == "eva@shop.bergström-ab.se"
    assert domain("acme.example") == "acme.example" and domain(None) == ""
    assert domain("xn--zz.se") == "xn--zz.se"  # not valid punycode: as stored
    assert domain("xn--.se") == "xn--.se"


def test_an_unknown_account_is_404(five, client):
    answer = client.get("/console/accounts/nowhere.example")
    assert answer.status_code == 404
    assert "There is no account with the domain nowhere.example" in answer.text


@pytest.fixture
def story(five: Engine) -> Engine:
    """gapped.example with a score's reasons, a stage change, a campaign with emails sent
    and planned, 120 events and a deal."""
    engine = five
    with engine.begin() as connection:
        connection.execute(
            Account.__table__.update()
            .where(Account.domain == "gapped.example")
            .values(icp_reasons=["+25 industry=Software", "-10 employees<50"])
        )
        account_id = connection.execute(
            Account.__table__.select().where(Account.domain == "gapped.example")
        ).first()[0]
        people = dict(
            connection.execute(
                Contact.__table__.select()
                .with_only_columns(Contact.email, Contact.id)
                .where(Contact.account_id == account_id)
            ).all()
        )
        campaign = connection.execute(
            insert(Campaign).values(key="q3-launch", name="Q3 launch").returning(Campaign.id)
        ).scalar_one()
        base = {
            "campaign_id": campaign,
            "account_id": account_id,
            "channel": "email",
            "sent_at": None,
            "message_id": None,
            "skip_reason": None,
            "due_at": T0,
        }
        rows = [
            ("intro", "dm", "sent", {"sent_at": T0, "message_id": "<m1@x>"}),
            ("intro", "sp", "sent", {"sent_at": T0, "message_id": "<m2@x>"}),
            ("follow", "dm", "planned", {"due_at": T0 + timedelta(days=3)}),
            ("intro", "ap", "skipped", {"skip_reason": "suppressed"}),
        ]
        connection.execute(
            insert(Delivery),
            [
                {
                    **base,
                    "step": step,
                    "contact_id": people[f"{who}@gapped.example"],
                    "state": state,
                    **extra,
                }
                for step, who, state, extra in rows
            ],
        )
        connection.execute(
            insert(EngagementEvent),
            [
                {
                    "provider": "sendgrid",
                    "provider_event_id": f"e{n}",
                    "type": "open",
                    "channel": "email",
                    "occurred_at": T0 + timedelta(hours=n),
                    "account_id": account_id,
                    "contact_id": people["dm@gapped.example"],
                    "data": {},
                }
                for n in range(1, 121)
            ],
        )
        connection.execute(
            insert(StageChange).values(
                account_id=account_id,
                from_stage="aware",
                to_stage="engaged",
                reason="two people clicked",
                source="engagement",
                changed_at=T0 + timedelta(days=10),
            )
        )
        connection.execute(
            insert(CrmDeal).values(
                crm="hubspot",
                crm_id="d-1",
                account_id=account_id,
                name="Gapped pilot",
                crm_stage="qualifiedtobuy",
                amount=12000.0,
                modified_at=T0,
            )
        )
    return engine


def test_the_account_page_shows_reasons_gaps_timeline_crm_and_campaigns(story, client):
    answer = client.get("/console/accounts/gapped.example")
    assert answer.status_code == 200, answer.text
    html = answer.text
    assert "+25 industry=Software" in html and "-10 employees&lt;50" in html
    assert "2 of 5 required roles covered" in html
    assert "Gaps to fill: approver, reviewer, influencer" in html
    assert "nobody in this role yet" in html  # reviewer, influencer
    assert "ap@gapped.example" in html  # the unsubscribed approver is listed, not counted
    # 120 events, 2 emails and a stage change: the latest 100 shown, newest first
    assert "23 earlier entries are not shown" in html
    assert html.count('<tr class="kind-') == 100
    assert "engagement: two people clicked" in html
    assert html.index("aware -&gt; engaged") < html.index("open (email)")
    assert "Gapped pilot" in html and "12,000.00" in html
    assert 'href="/console/campaigns/q3-launch?account=gapped.example"' in html
    campaigns = html[html.index("<h2>Campaigns</h2>") :]
    assert ">3</td>" in campaigns  # three of its people are in it
    assert "state-sent" in campaigns and "state-skipped" in campaigns


def test_the_account_page_escapes_what_was_imported(five, client):
    html = client.get("/console/accounts/script.example").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html


@pytest.mark.parametrize(
    ("kept", "expected"),
    [
        (None, None),
        ({}, None),
        ({"email": 0, "web": 0, "breadth": 4.0}, None),  # breadth is no source
        ({"email": 1.5, "web": 2.0}, "web"),
        ({"email": 2.0, "web": 2.0}, "email"),  # a tie: the earlier source
    ],
)
def test_top_source_is_the_source_with_most_points(kept, expected):
    from stages.accounts.details import top_source

    assert top_source(kept) == expected


def test_the_committee_lists_required_roles_first_even_with_nobody_in_them():
    from stages.accounts.details import committee_by_role

    people = [
        {"role": "user", "status": "active"},
        {"role": "approver", "status": "bounced"},
        {"role": None, "status": "active"},
        {"role": "decision_maker", "status": "active"},
    ]
    groups = committee_by_role(people, ["decision_maker", "approver", "specifier"])
    assert [(g["role"], g["required"], g["covered"], len(g["people"])) for g in groups] == [
        ("decision_maker", True, True, 1),
        ("approver", True, False, 1),
        ("specifier", True, False, 0),
        ("user", False, True, 1),
        (None, False, True, 1),
    ]


def test_accounts_show_prints_the_campaigns_the_page_lists(
    story, database_url, capsys, monkeypatch
):
    from cli_support import run_abm

    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    code, out, err = run_abm(capsys, monkeypatch, "accounts", "show", "gapped.example")
    assert code == 0, err
    assert (
        "campaign q3-launch (active): 3 of its people; by state: planned 1, sent 2, skipped 1"
        in (" ".join(out.split()))
    )


def test_a_column_heading_sorts_by_it_and_the_current_one_turns_the_order_round():
    from abm.console.pages.accounts import parse_listing, sort_links

    listing = parse_listing({"sort": "engagement", "tier": "2", "page": "3"}, REQUIRED)
    links = sort_links(listing)
    assert links["engagement"] == {
        "href": "/console/accounts?tier=2&sort=engagement&dir=asc",
        "arrow": "↓",
    }
    assert links["name"] == {"href": "/console/accounts?tier=2&sort=name", "arrow": ""}
    assert listing.params == {"tier": "2", "sort": "engagement"}  # no page: links restart
