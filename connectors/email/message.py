"""The message every email backend receives: a standard-library `Message` (so backends and
tests read it with the usual API) whose bytes we write ourselves.

The standard library's generator folds every header through `email.header.Header` and
encodes bodies in pure Python: about 1 ms a message. Our messages always have one shape
(multipart/alternative, a text and an HTML part, 7bit or quoted-printable UTF-8, headers
folded at spaces), so writing them directly costs a few microseconds and yields the same
RFC 5322 bytes any parser reads back. The rare header that cannot be folded at its spaces
(an unbroken 1,200-character subject, a long name as one encoded word) is re-encoded as
RFC 2047 encoded words, which can be."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from email.message import Message
from email.policy import Policy

# RFC 5322 section 2.1.1: lines of at most 78 characters. RFC 2047 section 2: a line that
# holds an encoded word at most 76, the word itself at most 75.
_FOLD_AT = 78
_FOLD_ENCODED_AT = 76
_LONGEST_WORD = 75
_LINE_LIMIT = 998
_WORD_BYTES = 39  # 52 characters of base64, 64 with =?utf-8?b? and ?=: fits "Subject: "
# Headers whose text may be re-encoded when a word is too long to fold: unstructured text
# and the display name of a mailbox. Anything else (Message-ID, URLs) is folded at spaces.
_TEXT_HEADERS = frozenset({"subject"})
_MAILBOX_HEADERS = frozenset({"from", "to"})
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_MAILBOX = re.compile(r"(.*?) *<([^<>]*)>")
_QUOTED_PAIR = re.compile(r"\\(.)")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")  # RFC 5322 atext
# what a Q-encoded word may hold as it is, even in a display name (RFC 2047 section 5(3))
_Q_LITERAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_EW_FRAME = len("=?utf-8?q??=")


def _fold(name: str, value: str) -> str:
    """`Name: value`, folded at spaces to lines of at most 78 characters, 76 where a line
    holds an encoded word.

    A value that arrives already folded (RFC 2047 encoded words do) is unfolded first: a
    line break kept inside it could otherwise become an empty line, which ends the header
    block and turns the headers after it into body text. A subject or display name holding
    a word no line can take is re-encoded first, into encoded words that fit."""
    line = f"{name}: {value}"
    if len(line) <= _FOLD_ENCODED_AT and value.isprintable() and "  " not in value:
        return line  # the usual case: short, one line, nothing to unfold
    words = value.split()
    lead = len(name) + 2  # the first word shares its line with the name
    if words and _too_long(words, lead):
        words = _foldable(name.lower(), " ".join(words), lead).split()
    line = f"{name}: {' '.join(words)}"
    if len(line) <= _limit(line) or not words:
        return line
    lines, current = [], f"{name}: {words[0]}"  # never break right after the colon
    for word in words[1:]:
        candidate = f"{current} {word}"
        if len(candidate) > _limit(candidate):
            lines.append(current)
            current = " " + word
        else:
            current = candidate
    lines.append(current)
    return "\n".join(lines)


def _limit(line: str) -> int:
    return _FOLD_ENCODED_AT if "=?" in line else _FOLD_AT


def _too_long(words: list[str], lead: int) -> bool:
    """Whether a word cannot be placed on a line: an encoded word over 75 characters, or
    any word longer than the line it must go on."""
    if lead + len(words[0]) > _limit(words[0]):
        return True
    if len(max(words, key=len)) <= _LONGEST_WORD:
        return False
    return any(len(word) + 1 > _limit(word) for word in words)


def _foldable(name: str, value: str, lead: int) -> str:
    """`value` with the text of a subject or display name re-encoded so that every word
    fits its line; other headers, and a mailbox without a name, as they are."""
    if name in _TEXT_HEADERS:
        return " ".join(_text_words(_decoded(value), lead))
    mailbox = _MAILBOX.fullmatch(value) if name in _MAILBOX_HEADERS else None
    if mailbox is None or not mailbox[1]:
        return value
    phrase = mailbox[1]
    if len(phrase) > 1 and phrase[0] == phrase[-1] == '"':
        text = _QUOTED_PAIR.sub(r"\1", phrase[1:-1])
    else:
        text = _decoded(phrase)
    return " ".join([*_text_words(text, lead), f"<{mailbox[2]}>"])


def _text_words(text: str, lead: int) -> list[str]:
    """Words for `text` as the standard library's generator writes them: a word that is an
    RFC 5322 atom short enough for its line stays as it is, each run of the others becomes
    encoded words (Q or B, whichever needs fewer) of at most 75 characters, the first word
    short enough to share its line with the header's name.

    Few encoded words matter beyond length: RFC 2047 drops the space between two encoded
    words, but Python's address parser keeps it, so a run that needs two words reads back
    with a space added there. Short runs, one word each, read back exactly everywhere."""
    words: list[str] = []
    run: list[str] = []
    for token in text.split(" "):
        room = _FOLD_AT - (lead if not words and not run else 1)
        if _ATOM.fullmatch(token) and "=?" not in token and len(token) <= room:
            if run:
                words += _encode_run(" ".join(run), first=not words, lead=lead)
                run = []
            words.append(token)
        else:
            run.append(token)
    if run:
        words += _encode_run(" ".join(run), first=not words, lead=lead)
    return words


def _encode_run(text: str, first: bool, lead: int) -> list[str]:
    """`text` as encoded words; `first`: the first of them shares the header's first line."""
    room = _LONGEST_WORD - _EW_FRAME
    first_room = _FOLD_ENCODED_AT - lead - _EW_FRAME if first else room
    q = _chunks(text, first_room, room, lambda char: len(_q(char)))
    b = _chunks(text, first_room // 4 * 3, room // 4 * 3, lambda char: len(char.encode()))
    if len(q) <= len(b):
        return [f"=?utf-8?q?{''.join(map(_q, chunk))}?=" for chunk in q]
    return [f"=?utf-8?b?{base64.b64encode(chunk.encode()).decode('ascii')}?=" for chunk in b]


def _q(char: str) -> str:
    if char in _Q_LITERAL:
        return char
    if char == " ":
        return "_"
    return "".join(f"={byte:02X}" for byte in char.encode("utf-8"))


def _chunks(text: str, first: int, room: int, size: Callable[[str], int]) -> list[str]:
    """`text` cut between characters into pieces of at most `first`, then `room`, by `size`."""
    chunks, chunk, used, limit = [], "", 0, first
    for char in text:
        cost = size(char)
        if used + cost > limit and chunk:
            chunks.append(chunk)
            chunk, used, limit = "", 0, room
        chunk += char
        used += cost
    return [*chunks, chunk]


def _decoded(value: str) -> str:
    """Header text with its encoded words decoded (RFC 2047 section 6.2: the space between
    two encoded words is not part of the text; adjacent words of one charset are joined as
    bytes, so a character split between them survives)."""
    out: list[str] = []
    pending: list[bytes] = []
    charset, after_word = "", False
    for word in value.split(" "):
        found = _ENCODED_WORD.fullmatch(word)
        data = _word_bytes(found) if found is not None else None
        if found is not None and data is not None:
            if pending and found[1].lower() != charset:
                out.append(_text(b"".join(pending), charset))
                pending = []
            if out and not after_word:
                out.append(" ")
            charset, after_word = found[1].lower(), True
            pending.append(data)
            continue
        if pending:
            out.append(_text(b"".join(pending), charset))
            pending = []
        out += [" ", word] if out else [word]
        after_word = False
    if pending:
        out.append(_text(b"".join(pending), charset))
    return "".join(out)


def _word_bytes(found: re.Match[str]) -> bytes | None:
    """The bytes one encoded word stands for, or None when it does not decode."""
    try:
        if found[2] in "bB":
            return base64.b64decode(found[3] + "=" * (-len(found[3]) % 4), validate=True)
        return binascii.a2b_qp(found[3].encode("ascii"), header=True)
    except (binascii.Error, ValueError):
        return None


def _text(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def encoded_words(text: str) -> str:
    """Non-ASCII header text as RFC 2047 encoded words (`=?utf-8?b?...?=`), each of at most
    64 characters (the RFC allows 75; 64 leaves room for `Subject: ` on a 76-character line)
    and split between characters, never inside one. ASCII text that looks like an encoded
    word is encoded too, so that readers see it as written."""
    if text.isascii() and "=?" not in text:
        return text
    words, chunk, size = [], [], 0
    for char in text:
        width = len(char.encode("utf-8"))
        if size + width > _WORD_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    words.append("".join(chunk))
    encoded = (base64.b64encode(word.encode("utf-8")).decode("ascii") for word in words)
    return " ".join(f"=?utf-8?b?{word}?=" for word in encoded)


def _encode(text: str) -> tuple[str, str]:
    """(Content-Transfer-Encoding, body) with LF line ends: ASCII text with lines within
    RFC 5322's 998 characters goes as it is (7bit), anything else as quoted-printable
    UTF-8 (the C implementation in binascii), as the standard library's own choice goes."""
    body = text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
    short_lines = len(body) <= _LINE_LIMIT or max(map(len, body.split("\n"))) <= _LINE_LIMIT
    if body.isascii() and "\x00" not in body and short_lines:
        return "7bit", body
    return "quoted-printable", binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii")


class _Part(Message):
    def __init__(self, subtype: str, text: str) -> None:
        super().__init__()
        # Message's own list of (name, value): what `self[name] = value` appends to, minus
        # a policy round trip per header that costs more than the rest of the part.
        encoding, self._payload = _encode(text)
        self._headers = [
            ("Content-Type", f'text/{subtype}; charset="utf-8"'),
            ("Content-Transfer-Encoding", encoding),
        ]


def header_block(headers: Iterable[tuple[str, str]], linesep: str = "\r\n") -> bytes:
    """Header lines as they go on the wire, each folded as the message's own, for headers
    a backend adds in front of a message it has serialised (attribution, DKIM)."""
    return (
        "".join(_fold(name, value) + "\n" for name, value in headers)
        .replace("\n", linesep)
        .encode("ascii")
    )


class OutgoingEmail(Message):
    """multipart/alternative with a text and an HTML part; `headers` are already safe
    (no line breaks, RFC 2047-encoded where needed) and are folded when written."""

    def __init__(self, headers: list[tuple[str, str]], text: str, html: str, boundary: str) -> None:
        super().__init__()
        self._headers = [
            *headers,
            ("MIME-Version", "1.0"),
            ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ]
        self.boundary = boundary
        self._payload = [_Part("plain", text), _Part("html", html)]

    def _serialise(self) -> str:
        out = [_fold(name, str(value)) for name, value in self._headers]
        out.append("")
        for part in self._payload:
            out.append(f"--{self.boundary}")
            out += [f"{name}: {value}" for name, value in part._headers]
            # the line break before a delimiter belongs to the delimiter (RFC 2046 5.1.1)
            out += ["", part._payload]
        out.append(f"--{self.boundary}--\n")
        return "\n".join(out)

    def as_bytes(self, unixfrom: bool = False, policy: Policy | None = None) -> bytes:
        linesep = policy.linesep if policy is not None else "\n"
        text = self._serialise()
        if linesep != "\n":
            text = text.replace("\n", linesep)
        return text.encode("ascii")

    def as_string(self, unixfrom: bool = False, maxheaderlen: int = 0, policy=None) -> str:  # type: ignore[no-untyped-def]
        return self.as_bytes(policy=policy).decode("ascii")

    def __bytes__(self) -> bytes:
        return self.as_bytes()

    def __str__(self) -> str:
        return self.as_string()
