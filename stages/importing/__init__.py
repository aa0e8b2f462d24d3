"""Import accounts, contacts and suppressions from CSV files.

Callers import from the package, so the split into reading (`csv_file`), parsing
(`records`, cell by cell in `fields` and `values`), rejects and warnings files (`rejects`,
`warnings_file`) and the database import (`load`) stays internal. `limits` says how much of
a file is read at once and repeated in messages and files: a row of at most `MAX_ROW_CHARS`
characters, a header of at most `MAX_COLUMNS` columns.
"""

from stages.importing.csv_file import CsvRow, CsvTable, ImportFileError, Reject, read_csv
from stages.importing.limits import MAX_COLUMNS, MAX_ROW_CHARS
from stages.importing.load import IMPORT_BATCH_ROWS, ImportReport, import_file
from stages.importing.records import (
    ParseResult,
    parse_accounts,
    parse_contacts,
    parse_suppressions,
)
from stages.importing.rejects import rejects_path, write_rejects
from stages.importing.values import (
    EXPLICIT_BLANKS,
    PERSONAL_MAILBOX_DOMAINS,
    AmbiguousNumber,
    consent_alias,
    normalise_consent,
    normalise_country,
    normalise_domain,
    normalise_email,
    normalise_linkedin_url,
    normalise_timezone,
    parse_number,
    read_money,
    timezone_alias,
)
from stages.importing.warnings_file import (
    WARNINGS_KEPT,
    FieldWarning,
    WarningLog,
    warnings_path,
)

__all__ = [
    "EXPLICIT_BLANKS",
    "IMPORT_BATCH_ROWS",
    "MAX_COLUMNS",
    "MAX_ROW_CHARS",
    "PERSONAL_MAILBOX_DOMAINS",
    "WARNINGS_KEPT",
    "AmbiguousNumber",
    "CsvRow",
    "CsvTable",
    "FieldWarning",
    "ImportFileError",
    "ImportReport",
    "ParseResult",
    "Reject",
    "WarningLog",
    "consent_alias",
    "import_file",
    "normalise_consent",
    "normalise_country",
    "normalise_domain",
    "normalise_email",
    "normalise_linkedin_url",
    "normalise_timezone",
    "parse_accounts",
    "parse_contacts",
    "parse_number",
    "parse_suppressions",
    "read_csv",
    "read_money",
    "rejects_path",
    "timezone_alias",
    "warnings_path",
    "write_rejects",
]
