"""CSV import end to end into the database (SQLite and PostgreSQL)."""

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.settings import get_settings
from models.queries import list_accounts, list_contacts
from stages.importing import ImportFileError, import_file, rejects_path, warnings_path

ACCOUNTS = (
    "\ufeffDomain;Company;Industry;Employees;Annual Revenue;Country;Technologies;Tier;Region\r\n"
    "https://www.Acme.example/about;Acme GmbH;Manufacturing;1.200;€ 5m;Germany;"
    '"Salesforce;AWS";;EMEA\r\n'
    "globex.example;Globex;Software;5k;$1.2B;US;HubSpot;1;AMER\r\n"
    "\r\n"
    "initech.example;Initech;Software;twelve;;US;;;AMER\r\n"
    ";No Domain Inc;Retail;10;;US;;;AMER\r\n"
    "globex.example;;;;;;Snowflake;;\r\n"
)
CONTACTS = (
    "email,first_name,last_name,title,account_domain,timezone,consent\n"
    'ana.nunez@acme.example,Ana,Núñez,"Sr. Dir, IT Infrastructure",,Europe/Berlin,opt_in\n'
    "Zoe.Mueller@acme.example,Zoë,Müller,CFO & COO,acme.example,,legitimate_interest\n"
    "bob@globex.example,Bob,Stone,VP Eng,,America/New_York,\n"
    "not-an-email,X,Y,CEO,acme.example,,\n"
    "pat@unknown.example,Pat,Lee,CEO,,,\n"
    "sam@gmail.com,Sam,Ray,CTO,,,\n"
    "bob@globex.example,,,,,,opt_in\n"
)


_examples = itertools.count()


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_good_rows_go_in_and_bad_rows_are_reported_with_line_and_reason(engine, tmp_path):
    accounts = _write(tmp_path, "accounts.csv", ACCOUNTS)
    report = import_file("accounts", accounts, engine, get_settings())
    assert (report.imported, report.updated) == (3, 0)
    assert [r.line for r in report.rejects] == [6]
    assert "domain" in report.rejects[0].reason
    assert report.rejects_path == tmp_path / "accounts.rejects.csv"
    rejected = report.rejects_path.read_text(encoding="utf-8-sig").splitlines()
    assert rejected[0].startswith("line;reason;")
    assert rejected[1].startswith("6;")
    # a count that cannot be read costs the count, not the account
    assert [(w.line, w.field, w.value) for w in report.warnings] == [
        (2, "annual_revenue", "€ 5m"),
        (5, "employees", "twelve"),
    ]
    assert report.warnings[0].action.startswith("converted from EUR to USD at the rates of ")
    assert report.warnings[1].action == "left blank: cannot read 'twelve' as a number"
    assert report.warnings_path == tmp_path / "accounts.warnings.csv"
    written = report.warnings_path.read_text(encoding="utf-8-sig").splitlines()
    assert written[0] == "line;field;value;action"
    assert written[2] == "5;employees;twelve;left blank: cannot read 'twelve' as a number"

    rows = {row["domain"]: row for row in list_accounts(engine)}
    assert set(rows) == {"acme.example", "globex.example", "initech.example"}
    assert rows["acme.example"]["name"] == "Acme GmbH"
    from sqlalchemy import select

    from models.tables import Account

    with engine.connect() as connection:
        initech = connection.execute(
            select(Account).where(Account.domain == "initech.example")
        ).one()
    assert (initech.name, initech.employees) == ("Initech", None)


def test_strict_rejects_the_rows_a_lenient_import_keeps_with_warnings(engine, tmp_path):
    accounts = _write(tmp_path, "accounts.csv", ACCOUNTS)
    report = import_file("accounts", accounts, engine, get_settings(), strict=True)
    assert (report.imported, [r.line for r in report.rejects]) == (1, [2, 5, 6])
    assert "employees" in report.rejects[1].reason and "twelve" in report.rejects[1].reason
    assert (report.warned, report.warnings_path) == (0, None)
    assert [row["domain"] for row in list_accounts(engine)] == ["globex.example"]


