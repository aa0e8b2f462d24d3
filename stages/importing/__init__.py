"""Import accounts, contacts and suppressions from CSV files.

Callers import from the package, so the split into reading (`csv_file`), parsing
(`records`), rejects files (`rejects`) and the database import (`load`) stays internal.
"""

from stages.importing.csv_file import CsvRow, CsvTable, ImportFileError, Reject, read_csv
from stages.importing.load import IMPORT_BATCH_ROWS, ImportReport, import_file
from stages.importing.records import (
    ParseResult,
    parse_accounts,
    parse_contacts,
    parse_suppressions,
)
from stages.importing.rejects import rejects_path, write_rejects
from stages.importing.values import (
    PERSONAL_MAILBOX_DOMAINS,
    AmbiguousNumber,
    normalise_consent,
    normalise_country,
    normalise_domain,
    normalise_email,
    normalise_linkedin_url,
    normalise_timezone,
    parse_number,
    read_money,
)

__all__ = [
    "IMPORT_BATCH_ROWS",
    "PERSONAL_MAILBOX_DOMAINS",
    "AmbiguousNumber",
    "CsvRow",
    "CsvTable",
    "ImportFileError",
    "ImportReport",
    "ParseResult",
    "Reject",
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
    "write_rejects",
]
