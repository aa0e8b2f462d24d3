"""What a message in the monitored mailbox is: a pure function from its bytes to one record.

- `bounce`: a delivery status notification (RFC 3464: multipart/report with
  report-type=delivery-status and a message/delivery-status part), one `Recipient` per
  per-recipient block with its Action and Status. `failed` with a 5.x.x status is a hard
  bounce, except the statuses that are about the message or the sender rather than the
  address (x.7.x policy and security blocks, x.2.2 mailbox full, x.2.3 and x.3.4 too large),
  which, like `delayed` and every 4.x.x, are soft bounces; `delivered`, `relayed` and
  `expanded` are deliveries. The Message-IDs it is about come from the returned original
  (text/rfc822-headers or message/rfc822: Message-ID and X-ABM-Message-Id).
- `complaint`: a feedback report (RFC 5965 ARF: report-type=feedback-report, a
  message/feedback-report part) whose Feedback-Type is abuse, fraud or other; not-spam,
  virus and auth-failure reports are `other`.
- `auto_reply` (RFC 3834): Auto-Submitted other than `no`, X-Autoreply, X-Autorespond,
  X-Auto-Response-Suppress, Precedence auto_reply / bulk / junk, or an out-of-office subject.
  Not a reply: it stops nothing.
- `reply`: anything else a person wrote; In-Reply-To and References name what it answers.
- `other`: read receipts and other reports, mailing-list mail: nothing to store.
- `malformed`: it says it is a report and is not a usable one, or it comes from a mail
  system (MAILER-DAEMON, postmaster) without being a report: nothing is guessed, `reason`
  says what is wrong.

`key` is the message's own Message-ID, or a digest of its bytes when it has none usable:
the event id under which whatever it causes is stored once, however often it is read."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.policy import compat32
from email.utils import parseaddr
from typing import Literal

Kind = Literal["reply", "auto_reply", "bounce", "complaint", "other", "malformed"]
Outcome = Literal["hard_bounce", "soft_bounce", "delivered"]
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "other"})
AUTO_PRECEDENCE = frozenset({"auto_reply", "bulk", "junk"})
AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress")
MAIL_SYSTEMS = frozenset({"mailer-daemon", "postmaster"})
MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}@[^<>\s]{1,250}>")
_STATUS = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_OUT_OF_OFFICE = re.compile(
    r"out of (?:the )?office|\booo\b|automatic reply|auto[- ]?reply|auto[- ]?response|"
    r"autosvar|vacation reply|on vacation|away from (?:the )?office|abwesenheitsnotiz|"
    r"automatische antwort|réponse automatique|absent du bureau|respuesta automática|"
    r"fuera de la oficina|risposta automatica|fuori ufficio|automatisch antwoord|"
    r"resposta automática|automatyczna odpowiedź",
    re.IGNORECASE,
)
DIAGNOSTIC_CHARS = 300


@dataclass(frozen=True)
class Recipient:
    """One per-recipient block of a delivery report."""

    address: str | None
    action: str
    status: str
    diagnostic: str = ""

    @property
    def outcome(self) -> Outcome:
        klass, subject, detail = self.status.split(".")
        if self.action in ("delivered", "relayed", "expanded") or klass == "2":
            return "delivered"
        about_the_message = subject == "7" or (subject, detail) in {
            ("2", "2"),
            ("2", "3"),
            ("3", "4"),
        }
        if self.action == "failed" and klass == "5" and not about_the_message:
            return "hard_bounce"
        return "soft_bounce"


@dataclass(frozen=True)
class Classified:
    """What one message is; `message_ids` are the Message-IDs it refers to (ours, if any,
    among them), the most specific last."""

    kind: Kind
    key: str
    message_ids: tuple[str, ...] = ()
    sender: str | None = None
    subject: str = ""
    recipients: tuple[Recipient, ...] = ()
    feedback_type: str | None = None
    reported: str | None = None
    reason: str = ""
    non_utf8_headers: tuple[str, ...] = ()


def classify(raw: bytes) -> Classified:
    """The record for one message's bytes (all of it, or its first part when it was too
    large to read whole: the headers and reports come first). Never raises."""
    try:
        message = BytesParser(policy=compat32).parsebytes(raw)
        return _classify(message, raw)
    except Exception as exc:  # the parser is lenient: what it still raises is bad input
        return Classified(
            "malformed", _digest(raw), reason=f"not a readable mail message: {exc!r}"[:300]
        )


def _classify(message: Message, raw: bytes) -> Classified:
    common = {
        "key": own_key(message, raw),
        "sender": _address(header_text(message, "From")),
        "subject": header_text(message, "Subject"),
        "non_utf8_headers": non_utf8_headers(raw),
    }
    content_type = message.get_content_type()
    if content_type == "multipart/report":
        report_type = _param(message, "report-type")
        if report_type == "delivery-status":
            return _delivery_report(message, common)
        if report_type == "feedback-report":
            return _feedback_report(message, common)
        return Classified(
            "other",
            reason=f"a {report_type or 'untyped'} report (a read receipt or the like): not a reply",
            **common,
        )
    if content_type == "message/delivery-status":
        return _delivery_report(message, common)
    sender = common["sender"]
    if sender and sender.split("@")[0] in MAIL_SYSTEMS:
        return Classified(
            "malformed",
            reason=f"from a mail system ({sender}) but not an RFC 3464 delivery report "
            "(multipart/report; report-type=delivery-status): not counted, read it in the "
            "mailbox",
            **common,
        )
    references = _references(message)
    automatic = auto_reply_reason(message, common["subject"])
    if automatic:
        return Classified("auto_reply", message_ids=references, reason=automatic, **common)
    listed = header_text(message, "Precedence").lower() == "list" or message.get("List-Id")
    if listed and not references:
        return Classified("other", reason="mailing-list mail", **common)
    return Classified("reply", message_ids=references, **common)


def auto_reply_reason(message: Message, subject: str) -> str | None:
    """Why this message was written by a machine on a person's behalf (RFC 3834 and the
    headers and subjects mail programs use in its stead), or None."""
    submitted = header_text(message, "Auto-Submitted").split(";")[0].strip().lower()
    if submitted and submitted != "no":
        return f"Auto-Submitted: {submitted}"
    for name in AUTO_HEADERS:
        if message.get(name) is not None:
            return f"{name} header"
    precedence = header_text(message, "Precedence").strip().lower()
    if precedence in AUTO_PRECEDENCE:
        return f"Precedence: {precedence}"
    if _OUT_OF_OFFICE.search(subject):
        return f"out-of-office subject {subject[:80]!r}"
    return None


def _delivery_report(message: Message, common: dict) -> Classified:
    parts = [p for p in message.walk() if p.get_content_type() == "message/delivery-status"]
    if not parts:
        return Classified(
            "malformed",
            reason="a delivery report (multipart/report; report-type=delivery-status) "
            "without a message/delivery-status part: not counted",
            **common,
        )
    recipients, skipped = [], 0
    for block in _blocks(parts[0]):
        action = header_text(block, "Action").split()[0:1]
        if not action:
            continue  # the per-message block, or a stray one
        status = _STATUS.match(header_text(block, "Status"))
        if status is None:
            skipped += 1
            continue
        address = _recipient_address(block)
        diagnostic = header_text(block, "Diagnostic-Code")[:DIAGNOSTIC_CHARS]
        recipients.append(
            Recipient(address, action[0].lower(), ".".join(status.groups()), diagnostic)
        )
    if not recipients:
        return Classified(
            "malformed",
            reason="a delivery report whose message/delivery-status part names no recipient "
            f"with an Action and a valid Status{f' ({skipped} without one)' if skipped else ''}"
            ": not counted",
            **common,
        )
    return Classified(
        "bounce",
        message_ids=_original_ids(message),
        recipients=tuple(recipients),
        reason=f"{skipped} recipient block(s) without a valid Status skipped" if skipped else "",
        **common,
    )


def _feedback_report(message: Message, common: dict) -> Classified:
    parts = [p for p in message.walk() if p.get_content_type() == "message/feedback-report"]
    if not parts:
        return Classified(
            "malformed",
            reason="a feedback report (multipart/report; report-type=feedback-report) "
            "without a message/feedback-report part: not counted",
            **common,
        )
    blocks = _blocks(parts[0])
    fields = blocks[0] if blocks else Message()
    feedback_type = header_text(fields, "Feedback-Type").strip().lower()
    if not feedback_type:
        return Classified(
            "malformed", reason="a feedback report without a Feedback-Type: not counted", **common
        )
    original = _original(message)
    reported = _address(header_text(fields, "Original-Rcpt-To")) or (
        _address(header_text(original, "To")) if original is not None else None
    )
    kind: Kind = "complaint" if feedback_type in COMPLAINT_TYPES else "other"
    return Classified(
        kind,
        message_ids=_original_ids(message),
        feedback_type=feedback_type,
        reported=reported,
        reason="" if kind == "complaint" else f"a {feedback_type} feedback report: no complaint",
        **common,
    )


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    text = payload if isinstance(payload, str) else ""
    return [
        HeaderParser(policy=compat32).parsestr(chunk)
        for chunk in re.split(r"\r?\n\r?\n", text)
        if chunk.strip()
    ]


def _original(message: Message) -> Message | None:
    """The returned original message (or its headers) of a report."""
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if content_type in ("text/rfc822-headers", "message/rfc822-headers"):
            payload = part.get_payload(decode=True) or b""
            return BytesParser(policy=compat32).parsebytes(payload, headersonly=True)
    return None


def _original_ids(message: Message) -> tuple[str, ...]:
    original = _original(message)
    if original is None:
        return ()
    found = []
    for name in ("X-ABM-Message-Id", "Message-ID"):
        found += MESSAGE_ID.findall(header_text(original, name))
    return tuple(dict.fromkeys(found))


def _references(message: Message) -> tuple[str, ...]:
    """Message-IDs this message answers: References in order, In-Reply-To last (the one
    it directly answers)."""
    found = MESSAGE_ID.findall(header_text(message, "References"))
    found += MESSAGE_ID.findall(header_text(message, "In-Reply-To"))
    return tuple(reversed(dict.fromkeys(reversed(found))))


def _recipient_address(block: Message) -> str | None:
    for name in ("Final-Recipient", "Original-Recipient"):
        value = header_text(block, name)
        _, _, address = value.rpartition(";")
        found = _address(address)
        if found:
            return found
    return None


def _param(message: Message, name: str) -> str:
    value = message.get_param(name)
    if isinstance(value, tuple):  # RFC 2231 form
        value = value[2]
    return str(value or "").strip().strip('"').lower()


def _address(text: str | None) -> str | None:
    if not text:
        return None
    address = parseaddr(text)[1].strip().strip("<>").strip().lower()
    return address if "@" in address and len(address) <= 320 else None


def own_key(message: Message, raw: bytes) -> str:
    """The message's own Message-ID, or a digest of its bytes."""
    found = MESSAGE_ID.search(header_text(message, "Message-ID"))
    if found and found[0].isascii():
        return found[0]
    return _digest(raw)


