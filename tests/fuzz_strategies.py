"""Hypothesis strategies shared by the fuzz tests: messy CSV files, campaign YAML, template
sources, contact data and webhook bodies. Kept here so the tests read as properties."""

from __future__ import annotations

import csv
import io
import json

import yaml
from hypothesis import strategies as st

# --------------------------------------------------------------------------- CSV files

ACCOUNT_COLUMNS = [
    "domain",
    "Domain",
    "Website",
    "name",
    "Company",
    "industry",
    "employees",
    "Annual Revenue",
    "country",
    "technologies",
    "tier",
    "notes",
    "",
]
CONTACT_COLUMNS = [
    "email",
    "E-Mail",
    "first_name",
    "last_name",
    "title",
    "account_domain",
    "linkedin_url",
    "country",
    "timezone",
    "consent",
    "notes",
    "",
]
SUPPRESSION_COLUMNS = ["email", "domain", "value", "channel", "reason", "notes"]
GOOD_CELLS = [
    "acme.example",
    "https://www.Globex.example/about?x=1",
    "ana@acme.example",
    "BOB@Globex.Example",
    "Jane <jane@acme.example>",
    "mailto:zoe@acme.example",
    "Ana",
    "Núñez",
    "Sr. Dir, IT Infrastructure",
    "CFO & COO",
    "Manufacturing",
    "1,200",
    "5k",
    "$3.4M",
    "10-50",
    "Germany",
    "US",
    "Salesforce;AWS",
    "1",
    "tier 2",
    "Europe/Berlin",
    "opt_in",
    "legitimate_interest",
    "https://www.linkedin.com/in/ana?trk=x",
    "email",
    "all",
]
NASTY_CELLS = [
    "",
    " ",
    "\u200b",
    "\ufeff",
    '"',
    '""',
    'say "hi"',
    '"unclosed',
    "a,b",
    "a;b",
    "tab\there",
    "line\nbreak",
    "cr\ronly",
    "crlf\r\nend",
    '=HYPERLINK("http://evil.example")',
    "+1-555",
    "@SUM(A1)",
    "{{ 7*7 }}",
    "[/b][red]markup",
    "%s%d%n",
    "😀" * 3,
    "ı",
    "ß" * 5,
    "\u202e" + "gpj.exe",
    "x@gmail.com",
    "pat@unknown.example",
    "not-an-email",
    "a@b@c",
    "1e309",
    "-5",
    "NaN",
    "9" * 80,
    "Mars/Olympus",
    "../../etc/passwd",
    "America",
    "sep=;",
    "line",
    "reason",
]


def _huge() -> st.SearchStrategy[str]:
    return st.builds(
        lambda ch, n: ch * n, st.sampled_from('x,";\n é'), st.sampled_from([5000, 70000])
    )


cell = st.one_of(
    st.sampled_from(GOOD_CELLS),
    st.sampled_from(NASTY_CELLS),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
    _huge(),
)


@st.composite
def csv_bytes(draw: st.DrawFn, columns: list[str]) -> bytes:
    """A CSV file as people actually send them: any subset of the usual columns (the required
    one sometimes missing or doubled), quoted or not, any delimiter and line end, a BOM or an
    Excel `sep=` line, UTF-8/UTF-16/Windows-1252 or broken bytes, and now and then a few
    bytes flipped, cut or inserted anywhere."""
    header = draw(st.lists(st.sampled_from(columns), min_size=0, max_size=7))
    width = max(1, len(header))
    rows = draw(
        st.lists(
            st.lists(cell, min_size=0, max_size=width + 2),
            max_size=8,
        )
    )
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    newline = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, None]))
    lines: list[str] = []
    if draw(st.booleans()) and delimiter != ",":
        lines.append(f"sep={delimiter}{newline}")
    for row in [header, *rows]:
        if quoting is None:  # hand-made: joined without any quoting at all
            lines.append(delimiter.join(row) + newline)
        else:
            buffer = io.StringIO()
            csv.writer(
                buffer, delimiter=delimiter, lineterminator=newline, quoting=quoting
            ).writerow(row)
            lines.append(buffer.getvalue())
    text = "".join(lines)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252", "latin-1"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 3)) == 0 and data:
        # damage: insert, overwrite or cut at a few places
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(data)))
            kind = draw(st.sampled_from(["insert", "cut", "flip"]))
            junk = draw(st.binary(min_size=1, max_size=4))
            if kind == "insert":
                data = data[:at] + junk + data[at:]
            elif kind == "cut":
                data = data[:at]
            elif at < len(data):
                data = data[:at] + junk[:1] + data[at + 1 :]
    return data


