"""The operator's own data goes in right, and nothing is silent (issue 17, items 1-3).

A row is rejected only for its identity (a contact's email, an account's domain, a contact
whose account cannot be found); any other cell that cannot be used as written is left
blank, mapped or converted, and the row is kept with a warning naming line, field, value
and what was done, in the output and in `STEM.warnings.csv`. `--strict` rejects instead.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.currency import load_currency_rates
from core.settings import get_settings
from models.queries import list_accounts, list_contacts
from stages.importing import (
    WarningLog,
    import_file,
    parse_accounts,
    parse_contacts,
    parse_suppressions,
    read_csv,
    warnings_path,
)

KNOWN = {"acme.example", "globex.example", "initech.example"}
RATES = load_currency_rates()


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_bytes(text.encode("utf-8"))
    return path


def _contacts_csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    header = ["email", "account_domain", "linkedin_url", "timezone", "consent"]
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    return buffer.getvalue()


def _parse_contacts(folder: Path, rows: list[list[str]], *, strict: bool = False):  # type: ignore[no-untyped-def]
    table = read_csv(_write(folder, "contacts.csv", _contacts_csv(rows)))
    return parse_contacts(table, KNOWN, strict=strict)


def _warnings(result) -> list[tuple[int, str, str, str]]:  # type: ignore[no-untyped-def]
    return [(w.line, w.field, w.value, w.action) for w in result.warnings]


# --------------------------------------------------------------------------- contacts


def test_the_first_import_that_lost_half_the_people_keeps_them_all(tmp_path: Path) -> None:
    """consent `yes` / `LI`, linkedin_url `n/a` and time zone `PST` cost 48 % of a file."""
    result = _parse_contacts(
        tmp_path,
        [
            ["ana@acme.example", "", "n/a", "PST", "yes"],
            ["bob@acme.example", "", "https://linkedin.com/in/bob", "EST", "LI"],
            ["cy@globex.example", "", "-", "", "no"],
        ],
    )
    assert result.rejects == []
    assert [
        (r["email"], r["linkedin_url"], r["timezone"], r["consent"]) for r in result.records
    ] == [
        ("ana@acme.example", None, "America/Los_Angeles", "opt_in"),
        (
            "bob@acme.example",
            "https://linkedin.com/in/bob",
            "America/New_York",
            "legitimate_interest",
        ),
        ("cy@globex.example", None, None, "none"),
    ]
    assert _warnings(result) == [
        (2, "timezone", "PST", "mapped to America/Los_Angeles"),
        (2, "consent", "yes", "mapped to opt_in"),
        (3, "timezone", "EST", "mapped to America/New_York"),
        (3, "consent", "LI", "mapped to legitimate_interest"),
        (4, "consent", "no", "mapped to none"),
    ]
    assert result.warned_rows == 3


@pytest.mark.parametrize(
    ("cells", "field", "why"),
    [
        (["", "CST", ""], "timezone", "America/Chicago"),
        (["", "IST", ""], "timezone", "Asia/Kolkata"),
        (["", "BST", ""], "timezone", "Europe/London"),
        (["", "UTC+1", ""], "timezone", "daylight saving"),
        (["", "Mars/Base", ""], "timezone", "not a time zone name"),
        (["", "", "yes please"], "consent", "not one of opt_in, legitimate_interest, none"),
        (["https://example.com/in/ana", "", ""], "linkedin_url", "not a linkedin.com URL"),
    ],
)
def test_an_unusable_optional_field_is_left_blank_saying_why(
    tmp_path: Path, cells: list[str], field: str, why: str
) -> None:
    result = _parse_contacts(tmp_path, [["ana@acme.example", "", *cells]])
    assert result.rejects == []
    assert result.records[0][field] is None
    [warning] = result.warnings
    assert (warning.line, warning.field) == (2, field)
    assert warning.action.startswith("left blank: ") and why in warning.action


def test_explicit_blanks_are_blanks_without_a_warning(tmp_path: Path) -> None:
    result = _parse_contacts(
        tmp_path,
        [
            ["ana@acme.example", "n/a", "N/A", "unknown", "null"],
            ["bob@acme.example", "", "-", "none", "none"],
        ],
    )
    assert result.rejects == [] and result.warnings == []
    ana, bob = result.records
    assert ana["account_domain"] == "acme.example"  # "n/a": taken from the email
    assert (ana["linkedin_url"], ana["timezone"], ana["consent"]) == (None, None, None)
    assert (bob["linkedin_url"], bob["timezone"], bob["consent"]) == (None, None, "none")


def test_strict_rejects_what_would_be_warned(tmp_path: Path) -> None:
    rows = [
        ["ana@acme.example", "", "n/a", "PST", "yes"],
        ["bob@acme.example", "", "", "Europe/Berlin", "opt-in"],
        ["cy@acme.example", "globex.example", "", "", ""],
    ]
    result = _parse_contacts(tmp_path, rows, strict=True)
    assert [r["email"] for r in result.records] == ["bob@acme.example"]
    assert result.warnings == []
    reasons = {r.line: r.reason for r in result.rejects}
    assert reasons[2].startswith("timezone: 'PST' is an abbreviation")
    assert "consent: 'yes' is not one of opt_in, legitimate_interest, none" in reasons[2]
    assert "linkedin" not in reasons[2]  # "n/a" is a blank, also with --strict
    assert reasons[4].startswith("account_domain: ")
    assert "acme.example" in reasons[4]


def test_only_identity_rejects_a_contact(tmp_path: Path) -> None:
    result = _parse_contacts(
        tmp_path,
        [
            ["not-an-email", "", "n/a", "PST", "yes"],
            ["pat@unknown.example", "", "", "", ""],
            ["sam@gmail.com", "", "", "", ""],
            ["lee@acme.example", "nowhere.example", "", "", ""],
        ],
    )
    assert result.records == [] and result.warnings == []
    reasons = [r.reason for r in result.rejects]
    assert reasons[0].startswith("email: ")
    assert "unknown account 'unknown.example'" in reasons[1]
    assert "personal mailbox" in reasons[2]
    assert "unknown account 'nowhere.example'" in reasons[3]


# --------------------------------------------------------------------------- email vs account


def test_an_email_at_another_imported_account_is_filed_under_that_account(tmp_path: Path) -> None:
    """Listed under Acme with a Globex address: Globex's employee, never Acme's."""
    result = _parse_contacts(
        tmp_path,
        [
            ["bob@globex.example", "acme.example", "", "", ""],
            ["eve@eu.globex.example", "initech.example", "", "", ""],
        ],
    )
    assert [r["account_domain"] for r in result.records] == ["globex.example", "globex.example"]
    assert _warnings(result) == [
        (
            2,
            "account_domain",
            "acme.example",
            "filed under globex.example, not acme.example: the email address is at "
            "globex.example, an imported account",
        ),
        (
            3,
            "account_domain",
            "initech.example",
            "filed under globex.example, not initech.example: the email address is at "
            "eu.globex.example, which belongs to the imported account globex.example",
        ),
    ]


def test_an_email_that_cannot_confirm_the_account_keeps_it_with_a_warning(tmp_path: Path) -> None:
    result = _parse_contacts(
        tmp_path,
        [
            ["max@gmx.de", "acme.example", "", "", ""],
            ["zoe@acme-corp.example", "acme.example", "", "", ""],
        ],
    )
    assert [r["account_domain"] for r in result.records] == ["acme.example", "acme.example"]
    first, second = result.warnings
    assert (first.line, first.field, first.value) == (2, "account_domain", "acme.example")
    assert first.action == (
        "kept under acme.example: gmx.de is a personal mailbox, so the address cannot "
        "confirm the company"
    )
    assert second.action == (
        "kept under acme.example: the email domain acme-corp.example is not an imported "
        "account, so the address cannot confirm the company"
    )


def test_an_email_at_the_account_or_its_subdomain_needs_no_warning(tmp_path: Path) -> None:
    result = _parse_contacts(
        tmp_path,
        [
            ["ana@acme.example", "acme.example", "", "", ""],
            ["max@eu.acme.example", "acme.example", "", "", ""],
            ["cy@acme.example", "www.ACME.example", "", "", ""],
        ],
    )
    assert result.warnings == [] and result.rejects == []
    assert {r["account_domain"] for r in result.records} == {"acme.example"}


# --------------------------------------------------------------------------- accounts


def test_an_ambiguous_revenue_is_left_blank_and_the_account_kept(tmp_path: Path) -> None:
    """`3.400` in a comma file: 3.4 or 3,400? Said, never guessed, and the account stays."""
    table = read_csv(
        _write(tmp_path, "accounts.csv", "domain,annual_revenue\nacme.example,3.400\n")
    )
    result = parse_accounts(table)
    assert result.rejects == []
    assert result.records[0]["annual_revenue"] is None
    [warning] = result.warnings
    assert (warning.line, warning.field, warning.value) == (2, "annual_revenue", "3.400")
    assert warning.action == (
        "left blank: ambiguous number: '3.400' could be 3.4 or 3,400: write 3400 or 3.4"
    )


def test_revenue_in_another_currency_is_converted_with_the_rates_date(tmp_path: Path) -> None:
    table = read_csv(
        _write(tmp_path, "accounts.csv", "domain,annual_revenue\nacme.example,SEK 300m\n")
    )
    result = parse_accounts(table)
    expected = 300_000_000 * RATES.usd_per_unit["SEK"]
    assert result.records[0]["annual_revenue"] == pytest.approx(expected)
    [warning] = result.warnings
    assert (warning.field, warning.value) == ("annual_revenue", "SEK 300m")
    assert warning.action == (
        f"converted from SEK to USD at the rates of {RATES.date.isoformat()}: {expected:,.0f}"
    )


def test_numbers_tier_and_stage_that_cannot_be_used_are_blank_with_a_warning(
    tmp_path: Path,
) -> None:
    text = (
        "domain,employees,annual_revenue,tier,stage\n"
        "acme.example,3.4,XYZ 5m,4,hot\n"
        "globex.example,-3,-5,n/a,none\n"
        "initech.example,1.200,$1.2M,T1,MQA\n"
    )
    result = parse_accounts(read_csv(_write(tmp_path, "accounts.csv", text)))
    assert result.rejects == []
    acme, globex, initech = result.records
    assert [acme[k] for k in ("employees", "annual_revenue", "tier_override", "stage")] == [
        None
    ] * 4
    assert [globex[k] for k in ("employees", "annual_revenue", "tier_override", "stage")] == [
        None
    ] * 4
    assert (initech["employees"], initech["annual_revenue"], initech["tier_override"]) == (
        1200,
        1_200_000,
        1,
    )
    assert initech["stage"] == "mqa"
    actions = {(w.line, w.field): w.action for w in result.warnings}
    assert set(actions) == {
        (2, "employees"),
        (2, "annual_revenue"),
        (2, "tier"),
        (2, "stage"),
        (3, "employees"),
        (3, "annual_revenue"),
        (4, "employees"),  # kept as 1,200, but said: it is not written the file's way
    }
    assert actions[4, "employees"] == "read as 1,200: a count of people cannot be a fraction"
    assert actions[2, "employees"] == "left blank: '3.4' is not a whole number"
    assert "XYZ" in actions[2, "annual_revenue"] and "does not list" in actions[2, "annual_revenue"]
    assert actions[2, "tier"] == "left blank: must be 1, 2 or 3 (or blank), not '4'"
    assert actions[2, "stage"].startswith("left blank: 'hot' is not a journey stage")
    assert actions[3, "employees"] == "left blank: '-3' is negative"
    assert result.warned_rows == 3


def test_strict_accounts_reject_with_todays_reasons(tmp_path: Path) -> None:
    text = "domain,employees,annual_revenue,tier\nacme.example,12x,,\nglobex.example,10,SEK 3m,\n"
    result = parse_accounts(read_csv(_write(tmp_path, "accounts.csv", text)), strict=True)
    assert result.records == [] and result.warnings == []
    reasons = [r.reason for r in result.rejects]
    assert reasons[0] == "employees: cannot read '12x' as a number"
    assert reasons[1].startswith("annual_revenue: 'SEK 3m' is not in USD")


def test_a_suppression_with_an_unknown_channel_suppresses_every_channel(tmp_path: Path) -> None:
    table = read_csv(_write(tmp_path, "s.csv", "email,channel\nbob@acme.example,fax\n"))
    result = parse_suppressions(table)
    assert [(r["value"], r["channel"]) for r in result.records] == [("bob@acme.example", "all")]
    assert [(w.field, w.value, w.action) for w in result.warnings] == [
        (
            "channel",
            "fax",
            "suppressed on every channel: 'fax' is not one of all, email, linkedin",
        )
    ]
    strict = parse_suppressions(table, strict=True)
    assert [r.reason for r in strict.rejects] == [
        "channel: 'fax' is not one of all, email, linkedin"
    ]


# --------------------------------------------------------------------------- warnings file

ACCOUNTS = "domain,name\nacme.example,Acme\nglobex.example,Globex\n"
MESSY = (
    "email,first_name,account_domain,linkedin_url,timezone,consent\n"
    "ana@acme.example,Ana,,n/a,PST,yes\n"
    "bob@globex.example,Bob,acme.example,,CST,LI\n"
    "not-an-email,X,acme.example,,,\n"
    "cy@acme.example,Cy,,,Europe/Berlin,opt_in\n"
)


def test_the_import_writes_every_warning_beside_the_file(engine, tmp_path: Path) -> None:
    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    source = _write(tmp_path, "contacts.csv", MESSY)
    report = import_file("contacts", source, engine, get_settings())
    assert (report.imported, len(report.rejects), report.warned) == (3, 1, 2)
    assert report.warnings_path == tmp_path / "contacts.warnings.csv" == warnings_path(source)
    with report.warnings_path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["line", "field", "value", "action"],
        ["2", "timezone", "PST", "mapped to America/Los_Angeles"],
        ["2", "consent", "yes", "mapped to opt_in"],
        [
            "3",
            "account_domain",
            "acme.example",
            "filed under globex.example, not acme.example: the email address is at "
            "globex.example, an imported account",
        ],
        [
            "3",
            "timezone",
            "CST",
            "left blank: 'CST' could be US Central (America/Chicago), China (Asia/Shanghai) "
            "or Cuba (America/Havana); write the time zone name",
        ],
        ["3", "consent", "LI", "mapped to legitimate_interest"],
    ]
    assert [(w.line, w.field) for w in report.warnings] == [(int(r[0]), r[1]) for r in rows[1:]]
    contacts = {c["email"]: c for c in list_contacts(engine)}
    assert contacts["bob@globex.example"]["account_domain"] == "globex.example"

    again = import_file("contacts", source, engine, get_settings())
    assert (again.imported, again.updated, again.warned) == (0, 0, 2)
    assert list(csv.reader(report.warnings_path.open(encoding="utf-8", newline=""))) == rows


def test_a_stale_warnings_file_goes_and_a_failed_import_writes_none(engine, tmp_path) -> None:
    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    source = _write(tmp_path, "contacts.csv", MESSY)
    import_file("contacts", source, engine, get_settings())
    source.write_text("email\nana@acme.example\n", encoding="utf-8")
    report = import_file("contacts", source, engine, get_settings())
    assert (report.warned, report.warnings_path) == (0, None)
    assert not warnings_path(source).exists()

    broken = _write(tmp_path, "broken.csv", MESSY + 'dee@acme.example,"never closed\n')
    with pytest.raises(Exception, match="never closed"):
        import_file("contacts", broken, engine, get_settings())
    assert not warnings_path(broken).exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_the_warnings_file_caps_long_values_and_is_no_more_readable_than_its_source(
    engine, tmp_path: Path
) -> None:
    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    long = "https://example.com/" + "x" * 5000
    source = _write(tmp_path, "c.csv", f"email,linkedin_url\nana@acme.example,{long}\n")
    source.chmod(0o600)
    report = import_file("contacts", source, engine, get_settings())
    assert stat.S_IMODE(report.warnings_path.stat().st_mode) == 0o600
    [_, row] = list(csv.reader(report.warnings_path.open(encoding="utf-8", newline="")))
    assert all(len(cell) <= 300 for cell in row)
    assert row[2].startswith("https://example.com/xxx") and row[2].endswith("…")


def test_many_warnings_stream_to_the_file_and_only_a_few_stay_in_memory(
    engine, tmp_path: Path
) -> None:
    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    rows = "".join(f"p{i}@acme.example,PST,yes\n" for i in range(3000))
    source = _write(tmp_path, "c.csv", "email,timezone,consent\n" + rows)
    report = import_file("contacts", source, engine, get_settings(), batch_rows=500)
    assert (report.imported, report.warned, report.warning_count) == (3000, 3000, 6000)
    assert len(report.warnings) == 100
    with report.warnings_path.open(encoding="utf-8", newline="") as handle:
        assert sum(1 for _ in handle) == 6001


def test_strict_import_rejects_and_writes_no_warnings(engine, tmp_path: Path) -> None:
    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    source = _write(tmp_path, "contacts.csv", MESSY)
    report = import_file("contacts", source, engine, get_settings(), strict=True)
    assert (report.imported, [r.line for r in report.rejects], report.warned) == (1, [2, 3, 4], 0)
    assert report.warnings_path is None
    assert [c["email"] for c in list_contacts(engine)] == ["cy@acme.example"]


def test_accounts_with_unusable_numbers_go_in_and_convert_with_a_warning(engine, tmp_path):
    text = "domain,employees,annual_revenue\nacme.example,3.4,3.400\nglobex.example,5k,€ 5m\n"
    report = import_file("accounts", _write(tmp_path, "a.csv", text), engine, get_settings())
    assert (report.imported, report.rejects, report.warned) == (2, [], 2)
    rows = {r["domain"]: r for r in list_accounts(engine)}
    assert set(rows) == {"acme.example", "globex.example"}
    fields = [(w.line, w.field) for w in report.warnings]
    assert fields == [(2, "employees"), (2, "annual_revenue"), (3, "annual_revenue")]
    assert "converted from EUR to USD at the rates of" in report.warnings[2].action


WARNING_CELLS = {
    "email": [
        "ana@acme.example",
        "bob@globex.example",
        "nope",
        "x@gmail.com",
        "cy@eu.acme.example",
    ],
    "account_domain": [
        "",
        "acme.example",
        "globex.example",
        "n/a",
        "unknown.example",
        "bad domain",
    ],
    "timezone": ["", "PST", "CST", "Europe/Berlin", "Mars/Base", "none"],
    "consent": ["", "yes", "LI", "opt_in", "maybe", "none", "-"],
}


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.lists(
        st.fixed_dictionaries({k: st.sampled_from(v) for k, v in WARNING_CELLS.items()}),
        max_size=10,
    ),
    strict=st.booleans(),
)
def test_warnings_are_only_on_kept_rows_and_strict_keeps_only_clean_ones(
    tmp_path: Path, rows: list[dict[str, str]], strict: bool
) -> None:
    text = ",".join(WARNING_CELLS) + "\n" + "".join(",".join(r.values()) + "\n" for r in rows)
    table = read_csv(_write(tmp_path, "c.csv", text))
    result = parse_contacts(table, KNOWN, strict=strict)
    recorded = {n for lines in result.record_lines for n in lines}
    rejected = {r.line for r in result.rejects}
    assert result.rows_read == len(result.records) + result.duplicates_merged + len(rejected)
    assert {w.line for w in result.warnings} <= recorded
    assert result.warned_rows == len({w.line for w in result.warnings})
    if strict:
        assert result.warnings == []
    lenient = parse_contacts(table, KNOWN)
    # leniency never rejects more, and rejects only for identity
    assert {r.line for r in lenient.rejects} <= rejected
    for reject in lenient.rejects:
        assert reject.reason.startswith(("email:", "unknown account", "account_domain:", "'"))


def test_warning_log_in_memory_keeps_everything() -> None:
    log = WarningLog()
    log.add(2, [("timezone", "PST", "mapped to America/Los_Angeles")])
    log.add(5, [("consent", "yes", "mapped to opt_in"), ("tier", "4", "left blank: x")])
    assert (log.count, log.rows) == (3, 2)
    assert [str(w) for w in log.kept] == [
        "line 2: timezone 'PST': mapped to America/Los_Angeles",
        "line 5: consent 'yes': mapped to opt_in",
        "line 5: tier '4': left blank: x",
    ]


# --------------------------------------------------------------------------- command line


def _abm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "abm", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )


def test_the_command_lists_warnings_and_counts_warned_rows_last(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
    accounts = _write(tmp_path, "accounts.csv", ACCOUNTS)
    assert _abm("import", "accounts", str(accounts)).returncode == 0
    contacts = _write(tmp_path, "contacts.csv", MESSY)
    result = _abm("import", "contacts", str(contacts))
    assert result.returncode == 1, result.stderr  # one row was rejected
    assert result.stdout.strip().splitlines()[-1] == "imported=3 updated=0 rejected=1 warned=2"
    assert f"{contacts}:4: email: " in result.stderr
    assert f"{contacts}:2: warning: timezone 'PST': mapped to America/Los_Angeles" in result.stderr
    assert str(tmp_path / "contacts.warnings.csv") in result.stderr

    strict = _abm("import", "contacts", "--strict", str(contacts))
    assert strict.stdout.strip().splitlines()[-1] == "imported=0 updated=0 rejected=3 warned=0"
    assert "warning:" not in strict.stderr


def test_the_command_caps_the_warnings_it_prints(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
    _abm("import", "accounts", str(_write(tmp_path, "accounts.csv", ACCOUNTS)))
    rows = "".join(f"p{i}@acme.example,PST\n" for i in range(50))
    result = _abm("import", "contacts", str(_write(tmp_path, "c.csv", "email,timezone\n" + rows)))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(": warning: ") == 10
    assert "... and 40 more warnings" in result.stderr
    assert result.stdout.strip().splitlines()[-1] == "imported=50 updated=0 rejected=0 warned=50"
