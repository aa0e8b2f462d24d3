"""Console users from configuration: a YAML file (ABM_CONSOLE_USERS) of names, roles and
argon2id password hashes, written by `abm console add-user` with mode 0600 and re-read
whenever it changes, so a removed user or a changed role takes effect on the next request.
The role always comes from this file, never from a session."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import ConfigError
from core.settings import Settings
from core.yamlfile import load_model

ROLES = ("viewer", "operator")
MIN_PASSWORD = 12
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")

_hasher = PasswordHasher()  # argon2id, the library's current recommended costs
# verified against when the name is unknown (or has no password), so a wrong name costs as
# long as a wrong password: the answer time tells nobody which names exist
_DUMMY_HASH = _hasher.hash("not a password of anyone: only here to spend the same time")


@dataclass(frozen=True)
class ConsoleUser:
    """Who is signed in, with the role the users file gives them now."""

    name: str
    role: Literal["viewer", "operator"]

    @property
    def can_operate(self) -> bool:
        return self.role == "operator"


class UserEntry(BaseModel):
    """One user of the users file; no password_hash: only a reverse proxy can sign them in."""

    model_config = ConfigDict(extra="forbid")

    name: str
    role: Literal["viewer", "operator"]
    password_hash: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("$argon2id$"):
            raise ValueError(
                "must be an argon2id hash ($argon2id$...): set it with `abm console add-user "
                "NAME --replace`"
            )
        return value


class UsersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[UserEntry] = Field(default_factory=list)

    @field_validator("users")
    @classmethod
    def _unique(cls, value: list[UserEntry]) -> list[UserEntry]:
        names = [entry.name for entry in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"a name may appear once: {', '.join(twice)} appear more often")
        return value


def check_name(value: str) -> str:
    """A user name: letters, digits and . _ @ + - (a proxy may send an email address)."""
    if not NAME.fullmatch(value):
        raise ValueError(
            "must be 1 to 128 letters, digits or . _ @ + - (starting with a letter or digit)"
        )
    return value


def users_path(settings: Settings) -> Path:
    """Where the users file is: ABM_CONSOLE_USERS, or console-users.yaml in the state dir."""
    return settings.console_users or settings.state_dir / "console-users.yaml"


def read_users(path: Path) -> dict[str, UserEntry]:
    """The users file by name; no file: no users. A bad file is a ConfigError naming the
    file, the line and the field."""
    if not path.exists():
        return {}
    return {entry.name: entry for entry in load_model(path, UsersFile).users}


def write_users(path: Path, users: list[UserEntry]) -> None:
    """Replace the users file at once (a reader never sees half of it), readable by its owner
    only (mode 0600): the hashes are slow to attack, not impossible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"users": [entry.model_dump(exclude_none=True) for entry in users]}
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".console-users.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yaml.safe_dump(data, handle, sort_keys=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


MIN_DISTINCT = 6  # "aaaaaaaaaaaa" and "121212121212" are long enough and guessed first


def check_password(password: str, name: str | None = None) -> str:
    """At least MIN_PASSWORD characters, MIN_DISTINCT of them different, and not the name."""
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(set(password)) < MIN_DISTINCT:
        raise ConfigError(
            f"the password must use at least {MIN_DISTINCT} different characters: "
            "a repeated one is guessed first"
        )
    if name and name.casefold() in password.casefold():
        raise ConfigError("the password must not contain the user's name")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


def add_user(path: Path, name: str, role: str, password: str, *, replace: bool = False) -> None:
    """Add (or with `replace`, change) a user, its password hashed with argon2id. The same
    password again keeps its hash, so a change of role alone leaves the user's sessions on
    (the role is read on every request); a new password ends them."""
    try:
        check_name(name)
    except ValueError as exc:
        raise ConfigError(f"user name {name!r}: {exc}") from None
    if role not in ROLES:
        raise ConfigError(f"role {role!r}: must be viewer or operator")
    users = read_users(path)
    if name in users and not replace:
        raise ConfigError(f"{path}: {name} is already a user; add --replace to change it")
    earlier = users.get(name)
    same = earlier is not None and password_matches(earlier, password)
    hashed = (
        earlier.password_hash if same and earlier else hash_password(check_password(password, name))
    )
    users[name] = UserEntry(name=name, role=role, password_hash=hashed)  # type: ignore[arg-type]
    write_users(path, list(users.values()))


def remove_user(path: Path, name: str) -> None:
    users = read_users(path)
    if name not in users:
        raise ConfigError(f"{path}: no user {name!r}")
    del users[name]
    write_users(path, list(users.values()))


def credential_of(entry: UserEntry | None) -> str:
    """A fingerprint of the user's password hash (not the hash itself): what a session keeps
    so that a new password ends the sessions opened with the old one."""
    stored = (entry.password_hash if entry is not None else None) or ""
    return hashlib.sha256(stored.encode()).hexdigest()[:32]


def password_matches(entry: UserEntry | None, password: str) -> bool:
    """True when `entry` exists, has a password and it is this one. Always one argon2
    verification, whatever the case."""
    stored = entry.password_hash if entry is not None else None
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return stored is not None


class UserDirectory:
    """The users file as the server sees it: read again when its modification time or size
    changes, so an edit takes effect on the next request without a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, UserEntry] = {}
        self._problem: ConfigError | None = None

    def _current_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def users(self) -> dict[str, UserEntry]:
        """The users now; a ConfigError while the file is bad (the console then refuses
        everyone: it cannot tell who is who)."""
        stamp = self._current_stamp()
        with self._lock:
            if stamp != self._stamp or (stamp is None and self._users):
                self._stamp = stamp
                try:
                    self._users, self._problem = read_users(self.path), None
                except ConfigError as exc:
                    self._users, self._problem = {}, exc
            if self._problem is not None:
                raise self._problem
            return self._users

    def user(self, name: str) -> ConsoleUser | None:
        entry = self.users().get(name)
        return None if entry is None else ConsoleUser(entry.name, entry.role)
