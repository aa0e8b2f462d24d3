"""CSV import parsing: every row read ends up in a record or a reject, with a usable reason."""

from __future__ import annotations

import codecs
import csv
import gc
import io
import unicodedata
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.currency import load_currency_rates
from stages.importing import (
    AmbiguousNumber,
    ImportFileError,
    Reject,
    normalise_consent,
    normalise_country,
    normalise_domain,
    normalise_email,
    normalise_linkedin_url,
    normalise_timezone,
    parse_accounts,
    parse_contacts,
    parse_number,
    parse_suppressions,
    read_csv,
    rejects_path,
    write_rejects,
)

KNOWN = {"acme.com", "beta.io", "xn--mnchen-3ya.de"}


def write(directory: Path, text: str, name: str = "data.csv", *, bom: bool = False) -> Path:
    path = directory / name
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + text.encode("utf-8"))
    return path


def read(directory: Path, text: str, **kwargs: bool) -> object:
    return read_csv(write(directory, text, **kwargs))


# --------------------------------------------------------------------------- reading


def test_utf8_bom_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    table = read(tmp_path, "email,first_name\njane@acme.com,Jane\n", bom=True)
    assert table.header == ["email", "first_name"]
    assert table.encoding == "utf-8-sig"
    assert table.rows[0].values["email"] == "jane@acme.com"


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiter_is_detected_from_the_header(tmp_path: Path, delimiter: str) -> None:
    text = delimiter.join(["email", "first_name", "title"]) + "\n"
    text += delimiter.join(["jane@acme.com", "Jane", "CTO"]) + "\n"
    table = read(tmp_path, text)
    assert table.delimiter == delimiter
    assert table.rows[0].values == {"email": "jane@acme.com", "first_name": "Jane", "title": "CTO"}


def test_delimiter_inside_a_quoted_header_cell_does_not_decide(tmp_path: Path) -> None:
    table = read(tmp_path, '"notes; misc",email,domain\nx,jane@acme.com,acme.com\n')
    assert table.delimiter == ","
    assert table.header == ["notes_misc", "email", "domain"]


def test_excel_sep_line_chooses_the_delimiter(tmp_path: Path) -> None:
    table = read(tmp_path, "sep=;\nemail;name,with comma\njane@acme.com;x\n")
    assert table.delimiter == ";"
    assert table.header_line == 2
    assert table.rows[0].line == 3


def test_quoted_cells_keep_delimiters_quotes_and_newlines(tmp_path: Path) -> None:
    text = 'domain,name,notes\nacme.com,"Acme, Inc.","He said ""hi""\nand left"\n'
    table = read(tmp_path, text)
    values = table.rows[0].values
    assert values["name"] == "Acme, Inc."
    assert values["notes"] == 'He said "hi"\nand left'


def test_semicolon_file_with_quoted_semicolons(tmp_path: Path) -> None:
    table = read(tmp_path, 'domain;technologies\nacme.com;"Salesforce;HubSpot"\n')
    result = parse_accounts(table)
    assert result.records[0]["technologies"] == ["Salesforce", "HubSpot"]


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r"])
def test_crlf_lf_and_cr_line_ends(tmp_path: Path, newline: str) -> None:
    text = newline.join(["domain,name", "acme.com,Acme", "", "beta.io,Beta", ""])
    table = read(tmp_path, text)
    assert [(r.line, r.values["name"]) for r in table.rows] == [(2, "Acme"), (4, "Beta")]


def test_line_numbers_are_physical_lines_after_a_multiline_cell(tmp_path: Path) -> None:
    text = (
        'domain,notes\r\nacme.com,"first\r\nsecond\r\nthird"\r\nbad domain,x\r\n\r\nbeta.io,ok\r\n'
    )
    table = read(tmp_path, text)
    assert [r.line for r in table.rows] == [2, 5, 7]
    result = parse_accounts(table)
    assert [r.line for r in result.rejects] == [5]
    assert result.record_lines == [[2], [7]]


def test_empty_lines_and_blank_rows_are_skipped_not_rejected(tmp_path: Path) -> None:
    text = '\n\ndomain,name\n\n,\n\t,\u00a0\n , \t \n"",\nacme.com,Acme\n\n'
    table = read(tmp_path, text)
    assert table.header_line == 3
    assert [r.line for r in table.rows] == [9]
    result = parse_accounts(table)
    assert result.rejects == []
    assert len(result.records) == 1
    assert result.rows_read == 1


