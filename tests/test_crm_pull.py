"""`abm crm pull`: owners, deals and meetings read back from the CRM and applied here, each
page with its cursor in one transaction; the stage table; precedence (a person's later
change stands); nothing silent. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from cli_support import run_abm
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from tests_support import write_file

from connectors.crm import SandboxCrm
from connectors.crm.base import (
    CrmAccount,
    CrmAuthError,
    CrmBackend,
    CrmDeal,
    CrmMeeting,
    CrmOwner,
    PullKind,
    PullPage,
    WriteBackResult,
)
from core.errors import ConfigError
from core.settings import get_settings, reset_settings
from models.cursors import read_cursor
from models.db import get_engine, migrate
from models.store import upsert_accounts, upsert_contacts
from models.tables import Account, CrmPush, EngagementEvent, StageChange
from models.tables import CrmDeal as CrmDealRow
from stages.crm.pull import pull_crm
from stages.crm.stage_map import load_stage_table, stage_table_from
from stages.engagement.journey import set_stage

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


class Scripted(CrmBackend):
    """A CRM that answers the pages it is given, then (optionally) refuses the token: the
    interface's contract, without a network."""

    name = "hubspot"

    def __init__(self, pages: dict[str, list[PullPage]], fail_after: int | None = None) -> None:
        self.pages = pages
        self.fail_after = fail_after
        self.asked: list[tuple[str, str | None]] = []

    def push_accounts(
        self, accounts: Sequence[dict[str, Any]], known_ids: dict[str, str] | None = None
    ) -> WriteBackResult:
        raise AssertionError("a pull pushes nothing")

    def pull_changes(self, kind: PullKind, cursor: str | None) -> Iterator[PullPage]:
        self.asked.append((kind, cursor))
        for number, page in enumerate(self.pages.get(kind, []), start=1):
            if self.fail_after is not None and number > self.fail_after:
                raise CrmAuthError("HubSpot refused the token: check ABM_HUBSPOT_ACCESS_TOKEN", 401)
            yield page


def deal(
    crm_id: str,
    domain: str,
    stage: str,
    at: datetime,
    *,
    closed: bool | None = None,
    won: bool | None = None,
    name: str | None = None,
) -> CrmDeal:
    return CrmDeal(
        crm_id, name or f"Deal {crm_id}", stage, "default", closed, won, 1000.0, (domain,), at
    )


def page(kind: str, records: list, cursor: str, skipped: list[str] | None = None) -> PullPage:
    return PullPage(kind, records, cursor, skipped or [])  # type: ignore[arg-type]


@pytest.fixture
def accounts(engine: Engine) -> Engine:
    upsert_accounts(
        engine,
        [
            {"domain": d, "name": d.split(".")[0].title(), "attributes": {}}
            for d in ("acme.com", "beta.com", "gamma.com")
        ],
    )
    upsert_contacts(
        engine,
        [
            {"email": "ana@acme.com", "account_domain": "acme.com", "attributes": {}},
            {"email": "bo@acme.com", "account_domain": "acme.com", "attributes": {}},
        ],
    )
    return engine


def _stage(engine: Engine, domain: str) -> str:
    with engine.connect() as connection:
        return connection.execute(
            select(Account.stage).where(Account.domain == domain)
        ).scalar_one()


def _history(engine: Engine, domain: str) -> list[tuple[str, str, str]]:
    with engine.connect() as connection:
        return [
            (row.to_stage, row.source, row.reason)
            for row in connection.execute(
                select(StageChange.to_stage, StageChange.source, StageChange.reason)
                .join(Account, Account.id == StageChange.account_id)
                .where(Account.domain == domain)
                .order_by(StageChange.id)
            )
        ]