def test_duplicate_rows_in_a_file_merge_and_keep_every_value(engine, tmp_path):
    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    from sqlalchemy import select

    from models.tables import Account

    with engine.connect() as connection:
        globex = connection.execute(select(Account).where(Account.domain == "globex.example")).one()
    assert globex.technologies == ["HubSpot", "Snowflake"]
    assert globex.employees == 5000
    assert globex.annual_revenue == 1.2e9
    assert globex.tier_override == 1
    assert globex.attributes == {"region": "AMER"}


def test_contacts_are_linked_classified_and_rejected_with_reasons(engine, tmp_path):
    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    report = import_file("contacts", _write(tmp_path, "c.csv", CONTACTS), engine, get_settings())
    assert (report.imported, len(report.rejects)) == (3, 3)
    reasons = {r.line: r.reason for r in report.rejects}
    assert "email" in reasons[5]
    assert "unknown account" in reasons[6]
    assert "gmail.com" in reasons[7]
    contacts = {c["email"]: c for c in list_contacts(engine)}
    zoe = contacts["zoe.mueller@acme.example"]
    assert (zoe["first_name"], zoe["last_name"], zoe["role"]) == ("Zoë", "Müller", "approver")
    ana = contacts["ana.nunez@acme.example"]
    assert (ana["account_domain"], ana["seniority"], ana["function"], ana["role"]) == (
        "acme.example",
        "director",
        "it",
        "specifier",
    )
    assert contacts["bob@globex.example"]["role"] == "decision_maker"


def test_importing_the_same_files_again_changes_nothing(engine, tmp_path):
    accounts = _write(tmp_path, "a.csv", ACCOUNTS)
    contacts = _write(tmp_path, "c.csv", CONTACTS)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    before = list_contacts(engine), list_accounts(engine)
    again_accounts = import_file("accounts", accounts, engine, get_settings())
    again_contacts = import_file("contacts", contacts, engine, get_settings())
    assert (again_accounts.imported, again_accounts.updated) == (0, 0)
    assert (again_contacts.imported, again_contacts.updated) == (0, 0)
    assert (list_contacts(engine), list_accounts(engine)) == before


def test_a_changed_row_updates_and_blank_cells_never_erase(engine, tmp_path):
    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    change = "domain,name,industry\nacme.example,,Robotics\n"
    report = import_file("accounts", _write(tmp_path, "b.csv", change), engine, get_settings())
    assert (report.imported, report.updated) == (0, 1)
    acme = {r["domain"]: r for r in list_accounts(engine)}["acme.example"]
    assert (acme["name"], acme["industry"]) == ("Acme GmbH", "Robotics")


def test_suppression_import_marks_matching_contacts(engine, tmp_path):
    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    import_file("contacts", _write(tmp_path, "c.csv", CONTACTS), engine, get_settings())
    suppressions = "email,domain,reason\nbob@globex.example,,asked\n,acme.example,legal hold\n"
    report = import_file(
        "suppressions", _write(tmp_path, "s.csv", suppressions), engine, get_settings()
    )
    assert report.imported == 2
    statuses = {c["email"]: c["status"] for c in list_contacts(engine)}
    assert set(statuses.values()) == {"suppressed"}


