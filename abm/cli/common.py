"""What every command shares: the two consoles, the `--json` option, table cells shown as
written, and the database, checked to be migrated."""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy import Engine

from core.settings import get_settings
from models.db import get_engine, require_current_schema

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]


def cells(*values: Any) -> list[Text]:
    """Table cells shown as they are: data such as `[/b]` or `[red]` in a company name or a
    job title must not be read as rich markup (which would restyle it, hide it or crash)."""
    return [Text(str(value)) for value in values]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str, ensure_ascii=False, indent=2) + "\n")


def open_engine() -> Engine:
    """The configured database, refusing one `abm init` has not set up or migrated."""
    engine = get_engine(get_settings().database_url)
    require_current_schema(engine)
    return engine


def stage_option(value: str | None) -> str | None:
    """A `--stage` option read as people write it (`MQA`); a usage error listing the stages
    when it is none of them."""
    from core.vocabulary import parse_stage

    if value is None:
        return None
    try:
        return parse_stage(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def operator() -> str:
    """Who runs the command, for the history: the login name, where the system knows it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or "unknown"
