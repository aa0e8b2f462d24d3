"""Templates prepared once give the same messages as rendering each one the long way."""

import html as html_lib
import traceback
from collections.abc import Callable
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from markupsafe import Markup
from test_rendering import SENDER, _message
from tests_support import write_file

from stages.content.prepared_templates import (
    UTM_KEY,
    CannotPrepare,
    LinkTags,
    PreparedEmail,
    SinglePass,
    prepare_sources,
    render_quick,
)
from stages.content.rendering import (
    EmailParts,
    EmailTemplates,
    TemplateKey,
    email_templates,
    render_context,
    render_email_parts,
    render_originals,
    template_environment,
    template_names,
)

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
UTM = {"utm_source": "abm", "utm_medium": "email", "utm_campaign": "c", "utm_content": "s"}
LINKS = {
    "guide": "https://demo.example/guide?a=1&b=2",
    "brief": "https://demo.example/brief",
    "case_study": "https://other.example/case",
    "meeting": "https://demo.example/meet",
}
PEOPLE = [
    {"first_name": "Ana", "last_name": "Núñez", "function": "finance", "role": "approver"},
    {"first_name": "O'Neil  \n Jr <b>", "last_name": "A&B", "function": None, "role": None},
    {"first_name": None, "last_name": "", "function": "it", "role": "user"},
]
ACCOUNTS = [
    {"name": "Acme Robotics GmbH", "industry": "Manufacturing", "tier": 1, "employees": 900},
    {"name": 'Globex & "Sons" {{ 7*7 }}', "industry": None, "tier": 3, "employees": None},
]


def _context(person: dict, account: dict) -> dict:
    contact = {"email": "x@acme.example", "title": "CFO", "seniority": "c_level", **person}
    account = {"domain": "acme.example", "country": "DE", **account}
    footer = {"postal_address": "1 Example St", "unsubscribe_url": "https://u.example/t/1"}
    return render_context(contact, account, SENDER, LINKS, footer, {"variant": None})


def _same(prepared: EmailParts, original: EmailParts) -> None:
    assert prepared.subject == original.subject
    assert prepared.text == original.text
    # escaping may differ in spelling (&#39; or ') but never in what a reader sees
    assert html_lib.unescape(prepared.html) == html_lib.unescape(original.html)


def _html_templates() -> list[str]:
    names = template_names(TEMPLATES)
    folders = {name.split("/")[1] for name in names if name.startswith("email/")}
    return sorted(folders - {"_partials"})


@pytest.mark.parametrize("template", _html_templates())
def test_every_shipped_template_is_prepared_and_renders_like_the_original(template):
    env, names = template_environment(TEMPLATES), template_names(TEMPLATES)
    for person in PEOPLE:
        for account in ACCOUNTS:
            audience = TemplateKey(account["tier"], account["industry"], person["role"])
            found = email_templates(env, names, template, audience)
            assert found.prepared is not None, found.html_name
            context = _context(person, account)
            parts = render_email_parts(env, names, template, audience, context, UTM)
            _same(parts, render_originals(env, found, context, UTM))
            assert "utm_source=abm" in parts.html and "t/1?utm" not in parts.html


def test_prepared_html_escapes_contact_data_and_never_runs_it():
    env, names = template_environment(TEMPLATES), template_names(TEMPLATES)
    context = _context(PEOPLE[1], ACCOUNTS[1])
    parts = render_email_parts(env, names, "intro", TemplateKey(3, None, None), context, UTM)
    assert "<b>" not in parts.html and "&lt;b&gt;" in parts.html
    assert "{{ 7*7 }}" in parts.html and "49" not in parts.text
    assert "O'Neil Jr <b>" in parts.text  # the text part is not HTML: data as it is


def _templates(tmp_path: Path, body: str) -> Path:
    write_file(tmp_path / "email" / "t" / "subject.j2", "Hello {{ contact.first_name }}")
    write_file(tmp_path / "email" / "t" / "body.html.j2", body)
    return tmp_path


