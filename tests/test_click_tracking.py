"""First-party click tracking and the open pixel, at the wire: messages sent through the
outbox have their links rewritten to signed redirects on ABM_PUBLIC_URL; following one
stores the click once (campaign, step, variant, message) and redirects to the original URL;
scanners are recorded apart and never counted; forged, tampered, oversize or foreign-key
tokens get a clear refusal and never a redirect."""

from __future__ import annotations

import base64
import logging
import re
from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import update
from tracking_support import (
    BROWSER,
    GUIDE,
    SECRET,
    TRACKED,
    campaign_file,
    client,
    client_for,
    events,
    ledger_row,
    messages,
    parts,
    score,
    sent_world,
    tracked_paths,
    world,
)

from core.campaign_file import load_campaign
from core.settings import get_settings, reset_settings
from core.tracking_tokens import (
    SigningKeys,
    make_click_token,
    make_open_token,
    read_click_token,
    read_visitor_token,
)
from models.tables import Account, Delivery, utcnow
from stages.content.compose import Composer
from stages.delivery.send_rules import stop_reasons

__all__ = ["client", "client_for", "sent_world", "world"]  # fixtures, used by name
NEW_ACCOUNT = {"technologies": [], "attributes": {}, "icp_reasons": [], "stage": "target"}


def test_outbox_messages_have_every_link_rewritten_but_the_unsubscribe_link(world):
    for message in messages(world["outbox"]):
        html, text = parts(message)
        unsubscribe = message["List-Unsubscribe"].strip("<>")
        assert "demo.example/guides" not in html and "demo.example/guides" not in text
        assert TRACKED.search(html) and TRACKED.search(text)
        assert unsubscribe in html and unsubscribe in text  # untouched, in both parts
        # the same link reads the same in both parts: one link, one click to store
        assert set(TRACKED.findall(html)) == set(TRACKED.findall(text))
        for token in TRACKED.findall(html):
            target = read_click_token(SigningKeys(SECRET), token)
            assert target.url.startswith(GUIDE + "?")
            assert "utm_campaign=click-test" in target.url
            assert "unsubscribe" not in target.url


def test_a_click_redirects_to_the_original_url_and_is_stored_once(world, client):
    message = messages(world["outbox"])[0]
    row = ledger_row(world["engine"], message)
    (link,) = set(tracked_paths(message))
    before = score(world["engine"], row.account_id)

    first = client.get(link, headers={"User-Agent": BROWSER})
    # a client that took the text's closing punctuation into the link: the same click
    again = client.get(link + ").", headers={"User-Agent": BROWSER})

    assert first.status_code in (302, 303) and again.status_code == first.status_code
    target = urlsplit(first.headers["location"])
    query = parse_qs(target.query)
    assert f"{target.scheme}://{target.netloc}{target.path}" == GUIDE
    assert query["utm_source"] == ["abm"] and query["utm_campaign"] == ["click-test"]
    assert query["utm_content"] == [f"intro-{row.variant}"]
    assert first.headers["cache-control"] == "no-store"
    (click,) = events(world["engine"])
    assert click.type == "click" and click.provider == "abm"
    assert (click.contact_id, click.account_id, click.campaign_id) == (
        row.contact_id,
        row.account_id,
        row.campaign_id,
    )
    assert click.message_id == row.message_id
    assert click.data["step"] == "intro" and click.data["variant"] == row.variant
    assert click.data["url"] == first.headers["location"].split("&abm_vid=")[0]
    assert score(world["engine"], row.account_id) > before  # counted, in the same transaction
    # a counted click is `clicked` for the campaign's stop rules
    _, campaign = load_campaign(world["campaign"])
    step = campaign.steps[0].model_copy(update={"stop_if": ["clicked"]})
    stopped = stop_reasons(world["engine"], row.campaign_id, step, [{"contact_id": row.contact_id}])
    assert stopped == {row.contact_id: "stopped_clicked"}


