"""SendGrid v3 Mail Send backend: many personalised messages per request, each arriving
exactly as rendered. Facts relied on and the batching decision: connectors/README.md.

Content is per request in Mail Send, personalisation per `personalizations` entry. Messages
rendered from one template differ in a few places (names, companies, the unsubscribe token),
so a request carries the shared text once, with a substitution tag where they differ, and
each personalization carries its own values. Shared links stay literal in the content, where
SendGrid's click tracking can rewrite them. Every message is rebuilt from its template and
values and compared with the original before it is sent this way; one that does not fit
(another template, a repeated recipient, more than 10,000 bytes of differences) goes to a
later request, sent literally when nothing else shares it.

Every request states its `tracking_settings` (the campaign's clicks and opens, SendGrid's own
unsubscribe link always off) and every message carries our Message-ID as a header and its
campaign, step and variant in `custom_args`, which come back on each event.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses
from typing import Any

import httpx

from connectors.email.attribution import (
    CAMPAIGN_HEADER,
    MESSAGE_ID_HEADER,
    STEP_HEADER,
    VARIANT_HEADER,
    Attribution,
    read_tracking,
)
from connectors.email.base import EmailBackend, SendResult
from connectors.http import ApiClient, ApiError
from core.errors import ConfigError

MAIL_SEND = "/v3/mail/send"
MAX_PERSONALIZATIONS = 1000  # spec: personalizations.maxItems; docs: 1,000 recipients/request
MAX_SUBSTITUTION_BYTES = 10_000  # spec: substitutions, per personalization
MAX_SCHEDULE_AHEAD = 72 * 3600  # spec: send_at "cannot be scheduled more than 72 hours"
SEND_AT_HEADER = "X-ABM-Send-At"
# Headers passed on as they are. Message-ID is not among those the spec says may not be
# set (`personalizations.headers`), so replies quote ours in In-Reply-To; X-ABM-Message-Id
# keeps it should a relay replace it. X-ABM-Send-At and X-ABM-Tracking are instructions to
# this backend and stay here.
FORWARDED_HEADERS = (
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Message-ID",
    CAMPAIGN_HEADER,
    STEP_HEADER,
    VARIANT_HEADER,
)
CREDENTIALS_HINT = " (check ABM_SENDGRID_API_KEY; the key needs the Mail Send permission)"
SENDER_HINT = (
    " (the From address is not a verified Sender Identity in SendGrid: verify it there, or "
    "set ABM_SENDER or the campaign's `sender` to one that is)"
)


def refusal(error: ApiError) -> str | None:
    """Why SendGrid refuses us, not a recipient (so no later message would get through), or
    None. From SendGrid's v3 Mail Send docs: 401 is a missing or wrong key, 403 a key
    without the Mail Send permission or a From address that is not a verified Sender
    Identity (it names `from`), 413 a request too large; a 400 that does not blame only
    personalizations comes from our settings or content, not from one person."""
    fields = {(field or "").split(".")[0].split("[")[0] for field, _ in error.errors}
    if error.status == 403 and "from" in fields:
        return str(error).replace("credentials rejected", "sender refused") + SENDER_HINT
    if error.status in (401, 403):
        return str(error) + CREDENTIALS_HINT
    if error.status == 413:
        return f"{error} (a request over SendGrid's 30 MB limit: smaller messages)"
    if error.status == 400 and fields != {"personalizations"}:
        return f"{error} (a setting, not a recipient: check ABM_SENDER and the campaign file)"
    return None


PARTS = ("text/plain", "text/html")  # SendGrid wants text/plain first
# Bodies of one template join a request only when this similar; the rest start their own.
MIN_SIMILARITY = 0.5
_TOKENS = re.compile(r"<[^>]*>|[^<\n]+|\n|<")  # tags, text runs, line ends
_ADDRESS = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+")
_BLAMED_FIELD = re.compile(r"personalizations(?:\.|\[)(\d+)")


class _Unsendable(ValueError):
    """A message this backend cannot turn into a valid request."""


@dataclass(frozen=True)
class _Mail:
    """What SendGrid needs from one message."""

    index: int
    message_id: str
    sender: dict[str, str]
    to: dict[str, str]
    subject: str
    bodies: tuple[str | None, str | None]
    headers: dict[str, str]
    custom_args: dict[str, str]
    category: str | None
    send_at: int | None
    tracking: tuple[bool, bool]  # clicks, opens
    reply_to: tuple[tuple[str, str], ...] = ()  # (email, name), in the header's order

    @property
    def request_key(self) -> tuple[object, ...]:
        """What every message of one request must share."""
        shape = tuple(body is not None for body in self.bodies)
        sender = (self.sender["email"], self.sender.get("name"))
        return (*sender, self.reply_to, self.category, shape, self.tracking)


def _header_text(value: object) -> str:
    """A header as plain text: RFC 2047 words decoded, folding undone."""
    return " ".join(str(make_header(decode_header(str(value)))).split())


def _address(message: Message, header: str) -> dict[str, str]:
    value = message[header]
    pairs = getaddresses([str(value)]) if value else []
    if len(pairs) != 1 or not _ADDRESS.fullmatch(pairs[0][1]):
        raise _Unsendable(f"{header} must hold exactly one valid address, not {value!r}")
    name, email = pairs[0]
    # SendGrid rejects `,` and `;` in recipient names (Mail Send limitations).
    name = " ".join(re.sub(r"[,;]", " ", _header_text(name)).split())
    return {"email": email, "name": name} if name else {"email": email}


def _reply_to(message: Message) -> tuple[tuple[str, str], ...]:
    """Reply-To's addresses (a message sent as an account's owner has one): SendGrid takes
    them in `reply_to_list`, never as a personalization header."""
    value = message["Reply-To"]
    if not value:
        return ()
    pairs = getaddresses([str(value)])
    if not pairs or not all(_ADDRESS.fullmatch(email) for _, email in pairs):
        raise _Unsendable(f"Reply-To must hold valid addresses, not {value!r}")
    return tuple(
        (email, " ".join(re.sub(r"[,;]", " ", _header_text(name)).split())) for name, email in pairs
    )


def _bodies(message: Message) -> tuple[str | None, str | None]:
    found: dict[str, str | None] = dict.fromkeys(PARTS)
    for part in message.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        if kind not in found or part.get_content_disposition() == "attachment":
            raise _Unsendable(f"a {kind} part: this backend sends text and HTML only")
        if found[kind] is not None:
            raise _Unsendable(f"more than one {kind} part")
        payload = part.get_payload(decode=True) or b""
        try:
            found[kind] = payload.decode(part.get_content_charset() or "utf-8") or None
        except (LookupError, UnicodeDecodeError) as exc:
            raise _Unsendable(f"{kind} part cannot be decoded: {exc}") from None
    if not any(found.values()):
        raise _Unsendable("no text or HTML body")
    return found["text/plain"], found["text/html"]


def _send_at(message: Message, now: float) -> int | None:
    raw = message[SEND_AT_HEADER]
    if raw is None:
        return None
    try:
        send_at = int(str(raw).strip())
    except ValueError:
        raise _Unsendable(f"{SEND_AT_HEADER} {raw!r} is not a unix timestamp") from None
    if send_at < 0 or send_at > now + MAX_SCHEDULE_AHEAD:
        hours = (send_at - now) / 3600
        raise _Unsendable(
            f"{SEND_AT_HEADER} is {hours:.1f} h ahead; SendGrid schedules at most 72 h ahead"
        )
    return send_at


def _parse(index: int, message: Message, now: float) -> _Mail:
    message_id = " ".join(str(message["Message-ID"] or "").split())
    if not message_id:
        raise _Unsendable("no Message-ID")
    subject = _header_text(message["Subject"] or "")
    if not subject:
        raise _Unsendable("no Subject")
    category = _header_text(message[CAMPAIGN_HEADER] or "")[:255] or None
    headers = {h: " ".join(str(message[h]).split()) for h in FORWARDED_HEADERS if message[h]}
    tracking = read_tracking(message)
    return _Mail(
        index=index,
        message_id=message_id,
        sender=_address(message, "From"),
        to=_address(message, "To"),
        subject=subject,
        bodies=_bodies(message),
        headers={**headers, MESSAGE_ID_HEADER: message_id},
        custom_args=Attribution.of(message, message_id).args(),
        category=category,
        send_at=_send_at(message, now),
        tracking=(tracking.clicks, tracking.opens),
        reply_to=_reply_to(message),
    )


@dataclass(frozen=True)
class _Alignment:
    """Where one body agrees with the reference body of its request, token by token."""

    tokens: list[str]
    blocks: list[tuple[int, int, int]]  # (reference start, own start, length), then a sentinel

    @classmethod
    def identity(cls, tokens: list[str]) -> _Alignment:
        return cls(tokens, [(0, 0, len(tokens)), (len(tokens), len(tokens), 0)])

    @classmethod
    def of(cls, matcher: SequenceMatcher[str], tokens: list[str]) -> _Alignment:
        """Align `tokens` with the reference already set as the matcher's second sequence."""
        matcher.set_seq1(tokens)
        return cls(tokens, [(j, i, n) for i, j, n in matcher.get_matching_blocks()])

    def gaps(self) -> Iterator[tuple[int, int]]:
        """Reference ranges (start, end) where this body differs, insertions as start == end."""
        ref_end = own_end = 0
        for j, i, n in self.blocks:
            if j > ref_end or i > own_end:
                yield ref_end, j
            ref_end, own_end = j + n, i + n

    def changed(self) -> int:
        """Characters of this body outside the agreeing blocks."""
        matched = sum(len(t) for _, i, n in self.blocks for t in self.tokens[i : i + n])
        return sum(len(t) for t in self.tokens) - matched

    def own_start(self, ref_pos: int) -> int | None:
        """Own position of a slot starting at `ref_pos`: just after the agreeing token."""
        if ref_pos == 0:
            return 0
        return next((i + ref_pos - j for j, i, n in self.blocks if j < ref_pos <= j + n), None)

    def own_end(self, ref_pos: int, ref_length: int) -> int | None:
        """Own position of a slot ending at `ref_pos`: just before the agreeing token."""
        if ref_pos == ref_length:
            return len(self.tokens)
        return next((i + ref_pos - j for j, i, n in self.blocks if j <= ref_pos < j + n), None)


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _assemble(reference: list[str], slots: list[tuple[int, int]], fillers: list[str]) -> str:
    """The reference with each slot replaced by its filler (a tag, or one message's value)."""
    out, position = [], 0
    for (start, end), filler in zip(slots, fillers, strict=True):
        out += [*reference[position:start], filler]
        position = end
    return "".join(out + reference[position:])


