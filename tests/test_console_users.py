"""Console users from configuration (the users file and `abm console ...`), a role change or a
removal taking effect on the next request, the audit log (its page and the command-line
actions it records) and `abm serve`."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest
from cli_support import run_abm
from console_support import PASSWORD, csrf_of, signed_in_client, users_file
from smtp_server import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

import abm.console.users as users_module
from abm.console.access import checked_form, require_operator
from abm.console.app import console_app
from abm.console.context import ConsoleContext
from abm.console.users import (
    UserDirectory,
    UserEntry,
    add_user,
    password_matches,
    read_users,
    remove_user,
    write_users,
)
from core.errors import ConfigError
from core.settings import Settings, reset_settings
from models.audit import audit_page, record_action
from models.db import get_engine

REPO = Path(__file__).resolve().parent.parent


def test_the_users_file_is_written_0600_and_holds_argon2id_hashes(tmp_path):
    path = tmp_path / "users.yaml"
    add_user(path, "amy", "operator", PASSWORD)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "$argon2id$" in text and PASSWORD not in text
    (amy,) = read_users(path).values()
    assert amy.role == "operator" and password_matches(amy, PASSWORD)
    assert not password_matches(amy, PASSWORD + "!")
    with pytest.raises(ConfigError, match=r"already a user.*--replace"):
        add_user(path, "amy", "viewer", PASSWORD)
    add_user(path, "amy", "viewer", "another long password", replace=True)
    assert read_users(path)["amy"].role == "viewer"
    with pytest.raises(ConfigError, match="at least 12"):
        add_user(path, "bob", "viewer", "short")
    remove_user(path, "amy")
    assert read_users(path) == {}


def test_an_unknown_name_costs_one_verification_like_a_known_one(monkeypatch):
    calls = []
    real = users_module._hasher

    class Counting:
        def verify(self, stored: str, password: str) -> bool:
            calls.append(stored)
            return real.verify(stored, password)

    entry = UserEntry(name="amy", role="viewer", password_hash=users_module.hash_password(PASSWORD))
    monkeypatch.setattr(users_module, "_hasher", Counting())
    assert not password_matches(None, PASSWORD)
    assert not password_matches(UserEntry(name="proxy-only", role="viewer"), PASSWORD)
    assert password_matches(entry, PASSWORD)
    assert calls == [users_module._DUMMY_HASH, users_module._DUMMY_HASH, entry.password_hash]


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("users:\n  - name: amy\n    role: admin\n", "users[0].role"),
        ("users:\n  - name: amy\n    role: viewer\n    password_hash: plain\n", "password_hash"),
        ("users:\n  - role: viewer\n", "users[0].name"),
        ("users:\n  - name: a b\n    role: viewer\n", "users[0].name"),
        ("users:\n  - {name: a, role: viewer}\n  - {name: a, role: operator}\n", "appear"),
        ("users: [\n", "not valid YAML"),
    ],
)
def test_a_bad_users_file_names_the_file_and_the_field(tmp_path, content, named):
    path = tmp_path / "users.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        read_users(path)
    assert str(path) in str(caught.value) and named in str(caught.value)


def test_the_directory_rereads_the_file_when_it_changes(tmp_path):
    path = tmp_path / "users.yaml"
    directory = UserDirectory(path)
    assert directory.user("amy") is None  # no file: nobody
    write_users(path, [UserEntry(name="amy", role="operator")])
    assert directory.user("amy").can_operate
    write_users(path, [UserEntry(name="amy", role="viewer"), UserEntry(name="bo", role="viewer")])
    assert not directory.user("amy").can_operate and directory.user("bo")
    path.unlink()
    assert directory.user("amy") is None


def test_a_role_change_or_removal_counts_from_the_next_request(database_url, tmp_path):
    client = signed_in_client(database_url, tmp_path)
    page = client.get("/console/audit")
    assert page.status_code == 200 and '<span class="role">operator</span>' in page.text
    add_user(users_file(tmp_path), "operator", "viewer", PASSWORD, replace=True)
    assert '<span class="role">viewer</span>' in client.get("/console/audit").text
    remove_user(users_file(tmp_path), "operator")
    assert client.get("/console/audit").status_code == 303


def _probe_client(database_url: str, tmp_path: Path, role: str) -> TestClient:
    """The console with one extra post that changes data the way pages do: its form through
    checked_form, then require_operator."""
    signed = signed_in_client(database_url, tmp_path, role=role)
    settings = signed.console_settings  # type: ignore[attr-defined]
    app = console_app(ConsoleContext(settings, get_engine(database_url)))

    async def probe(request: Request) -> PlainTextResponse:
        form = await checked_form(request)
        require_operator(request)
        return PlainTextResponse(f"done: {form['what']}")

    app.router.routes.append(Route("/probe", probe, methods=["POST"]))
    client = TestClient(
        Starlette(routes=[Mount("/console", app=app)]),
        base_url="https://testserver",
        cookies=dict(signed.cookies),
    )
    client.console_settings = settings  # type: ignore[attr-defined]
    return client


def test_require_operator_refuses_a_viewer_with_a_403_page(sqlite_url, tmp_path):
    operator = _probe_client(sqlite_url, tmp_path, "operator")
    answer = operator.post("/console/probe", data={"csrf_token": csrf_of(operator), "what": "x"})
    assert answer.status_code == 200 and answer.text == "done: x"
    viewer = _probe_client(sqlite_url, tmp_path, "viewer")
    answer = viewer.post("/console/probe", data={"csrf_token": csrf_of(viewer), "what": "x"})
    assert answer.status_code == 403
    assert "Your role is viewer" in answer.text and "<html" in answer.text
    answer = operator.post("/console/probe", data={"csrf_token": csrf_of(viewer), "what": "x"})
    assert answer.status_code == 403 and "csrf_token" in answer.text


def test_the_audit_page_lists_actions_newest_first_50_a_page(database_url, tmp_path):
    engine = get_engine(database_url)
    for n in range(55):
        record_action(engine, "amy", "campaign.pause", f"campaign-{n:02}", None, role="operator")
    with pytest.raises(ValueError, match="via"):
        record_action(engine, "amy", "campaign.pause", "x", via="email")
    first = audit_page(engine)
    assert (first.total, first.pages, len(first.rows)) == (55, 2, 50)
    assert first.rows[0].target == "campaign-54"
    client = signed_in_client(database_url, tmp_path, role="viewer")
    page = client.get("/console/audit")
    assert page.status_code == 200
    assert page.text.index("campaign-54") < page.text.index("campaign-10")
    assert "campaign-04" not in page.text and "page=2" in page.text
    second = client.get("/console/audit?page=2")
    assert "campaign-04" in second.text and "campaign-05" not in second.text
    assert client.get("/console/audit?page=zz").status_code == 200


def test_cli_pause_resume_and_lift_are_in_the_audit_log(
    database_url, capsys, monkeypatch, tmp_path
):
    from models.store import add_suppressions

    engine = get_engine(database_url)
    monkeypatch.setenv("ABM_DATABASE_URL", database_url)
    monkeypatch.setenv("USER", "kim")
    monkeypatch.setattr("getpass.getuser", lambda: "kim")
    reset_settings()
    demo = str(REPO / "campaigns" / "demo.yaml")
    assert run_abm(capsys, monkeypatch, "campaign", "pause", demo)[0] == 0
    assert run_abm(capsys, monkeypatch, "campaign", "resume", demo)[0] == 0
    add_suppressions(engine, [{"kind": "domain", "value": "acme.example", "reason": "hold"}])
    code, _, err = run_abm(
        capsys, monkeypatch, "suppressions", "remove", "acme.example", "--reason", "hold ended"
    )
    assert code == 0, err
    rows = audit_page(engine).rows
    assert [(r.actor, r.action, r.via) for r in rows] == [
        ("kim", "suppression.lift", "cli"),
        ("kim", "campaign.resume", "cli"),
        ("kim", "campaign.pause", "cli"),
    ]
    assert rows[0].detail == "hold ended" and "acme.example" in rows[0].target
    assert rows[1].target == rows[2].target == "demo-intro"


def test_cli_add_user_users_and_remove_user(capsys, monkeypatch, abm_state):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, _, err = run_abm(
        capsys, monkeypatch, "console", "add-user", "amy", "--role", "operator", "--password-stdin"
    )
    assert code == 0, err
    path = abm_state / "console-users.yaml"
    assert f"{path}: amy can sign in as operator" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, _, err = run_abm(
        capsys, monkeypatch, "console", "add-user", "amy", "--role", "viewer", "--password-stdin"
    )
    assert code == 2 and "--replace" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("too short\n"))
    code, _, err = run_abm(
        capsys, monkeypatch, "console", "add-user", "bo", "--role", "viewer", "--password-stdin"
    )
    assert code == 2 and "at least 12" in err
    code, _, err = run_abm(capsys, monkeypatch, "console", "add-user", "bo", "--role", "admin")
    assert code == 2 and "viewer or operator" in err
    code, out, _ = run_abm(capsys, monkeypatch, "console", "users", "--json")
    assert json.loads(out) == [{"name": "amy", "role": "operator", "password": True}]
    assert "$argon2" not in out
    assert run_abm(capsys, monkeypatch, "console", "remove-user", "amy")[0] == 0
    code, _, err = run_abm(capsys, monkeypatch, "console", "remove-user", "amy")
    assert code == 2 and "no user 'amy'" in err


def test_add_user_prompts_twice_without_echo(monkeypatch, capsys, abm_state):
    prompts = []

    def prompt(text, hide_input=False, confirmation_prompt=False):
        prompts.append((text, hide_input, confirmation_prompt))
        return PASSWORD

    monkeypatch.setattr("typer.prompt", prompt)
    code, _, err = run_abm(capsys, monkeypatch, "console", "add-user", "amy", "--role", "viewer")
    assert code == 0, err
    assert prompts == [("Password", True, True)]


def test_serve_says_where_the_console_is_and_warns_without_users(monkeypatch, capsys):
    served = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: served.append(kw))
    monkeypatch.setattr("abm.cli.engagement.open_engine", lambda: get_engine("sqlite://"))
    port, other = free_port(), free_port()
    code, _, err = run_abm(capsys, monkeypatch, "serve", "--port", str(port))
    assert code == 0, err
    assert f"console: http://127.0.0.1:{port}/console/" in err
    assert "abm console add-user NAME --role operator" in err
    assert served and served[0]["port"] == port
    # the old name serves the same
    assert run_abm(capsys, monkeypatch, "webhooks", "serve", "--port", str(other))[0] == 0
    assert served[1]["port"] == other


def test_serve_on_a_port_in_use_says_so_before_claiming_to_listen(monkeypatch, capsys):
    monkeypatch.setattr("abm.cli.engagement.open_engine", lambda: get_engine("sqlite://"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, _, err = run_abm(capsys, monkeypatch, "serve", "--port", str(port))
    assert code == 2
    assert f"--port {port}: cannot listen there" in err and "another --port" in err
    assert "listening on" not in err


def test_doctor_reports_the_console(monkeypatch, abm_state):
    from abm.cli.console import console_check

    settings = Settings()
    assert console_check(settings).status == "warn"
    add_user(abm_state / "console-users.yaml", "amy", "operator", PASSWORD)
    assert console_check(Settings()).status == "ok"
    (abm_state / "console-users.yaml").write_text("users: 3\n")
    check = console_check(Settings())
    assert check.status == "fail" and "console-users.yaml" in check.message
    remote = Settings(public_url="http://console.example")
    (abm_state / "console-users.yaml").unlink()
    assert "HTTPS" in console_check(remote).message