def test_a_click_on_a_site_link_hands_the_site_a_visitor_id(world, client):
    message = messages(world["outbox"])[0]
    (link,) = set(tracked_paths(message))
    location = client.get(link, headers={"User-Agent": BROWSER}).headers["location"]
    (vid,) = parse_qs(urlsplit(location).query)["abm_vid"]
    assert re.fullmatch(r"[A-Za-z0-9_.-]{20,120}", vid)
    # it stands for the message's ledger row and the click's time, nothing personal
    delivery_id, clicked_at = read_visitor_token(SigningKeys(SECRET), vid)
    assert delivery_id == ledger_row(world["engine"], message).id
    assert abs(clicked_at - utcnow().timestamp()) < 60
    payload = base64.urlsafe_b64decode(vid.split(".")[1] + "==")
    assert len(payload) == 12  # a 4-byte row id and an 8-byte time: no address, no name
    # and the tracked link's own token: the row id, a flag and the URL
    target = read_click_token(SigningKeys(SECRET), link.removeprefix("/c/"))
    assert target.site and target.delivery_id == delivery_id


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("head", "HEAD request"),
        ("scanner agent", "user agent"),
        ("no agent", "no user agent"),
        ("right after sending", "after sending"),
    ],
)
def test_scanner_clicks_are_recorded_but_never_counted(world, client, how, reason, caplog):
    message = messages(world["outbox"])[1]
    row = ledger_row(world["engine"], message)
    (link,) = set(tracked_paths(message))
    before = score(world["engine"], row.account_id)
    headers = {"User-Agent": BROWSER}
    if how == "right after sending":
        with world["engine"].begin() as connection:
            connection.execute(
                update(Delivery)
                .where(Delivery.id == row.id)
                .values(sent_at=utcnow() - timedelta(seconds=5))
            )
    if how == "scanner agent":
        headers["User-Agent"] = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"
    if how == "no agent":
        headers["User-Agent"] = ""

    follow = client.head if how == "head" else client.get
    with caplog.at_level(logging.INFO, logger="abm.tracking"):
        response = follow(link, headers=headers)
        # the scanner is still redirected (it must see a normal link), without a visitor id
        assert response.status_code == 302 and "abm_vid" not in response.headers["location"]
        assert response.headers["location"].startswith(GUIDE)
        follow(link, headers=headers)  # scanners come back: stored once all the same

    (stored,) = events(world["engine"])
    assert stored.type == "click_scanner" and reason in stored.data["scanner"]
    assert stored.message_id == row.message_id
    assert score(world["engine"], row.account_id) == before
    _, campaign = load_campaign(world["campaign"])
    step = campaign.steps[0].model_copy(update={"stop_if": ["clicked"]})
    person = [{"contact_id": row.contact_id}]
    assert stop_reasons(world["engine"], row.campaign_id, step, person) == {}
    # the person's own click, an hour later, still counts, once
    with world["engine"].begin() as connection:
        connection.execute(
            update(Delivery)
            .where(Delivery.id == row.id)
            .values(sent_at=utcnow() - timedelta(hours=1))
        )
    client.get(link, headers={"User-Agent": BROWSER})
    client.get(link, headers={"User-Agent": BROWSER})
    assert [e.type for e in events(world["engine"])] == ["click_scanner", "click"]
    assert "scanner" in caplog.text


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def test_forged_and_tampered_links_never_redirect(world, client, caplog):
    message = messages(world["outbox"])[0]
    (link,) = set(tracked_paths(message))
    token = link.removeprefix("/c/")
    kid, payload, signature = token.split(".")
    other_key = SigningKeys("somebody-else's key")
    evil = "https://evil.example/phish"
    delivery_id = read_click_token(SigningKeys(SECRET), token).delivery_id
    forged_payload = make_click_token(other_key, delivery_id, evil).split(".")[1]
    bad = {
        "garbage": "/c/not-a-token",
        "tampered payload": f"/c/{kid}.{_flip(payload, 10)}.{signature}",
        "tampered signature": f"/c/{kid}.{payload}.{_flip(signature, 3)}",
        "another URL, our signature": f"/c/{kid}.{forged_payload}.{signature}",
        "someone else's key": "/c/" + make_click_token(other_key, delivery_id, evil),
        "non-ASCII": f"/c/{kid}.{payload}é.{signature}",
        "signature cut": f"/c/{kid}.{payload}.{signature[:-1]}?url={evil}",
        "empty part": "/c/a..b",
    }
    with caplog.at_level(logging.WARNING, logger="abm.tracking"):
        for name, path in bad.items():
            response = client.get(path, headers={"User-Agent": BROWSER})
            assert response.status_code == 404, name
            assert "location" not in response.headers, name
            assert "not valid" in response.text, name
        oversize = client.get("/c/" + "A" * 5000, headers={"User-Agent": BROWSER})
    assert oversize.status_code == 414 and "location" not in oversize.headers
    assert events(world["engine"]) == []
    refusals = [r.getMessage() for r in caplog.records if "refused a click" in r.getMessage()]
    assert len(refusals) == len(bad) + 1
    assert all(token not in line and payload not in line for line in refusals)
    # a URL beside a valid token is never where it goes
    response = client.get(f"{link}?url={evil}", headers={"User-Agent": BROWSER})
    assert response.headers["location"].startswith(GUIDE + "?")


