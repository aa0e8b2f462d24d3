"""The message every email backend receives: a standard-library `Message` (so backends and
tests read it with the usual API) whose bytes we write ourselves.

The standard library's generator folds every header through `email.header.Header` and
encodes bodies in pure Python: about 1 ms a message. Our messages always have one shape
(multipart/alternative, a text and an HTML part, 7bit or quoted-printable UTF-8, single-line
headers), so writing them directly costs a few microseconds and yields the same RFC 5322
bytes any parser reads back."""

from __future__ import annotations

import base64
import binascii
from email.message import Message
from email.policy import Policy

_FOLD_AT = 78
_LINE_LIMIT = 998
_WORD_BYTES = 45  # 60 characters of base64, 72 with the =?utf-8?b? and ?= around them


def _fold(name: str, value: str) -> str:
    """`Name: value`, folded at spaces to lines of at most 78 characters where possible.

    A value that arrives already folded (RFC 2047 encoded words do) is unfolded first: a
    line break kept inside it could otherwise become an empty line, which ends the header
    block and turns the headers after it into body text."""
    line = f"{name}: {value}"
    if len(line) <= _FOLD_AT and value.isprintable() and "  " not in value:
        return line  # the usual case: short, one line, nothing to unfold
    words = value.split()
    line = f"{name}: {' '.join(words)}"
    if len(line) <= _FOLD_AT or not words:
        return line
    lines, current = [], f"{name}: {words[0]}"  # never break right after the colon
    for word in words[1:]:
        if len(current) + 1 + len(word) > _FOLD_AT:
            lines.append(current)
            current = " " + word
        else:
            current = f"{current} {word}"
    lines.append(current)
    return "\n".join(lines)


def encoded_words(text: str) -> str:
    """Non-ASCII header text as RFC 2047 encoded words (`=?utf-8?b?...?=`), each within
    the RFC's 75 characters and split between characters, never inside one. ASCII text
    that looks like an encoded word is encoded too, so that readers see it as written."""
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


class OutgoingEmail(Message):
    """multipart/alternative with a text and an HTML part; `headers` are already safe
    (single line, RFC 2047-encoded where needed)."""

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
