"""`abm suppressions list|remove`: suppressions can be seen and lifted, every lift is kept with
who, when and why, the people a lifted suppression held are reachable again, and an
unsubscribe is never lifted unless the person asked for it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cli_support import run_abm
from sqlalchemy import Engine, select

from core.settings import reset_settings
from models.store import add_suppressions, upsert_accounts, upsert_contacts
from models.tables import Contact, Suppression
from stages.engagement.ingest import unsubscribe
from stages.engagement.rollup import store_events

PEOPLE = ("ana", "bo", "cy", "dee")


@pytest.fixture
def db(engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """acme.example with ana, bo, cy and dee, all active; the CLI uses this database."""
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    reset_settings()
    upsert_accounts(
        engine,
        [
            {"domain": d, "attributes": {}, "technologies": []}
            for d in ("acme.example", "b.example")
        ],
    )
    upsert_contacts(
        engine,
        [
            {"email": f"{name}@acme.example", "account_domain": "acme.example", "attributes": {}}
            for name in PEOPLE
        ],
    )
    return engine


def statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(select(Contact.email, Contact.status)).all()
    return {email.split("@")[0]: status for email, status in rows}


def suppressions(engine: Engine) -> set[tuple[str, str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(select(Suppression.kind, Suppression.value, Suppression.channel))
        return {tuple(row) for row in rows}


def contact_id(engine: Engine, name: str) -> int:
    with engine.connect() as connection:
        return connection.execute(
            select(Contact.id).where(Contact.email == f"{name}@acme.example")
        ).scalar_one()


def bounce(engine: Engine, name: str) -> None:
    store_events(
        engine,
        [
            {
                "provider": "test",
                "provider_event_id": f"bounce-{name}",
                "type": "bounce",
                "channel": "email",
                "occurred_at": datetime(2026, 3, 2, tzinfo=UTC),
                "account_id": 1,
                "contact_id": contact_id(engine, name),
            }
        ],
    )


def listed(capsys, monkeypatch, *args: str) -> list[dict[str, Any]]:
    code, out, err = run_abm(capsys, monkeypatch, "suppressions", "list", "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_list_shows_every_suppression_and_filters_by_kind_channel_and_text(db, capsys, monkeypatch):
    add_suppressions(
        db,
        [
            {"kind": "email", "value": "ana@acme.example", "reason": "asked by phone"},
            {"kind": "domain", "value": "rival.example", "channel": "email", "reason": "rival"},
            {"kind": "email", "value": "bo@b.example", "channel": "linkedin"},
        ],
    )
    rows = listed(capsys, monkeypatch)
    assert {(r["kind"], r["value"], r["channel"]) for r in rows} == {
        ("email", "ana@acme.example", "all"),
        ("domain", "rival.example", "email"),
        ("email", "bo@b.example", "linkedin"),
    }
    ana = next(r for r in rows if r["value"] == "ana@acme.example")
    assert ana["reason"] == "asked by phone" and ana["source"] == "import"
    assert ana["created_at"] and ana["unsubscribe"] is False

    assert [r["value"] for r in listed(capsys, monkeypatch, "--kind", "domain")] == [
        "rival.example"
    ]
    assert [r["value"] for r in listed(capsys, monkeypatch, "--channel", "linkedin")] == [
        "bo@b.example"
    ]
    assert [r["value"] for r in listed(capsys, monkeypatch, "--search", "RIVAL")] == [
        "rival.example"
    ]
    assert [r["value"] for r in listed(capsys, monkeypatch, "--search", "phone")] == [
        "ana@acme.example"
    ]
    assert listed(capsys, monkeypatch, "--search", "%") == []

    code, out, err = run_abm(capsys, monkeypatch, "suppressions", "list")
    assert code == 0 and "rival.example" in out and "3 suppressions" in err

    code, _, err = run_abm(capsys, monkeypatch, "suppressions", "list", "--kind", "person")
    assert code == 2 and "Traceback" not in err and "email" in err and "domain" in err


def test_lifting_a_domain_frees_only_the_people_it_alone_held_and_keeps_history(
    db, capsys, monkeypatch
):
    bounce(db, "bo")
    unsubscribe(db, contact_id(db, "dee"), 0)
    add_suppressions(
        db,
        [
            {"kind": "domain", "value": "acme.example", "reason": "legal hold"},
            {"kind": "email", "value": "cy@acme.example", "reason": "asked by phone"},
        ],
    )
    assert statuses(db) == {
        "ana": "suppressed",
        "bo": "bounced",
        "cy": "suppressed",
        "dee": "unsubscribed",
    }

    code, _, err = run_abm(
        capsys,
        monkeypatch,
        *("suppressions", "remove", "https://www.ACME.example/", "--reason", "hold ended"),
        *("--by", "kim"),
    )
    assert code == 0, err
    assert "acme.example" in err and "1 contact" in err
    # cy is still held by her own suppression, bo by the bounce, dee by her unsubscribe
    assert statuses(db) == {
        "ana": "active",
        "bo": "bounced",
        "cy": "suppressed",
        "dee": "unsubscribed",
    }
    assert ("domain", "acme.example", "all") not in suppressions(db)

    (lifted,) = listed(capsys, monkeypatch, "--lifted")
    assert {k: lifted[k] for k in ("kind", "value", "channel", "reason", "source")} == {
        "kind": "domain",
        "value": "acme.example",
        "channel": "all",
        "reason": "legal hold",
        "source": "import",
    }
    assert lifted["lifted_by"] == "kim" and lifted["lift_reason"] == "hold ended"
    assert lifted["created_at"] and lifted["lifted_at"] and lifted["person_asked"] is False
    assert lifted["contacts_reactivated"] == 1


def test_an_unsubscribe_is_lifted_only_when_the_person_asked(db, capsys, monkeypatch):
    unsubscribe(db, contact_id(db, "dee"), 0)
    before = suppressions(db)
    assert ("email", "dee@acme.example", "email") in before

    code, _, err = run_abm(
        capsys, monkeypatch, "suppressions", "remove", "dee@acme.example", "--reason", "cleanup"
    )
    assert code == 2 and "Traceback" not in err
    assert "unsubscribe" in err and "--person-asked" in err
    assert suppressions(db) == before and statuses(db)["dee"] == "unsubscribed"

    code, _, err = run_abm(
        capsys,
        monkeypatch,
        *("suppressions", "remove", "Dee@Acme.example", "--person-asked"),
        *("--reason", "she wrote on 3 March asking to hear from us again"),
    )
    assert code == 0, err
    assert statuses(db)["dee"] == "active"
    assert ("email", "dee@acme.example", "email") not in suppressions(db)
    (lifted,) = listed(capsys, monkeypatch, "--lifted")
    assert lifted["person_asked"] is True and lifted["reason"] == "unsubscribed"

    # should she unsubscribe again, through the same link, that holds at once
    unsubscribe(db, contact_id(db, "dee"), 0)
    assert statuses(db)["dee"] == "unsubscribed"
    assert ("email", "dee@acme.example", "email") in suppressions(db)


def test_an_imported_opt_out_counts_as_an_unsubscribe(db, capsys, monkeypatch):
    add_suppressions(
        db, [{"kind": "email", "value": "ana@acme.example", "reason": "Unsubscribed via webform"}]
    )
    assert listed(capsys, monkeypatch)[0]["unsubscribe"] is True
    code, _, err = run_abm(
        capsys, monkeypatch, "suppressions", "remove", "ana@acme.example", "--reason", "x"
    )
    assert code == 2 and "--person-asked" in err
    assert statuses(db)["ana"] == "suppressed"


def test_a_lifted_bounce_makes_the_address_reachable_again(db, capsys, monkeypatch):
    bounce(db, "bo")
    code, _, err = run_abm(
        capsys,
        monkeypatch,
        *("suppressions", "remove", "bo@acme.example", "--reason", "mailbox fixed"),
    )
    assert code == 0, err
    assert statuses(db)["bo"] == "active"


def test_channel_picks_one_of_several_suppressions_of_a_value(db, capsys, monkeypatch):
    add_suppressions(
        db,
        [
            {"kind": "email", "value": "ana@acme.example", "channel": "email"},
            {"kind": "email", "value": "ana@acme.example", "channel": "linkedin"},
        ],
    )
    code, _, err = run_abm(
        capsys,
        monkeypatch,
        *("suppressions", "remove", "ana@acme.example", "--channel", "LinkedIn"),
        *("--reason", "rep may connect"),
    )
    assert code == 0, err
    assert suppressions(db) == {("email", "ana@acme.example", "email")}
    assert statuses(db)["ana"] == "suppressed"  # the email suppression still holds her

    code, _, err = run_abm(
        capsys,
        monkeypatch,
        *("suppressions", "remove", "ana@acme.example", "--channel", "all", "--reason", "x"),
    )
    assert code == 2 and "channel email" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nobody@acme.example", "--reason", "x"), "no suppression"),
        (("not a value", "--reason", "x"), "not a valid"),
        (("ana@acme.example",), "--reason"),
        (("ana@acme.example", "--reason", "  "), "--reason"),
    ],
)
def test_remove_refuses_what_it_cannot_do_with_exit_2(db, capsys, monkeypatch, args, message):
    add_suppressions(db, [{"kind": "email", "value": "ana@acme.example"}])
    code, _, err = run_abm(capsys, monkeypatch, "suppressions", "remove", *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert statuses(db)["ana"] == "suppressed"
