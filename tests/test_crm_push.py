"""CRM write-back by change, not by audience: `abm crm push`, the campaign flow and the nightly
rescore send every account whose tier, ICP score, engagement score or stage differs from what
was last pushed to the CRM, whatever changed it. HubSpot is mocked at the wire with respx;
accounts it failed are tried again next time, the others are not sent twice."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from hubspot_contract import check_calls
from sqlalchemy import Engine, select, update

from abm.cli import main
from connectors.crm import HubSpotCrm
from core.settings import get_settings, reset_settings
from models.db import get_engine
from models.tables import Account, CrmPush, utcnow
from stages.engagement.rollup import load_engagement_rules, rollup_accounts, store_events
from stages.importing import import_file
from stages.targeting.scoring import load_icp_rules, rescore_accounts_in_db

BASE = "https://api.hubapi.com"
TOKEN = "pat-eu1-crm-push-5ecret-0000"
SEARCH = "/crm/v3/objects/companies/search"
UPDATE = "/crm/v3/objects/companies/batch/update"
UPSERT = "/crm/v3/objects/companies/batch/upsert"
PROPERTIES = "/crm/v3/properties/companies"
CAMPAIGN = Path(__file__).resolve().parents[1] / "campaigns" / "demo.yaml"


def _inputs(call: respx.models.Call) -> list[dict[str, Any]]:
    return json.loads(call.request.content)["inputs"]


class FakeHubSpot:
    """Just enough of HubSpot's companies API: the properties exist, search by IN, batch
    update by id, batch upsert on the unique match property."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.companies: dict[str, dict[str, str]] = {}
        self.written: list[str] = []  # domains sent in updates and upserts, in order
        self._ids = itertools.count(2001)
        with HubSpotCrm(TOKEN) as crm:
            definitions = crm.property_definitions()
        self.properties = router.get(BASE + PROPERTIES, name="properties").respond(
            200, json={"results": definitions}
        )
        self.search = router.post(BASE + SEARCH, name="search").mock(side_effect=self._search)
        self.update = router.post(BASE + UPDATE, name="update").mock(side_effect=self._update)
        self.upsert = router.post(BASE + UPSERT, name="upsert").mock(side_effect=self._upsert)

    def by_domain(self) -> dict[str, dict[str, str]]:
        return {props["abm_domain"]: props for props in self.companies.values()}

    def _search(self, request: httpx.Request) -> httpx.Response:
        query = json.loads(request.content)
        hits = []
        for company_id, props in sorted(self.companies.items()):
            for group in query["filterGroups"]:
                (flt,) = group["filters"]
                if props.get(flt["propertyName"]) in flt["values"]:
                    hits.append({"id": company_id, "properties": props})
                    break
        return httpx.Response(200, json={"total": len(hits), "results": hits})

    def _update(self, request: httpx.Request) -> httpx.Response:
        results = []
        for item in json.loads(request.content)["inputs"]:
            self.written.append(item["objectWriteTraceId"])
            self.companies[item["id"]].update(item["properties"])
            results.append({"id": item["id"], "objectWriteTraceId": item["objectWriteTraceId"]})
        return httpx.Response(200, json={"status": "COMPLETE", "results": results})

    def _upsert(self, request: httpx.Request) -> httpx.Response:
        results = []
        for item in json.loads(request.content)["inputs"]:
            self.written.append(item["objectWriteTraceId"])
            found = [
                i for i, p in self.companies.items() if p.get(item["idProperty"]) == item["id"]
            ]
            company_id = found[0] if found else str(next(self._ids))
            self.companies.setdefault(company_id, {}).update(item["properties"])
            results.append(
                {
                    "id": company_id,
                    "new": not found,
                    "objectWriteTraceId": item["objectWriteTraceId"],
                }
            )
        return httpx.Response(200, json={"status": "COMPLETE", "results": results})


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    """HubSpot mocked; the local Prefect server of the flow tests is reached for real."""
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        yield mock
        check_calls(mock.calls)  # every request to HubSpot keeps tests/hubspot_contract.py