HEAD = "<html><head><style>td { color: red } .x { color: blue }</style></head><body>"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (HEAD + "<table>{% for n in [1] %}<tr><td>{{ n }}</td></tr>{% endfor %}</table>", "moved"),
        (HEAD + '<p class="{{ contact.role }}">Hi</p>', "inside an HTML tag"),
        ("<html><head><style>p { color: {{ contact.role }} }</style></head><p>x</p>", "CSS"),
        ('{% extends "email/base.html.j2" %}', "computed name"),
        (HEAD + "<p>&#123;&#123; 7*7 &#125;&#125;</p>", "Jinja syntax of its own"),
    ],
)
def test_templates_that_cannot_be_prepared_keep_the_per_message_path(tmp_path, body, reason):
    root = _templates(tmp_path, body)
    write_file(root / "email" / "base.html.j2", "<p>{{ contact.first_name }}</p>")
    env, names = template_environment(root), template_names(root)
    with pytest.raises(CannotPrepare, match=reason):
        prepare_sources(env, "email/t/body.html.j2")
    audience = TemplateKey(None, None, "user")
    context = _context(PEOPLE[0], ACCOUNTS[0])
    assert email_templates(env, names, "t", audience).prepared is None
    parts = render_email_parts(env, names, "t", audience, context, UTM)
    assert parts == render_originals(env, email_templates(env, names, "t", audience), context, UTM)


def test_includes_blocks_and_links_are_carried_into_the_prepared_template(tmp_path):
    body = (
        HEAD + '{% include "email/_p.html.j2" %}'
        "{% if account.tier == 1 %}<p>Tier one</p>{% else %}<p>Other</p>{% endif %}"
        '<p><a href="https://demo.example/x?y=1&amp;z=2">{{ account.name }}</a>'
        ' <a href="{{ footer.unsubscribe_url }}">Unsubscribe</a></p></body></html>'
    )
    root = _templates(tmp_path, body)
    write_file(root / "email" / "_p.html.j2", '<p class="x">{{ contact.first_name }}</p>')
    env, names = template_environment(root), template_names(root)
    audience = TemplateKey(1, None, None)
    found = email_templates(env, names, "t", audience)
    assert found.prepared is not None
    context = _context(PEOPLE[0], ACCOUNTS[0])
    parts = render_email_parts(env, names, "t", audience, context, UTM)
    _same(parts, render_originals(env, found, context, UTM))
    assert 'style="color: blue;">Ana' in parts.html and "Tier one" in parts.text
    assert "https://demo.example/x?y=1&z=2&utm_source=abm" in parts.text
    assert "Unsubscribe (https://u.example/t/1)" in parts.text


def test_an_error_in_a_prepared_template_names_the_file_and_line_people_wrote(tmp_path):
    root = _templates(tmp_path, HEAD + "<p>Hi</p>\n<p>{{ contact.nickname }}</p>")
    env, names = template_environment(root), template_names(root)
    audience = TemplateKey(None, None, None)
    assert email_templates(env, names, "t", audience).prepared is not None
    with pytest.raises(Exception, match="nickname") as error:
        render_email_parts(env, names, "t", audience, _context(PEOPLE[0], ACCOUNTS[0]))
    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(error.value.__traceback__)]
    assert any(name.endswith("email/t/body.html.j2") and line == 2 for name, line in frames)


@pytest.mark.parametrize(
    ("text", "encoding"),
    [("plain ascii\n", "7bit"), ("Grüße\n", "quoted-printable"), ("x" * 1200, "quoted-printable")],
)
def test_bodies_go_as_they_are_when_they_can_and_quoted_printable_otherwise(text, encoding):
    raw = _message(EmailParts("Subject", text, "<p>h</p>")).as_bytes()
    parsed = message_from_bytes(raw, policy=default)
    plain = parsed.get_body(("plain",))
    assert plain["Content-Transfer-Encoding"] == encoding
    assert plain.get_content().rstrip("\n") == text.rstrip("\n")
    assert max(len(line) for line in raw.split(b"\n")) <= 998


# Values the single pass must write exactly as the two renders did: escaping, whitespace
# runs and line breaks (collapsed in the text), NUL (the separator it joins values with),
# leading and trailing spaces, braces, numbers, None, and Markup that must stay unescaped.
HOSTILE = [
    "O'Neil  \n Jr <b>&amp;",
    "\x00zero\x00",
    " edge\t",
    "{0} {} {{ 7*7 }} %s",
    "Zoë\u2028line\xa0nbsp",
    "",
    None,
    1200,
    Markup("<b>bold</b> & co"),
]