def test_a_stage_column_sets_the_stage_once_and_keeps_it_in_the_history(engine, tmp_path):
    from stages.engagement.journey import set_stage, stage_history

    accounts = _write(
        tmp_path, "accounts.csv", "domain,stage\nacme.example,Opportunity\nglobex.example,\n"
    )
    report = import_file("accounts", accounts, engine, get_settings())
    assert (report.imported, report.rejects) == (2, [])
    rows = {row["domain"]: row for row in list_accounts(engine)}
    assert {d: row["stage"] for d, row in rows.items()} == {
        "acme.example": "opportunity",
        "globex.example": "target",
    }
    history = stage_history(engine, rows["acme.example"]["id"])
    assert [(c["from_stage"], c["to_stage"], c["source"]) for c in history] == [
        ("target", "opportunity", "import")
    ]
    assert "accounts.csv" in history[0]["reason"] and "line 2" in history[0]["reason"]
    assert stage_history(engine, rows["globex.example"]["id"]) == []

    again = import_file("accounts", accounts, engine, get_settings())
    assert (again.imported, again.updated) == (0, 0)
    assert len(stage_history(engine, rows["acme.example"]["id"])) == 1

    # a person moved the account on: the same file imported again does not move it back
    set_stage(engine, "acme.example", "customer", "contract signed")
    import_file("accounts", accounts, engine, get_settings())
    assert {r["domain"]: r["stage"] for r in list_accounts(engine)}["acme.example"] == "customer"


def test_an_unknown_stage_is_left_blank_with_line_field_and_value(engine, tmp_path):
    accounts = _write(tmp_path, "accounts.csv", "domain,stage\nacme.example,won\n")
    report = import_file("accounts", accounts, engine, get_settings())
    assert report.rejects == []
    assert [(w.line, w.field, w.value) for w in report.warnings] == [(2, "stage", "won")]
    assert report.warnings[0].action.startswith("left blank: 'won' is not a journey stage")
    assert [(a["domain"], a["stage"]) for a in list_accounts(engine)] == [
        ("acme.example", "target")
    ]

    strict = import_file("accounts", accounts, engine, get_settings(), strict=True)
    assert [(r.line, r.reason.split(";")[0]) for r in strict.rejects] == [
        (2, "stage: 'won' is not a journey stage")
    ]


# --------------------------------------------------------------------------- streaming
# Contacts stream through `import_file` in batches of `batch_rows` rows. With tiny batches
# every property of the whole-file import must still hold across batch boundaries.


def _contact_rows(engine) -> dict[str, dict]:
    from sqlalchemy import select

    from models.tables import Contact

    skip = {"id", "account_id", "created_at", "updated_at"}
    with engine.connect() as connection:
        rows = connection.execute(select(Contact)).mappings().all()
    return {row["email"]: {k: v for k, v in row.items() if k not in skip} for row in rows}


def test_a_contact_repeated_in_later_batches_is_merged_and_counted_once(engine, tmp_path):
    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    text = (
        "email,first_name,last_name,title,timezone,region\n"
        "ana@acme.example,Ana,,CFO,,EMEA\n"  # batch 1
        "bob@globex.example,Bob,Stone,VP Eng,,\n"
        "zoe@acme.example,Zoë,,,,\n"  # batch 2
        "ANA@acme.example,,Núñez,,Europe/Berlin,\n"
        "cy@acme.example,Cy,,CTO,,\n"  # batch 3
        "ana@acme.example,Anna,,,,AMER\n"
    )
    source = _write(tmp_path, "c.csv", text)
    report = import_file("contacts", source, engine, get_settings(), batch_rows=2)
    assert (report.imported, report.updated, report.unchanged, report.rejects) == (4, 0, 0, [])
    assert f"{source}: 2 duplicate rows merged" in report.notes
    ana = _contact_rows(engine)["ana@acme.example"]
    assert (ana["first_name"], ana["last_name"], ana["title"], ana["timezone"]) == (
        "Anna",
        "Núñez",
        "CFO",
        "Europe/Berlin",
    )
    assert ana["attributes"] == {"region": "AMER"}
    assert ana["seniority"] == "c_level"  # classified from the title of the first row

    again = import_file("contacts", source, engine, get_settings(), batch_rows=2)
    assert (again.imported, again.updated, again.unchanged) == (0, 0, 4)


