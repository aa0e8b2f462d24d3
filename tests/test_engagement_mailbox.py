"""The monitored mailbox (issue 20, part 3): `abm engagement mailbox` and the `poll-mailbox`
flow read an IMAP folder and store what they find once: replies (which stop sequences by
the campaign's rules), RFC 3464 delivery reports (hard bounces suppress, soft ones only
count), RFC 5965 complaints (suppress at once) and RFC 3834 auto-replies (not a reply).

The classifier is tested on the samples alone; everything else against a real Dovecot
(tests/imap_server.py), which these tests skip without, unless ABM_TEST_REQUIRE_IMAP=1."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import mail_samples as samples
import pytest
import yaml
from cli_support import run_abm
from imap_server import PASSWORD, REQUIRE_IMAP, Dovecot, DropProxy, dovecot, free_port
from sqlalchemy import Engine, select

from core.errors import ConfigError
from core.settings import get_settings, reset_settings
from models.db import session_scope
from models.store import insert_new_rows, upsert_accounts, upsert_contacts
from models.tables import Campaign, Contact, Delivery, EngagementEvent, Suppression, utcnow

REPO = Path(__file__).resolve().parents[1]
FLAG = "$AbmProcessed"
PEOPLE = {
    "ana@acme.example": "sent",  # replies
    "bo@acme.example": "sent",  # hard bounce
    "cy@acme.example": "sent",  # soft bounce (delayed)
    "gus@acme.example": "sent",  # replies with a Latin-1 subject
    "dee@globex.example": "sent",  # complains (ARF)
    "fay@globex.example": "sent",  # out of office
    "eve@globex.example": "uncertain",  # a crash left it unknown; a delay report settles it
}


def mid(email: str) -> str:
    return f"<abm.{email.split('@')[0]}.t3st@demo.example>"


# -- the classifier, on the samples alone ------------------------------------------------


def test_a_failed_delivery_report_is_a_hard_bounce_about_our_message() -> None:
    from stages.engagement.mailbox import classify

    found = classify(samples.dsn("<dsn-1@mx>", mid("bo@acme.example"), "bo@acme.example"))
    assert found.kind == "bounce"
    assert found.key == "<dsn-1@mx>"
    assert mid("bo@acme.example") in found.message_ids
    [recipient] = found.recipients
    assert (recipient.address, recipient.action, recipient.status) == (
        "bo@acme.example",
        "failed",
        "5.1.1",
    )
    assert recipient.outcome == "hard_bounce"
    assert "User unknown" in recipient.diagnostic


def test_a_delayed_report_and_a_policy_block_are_soft_bounces() -> None:
    from stages.engagement.mailbox import classify

    delayed = classify(
        samples.dsn("<d@mx>", mid("cy@acme.example"), "cy@acme.example", "delayed", "4.4.7")
    )
    blocked = classify(
        samples.dsn("<b@mx>", mid("cy@acme.example"), "cy@acme.example", "failed", "5.7.1")
    )
    assert [r.outcome for r in delayed.recipients] == ["soft_bounce"]
    assert [r.outcome for r in blocked.recipients] == ["soft_bounce"]
    mixed = classify(
        samples.dsn_two_recipients(
            "<m@mx>", mid("bo@acme.example"), "bo@acme.example", "x@y.example"
        )
    )
    assert [(r.address, r.outcome, r.status) for r in mixed.recipients] == [
        ("bo@acme.example", "hard_bounce", "5.2.1"),
        ("x@y.example", "soft_bounce", "4.2.2"),
    ]
    assert mid("bo@acme.example") in mixed.message_ids  # from the message/rfc822 part


def test_an_arf_abuse_report_is_a_complaint_and_not_spam_is_not() -> None:
    from stages.engagement.mailbox import classify

    found = classify(samples.arf("<arf@fbl>", mid("dee@globex.example"), "dee@globex.example"))
    assert (found.kind, found.feedback_type, found.reported) == (
        "complaint",
        "abuse",
        "dee@globex.example",
    )
    assert mid("dee@globex.example") in found.message_ids
    other = classify(samples.arf("<ns@fbl>", mid("dee@globex.example"), "d@x", "not-spam"))
    assert other.kind == "other" and "not-spam" in other.reason


@pytest.mark.parametrize("style", ["rfc3834", "x-autoreply", "precedence", "subject"])
def test_auto_replies_are_not_replies(style: str) -> None:
    from stages.engagement.mailbox import classify

    found = classify(
        samples.auto_reply("<ooo@x>", mid("fay@globex.example"), "fay@globex.example", style)
    )
    assert found.kind == "auto_reply", found.reason
    assert found.message_ids[-1] == mid("fay@globex.example")


def test_replies_even_with_raw_latin1_headers() -> None:
    from stages.engagement.mailbox import classify

    found = classify(samples.reply("<r@x>", mid("ana@acme.example"), "Ana <ana@acme.example>"))
    assert (found.kind, found.sender, found.key) == ("reply", "ana@acme.example", "<r@x>")
    assert mid("ana@acme.example") in found.message_ids
    latin = classify(samples.latin1_reply("<l@x>", mid("gus@acme.example"), "gus@acme.example"))
    assert (latin.kind, latin.sender) == ("reply", "gus@acme.example")
    assert set(latin.non_utf8_headers) == {"From", "Subject"}
    assert latin.subject == "Réponse à votre message"


def test_bad_reports_and_other_mail_are_named_not_counted() -> None:
    from stages.engagement.mailbox import classify

    broken = classify(samples.malformed_dsn("<x@mx>", mid("bo@acme.example"), "bo@acme.example"))
    assert broken.kind == "malformed" and "message/delivery-status" in broken.reason
    assert classify(samples.newsletter("<n@x>")).kind == "other"
    no_id = classify(b"From: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n")
    assert no_id.key.startswith("sha256:")  # the same bytes, the same key: stored once
    assert classify(b"\xff\xfe\x00garbage").kind in ("other", "reply", "malformed")


def test_the_imap_url_is_parsed_and_its_password_never_shown() -> None:
    from connectors.email.imap_mailbox import ImapUrl

    url = ImapUrl.parse("imaps://me%40corp.example:p%2Fss@imap.corp.example/Replies%20In")
    assert (url.host, url.port, url.tls, url.user, url.password, url.folder) == (
        "imap.corp.example",
        993,
        "implicit",
        "me@corp.example",
        "p/ss",
        "Replies In",
    )
    assert "p/ss" not in str(url) and "p/ss" not in repr(url)
    assert ImapUrl.parse("imap://u:p@h").tls == "starttls"  # never a password in clear by default
    assert ImapUrl.parse("imap://u:p@h:143/INBOX?starttls=0").tls == "none"
    assert ImapUrl.parse("imap://u:p@h").folder == "INBOX"
    for bad in (
        "http://u:s3cret@h",
        "imaps://h",
        "imaps://u:s3cret@h:99999",
        "imaps://u:s3cret@h?x=1",
    ):
        with pytest.raises(ConfigError) as caught:
            ImapUrl.parse(bad)
        assert "s3cret" not in str(caught.value)


def test_a_bad_imap_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABM_IMAP_PROCESSED_FLAG", "not a keyword")
    reset_settings()
    with pytest.raises(ConfigError, match="ABM_IMAP_PROCESSED_FLAG"):
        get_settings()


def test_the_deployment_is_there_and_off_by_default() -> None:
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    poll = next(d for d in deployments if d["name"] == "poll-mailbox")
    assert poll["entrypoint"] == "flows/scheduled.py:poll_mailbox"
    assert poll["schedules"] and all(s["active"] is False for s in poll["schedules"])
    assert "ABM_IMAP_URL" in (REPO / "prefect.yaml").read_text()


# -- against a real IMAP server ---------------------------------------------------------


@pytest.fixture(scope="session")
def imap_server() -> Iterator[Dovecot]:
    try:
        with dovecot() as server:
            yield server
    except FileNotFoundError as exc:
        if REQUIRE_IMAP:
            pytest.fail(f"ABM_TEST_REQUIRE_IMAP=1 but {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def user(imap_server: Dovecot, monkeypatch: pytest.MonkeyPatch) -> str:
    """A mailbox of its own on the server, and ABM_IMAP_URL pointing at its INBOX."""
    name = f"u{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("ABM_IMAP_URL", imap_server.url(name))
    reset_settings()
    return name


@pytest.fixture
def people(engine: Engine) -> dict[str, tuple[int, int, str]]:
    return add_people(engine)


def add_people(engine: Engine) -> dict[str, tuple[int, int, str]]:
    """Two accounts, their people, and one sent message each in a campaign's ledger:
    email -> (contact id, account id, Message-ID)."""
    upsert_accounts(
        engine,
        [
            {"domain": domain, "attributes": {}, "technologies": []}
            for domain in ("acme.example", "globex.example")
        ],
    )
    upsert_contacts(
        engine,
        [
            {"email": email, "account_domain": email.split("@")[1], "attributes": {}}
            for email in PEOPLE
        ],
    )
    with session_scope(engine) as session:
        session.add(Campaign(key="c", name="C"))
        session.flush()
        contacts = {
            email: (contact_id, account_id)
            for email, contact_id, account_id in session.execute(
                select(Contact.email, Contact.id, Contact.account_id)
            )
        }
        insert_new_rows(
            session,
            engine,
            Delivery.__table__,
            [
                {
                    "campaign_id": 1,
                    "step": "intro",
                    "contact_id": contacts[email][0],
                    "account_id": contacts[email][1],
                    "channel": "email",
                    "state": state,
                    "message_id": mid(email),
                    "attempts": 1,
                    "due_at": utcnow(),
                    "created_at": utcnow(),
                    "updated_at": utcnow(),
                }
                for email, state in PEOPLE.items()
            ],
            ["campaign_id", "step", "contact_id"],
        )
    return {email: (*contacts[email], mid(email)) for email in PEOPLE}


def everything() -> list[bytes]:
    """One of each kind, as a busy mailbox holds them."""
    return [
        samples.reply(
            "<reply-ana@acme.example>", mid("ana@acme.example"), "Ana <ana@acme.example>"
        ),
        samples.dsn("<dsn-bo@mx.acme.example>", mid("bo@acme.example"), "bo@acme.example"),
        samples.dsn(
            "<dsn-cy@mx.acme.example>",
            mid("cy@acme.example"),
            "cy@acme.example",
            "delayed",
            "4.4.7",
        ),
        samples.latin1_reply(
            "<reply-gus@acme.example>", mid("gus@acme.example"), "gus@acme.example"
        ),
        samples.arf("<arf-dee@fbl.example>", mid("dee@globex.example"), "dee@globex.example"),
        samples.auto_reply(
            "<ooo-fay@globex.example>", mid("fay@globex.example"), "fay@globex.example"
        ),
        samples.dsn(
            "<dsn-eve@mx.globex.example>",
            mid("eve@globex.example"),
            "eve@globex.example",
            "delayed",
            "4.2.2",
        ),
        samples.malformed_dsn(
            "<broken@mx.acme.example>", mid("ana@acme.example"), "ana@acme.example"
        ),
        samples.newsletter("<weekly@vendor.example>"),
    ]


def stored(engine: Engine) -> list[tuple]:
    with engine.connect() as connection:
        return connection.execute(
            select(
                EngagementEvent.provider,
                EngagementEvent.provider_event_id,
                EngagementEvent.type,
                EngagementEvent.contact_id,
                EngagementEvent.account_id,
                EngagementEvent.campaign_id,
                EngagementEvent.message_id,
            ).order_by(EngagementEvent.id)
        ).all()


def poll(engine: Engine, **options):  # type: ignore[no-untyped-def]
    from stages.engagement.mailbox_poll import poll_mailbox

    reset_settings()
    return poll_mailbox(engine, get_settings(), **options)


def test_each_kind_is_stored_once_as_its_event_for_the_right_person(
    engine: Engine, people: dict, imap_server: Dovecot, user: str
) -> None:
    imap_server.append(user, *everything())

    report = poll(engine)

    counts = {k: getattr(report, k) for k in ("read", "replies", "auto_replies", "hard_bounces")}
    assert counts == {"read": 9, "replies": 2, "auto_replies": 1, "hard_bounces": 1}
    assert (report.soft_bounces, report.complaints, report.other, report.malformed) == (2, 1, 1, 1)
    assert report.stored == 7 and report.unmatched == 0
    assert not report.incomplete and len(report.problems) == 1  # the malformed report
    events = {(row.type, row.contact_id) for row in stored(engine)}
    assert events == {
        ("reply", people["ana@acme.example"][0]),
        ("reply", people["gus@acme.example"][0]),
        ("bounce", people["bo@acme.example"][0]),
        ("soft_bounce", people["cy@acme.example"][0]),
        ("soft_bounce", people["eve@globex.example"][0]),
        ("spam_report", people["dee@globex.example"][0]),
        ("auto_reply", people["fay@globex.example"][0]),
    }
    for row in stored(engine):
        email = next(e for e, (contact, *_) in people.items() if contact == row.contact_id)
        assert row.provider == "imap"
        assert (row.account_id, row.campaign_id, row.message_id) == (
            people[email][1],
            1,
            people[email][2],
        )
    with engine.connect() as connection:
        statuses = dict(connection.execute(select(Contact.email, Contact.status)).all())
        suppressed = set(connection.execute(select(Suppression.value)).scalars())
        eve_state = connection.execute(
            select(Delivery.state).where(Delivery.message_id == mid("eve@globex.example"))
        ).scalar()
    assert statuses["bo@acme.example"] == "bounced"  # a hard bounce suppresses
    assert statuses["dee@globex.example"] == "suppressed"  # a complaint, at once
    assert statuses["cy@acme.example"] == statuses["eve@globex.example"] == "active"  # soft
    assert suppressed == {"bo@acme.example", "dee@globex.example"}
    assert eve_state == "sent" and report.reconciled == 1  # the report proves it left
    assert imap_server.flagged(user, FLAG) == list(range(1, 10))  # marked on the server too

    again = poll(engine)
    assert (again.read, again.stored) == (0, 0)
    imap_server.append(
        user, samples.reply("<late@acme.example>", mid("bo@acme.example"), "bo@acme.example")
    )
    later = poll(engine)
    assert (later.read, later.replies, later.stored) == (1, 1, 1)
    assert len(stored(engine)) == 8


def test_a_reply_stops_the_sequence_by_the_account_rules_and_an_auto_reply_does_not(
    engine: Engine, people: dict, imap_server: Dovecot, user: str
) -> None:
    from core.campaign_file import AccountRules, Step
    from stages.delivery.send_rules import account_holds, stop_reasons

    imap_server.append(
        user,
        samples.reply("<re@acme.example>", mid("ana@acme.example"), "ana@acme.example"),
        samples.auto_reply("<ooo@globex.example>", mid("fay@globex.example"), "fay@globex.example"),
    )
    poll(engine)

    rows = [
        {"contact_id": people[email][0], "account_id": people[email][1], "stage": "aware"}
        for email in (
            "ana@acme.example",
            "cy@acme.example",
            "fay@globex.example",
            "dee@globex.example",
        )
    ]
    stopped = stop_reasons(engine, 1, Step(id="follow-up", template="intro"), rows)
    assert stopped == {people["ana@acme.example"][0]: "stopped_replied"}
    skip, defer = account_holds(engine, AccountRules(on_reply="stop"), rows, utcnow())
    assert skip == {people["cy@acme.example"][0]: "account_replied"}  # ana's colleague
    assert defer == {}  # fay's out-of-office holds nobody at globex
    _, delayed = account_holds(engine, AccountRules(on_reply="delay"), rows, utcnow())
    assert set(delayed) == {people["cy@acme.example"][0]}


def test_bad_mail_gets_a_clear_log_line_and_the_rest_is_stored(
    engine: Engine,
    people: dict,
    imap_server: Dovecot,
    user: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("ABM_IMAP_MAX_BYTES", "100000")
    imap_server.append(
        user,
        samples.malformed_dsn("<broken@mx>", mid("bo@acme.example"), "bo@acme.example"),
        samples.huge_reply(
            "<huge@acme.example>", mid("ana@acme.example"), "ana@acme.example", 400_000
        ),
        samples.latin1_reply("<latin@acme.example>", mid("gus@acme.example"), "gus@acme.example"),
        samples.dsn("<dsn@mx>", mid("bo@acme.example"), "bo@acme.example"),
    )
    with caplog.at_level(logging.INFO, logger="stages.engagement.mailbox_poll"):
        report = poll(engine)

    lines = [record.getMessage() for record in caplog.records]
    assert any("UID 1" in line and "message/delivery-status" in line for line in lines), lines
    assert any("UID 2" in line and "over ABM_IMAP_MAX_BYTES" in line for line in lines), lines
    assert any("UID 3" in line and "not UTF-8" in line and "Subject" in line for line in lines)
    assert PASSWORD not in caplog.text
    assert (report.malformed, report.oversized, report.replies, report.hard_bounces) == (1, 1, 2, 1)
    types = sorted((row.type, row.provider_event_id) for row in stored(engine))
    assert types == [
        ("bounce", "<dsn@mx>:bo@acme.example"),
        ("reply", "<huge@acme.example>"),
        ("reply", "<latin@acme.example>"),
    ]
    assert poll(engine).stored == 0


def _replies(count: int) -> list[bytes]:
    return [
        samples.reply(f"<r{n}@acme.example>", mid("ana@acme.example"), "ana@acme.example")
        for n in range(count)
    ]


def test_a_connection_dropped_mid_fetch_is_resumed_without_loss_or_double_counting(
    engine: Engine,
    people: dict,
    imap_server: Dovecot,
    user: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    imap_server.append(user, *_replies(20))
    with DropProxy(("127.0.0.1", imap_server.port), after=8, drops=1) as proxy:
        monkeypatch.setenv("ABM_IMAP_URL", imap_server.url(user, port=proxy.port))
        with caplog.at_level(logging.WARNING, logger="stages.engagement.mailbox_poll"):
            report = poll(engine, batch_size=5, retry_wait=0)
    assert proxy.dropped == 1 and report.reconnects == 1
    [line] = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    # cut in the second batch's FETCH: the first batch was stored, the poll resumed after it
    assert "during UID FETCH" in line and "reconnecting" in line and line.endswith(":5")
    assert PASSWORD not in line
    assert not report.incomplete and report.problems == []
    assert report.stored == 20 and len({row.provider_event_id for row in stored(engine)}) == 20
    assert imap_server.flagged(user, FLAG) == list(range(1, 21))


def test_a_server_that_keeps_dropping_is_a_clear_problem_and_the_next_poll_resumes(
    engine: Engine,
    people: dict,
    imap_server: Dovecot,
    user: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    imap_server.append(user, *_replies(12))
    with DropProxy(("127.0.0.1", imap_server.port), after=[6, 1], drops=1000) as proxy:
        monkeypatch.setenv("ABM_IMAP_URL", imap_server.url(user, port=proxy.port))
        with caplog.at_level(logging.WARNING, logger="stages.engagement.mailbox_poll"):
            cut = poll(engine, batch_size=4, retry_wait=0, reconnects=2)
    assert cut.incomplete and cut.reconnects == 2
    [problem] = cut.problems
    assert "dropped" in problem and "resume" in problem and PASSWORD not in problem
    assert cut.stored == 4  # the first batch, before the first cut; stored once

    monkeypatch.setenv("ABM_IMAP_URL", imap_server.url(user))
    rest = poll(engine)
    assert cut.stored + rest.stored == 12 and not rest.incomplete
    assert len(stored(engine)) == 12
    assert poll(engine).stored == 0


def test_an_unreachable_server_or_a_wrong_password_is_an_error_without_the_password(
    engine: Engine, imap_server: Dovecot, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connectors.email.imap_mailbox import MailboxUnavailable

    monkeypatch.setenv("ABM_IMAP_URL", imap_server.url(user, port=free_port()))
    with pytest.raises(MailboxUnavailable, match="cannot connect") as refused:
        poll(engine)
    # a Dovecot of its own: after a failed login, Dovecot delays the next logins from the
    # same address for seconds, which would slow every later test
    with dovecot() as private:
        monkeypatch.setenv("ABM_IMAP_URL", private.url(user).replace(PASSWORD, "wrong-Pass"))
        with pytest.raises(MailboxUnavailable, match="refused the login") as login:
            poll(engine)
    for caught in (refused, login):
        assert PASSWORD not in str(caught.value) and "wrong-Pass" not in str(caught.value)


def test_a_folder_recreated_with_a_new_uidvalidity_is_read_again_but_stored_once(
    engine: Engine, people: dict, imap_server: Dovecot, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABM_IMAP_URL", imap_server.url(user, folder="Bounces%20%26%20Replies"))
    mails = everything()[:3]
    imap_server.append(user, *mails, folder="Bounces &- Replies")
    first = poll(engine)
    assert (first.read, first.stored) == (3, 3)
    imap_server.recreate(user, "Bounces &- Replies")
    imap_server.append(user, *mails, folder="Bounces &- Replies")
    again = poll(engine)
    assert (again.read, again.stored, again.already_stored) == (3, 0, 3)
    assert len(stored(engine)) == 3


def test_the_command_polls_once_over_tls_and_exits_1_on_a_problem(
    sqlite_url: str,
    people_sqlite: None,
    imap_server: Dovecot,
    user: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("ABM_IMAP_CA_FILE", str(imap_server.cert))
    monkeypatch.setenv("ABM_IMAP_URL", imap_server.url(user, tls="implicit"))
    imap_server.append(user, *everything()[:2])
    code, out, err = run_abm(capsys, monkeypatch, "engagement", "mailbox", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["read"], result["replies"], result["hard_bounces"], result["stored"]) == (
        2,
        1,
        1,
        2,
    )
    assert PASSWORD not in out + err

    monkeypatch.setenv("ABM_IMAP_URL", imap_server.url(user, tls="starttls"))
    reset_settings()
    imap_server.append(
        user, samples.malformed_dsn("<b@mx>", mid("bo@acme.example"), "bo@acme.example")
    )
    code, out, err = run_abm(capsys, monkeypatch, "engagement", "mailbox")
    assert code == 1
    assert "malformed=1" in out and "message/delivery-status" in err
    assert PASSWORD not in out + err

    monkeypatch.delenv("ABM_IMAP_URL")
    reset_settings()
    code, _, err = run_abm(capsys, monkeypatch, "engagement", "mailbox")
    assert code == 2 and "ABM_IMAP_URL" in err


@pytest.fixture
def people_sqlite(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.db import get_engine

    monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
    reset_settings()
    add_people(get_engine(sqlite_url))


def test_the_flow_polls_the_mailbox_and_without_a_mailbox_does_nothing(
    sqlite_url: str, people_sqlite: None, imap_server: Dovecot, user: str, monkeypatch
) -> None:
    from prefect.logging import disable_run_logger

    from flows.scheduled import poll_mailbox

    imap_server.append(user, *everything()[:2])
    with disable_run_logger():
        result = poll_mailbox.fn()
        assert (result["read"], result["stored"]) == (2, 2)
        monkeypatch.delenv("ABM_IMAP_URL")
        reset_settings()
        idle = poll_mailbox.fn()
    assert idle["read"] == 0 and any("ABM_IMAP_URL" in note for note in idle["notes"])


def test_the_mailbox_bench_measures_a_poll_of_every_kind(
    imap_server: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO))  # `python -m bench.mailbox` runs from the checkout
    from bench.mailbox import measure

    result = measure(200)  # its own Dovecot, database and mailbox
    assert result["read"] == 200 and result["by_kind"]["unmatched"] == 0
    assert result["stored"] == 190  # all but the newsletters
    assert result["mailbox_messages_per_s"] > 0 and result["second_poll_read"] == 0