def test_row_with_too_many_fields_is_rejected_with_counts(tmp_path: Path) -> None:
    text = "domain,name\nacme.com,Acme,surplus,more\nbeta.io,Beta,,\ngamma.com\n"
    table = read(tmp_path, text)
    assert [str(r) for r in table.rejects] == ["line 2: 4 fields, header has 2"]
    assert table.rejects[0].values["(extra 2)"] == "more"
    assert [r.values for r in table.rows] == [
        {"domain": "beta.io", "name": "Beta"},
        {"domain": "gamma.com", "name": ""},
    ]
    result = parse_accounts(table)
    assert [r.line for r in result.rejects] == [2]
    assert result.rows_read == 3


def test_cells_are_trimmed_including_non_breaking_and_zero_width_spaces(tmp_path: Path) -> None:
    table = read(tmp_path, "domain,name\n  acme.com\u00a0, \u200bAcme \n")
    assert table.rows[0].values == {"domain": "acme.com", "name": "Acme"}


def test_header_names_are_normalised_and_aliased(tmp_path: Path) -> None:
    table = read(tmp_path, "E-Mail, First Name ,Job-Title,Company Domain,Annual Revenue ($)\n")
    assert table.header == ["email", "first_name", "title", "domain", "annual_revenue"]
    assert table.original_header[0] == "E-Mail"


def test_alias_never_shadows_a_real_column(tmp_path: Path) -> None:
    table = read(tmp_path, "Website,Domain\nhttps://acme.com/about,acme.com\n")
    assert table.header == ["website", "domain"]


def test_two_columns_meaning_the_same_field_are_a_file_error(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r"data\.csv, line 1: columns 1 .* 2 .*'email'"):
        read(tmp_path, "Email,EMAIL\n")


def test_windows_1252_file_falls_back_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "legacy.csv"
    path.write_bytes("email;first_name\r\njoerg@acme.com;Jörg\r\n".encode("cp1252"))
    table = read_csv(path)
    assert table.encoding == "cp1252"
    assert table.rows[0].values["first_name"] == "Jörg"


def test_utf16_with_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("email\tfirst_name\r\nzoe@acme.com\tZoë\r\n".encode("utf-16"))
    table = read_csv(path)
    assert table.delimiter == "\t"
    assert table.rows[0].values["first_name"] == "Zoë"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\r\n  \r\n", "empty"),
        (b",,,\r\n , \t\r\n", "no header"),
        (b"PK\x03\x04rest-of-zip", "Excel workbook"),
        (b"email\n\x81\x8d\x8f\x90\x9d\n", "line 2"),
        (b"email\nja\x00ne@acme.com\n", "line 2: contains a NUL"),
        (b'domain,name\nacme.com,ok\nbeta.io,"never closed\nx,y\n', "line 3: a quoted cell"),
    ],
)
def test_whole_file_problems_name_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFileError, match=r"broken\.csv") as info:
        read_csv(path)
    assert message in str(info.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r"nope\.csv: no such file"):
        read_csv(tmp_path / "nope.csv")


def test_stray_quote_inside_a_quoted_cell_is_a_reject(tmp_path: Path) -> None:
    text = 'domain,name\nacme.com,"Acme "Big" Corp"\nbeta.io, "Beta, Inc" \ngamma.com,5" screen\n'
    table = read(tmp_path, text)
    assert [r.line for r in table.rejects] == [2]
    assert "quote" in table.rejects[0].reason
    assert [r.values["name"] for r in table.rows] == ["Beta, Inc", '5" screen']


def test_open_quote_swallowing_rows_is_reported_with_the_lines_it_spans(tmp_path: Path) -> None:
    text = 'domain,name\nacme.com,"Acme\nbeta.io,Beta\ngamma.com,"Gamma, Inc"\ndelta.com,D\n'
    table = read(tmp_path, text)
    assert [str(r) for r in table.rejects] == [
        'line 2: a quote is out of place (inside a quoted cell write a quote as "") '
        "(lines 2-4 were read as one row)"
    ]
    assert [r.line for r in table.rows] == [5]


def test_missing_required_column_is_a_file_error_with_a_hint(tmp_path: Path) -> None:
    table = read(tmp_path, "jane@acme.com,Jane\nbob@acme.com,Bob\n")
    with pytest.raises(ImportFileError, match="required column 'email' is missing") as info:
        parse_contacts(table, KNOWN)
    assert "header row" in str(info.value)
    with pytest.raises(ImportFileError, match=r"data\.csv, line 1: required column 'domain'"):
        parse_accounts(read(tmp_path, "name,industry\nAcme,Retail\n"))
    with pytest.raises(ImportFileError, match="'email', 'domain' or 'value'"):
        parse_suppressions(read(tmp_path, "reason\nx\n"))