def test_links_signed_with_a_previous_key_keep_working(world, client_for):
    message = messages(world["outbox"])[0]
    (link,) = set(tracked_paths(message))
    rotated = client_for(secret_key="the-new-key", previous_secret_keys=f"older-key, {SECRET}")
    response = rotated.get(link, headers={"User-Agent": BROWSER})
    assert response.status_code == 302 and response.headers["location"].startswith(GUIDE)
    assert [e.type for e in events(world["engine"])] == ["click"]
    # and new links are signed with the new key, which the old configuration does not know
    new_link = "/c/" + make_click_token(SigningKeys("the-new-key"), 1, GUIDE)
    assert rotated.get(new_link, headers={"User-Agent": BROWSER}).status_code == 302
    forgotten = client_for(secret_key="the-new-key", previous_secret_keys="older-key")
    assert forgotten.get(link, headers={"User-Agent": BROWSER}).status_code == 404
    unrotated = client_for(secret_key=SECRET, previous_secret_keys="")
    assert unrotated.get(new_link, headers={"User-Agent": BROWSER}).status_code == 404


def test_an_unsubscribe_link_survives_a_key_rotation_too(world, client_for):
    message = messages(world["outbox"])[0]
    path = urlsplit(message["List-Unsubscribe"].strip("<>")).path
    rotated = client_for(secret_key="the-new-key", previous_secret_keys=SECRET)
    assert rotated.get(path).status_code == 200
    forgotten = client_for(secret_key="the-new-key", previous_secret_keys="")
    assert forgotten.get(path).status_code == 404


def composed(
    world: dict[str, Any], tracking: str, patch: pytest.MonkeyPatch, **env: str
) -> tuple[str, str]:
    for name, value in env.items():
        patch.setenv(f"ABM_{name.upper()}", value)
    reset_settings()
    path = campaign_file(world["db"].parent / "variants" / tracking.replace(" ", ""), tracking)
    key, campaign = load_campaign(path)
    row = {
        "delivery_id": 7,
        "contact_id": 3,
        "email": "ana@acme.example",
        "first_name": "Ana",
        "last_name": "Nunez",
        "title": "CFO",
        "seniority": "c_level",
        "function": "finance",
        "role": "approver",
        "domain": "acme.example",
        "account_name": "Acme",
        "industry": None,
        "tier": 1,
        "country": None,
        "employees": None,
        "variant": "a",
    }
    built = Composer(get_settings(), key, 1, campaign, campaign.steps[0]).email(row)
    return parts(message_from_bytes(built.as_bytes(), policy=default))


@pytest.mark.parametrize(
    ("tracking", "env", "rewritten"),
    [
        ("{clicks: false}", {}, False),
        ("{}", {"email_backend": "sendgrid", "sendgrid_api_key": "SG.x"}, False),
        ("{}", {"email_backend": "smtp", "smtp_relay": "mailgun"}, False),
        ("{}", {"email_backend": "smtp", "smtp_relay": "generic"}, True),
        ("{}", {"email_backend": "console"}, True),
    ],
)
def test_links_are_left_alone_when_clicks_are_off_or_the_provider_tracks(
    world, tracking, env, rewritten, monkeypatch
):
    html, text = composed(world, tracking, monkeypatch, **env)
    assert bool(TRACKED.search(html)) is rewritten and bool(TRACKED.search(text)) is rewritten
    if not rewritten:
        assert f'href="{GUIDE}?utm_source=abm' in html and f"{GUIDE}?utm_source=abm" in text
    assert "/o/" not in html  # no pixel unless the campaign asks for opens


GIF = re.compile(r'<img src="http://127\.0\.0\.1:8025(/o/[A-Za-z0-9_.-]+\.gif)"')


def test_the_open_pixel_is_off_by_default_and_on_when_opens_is_true(world, monkeypatch):
    html, _ = composed(world, "{}", monkeypatch)
    assert not GIF.search(html)
    html, text = composed(world, "{opens: true}", monkeypatch)
    assert len(GIF.findall(html)) == 1
    assert 'width="1" height="1"' in html and 'alt=""' in html and "/o/" not in text
    # the provider's own pixel when it tracks: none of ours
    html, _ = composed(world, "{opens: true}", monkeypatch, email_backend="sendgrid")
    assert not GIF.search(html)


