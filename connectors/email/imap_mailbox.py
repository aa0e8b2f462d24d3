"""The monitored mailbox: one IMAP folder read with the standard library's imaplib, over TLS
(`imaps://`) or STARTTLS (`imap://`, unless `?starttls=0` says plain, for a server on the
loopback), for the SMTP users whose replies, bounces and complaints land in a mailbox
rather than in a provider's webhook.

The connector knows IMAP, not campaigns: it selects the folder and reports its UIDVALIDITY,
lists the UIDs after a cursor (or without a keyword), fetches many messages in one
`UID FETCH` with `BODY.PEEK[]` (so nothing is marked \\Seen for the people who read the
mailbox too), a message larger than the limit only up to the limit (`BODY.PEEK[]<0.N>`),
and sets a keyword on what was processed. Every failure is one of two kinds:
`MailboxUnavailable` (cannot connect, TLS, login: nothing was read) and `MailboxDropped`
(the connection went away in the middle; connect again and resume from the cursor).
Neither message, nor `str()` of the URL, ever holds the password."""

from __future__ import annotations

import base64
import imaplib
import re
import ssl
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from core.errors import AbmError, ConfigError

Tls = Literal["implicit", "starttls", "none"]
_URL_FORMS = (
    "expected imaps://user:pass@host:993/INBOX or imap://user:pass@host:143/INBOX (STARTTLS; "
    "?starttls=0 for plain IMAP), with @ : / ? # % in the user name, password or folder "
    "percent-encoded"
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
# A fetch of many messages is one command; the bytes it may bring back at once.
FETCH_BYTES = 32 * 1024 * 1024


class MailboxError(AbmError):
    """The mailbox could not be read as asked."""


class MailboxUnavailable(MailboxError):
    """No usable connection: refused, timed out, TLS failed, or the login was refused."""


class MailboxDropped(MailboxError):
    """The connection went away in the middle of a command."""


def _bad_url(problem: str) -> ConfigError:
    """Never quote the URL back: with an unencoded / ? or # any part of it may be password."""
    return ConfigError(f"IMAP URL: {problem}; {_URL_FORMS}")


@dataclass(frozen=True)
class ImapUrl:
    """A parsed IMAP URL. `str()` and `repr()` mask the password."""

    host: str
    port: int
    tls: Tls
    user: str
    password: str = field(repr=False)
    folder: str = "INBOX"

    @classmethod
    def parse(cls, url: str) -> ImapUrl:
        if not isinstance(url, str) or not url.strip():
            raise _bad_url("it is empty")
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise _bad_url("it is not a valid URL, or its port is not 1 to 65535") from None
        scheme = parts.scheme.lower()
        if scheme not in ("imap", "imaps"):
            raise _bad_url("the scheme must be imaps or imap")
        if not parts.hostname:
            raise _bad_url("it names no host")
        if port == 0:
            raise _bad_url("the port must be a number from 1 to 65535")
        if parts.username is None or parts.password is None:
            raise _bad_url("it needs a user name and a password")
        if parts.fragment:
            raise _bad_url("it has a fragment after the folder")
        starttls = scheme == "imap"
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key.lower() != "starttls" or value.lower() not in _TRUE | _FALSE:
                raise _bad_url("the only query parameter understood is starttls=1 or 0")
            if scheme == "imaps":
                raise _bad_url("imaps:// is TLS from the start; starttls= is for imap://")
            starttls = value.lower() in _TRUE
        folder = unquote(parts.path.lstrip("/")) or "INBOX"
        if any(ch in folder for ch in "\r\n\0"):
            raise _bad_url("the folder name has a line break or NUL")
        tls: Tls = "implicit" if scheme == "imaps" else "starttls" if starttls else "none"
        return cls(
            host=parts.hostname,
            port=port or (993 if scheme == "imaps" else 143),
            tls=tls,
            user=unquote(parts.username),
            password=unquote(parts.password),
            folder=folder,
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "imaps" if self.tls == "implicit" else "imap"
        query = "?starttls=0" if self.tls == "none" else ""
        folder = quote(self.folder, safe="")
        return f"{scheme}://{quote(self.user, safe='')}:***@{host}:{self.port}/{folder}{query}"


def encode_folder(name: str) -> str:
    """A folder name as IMAP writes it (RFC 3501 modified UTF-7), quoted for a command."""
    out, pending = [], []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if " " <= ch <= "~":
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    encoded = "".join(out)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def uid_set(uids: Iterable[int]) -> str:
    """`1:5,7,9:12`: a sorted list of UIDs as an IMAP sequence set."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("no UIDs")
    ranges, start, previous = [], ordered[0], ordered[0]
    for uid in ordered[1:]:
        if uid != previous + 1:
            ranges.append(f"{start}:{previous}" if start != previous else str(start))
            start = uid
        previous = uid
    ranges.append(f"{start}:{previous}" if start != previous else str(start))
    return ",".join(ranges)


@dataclass(frozen=True)
class Folder:
    """The selected folder: UIDVALIDITY (UIDs mean the same only while it stays the same),
    and whether the server keeps our keyword on its messages."""

    name: str
    uidvalidity: int
    messages: int
    keeps_keywords: bool
    read_only: bool


@dataclass(frozen=True)
class Fetched:
    """One message as fetched: `data` is all of it, or its first `limit` bytes when
    `truncated` (its full `size` was over the limit)."""

    uid: int
    size: int
    received_at: datetime | None
    data: bytes
    truncated: bool


class ImapMailbox:
    """One folder of one IMAP account. `with ImapMailbox(url) as box:` connects, starts TLS
    and logs in (MailboxUnavailable if any of that fails); `select()` the folder, then list,
    fetch and mark. Not thread-safe: one per poll."""

    def __init__(
        self,
        url: str | ImapUrl,
        *,
        timeout: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url if isinstance(url, ImapUrl) else ImapUrl.parse(url)
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._imap: imaplib.IMAP4 | None = None
        self.folder: Folder | None = None

    def __enter__(self) -> ImapMailbox:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self._imap is not None:
            return
        url = self.url
        context = self.ssl_context or ssl.create_default_context()
        try:
            if url.tls == "implicit":
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    url.host, url.port, ssl_context=context, timeout=self.timeout
                )
            else:
                imap = imaplib.IMAP4(url.host, url.port, timeout=self.timeout)
        except ssl.SSLError as exc:
            raise MailboxUnavailable(f"{url}: TLS failed: {_reason(exc)}") from None
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxUnavailable(f"{url}: cannot connect: {_reason(exc)}") from None
        try:
            if url.tls == "starttls":
                try:
                    imap.starttls(ssl_context=context)
                except imaplib.IMAP4.error as exc:
                    raise MailboxUnavailable(
                        f"{url}: STARTTLS failed ({_reason(exc)}); use imaps://, or "
                        "?starttls=0 for a server on the loopback"
                    ) from None
                except ssl.SSLError as exc:
                    raise MailboxUnavailable(f"{url}: TLS failed: {_reason(exc)}") from None
            try:
                if f"{url.user}{url.password}".isascii():
                    imap.login(url.user, url.password)
                else:
                    secret = f"\0{url.user}\0{url.password}".encode()
                    imap.authenticate("PLAIN", lambda _: secret)
            except imaplib.IMAP4.abort as exc:
                raise MailboxDropped(
                    f"{url}: connection dropped at login: {_reason(exc)}"
                ) from None
            except imaplib.IMAP4.error as exc:
                raise MailboxUnavailable(
                    f"{url}: the server refused the login of {url.user!r}: {_server_text(exc)}"
                ) from None
        except MailboxError:
            _shutdown(imap)
            raise
        except (OSError, EOFError) as exc:  # gone between connecting and logging in
            _shutdown(imap)
            raise MailboxDropped(f"{url}: connection dropped at login: {_reason(exc)}") from None
        self._imap = imap

    def close(self) -> None:
        imap, self._imap = self._imap, None
        self.folder = None
        if imap is None:
            return
        with suppress(Exception):
            imap.logout()
        _shutdown(imap)

    def _run(self, what: str, command: str, *args: str) -> list[Any]:
        """`UID command args`, its data on OK; MailboxDropped when the connection goes,
        MailboxError when the server says NO or BAD."""
        imap = self._connected()
        try:
            status, data = imap.uid(command, *args)
        except (imaplib.IMAP4.abort, OSError, EOFError) as exc:
            raise self._dropped(what, exc) from None
        except imaplib.IMAP4.error as exc:
            raise MailboxError(f"{self.url}: {what} refused: {_server_text(exc)}") from None
        if status != "OK":
            raise MailboxError(f"{self.url}: {what} refused: {_server_text(data)}")
        return data

    def _connected(self) -> imaplib.IMAP4:
        if self._imap is None:
            raise MailboxDropped(f"{self.url}: not connected")
        return self._imap

    def _dropped(self, what: str, exc: BaseException) -> MailboxDropped:
        """The connection is gone: forget it, and say so."""
        imap, self._imap = self._imap, None
        if imap is not None:
            _shutdown(imap)
        return MailboxDropped(f"{self.url}: connection dropped during {what}: {_reason(exc)}")

    def select(self, name: str | None = None) -> Folder:
        """Open the folder for reading and marking (read-only if the server says so)."""
        imap = self._connected()
        name = name or self.url.folder
        encoded = encode_folder(name)
        read_only = False
        try:
            try:
                status, data = imap.select(encoded)
            except imaplib.IMAP4.readonly:
                read_only = True
                status, data = imap.select(encoded, readonly=True)
            if status != "OK":
                raise MailboxError(f"{self.url}: cannot open folder {name!r}: {_server_text(data)}")
            _, uidvalidity = imap.response("UIDVALIDITY")
            _, flags = imap.response("PERMANENTFLAGS")
        except (imaplib.IMAP4.abort, OSError, EOFError) as exc:
            raise self._dropped("SELECT", exc) from None
        except imaplib.IMAP4.error as exc:
            raise MailboxError(
                f"{self.url}: cannot open folder {name!r}: {_server_text(exc)}"
            ) from None
        try:
            validity = int((uidvalidity or [b""])[-1])
        except ValueError:
            raise MailboxError(f"{self.url}: folder {name!r} has no UIDVALIDITY") from None
        permanent = b" ".join(f for f in flags or [] if f)
        self.folder = Folder(
            name=name,
            uidvalidity=validity,
            messages=int((data or [b"0"])[-1] or 0),
            keeps_keywords=b"\\*" in permanent and not read_only,
            read_only=read_only,
        )
        return self.folder

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs greater than `last_uid`, in order."""
        data = self._run("UID SEARCH", "SEARCH", "UID", f"{last_uid + 1}:*")
        return sorted(uid for uid in _uids(data) if uid > last_uid)

    def uids_without(self, keyword: str | None) -> list[int]:
        """UIDs of the messages without `keyword` (all of them for None), in order."""
        if keyword:
            data = self._run("UID SEARCH", "SEARCH", "UNKEYWORD", keyword)
        else:
            data = self._run("UID SEARCH", "SEARCH", "ALL")
        return sorted(_uids(data))

    def sizes(self, uids: list[int]) -> dict[int, tuple[int, datetime | None]]:
        """UID -> (size in bytes, when the server received it), in one command."""
        data = self._run(
            "UID FETCH (sizes)", "FETCH", uid_set(uids), "(UID RFC822.SIZE INTERNALDATE)"
        )
        found: dict[int, tuple[int, datetime | None]] = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if not isinstance(line, bytes):
                continue
            uid, size = _UID.search(line), _SIZE.search(line)
            if uid and size:
                date = _INTERNALDATE.search(line)
                found[int(uid[1])] = (int(size[1]), _internal_date(date[1]) if date else None)
        return found

    def fetch(self, uids: list[int], limit: int) -> Iterator[Fetched]:
        """The messages, in UID order, many a command (at most about FETCH_BYTES at once);
        each over `limit` bytes only up to `limit`. A UID gone meanwhile is left out."""
        meta = self.sizes(uids)
        batch: list[int] = []
        budget = 0
        for uid in sorted(meta):
            cost = min(meta[uid][0], limit)
            if batch and budget + cost > FETCH_BYTES:
                yield from self._bodies(batch, meta, limit)
                batch, budget = [], 0
            batch.append(uid)
            budget += cost
        if batch:
            yield from self._bodies(batch, meta, limit)

    def _bodies(
        self, uids: list[int], meta: dict[int, tuple[int, datetime | None]], limit: int
    ) -> Iterator[Fetched]:
        whole = [uid for uid in uids if meta[uid][0] <= limit]
        large = [uid for uid in uids if meta[uid][0] > limit]
        bodies: dict[int, bytes] = {}
        if whole:
            bodies.update(
                _literals(self._run("UID FETCH", "FETCH", uid_set(whole), "(UID BODY.PEEK[])"))
            )
        if large:
            part = f"(UID BODY.PEEK[]<0.{limit}>)"
            bodies.update(
                _literals(self._run("UID FETCH (partial)", "FETCH", uid_set(large), part))
            )
        for uid in uids:
            if uid in bodies:
                size, received = meta[uid]
                yield Fetched(uid, size, received, bodies[uid], size > limit)

    def mark(self, uids: list[int], keyword: str) -> None:
        """Set `keyword` on these messages (silently: no answer per message)."""
        if uids:
            self._run("UID STORE", "STORE", uid_set(uids), "+FLAGS.SILENT", f"({keyword})")


def _uids(data: list[Any]) -> list[int]:
    return [int(part) for line in data if isinstance(line, bytes) for part in line.split()]


def _literals(data: list[Any]) -> dict[int, bytes]:
    """UID -> literal of a `UID FETCH ... BODY.PEEK[]` answer, wherever the server put the
    UID: before the literal (`* 1 FETCH (UID 7 BODY[] {n}`) or after it (` UID 7)`).
    Unsolicited FETCH answers (flag changes by another client) hold no body and are skipped."""
    found: dict[int, bytes] = {}
    for index, item in enumerate(data):
        if not (isinstance(item, tuple) and len(item) == 2 and b"BODY[" in item[0]):
            continue
        uid = _UID.search(item[0])
        if uid is None and index + 1 < len(data) and isinstance(data[index + 1], bytes):
            uid = _UID.search(data[index + 1])
        if uid is not None:
            found[int(uid[1])] = bytes(item[1])
    return found


def _internal_date(text: bytes) -> datetime | None:
    """`04-Dec-2026 16:34:40 +0000` (the day may be space-padded) as an aware UTC time."""
    try:
        when = datetime.strptime(text.decode("ascii").strip(), "%d-%b-%Y %H:%M:%S %z")
    except (UnicodeDecodeError, ValueError):
        return None
    return when.astimezone(UTC)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]


def _server_text(value: Any) -> str:
    """What the server said, as text (imaplib hands bytes, lists of bytes or an exception)."""
    if isinstance(value, list):
        value = b" ".join(v for v in value if isinstance(v, bytes))
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:300]


def _shutdown(imap: imaplib.IMAP4) -> None:
    with suppress(Exception):
        imap.shutdown()