# --------------------------------------------------------------------------- field parsers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("acme.com", "acme.com"),
        ("  ACME.com ", "acme.com"),
        ("https://www.Acme.com/about?x=1#top", "acme.com"),
        ("http://acme.com:8080", "acme.com"),
        ("www.acme.co.uk.", "acme.co.uk"),
        ("//cdn.acme.com/x", "cdn.acme.com"),
        ("münchen.de", "xn--mnchen-3ya.de"),
        ("xn--mnchen-3ya.de", "xn--mnchen-3ya.de"),
        ("www.com", "www.com"),
    ],
)
def test_normalise_domain_accepts_what_people_paste(raw: str, expected: str) -> None:
    assert normalise_domain(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("acme", "top-level domain"),
        ("acme..com", "empty part"),
        ("acme_corp.com", "'_'"),
        ("acme corp.com", "a space"),
        ("-acme.com", "'-'"),
        ("10.0.0.1", "IP address"),
        ("jane@acme.com", "email address"),
        ("acme.c0m", "'.c0m'"),
        ("a" * 64 + ".com", "longer than 63"),
    ],
)
def test_normalise_domain_explains_what_is_wrong(raw: str, why: str) -> None:
    with pytest.raises(ValueError, match=r"domain|empty") as info:
        normalise_domain(raw)
    assert why in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jane.Doe@Acme.COM", "jane.doe@acme.com"),
        ("  mailto:jane@acme.com?subject=Hi ", "jane@acme.com"),
        ("Jane Doe <Jane@Acme.com>", "jane@acme.com"),
        ('"Doe, Jane" <jane+abm@acme.com>', "jane+abm@acme.com"),
        ("o'brien@acme.ie", "o'brien@acme.ie"),
        ("info@münchen.de", "info@xn--mnchen-3ya.de"),
    ],
)
def test_normalise_email_unwraps_and_lowercases(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("jane", "no @"),
        ("jane@@acme.com", "more than one @"),
        ("jane@acme.com; bob@acme.com", "more than one email address"),
        ("jane doe@acme.com", "space"),
        ("@acme.com", "nothing before"),
        ("jane@", "nothing after"),
        ("jane@acme", "top-level domain"),
        ("jane..doe@acme.com", "not allowed"),
        (".jane@acme.com", "not allowed"),
        ("jörg@acme.de", "accents"),
    ],
)
def test_normalise_email_rejects_with_a_reason(raw: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        normalise_email(raw)
    assert why in str(info.value)


@pytest.mark.parametrize(
    ("raw", "european", "expected"),
    [
        ("1,200", False, 1200),
        ("1 200", False, 1200),
        ("1\u00a0200", True, 1200),
        ("1'200", False, 1200),
        ("1.200", True, 1200),
        ("1,5", True, 1.5),
        ("1.234,56", True, 1234.56),
        ("1,234.56", False, 1234.56),
        ("1.234.567", False, 1234567),
        ("5k", False, 5000),
        ("5 K", False, 5000),
        ("1.5M", False, 1_500_000),
        ("1,5 Mio", True, 1_500_000),
        ("2B", False, 2_000_000_000),
        ("2bn", False, 2_000_000_000),
        ("10-50", False, 30),
        ("10 – 50", False, 30),
        ("10-50k", False, 30_000),
        ("500+", False, 500),
        ("42", False, 42),
        ("-5", False, -5),
        (".5", False, 0.5),
    ],
)
def test_parse_number_reads_what_marketers_type(raw: str, european: bool, expected: float) -> None:
    assert parse_number(raw, european=european) == expected


@pytest.mark.parametrize("raw", ["", "  ", "n/a", "N/A", "-", "unknown"])
def test_parse_number_blank_is_none(raw: str) -> None:
    assert parse_number(raw) is None


@pytest.mark.parametrize("raw", ["12x", "abc", "1,2,3", "1.2.3,4.5", "5kk", "nan", "inf", "50-10"])
def test_parse_number_garbage_raises_a_readable_error(raw: str) -> None:
    with pytest.raises(ValueError, match=f"cannot read '{raw}' as a number"):
        parse_number(raw)


def test_country_names_map_to_iso_codes() -> None:
    assert [
        normalise_country(c)
        for c in ["United States", "U.S.", "USA", "uk", "Great Britain", "Deutschland", "fr"]
    ] == ["US", "US", "US", "GB", "GB", "DE", "FR"]
    assert normalise_country("Narnia") == "Narnia"
    assert normalise_country("") is None


def test_timezone_consent_and_linkedin_validators() -> None:
    assert normalise_timezone("europe/berlin") == "Europe/Berlin"
    assert normalise_timezone("America/New York") == "America/New_York"
    with pytest.raises(ValueError, match="time zone"):
        normalise_timezone("CET+1")
    with pytest.raises(ValueError, match="'PST' is an abbreviation"):
        normalise_timezone("PST")  # the import maps it, with a warning, unless --strict
    with pytest.raises(ValueError, match="could be US Central"):
        normalise_timezone("cst")
    assert [normalise_consent(c) for c in ["opt-in", "OPT_IN", "Legitimate Interest", "none"]] == [
        "opt_in",
        "opt_in",
        "legitimate_interest",
        "none",
    ]
    with pytest.raises(ValueError, match="opt_in, legitimate_interest, none"):
        normalise_consent("yes")
    assert (
        normalise_linkedin_url("de.LinkedIn.com/in/jane-doe/?trk=x")
        == "https://de.linkedin.com/in/jane-doe"
    )
    for bad in ["https://example.com/in/jane", "https://linkedin.com.evil.io/in/x", "linkedin.com"]:
        with pytest.raises(ValueError):
            normalise_linkedin_url(bad)


# --------------------------------------------------------------------------- accounts


def test_accounts_fields_are_parsed(tmp_path: Path) -> None:
    text = (
        "Company,Website,Industry,Employees,Annual Revenue,Country,Technologies,Tier,Owner\n"
        'Acme,https://www.acme.com/,Manufacturing,"1,200",$3.4M,United States,'
        '"Salesforce; HubSpot | salesforce, Snowflake",1,Ana\n'
        "Beta,beta.io,,51-200,,de,,,\n"
    )
    result = parse_accounts(read(tmp_path, text))
    assert result.rejects == []
    assert result.records[0] == {
        "domain": "acme.com",
        "name": "Acme",
        "industry": "Manufacturing",
        "employees": 1200,
        "annual_revenue": 3_400_000.0,
        "country": "US",
        "technologies": ["Salesforce", "HubSpot", "Snowflake"],
        "tier_override": 1,
        "stage": None,
        "attributes": {"owner": "Ana"},
    }
    beta = result.records[1]
    assert beta["employees"] == 126
    assert isinstance(beta["employees"], int)
    assert (beta["industry"], beta["annual_revenue"], beta["tier_override"]) == (None, None, None)
    assert (beta["country"], beta["technologies"], beta["attributes"]) == ("DE", [], {})


def test_accounts_in_a_semicolon_file_read_european_numbers(tmp_path: Path) -> None:
    text = "domain;employees;annual_revenue\nacme.com;1.200;2,5 Mio €\n"
    record = parse_accounts(read(tmp_path, text)).records[0]
    euros = load_currency_rates().usd_per_unit["EUR"]  # revenue is kept in ABM_CURRENCY
    assert (record["employees"], record["annual_revenue"]) == (1200, 2_500_000.0 * euros)


ACCOUNTS_WITH_BAD_CELLS = (
    "domain,employees,annual_revenue,tier\n"
    "acme.com,12x,,\n"
    ",10,,\n"
    "not a domain,10,,\n"
    "beta.io,-3,lots,4\n"
    "gamma.com,10,,2\n"
)


def test_accounts_without_a_usable_domain_are_rejected_the_rest_kept_with_warnings(
    tmp_path: Path,
) -> None:
    result = parse_accounts(read(tmp_path, ACCOUNTS_WITH_BAD_CELLS))
    reasons = {r.line: r.reason for r in result.rejects}
    assert set(reasons) == {3, 4}
    assert reasons[3].startswith("domain: missing")
    assert reasons[4].startswith("domain: 'not a domain' is not a valid domain")
    assert [r["domain"] for r in result.records] == ["acme.com", "beta.io", "gamma.com"]
    acme, beta, _ = result.records
    assert acme["employees"] is None
    assert (beta["employees"], beta["annual_revenue"], beta["tier_override"]) == (None, None, None)
    assert [(w.line, w.field, w.value, w.action) for w in result.warnings] == [
        (2, "employees", "12x", "left blank: cannot read '12x' as a number"),
        (5, "employees", "-3", "left blank: '-3' is negative"),
        (5, "annual_revenue", "lots", "left blank: cannot read 'lots' as a number"),
        (5, "tier", "4", "left blank: must be 1, 2 or 3 (or blank), not '4'"),
    ]


def test_strict_accounts_bad_rows_are_rejected_naming_field_and_value(tmp_path: Path) -> None:
    result = parse_accounts(read(tmp_path, ACCOUNTS_WITH_BAD_CELLS), strict=True)
    reasons = {r.line: r.reason for r in result.rejects}
    assert reasons[2] == "employees: cannot read '12x' as a number"
    assert reasons[3].startswith("domain: missing")
    assert reasons[4].startswith("domain: 'not a domain' is not a valid domain")
    assert reasons[5] == (
        "employees: '-3' is negative; annual_revenue: cannot read 'lots' as a number; "
        "tier: must be 1, 2 or 3 (or blank), not '4'"
    )
    assert [r["domain"] for r in result.records] == ["gamma.com"]
    assert result.rejects[0].values["employees"] == "12x"
    assert result.warnings == []


def test_an_accounts_stage_column_is_a_journey_stage_in_any_case(tmp_path: Path) -> None:
    text = "domain,Stage\nacme.com,MQA\nbeta.io,Opportunity\ngamma.com,\ndelta.com,hot\n"
    result = parse_accounts(read(tmp_path, text))
    assert [(r["domain"], r["stage"], r["attributes"]) for r in result.records] == [
        ("acme.com", "mqa", {}),
        ("beta.io", "opportunity", {}),
        ("gamma.com", None, {}),
        ("delta.com", None, {}),
    ]
    assert result.rejects == []
    assert [(w.line, w.field, w.action) for w in result.warnings] == [
        (
            5,
            "stage",
            "left blank: 'hot' is not a journey stage; use one of target, aware, engaged, "
            "mqa, opportunity, customer (or leave it blank)",
        )
    ]
    strict = parse_accounts(read(tmp_path, text), strict=True)
    assert [(r.line, r.reason) for r in strict.rejects] == [
        (
            5,
            "stage: 'hot' is not a journey stage; use one of target, aware, engaged, mqa, "
            "opportunity, customer (or leave it blank)",
        )
    ]


def test_duplicate_accounts_merge_later_non_empty_values_win(tmp_path: Path) -> None:
    text = (
        "domain,name,industry,employees,technologies,region,owner\n"
        "acme.com,Acme,Retail,100,Salesforce,EMEA,\n"
        "beta.io,Beta,,,,,\n"
        'https://www.ACME.com,Acme Corp,,250,"HubSpot, salesforce",,Ana\n'
        "acme.com,,Manufacturing,,,,\n"
    )
    result = parse_accounts(read(tmp_path, text))
    assert [r["domain"] for r in result.records] == ["acme.com", "beta.io"]
    acme = result.records[0]
    assert acme["name"] == "Acme Corp"
    assert acme["industry"] == "Manufacturing"
    assert acme["employees"] == 250
    assert acme["technologies"] == ["Salesforce", "HubSpot"]
    assert acme["attributes"] == {"region": "EMEA", "owner": "Ana"}
    assert result.duplicates_merged == 2
    assert result.record_lines == [[2, 4, 5], [3]]
    assert result.rows_read == 4


# --------------------------------------------------------------------------- contacts


def contacts(tmp_path: Path, rows: list[list[str]], known: set[str] = KNOWN) -> object:
    header = ["email", "first_name", "last_name", "account_domain", "timezone", "consent"]
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    return parse_contacts(read(tmp_path, buffer.getvalue()), known)


def test_contact_unicode_names_are_kept_and_nfc_normalised(tmp_path: Path) -> None:
    decomposed = unicodedata.normalize("NFD", "Zoë")
    result = contacts(
        tmp_path,
        [
            ["zoe@acme.com", decomposed, "Ødegård", "", "", ""],
            ["li@acme.com", "李", "小龍", "", "", ""],
            ["jose@acme.com", "José-María", "Nuñez O'Neill", "", "", ""],
        ],
    )
    names = [(r["first_name"], r["last_name"]) for r in result.records]
    assert names == [("Zoë", "Ødegård"), ("李", "小龍"), ("José-María", "Nuñez O'Neill")]
    assert names[0][0] == unicodedata.normalize("NFC", "Zoë")


def test_contact_record_shape(tmp_path: Path) -> None:
    text = (
        "Email Address,First Name,Last Name,Job Title,Company Domain,LinkedIn,Country,Time Zone,"
        "Consent,Source\n"
        "Jane Doe <JANE@acme.com>,Jane,Doe,VP Eng,www.acme.com,linkedin.com/in/jane,UK,"
        "europe/london,Opt-In,webinar\n"
    )
    result = parse_contacts(read(tmp_path, text), KNOWN)
    assert result.records == [
        {
            "email": "jane@acme.com",
            "first_name": "Jane",
            "last_name": "Doe",
            "title": "VP Eng",
            "account_domain": "acme.com",
            "linkedin_url": "https://linkedin.com/in/jane",
            "country": "GB",
            "timezone": "Europe/London",
            "consent": "opt_in",
            "attributes": {"source": "webinar"},
        }
    ]


def test_contact_with_bad_email_is_rejected(tmp_path: Path) -> None:
    result = contacts(
        tmp_path, [["jane.acme.com", "Jane", "", "", "", ""], ["", "Bob", "", "", "", ""]]
    )
    assert [r.reason for r in result.rejects] == [
        "email: 'jane.acme.com' is not a valid email address: it has no @",
        "email: missing (every contact needs an email address)",
    ]
    assert result.records == []


def test_contact_account_comes_from_email_domain_or_its_parent(tmp_path: Path) -> None:
    result = contacts(
        tmp_path,
        [["jane@acme.com", "", "", "", "", ""], ["max@eu.acme.com", "", "", "", "", ""]],
    )
    assert [r["account_domain"] for r in result.records] == ["acme.com", "acme.com"]


def test_contact_of_unknown_account_is_rejected(tmp_path: Path) -> None:
    result = contacts(
        tmp_path,
        [["jane@nowhere.org", "", "", "", "", ""], ["bob@acme.com", "", "", "gamma.com", "", ""]],
    )
    assert [r.reason for r in result.rejects] == [
        "unknown account 'nowhere.org' (import accounts first)",
        "unknown account 'gamma.com' (import accounts first)",
    ]


def test_contact_with_personal_mailbox_needs_an_account_domain(tmp_path: Path) -> None:
    result = contacts(
        tmp_path,
        [
            ["jane.doe@gmail.com", "Jane", "", "", "", ""],
            ["max@GMX.de", "Max", "", "acme.com", "", ""],
        ],
    )
    assert len(result.rejects) == 1
    assert "'gmail.com' is a personal mailbox" in result.rejects[0].reason
    assert "account_domain" in result.rejects[0].reason
    assert result.records[0]["email"] == "max@gmx.de"
    assert result.records[0]["account_domain"] == "acme.com"
    [warning] = result.warnings  # the address cannot confirm that Max works at acme.com
    assert (warning.line, warning.field, warning.value) == (3, "account_domain", "acme.com")
    assert "gmx.de is a personal mailbox" in warning.action


CONTACTS_WITH_BAD_CELLS = [
    ["a@acme.com", "", "", "", "Europe/Berlin", "legitimate interest"],
    ["b@acme.com", "", "", "", "Mars/Olympus", "yes please"],
]


def test_contact_timezone_and_consent_are_validated(tmp_path: Path) -> None:
    result = contacts(tmp_path, CONTACTS_WITH_BAD_CELLS)
    assert result.records[0]["timezone"] == "Europe/Berlin"
    assert result.records[0]["consent"] == "legitimate_interest"
    assert result.rejects == []
    b = result.records[1]
    assert (b["email"], b["timezone"], b["consent"]) == ("b@acme.com", None, None)
    assert [(w.line, w.field, w.action) for w in result.warnings] == [
        (
            3,
            "timezone",
            "left blank: 'Mars/Olympus' is not a time zone name such as Europe/Berlin or "
            "America/New_York",
        ),
        (3, "consent", "left blank: 'yes please' is not one of opt_in, legitimate_interest, none"),
    ]


def test_strict_contact_timezone_and_consent_are_rejected(tmp_path: Path) -> None:
    header = ["email", "first_name", "last_name", "account_domain", "timezone", "consent"]
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *CONTACTS_WITH_BAD_CELLS])
    result = parse_contacts(read(tmp_path, buffer.getvalue()), KNOWN, strict=True)
    assert [r["email"] for r in result.records] == ["a@acme.com"]
    reason = result.rejects[0].reason
    assert reason.startswith("timezone: 'Mars/Olympus' is not a time zone name")
    assert "consent: 'yes please' is not one of opt_in, legitimate_interest, none" in reason