any_csv_bytes = st.one_of(
    st.binary(max_size=400),
    csv_bytes(ACCOUNT_COLUMNS),
    csv_bytes(CONTACT_COLUMNS),
    csv_bytes(SUPPRESSION_COLUMNS),
)

# --------------------------------------------------------------------------- YAML

CAMPAIGN_KEYS = [
    "key",
    "name",
    "audience",
    "consent_required",
    "sender",
    "links",
    "utm",
    "caps",
    "sending_window",
    "account_rules",
    "steps",
    "unknown",
]
SUB_KEYS = [
    "id",
    "channel",
    "template",
    "variants",
    "wait",
    "stop_if",
    "action",
    "matched_audience",
    "tiers",
    "stages",
    "icp",
    "required_roles",
    "roles",
    "per_contact",
    "max",
    "days",
    "start",
    "end",
    "timezone",
    "on_reply",
    "delay",
    "stop_at_stage",
    "weight",
    "field",
    "op",
    "value",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "intro",
            "email",
            "linkedin_task",
            "linkedin_audience",
            "3d",
            "0d",
            "99999999999999999999d",
            "replied",
            "stage >= mqa",
            "stage >= nowhere",
            "Europe/Berlin",
            "America",
            "a" * 300,
            "../../etc/passwd",
            "\x00",
            "08:00",
            "25:99",
            "https://demo.example/guide",
            "javascript:alert(1)",
            "Demo <m@demo.example>",
            "{{ 7*7 }}",
            "decision_maker",
            "mqa",
            "connect",
        ]
    ),
    st.text(max_size=10),
)


def _yaml_values() -> st.SearchStrategy[object]:
    return st.recursive(
        SCALARS,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.sampled_from(SUB_KEYS) | st.text(max_size=4), children, max_size=4),
        ),
        max_leaves=12,
    )


@st.composite
def campaign_documents(draw: st.DrawFn) -> str:
    """Near-valid campaign files with one or more things wrong, dumped as YAML text."""
    doc: dict[object, object] = {"name": "Fuzz", "steps": [{"id": "intro"}]}
    for key in draw(st.lists(st.sampled_from(CAMPAIGN_KEYS), max_size=4)):
        doc[key] = draw(_yaml_values())
    if draw(st.booleans()):
        steps = draw(
            st.lists(st.dictionaries(st.sampled_from(SUB_KEYS), _yaml_values()), max_size=3)
        )
        doc["steps"] = steps
    try:
        return yaml.safe_dump(doc, allow_unicode=draw(st.booleans()), sort_keys=False)
    except yaml.YAMLError:
        return "name: x\n"


YAML_SNIPPETS = [
    "&a [*a]",
    "*undefined_alias",
    "!!python/object/apply:os.system ['echo pwned']",
    "!!binary AAAA",
    "? [a, b]\n: c",
    "--- a\n--- b",
    "%YAML 9.9\n---",
    "key: [unclosed",
    "name: {",
    "\t- tab",
    "name: x\nname: y",
    "<<: {name: x}",
    "steps: !!set {a, b}",
    "steps: 2001-12-14",
    "[" * 200 + "]" * 200,
    "{a: " * 60 + "1" + "}" * 60,
    'name: "\\ud800"',
    "\ufeffname: x",
    "name: x\x00",
    "name: x\x85y",
]

yaml_text = st.one_of(
    campaign_documents(),
    st.sampled_from(YAML_SNIPPETS),
    st.text(max_size=200),
    st.lists(st.sampled_from(YAML_SNIPPETS), min_size=1, max_size=3).map("\n".join),
)

yaml_bytes = st.one_of(
    yaml_text.map(lambda t: t.encode("utf-8", errors="surrogatepass")),
    yaml_text.map(lambda t: t.encode("utf-16")),
    st.binary(max_size=200),
)

# --------------------------------------------------------------------------- templates

