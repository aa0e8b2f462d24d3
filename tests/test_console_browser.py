"""The console in headless Chromium, as marketing ops use it: real clicks and form fills on
a live `abm serve` over a database seeded by the product's own commands
(tests/browser_support.py). Each page is screenshotted for a person to look at.

Skipped without a chromium unless ABM_TEST_REQUIRE_BROWSER=1 (CI), where it fails."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

import browser_support
import pytest
from browser_support import CAMPAIGN_KEY, PEOPLE, LiveConsole, screenshot, sign_in
from playwright.sync_api import expect

# the fixtures: the module's chromium, the module's live console, a context per test
browser, live, context = browser_support.browser, browser_support.live, browser_support.context

pytestmark = pytest.mark.slow  # a temporary Prefect server, campaign runs, a browser

CAMPAIGN = f"/console/campaigns/{CAMPAIGN_KEY}"


def _status(live: LiveConsole) -> str:
    return live.sql("SELECT status FROM campaign WHERE key = :key", key=CAMPAIGN_KEY)[0][0]


def _audited(live: LiveConsole) -> int:
    return live.sql("SELECT COUNT(*) FROM audit_log")[0][0]


def _confirm(page: Any, button: str) -> list[str]:
    """Click `button`, accepting the confirmation console.js asks for first (Playwright
    dismisses a dialog nobody handles, and the form is then not sent); what it asked."""
    asked: list[str] = []

    def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click(button)
    page.wait_for_load_state()
    return asked


def test_sign_in_refuses_a_wrong_password_and_lands_on_accounts(context: Any) -> None:
    page = context.new_page()
    page.goto("/console/accounts")
    expect(page).to_have_url(re.compile(r"/console/login$"))  # no session: the sign-in
    screenshot(page, "01-sign-in")

    page.fill("input[name=name]", "olive")
    page.fill("input[name=password]", "not-her-password")
    page.click("button[type=submit]")
    expect(page.locator(".problem")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/console/login$"))
    screenshot(page, "02-sign-in-refused")

    page.fill("input[name=password]", "operator-Passw0rd!")
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console/accounts$"))
    expect(page.locator("h1")).to_have_text("Accounts")
    expect(page.locator("header")).to_contain_text("olive")


def test_the_session_cookie_is_httponly_secure_and_samesite(context: Any) -> None:
    sign_in(context, "olive")
    cookie = next(c for c in context.cookies() if c["name"] == "abm_console")
    assert cookie["httpOnly"] and cookie["secure"]
    assert cookie["sameSite"] in ("Lax", "Strict")
    page = context.new_page()
    page.goto("/console/accounts")
    assert page.evaluate("document.cookie") == ""  # no script can read it


def test_accounts_filtered_by_tier_then_one_account(context: Any) -> None:
    page = sign_in(context, "olive")
    table = page.locator("table.accounts tbody")
    for domain in ("northwind", "bluepeak", "quietharbor"):
        expect(table).to_contain_text(f"{domain}-console.example")
    screenshot(page, "03-accounts")

    page.select_option("select[name=tier]", "1")
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"[?&]tier=1\b"))
    expect(table).to_contain_text("northwind-console.example")
    expect(table).not_to_contain_text("bluepeak-console.example")
    expect(table).not_to_contain_text("quietharbor-console.example")
    screenshot(page, "04-accounts-tier-1")

    page.click("text=northwind-console.example")
    expect(page).to_have_url(re.compile(r"/console/accounts/northwind-console\.example$"))
    body = page.locator("main")
    for _email, first, last, _title, account in PEOPLE:
        if account == "northwind":
            expect(body).to_contain_text(f"{first} {last}")  # the committee, by name
    expect(body).to_contain_text("Console check")  # the campaign it is in
    screenshot(page, "05-account")


def test_campaigns_then_a_campaign_with_its_people(context: Any, live: LiveConsole) -> None:
    page = sign_in(context, "olive")
    page.click("nav >> text=Campaigns")
    expect(page).to_have_url(re.compile(r"/console/campaigns$"))
    expect(page.locator("main")).to_contain_text("Console check")
    screenshot(page, "06-campaigns")

    page.click("main >> text=Console check")
    expect(page).to_have_url(re.compile(rf"{CAMPAIGN}$"))
    people = page.locator("main table").last
    sent = live.sql(
        "SELECT c.email FROM delivery d JOIN contact c ON c.id = d.contact_id "
        "WHERE d.state = 'sent'"
    )
    assert sent, "the seeding run sent nobody"
    for (email,) in sent:
        expect(people).to_contain_text(email)
    screenshot(page, "07-campaign")

    page.select_option("select[name=state]", "sent")
    page.locator("form", has=page.locator("select[name=state]")).locator(
        "button[type=submit]"
    ).click()
    expect(page).to_have_url(re.compile(r"[?&]state=sent\b"))
    expect(people.locator("tbody tr")).to_have_count(len(sent))
    screenshot(page, "08-campaign-people-sent")


def test_suppressions_report_and_audit_pages_load(context: Any) -> None:
    page = sign_in(context, "olive")
    for link, heading, name in (
        ("Suppressions", "Suppressions", "09-suppressions"),
        ("Report", "Account-based marketing report", "10-report"),
        ("Audit log", "Audit log", "11-audit"),
    ):
        page.click(f"nav >> text={link}")
        expect(page.locator("h1")).to_have_text(heading)
        expect(page.locator("header").first).to_contain_text("olive")  # the console's bar
        screenshot(page, name)


def test_a_pause_from_the_campaign_page_stops_the_next_send(
    context: Any, live: LiveConsole
) -> None:
    page = sign_in(context, "olive")
    page.goto(CAMPAIGN)
    before = live.sent_files()
    waiting = live.sql(  # people the campaign has not planned yet: its next run sends to them
        "SELECT COUNT(*) FROM contact WHERE id NOT IN (SELECT contact_id FROM delivery)"
    )[0][0]
    assert waiting > 1, "nobody left to send to: the seeding sent everyone"

    asked = _confirm(page, "button:has-text('Pause')")
    assert asked and asked[0].startswith("Pause Console check?"), asked
    expect(page.locator("h1 .badge")).to_have_text("paused")
    expect(page.locator("main .notice")).to_contain_text("Paused: nothing more is sent")
    expect(page.locator("main .problem")).to_contain_text("paused by olive in the console")
    assert _status(live) == "paused"
    screenshot(page, "12-campaign-paused")
    live.run_campaign()
    assert live.sent_files() == before  # paused: nothing went out

    asked = _confirm(page, "button:has-text('Resume')")
    assert asked and asked[0].startswith("Resume Console check?"), asked
    expect(page.locator("h1 .badge")).to_have_text("active")
    expect(page.locator("main .notice")).to_contain_text("Resumed")
    expect(page.locator("button:has-text('Pause')")).to_be_visible()
    assert _status(live) == "active"
    planned = live.sql("SELECT COUNT(*) FROM delivery")[0][0]
    live.run_campaign("--limit", str(planned + 1))  # the limit counts the ledger: one more
    assert live.sent_files() == before + 1  # resumed: it sends again

    page.click("nav >> text=Audit log")
    log = page.locator("main")
    expect(log).to_contain_text("olive")
    expect(log).to_contain_text("pause")
    expect(log).to_contain_text("resume")


def test_a_forged_csrf_token_is_refused_and_nothing_changes(
    context: Any, live: LiveConsole
) -> None:
    page = sign_in(context, "olive")
    page.goto(CAMPAIGN)
    status, audited = _status(live), _audited(live)
    form = page.locator("form", has=page.locator("button:has-text('Pause')"))
    form.locator("input[name=csrf_token]").evaluate("input => { input.value = 'forged' }")
    with page.expect_response(f"**{CAMPAIGN}/pause") as answered:
        _confirm(page, "button:has-text('Pause')")
    assert answered.value.status == 403
    expect(page.locator("h1 .status")).to_have_text("(403)")
    expect(page.locator("main [role=alert]")).to_contain_text("csrf_token")
    screenshot(page, "13-csrf-refused")
    assert _status(live) == status
    assert _audited(live) == audited  # and nothing was put on record as done


def test_a_viewer_sees_no_operator_button_and_a_post_is_refused(
    context: Any, live: LiveConsole
) -> None:
    page = sign_in(context, "victor")
    page.goto(CAMPAIGN)
    expect(page.locator("main")).to_contain_text("Console check")
    expect(page.locator("main button:has-text('Pause')")).to_have_count(0)
    expect(page.locator("main button:has-text('Resume')")).to_have_count(0)
    screenshot(page, "14-campaign-as-viewer")
    status = _status(live)

    token = page.locator("header input[name=csrf_token]").input_value()
    answer = page.evaluate(
        """async ([url, token]) => {
            const body = new URLSearchParams({csrf_token: token});
            const response = await fetch(url, {method: 'POST', body});
            return response.status;
        }""",
        [f"{CAMPAIGN}/pause", token],
    )
    assert answer == 403
    assert _status(live) == status


def test_no_personal_data_in_any_url(context: Any, live: LiveConsole) -> None:
    """Every URL any page of this module asked for (pages, links, scripts, forms): no
    email address, no seeded person's name."""
    page = sign_in(context, "olive")
    for path in ("/console/accounts", "/console/accounts/northwind-console.example", CAMPAIGN):
        page.goto(path)
        for link in page.locator("main a[href^='/console']").all()[:15]:
            page.goto(link.get_attribute("href") or path)
            page.go_back()
    page.goto("/console/suppressions")
    search = page.locator("main form[method=post]").filter(has=page.locator("input[name=q]"))
    if search.count():  # a search for an email is a POST: the address stays in the body
        search.locator("input[name=q]").fill(PEOPLE[0][0])
        search.locator("button[type=submit]").click()
        page.wait_for_load_state()

    assert len(live.requested) > 20
    names = {part for _email, first, last, *_ in PEOPLE for part in (first, last)}
    for url in live.requested:
        readable = unquote_plus(url)
        assert "@" not in readable, url
        for name in names:
            assert name.lower() not in readable.lower(), (name, url)
