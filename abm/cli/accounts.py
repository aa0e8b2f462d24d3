"""Accounts, their people and committees: list, show, set a stage, classify titles."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from abm.cli.common import JsonOption, cells, err, open_engine, out, print_json, stage_option
from core.errors import AbmError
from core.settings import get_settings

accounts_app = typer.Typer(help="Target accounts: fit, tier, stage, committee.")
contacts_app = typer.Typer(help="Contacts and their committee roles.")
stakeholders_app = typer.Typer(help="Buying-committee mapping.")


@accounts_app.command("list")
def accounts_list(
    tier: Annotated[int | None, typer.Option(min=1, max=3)] = None,
    stage: Annotated[str | None, typer.Option(callback=stage_option)] = None,
    as_json: JsonOption = False,
) -> None:
    """Accounts with score, tier, stage and engagement."""
    from models.queries import list_accounts

    rows = list_accounts(open_engine(), tier, stage)
    if as_json:
        print_json(rows)
        return
    table = Table("domain", "name", "score", "tier", "stage", "engagement", "contacts")
    for row in rows:
        table.add_row(
            *cells(
                row["domain"],
                row["name"] or "",
                "" if row["score"] is None else str(row["score"]),
                "-" if row["tier"] is None else str(row["tier"]),
                row["stage"],
                f"{row['engagement_score']:g}",
                str(row["contacts"]),
            )
        )
    out.print(table)
    err.print(f"{len(rows)} accounts")


@accounts_app.command("show")
def accounts_show(domain: str, as_json: JsonOption = False) -> None:
    """One account: score with reasons, committee with roles and gaps, stages, engagement
    by source (email, LinkedIn, web, intent) with what counted most, its intent topics, and
    a timeline of what we sent, what its people did and how its stage moved."""
    from stages.accounts.details import account_details

    account = account_details(open_engine(), get_settings(), domain)
    if account is None:
        raise AbmError(f"no account with domain {domain!r}")
    committee = account["committee"]
    if as_json:
        print_json(account)
        return
    tier = "not targeted" if account["tier"] is None else f"tier {account['tier']}"
    out.print(
        f"[bold]{escape(account['name'] or domain)}[/] ({escape(account['domain'])})",
        highlight=False,
    )
    out.print(
        f"{account['industry'] or 'industry unknown'} · {account['employees'] or '?'} employees"
        f" · {account['country'] or '?'} · ICP {account['icp_score']} · {tier}"
        f" · stage {account['stage']} · engagement {account['engagement_score']:g}",
        highlight=False,
        markup=False,
    )
    out.print("\n[bold]Why this score[/]")
    for reason in account["icp_reasons"]:
        out.print(f"  {reason}", highlight=False, markup=False)
    out.print("\n[bold]Buying committee[/]")
    table = Table("role", "name", "title", "seniority", "function", "status")
    for c in account["contacts"]:
        name = " ".join(p for p in (c["first_name"], c["last_name"]) if p)
        table.add_row(
            *cells(
                c["role"] or "",
                name,
                c["title"] or "",
                c["seniority"] or "",
                c["function"] or "",
                c["status"],
            )
        )
    out.print(table)
    out.print(f"covered: {', '.join(committee['covered']) or 'none'}")
    gaps = ", ".join(committee["gaps"])
    out.print(f"[red]gaps: {gaps}[/]" if gaps else "gaps: none")
    _print_crm(account["crm"])
    _print_sources(account["engagement_sources"])
    if account["intent"]:
        _print_intent(account["intent"])
    if account["stage_history"]:
        out.print("\n[bold]Stage history[/]")
        for change in account["stage_history"]:
            out.print(
                f"  {change['changed_at']:%Y-%m-%d %H:%M} {change['from_stage']} -> "
                f"{change['to_stage']} ({change['source']}): {change['reason']}",
                highlight=False,
                markup=False,
            )
    if account["timeline"]:
        _print_timeline(account["timeline"])
    for campaign in account["campaigns"]:
        states = ", ".join(f"{state} {count}" for state, count in campaign["states"].items())
        out.print(
            f"campaign {campaign['key']} ({campaign['status']}): {campaign['people']} of its "
            f"people; by state: {states}",
            highlight=False,
            markup=False,
        )


def _print_crm(crm: dict) -> None:
    """The owner and deals `abm crm pull` read back (nothing when no CRM said anything)."""
    owner = crm["owner"]
    if owner is None and not crm["deals"]:
        return
    out.print("\n[bold]From the CRM[/]")
    if owner:
        email = f"<{owner['email']}>" if owner["email"] else None
        who = " ".join(part for part in (owner["name"], email) if part)
        left = "" if owner.get("active", True) else ", no longer active there: never sent as"
        out.print(f"  owner: {who} ({owner['crm']}{left})", highlight=False, markup=False)
    else:
        out.print("  owner: none in the CRM", highlight=False, markup=False)
    if crm["deals"]:
        table = Table("crm", "deal", "CRM stage", "maps to", "amount", "modified")
        for deal in crm["deals"]:
            table.add_row(
                *cells(
                    deal["crm"],
                    deal["name"] or deal["crm_id"],
                    deal["crm_stage"],
                    deal["maps_to"] or "nothing",
                    "" if deal["amount"] is None else f"{deal['amount']:,.2f}",
                    f"{deal['modified_at']:%Y-%m-%d %H:%M}",
                )
            )
        out.print(table)


# Timeline entries `accounts show` prints, the latest; --json has them all.
TIMELINE_SHOWN = 40
INTENT_SHOWN = 15


def _print_sources(breakdown: dict) -> None:
    """The score split by source and breadth, with what counted most in each source."""
    from core.vocabulary import SOURCE_LABELS

    when = f"{breakdown['as_of']:%Y-%m-%d %H:%M}"
    how = "at the last rollup" if breakdown["kept"] else "worked out now"
    out.print(
        f"\n[bold]Engagement by source[/] (score {breakdown['score']:g}, {how}, {when} UTC)",
        highlight=False,
    )
    table = Table("source", "points", "what counted most (points each)")
    for source, points in breakdown["sources"].items():
        top = breakdown["top"].get(source) or []
        if source == "other" and not points and not top:
            continue
        shown = "; ".join(f"{item['what']} ({item['weight']:+g})" for item in top[:3])
        table.add_row(*cells(SOURCE_LABELS.get(source, source), f"{points:g}", shown or "-"))
    people, roles = breakdown["people"], breakdown["roles"]
    table.add_row(
        *cells(
            "breadth",
            f"{breakdown['breadth']:g}",
            f"{people} {'person' if people == 1 else 'people'} and {roles} committee "
            f"{'role' if roles == 1 else 'roles'} engaged",
        )
    )
    out.print(table)


def _print_intent(topics: list[dict]) -> None:
    """Intent signals, newest first: topic, score, day, source and what each weighs now."""
    out.print("\n[bold]Intent topics[/] (abm import intent; weights from `topics` in the rules)")
    table = Table("topic", "score", "surging", "date", "source", "points")
    for topic in topics[:INTENT_SHOWN]:
        score = f"{topic['score']:g}"
        if topic.get("level"):
            score += f" ({topic['level']})"
        table.add_row(
            *cells(
                topic["topic"] or "",
                score,
                "yes" if topic["surging"] else "no",
                topic["date"],
                topic["source"],
                f"{topic['weight']:g}",
            )
        )
    out.print(table)
    if len(topics) > INTENT_SHOWN:
        out.print(f"  ({len(topics) - INTENT_SHOWN} more: --json lists them all)", markup=False)


def _print_timeline(entries: list[dict]) -> None:
    """The latest entries, oldest first: when, what, who, and the source or reason."""
    earlier = len(entries) - TIMELINE_SHOWN
    out.print("\n[bold]Timeline[/]")
    if earlier > 0:
        out.print(f"  ({earlier} earlier entries: --json lists them all)", markup=False)
    for entry in entries[-TIMELINE_SHOWN:]:
        details = [entry["what"]]
        if entry.get("contact"):
            details.append(("to " if entry["kind"] != "event" else "by ") + entry["contact"])
        if entry["kind"] == "event":
            details.append(f"from {entry['source']}")
        if entry["kind"] == "stage":
            details.append(f"({entry['source']}): {entry['reason']}")
        out.print(
            f"  {entry['at']:%Y-%m-%d %H:%M} {entry['kind']:<17} {' '.join(details)}",
            highlight=False,
            markup=False,
        )


@accounts_app.command("set-stage")
def accounts_set_stage(
    domain: str,
    stage: str,
    reason: Annotated[str, typer.Option(help="why: kept in the stage history")],
) -> None:
    """Set an account's journey stage by hand (kept in the stage history as set by a person).

    It stands: engagement moves the account on only on events after this change."""
    from stages.engagement.journey import set_stage

    moved = set_stage(open_engine(), domain, stage, reason)
    if moved is None:
        err.print(
            f"{domain} is already at stage {stage.strip().lower()}: nothing recorded",
            markup=False,
        )
        return
    err.print(f"{domain}: {moved[0]} -> {moved[1]} ({reason.strip()})", markup=False)


@contacts_app.command("list")
def contacts_list(
    account: Annotated[str | None, typer.Option(help="only this account's domain")] = None,
    as_json: JsonOption = False,
) -> None:
    """Contacts with seniority, function, committee role and status."""
    from models.queries import list_contacts

    rows = list_contacts(open_engine(), account.strip().lower() if account else None)
    if as_json:
        print_json(rows)
        return
    table = Table("email", "account", "title", "seniority", "function", "role", "status")
    for row in rows:
        table.add_row(
            *cells(
                row["email"],
                row["account_domain"],
                row["title"] or "",
                row["seniority"] or "",
                row["function"] or "",
                row["role"] or "",
                row["status"],
            )
        )
    out.print(table)
    err.print(f"{len(rows)} contacts")


@stakeholders_app.command("classify")
def stakeholders_classify(as_json: JsonOption = False) -> None:
    """Read job titles from stdin, one a line; print seniority, function and role."""
    from stages.committee.titles import classify_title, load_title_table

    table = load_title_table(get_settings().title_rules)
    titles = [line.rstrip("\r\n") for line in sys.stdin]
    rows = []
    for title in titles:
        result = classify_title(title, table)
        rows.append(
            {
                "title": title,
                "seniority": result.seniority,
                "function": result.function,
                "role": result.role,
            }
        )
    if as_json:
        print_json(rows)
        return
    view = Table("title", "seniority", "function", "role")
    for row in rows:
        view.add_row(*cells(row["title"], row["seniority"], row["function"], row["role"]))
    out.print(view)
