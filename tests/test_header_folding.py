"""Header folding at the wire: RFC 2047 encoded words of at most 75 characters (section 2),
no line over RFC 5322's 998 octets (section 2.1.1), lines of at most 78 characters (76 where
a line holds an encoded word) wherever a break is possible, and every display name and
subject read back by the standard library's parser exactly as it was written.

One exception, in CPython rather than in our bytes: its address parser keeps the space
between two adjacent encoded words of a display name, which RFC 2047 section 6.2 says is not
part of the text. Where a name needs two encoded words side by side, it is checked with an
RFC 2047 decoder (the standard library's own generator writes such names the same way, and
its parser reads them back with the same added space)."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.header import decode_header, make_header
from email.policy import compat32, default

from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors.email.message import OutgoingEmail, encoded_words
from stages.content.rendering import EmailParts, Sender, build_message, header_text

CRLF = compat32.clone(linesep="\r\n")
ENCODED_WORD = re.compile(rb"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")
ADJACENT_WORDS = re.compile(r"\?= =\?")
SENDER = Sender(name="Demo Co", email="marketing@demo.example", company="Demo Co")
# what a name or subject can hold once rendered: any character a str can, except lone
# surrogates (not encodable as UTF-8, so never in a rendered template or a CSV import)
CHARACTERS = st.characters(codec="utf-8")
TEXT = st.one_of(
    st.text(CHARACTERS, max_size=300),
    st.builds(lambda char, count: char * count, CHARACTERS, st.integers(1, 1500)),
    st.builds(
        lambda words: " ".join(words),
        st.lists(st.text(CHARACTERS, min_size=60, max_size=200), min_size=1, max_size=6),
    ),
)


def _raw(subject: str, name: str, sender: Sender = SENDER) -> bytes:
    message = build_message(
        EmailParts(subject, "text", "<p>html</p>"),
        sender=sender,
        to_email="person@client.example",
        to_name=name,
        message_id="<abm.1.abc@demo.example>",
        unsubscribe_url="https://abm.example/unsubscribe/t1",
        campaign_key="demo",
    )
    return message.as_bytes(policy=CRLF)


def _head(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def _fields(raw: bytes) -> dict[str, list[bytes]]:
    """Each header's physical lines, by lowercased name."""
    fields: dict[str, list[bytes]] = {}
    current: list[bytes] = []
    for line in _head(raw).split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            current.append(line)
        else:
            current = [line]
            fields[line.split(b":", 1)[0].decode().lower()] = current
    return fields


def assert_name_reads_back(raw: bytes, header: str, expected: str) -> None:
    parsed = message_from_bytes(raw, policy=default)[header].addresses[0]
    assert parsed.addr_spec in ("person@client.example", "marketing@demo.example")
    if parsed.display_name == expected:
        return
    value = b" ".join(line.strip() for line in _fields(raw)[header.lower()]).decode()
    phrase = value.split(":", 1)[1].strip().rsplit(" <", 1)[0]
    assert ADJACENT_WORDS.search(phrase), (phrase, parsed.display_name)
    assert str(make_header(decode_header(phrase))) == expected


def assert_well_formed(raw: bytes) -> None:
    head = _head(raw)
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    assert all(len(word) <= 75 for word in ENCODED_WORD.findall(head))
    fields = _fields(raw)
    for name in ("subject", "from", "to"):
        # the addresses are short here: every line of these fits RFC 2047's 76 characters
        # where it holds an encoded word, and RFC 5322's 78 otherwise
        for line in fields[name]:
            assert len(line) <= (76 if b"=?" in line else 78), (name, fields[name])
    assert all(line.strip() for line in head.split(b"\r\n")), "an empty line ends the headers"


@settings(max_examples=300, deadline=None)
@given(subject=TEXT, name=TEXT)
@example(subject="x" * 1200, name="Ånnika " * 30)
@example(subject="Ärger über Öl – " * 80, name="ø" * 500)
@example(subject="a" * 80 + " " + "b" * 80, name="," + "c" * 1200)
@example(subject="=?utf-8?b?QWRtaW4=?= " + "d" * 100, name="=?utf-8?b?QWRtaW4=?=" * 10)
def test_any_subject_and_display_name_round_trip_within_the_line_limits(subject, name):
    raw = _raw(subject, name)
    assert_well_formed(raw)
    parsed = message_from_bytes(raw, policy=default)
    assert parsed["Subject"] == header_text(subject)
    assert parsed["Message-ID"] == "<abm.1.abc@demo.example>"
    assert_name_reads_back(raw, "To", header_text(name))


@settings(max_examples=100, deadline=None)
@given(name=TEXT)
def test_a_long_sender_name_is_folded_like_a_recipient_name(name):
    sender = Sender(name=header_text(name), email="marketing@demo.example", company="Demo Co")
    raw = _raw("Hello", "Ana", sender)
    assert_well_formed(raw)
    assert_name_reads_back(raw, "From", header_text(name))


def test_an_unbroken_1200_character_subject_stays_within_998_octets_and_reads_back():
    raw = _raw("x" * 1200, "Ana")
    assert max(len(line) for line in _head(raw).split(b"\r\n")) <= 78
    assert message_from_bytes(raw, policy=default)["Subject"] == "x" * 1200


@example("Ånnika-Maximiliane Lindqvist-Östergård von Hohenzollern-Sigmaringen")
@example("Jean-Baptiste Émile Ćwikliński-Dąbrowska de la Tour d'Auvergne-Lauraguais")
@example("Σωκράτης Παπαδόπουλος")
@example("李小龍 Bruce Lee")
@given(
    st.lists(
        st.text(st.characters(codec="utf-8", categories=["L"]), min_size=1, max_size=20),
        min_size=1,
        max_size=4,
    ).map(" ".join)
)
def test_names_of_people_are_encoded_only_where_needed_and_read_back_exactly(name):
    """A run of non-ASCII words within about 50 bytes is one encoded word: no adjacent
    encoded words, so every parser, Python's included, reads the name back as written."""
    raw = _raw("Hello", name)
    to = b" ".join(_fields(raw)["to"])
    assert all(len(word) <= 75 for word in ENCODED_WORD.findall(to))
    if len(name.encode()) <= 40:
        assert message_from_bytes(raw, policy=default)["To"].addresses[0].display_name == name


def test_encoded_words_leave_room_for_the_subject_header_on_their_line():
    words = encoded_words("é" * 200).split()
    assert len(words) > 1
    assert all(len("Subject: " + word) <= 76 for word in words)


def test_a_header_set_on_the_message_is_folded_too():
    message = OutgoingEmail(
        [("Message-ID", "<m.1@demo.example>"), ("Subject", "short")], "t", "<p>h</p>", "b1"
    )
    message["X-Long"] = " ".join(["word"] * 100)
    head = _head(message.as_bytes(policy=CRLF))
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    assert message_from_bytes(head + b"\r\n\r\n", policy=default)["X-Long"] == " ".join(
        ["word"] * 100
    )