def test_duplicate_contacts_merge_by_normalised_email(tmp_path: Path) -> None:
    result = contacts(
        tmp_path,
        [
            ["jane@acme.com", "Jane", "", "", "", "opt_in"],
            ["bob@beta.io", "Bob", "", "", "", ""],
            ["JANE@ACME.COM ", "", "Doe", "", "Europe/Paris", ""],
        ],
    )
    assert [r["email"] for r in result.records] == ["jane@acme.com", "bob@beta.io"]
    jane = result.records[0]
    assert (jane["first_name"], jane["last_name"], jane["timezone"], jane["consent"]) == (
        "Jane",
        "Doe",
        "Europe/Paris",
        "opt_in",
    )
    assert result.duplicates_merged == 1


# --------------------------------------------------------------------------- suppressions


def test_suppressions_from_email_domain_and_value_columns(tmp_path: Path) -> None:
    text = (
        "email,domain,channel,reason\n"
        "Jane@Acme.com,,,asked by phone\n"
        ",@rival.com,Email,competitor\n"
        ",,,\n"
        "x@acme.com,acme.com,,\n"
        "bob@acme.com,,fax,\n"
        "jane@acme.com,,all,GDPR request\n"
    )
    result = parse_suppressions(read(tmp_path, text))
    assert result.records == [
        {"kind": "email", "value": "jane@acme.com", "channel": "all", "reason": "GDPR request"},
        {"kind": "domain", "value": "rival.com", "channel": "email", "reason": "competitor"},
        {"kind": "email", "value": "bob@acme.com", "channel": "all", "reason": None},
    ]
    assert {r.line: r.reason for r in result.rejects} == {
        5: "both email and domain given; use one per row",
    }
    assert [(w.line, w.field, w.value) for w in result.warnings] == [(6, "channel", "fax")]
    assert result.duplicates_merged == 1
    strict = parse_suppressions(read(tmp_path, text), strict=True)
    assert {r.line: r.reason for r in strict.rejects} == {
        5: "both email and domain given; use one per row",
        6: "channel: 'fax' is not one of all, email, linkedin",
    }

    values = parse_suppressions(read(tmp_path, "value\nbob@beta.io\n*.gamma.com\nbeta.io\n"))
    assert [(r["kind"], r["value"]) for r in values.records] == [
        ("email", "bob@beta.io"),
        ("domain", "gamma.com"),
        ("domain", "beta.io"),
    ]


