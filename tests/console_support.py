"""Test support for the console: a TestClient on the whole web app, signed in through the real
sign-in form as a user of a given role, and the CSRF token its posts carry.

    client = signed_in_client(database_url, tmp_path, role="viewer")
    client.post("/console/...", data={"csrf_token": csrf_of(client), ...})

The client talks to https://testserver: the session cookie is Secure, so an http:// client
would never send it back."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from abm.console.access import SESSION_COOKIE, session_csrf_token
from abm.console.users import add_user
from core.settings import Settings

PASSWORD = "correct horse battery staple"
BASE_URL = "https://testserver"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]*)"')


def users_file(tmp_path: Path) -> Path:
    return tmp_path / "console-users.yaml"


def console_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for this database with the users file under tmp_path (ABM_SECRET_KEY and the
    state dir come from the test environment, see conftest.abm_state)."""
    return Settings(database_url=database_url, console_users=users_file(tmp_path), **overrides)


def console_client(settings: Settings) -> TestClient:
    """A client of create_app(settings), not signed in; redirects are not followed, so a
    test sees each 303."""
    from abm.webhooks import create_app

    client = TestClient(create_app(settings), base_url=BASE_URL, follow_redirects=False)
    client.console_settings = settings  # type: ignore[attr-defined]
    return client


def form_token(html: str) -> str:
    """The csrf_token of the first form on a page."""
    found = _TOKEN.search(html)
    assert found, "no csrf_token field on the page"
    return found[1]


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> Any:
    """The sign-in form filled in and posted, as a browser would: the response to the post."""
    form = client.get("/console/login")
    assert form.status_code == 200, form.text
    return client.post(
        "/console/login",
        data={"name": name, "password": password, "csrf_token": form_token(form.text)},
    )


def signed_in_client(
    database_url: str, tmp_path: Path, role: str = "operator", name: str | None = None
) -> TestClient:
    """A client of the web app on this database, signed in as `name` (default: the role's
    name) with this role; the user is added to the users file under tmp_path (others there
    stay, so an operator and a viewer client can share a tmp_path)."""
    name = name or role
    add_user(users_file(tmp_path), name, role, PASSWORD, replace=True)
    client = console_client(console_settings(database_url, tmp_path))
    answer = sign_in(client, name)
    assert answer.status_code == 303, answer.text
    assert client.cookies.get(SESSION_COOKIE), "signed in, yet no session cookie"
    return client


def csrf_of(client: TestClient) -> str:
    """The CSRF token of the client's session, for the csrf_token field of a post."""
    token = session_csrf_token(client.console_settings, client.cookies.get(SESSION_COOKIE, ""))  # type: ignore[attr-defined]
    assert token, "the client is not signed in"
    return token