def _outcome(render: Callable[[], Any]) -> Any:
    """What a render gives, or the kind of error it raises (the same data must fail the
    same way in both)."""
    try:
        return render()
    except Exception as error:
        return type(error).__name__


def _two_renders(prepared: PreparedEmail, found: EmailTemplates, values: dict) -> tuple:
    """What the single pass replaces: the subject, the HTML and the text rendered apart."""
    subject = _outcome(
        lambda: render_quick(found.subject, {k: v for k, v in values.items() if k != UTM_KEY})
    )
    return (
        subject,
        _outcome(lambda: prepared.render_html(values)),
        _outcome(lambda: prepared.render_text(values)),
    )


TAGS = LinkTags(tuple(UTM.items()), (), "https://u.example/t/1")


def _values(person: dict, account: dict) -> dict:
    return {**_context(person, account), UTM_KEY: TAGS}


def _single(single: SinglePass, values: dict) -> tuple:
    return single.render({k: v for k, v in values.items() if k != UTM_KEY}, TAGS)


def _hostile_people() -> list[tuple[dict, dict]]:
    cases = []
    for index, value in enumerate(HOSTILE):
        other = HOSTILE[(index + 3) % len(HOSTILE)]
        person = {"first_name": value, "last_name": other, "function": None, "role": "approver"}
        account = {"name": other, "industry": value, "tier": 1, "employees": value}
        cases.append((person, account))
    return cases + [(person, account) for person in PEOPLE for account in ACCOUNTS]


@pytest.mark.parametrize("template", _html_templates())
def test_the_single_pass_writes_what_the_separate_renders_wrote(template):
    env, names = template_environment(TEMPLATES), template_names(TEMPLATES)
    rendered = 0
    for person, account in _hostile_people():
        for tier, role in ((1, "approver"), (3, None)):
            industry = account["industry"] if isinstance(account["industry"], str) else None
            found = email_templates(env, names, template, TemplateKey(tier, industry, role))
            prepared = found.prepared
            assert prepared is not None and prepared.single is not None, found.html_name
            values = _values(person, account)
            expected = _two_renders(prepared, found, values)
            single = _outcome(lambda: _single(prepared.single, values))  # noqa: B023
            if isinstance(single, str):  # an error: the separate renders fail too
                assert single in expected
                continue
            subject, html, text = single
            assert (html, text) == expected[1:]
            assert subject is None if found.text else subject == expected[0]
            rendered += 1
    assert rendered > len(HOSTILE)


def _single_pass_for(tmp_path: Path, body: str, subject: str = "Hi {{ contact.first_name }}"):
    root = _templates(tmp_path, body)
    write_file(root / "email" / "t" / "subject.j2", subject)
    env, names = template_environment(root), template_names(root)
    found = email_templates(env, names, "t", TemplateKey(1, None, "approver"))
    assert found.prepared is not None
    return env, names, found


BLOCKS_AND_LINKS = (
    HEAD.replace("<head>", "<head><title>{{ account.name }}</title>")
    + "{% set who = contact.first_name | default('there', true) %}<p>Hi {{ who }},</p>"
    "{% for n in [1, 2] %}<p>{{ n }}: {{ account.name | company }}"
    "{% if loop.last %}!{% elif n > 5 %}?{% else %}.{% endif %}</p>{% endfor %}"
    '<p><a href="{{ links.guide }}">{{ account.name }} guide</a></p>'
    "{% if account.employees %}<p>{{ '{:,}'.format(account.employees) }}</p>{% endif %}"
    "{# a comment #}<p>{{ footer.postal_address }}</p></body></html>"
)


def test_loops_sets_comments_and_reordered_link_text_go_through_the_single_pass(tmp_path):
    _, _, found = _single_pass_for(tmp_path, BLOCKS_AND_LINKS)
    single = found.prepared.single
    assert single is not None and single.subject is not None
    assert any(chunk.text_order is not None for chunk in single.chunks)  # link text first
    for person, account in _hostile_people():
        values = _values(person, account)
        assert _outcome(lambda: _single(single, values)) in (  # noqa: B023
            _two_renders(found.prepared, found, values),
            *_two_renders(found.prepared, found, values),
        )