def test_the_open_pixel_answers_a_gif_and_stores_one_open(world, client):
    message = messages(world["outbox"])[2]
    row = ledger_row(world["engine"], message)
    path = f"/o/{make_open_token(SigningKeys(SECRET), row.id)}.gif"
    first, again = client.get(path), client.get(path)
    for response in (first, again):
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/gif"
        assert response.headers["cache-control"] == "no-store"
        assert (
            response.content.startswith(b"GIF89a") and response.content[6:10] == b"\x01\x00\x01\x00"
        )
    (opened,) = events(world["engine"])
    assert opened.type == "open" and opened.message_id == row.message_id
    assert opened.data["step"] == "intro" and opened.data["variant"] == row.variant
    forged = client.get(f"/o/{make_open_token(SigningKeys('not ours'), row.id)}.gif")
    assert forged.status_code == 404 and forged.content.startswith(b"GIF89a")
    assert len(events(world["engine"])) == 1


def test_a_preview_link_redirects_but_stores_nothing(world, client):
    """Previews and `campaign validate` have no ledger row (delivery id 0): their links go
    where they point, and count nothing."""
    path = "/c/" + make_click_token(SigningKeys(SECRET), 0, GUIDE)
    response = client.get(path, headers={"User-Agent": BROWSER})
    assert response.status_code == 302 and response.headers["location"] == GUIDE
    assert events(world["engine"]) == []


def test_many_clicks_at_once_are_each_stored_once(world):
    """Concurrent requests share batches: 60 clicks on 6 links, all at once, store 6."""
    import asyncio

    import httpx

    from abm.webhooks import create_app

    links = [sorted(set(tracked_paths(m)))[0] for m in messages(world["outbox"])[:6]]

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=create_app(get_settings()))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = await asyncio.gather(
                *(client.get(link, headers={"User-Agent": BROWSER}) for link in links * 10)
            )
        return [answer.status_code for answer in answers]

    assert asyncio.run(burst()) == [302] * 60
    stored = events(world["engine"])
    assert sorted(e.type for e in stored) == ["click"] * 6
    for message in messages(world["outbox"])[:6]:
        assert score(world["engine"], ledger_row(world["engine"], message).account_id) > 0


def test_a_batch_that_fails_is_stored_hit_by_hit_and_loses_nothing():
    import asyncio

    from abm.tracking import HitWriter
    from stages.engagement.first_party import Hit, Recorded

    stored: list[int] = []
    rolled: list[set[int]] = []

    def store(hits):
        if any(hit.delivery_id == 13 for hit in hits):
            raise RuntimeError("row 13 is poison")
        stored.extend(hit.delivery_id for hit in hits)
        return [Recorded("click", None, 100 + hit.delivery_id) for hit in hits]

    writer = HitWriter(store, rolled.append, frozenset({"click"}))

    async def burst() -> list[Any]:
        hits = [Hit("click", n, utcnow(), url=GUIDE) for n in (11, 12, 13, 14)]
        return await asyncio.gather(*(writer.record(hit) for hit in hits), return_exceptions=True)

    answers = asyncio.run(burst())
    assert [type(answer).__name__ for answer in answers] == [
        "Recorded",
        "Recorded",
        "RuntimeError",
        "Recorded",
    ]
    assert sorted(stored) == [11, 12, 14]
    assert set().union(*rolled) == {111, 112, 114}


def test_the_demo_follows_tracked_links_as_simulated_people_only(world):
    from abm.demo_tracking import simulate_tracked_engagement
    from core.errors import ConfigError
    from stages.engagement.rollup import simulate_campaign_engagement

    engine = world["engine"]
    campaign_id = ledger_row(engine, messages(world["outbox"])[0]).campaign_id
    simulate_campaign_engagement(engine, campaign_id)
    settings = get_settings().model_copy(update={"outbox_dir": world["outbox"]})

    tracked = simulate_tracked_engagement(engine, settings)

    assert tracked.clicks > 0 and tracked.stored["click"] == tracked.clicks
    assert tracked.stored["click_scanner"] > 0 and tracked.stored["web_visit"] > 0
    stored = events(engine)
    assert all(e.provider == "simulated" and e.data.get("simulated") is True for e in stored)
    # never on a database with real accounts
    with engine.begin() as connection:
        connection.execute(Account.__table__.insert().values(domain="acme.com", **NEW_ACCOUNT))
    with pytest.raises(ConfigError, match="demo"):
        simulate_tracked_engagement(engine, settings)
