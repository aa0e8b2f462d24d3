"""The console's access control, over EVERY route of the console app (pages added later are
covered without touching this file): nothing answers without a session, every post needs
its CSRF token, a viewer changes nothing, sessions end, cookies are locked down, sign-in
attempts are limited across server processes, and the webhook, unsubscribe and health routes
stay open. Also the reverse-proxy sign-in."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from console_support import (
    BASE_URL,
    PASSWORD,
    console_client,
    console_settings,
    csrf_of,
    form_token,
    sign_in,
    signed_in_client,
    users_file,
)
from sqlalchemy import update
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from abm.console.access import SESSION_COOKIE, Keys
from abm.console.app import console_app
from abm.console.context import ConsoleContext
from abm.console.users import UserEntry, add_user, write_users
from abm.webhooks import create_app
from models.audit import audit_page
from models.console_store import count_sessions
from models.db import get_engine, session_scope
from models.tables import ConsoleSession, utcnow

# POST routes a viewer may use: they change nothing (signing in and out). A page whose post
# only reads (a search) belongs here too, with a comment saying so.
# the suppressions search is a POST (its text may be an email address, kept out of URLs)
# that only reads: viewers may use it, with the CSRF token like every post
VIEWER_POSTS = {"/login", "/logout", "/suppressions/search"}


def _sample(path: str) -> str:
    """A console route's path with its parameters filled in: ints 1, others `x`."""
    return re.sub(r"\{(\w+)(?::(\w+))?\}", lambda m: "1" if m[2] == "int" else "example.com", path)


def console_routes(database_url: str, tmp_path) -> list[tuple[str, str]]:
    """(method, URL under /console) of every route the console app serves, as built now."""
    app = console_app(
        ConsoleContext(console_settings(database_url, tmp_path), get_engine(database_url))
    )
    found = []
    for route in app.routes:
        if isinstance(route, Mount):  # the static files: open by design
            continue
        assert isinstance(route, Route), route
        for method in sorted(route.methods or {"GET"}):
            if method != "HEAD":
                found.append((method, "/console" + _sample(route.path)))
    assert ("GET", "/console/login") in found and ("POST", "/console/logout") in found
    return found


def posts(database_url: str, tmp_path) -> list[str]:
    return [url for method, url in console_routes(database_url, tmp_path) if method == "POST"]


def test_without_a_session_every_page_redirects_to_sign_in_and_every_post_is_401(
    database_url, tmp_path
):
    client = console_client(console_settings(database_url, tmp_path))
    routes = console_routes(database_url, tmp_path)
    for method, url in routes:
        answer = client.request(method, url, data={"csrf_token": "x"} if method == "POST" else None)
        if url == "/console/login":  # the sign-in form and its post: open by design
            continue
        if method == "GET":
            assert answer.status_code == 303, (url, answer.status_code)
            assert answer.headers["location"] == "/console/login", url
        else:
            assert answer.status_code == 401, (method, url, answer.status_code)
            assert "not signed in" in answer.text
    assert client.get("/console/login").status_code == 200
    # a HEAD is a GET without a body: redirected as well
    assert client.head("/console/audit").status_code == 303


def test_every_post_refuses_a_missing_or_forged_csrf_token(database_url, tmp_path):
    client = signed_in_client(database_url, tmp_path)
    other = signed_in_client(database_url, tmp_path, name="someone")  # a real, other token
    forged = ["", "x" * 43, csrf_of(other)]
    for url in posts(database_url, tmp_path):
        answer = client.post(url, data={"name": "operator", "password": PASSWORD})
        assert answer.status_code == 403, (url, answer.status_code)
        assert "csrf_token" in answer.text and "without" in answer.text
        for token in forged:
            answer = client.post(url, data={"csrf_token": token, "reason": "r"})
            assert answer.status_code == 403, (url, token, answer.status_code)
            assert "csrf_token" in answer.text
    # nothing was done: still signed in, nothing in the audit log
    assert client.get("/console/audit").status_code == 200
    assert audit_page(get_engine(database_url)).total == 0