# --------------------------------------------------------------------------- rejects file


def test_rejects_file_has_line_reason_and_original_columns(tmp_path: Path) -> None:
    source = write(
        tmp_path,
        'Domain;Employees;Notes\r\nacme.com;12x;a;b\r\nbeta.io;5;"x; y"\r\n;3;n\r\n',
        name="accounts.csv",
        bom=True,
    )
    table = read_csv(source)
    result = parse_accounts(table)
    target = write_rejects(source, table, result.rejects)
    assert target == tmp_path / "accounts.rejects.csv"
    raw = target.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8)
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert rows == [
        ["line", "reason", "Domain", "Employees", "Notes", "(extra 1)"],
        ["2", "4 fields, header has 3", "acme.com", "12x", "a", "b"],
        ["4", "domain: missing (every account needs its web domain)", "", "3", "n", ""],
    ]


def test_fixed_rejects_file_can_be_imported_again(tmp_path: Path) -> None:
    source = write(tmp_path, "email,reason,channel\nnot-an-email,left,email\n", "supp.csv")
    table = read_csv(source)
    target = write_rejects(source, table, parse_suppressions(table).rejects)
    assert target is not None
    fixed = target.read_text("utf-8").replace("not-an-email", "jane@acme.com")
    target.write_text(fixed, "utf-8")
    again = parse_suppressions(read_csv(target))
    assert again.rejects == []
    assert again.records == [
        {"kind": "email", "value": "jane@acme.com", "channel": "email", "reason": "left"}
    ]