def _digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def header_text(message: Message, name: str) -> str:
    """A header's value as clean text: RFC 2047 words decoded, raw 8-bit bytes read as UTF-8
    or else Windows-1252, no NUL, line breaks or lone surrogates (so it can be stored)."""
    value = message.get(name)
    if value is None:
        return ""
    try:
        chunks = decode_header(value)
    except Exception:  # a broken encoded word: show it as it is
        chunks = [(str(value), None)]
    parts = []
    for chunk, charset in chunks:
        parts.append(chunk if isinstance(chunk, str) else _decode(chunk, charset))
    return clean_text("".join(parts))


def _decode(data: bytes, charset: str | None) -> str:
    if charset and charset.lower() not in ("unknown-8bit", "us-ascii", "ascii"):
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def clean_text(text: str) -> str:
    """Text any database column can hold: bytes smuggled in as surrogates decoded, control
    characters dropped, line breaks folded into spaces."""
    try:
        text = _decode(text.encode("utf-8", "surrogateescape"), None)
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


def non_utf8_headers(raw: bytes) -> tuple[str, ...]:
    """Names of the headers whose raw bytes are not UTF-8 (RFC 6532 allows UTF-8 only)."""
    end = min((i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0), default=len(raw))
    head = raw[:end]
    if head.isascii():
        return ()
    names: list[str] = []
    current = ""
    for line in head.splitlines():
        if line[:1] not in (b" ", b"\t"):
            current = line.split(b":", 1)[0].decode("ascii", "replace").strip()
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            if current and current not in names:
                names.append(current)
    return tuple(names)
