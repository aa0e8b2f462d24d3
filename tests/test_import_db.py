"""CSV import end to end into the database (SQLite and PostgreSQL)."""

from pathlib import Path

from abm.settings import get_settings
from flows.import_csv import import_file
from models.queries import list_accounts, list_contacts

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


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_good_rows_go_in_and_bad_rows_are_reported_with_line_and_reason(engine, tmp_path):
    accounts = _write(tmp_path, "accounts.csv", ACCOUNTS)
    report = import_file("accounts", accounts, engine, get_settings())
    assert (report.imported, report.updated) == (2, 0)
    assert [r.line for r in report.rejects] == [5, 6]
    assert "employees" in report.rejects[0].reason and "twelve" in report.rejects[0].reason
    assert "domain" in report.rejects[1].reason
    assert report.rejects_path == tmp_path / "accounts.rejects.csv"
    rejected = report.rejects_path.read_text(encoding="utf-8-sig").splitlines()
    assert rejected[0].startswith("line;reason;")
    assert rejected[1].startswith("5;")

    rows = {row["domain"]: row for row in list_accounts(engine)}
    assert set(rows) == {"acme.example", "globex.example"}
    assert rows["acme.example"]["name"] == "Acme GmbH"


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