def test_a_repeated_contact_that_ends_as_it_was_is_unchanged_not_updated(engine, tmp_path):
    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    import_file(
        "contacts",
        _write(tmp_path, "c.csv", "email,title\nana@acme.example,CFO\n"),
        engine,
        get_settings(),
    )
    before = _contact_rows(engine)
    back = "email,title\nana@acme.example,CTO\nbob@globex.example,VP Eng\nana@acme.example,CFO\n"
    report = import_file(
        "contacts", _write(tmp_path, "b.csv", back), engine, get_settings(), batch_rows=1
    )
    assert (report.imported, report.updated, report.unchanged) == (1, 0, 1)
    assert _contact_rows(engine)["ana@acme.example"] == before["ana@acme.example"]

    later = (
        "email,title,first_name\n"
        "ana@acme.example,CFO,\nbob@globex.example,VP Eng,\nana@acme.example,,Ana\n"
    )
    report = import_file(
        "contacts", _write(tmp_path, "d.csv", later), engine, get_settings(), batch_rows=1
    )
    assert (report.imported, report.updated, report.unchanged) == (0, 1, 1)
    assert _contact_rows(engine)["ana@acme.example"]["first_name"] == "Ana"


def test_a_bad_row_in_a_later_batch_is_rejected_and_the_others_go_in(engine, tmp_path):
    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    text = (
        "email,timezone\n"
        "a@acme.example,\nb@acme.example,\n"
        "c@acme.example,\nd@acme.example,Mars/Base\n"
        "e@acme.example,surplus,cell\nf@acme.example,PST\n"
    )
    source = _write(tmp_path, "c.csv", text)
    report = import_file("contacts", source, engine, get_settings(), batch_rows=2)
    assert report.imported == 5
    assert [(r.line, r.reason.split(":")[0]) for r in report.rejects] == [
        (6, "3 fields, header has 2"),
    ]
    rejected = report.rejects_path.read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[0] for row in rejected] == ["line", "6"]
    assert [(w.line, w.field, w.value) for w in report.warnings] == [
        (5, "timezone", "Mars/Base"),
        (7, "timezone", "PST"),
    ]
    warned = report.warnings_path.read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[0] for row in warned] == ["line", "5", "7"]
    rows = _contact_rows(engine)
    assert set(rows) == {f"{c}@acme.example" for c in "abcdf"}
    assert (rows["d@acme.example"]["timezone"], rows["f@acme.example"]["timezone"]) == (
        None,
        "America/Los_Angeles",
    )


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ('z@acme.example,"never closed\n', "line 6: a quoted cell starts here"),
        ("ja\x00ne@acme.example,x\n", "line 6: contains a NUL"),
        ("", "required column 'email' is missing"),
    ],
)
def test_a_file_error_late_in_the_file_writes_nothing(engine, tmp_path, tail, message):
    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    header = "email,title\n" if tail else "mail,title\n"
    rows = "".join(f"p{i}@acme.example,CEO\n" for i in range(4))
    source = _write(tmp_path, "c.csv", header + rows + tail)
    with pytest.raises(ImportFileError, match=message):
        import_file("contacts", source, engine, get_settings(), batch_rows=1)
    assert _contact_rows(engine) == {}
    assert not rejects_path(source).exists()
    assert not warnings_path(source).exists()


def test_a_failure_after_some_batches_rolls_all_of_them_back(engine, tmp_path, monkeypatch):
    from models import store

    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    import_file("contacts", _write(tmp_path, "c.csv", CONTACTS), engine, get_settings())
    before = list_contacts(engine)
    write = store.ContactBatches.write
    calls = []

    def failing(self, records):
        calls.append(len(records))
        if len(calls) == 3:
            raise RuntimeError("connection lost")
        write(self, records)

    monkeypatch.setattr(store.ContactBatches, "write", failing)
    rows = "".join(f"p{i}@acme.example,CEO,PST\n" for i in range(6))
    source = _write(
        tmp_path, "d.csv", "email,title,timezone\nzoe.mueller@acme.example,CEO,\n" + rows
    )
    with pytest.raises(RuntimeError, match="connection lost"):
        import_file("contacts", source, engine, get_settings(), batch_rows=2)
    assert list_contacts(engine) == before
    assert not rejects_path(source).exists()
    assert not warnings_path(source).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.fixture(scope="module")
