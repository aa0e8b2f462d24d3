"""Campaign files, template resolution, safe and correct content, variants, preview."""

import re
from collections import Counter
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from markupsafe import Markup

from core.campaign_file import load_campaign, parse_wait
from core.errors import ConfigError
from core.settings import get_settings
from core.tracking_tokens import SigningKeys, read_click_token
from stages.content.email_html import add_utm, html_to_text
from stages.content.rendering import (
    candidates,
    choose_variant,
    company,
    possessive,
    render_linkedin_text,
    resolve,
    template_environment,
    template_names,
)
from stages.delivery.preview import validate_campaign

ROOT = Path(__file__).resolve().parents[1]


def _followed(text: str) -> str:
    """The text with each tracked link (first-party click tracking, on by default with the
    outbox) replaced by where it leads."""
    keys = SigningKeys(get_settings().signing_key())
    return re.sub(
        r"http://127\.0\.0\.1:8025/c/([A-Za-z0-9_.-]+)",
        lambda found: read_click_token(keys, found.group(1)).url,
        text,
    )


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_resolution_goes_from_most_specific_down_to_the_template_default():
    assert list(candidates("email", "intro", 1, "Financial Services", "approver")) == [
        "email/intro/tier-1/financial-services/approver",
        "email/intro/tier-1/financial-services",
        "email/intro/tier-1/_/approver",
        "email/intro/_/financial-services/approver",
        "email/intro/tier-1",
        "email/intro/_/financial-services",
        "email/intro/_/_/approver",
        "email/intro",
    ]


def test_each_file_resolves_on_its_own():
    names = frozenset(
        {
            "email/x/subject.j2",
            "email/x/body.html.j2",
            "email/x/_/_/approver/subject.j2",
            "email/x/tier-1/body.html.j2",
        }
    )
    where = {"tier": 1, "industry": "Retail", "role": "approver"}
    assert resolve(names, "email", "x", "subject.j2", **where) == "email/x/_/_/approver/subject.j2"
    assert resolve(names, "email", "x", "body.html.j2", **where) == "email/x/tier-1/body.html.j2"
    other = {"tier": 2, "industry": None, "role": "user"}
    assert resolve(names, "email", "x", "subject.j2", **other) == "email/x/subject.j2"
    assert resolve(names, "email", "x", "body.txt.j2", required=False, **other) is None
    with pytest.raises(ConfigError, match=r"no template email/y/subject\.j2"):
        resolve(names, "email", "y", "subject.j2", **other)


def test_utm_parameters_are_added_once_and_only_to_chosen_domains():
    params = {"utm_source": "abm", "utm_medium": "email"}
    url = add_utm("https://demo.example/a?x=1&utm_source=partner", params, ("demo.example",))
    assert url == "https://demo.example/a?x=1&utm_source=partner&utm_medium=email"
    assert add_utm("https://other.example/", params, ("demo.example",)) == "https://other.example/"
    assert "utm_source=abm" in add_utm("https://www.demo.example/", params, ("demo.example",))


def test_the_text_part_is_derived_from_html_with_links_spelled_out():
    html = (
        "<html><head><style>p{color:red}</style></head><body><p>Hi Ana,</p>"
        '<p>Read <a href="https://d.example/g">the guide</a>.<br>Thanks</p>'
        "<ul><li>one</li><li>two &amp; three</li></ul></body></html>"
    )
    assert html_to_text(html) == (
        "Hi Ana,\n\nRead the guide (https://d.example/g).\nThanks\n\n- one\n- two & three\n"
    )


def test_company_and_possessive_filters():
    assert company("Acme Robotics GmbH") == "Acme Robotics"
    assert company("Globex, Inc.") == "Globex"
    assert company("Globex, Inc.") == "Globex"  # the second time from the cache
    assert company(Markup("Acme <b>GmbH</b> GmbH")) == "Acme <b>GmbH</b>"  # not cached
    assert possessive("Acme") == "Acme's"
    assert possessive("Siemens") == "Siemens'"


def test_variants_are_stable_per_person_and_follow_the_weights():
    weights = [("a", 70), ("b", 30)]
    first = [choose_variant(weights, f"c:s:person{i}@x.example") for i in range(5000)]
    again = [choose_variant(weights, f"c:s:person{i}@x.example") for i in range(5000)]
    assert first == again
    share = Counter(first)["a"] / len(first)
    assert 0.67 < share < 0.73


def test_a_linkedin_note_over_the_limit_is_an_error_not_cut(tmp_path):
    _write(tmp_path / "linkedin_task" / "long" / "connect.j2", "x" * 301)
    _write(tmp_path / "linkedin_task" / "ok" / "connect.j2", "Hi {{ contact.first_name }}")
    env, names = template_environment(tmp_path), template_names(tmp_path)
    from stages.content.rendering import TemplateKey

    audience = TemplateKey(1, None, None)
    context = {"contact": {"first_name": "Ana"}}
    assert render_linkedin_text(env, names, "ok", "connect", audience, context) == "Hi Ana"
    with pytest.raises(ValueError, match="301 characters; LinkedIn allows 300"):
        render_linkedin_text(env, names, "long", "connect", audience, context)


