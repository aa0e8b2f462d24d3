"""The message every email backend receives: a standard-library `Message` (so backends and
tests read it with the usual API) whose bytes we write ourselves.

The standard library's generator folds every header through `email.header.Header` and
encodes bodies in pure Python: about 1 ms a message. Our messages always have one shape
(multipart/alternative, a text and an HTML part, quoted-printable UTF-8, single-line
headers), so writing them directly costs a few microseconds and yields the same RFC 5322
bytes any parser reads back."""

from __future__ import annotations

import binascii
from email.message import Message
from email.policy import Policy

_FOLD_AT = 78


def _fold(name: str, value: str) -> str:
    """`Name: value`, folded at spaces to lines of at most 78 characters where possible.

    A value that arrives already folded (RFC 2047 encoded words do) is unfolded first: a
    line break kept inside it could otherwise become an empty line, which ends the header
    block and turns the headers after it into body text."""
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


def _qp(text: str) -> str:
    """Quoted-printable UTF-8 with LF line ends (the C implementation in binascii)."""
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    return binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii")


class _Part(Message):
    def __init__(self, subtype: str, text: str) -> None:
        super().__init__()
        self["Content-Type"] = f'text/{subtype}; charset="utf-8"'
        self["Content-Transfer-Encoding"] = "quoted-printable"
        self.set_payload(_qp(text))


class OutgoingEmail(Message):
    """multipart/alternative with a text and an HTML part; `headers` are already safe
    (single line, RFC 2047-encoded where needed)."""

    def __init__(self, headers: list[tuple[str, str]], text: str, html: str, boundary: str) -> None:
        super().__init__()
        for name, value in headers:
            self[name] = value
        self["MIME-Version"] = "1.0"
        self["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
        self.boundary = boundary
        self.set_payload([_Part("plain", text), _Part("html", html)])

    def _serialise(self) -> str:
        lines = [_fold(name, str(value)) for name, value in self.items()]
        out = "\n".join(lines) + "\n\n"
        for part in self.get_payload():
            out += f"--{self.boundary}\n"
            out += "\n".join(f"{name}: {value}" for name, value in part.items())
            # the line break before a delimiter belongs to the delimiter (RFC 2046 5.1.1)
            out += "\n\n" + part.get_payload() + "\n"
        return out + f"--{self.boundary}--\n"

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