TEMPLATE_PIECES = [
    "Hi {{ contact.first_name or 'there' }},",
    "{{ account.name | company }}",
    "{{ account.name | possessive }}",
    "{{ contact.nickname }}",
    "{{ contact.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{% for x in range(10**9) %}{% endfor %}",
    "{{ 'a' * 10 }}",
    "{{ 7*7 }}",
    "{% if %}",
    "{% endif %}",
    "{{",
    "}}",
    "{# unclosed",
    "{% raw %}{{ x }}{% endraw %}",
    "{% include 'x' %}",
    "{% import 'nope' as n %}",
    "{% extends 'nope' %}",
    "{{ links.guide }}",
    "{{ footer.unsubscribe_url }}",
    "{{ footer.postal_address }}",
    '<a href="https://demo.example/x?a=1">link</a>',
    "<style>p{color:red}</style><p>styled</p>",
    '<p style="color:">',
    "\r\nBcc: victim@evil.example\r\n",
    "{{ contact.email }}\n",
    "{{ account.name | safe }}",
    "{{ 1/0 }}",
    "{{ [] | first }}",
    "{{ {}.x }}",
    "{{ range(3) | list }}",
    "{% set x = 'y' %}{{ x }}",
    "{{ contact.first_name.format(contact) }}",
    "{{ 'x'.join }}",
]
template_source = st.one_of(
    st.lists(st.one_of(st.sampled_from(TEMPLATE_PIECES), st.text(max_size=10)), max_size=5).map(
        "".join
    ),
    st.text(max_size=60),
)

DATA_PIECES = [
    "{{ 7*7 }}",
    "{% for x in y %}",
    "<script>alert(1)</script>",
    "\r\nBcc: victim@evil.example",
    "\nSubject: spoof",
    "\u2028line sep",
    "\x00nul",
    "=?utf-8?q?encoded?=",
    "Ana",
    "Núñez",
    "O'Brien",
    '"quoted, name"',
    "a" * 200,
    "😀",
    "\u202eRTL",
    "--=_abm_boundary",
    ".",
    "\r\n.\r\n",
]
data_text = st.one_of(
    st.sampled_from(DATA_PIECES),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
    st.lists(st.sampled_from(DATA_PIECES), min_size=1, max_size=3).map("".join),
)
optional_text = st.none() | data_text

# --------------------------------------------------------------------------- webhook bodies

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)

SENDGRID_FIELDS = {
    "email": st.sampled_from(["ana@acme.example", "nobody@else.example", "ANA@ACME.EXAMPLE "])
    | json_values,
    "timestamp": st.sampled_from([1_764_000_000, 1e300, -1e300, 10**30, 0, -1, 1_764_000_000.5])
    | json_values,
    "event": st.sampled_from(
        ["open", "click", "bounce", "spamreport", "unsubscribe", "processed", "nonsense"]
    )
    | json_values,
    "sg_event_id": st.text(max_size=300) | json_values,
    "abm_message_id": st.sampled_from(["<abm.1.x@demo.example>", "x" * 300]) | json_values,
    "type": st.sampled_from(["blocked", "bounce"]) | json_values,
    "url": json_values,
    "reason": json_values,
}


@st.composite
def sendgrid_events(draw: st.DrawFn) -> bytes:
    """A JSON body shaped like SendGrid's, with any field missing, odd or of the wrong type."""
    events = []
    for _ in range(draw(st.integers(0, 3))):
        keys = draw(st.lists(st.sampled_from(sorted(SENDGRID_FIELDS)), unique=True))
        events.append({key: draw(SENDGRID_FIELDS[key]) for key in keys})
    body: object = events
    if draw(st.integers(0, 5)) == 0:
        body = draw(json_values)
    return json.dumps(body, allow_nan=True).encode()


webhook_body = st.one_of(
    sendgrid_events(),
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"[" * 5000 + b"]" * 5000,
            b"[NaN]",
            b'[{"event":"open","sg_event_id":"e","timestamp":1e999,"email":"a"}]',
            b'[{"event":"open","sg_event_id":"e","timestamp":NaN,"email":"a"}]',
            b'[{"event":"open","sg_event_id":"e\\u0000","timestamp":1,"email":"a\\u0000"}]',
            b'[{"event":"open","sg_event_id":"\\ud800","timestamp":1,"email":"a"}]',
            b"\xff\xfe[\x00]\x00",
            '[{"email": "é"}]'.encode("utf-16"),
        ]
    ),
)