@pytest.mark.parametrize(
    ("text", "days"), [("3d", 3), ("2w", 14), ("12h", 0.5), ("90m", 0.0625), ("0d", 0)]
)
def test_waits_read_as_durations(text, days):
    assert parse_wait(text).total_seconds() == days * 86400


def test_the_example_campaigns_validate():
    for path in sorted((ROOT / "campaigns").glob("*.yaml")):
        lines = validate_campaign(path, get_settings())
        assert "is valid" in lines[0]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("name: X\nsteps:\n  - id: a\n    colour: red\n", ":4: steps[0].colour: Extra inputs"),
        ("name: X\nsteps:\n  - id: a\n    wait: soon\n", ":4: steps[0].wait: Value error"),
        ("name: X\nsteps:\n  - id: a\n    stop_if: [stage >= vip]\n", ":4: steps[0].stop_if:"),
        ("name: X\naudience:\n  tiers: [4]\nsteps:\n  - id: a\n", ":3: audience.tiers[0]:"),
        ("name: X\nsending_window:\n  timezone: Mars/Base\nsteps: [{id: a}]\n", ":3: sending"),
        ("name: X\nsteps:\n  - id: a\n    channel: fax\n", ":4: steps[0].channel:"),
    ],
)
def test_campaign_file_mistakes_name_file_line_and_field(tmp_path, yaml_text, message):
    path = _write(tmp_path / "c.yaml", yaml_text)
    with pytest.raises(ConfigError) as error:
        load_campaign(path)
    assert f"{path}{message}" in str(error.value)


def _campaign_with_template(tmp_path, body: str) -> Path:
    templates = tmp_path / "templates"
    _write(templates / "email" / "t" / "subject.j2", "Hello")
    _write(templates / "email" / "t" / "body.html.j2", body)
    return _write(tmp_path / "c.yaml", "name: X\nsteps:\n  - id: s\n    template: t\n")


def test_validate_reports_a_missing_field_with_template_file_and_line(tmp_path, monkeypatch):
    path = _campaign_with_template(tmp_path, "<p>Hi</p>\n<p>{{ contact.nickname }}</p>")
    monkeypatch.setenv("ABM_TEMPLATES_DIR", str(tmp_path / "templates"))
    from core.settings import reset_settings

    reset_settings()
    with pytest.raises(ConfigError) as error:
        validate_campaign(path, get_settings())
    assert "email/t/body.html.j2:2" in str(error.value)
    assert "nickname" in str(error.value)


def test_validate_calls_out_templates_that_reach_for_python_internals(tmp_path, monkeypatch):
    path = _campaign_with_template(tmp_path, "{{ contact.__class__.__mro__ }}")
    monkeypatch.setenv("ABM_TEMPLATES_DIR", str(tmp_path / "templates"))
    from core.settings import reset_settings

    reset_settings()
    with pytest.raises(ConfigError, match="Python internals"):
        validate_campaign(path, get_settings())


_ANA = {
    "delivery_id": 5,
    "contact_id": 9,
    "email": "ana@acme.example",
    "first_name": "Ana",
    "last_name": "Núñez",
    "title": "CFO",
    "seniority": "c_level",
    "function": "finance",
    "role": "approver",
    "domain": "acme.example",
    "account_name": "Acme GmbH",
    "industry": "Manufacturing",
    "tier": 1,
    "country": "DE",
    "employees": 900,
}


def test_css_is_inlined_and_utm_added_in_the_real_message(tmp_path):
    from stages.content.compose import Composer

    key, campaign = load_campaign(ROOT / "campaigns" / "tier1-executive-programme.yaml")
    step = campaign.steps[0]
    row = {**_ANA, "stage": "target", "variant": "a"}
    message = Composer(get_settings(), key, 1, campaign, step).email(row)
    parsed = message_from_bytes(message.as_bytes(), policy=default)
    html = _followed(parsed.get_body(("html",)).get_content())
    text = _followed(parsed.get_body(("plain",)).get_content())
    assert "<style" not in html and 'style="' in html
    assert "utm_campaign=tier1-executive-programme" in html
    assert "utm_content=exec-intro-a" in text
    assert parsed["Subject"] == "Acme: the cost of eleven tools, in one page"
    assert "unsubscribe/" in parsed["List-Unsubscribe"] and "utm_" not in parsed["List-Unsubscribe"]


def test_one_composer_gives_each_variant_its_own_utm_content():
    from stages.content.compose import Composer

    key, campaign = load_campaign(ROOT / "campaigns" / "tier1-executive-programme.yaml")
    composer = Composer(get_settings(), key, 1, campaign, campaign.steps[0])
    row = {**_ANA, "last_name": None}
    for variant in ("a", "b", "a"):
        message = composer.email({**row, "variant": variant})
        parsed = message_from_bytes(message.as_bytes(), policy=default)
        text = _followed(parsed.get_body(("plain",)).get_content())
        other = "b" if variant == "a" else "a"
        assert f"utm_content=exec-intro-{variant}" in text
        assert f"utm_content=exec-intro-{other}" not in text
        assert parsed["To"] == "Ana <ana@acme.example>"
