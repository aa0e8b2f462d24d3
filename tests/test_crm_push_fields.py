"""What a CRM push sends (tier, ICP score and reasons summary, engagement score, stage,
committee coverage and gaps) and how it finds changed accounts and CRM records cheaply:
coverage counted per batch in one grouped query, record ids learned once and handed back.
The CRM is a small in-test `CrmBackend` that keeps what it was given, as a stage test may."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update

from connectors.crm.base import CrmAuthError, CrmBackend, PullKind, PullPage, WriteBackResult
from core.domains import domain_or_none
from models.store import upsert_accounts, upsert_contacts
from models.tables import Account, Contact, CrmPush
from stages.crm.push import (
    CRM_REQUIRED_ROLES,
    ICP_SUMMARY_MAX,
    coverage_fields,
    icp_summary,
    push_changed,
)


class FakeCrm(CrmBackend):
    """Keeps each account it is given by domain; a record id per domain, like a CRM; one
    request per `batch_size` accounts. `reject` fails those domains, `refuse_at` raises the
    auth error on that push call (1-based), `unavailable` fails the field check."""

    name = "fake"
    batch_size = 2

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.field_checks = 0
        self.reject: dict[str, str] = {}
        self.refuse_at: int | None = None
        self.unavailable = False

    def ensure_fields(self) -> list[str]:
        from connectors.http import ApiError

        self.field_checks += 1
        if self.unavailable:
            raise ApiError("HTTP 503 from the fake CRM", status=503)
        return []

    def push_accounts(
        self, accounts: Sequence[dict[str, Any]], known_ids: dict[str, str] | None = None
    ) -> WriteBackResult:
        self.calls.append(([a["domain"] for a in accounts], dict(known_ids or {})))
        if self.refuse_at == len(self.calls):
            raise CrmAuthError("the fake CRM refused the token: check ABM_FAKE_TOKEN", 401)
        result = WriteBackResult(requests=-(-len(accounts) // self.batch_size))
        for account in accounts:
            domain = domain_or_none(account["domain"]) or account["domain"]
            if domain in self.reject:
                result.failures[domain] = self.reject[domain]
                continue
            if domain in self.records:
                result.updated += 1
            else:
                result.created += 1
            self.records[domain] = dict(account)
            result.crm_ids[domain] = f"rec-{domain}"
        return result

    def pull_changes(self, kind: PullKind, cursor: str | None) -> Iterator[PullPage]:
        return iter(())


ACCOUNTS = ["acme.example", "globex.example", "initech.example"]


@pytest.fixture
def accounts(engine: Engine) -> Engine:
    """Three accounts; Acme has a decision maker, an approver and a specifier (and an
    unsubscribed reviewer, who does not count), Globex only a user, Initech nobody."""
    upsert_accounts(engine, [{"domain": d, "name": d.split(".")[0].title()} for d in ACCOUNTS])
    people = [
        ("dana", "acme.example", "decision_maker"),
        ("ana", "acme.example", "approver"),
        ("sam", "acme.example", "specifier"),
        ("sue", "acme.example", "specifier"),
        ("rob", "acme.example", "reviewer"),
        ("gil", "globex.example", "user"),
    ]
    upsert_contacts(
        engine,
        [{"email": f"{n}@{d}", "account_domain": d, "attributes": {}} for n, d, _ in people],
    )
    with engine.begin() as connection:
        for name, domain, role in people:
            connection.execute(
                update(Contact).where(Contact.email == f"{name}@{domain}").values(role=role)
            )
        connection.execute(
            update(Contact).where(Contact.email == "rob@acme.example").values(status="unsubscribed")
        )
        connection.execute(
            update(Account)
            .where(Account.domain == "acme.example")
            .values(tier=1, icp_score=85, icp_reasons=["+25 industry=Software", "+60 employees"])
        )
    return engine


def _set_role(engine: Engine, email: str, **values: Any) -> None:
    with engine.begin() as connection:
        connection.execute(update(Contact).where(Contact.email == email).values(**values))


def test_a_push_sends_the_reasons_summary_and_the_committee_coverage_and_gaps(accounts) -> None:
    crm = FakeCrm()

    report = push_changed(accounts, crm)

    assert (report.created, report.updated, report.failed, report.unchanged) == (3, 0, 0, 0)
    acme = crm.records["acme.example"]
    assert acme["tier"] == 1 and acme["icp_score"] == 85 and acme["stage"] == "target"
    assert acme["icp_summary"] == "+25 industry=Software; +60 employees"
    assert acme["coverage"] == "3 of 4: decision_maker, approver, specifier"
    assert acme["gaps"] == "reviewer"
    assert crm.records["globex.example"]["coverage"] == "0 of 4"
    assert crm.records["globex.example"]["gaps"] == ", ".join(CRM_REQUIRED_ROLES)
    assert crm.records["initech.example"]["icp_summary"] == ""
    assert set(acme) == {
        "domain",
        "name",
        "tier",
        "icp_score",
        "icp_summary",
        "engagement_score",
        "stage",
        "coverage",
        "gaps",
    }
    with accounts.connect() as connection:
        stored = connection.execute(
            select(CrmPush.coverage, CrmPush.gaps, CrmPush.icp_summary, CrmPush.crm_id)
            .join(Account, Account.id == CrmPush.account_id)
            .where(Account.domain == "acme.example", CrmPush.crm == "fake")
        ).one()
    assert tuple(stored) == (acme["coverage"], "reviewer", acme["icp_summary"], "rec-acme.example")


def test_the_crm_roles_are_the_campaign_default_committee() -> None:
    assert CRM_REQUIRED_ROLES == ("decision_maker", "approver", "specifier", "reviewer")
    assert coverage_fields(["approver", "user", None]) == (
        "1 of 4: approver",
        "decision_maker, specifier, reviewer",
    )
    assert coverage_fields(CRM_REQUIRED_ROLES) == (
        "4 of 4: decision_maker, approver, specifier, reviewer",
        "",
    )


def test_a_long_reasons_summary_is_cut_at_a_reason_with_a_marker() -> None:
    reasons = [f"+{i} technology=Product number {i} in the stack" for i in range(40)]

    summary = icp_summary(reasons)

    assert len(summary) <= ICP_SUMMARY_MAX
    assert summary.endswith(" …")
    assert summary.removesuffix(" …") in "; ".join(reasons)
    assert summary.removesuffix(" …").split("; ")[-1] in reasons  # no reason cut in half
    assert icp_summary(["+25 industry=Software", "  -10\nemployees<50  "]) == (
        "+25 industry=Software; -10 employees<50"
    )
    assert len(icp_summary(["x" * 2000])) == ICP_SUMMARY_MAX
    assert icp_summary(None) == icp_summary([]) == ""


def test_a_contact_joining_or_leaving_the_committee_pushes_the_account_again(accounts) -> None:
    crm = FakeCrm()
    push_changed(accounts, crm)
    assert push_changed(accounts, crm).unchanged == 3

    _set_role(accounts, "rob@acme.example", status="active")  # the reviewer resubscribed
    report = push_changed(accounts, crm)

    assert (report.updated, report.unchanged) == (1, 2)
    assert crm.calls[-1][0] == ["acme.example"]
    assert crm.records["acme.example"]["coverage"].startswith("4 of 4")
    assert crm.records["acme.example"]["gaps"] == ""

    _set_role(accounts, "gil@globex.example", status="bounced")  # a user: not in the committee
    assert push_changed(accounts, crm).unchanged == 3
    _set_role(accounts, "dana@acme.example", role="influencer")  # reclassified by new rules
    report = push_changed(accounts, crm)
    assert (report.updated, report.unchanged) == (1, 2)
    assert crm.records["acme.example"]["gaps"] == "decision_maker"


def test_a_changed_reason_is_a_change_and_so_is_every_account_value(accounts) -> None:
    crm = FakeCrm()
    push_changed(accounts, crm)
    for values in (
        {"icp_reasons": ["+25 industry=Software"]},
        {"tier": None},
        {"icp_score": 7},
        {"engagement_score": 0.1},
        {"stage": "mqa"},
    ):
        with accounts.begin() as connection:
            connection.execute(
                update(Account).where(Account.domain == "acme.example").values(**values)
            )
        report = push_changed(accounts, crm)
        assert (report.updated, report.unchanged) == (1, 2), values
    assert crm.records["acme.example"]["icp_summary"] == "+25 industry=Software"
    assert crm.records["acme.example"]["tier"] is None


def test_record_ids_learned_are_handed_back_and_requests_are_counted(accounts) -> None:
    crm = FakeCrm()
    first = push_changed(accounts, crm)
    assert crm.calls[0][1] == {}
    assert first.requests == 2  # three accounts, two a request

    with accounts.begin() as connection:
        connection.execute(update(Account).values(engagement_score=3.5))
    second = push_changed(accounts, crm)

    assert crm.calls[-1][1] == {d: f"rec-{d}" for d in ACCOUNTS}
    assert second.counts() == {
        "updated": 3,
        "created": 0,
        "failed": 0,
        "unchanged": 0,
        "requests": 2,
    }


def test_a_known_id_survives_a_push_that_returned_none(accounts) -> None:
    crm = FakeCrm()
    push_changed(accounts, crm)
    plain = crm.push_accounts

    def without_ids(batch, known_ids=None):
        result = plain(batch, known_ids)
        result.crm_ids.clear()
        return result

    crm.push_accounts = without_ids  # type: ignore[method-assign]
    with accounts.begin() as connection:
        connection.execute(update(Account).values(stage="aware"))
    push_changed(accounts, crm)

    with accounts.connect() as connection:
        ids = set(connection.execute(select(CrmPush.crm_id)).scalars())
    assert ids == {f"rec-{d}" for d in ACCOUNTS}


def test_nothing_changed_means_no_call_at_all_not_even_the_field_check(accounts) -> None:
    crm = FakeCrm()
    push_changed(accounts, crm)
    calls, checks = len(crm.calls), crm.field_checks

    report = push_changed(accounts, crm)

    assert (len(crm.calls), crm.field_checks) == (calls, checks) == (1, 1)
    assert report.counts()["requests"] == 0 and report.unchanged == 3


def test_a_rejected_account_is_pushed_again_next_time_and_only_it(accounts) -> None:
    crm = FakeCrm()
    crm.reject = {"globex.example": "VALIDATION_ERROR: bad value"}

    report = push_changed(accounts, crm)

    assert report.failures == {"globex.example": "VALIDATION_ERROR: bad value"}
    crm.reject = {}
    again = push_changed(accounts, crm)
    assert crm.calls[-1] == (["globex.example"], {})
    assert (again.created, again.unchanged, again.failed) == (1, 2, 0)


def test_an_auth_error_propagates_and_the_batch_it_interrupted_is_not_recorded(
    accounts,
) -> None:
    crm = FakeCrm()
    crm.refuse_at = 2

    with pytest.raises(CrmAuthError, match="ABM_FAKE_TOKEN"):
        push_changed(accounts, crm, batch_size=2)

    with accounts.connect() as connection:
        recorded = connection.execute(
            select(Account.domain).join(CrmPush, CrmPush.account_id == Account.id)
        ).scalars()
        assert sorted(recorded) == ["acme.example", "globex.example"]
    crm.refuse_at = None
    report = push_changed(accounts, crm, batch_size=2)
    assert (report.created, report.unchanged) == (1, 2)


def test_a_crm_unavailable_from_the_start_gets_no_push_and_every_account_is_reported(
    accounts,
) -> None:
    crm = FakeCrm()
    crm.unavailable = True

    report = push_changed(accounts, crm, batch_size=2)

    assert crm.calls == [] and crm.field_checks == 1
    assert set(report.failures) == set(ACCOUNTS)
    assert all("not sent" in r and "503" in r for r in report.failures.values())


def test_coverage_is_one_grouped_query_per_batch_not_one_per_account(engine: Engine) -> None:
    domains = [f"company{i:03d}.example" for i in range(250)]
    upsert_accounts(engine, [{"domain": d, "name": d} for d in domains])
    people = [f"p{i}@{d}" for d in domains for i in (1, 2)]
    upsert_contacts(
        engine,
        [{"email": e, "account_domain": e.split("@")[1], "attributes": {}} for e in people],
    )
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        report = push_changed(engine, FakeCrm(), batch_size=100)
    finally:
        event.remove(engine, "before_cursor_execute", seen)

    assert report.created == 250
    on_contacts = [s for s in statements if "FROM contact" in s]
    assert len(on_contacts) == 3  # ceil(250 / 100) batches
    assert all("GROUP BY" in s for s in on_contacts)
