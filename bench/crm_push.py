"""Requests a CRM push of N accounts takes: `python -m bench.crm_push [--accounts N]`.

N accounts (no contacts: coverage is all gaps, which costs the same to send) in a fresh
SQLite database go through the real path, `stages.crm.push.push_changed` and a real
connector, with the CRM's HTTP API mocked at the wire by respx (a minimal in-memory CRM that
answers each request as the provider documents). Time is virtual: the connectors' rate
limiters and backoffs sleep on a clock this bench advances, so the figure is the work, and
the time the provider's rate limit would add is printed beside it.

- HubSpot, first push: no company id known, so each batch of 100 is searched for, then
  created by a batch upsert (about 2 requests a batch).
- HubSpot, known ids: every account changed again; the ids the first push learned are
  handed back, so each batch of 100 is one batch update: ceil(N / 100) requests.
- Salesforce: a push hands the connector 10,000 accounts a call (`accounts_per_call`), each
  one Bulk API 2.0 job (create, upload, close, poll, results): 5 requests per 10,000; the
  same push with the ids known goes the same way. ceil(N / 200) is what sObject Collections
  (200 records a request) would take."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

HUBSPOT = "https://api.hubapi.com"
SF_LOGIN = "https://bench.my.salesforce.com"
SF_INSTANCE = "https://bench.my.salesforce.com"


class VirtualClock:
    """`sleep` advances `now` instead of waiting: rate limits cost no wall time here."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        self.slept += max(0.0, seconds)

    def clock(self) -> float:
        return self.now


def _database(path: Path, accounts: int) -> Any:
    """A migrated SQLite database of `accounts` scored accounts."""
    from sqlalchemy import update

    from models.db import get_engine, migrate
    from models.store import upsert_accounts
    from models.tables import Account

    engine = get_engine(f"sqlite:///{path}")
    migrate(engine)
    rows = [
        {"domain": f"company{i:06d}.example", "name": f"Company {i}", "attributes": {}}
        for i in range(accounts)
    ]
    for start in range(0, len(rows), 20_000):
        upsert_accounts(engine, rows[start : start + 20_000])
    with engine.begin() as connection:
        connection.execute(
            update(Account).values(tier=2, icp_score=60, icp_reasons=["+60 industry=Software"])
        )
    return engine


def _touch_all(engine: Any, score: float) -> None:
    """Every account changed (a new engagement score), so the next push sends them all."""
    from sqlalchemy import update

    from models.tables import Account

    with engine.begin() as connection:
        connection.execute(update(Account).values(engagement_score=score))