def test_rejects_file_is_removed_when_nothing_is_rejected(tmp_path: Path) -> None:
    source = write(tmp_path, "domain\nacme.com\n", name="accounts.csv")
    stale = rejects_path(source)
    stale.write_text("old", "utf-8")
    table = read_csv(source)
    assert write_rejects(source, table, parse_accounts(table).rejects) is None
    assert not stale.exists()
    assert write_rejects(source, table, []) is None


def test_bulk_parsing_leaves_the_garbage_collector_on(tmp_path: Path) -> None:
    table = read(tmp_path, "domain\nacme.com\n")
    parse_accounts(table)
    assert gc.isenabled()


def test_reject_prints_with_its_line() -> None:
    assert str(Reject(7, "9 fields, header has 8", {})) == "line 7: 9 fields, header has 8"


# --------------------------------------------------------------------------- speed


def test_parse_contacts_handles_100k_rows(tmp_path: Path) -> None:
    domains = [f"company{i}.com" for i in range(5000)]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["email", "first_name", "last_name", "title", "account_domain", "timezone"])
    for i in range(100_000):
        domain = domains[i % len(domains)]
        writer.writerow(
            [f"user{i}@{domain}", "Zoë", "Müller", "VP Sales", domain if i % 2 else "", "UTC"]
        )
    table = read(tmp_path, buffer.getvalue())
    result = parse_contacts(table, domains)
    assert len(result.records) == 100_000
    assert result.rejects == [] and result.warnings == []
    assert {r["account_domain"] for r in result.records} == set(domains)


