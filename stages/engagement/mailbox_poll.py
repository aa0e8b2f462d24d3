"""Reading the monitored mailbox (ABM_IMAP_URL) once: what `abm engagement mailbox` and the
`poll-mailbox` flow run. For SMTP users, whose replies, bounces and complaints come back
as mail rather than as a provider's webhook.

Each batch of messages (one `UID FETCH` for many UIDs) is classified (`mailbox.classify`),
matched to our messages through the Message-IDs it names (else to our people by address),
and stored as events in one transaction that also applies suppressions and rolls up the
accounts touched (`store_events`): `reply`, `auto_reply` (stops nothing), `bounce` (hard:
suppresses), `soft_bounce` (only counts), `spam_report` (suppresses) and `delivered`. A
message that names one of our messages a crash left `uncertain` settles it as sent: the
report, complaint or answer proves it left.

What was processed is marked twice: the folder's UIDVALIDITY and last UID are stored as a
cursor (`sync_cursor`, as the LinkedIn sync does) after each batch's events are committed,
and the server gets the keyword ABM_IMAP_PROCESSED_FLAG on the batch. Every event's id is
the message's own Message-ID (or a digest of it), so a message read again, after a dropped
connection between the commit and the cursor or in a folder recreated with a new
UIDVALIDITY, is never stored twice. A dropped connection is reconnected and the poll resumes
from the cursor; when it keeps dropping, the report says so and the next poll resumes."""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from connectors.email.imap_mailbox import (
    Fetched,
    ImapMailbox,
    ImapUrl,
    MailboxDropped,
    MailboxError,
    MailboxUnavailable,
)
from core.errors import ConfigError
from core.settings import Settings
from models.cursors import read_cursor, write_cursor
from models.db import chunked
from models.tables import utcnow
from stages.delivery.uncertain import mark_sent_by_message_id
from stages.engagement.ingest import _ledger_matches, _people
from stages.engagement.mailbox import Classified, classify
from stages.engagement.rollup import EngagementRules, engagement_rules_from, store_events

log = logging.getLogger(__name__)
PROVIDER = "imap"
BATCH = 200
RECONNECTS = 3
SETTLED_BECAUSE = "settled by mail in the monitored mailbox that names it (a report or answer)"
EVENT_TYPE = {"hard_bounce": "bounce", "soft_bounce": "soft_bounce", "delivered": "delivered"}


@dataclass
class MailboxReport:
    """One poll: messages read by kind, events stored, and what went wrong, in words."""

    mailbox: str = ""
    read: int = 0
    replies: int = 0
    auto_replies: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    delivered: int = 0
    complaints: int = 0
    other: int = 0
    malformed: int = 0
    unmatched: int = 0
    oversized: int = 0
    stored: int = 0
    already_stored: int = 0
    reconciled: int = 0
    reconnects: int = 0
    cursor: str | None = None
    incomplete: bool = False
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cursor_source(url: ImapUrl) -> str:
    """The sync_cursor row of one account's folder (80 characters at most)."""
    source = f"imap:{url.user}@{url.host}:{url.port}/{url.folder}"
    if len(source) <= 80:
        return source
    return "imap:" + hashlib.sha256(source.encode()).hexdigest()[:40]