def _hubspot_router(router: Any) -> None:
    """HubSpot's companies API, in memory: the properties exist; search by IN on the match
    property; batch update by id; batch upsert on the unique match property."""
    import httpx

    companies: dict[str, str] = {}  # domain -> id
    ids = count(1)
    names = [
        "abm_engagement_score",
        "abm_stage",
        "abm_tier",
        "abm_icp_score",
        "abm_icp_summary",
        "abm_coverage",
        "abm_gaps",
    ]
    props = [{"name": n} for n in names] + [{"name": "abm_domain", "hasUniqueValue": True}]
    router.get(f"{HUBSPOT}/crm/v3/properties/companies").respond(200, json={"results": props})

    def search(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        wanted = {v for g in body["filterGroups"] for f in g["filters"] for v in f["values"]}
        found = [
            {"id": companies[d], "properties": {"domain": d, "abm_domain": d}}
            for d in sorted(wanted)
            if d in companies
        ]
        return httpx.Response(200, json={"total": len(found), "results": found})

    def batch(request: httpx.Request, upsert: bool) -> httpx.Response:
        results = []
        for item in json.loads(request.content)["inputs"]:
            if upsert:
                new = item["id"] not in companies
                company = companies.setdefault(item["id"], str(next(ids)))
                results.append(
                    {"id": company, "new": new, "objectWriteTraceId": item["objectWriteTraceId"]}
                )
            else:
                results.append({"id": item["id"], "objectWriteTraceId": item["objectWriteTraceId"]})
        return httpx.Response(200, json={"status": "COMPLETE", "results": results})

    base = f"{HUBSPOT}/crm/v3/objects/companies"
    router.post(f"{base}/search").mock(side_effect=search)
    router.post(f"{base}/batch/update").mock(side_effect=lambda r: batch(r, False))
    router.post(f"{base}/batch/upsert").mock(side_effect=lambda r: batch(r, True))


def _salesforce_router(router: Any, crm: Any) -> None:
    """Salesforce, in memory: a token, an Account describe with every field a push writes,
    sObject Collections upsert, and Bulk API 2.0 ingest jobs that complete at once."""
    import httpx

    data = f"{SF_INSTANCE}/services/data/{crm.api_version}"
    router.post(f"{SF_LOGIN}/services/oauth2/token").respond(
        200, json={"access_token": "bench-token", "instance_url": SF_INSTANCE}
    )
    fields = [
        {
            "name": spec.name,
            "type": sorted(spec.types)[0],
            "length": spec.min_length or 255,
            "createable": True,
            "updateable": True,
        }
        for spec in crm.fields
    ]
    fields.append(
        {
            "name": crm.domain_field,
            "type": "string",
            "length": 255,
            "createable": True,
            "updateable": True,
            "externalId": True,
            "unique": True,
        }
    )
    router.get(f"{data}/sobjects/Account/describe").respond(200, json={"fields": fields})
    accounts: dict[str, str] = {}
    ids = count(1)

    def record_id(domain: str) -> tuple[str, bool]:
        new = domain not in accounts
        if new:
            accounts[domain] = f"001{next(ids):015d}"
        return accounts[domain], new

    def collections(request: httpx.Request) -> httpx.Response:
        out = []
        for record in json.loads(request.content)["records"]:
            key = record.get(crm.domain_field) or record.get("Id")
            sf_id, new = record_id(key)
            out.append({"id": sf_id, "success": True, "created": new, "errors": []})
        return httpx.Response(200, json=out)

    router.patch(url__regex=rf"{data}/composite/sobjects.*").mock(side_effect=collections)
    router.post(url__regex=rf"{data}/composite/sobjects.*").mock(side_effect=collections)
    jobs: dict[str, list[dict[str, str]]] = {}
    job_ids = count(1)

    def create(request: httpx.Request) -> httpx.Response:
        job = f"750{next(job_ids):015d}"
        jobs[job] = []
        return httpx.Response(200, json={"id": job, "state": "Open"})

    def upload(request: httpx.Request, job: str) -> httpx.Response:
        jobs[job] = list(csv.DictReader(io.StringIO(request.content.decode("utf-8"))))
        return httpx.Response(201)

    def results(request: httpx.Request, job: str) -> httpx.Response:
        out = io.StringIO()
        rows = jobs[job]
        columns = ["sf__Id", "sf__Created", *(rows[0] if rows else [])]
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            sf_id, new = record_id(row.get(crm.domain_field) or row.get("Id") or "")
            writer.writerow({"sf__Id": sf_id, "sf__Created": str(new).lower(), **row})
        return httpx.Response(200, text=out.getvalue(), headers={"Content-Type": "text/csv"})

    def job_route(request: httpx.Request) -> httpx.Response:
        parts = request.url.path.rstrip("/").split("/")
        job = next(p for p in parts if p.startswith("750"))
        if request.method == "PUT":
            return upload(request, job)
        if request.method == "PATCH":
            return httpx.Response(200, json={"id": job, "state": "UploadComplete"})
        if parts[-1] == "successfulResults":
            return results(request, job)
        if parts[-1] == "failedResults":
            return httpx.Response(200, text="sf__Id,sf__Error\n")
        n = len(jobs[job])
        return httpx.Response(
            200,
            json={
                "id": job,
                "state": "JobComplete",
                "numberRecordsProcessed": n,
                "numberRecordsFailed": 0,
            },
        )

    router.post(f"{data}/jobs/ingest").mock(side_effect=create)
    router.route(url__regex=rf"{data}/jobs/ingest/750.*").mock(side_effect=job_route)


def _run(
    label: str,
    engine: Any,
    crm: Any,
    router: Any,
    clock: VirtualClock,
    batch: int,
) -> dict[str, Any]:
    """One push, timed; what it did and how many requests went over the wire."""
    from stages.crm.push import push_changed

    before, slept = len(router.calls), clock.slept
    started = time.perf_counter()
    report = push_changed(engine, crm)
    seconds = time.perf_counter() - started
    pushed = report.updated + report.created
    row = {
        "run": label,
        "accounts": pushed,
        "failed": report.failed,
        "requests (report)": report.requests,
        "requests (wire)": len(router.calls) - before,
        f"ceil(N/{batch})": math.ceil(pushed / batch) if pushed else 0,
        "seconds": round(seconds, 2),
        "rate-limit wait (virtual s)": round(clock.slept - slept, 1),
    }
    print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def _hubspot(engine: Any) -> list[dict[str, Any]]:
    import respx

    from connectors.crm.hubspot import HubSpotCrm

    clock = VirtualClock()
    with respx.mock(assert_all_called=False) as router:
        _hubspot_router(router)
        crm = HubSpotCrm("pat-bench-0000", HUBSPOT, sleep=clock.sleep, clock=clock.clock)
        with crm:
            first = _run("hubspot first push", engine, crm, router, clock, crm.batch_size)
            _touch_all(engine, 1.5)
            known = _run("hubspot known ids", engine, crm, router, clock, crm.batch_size)
    return [first, known]


def _salesforce(engine: Any) -> list[dict[str, Any]]:
    import respx

    from connectors.crm.salesforce import SalesforceCrm
    from connectors.crm.salesforce_auth import SalesforceAuth

    clock = VirtualClock()
    rows = []
    with respx.mock(assert_all_called=False) as router:
        seams: dict[str, Callable[..., Any]] = {"sleep": clock.sleep, "clock": clock.clock}
        auth = SalesforceAuth(SF_LOGIN, "bench-client", client_secret="bench-secret", **seams)
        crm = SalesforceCrm(auth, **seams)
        _salesforce_router(router, crm)
        with crm:
            rows.append(_run("salesforce first push", engine, crm, router, clock, crm.batch_size))
            _touch_all(engine, 2.5)
            rows.append(_run("salesforce known ids", engine, crm, router, clock, crm.batch_size))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="the rows as JSON at the end")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        engine = _database(Path(folder) / "crm-bench.db", args.accounts)
        print(f"{args.accounts} accounts in {time.perf_counter() - started:.1f}s", flush=True)
        rows += _hubspot(engine)
        sf_db = _database(Path(folder) / "crm-bench-sf.db", args.accounts)
        rows += _salesforce(sf_db)
        engine.dispose()
        sf_db.dispose()
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