def test_a_won_deal_makes_the_account_customer_with_its_source_and_reason(accounts) -> None:
    crm = Scripted(
        {
            "deals": [
                page(
                    "deals",
                    [
                        deal("1", "acme.com", "qualifiedtobuy", T0),
                        deal("2", "Acme.com", "closedwon", T0, won=True, name="Acme renewal"),
                        deal("3", "beta.com", "closedlost", T0, closed=True, won=False),
                        deal("4", "www.unknown.com", "closedwon", T0, won=True),
                    ],
                    "c1",
                )
            ]
        }
    )

    report = pull_crm(accounts, crm, ["deals"])

    assert _stage(accounts, "acme.com") == "customer"
    assert _history(accounts, "acme.com") == [
        ("customer", "crm", "HubSpot deal 'Acme renewal' is closedwon")
    ]
    assert _stage(accounts, "beta.com") == "target"  # a lost deal says nothing
    assert report.stages_moved == 1 and report.deals_read == 4
    assert report.moves == [
        "acme.com: target -> customer (HubSpot deal 'Acme renewal' is closedwon)"
    ]
    assert dict(report.unknown_domains) == {"unknown.com": 1}
    with accounts.connect() as connection:
        stored = {
            row.crm_id: (row.crm_stage, row.maps_to, row.won)
            for row in connection.execute(select(CrmDealRow))
        }
    assert stored == {
        "1": ("qualifiedtobuy", "opportunity", None),
        "2": ("closedwon", "customer", True),
        "3": ("closedlost", None, False),
    }
    assert read_cursor(accounts, "crm:hubspot:deals") == "c1"


def test_each_kind_has_its_own_cursor_and_the_next_pull_starts_there(accounts) -> None:
    pages = {
        "accounts": [page("accounts", [], "a1")],
        "deals": [page("deals", [], "d1"), page("deals", [], "d2")],
        "meetings": [],
    }
    first = pull_crm(accounts, Scripted(pages))
    assert first.pages == {"accounts": 1, "deals": 2, "meetings": 0}

    again = Scripted({})
    pull_crm(accounts, again)

    assert again.asked == [("accounts", "a1"), ("deals", "d2"), ("meetings", None)]
    assert read_cursor(accounts, "crm:hubspot:meetings") is None


def test_an_expired_token_mid_pull_keeps_the_pages_stored_and_their_cursor(accounts) -> None:
    crm = Scripted(
        {
            "deals": [
                page("deals", [deal("1", "acme.com", "contractsent", T0)], "page-1"),
                page("deals", [deal("2", "beta.com", "closedwon", T0, won=True)], "page-2"),
            ]
        },
        fail_after=1,
    )

    with pytest.raises(CrmAuthError, match="ABM_HUBSPOT_ACCESS_TOKEN"):
        pull_crm(accounts, crm, ["deals"])

    assert read_cursor(accounts, "crm:hubspot:deals") == "page-1"
    assert _stage(accounts, "acme.com") == "opportunity"
    assert _stage(accounts, "beta.com") == "target"


def test_a_page_that_fails_to_apply_stores_neither_its_changes_nor_its_cursor(accounts) -> None:
    # a deal without a modification time cannot be stored (crmdeal.modified_at NOT NULL)
    broken = CrmDeal("2", None, "closedwon", None, True, True, None, ("beta.com",), None)  # type: ignore[arg-type]
    crm = Scripted(
        {
            "deals": [
                page("deals", [deal("1", "acme.com", "contractsent", T0)], "page-1"),
                page("deals", [deal("3", "gamma.com", "contractsent", T0), broken], "page-2"),
            ]
        }
    )

    with pytest.raises(IntegrityError):
        pull_crm(accounts, crm, ["deals"])

    assert read_cursor(accounts, "crm:hubspot:deals") == "page-1"
    with accounts.connect() as connection:
        assert list(connection.execute(select(CrmDealRow.crm_id)).scalars()) == ["1"]
    assert _stage(accounts, "gamma.com") == "target"


def test_a_person_who_set_the_stage_after_the_crm_change_is_kept(accounts) -> None:
    set_stage(accounts, "acme.com", "mqa", "talked to the CFO")
    before = datetime.now(UTC) - timedelta(days=1)
    crm = Scripted(
        {"deals": [page("deals", [deal("1", "acme.com", "closedwon", before, won=True)], "c")]}
    )

    report = pull_crm(accounts, crm, ["deals"])

    assert _stage(accounts, "acme.com") == "mqa"
    assert report.stages_moved == 0 and len(report.kept) == 1
    assert "acme.com: kept mqa: set by a person on" in report.kept[0]
    assert "it says customer" in report.kept[0]

    # the CRM changes the deal after the person's change: newer news is applied
    later = datetime.now(UTC) + timedelta(seconds=1)
    crm = Scripted(
        {"deals": [page("deals", [deal("1", "acme.com", "closedwon", later, won=True)], "d")]}
    )
    report = pull_crm(accounts, crm, ["deals"])
    assert _stage(accounts, "acme.com") == "customer" and report.kept == []
    assert [source for _, source, _ in _history(accounts, "acme.com")] == ["person", "crm"]