def contacts_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with the two accounts and two contacts, copied per example."""
    from models.db import get_engine, migrate

    folder = tmp_path_factory.mktemp("stream")
    url = f"sqlite:///{folder / 'template.db'}"
    engine = get_engine(url)
    migrate(engine)
    settings = get_settings()
    import_file("accounts", _write(folder, "a.csv", ACCOUNTS), engine, settings)
    existing = "email,first_name,title\nana@acme.example,Ana,CFO\nbob@globex.example,Bob,VP Eng\n"
    import_file("contacts", _write(folder, "c.csv", existing), engine, settings)
    engine.dispose()
    get_engine.cache_clear()
    return folder / "template.db"


STREAM_CELLS = {
    "email": [
        "ana@globex.example",
        "ana@acme.example",
        "ANA@Acme.example",
        "bob@globex.example",
        "cy@acme.example",
        "dee@globex.example",
        "nope",
        "x@unknown.example",
    ],
    "account_domain": ["", "", "acme.example", "globex.example"],
    "first_name": ["", "Ana", "Anna", "Bob"],
    "title": ["", "CFO", "VP Eng", "Engineer"],
    "timezone": ["", "Europe/Berlin", "Mars/Base", "PST"],
    "notes": ["", "a", "b"],
}


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.lists(
        st.fixed_dictionaries({k: st.sampled_from(v) for k, v in STREAM_CELLS.items()}),
        max_size=12,
    ),
    batch_rows=st.integers(min_value=1, max_value=4),
)
def test_tiny_batches_import_exactly_what_one_batch_does(
    tmp_path: Path, contacts_template: Path, rows: list[dict[str, str]], batch_rows: int
) -> None:
    """Same counts, rejects, notes and rows, and a re-import that changes nothing."""
    import shutil

    from sqlalchemy import create_engine

    folder = tmp_path / f"ex{next(_examples)}"
    folder.mkdir()
    text = ",".join(STREAM_CELLS) + "\n" + "".join(",".join(r.values()) + "\n" for r in rows)
    outcomes = []
    for size in (batch_rows, 100):
        database = folder / f"abm{size}.db"
        shutil.copy(contacts_template, database)
        engine = create_engine(f"sqlite:///{database}")
        source = _write(folder, "c.csv", text)
        report = import_file("contacts", source, engine, get_settings(), batch_rows=size)
        again = import_file("contacts", source, engine, get_settings(), batch_rows=size)
        assert (again.imported, again.updated) == (0, 0)
        outcomes.append(
            (
                report.imported,
                report.updated,
                report.unchanged,
                [(r.line, r.reason) for r in report.rejects],
                [(w.line, w.field, w.value, w.action) for w in report.warnings],
                (report.warned, report.warning_count),
                report.warnings_path and report.warnings_path.read_bytes(),
                report.notes,
                _contact_rows(engine),
            )
        )
        engine.dispose()
    assert outcomes[0] == outcomes[1]


def test_a_pipe_is_imported_although_it_can_be_read_only_once(engine, tmp_path):
    """`abm import contacts /dev/stdin`: the streaming import reads a file more than once."""
    import os
    import threading

    import_file("accounts", _write(tmp_path, "a.csv", ACCOUNTS), engine, get_settings())
    pipe = tmp_path / "c.csv"
    os.mkfifo(pipe)
    writer = threading.Thread(
        target=pipe.write_text, args=(CONTACTS,), kwargs={"encoding": "utf-8"}
    )
    writer.start()
    report = import_file("contacts", pipe, engine, get_settings(), batch_rows=2)
    writer.join()
    assert (report.imported, len(report.rejects)) == (3, 3)
