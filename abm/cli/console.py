"""`abm console ...`: who may sign in to the console, with which role; and `abm serve`, the
one web server (webhooks, unsubscribe, tracking and the console) that also says where the
console is and whether anyone can sign in to it."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from abm.cli.common import JsonOption, cells, err, open_engine, out, print_json
from abm.cli.engagement import webhooks_serve
from core.errors import AbmError, ConfigError
from core.settings import Settings, get_settings

console_app = typer.Typer(
    help="Console users (ABM_CONSOLE_USERS): who may sign in to /console, as viewer or operator."
)


def _path() -> Path:
    from abm.console.users import users_path

    return users_path(get_settings())


def _password(from_stdin: bool) -> str:
    """The new password: one line of standard input, or typed twice without echo."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@console_app.command("add-user")
def add_user(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the name to sign in with")],
    role: Annotated[str, typer.Option(help="viewer (reads) or operator (also pauses, lifts)")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="change the role and password of an existing user")
    ] = False,
) -> None:
    """Add a console user; the password (12 characters or more) is stored as an argon2id
    hash in a file only its owner can read. The server sees it at the next request."""
    from abm.console.users import ROLES, add_user, check_name, check_password, read_users

    if role not in ROLES:
        raise typer.BadParameter("must be viewer or operator", param_hint="--role")
    try:
        check_name(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="NAME") from None
    path = _path()
    if name in read_users(path) and not replace:
        raise AbmError(f"{path}: {name} is already a user; add --replace to change it")
    password = check_password(_password(password_stdin), name)
    add_user(path, name, role, password, replace=replace)
    err.print(f"{path}: {name} can sign in as {role}", markup=False, highlight=False)


@console_app.command("remove-user")
def remove_user(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the user to remove")],
) -> None:
    """Remove a console user: their open sessions end at their next request."""
    from abm.console.users import remove_user

    path = _path()
    remove_user(path, name)
    err.print(f"{path}: {name} removed", markup=False, highlight=False)


@console_app.command("unlock")
def unlock(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the user held by the sign-in limit")],
    address: Annotated[
        str | None, typer.Option(help="also forget the failures from this client address")
    ] = None,
) -> None:
    """Let a user held by the sign-in limit try again now.

    The limit holds for 15 minutes, across restarts: failures are kept in the database."""
    from models.console_store import clear_failures

    cleared = clear_failures(open_engine(), name, address)
    err.print(
        f"{name}: {cleared} failed sign-in(s) forgotten; they can sign in again now",
        markup=False,
        highlight=False,
    )


@console_app.command("users")
def list_users(as_json: JsonOption = False) -> None:
    """Console users and their roles (never the hashes)."""
    from abm.console.users import read_users

    path = _path()
    rows = [
        {"name": entry.name, "role": entry.role, "password": entry.password_hash is not None}
        for entry in read_users(path).values()
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("name", "role", "password")
    for row in rows:
        table.add_row(*cells(row["name"], row["role"], "set" if row["password"] else "none"))
    out.print(table)
    err.print(f"{len(rows)} user(s) in {path}", markup=False, highlight=False)


def console_problems(settings: Settings) -> list[tuple[str, str]]:
    """(status, message) of what stops or weakens console sign-in: a bad users file, nobody
    able to sign in, a users file others can read, cookies a browser will not send back."""
    from urllib.parse import urlsplit

    from abm.console.users import read_users, users_path

    path = users_path(settings)
    try:
        users = read_users(path)
    except ConfigError as exc:
        return [("fail", f"the console refuses everyone until the users file is fixed: {exc}")]
    problems = []
    if settings.console_auth == "proxy":
        if not users:
            problems.append(
                (
                    "warn",
                    f"no console user in {path}: the proxy's users are refused until "
                    "`abm console add-user` gives each a role",
                )
            )
    elif not any(entry.password_hash for entry in users.values()):
        problems.append(
            (
                "warn",
                "no console user can sign in: create one with "
                "`abm console add-user NAME --role operator`",
            )
        )
    if path.exists() and path.stat().st_mode & 0o077:
        problems.append(
            ("warn", f"{path} can be read by other users of this machine: chmod 600 it")
        )
    url = urlsplit(settings.public_url)
    if url.scheme == "http" and url.hostname not in ("127.0.0.1", "localhost", "::1"):
        problems.append(
            (
                "warn",
                f"ABM_PUBLIC_URL is http:// on {url.hostname}: the console's cookies are "
                "Secure, so browsers only keep them over HTTPS; put the server behind an "
                "HTTPS proxy (README) and set ABM_PUBLIC_URL to its https:// URL",
            )
        )
    return problems


def console_check(settings: Settings) -> Any:
    """The console's line in `abm doctor`."""
    from connectors.checks import Check

    problems = console_problems(settings)
    if not problems:
        mode = "proxy" if settings.console_auth == "proxy" else "password"
        return Check("console", "ok", f"sign-in by {mode}; users in {_users_path(settings)}")
    status = "fail" if any(level == "fail" for level, _ in problems) else "warn"
    return Check("console", status, "; ".join(message for _, message in problems))


def _users_path(settings: Settings) -> str:
    from abm.console.users import users_path

    return str(users_path(settings))


@functools.wraps(webhooks_serve)
def serve(*args: Any, **kwargs: Any) -> None:
    settings = get_settings()
    host, port = kwargs.get("host", "127.0.0.1"), kwargs.get("port", 8025)
    shown = f"[{host}]" if ":" in str(host) else host
    local, public = f"http://{shown}:{port}", settings.public_url.rstrip("/")
    err.print(
        f"console: {local}/console/ (sign-in by {settings.console_auth})"
        + (f"; through your proxy: {public}/console/" if public.startswith("https:") else ""),
        highlight=False,
        markup=False,
    )
    for level, message in console_problems(settings):
        err.print(f"{level}: {message}", style="yellow", markup=False, highlight=False)
    webhooks_serve(*args, **kwargs)


serve.__doc__ = (
    "Serve the web app: the console at /console, provider webhooks, unsubscribe pages, "
    "tracking and /healthz (the same server as `abm webhooks serve`)."
)