# --------------------------------------------------------------------------- properties

ACCOUNT_HEADER = ["domain", "employees", "technologies", "tier", "notes"]
CONTACT_HEADER = ["email", "first_name", "account_domain", "timezone", "notes"]
SAMPLE_CELLS = [
    "",
    " ",
    "\u200b",
    "acme.com",
    "https://www.Beta.io/x",
    "not a domain",
    "jane@acme.com",
    "JANE@ACME.COM",
    "bob@beta.io",
    "x@gmail.com",
    "x@unknown.org",
    "nope",
    "5k",
    "1,200",
    "12x",
    "2",
    "Europe/Berlin",
    "Mars/Base",
    'say "hi"',
    "a,b",
    "a;b",
    "tab\there",
    "line\nbreak",
    "cr\ronly",
    "crlf\r\nend",
    "Zoë",
    '"',
    "line",
    "reason",
]
cells = st.one_of(
    st.sampled_from(SAMPLE_CELLS),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=6),
)


def is_blank(cell: str) -> bool:
    return all(ch.isspace() or ch in "\u200b\ufeff" for ch in cell)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(["accounts", "contacts"]),
    rows=st.lists(st.lists(cells, max_size=7), max_size=12),
    delimiter=st.sampled_from([",", ";", "\t"]),
    newline=st.sampled_from(["\r\n", "\n"]),
    quote_all=st.booleans(),
    bom=st.booleans(),
)
def test_every_row_is_a_record_or_a_reject_never_both_never_lost(
    tmp_path: Path,
    kind: str,
    rows: list[list[str]],
    delimiter: str,
    newline: str,
    quote_all: bool,
    bom: bool,
) -> None:
    header = ACCOUNT_HEADER if kind == "accounts" else CONTACT_HEADER
    # csv.writer only quotes a lone "\r" when it is part of the line terminator.
    if newline == "\n" and any("\r" in c for row in rows for c in row):
        quote_all = True
    quoting = csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL

    def render(row: list[str]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=delimiter, lineterminator=newline, quoting=quoting).writerow(
            row
        )
        return buffer.getvalue()

    chunks = [render(header)]
    expected: list[int] = []
    line = 2
    for row in rows:
        chunk = render(row)
        if not all(is_blank(c) for c in row):
            expected.append(line)
        line += len(io.StringIO(chunk, newline="").readlines())
        chunks.append(chunk)
    path = write(tmp_path, "".join(chunks), f"{kind}.csv", bom=bom)

    table = read_csv(path)
    result = parse_accounts(table) if kind == "accounts" else parse_contacts(table, KNOWN)

    rejected = [r.line for r in result.rejects]
    recorded = [n for lines in result.record_lines for n in lines]
    assert sorted(rejected + recorded) == expected
    assert not set(rejected) & set(recorded)
    assert len(result.records) == len(result.record_lines)
    assert result.rows_read == len(expected)
    assert result.rows_read == len(result.records) + result.duplicates_merged + len(rejected)
    assert all(r.reason for r in result.rejects)
    assert {w.line for w in result.warnings} <= set(recorded)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=300))