def mailbox_from(settings: Settings, timeout: float = 60.0) -> ImapMailbox:
    """The mailbox ABM_IMAP_URL names; ConfigError naming the setting otherwise."""
    if not settings.imap_url:
        raise ConfigError(
            "no mailbox is configured: set ABM_IMAP_URL=imaps://user:password@host:993/INBOX "
            "(the folder replies, bounces and complaints arrive in)"
        )
    try:
        url = ImapUrl.parse(settings.imap_url)
    except ConfigError as exc:
        raise ConfigError(f"ABM_IMAP_URL: {exc}") from None
    context = None
    if settings.imap_ca_file is not None:
        try:
            context = ssl.create_default_context(cafile=str(settings.imap_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"ABM_IMAP_CA_FILE: cannot use {settings.imap_ca_file}: {exc}"
            ) from None
    return ImapMailbox(url, timeout=timeout, ssl_context=context)


def poll_mailbox(
    engine: Engine,
    settings: Settings,
    *,
    rules: EngagementRules | None = None,
    batch_size: int = BATCH,
    reconnects: int = RECONNECTS,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
) -> MailboxReport:
    """Read what is new in the mailbox since the stored cursor, store it, move the cursor.

    MailboxUnavailable when the first connection cannot be made or the login is refused
    (nothing read). A connection that drops is made again, up to `reconnects` times, and the
    poll resumes from the cursor; past that the report is `incomplete`, with the problem."""
    box = mailbox_from(settings, timeout)
    rules = rules or engagement_rules_from(settings)
    report = MailboxReport(mailbox=str(box.url))
    attempt = 0
    while True:
        try:
            with box:
                _poll(engine, settings, box, report, rules, batch_size)
            return report
        except MailboxDropped as exc:
            if attempt >= reconnects:
                return _give_up(report, f"{exc}; gave up after {attempt} reconnect(s)")
            attempt += 1
            report.reconnects += 1
            log.warning(
                "%s; reconnecting (%d of %d) to resume after the cursor %s",
                exc,
                attempt,
                reconnects,
                report.cursor or "(none yet)",
            )
            time.sleep(retry_wait * attempt)
        except MailboxUnavailable as exc:
            if attempt == 0:
                raise
            return _give_up(report, f"{exc}, reconnecting after a dropped connection")


def _give_up(report: MailboxReport, problem: str) -> MailboxReport:
    problem += (
        f": what was read before is stored once; the next poll will resume after the cursor "
        f"{report.cursor or '(none yet)'}"
    )
    log.error("%s", problem)
    report.incomplete = True
    report.problems.append(problem)
    return report


def _note(report: MailboxReport, text: str) -> None:
    if text not in report.notes:
        log.info("%s", text)
        report.notes.append(text)


def _poll(
    engine: Engine,
    settings: Settings,
    box: ImapMailbox,
    report: MailboxReport,
    rules: EngagementRules,
    batch_size: int,
) -> None:
    folder = box.select()
    source = cursor_source(box.url)
    stored = read_cursor(engine, source)
    validity, _, last = (stored or "").partition(":")
    flag = settings.imap_processed_flag or None
    if flag and not folder.keeps_keywords:
        _note(
            report,
            f"{folder.name}: the server does not keep keywords here (read-only, or no \\* in "
            f"PERMANENTFLAGS), so nothing is marked {flag}; the stored UID cursor alone says "
            "what was read",
        )
    marking = flag if flag and folder.keeps_keywords else None
    if stored and validity == str(folder.uidvalidity):
        last_uid = int(last)
        uids = box.uids_after(last_uid)
    else:
        if stored:
            _note(
                report,
                f"{folder.name}: UIDVALIDITY changed ({validity} -> {folder.uidvalidity}), "
                "the folder was recreated or restored: its messages"
                + (f" not marked {marking}" if marking else "")
                + " are read again, and what was stored before is not stored twice",
            )
        last_uid = 0
        uids = box.uids_without(marking)
    report.cursor = f"{folder.uidvalidity}:{last_uid}"
    if not uids and stored != report.cursor:
        write_cursor(engine, source, report.cursor)
    for batch in chunked(uids, batch_size):
        fetched = list(box.fetch(batch, settings.imap_max_bytes))
        _store(engine, folder.name, fetched, report, rules)
        report.cursor = f"{folder.uidvalidity}:{max(batch)}"
        write_cursor(engine, source, report.cursor)
        if marking:
            try:
                box.mark(batch, marking)
            except MailboxDropped:
                raise
            except MailboxError as exc:  # NO to STORE: the cursor still holds
                _note(report, f"{exc}; the stored UID cursor alone says what was read")
                marking = None


def _store(
    engine: Engine,
    folder: str,
    fetched: list[Fetched],
    report: MailboxReport,
    rules: EngagementRules,
) -> None:
    """Classify, match and store one batch: events, suppressions and rollup in one
    transaction; uncertain messages it names become sent first."""
    found = [(mail, classify(mail.data)) for mail in fetched]
    ids: set[str] = set()
    addresses: set[str] = set()
    for mail, kind in found:
        _log_input(folder, mail, kind, report)
        ids.update(kind.message_ids)
        ids.add(kind.key)
        addresses.update(
            a for a in (kind.sender, kind.reported, *(r.address for r in kind.recipients)) if a
        )
    ledger = _ledger_matches(engine, ids)
    people = _people(engine, addresses)
    events: list[dict[str, Any]] = []
    settle: set[str] = set()
    for mail, kind in found:
        report.read += 1
        when = mail.received_at or utcnow()
        before = len(events)
        if kind.kind in ("reply", "auto_reply"):
            if kind.key in ledger:  # our own message (a copy or a bounced-back original)
                report.other += 1
                continue
            match, ours = _match(ledger, people, kind.message_ids, kind.sender, strict=False)
            report.replies += kind.kind == "reply"
            report.auto_replies += kind.kind == "auto_reply"
            if match:
                data = {"reason": kind.reason} if kind.reason else {}
                events.append(_event(kind.kind, kind.key, when, match, ours, data))
        elif kind.kind == "bounce":
            for index, recipient in enumerate(kind.recipients):
                outcome = recipient.outcome
                report.hard_bounces += outcome == "hard_bounce"
                report.soft_bounces += outcome == "soft_bounce"
                report.delivered += outcome == "delivered"
                match, ours = _match(
                    ledger, people, kind.message_ids, recipient.address, strict=True
                )
                if match is None:
                    continue
                data = {"status": recipient.status, "action": recipient.action, "via": "dsn"}
                if recipient.diagnostic:
                    data["reason"] = recipient.diagnostic
                event_id = f"{kind.key}:{recipient.address or index}"
                events.append(_event(EVENT_TYPE[outcome], event_id, when, match, ours, data))
        elif kind.kind == "complaint":
            report.complaints += 1
            match, ours = _match(ledger, people, kind.message_ids, kind.reported, strict=False)
            if match:
                data = {"feedback_type": kind.feedback_type, "via": "arf"}
                events.append(_event("spam_report", kind.key, when, match, ours, data))
        elif kind.kind == "malformed":
            report.malformed += 1
            continue
        else:
            report.other += 1
            continue
        new = events[before:]
        settle.update(event["message_id"] for event in new if event["message_id"])
        if not new:
            report.unmatched += 1
            log.info(
                "%s UID %d (%s): a %s that names none of our messages or people: not stored",
                folder,
                mail.uid,
                kind.key,
                kind.kind.replace("_", "-"),
            )
    if settle:
        report.reconciled += mark_sent_by_message_id(engine, settle, SETTLED_BECAUSE)
    new = store_events(engine, events, rules)
    report.stored += new
    report.already_stored += len(events) - new


def _match(
    ledger: dict[str, tuple],
    people: dict[str, tuple[int, int]],
    message_ids: tuple[str, ...],
    address: str | None,
    strict: bool,
) -> tuple[tuple[int, int, int | None] | None, str | None]:
    """((contact, account, campaign), our Message-ID) for the message it names, the latest
    first; else (contact, account, None) for the address. `strict` (a delivery report's
    recipient): a named message of ours counts only if it went to that address."""
    person = people.get(address) if address else None
    for message_id in reversed(message_ids):
        if message_id in ledger:
            contact_id, account_id, campaign_id, _ = ledger[message_id]
            if strict and person is not None and person[0] != contact_id:
                break
            return (contact_id, account_id, campaign_id), message_id
    if person is not None:
        return (person[0], person[1], None), None
    return None, None


def _event(
    kind: str,
    event_id: str,
    when: datetime,
    match: tuple[int, int, int | None],
    message_id: str | None,
    data: dict[str, Any],
) -> dict[str, Any]:
    contact_id, account_id, campaign_id = match
    if len(event_id) > 255:
        event_id = "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()
    return {
        "provider": PROVIDER,
        "provider_event_id": event_id,
        "type": kind,
        "channel": "email",
        "occurred_at": when,
        "account_id": account_id,
        "contact_id": contact_id,
        "campaign_id": campaign_id,
        "message_id": message_id,
        "data": data,
    }


def _log_input(folder: str, mail: Fetched, kind: Classified, report: MailboxReport) -> None:
    """One clear line for each message that is not as it should be."""
    where = f"{folder} UID {mail.uid} ({kind.key})"
    if mail.truncated:
        report.oversized += 1
        log.warning(
            "%s: %s bytes, over ABM_IMAP_MAX_BYTES (%s): classified by its first %s bytes only",
            where,
            f"{mail.size:,}",
            f"{len(mail.data):,}",
            f"{len(mail.data):,}",
        )
    if kind.non_utf8_headers:
        log.warning(
            "%s: header(s) %s not UTF-8 (raw 8-bit bytes): read as Windows-1252",
            where,
            ", ".join(kind.non_utf8_headers),
        )
    if kind.kind == "malformed":
        problem = f"{where}: {kind.reason}"
        log.warning("%s", problem)
        report.problems.append(problem)
    elif kind.reason and kind.kind == "bounce":
        log.warning("%s: %s", where, kind.reason)