@pytest.mark.parametrize(
    "body",
    [
        "<p>{{ contact.first_name | e }}</p>",
        "<p>{{ [contact.first_name, account.name] | join(', ') }}</p>",
        "<p>{{ account.name | replace('&', 'and') }}</p>",
        "<p>{{ '<i>' | safe }}{{ account.name }}</p>",
        "<p>{{ lipsum(1, false) | length > 9 }}</p>",
        "<p>{{- contact.first_name }}</p>",
        "{% macro hi(name) %}<b>{{ name }}</b>{% endmacro %}<p>{{ hi(contact.first_name) }}</p>",
        "{% filter upper %}<p>{{ contact.first_name }}</p>{% endfilter %}",
        '<p><a href="{{ links.guide }}">{% if contact.first_name %}Guide{% endif %}</a></p>',
    ],
)
def test_what_one_pass_could_write_differently_keeps_two_renders(tmp_path, body):
    env, names, found = _single_pass_for(tmp_path, HEAD + body + "</body></html>")
    assert found.prepared.single is None
    for person, account in [*_hostile_people()[:4], (PEOPLE[1], ACCOUNTS[1])]:
        context = _context(person, account)
        parts = render_email_parts(env, names, "t", TemplateKey(1, None, "approver"), context, UTM)
        values = {**context, UTM_KEY: TAGS}
        assert (parts.html, parts.text) == _two_renders(found.prepared, found, values)[1:]


@pytest.mark.parametrize(
    ("subject", "comes_along"),
    [
        ("{{ account.name | company }}: for {{ contact.first_name }}", True),
        ("{% if contact.first_name %}Hi{% endif %} there", False),
        ("See {{ links.guide | tracked }}", False),
        ("Plain words only", False),
    ],
)
def test_a_subject_joins_the_single_pass_only_when_plain(tmp_path, subject, comes_along):
    env, names, found = _single_pass_for(tmp_path, HEAD + "<p>x</p></body></html>", subject)
    assert (found.prepared.single.subject is not None) == comes_along
    context = _context(PEOPLE[1], ACCOUNTS[1])
    audience = TemplateKey(1, None, "approver")
    parts = render_email_parts(env, names, "t", audience, context, UTM)
    assert parts.subject == render_originals(env, found, context, UTM).subject


def test_an_error_in_a_subject_in_the_single_pass_names_the_subject_file(tmp_path):
    _, _, found = _single_pass_for(tmp_path, HEAD + "<p>x</p>", "Hi {{ contact.nickname }}")
    assert found.prepared.single.subject is not None
    env, names = template_environment(tmp_path), template_names(tmp_path)
    audience = TemplateKey(1, None, "approver")
    with pytest.raises(Exception, match="nickname") as error:
        render_email_parts(env, names, "t", audience, _context(PEOPLE[0], ACCOUNTS[0]))
    frames = [f.filename for f in traceback.extract_tb(error.value.__traceback__)]
    assert any(name.endswith("email/t/subject.j2") for name in frames)


@pytest.mark.parametrize("applied", ["e", "escape"])
def test_an_explicit_escape_filter_leaves_no_entities_in_the_text_part(tmp_path, applied):
    """`| e` in an HTML template escapes for the HTML; the text part derived from it is not
    HTML and reads "Tom & Jerry", as the text derived from the rendered HTML does."""
    body = HEAD + f"<p>Hi {{{{ contact.first_name | {applied} }}}}</p></body></html>"
    env, names = template_environment(_templates(tmp_path, body)), template_names(tmp_path)
    audience = TemplateKey(1, None, "approver")
    found = email_templates(env, names, "t", audience)
    assert found.prepared is not None
    for first_name in ("Tom & Jerry", "O'Neil <b>", "&amp;", None):
        context = _context({**PEOPLE[0], "first_name": first_name}, ACCOUNTS[0])
        parts = render_email_parts(env, names, "t", audience, context, UTM)
        _same(parts, render_originals(env, found, context, UTM))
    assert "Hi None" in parts.text