def test_the_crm_moves_an_account_the_rollup_or_an_import_had_moved(accounts) -> None:
    with accounts.begin() as connection:
        connection.execute(update(Account).where(Account.domain == "beta.com").values(stage="mqa"))
    crm = Scripted(
        {"deals": [page("deals", [deal("9", "beta.com", "appointmentscheduled", T0)], "c")]}
    )

    pull_crm(accounts, crm, ["deals"])

    assert _stage(accounts, "beta.com") == "opportunity"


def test_an_open_deal_with_an_unknown_stage_is_opportunity_with_a_warning(accounts) -> None:
    crm = Scripted({"deals": [page("deals", [deal("5", "gamma.com", "12345678", T0)], "c")]})

    report = pull_crm(accounts, crm, ["deals"])

    assert _stage(accounts, "gamma.com") == "opportunity"
    (warning,) = report.warnings
    assert "'12345678'" in warning and "crm_stages.yaml" in warning
    assert "ABM_CRM_STAGE_MAP" in warning


def test_owners_are_set_and_cleared_and_the_crm_id_is_remembered(accounts) -> None:
    rita = CrmOwner("77", "Rita@Us.example", "Rita Rep")
    crm = Scripted(
        {
            "accounts": [
                page(
                    "accounts",
                    [
                        CrmAccount("101", "acme.com", rita, T0),
                        CrmAccount("102", "beta.com", None, T0),
                        CrmAccount("103", None, rita, T0),
                    ],
                    "c",
                )
            ]
        }
    )

    report = pull_crm(accounts, crm, ["accounts"])

    with accounts.connect() as connection:
        owners = {
            row.domain: (row.owner_name, row.owner_email, row.owner_crm)
            for row in connection.execute(select(Account))
        }
        ids = dict(connection.execute(select(CrmPush.account_id, CrmPush.crm_id)).all())
        pushed = connection.execute(select(CrmPush.stage)).scalars().all()
    assert owners["acme.com"] == ("Rita Rep", "rita@us.example", "hubspot")
    assert owners["beta.com"] == (None, None, None)
    assert sorted(ids.values()) == ["101", "102"]
    assert set(pushed) == {None}  # nothing was pushed: the next push still sends them
    assert (report.owners_set, report.owners_cleared) == (1, 0)
    assert report.skipped and "103" in report.skipped[0] and "no web domain" in report.skipped[0]

    # the CRM removes the owner: cleared here too
    gone = Scripted(
        {"accounts": [page("accounts", [CrmAccount("101", "acme.com", None, T0)], "d")]}
    )
    assert pull_crm(accounts, gone, ["accounts"]).owners_cleared == 1


def test_a_meeting_is_stored_once_and_a_canceled_one_is_no_meeting(accounts) -> None:
    def meetings() -> list[CrmMeeting]:
        return [
            CrmMeeting("m1", "Intro", T0, "COMPLETED", ("ANA@acme.com",), (), T0),
            CrmMeeting("m2", "Demo", T0, "CANCELED", ("bo@acme.com",), (), T0),
            CrmMeeting("m3", "Call", T0, None, ("x@nowhere.example",), (), T0),
            CrmMeeting("m4", "Lunch", T0, "SCHEDULED", (), ("beta.com",), T0),
        ]

    report = pull_crm(
        accounts, Scripted({"meetings": [page("meetings", meetings(), "c")]}), ["meetings"]
    )
    again = pull_crm(
        accounts, Scripted({"meetings": [page("meetings", meetings(), "c")]}), ["meetings"]
    )

    assert (report.meetings_read, report.meetings_stored, again.meetings_stored) == (4, 2, 0)
    assert any("m2" in s and "CANCELED, so not a meeting" in s for s in report.skipped)
    assert dict(report.unknown_domains) == {"nowhere.example": 1}
    with accounts.connect() as connection:
        events = connection.execute(
            select(
                EngagementEvent.provider,
                EngagementEvent.provider_event_id,
                EngagementEvent.type,
                EngagementEvent.contact_id.is_not(None),
            ).order_by(EngagementEvent.provider_event_id)
        ).all()
    assert events == [
        ("hubspot", "meeting:m1", "meeting", True),
        ("hubspot", "meeting:m4", "meeting", False),
    ]
    # the engagement rules' `or_events: [meeting]` moved both accounts, as the rollup says
    assert (
        _stage(accounts, "acme.com") == "mqa"
        and _history(accounts, "acme.com")[0][1] == "engagement"
    )