@dataclass(frozen=True)
class _Batch:
    """One Mail Send request: shared content, and each member's substitution values."""

    content: list[dict[str, str]]
    members: list[tuple[_Mail, dict[str, str]]]

    def body(self, members: list[tuple[_Mail, dict[str, str]]], sandbox: bool) -> dict[str, Any]:
        first = members[0][0]
        clicks, opens = first.tracking
        body: dict[str, Any] = {
            "personalizations": [_personalization(m, values) for m, values in members],
            "from": first.sender,
            "content": self.content,
            "tracking_settings": {
                "click_tracking": {"enable": clicks, "enable_text": False},
                "open_tracking": {"enable": opens},
                "subscription_tracking": {"enable": False},
            },
        }
        if first.reply_to:
            body["reply_to_list"] = [
                {"email": email, "name": name} if name else {"email": email}
                for email, name in first.reply_to
            ]
        if first.category:
            body["categories"] = [first.category]
        if sandbox:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return body


def _personalization(mail: _Mail, substitutions: dict[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "to": [mail.to],
        "subject": mail.subject,
        "custom_args": mail.custom_args,
    }
    if mail.headers:
        entry["headers"] = mail.headers
    if mail.send_at is not None:
        entry["send_at"] = mail.send_at
    if substitutions:
        entry["substitutions"] = substitutions
    return entry


def _take_batch(pending: list[_Mail]) -> tuple[_Batch, list[_Mail]]:
    """The first pending message and every later one that can share its request; the rest."""
    reference = pending[0]
    parts = [p for p, body in enumerate(reference.bodies) if body is not None]
    ref_tokens = {p: _TOKENS.findall(reference.bodies[p] or "") for p in parts}
    matchers = {p: SequenceMatcher(None, [], ref_tokens[p], autojunk=False) for p in parts}
    members = [(reference, {p: _Alignment.identity(ref_tokens[p]) for p in parts})]
    recipients, rest = {reference.to["email"].lower()}, []
    for mail in pending[1:]:
        aligned = None
        if (
            mail.request_key == reference.request_key
            and len(members) < MAX_PERSONALIZATIONS
            and mail.to["email"].lower() not in recipients
        ):
            aligned = _align(matchers, mail)
        if aligned is None:
            rest.append(mail)
            continue
        members.append((mail, aligned))
        recipients.add(mail.to["email"].lower())

    nonce = secrets.token_hex(6)
    while True:
        slots = {p: _merge(_gaps(members, p)) for p in parts}
        tags = {p: [f"-abm{nonce}{'th'[p]}{k}-" for k in range(len(slots[p]))] for p in parts}
        values = [_values(ref_tokens, slots, tags, aligned) for _, aligned in members]
        misfits = {k for k, v in enumerate(values) if v is None}
        if not misfits:
            break
        if 0 in misfits:  # the reference only overflows when others widened the slots
            misfits = {max(range(1, len(members)), key=lambda k: _changed(members[k][1]))}
        rest += [members[k][0] for k in sorted(misfits)]
        members = [m for k, m in enumerate(members) if k not in misfits]

    content = [
        {"type": PARTS[p], "value": _assemble(ref_tokens[p], slots[p], tags[p])} for p in parts
    ]
    batch = _Batch(content, [(m, v or {}) for (m, _), v in zip(members, values, strict=True)])
    rest.sort(key=lambda m: m.index)
    return batch, rest


def _gaps(members: list[tuple[_Mail, dict[int, _Alignment]]], part: int) -> list[tuple[int, int]]:
    return [gap for _, aligned in members for gap in aligned[part].gaps()]


def _align(matchers: dict[int, SequenceMatcher[str]], mail: _Mail) -> dict[int, _Alignment] | None:
    """This message's alignment with the reference, or None when it is another template."""
    aligned = {}
    for p, matcher in matchers.items():
        tokens = _TOKENS.findall(mail.bodies[p] or "")
        matcher.set_seq1(tokens)
        if matcher.real_quick_ratio() < MIN_SIMILARITY or matcher.quick_ratio() < MIN_SIMILARITY:
            return None
        aligned[p] = _Alignment.of(matcher, tokens)
        if matcher.ratio() < MIN_SIMILARITY:
            return None
    if _changed(aligned) > MAX_SUBSTITUTION_BYTES // 2:
        return None
    return aligned


def _changed(aligned: dict[int, _Alignment]) -> int:
    return sum(a.changed() for a in aligned.values())


def _values(
    ref_tokens: dict[int, list[str]],
    slots: dict[int, list[tuple[int, int]]],
    tags: dict[int, list[str]],
    aligned: dict[int, _Alignment],
) -> dict[str, str] | None:
    """One message's substitution values, or None when they would not rebuild it exactly or
    would exceed SendGrid's size limit."""
    values: dict[str, str] = {}
    for p, alignment in aligned.items():
        fillers = []
        for start, end in slots[p]:
            own_start = alignment.own_start(start)
            own_end = alignment.own_end(end, len(ref_tokens[p]))
            if own_start is None or own_end is None or own_start > own_end:
                return None
            fillers.append("".join(alignment.tokens[own_start:own_end]))
        if _assemble(ref_tokens[p], slots[p], fillers) != "".join(alignment.tokens):
            return None
        values.update(zip(tags[p], fillers, strict=True))
    size = sum(len(k.encode()) + len(v.encode()) for k, v in values.items())
    return values if size <= MAX_SUBSTITUTION_BYTES else None


def _plan(mails: list[_Mail]) -> list[_Batch]:
    """Mail Send requests for `mails`: as few as the content and the limits allow."""
    batches, pending = [], list(mails)
    while pending:
        batch, pending = _take_batch(pending)
        batches.append(batch)
    return batches


def _blamed(error: ApiError, count: int) -> dict[int, str]:
    """Personalization index -> SendGrid's messages, when a 400 names only personalizations."""
    if error.status != 400 or not error.errors:
        return {}
    blamed: dict[int, list[str]] = {}
    for field, message in error.errors:
        found = _BLAMED_FIELD.match(field or "")
        if not found or int(found[1]) >= count:
            return {}
        blamed.setdefault(int(found[1]), []).append(message)
    return {k: "; ".join(messages) for k, messages in blamed.items()}


class SendGridBackend(EmailBackend):
    """SendGrid v3 Mail Send. Not idempotent: SendGrid does not de-duplicate on our
    Message-ID, so a message whose fate is unknown must not simply be sent again."""

    name = "sendgrid"
    idempotent = False
    batch_size = MAX_PERSONALIZATIONS

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.sendgrid.com",
        sandbox: bool = False,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key or not api_key.strip():
            raise ConfigError("ABM_SENDGRID_API_KEY is not set: the sendgrid backend needs it")
        self._api_key = api_key.strip()
        self.base_url = base_url
        self.sandbox = sandbox
        self._transport = transport
        self._sleep = sleep
        self._client: ApiClient | None = None

    def open(self) -> None:
        if self._client is None:
            self._client = ApiClient(
                self.base_url,
                name=self.name,
                headers={"Authorization": f"Bearer {self._api_key}"},
                secrets=[self._api_key],
                transport=self._transport,
                sleep=self._sleep,
            )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def send_messages(self, messages: Sequence[Message]) -> list[SendResult]:
        results: dict[int, SendResult] = {}
        mails, now = [], time.time()
        for index, message in enumerate(messages):
            try:
                mails.append(_parse(index, message, now))
            except _Unsendable as exc:
                message_id = " ".join(str(message["Message-ID"] or "").split())
                results[index] = SendResult(message_id, "permanent", error=f"not sent: {exc}")
        if mails:
            opened_here = self._client is None
            self.open()
            try:
                fatal = None
                for batch in _plan(mails):
                    if fatal:
                        for mail, _ in batch.members:
                            results[mail.index] = SendResult(
                                mail.message_id, "blocked", error=f"not sent: {fatal}"
                            )
                    else:
                        fatal = self._send(batch, results)
            finally:
                if opened_here:
                    self.close()
        return [results[index] for index in range(len(messages))]

    def _send(self, batch: _Batch, results: dict[int, SendResult]) -> str | None:
        """Send one request and record its members' results. A 400 that blames only some
        personalizations fails those and sends the rest again. Returns the error when the
        credentials were rejected, which no later request of the batch would get past."""
        assert self._client is not None
        members = batch.members
        while members:
            try:
                response = self._client.request(
                    "POST", MAIL_SEND, json=batch.body(members, self.sandbox)
                )
            except ApiError as exc:
                blamed = _blamed(exc, len(members))
                if blamed and len(blamed) < len(members):
                    for k, reason in blamed.items():
                        mail = members[k][0]
                        results[mail.index] = SendResult(
                            mail.message_id, "permanent", error=f"sendgrid: HTTP 400: {reason}"
                        )
                    members = [m for k, m in enumerate(members) if k not in blamed]
                    continue
                refused = refusal(exc)
                if refused:
                    outcome, error = "blocked", refused
                elif exc.maybe_processed:
                    outcome, error = "uncertain", str(exc)
                else:
                    outcome = "retryable" if exc.retryable else "permanent"
                    error = str(exc)
                for mail, _ in members:
                    results[mail.index] = SendResult(mail.message_id, outcome, error=error)
                return refused
            provider_id = response.headers.get("X-Message-Id")
            for mail, _ in members:
                results[mail.index] = SendResult(mail.message_id, "accepted", provider_id)
            return None
        return None