@pytest.fixture
def hubspot(router: respx.MockRouter) -> FakeHubSpot:
    return FakeHubSpot(router)


def _accounts(engine: Engine, tmp_path: Path, domains: list[str]) -> None:
    """Accounts imported and scored as `abm import accounts` and `abm score` would."""
    rows = "".join(
        f"{d},{d.split('.')[0].title()},Software,{900 + i},US\n" for i, d in enumerate(domains)
    )
    path = tmp_path / "accounts.csv"
    path.write_text("domain,name,industry,employees,country\n" + rows, encoding="utf-8")
    assert import_file("accounts", path, engine, get_settings()).rejects == []
    rescore_accounts_in_db(engine, load_icp_rules())


@pytest.fixture
def configured(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """Three scored accounts in a database the CLI and flows use, HubSpot configured."""
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    monkeypatch.setenv("ABM_HUBSPOT_ACCESS_TOKEN", TOKEN)
    reset_settings()
    engine = get_engine(database_url)
    _accounts(engine, tmp_path, ["acme.example", "globex.example", "initech.example"])
    return engine


def abm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """`abm ARGS` in this process (so respx sees its requests): exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["abm", *args])
    reset_settings()
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def _reach_mqa(engine: Engine, domain: str) -> None:
    """A reply and a booked meeting arrive (as through a webhook) and the rollup moves the
    account through engaged to mqa."""
    with engine.connect() as connection:
        account_id = connection.execute(
            select(Account.id).where(Account.domain == domain)
        ).scalar_one()
    events = [
        {
            "provider": "test",
            "provider_event_id": f"{kind}-{domain}",
            "type": kind,
            "channel": "email",
            "occurred_at": utcnow(),
            "account_id": account_id,
        }
        for kind in ("reply", "meeting")
    ]
    assert store_events(engine, events) == 2
    rollup_accounts(engine, [account_id], load_engagement_rules())
    with engine.connect() as connection:
        stage = connection.execute(select(Account.stage).where(Account.id == account_id))
        assert stage.scalar_one() == "mqa"


def _pushed(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Account.domain, CrmPush.tier, CrmPush.icp_score, CrmPush.stage)
            .join(CrmPush, CrmPush.account_id == Account.id)
            .where(CrmPush.crm == "hubspot")
        ).all()
    return {domain: {"tier": t, "icp_score": s, "stage": st} for domain, t, s, st in rows}


def test_an_account_that_reached_mqa_outside_any_campaign_is_pushed_by_abm_crm_push(
    configured: Engine, hubspot: FakeHubSpot, monkeypatch, capsys
) -> None:
    code, out, err = abm(monkeypatch, capsys, "crm", "push", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert (first["created"], first["updated"], first["failed"], first["unchanged"]) == (3, 0, 0, 0)
    assert first["failures"] == {}
    assert set(hubspot.by_domain()) == {"acme.example", "globex.example", "initech.example"}
    sent = len(hubspot.written)

    _reach_mqa(configured, "globex.example")
    code, out, err = abm(monkeypatch, capsys, "crm", "push", "--json")

    assert code == 0, err
    second = json.loads(out)
    assert (second["updated"], second["created"], second["failed"], second["unchanged"]) == (
        1,
        0,
        0,
        2,
    )
    assert hubspot.written[sent:] == ["globex.example"]
    assert hubspot.by_domain()["globex.example"]["abm_stage"] == "mqa"
    assert _pushed(configured)["globex.example"]["stage"] == "mqa"


def test_a_second_push_with_nothing_changed_sends_no_request(
    configured: Engine, hubspot: FakeHubSpot, router: respx.MockRouter, monkeypatch, capsys
) -> None:
    assert abm(monkeypatch, capsys, "crm", "push")[0] == 0
    requests = len(router.calls)

    code, out, err = abm(monkeypatch, capsys, "crm", "push")

    assert code == 0, err
    assert len(router.calls) == requests
    assert "unchanged=3" in out and "failed=0" in out and "updated=0" in out


def test_an_item_hubspot_rejected_is_pushed_again_next_time_and_the_others_are_not(
    configured: Engine, hubspot: FakeHubSpot, monkeypatch, capsys
) -> None:
    accept = hubspot.upsert.side_effect

    def reject_initech(request: httpx.Request) -> httpx.Response:
        inputs = json.loads(request.content)["inputs"]
        ok = [i for i in inputs if i["id"] != "initech.example"]
        accepted = accept(httpx.Request("POST", request.url, json={"inputs": ok}))
        answer = json.loads(accepted.content)
        answer["errors"] = [
            {
                "status": "error",
                "category": "VALIDATION_ERROR",
                "message": "Property values were not valid",
                "errors": [{"message": "domain is invalid", "code": "INVALID_DOMAIN"}],
                "context": {"objectWriteTraceId": ["initech.example"]},
            }
        ]
        return httpx.Response(207, json=answer)

    hubspot.upsert.side_effect = reject_initech
    code, out, err = abm(monkeypatch, capsys, "crm", "push", "--json")

    assert code == 1
    report = json.loads(out)
    assert (report["created"], report["failed"]) == (2, 1)
    assert report["failures"] == {
        "initech.example": "VALIDATION_ERROR: Property values were not valid (domain is invalid)"
    }
    assert set(_pushed(configured)) == {"acme.example", "globex.example"}
    sent = len(hubspot.written)

    hubspot.upsert.side_effect = accept
    code, out, err = abm(monkeypatch, capsys, "crm", "push")

    assert code == 0, err
    assert hubspot.written[sent:] == ["initech.example"]
    assert set(_pushed(configured)) == {"acme.example", "globex.example", "initech.example"}


def test_a_batch_hubspot_could_not_take_is_retried_next_time_and_stops_the_rest(
    configured: Engine, hubspot: FakeHubSpot, tmp_path: Path
) -> None:
    domains = [f"company{i:03d}.example" for i in range(250)]
    _accounts(configured, tmp_path, domains)
    accept = hubspot.upsert.side_effect
    failing = {"company100.example"}

    def unavailable_for_one_batch(request: httpx.Request) -> httpx.Response:
        if {i["id"] for i in json.loads(request.content)["inputs"]} & failing:
            return httpx.Response(500, json={"status": "error", "message": "internal error"})
        return accept(request)

    hubspot.upsert.side_effect = unavailable_for_one_batch
    from stages.crm import push_changed

    sleeps: list[float] = []
    with HubSpotCrm(TOKEN, sleep=sleeps.append) as crm:
        report = push_changed(configured, crm, batch_size=100)

    pushed = set(_pushed(configured))
    assert sleeps, "the 500 was retried before giving up"
    assert report.failed == len(report.failures) == 253 - len(pushed)
    assert "HTTP 500" in report.failures[domains[150]]
    assert report.failures[domains[-1]].startswith("not sent: HubSpot unavailable")
    assert not pushed & set(report.failures)
    assert report.created == len(pushed) > 0
    requests_after_stop = [
        call for call in hubspot.search.calls if domains[-1] in call.request.content.decode()
    ]
    assert requests_after_stop == [], "nothing is sent once HubSpot is unavailable"
    sent = len(hubspot.written)

    failing.clear()
    with HubSpotCrm(TOKEN, sleep=sleeps.append) as crm:
        again = push_changed(configured, crm, batch_size=100)

    assert again.failures == {}
    assert sorted(hubspot.written[sent:]) == sorted(set(domains) - pushed - {"acme.example"})
    assert (again.created, again.unchanged) == (253 - len(pushed), len(pushed))
    assert len(_pushed(configured)) == 253


def test_hubspot_unavailable_from_the_start_reports_every_changed_account_as_not_sent(
    configured: Engine, hubspot: FakeHubSpot
) -> None:
    from stages.crm import push_changed

    hubspot.properties.return_value = httpx.Response(503)
    sleeps: list[float] = []
    with HubSpotCrm(TOKEN, sleep=sleeps.append) as crm:
        report = push_changed(configured, crm)

    assert set(report.failures) == {"acme.example", "globex.example", "initech.example"}
    assert all(r.startswith("not sent: ") and "HTTP 503" in r for r in report.failures.values())
    assert not hubspot.search.called and not hubspot.upsert.called
    assert _pushed(configured) == {}


def test_every_value_and_a_cleared_one_count_as_a_change(
    configured: Engine, hubspot: FakeHubSpot
) -> None:
    from stages.crm import push_changed

    with HubSpotCrm(TOKEN) as crm:
        assert push_changed(configured, crm).created == 3
        for values in ({"tier": None}, {"icp_score": 7}, {"engagement_score": 0.1}):
            with configured.begin() as connection:
                connection.execute(
                    update(Account).where(Account.domain == "acme.example").values(**values)
                )
            report = push_changed(configured, crm)
            assert (report.updated, report.unchanged) == (1, 2), values
        assert push_changed(configured, crm).unchanged == 3
    assert hubspot.by_domain()["acme.example"]["abm_tier"] == ""
    assert hubspot.by_domain()["acme.example"]["abm_engagement_score"] == "0.1"


def test_a_401_stops_with_the_setting_named_and_records_nothing(
    configured: Engine, hubspot: FakeHubSpot, monkeypatch, capsys
) -> None:
    hubspot.search.side_effect = None
    hubspot.search.return_value = httpx.Response(
        401, json={"status": "error", "category": "INVALID_AUTHENTICATION", "message": TOKEN}
    )

    code, out, err = abm(monkeypatch, capsys, "crm", "push", "--json")

    assert code == 2
    assert "ABM_HUBSPOT_ACCESS_TOKEN" in err and "401" in err
    assert "Traceback" not in err and TOKEN not in err + out
    assert not hubspot.upsert.called and not hubspot.update.called
    assert _pushed(configured) == {}


def test_without_a_crm_configured_push_exits_2_naming_the_setting(
    configured: Engine, router: respx.MockRouter, monkeypatch, capsys
) -> None:
    monkeypatch.delenv("ABM_HUBSPOT_ACCESS_TOKEN")

    code, _out, err = abm(monkeypatch, capsys, "crm", "push")

    assert code == 2
    assert "ABM_HUBSPOT_ACCESS_TOKEN" in err and "Traceback" not in err
    assert not router.calls


@pytest.mark.slow
def test_the_nightly_rescore_pushes_changed_accounts(
    configured: Engine, hubspot: FakeHubSpot, prefect_server
) -> None:
    from flows.scheduled import rescore_accounts

    first = rescore_accounts()
    assert first["crm"]["created"] == 3 and first["crm"]["failed"] == 0
    _reach_mqa(configured, "acme.example")

    second = rescore_accounts()

    assert (second["crm"]["updated"], second["crm"]["unchanged"]) == (1, 2)
    assert hubspot.by_domain()["acme.example"]["abm_stage"] == "mqa"


@pytest.mark.slow
def test_a_campaign_run_pushes_accounts_outside_its_audience_too(
    configured: Engine, hubspot: FakeHubSpot, prefect_server, tmp_path: Path
) -> None:
    from flows.campaign import run_campaign

    campaign = tmp_path / "until-mqa.yaml"
    campaign.write_text(
        CAMPAIGN.read_text().replace(
            "tiers: [1, 2, 3]", "tiers: [1, 2, 3]\n  stages: [target, aware, engaged]"
        )
    )
    _reach_mqa(configured, "initech.example")  # and so left the campaign's audience

    run_campaign(campaign_file=str(campaign))

    assert set(_pushed(configured)) == {"acme.example", "globex.example", "initech.example"}
    assert hubspot.by_domain()["initech.example"]["abm_stage"] == "mqa"