def test_the_stage_table_is_editable_and_a_bad_one_names_file_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = load_stage_table()
    assert default.for_crm("salesforce")["id. decision makers"] == "opportunity"
    assert default.for_crm("salesforce")["closed lost"] is None
    assert default.for_crm("hubspot")["closedwon"] == "customer"

    bad = write_file(tmp_path / "stages.yaml", "hubspot:\n  closedwon: customer\n  won: vip\n")
    monkeypatch.setenv("ABM_CRM_STAGE_MAP", str(bad))
    reset_settings()
    with pytest.raises(ConfigError) as caught:
        stage_table_from(get_settings())
    assert str(caught.value).startswith(f"ABM_CRM_STAGE_MAP: {bad}:3: hubspot.won:")
    assert "'opportunity' or 'customer'" in str(caught.value)

    mine = write_file(tmp_path / "mine.yaml", "hubspot:\n  '12345678': customer\n")
    monkeypatch.setenv("ABM_CRM_STAGE_MAP", str(mine))
    reset_settings()
    assert stage_table_from(get_settings()).for_crm("hubspot") == {"12345678": "customer"}


# -- the command ----------------------------------------------------------------------------


@pytest.fixture
def sandbox(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    monkeypatch.setenv("ABM_CRM", "sandbox")
    monkeypatch.setenv("ABM_CRM_SANDBOX_DIR", str(tmp_path / "crm"))
    reset_settings()
    return tmp_path / "crm"


def test_crm_pull_prints_progress_and_a_summary(accounts, sandbox, capsys, monkeypatch) -> None:
    write_file(
        sandbox / "deals.csv",
        "id,domain,name,stage,closed,won,amount,modified_at\n"
        "d1,acme.com,Acme renewal,closedwon,true,true,,2026-03-02\n"
        "d2,nobody.com,Other,closedwon,true,true,,2026-03-02\n"
        "d3,acme.com,Acme bad,closedwon,true,true,,someday\n",
    )

    code, stdout, stderr = run_abm(capsys, monkeypatch, "crm", "pull", "--kind", "deals")

    assert code == 0, stderr
    assert "sandbox deals: page 1 stored (2 records)" in stderr
    assert (
        "moved: acme.com: target -> customer (Sandbox CRM deal 'Acme renewal' is closedwon)"
        in stderr
    )
    assert "deals.csv:4: modified_at:" in stderr and "nobody.com" in stderr
    assert "deals_read=2 stages_moved=1" in stdout and "unknown_domains=1 skipped=1" in stdout

    code, stdout, stderr = run_abm(capsys, monkeypatch, "crm", "pull", "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    # the bad row is said again, and holds the cursor: the rows after it are read again,
    # and change nothing
    assert result["deals_read"] == 2 and result["skipped"] == 1
    assert result["stages_moved"] == 0
    assert any("no accounts.csv" in note and str(sandbox) in note for note in result["notes"])


def test_a_deal_of_an_account_imported_later_counts_after_a_full_pull(
    accounts, sandbox, capsys, monkeypatch
) -> None:
    write_file(
        sandbox / "deals.csv",
        "id,domain,name,stage,closed,won,amount,modified_at\n"
        "d9,delta.com,Delta deal,contractsent,false,false,,2026-03-02\n",
    )
    code, _, stderr = run_abm(capsys, monkeypatch, "crm", "pull", "--kind", "deals")
    assert code == 0 and "`abm crm pull --full`" in stderr and "delta.com" in stderr

    upsert_accounts(accounts, [{"domain": "delta.com", "name": "Delta", "attributes": {}}])
    code, stdout, _ = run_abm(capsys, monkeypatch, "crm", "pull", "--kind", "deals", "--json")
    assert json.loads(stdout)["deals_read"] == 0  # the cursor is past it
    code, stdout, _ = run_abm(
        capsys, monkeypatch, "crm", "pull", "--kind", "deals", "--full", "--json"
    )
    assert code == 0
    assert json.loads(stdout)["moves"] == [
        "delta.com: target -> opportunity (Sandbox CRM deal 'Delta deal' is contractsent)"
    ]
    code, stdout, _ = run_abm(
        capsys, monkeypatch, "crm", "pull", "--kind", "deals", "--full", "--json"
    )
    assert json.loads(stdout)["stages_moved"] == 0  # applying it again changes nothing


def test_crm_pull_configuration_errors_exit_2(sandbox, capsys, monkeypatch) -> None:
    code, _, stderr = run_abm(capsys, monkeypatch, "crm", "pull", "--kind", "leads")
    assert code == 2 and "leads" in stderr

    monkeypatch.setenv("ABM_CRM", "hubspot")
    reset_settings()
    code, _, stderr = run_abm(capsys, monkeypatch, "crm", "pull")
    assert code == 2 and "ABM_HUBSPOT_ACCESS_TOKEN" in stderr and "Traceback" not in stderr

    monkeypatch.setenv("ABM_CRM", "none")
    reset_settings()
    code, _, stderr = run_abm(capsys, monkeypatch, "crm", "pull")
    assert code == 2 and "ABM_CRM" in stderr


def test_a_sandbox_pull_is_the_crm_named_sandbox(accounts, tmp_path) -> None:
    write_file(
        tmp_path / "accounts.csv",
        "domain,owner_email,owner_name,modified_at\nacme.com,rep@us.example,Rita,2026-03-01\n",
    )

    report = pull_crm(accounts, SandboxCrm(tmp_path), ["accounts"])

    assert report.owners_set == 1
    assert read_cursor(accounts, "crm:sandbox:accounts") == "2026-03-01T00:00:00+00:00"


# -- found in review ------------------------------------------------------------------------


def _meeting(crm_id: str, start: datetime, outcome: str | None = "SCHEDULED") -> CrmMeeting:
    return CrmMeeting(crm_id, "Intro", start, outcome, ("ana@acme.com",), ("acme.com",), start)


def _meeting_times(engine: Engine) -> list[datetime]:
    with engine.connect() as connection:
        return [
            at.replace(tzinfo=UTC) if at.tzinfo is None else at
            for (at,) in connection.execute(
                select(EngagementEvent.occurred_at).where(EngagementEvent.type == "meeting")
            )
        ]


def test_a_meeting_canceled_after_it_was_stored_no_longer_counts(accounts) -> None:
    booked = Scripted({"meetings": [page("meetings", [_meeting("m1", T0)], "c1")]})
    assert pull_crm(accounts, booked, ["meetings"]).meetings_stored == 1
    assert _meeting_times(accounts) == [T0]

    moved = T0 + timedelta(days=2)
    rescheduled = Scripted({"meetings": [page("meetings", [_meeting("m1", moved)], "c2")]})
    pull_crm(accounts, rescheduled, ["meetings"])
    assert _meeting_times(accounts) == [moved]  # one event, at the new time

    canceled = Scripted({"meetings": [page("meetings", [_meeting("m1", moved, "CANCELED")], "c3")]})
    report = pull_crm(accounts, canceled, ["meetings"])
    assert _meeting_times(accounts) == []
    assert report.withdrawn == [
        "hubspot meeting m1 (Intro): CANCELED: its meeting event was removed"
    ]


def test_a_deal_of_two_of_our_accounts_moves_both_and_a_lost_deal_is_said(accounts) -> None:
    both = CrmDeal("7", "Group deal", "contractsent", None, False, False, None,
                   ("acme.com", "beta.com", "nobody.example"), T0)  # fmt: skip
    report = pull_crm(accounts, Scripted({"deals": [page("deals", [both], "c1")]}), ["deals"])
    assert (_stage(accounts, "acme.com"), _stage(accounts, "beta.com")) == (
        "opportunity",
        "opportunity",
    )
    assert report.unknown_domains == {"nobody.example": 1}

    # the deal is re-associated with Acme only, then lost
    later = T0 + timedelta(days=1)
    moved = CrmDeal(
        "7", "Group deal", "contractsent", None, False, False, None, ("acme.com",), later
    )
    report = pull_crm(accounts, Scripted({"deals": [page("deals", [moved], "c2")]}), ["deals"])
    with accounts.connect() as connection:
        owners = connection.execute(select(CrmDealRow.account_id)).scalars().all()
    assert len(owners) == 1
    assert (
        any(line.startswith("beta.com: no HubSpot deal says") for line in report.unmapped) is False
    )

    lost = CrmDeal("7", "Group deal", "closedlost", None, True, False, None, ("acme.com",),
                   later + timedelta(days=1))  # fmt: skip
    report = pull_crm(accounts, Scripted({"deals": [page("deals", [lost], "c3")]}), ["deals"])
    assert _stage(accounts, "acme.com") == "opportunity"
    assert report.unmapped == [
        "acme.com: no HubSpot deal says a stage now (latest: 'Group deal' is closedlost); "
        "the stage stays opportunity: set it with `abm accounts set-stage` if the account is "
        "out of play"
    ]
    assert report.as_dict()["deals_say_nothing"] == report.unmapped


def test_an_older_deal_record_never_overwrites_a_newer_one(accounts) -> None:
    newer = deal("8", "acme.com", "closedwon", T0 + timedelta(hours=1), won=True)
    older = deal("8", "acme.com", "qualifiedtobuy", T0)
    pull_crm(accounts, Scripted({"deals": [page("deals", [newer], "c1")]}), ["deals"])
    pull_crm(accounts, Scripted({"deals": [page("deals", [older], "c0")]}), ["deals"])
    with accounts.connect() as connection:
        assert connection.execute(select(CrmDealRow.crm_stage)).scalar_one() == "closedwon"
    assert _stage(accounts, "acme.com") == "customer"


def test_an_import_does_not_undo_a_stage_the_crm_set(
    accounts, sandbox, tmp_path, capsys, monkeypatch
) -> None:
    """Found in review: precedence is person > crm > import, and an accounts file with an
    older `stage` column moved a customer back to mqa."""
    won = deal("9", "acme.com", "closedwon", T0, won=True, name="Acme renewal")
    pull_crm(accounts, Scripted({"deals": [page("deals", [won], "c1")]}), ["deals"])
    path = write_file(
        tmp_path / "accounts.csv", "domain,name,stage\nacme.com,Acme,mqa\nbeta.com,Beta,mqa\n"
    )

    code, _, stderr = run_abm(capsys, monkeypatch, "import", "accounts", str(path))

    assert code == 0, stderr
    assert (_stage(accounts, "acme.com"), _stage(accounts, "beta.com")) == ("customer", "mqa")
    assert "stages kept, set since by a person or the CRM" in stderr
    assert "acme.com (set by crm)" in stderr


def test_a_crm_that_does_not_answer_is_an_error_line_not_a_traceback(
    sqlite_url, capsys, monkeypatch
) -> None:
    """Found trying it: with HubSpot unreachable, `abm crm pull` printed a traceback. (The
    shared client's retries take about half a minute: SQLite only.)"""
    migrate(get_engine(sqlite_url))
    monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ABM_CRM", "hubspot")
    monkeypatch.setenv("ABM_HUBSPOT_ACCESS_TOKEN", "pat-na1-unreachable-0000")
    monkeypatch.setenv("ABM_HUBSPOT_BASE_URL", "https://api.hubapi.com")
    reset_settings()
    with respx.mock(assert_all_called=False) as router:
        router.post(url__regex=r".*/search$").mock(side_effect=httpx.ConnectError("refused"))
        code, _, stderr = run_abm(capsys, monkeypatch, "crm", "pull", "--kind", "deals")

    assert code == 1
    assert "error: the CRM did not answer after its retries" in stderr
    assert "Traceback" not in stderr and "pat-na1" not in stderr