def test_read_csv_only_ever_raises_import_file_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random.csv"
    path.write_bytes(data)
    try:
        table = read_csv(path)
    except ImportFileError:
        return
    for parse in (parse_accounts, parse_suppressions, lambda t: parse_contacts(t, KNOWN)):
        try:
            result = parse(table)
        except ImportFileError:
            continue
        assert result.rows_read == (
            len(result.records) + result.duplicates_merged + len(result.rejects)
        )


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**12))
def test_parse_number_round_trips_thousands_separators_and_suffixes(n: int) -> None:
    grouped = f"{n:,}"
    assert parse_number(grouped) == n
    assert parse_number(grouped.replace(",", "."), european=True) == n
    assert parse_number(grouped.replace(",", " ")) == n
    assert parse_number(grouped.replace(",", "\u00a0"), european=True) == n
    try:  # "1,500k": 1,500 thousand or 1.5 thousand? A thousand apart, so it is said
        assert parse_number(f"{grouped}k") == n * 1_000
    except AmbiguousNumber:
        assert 1_000 <= n < 1_000_000
    assert parse_number(f"{n}M") == float(n * 1_000_000)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from([("k", 1_000), ("M", 1_000_000), ("B", 1_000_000_000)]),
)
def test_parse_number_round_trips_decimals_with_suffix(n: int, suffix: tuple[str, int]) -> None:
    letter, multiplier = suffix
    value = Decimal(n) / 100
    expected = float(value * multiplier)
    assert parse_number(f"{value:f}{letter}") == expected
    assert parse_number(f"{value:f}".replace(".", ",") + letter, european=True) == expected