def test_a_post_from_another_origin_is_refused_even_with_its_token(sqlite_url, tmp_path):
    client = signed_in_client(sqlite_url, tmp_path)
    token = csrf_of(client)
    answer = client.post(
        "/console/logout", data={"csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert answer.status_code == 403 and "another site" in answer.text
    assert client.get("/console/audit").status_code == 200  # not signed out
    answer = client.post(
        "/console/logout", data={"csrf_token": token}, headers={"Origin": "https://testserver"}
    )
    assert answer.status_code == 303
    assert client.get("/console/audit").status_code == 303


def test_a_viewer_gets_403_on_every_post_but_sign_in_and_out(database_url, tmp_path):
    viewer = signed_in_client(database_url, tmp_path, role="viewer")
    token = csrf_of(viewer)
    checked = 0
    for url in posts(database_url, tmp_path):
        if url.removeprefix("/console") in VIEWER_POSTS:
            continue
        answer = viewer.post(
            url, data={"csrf_token": token, "reason": "because", "value": "a.example"}
        )
        assert answer.status_code == 403, (url, answer.status_code)
        assert "viewer" in answer.text
        checked += 1
    assert checked, "no operator post found: the campaign pause, at least, should be one"
    assert audit_page(get_engine(database_url)).total == 0
    assert viewer.get("/console/audit").status_code == 200  # reading is allowed
    assert viewer.post("/console/logout", data={"csrf_token": token}).status_code == 303


def test_a_session_cookie_signed_with_another_secret_is_refused(sqlite_url, tmp_path):
    client = signed_in_client(sqlite_url, tmp_path)
    session_id = Keys("test-secret-key").unseal("session", client.cookies[SESSION_COOKIE])
    assert session_id  # the tests' ABM_SECRET_KEY signed it
    for cookie in (
        Keys("another secret").seal("session", session_id),  # the real id, another key
        f"{session_id}.",  # no MAC
        session_id,
        Keys("test-secret-key").seal("browser", session_id),  # ours, for another purpose
    ):
        client.cookies.set(SESSION_COOKIE, cookie, domain="testserver.local", path="/console")
        assert client.get("/console/audit").status_code == 303, cookie


def test_a_cookie_signed_by_another_server_secret_never_signs_in(sqlite_url, tmp_path, monkeypatch):
    client = signed_in_client(sqlite_url, tmp_path)
    cookie = client.cookies[SESSION_COOKIE]
    monkeypatch.setenv("ABM_SECRET_KEY", "a rotated secret")
    other = console_client(console_settings(sqlite_url, tmp_path))
    other.cookies.set(SESSION_COOKIE, cookie, domain="testserver.local", path="/console")
    assert other.get("/console/audit").status_code == 303


@pytest.mark.parametrize(
    "ago",
    [
        {"last_seen_at": timedelta(hours=8, minutes=1)},
        {"created_at": timedelta(hours=12, minutes=1)},
    ],
)
def test_an_idle_or_old_session_is_refused_and_deleted(database_url, tmp_path, ago):
    client = signed_in_client(database_url, tmp_path)
    engine = get_engine(database_url)
    assert client.get("/console/audit").status_code == 200
    with session_scope(engine) as session:
        session.execute(update(ConsoleSession).values({k: utcnow() - v for k, v in ago.items()}))
    assert client.get("/console/audit").status_code == 303
    assert count_sessions(engine) == 0


def test_sign_out_deletes_the_session_and_sign_in_makes_a_new_id(database_url, tmp_path):
    client = signed_in_client(database_url, tmp_path)
    engine = get_engine(database_url)
    first = client.cookies[SESSION_COOKIE]
    assert client.get("/console/login").headers["location"] == "/console/accounts"
    client.cookies.delete(SESSION_COOKIE)
    assert sign_in(client, "operator").status_code == 303
    assert client.cookies[SESSION_COOKIE] != first
    stolen = TestClient(client.app, base_url="https://testserver", follow_redirects=False)
    stolen.cookies.set(
        SESSION_COOKIE, client.cookies[SESSION_COOKIE], domain="testserver.local", path="/console"
    )
    assert stolen.get("/console/audit").status_code == 200
    sessions = count_sessions(engine)
    assert client.post("/console/logout", data={"csrf_token": csrf_of(client)}).status_code == 303
    assert count_sessions(engine) == sessions - 1
    assert stolen.get("/console/audit").status_code == 303  # the row is gone: the cookie is dead


def test_cookies_are_secure_httponly_lax_and_scoped_to_the_console(sqlite_url, tmp_path):
    add_user(users_file(tmp_path), "amy", "operator", PASSWORD)
    client = console_client(console_settings(sqlite_url, tmp_path))
    form = client.get("/console/login")
    browser = form.headers["set-cookie"]
    answer = client.post(
        "/console/login",
        data={"name": "amy", "password": PASSWORD, "csrf_token": form_token(form.text)},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/console/accounts"
    session = answer.headers["set-cookie"]
    for cookie in (browser, session):
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert {"secure", "httponly", "samesite=lax", "path=/console"} <= set(flags), cookie
    assert session.startswith(f"{SESSION_COOKIE}=")
    assert "max-age" not in session.lower()  # gone when the browser closes


def test_the_sign_in_form_needs_its_own_token(sqlite_url, tmp_path):
    add_user(users_file(tmp_path), "amy", "operator", PASSWORD)
    client = console_client(console_settings(sqlite_url, tmp_path))
    form = client.get("/console/login")
    for token in ("", "forged", Keys("test-secret-key").sign("login", "another nonce")):
        answer = client.post(
            "/console/login", data={"name": "amy", "password": PASSWORD, "csrf_token": token}
        )
        assert answer.status_code == 403, token
    # a token from another browser's nonce cookie does not pass either (double submit)
    fresh = console_client(console_settings(sqlite_url, tmp_path))
    answer = fresh.post(
        "/console/login",
        data={"name": "amy", "password": PASSWORD, "csrf_token": form_token(form.text)},
    )
    assert answer.status_code == 403
    assert SESSION_COOKIE not in client.cookies and SESSION_COOKIE not in fresh.cookies


def _attempt(client: TestClient, name: str, password: str):
    form = client.get("/console/login")
    return client.post(
        "/console/login",
        data={"name": name, "password": password, "csrf_token": form_token(form.text)},
    )


def test_sign_in_is_rate_limited_by_name_across_server_processes(database_url, tmp_path, caplog):
    add_user(users_file(tmp_path), "amy", "operator", PASSWORD)
    settings = console_settings(database_url, tmp_path)
    one, two = console_client(settings), console_client(settings)  # two servers, one database
    for attempt in range(5):
        answer = _attempt(one if attempt % 2 else two, "amy", f"wrong password {attempt}")
        assert answer.status_code == 401 and "wrong" in answer.text
    answer = _attempt(two, "amy", PASSWORD)  # the right one: refused before it is checked
    assert answer.status_code == 429
    assert 0 < int(answer.headers["Retry-After"]) <= 15 * 60
    assert "Too many failed sign-ins" in answer.text
    assert SESSION_COOKIE not in two.cookies
    assert "wrong password" not in caplog.text and "'amy'" in caplog.text
    # another name from the same address is not held by amy's limit
    add_user(users_file(tmp_path), "bob", "viewer", PASSWORD)
    assert _attempt(one, "bob", PASSWORD).status_code == 303


def test_sign_in_is_rate_limited_by_address(sqlite_url, tmp_path):
    add_user(users_file(tmp_path), "amy", "operator", PASSWORD)
    client = console_client(console_settings(sqlite_url, tmp_path))
    for n in range(20):
        assert _attempt(client, f"guess{n}", "some password").status_code == 401
    answer = _attempt(client, "amy", PASSWORD)
    assert answer.status_code == 429 and "Retry-After" in answer.headers


def test_a_correct_password_clears_the_names_earlier_failures(sqlite_url, tmp_path):
    add_user(users_file(tmp_path), "amy", "operator", PASSWORD)
    client = console_client(console_settings(sqlite_url, tmp_path))
    for _ in range(4):
        assert _attempt(client, "amy", "typo typo typo").status_code == 401
    assert _attempt(client, "amy", PASSWORD).status_code == 303
    other = console_client(console_settings(sqlite_url, tmp_path))
    for _ in range(4):
        assert _attempt(other, "amy", "typo typo typo").status_code == 401
    assert _attempt(other, "amy", PASSWORD).status_code == 303


def test_webhooks_unsubscribe_and_health_answer_without_a_session(sqlite_url, tmp_path):
    client = console_client(console_settings(sqlite_url, tmp_path))
    assert client.get("/healthz").text == "ok"
    answer = client.post("/webhooks/sendgrid", content=b"[]")
    assert answer.status_code == 403 and "SENDGRID" in answer.text  # its own refusal
    answer = client.get("/unsubscribe/not-a-token")
    assert answer.status_code == 404 and "not valid" in answer.text
    assert client.get("/console/static/console.css").status_code == 200


def test_with_no_user_the_sign_in_page_says_how_to_create_one(sqlite_url, tmp_path):
    client = console_client(console_settings(sqlite_url, tmp_path))
    page = client.get("/console/login")
    assert page.status_code == 200
    assert "abm console add-user NAME --role operator" in page.text
    assert str(users_file(tmp_path)) in page.text
    assert client.get("/console/audit").status_code == 303


def test_a_broken_users_file_refuses_everyone_and_names_the_problem_in_the_log(
    sqlite_url, tmp_path, caplog
):
    client = signed_in_client(sqlite_url, tmp_path)
    users_file(tmp_path).write_text("users:\n  - name: amy\n    role: admin\n")
    answer = client.get("/console/audit")
    assert answer.status_code == 503 and "abm doctor" in answer.text
    # the file and the problem are for the log, not for whoever opens the page
    assert "console-users.yaml" not in answer.text and "admin" not in answer.text
    assert "console-users.yaml" in caplog.text and "role" in caplog.text
    assert client.get("/console/login").status_code == 503


def test_unlock_lets_a_user_held_by_the_sign_in_limit_in_again(
    sqlite_url, tmp_path, capsys, monkeypatch
):
    from cli_support import run_abm

    add_user(users_file(tmp_path), "amy", "operator", PASSWORD)
    client = console_client(console_settings(sqlite_url, tmp_path))
    for n in range(5):
        _attempt(client, "amy", f"wrong {n}")
    assert _attempt(client, "amy", PASSWORD).status_code == 429
    monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
    code, _, err = run_abm(capsys, monkeypatch, "console", "unlock", "amy")
    assert code == 0 and "5 failed sign-in(s) forgotten" in err
    assert _attempt(client, "amy", PASSWORD).status_code == 303


@pytest.mark.parametrize(
    "password, why",
    [("aaaaaaaaaaaa", "different characters"), ("amy-password-2026", "name"), ("short", "12")],
)
def test_weak_passwords_are_refused(tmp_path, password, why):
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=why):
        add_user(users_file(tmp_path), "amy", "operator", password)


# reverse-proxy sign-in


def proxy_client(database_url: str, tmp_path, peer: str) -> TestClient:
    settings = console_settings(
        database_url, tmp_path, console_auth="proxy", console_proxy_header="X-Forwarded-User"
    )
    write_users(
        users_file(tmp_path),
        [UserEntry(name="ops@corp.example", role="operator"), UserEntry(name="vi", role="viewer")],
    )
    client = TestClient(
        create_app(settings),
        base_url="https://testserver",
        client=(peer, 40000),
        follow_redirects=False,
    )
    client.console_settings = settings  # type: ignore[attr-defined]
    return client


def test_proxy_mode_believes_the_header_only_from_a_trusted_peer(database_url, tmp_path):
    trusted = proxy_client(database_url, tmp_path, "127.0.0.1")
    page = trusted.get("/console/audit", headers={"X-Forwarded-User": "ops@corp.example"})
    assert page.status_code == 200 and "ops@corp.example" in page.text
    for headers, why in (
        ({"X-Forwarded-User": "mallory"}, "not a console user"),
        ({}, "sent no X-Forwarded-User"),
    ):
        answer = trusted.get("/console/audit", headers=headers)
        assert answer.status_code == 403 and why in answer.text
    # the sign-in page is the proxy's business
    answer = trusted.get("/console/login", headers={"X-Forwarded-User": "vi"})
    assert answer.status_code == 303

    outsider = proxy_client(database_url, tmp_path, "203.0.113.9")
    answer = outsider.get("/console/audit", headers={"X-Forwarded-User": "ops@corp.example"})
    assert answer.status_code == 403 and "ABM_CONSOLE_TRUSTED_PROXIES" in answer.text


def test_proxy_mode_posts_need_a_token_and_the_role_comes_from_the_file(sqlite_url, tmp_path):
    client = proxy_client(sqlite_url, tmp_path, "::1")
    as_viewer = {"X-Forwarded-User": "vi"}
    page = client.get("/console/suppressions", headers=as_viewer)  # its search form
    token = form_token(page.text)
    for url in posts(sqlite_url, tmp_path):
        if url.removeprefix("/console") in VIEWER_POSTS:
            continue
        assert client.post(url, data={}, headers=as_viewer).status_code == 403
        answer = client.post(url, data={"csrf_token": token}, headers=as_viewer)
        assert answer.status_code == 403 and "viewer" in answer.text
    # the token is the user's: another user's request cannot use it
    answer = client.post(
        "/console/logout",
        data={"csrf_token": token},
        headers={"X-Forwarded-User": "ops@corp.example"},
    )
    assert answer.status_code == 403 and "csrf_token" in answer.text


def test_proxy_mode_without_a_header_name_refuses_to_start(monkeypatch):
    from core.errors import ConfigError
    from core.settings import get_settings, reset_settings

    monkeypatch.setenv("ABM_CONSOLE_AUTH", "proxy")
    reset_settings()
    with pytest.raises(ConfigError, match="ABM_CONSOLE_PROXY_HEADER"):
        get_settings()
    monkeypatch.setenv("ABM_CONSOLE_PROXY_HEADER", "X-Forwarded-User")
    monkeypatch.setenv("ABM_CONSOLE_TRUSTED_PROXIES", "10.0.0.0/8, proxy.example")
    reset_settings()
    with pytest.raises(ConfigError, match=r"ABM_CONSOLE_TRUSTED_PROXIES.*proxy\.example"):
        get_settings()


# str.isdigit() takes "²" (int() then fails), a number too big for any database integer,
# and a NUL (PostgreSQL refuses it in any string): each was a 500 before
ODD_NUMBERS = ("²", "٣", "9" * 25, "-1", "1e3")


def test_odd_page_numbers_and_nul_characters_are_refused_not_a_500(database_url, tmp_path):
    client = signed_in_client(database_url, tmp_path, role="viewer")
    client.raise_server_exceptions = False  # type: ignore[attr-defined]
    for path in ("/console/accounts", "/console/suppressions", "/console/audit"):
        for value in ODD_NUMBERS:
            answer = client.get(path, params={"page": value})
            assert answer.status_code in (200, 400), (path, value, answer.status_code)
    for path, params in (
        ("/console/accounts/x%00y", {}),
        ("/console/campaigns/x%00y", {}),
        ("/console/accounts", {"q": "a\x00b"}),
    ):
        answer = client.get(path, params=params)
        assert answer.status_code == 400 and "NUL" in answer.text, (path, answer.status_code)
    answer = client.post(
        "/console/suppressions/search", data={"csrf_token": csrf_of(client), "q": "a\x00@b.c"}
    )
    assert answer.status_code == 400 and "NUL" in answer.text
    stranger = console_client(console_settings(database_url, tmp_path))
    stranger.raise_server_exceptions = False  # type: ignore[attr-defined]
    token = form_token(stranger.get("/console/login").text)
    answer = stranger.post(
        "/console/login", data={"name": "vi\x00ewer", "password": "x", "csrf_token": token}
    )
    assert answer.status_code == 400 and "NUL" in answer.text


def test_a_new_password_ends_the_sessions_opened_with_the_old_one(database_url, tmp_path):
    client = signed_in_client(database_url, tmp_path)
    assert client.get("/console/audit").status_code == 200
    add_user(users_file(tmp_path), "operator", "operator", "a different passphrase", replace=True)
    answer = client.get("/console/audit")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    assert sign_in(client, "operator", "a different passphrase").status_code == 303
    assert client.get("/console/audit").status_code == 200


def test_behind_a_trusted_proxy_the_limit_counts_the_address_the_proxy_saw(sqlite_url, tmp_path):
    """nginx in front (peer 127.0.0.1, trusted by default) names each browser in
    X-Forwarded-For: one browser's failures do not lock out another's; from a peer that is
    not trusted, the header is the client's own claim and changes nothing."""
    add_user(users_file(tmp_path), "amy", "operator", PASSWORD)
    settings = console_settings(sqlite_url, tmp_path)
    proxy = TestClient(
        create_app(settings), base_url=BASE_URL, client=("127.0.0.1", 40000), follow_redirects=False
    )
    attacker = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}  # the last one: what nginx saw
    for n in range(20):
        form = proxy.get("/console/login")
        answer = proxy.post(
            "/console/login",
            data={"name": f"guess{n}", "password": "x", "csrf_token": form_token(form.text)},
            headers=attacker,
        )
        assert answer.status_code == 401
    assert _attempt(proxy, "amy", PASSWORD).status_code == 303  # another browser: let in
    proxy.cookies.clear()
    form = proxy.get("/console/login")
    answer = proxy.post(
        "/console/login",
        data={"name": "amy", "password": PASSWORD, "csrf_token": form_token(form.text)},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert answer.status_code == 429  # the attacker's address, however the client spells it
    outsider = TestClient(
        create_app(settings), base_url=BASE_URL, client=("192.0.2.1", 40000), follow_redirects=False
    )
    for n in range(20):
        form = outsider.get("/console/login")
        outsider.post(
            "/console/login",
            data={"name": f"guess{n}", "password": "x", "csrf_token": form_token(form.text)},
            headers={"X-Forwarded-For": f"10.0.0.{n}"},  # a new claimed address each time
        )
    assert _attempt(outsider, "amy", PASSWORD).status_code == 429


def test_the_server_leaves_x_forwarded_for_to_the_console():
    """uvicorn would otherwise replace the peer with the header's address (it trusts it from
    127.0.0.1), and the console could no longer tell a trusted proxy from anyone."""
    from abm.webhooks import SERVER_LIMITS

    assert SERVER_LIMITS["proxy_headers"] is False


def test_proxy_mode_offers_no_sign_in_or_sign_out_of_its_own(sqlite_url, tmp_path):
    """The proxy signs people in and out: a console button for either would only lead to a
    refusal."""
    client = proxy_client(sqlite_url, tmp_path, "127.0.0.1")
    page = client.get("/console/accounts", headers={"X-Forwarded-User": "vi"})
    assert page.status_code == 200 and ">vi <" in page.text
    assert "/console/logout" not in page.text
    refused = client.get("/console/accounts", headers={"X-Forwarded-User": "stranger"})
    assert refused.status_code == 403 and "/console/login" not in refused.text
    signed = signed_in_client(sqlite_url, tmp_path / "password")
    assert "/console/logout" in signed.get("/console/accounts").text
