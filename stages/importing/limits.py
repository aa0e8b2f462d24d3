"""How much of a CSV file an import reads at once, and how much of it a message, a reject or
a warning repeats.

An import file is untrusted input: a damaged export, a binary file saved as .csv or a
column of pasted documents can hold a line of a gigabyte or a header of a million columns.
The limits below keep the import's memory and everything it writes or prints in proportion
to what a real row holds, whatever the file. They are module constants, not settings: no
real CRM or spreadsheet export comes near them, so there is nothing to tune.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "MAX_COLUMNS",
    "MAX_ROW_CHARS",
    "MESSAGE_CHARS",
    "QUOTED_CHARS",
    "REASON_CHARS",
    "REJECT_CELL_CHARS",
    "REJECT_EXTRA_CELLS",
    "cut",
    "listing",
    "shorten",
]

MAX_ROW_CHARS = 1 << 20
"""The characters a row may hold (1,048,576), not counting its line end; for a row whose
quoted cell runs over several lines, all of them. A longer row is rejected with its line
number and skipped without ever being held whole: the file is read at most this much at a
time, so the memory of an import does not grow with its longest line. A real row holds a
few hundred characters; a long free-text note, a few thousand."""

MAX_COLUMNS = 1_000
"""The columns a header may name. Empty header cells after the last named column (which
Excel writes for cells that were once formatted) do not count, and those beyond this many
are dropped. Every row becomes a mapping of this many names, so a header of a million
columns would cost a million entries per row."""

QUOTED_CHARS = 80
"""The characters of a value a message quotes before it says how long the value is."""

REJECT_CELL_CHARS = 10_000
"""The characters of a cell the rejects file (and the reject in memory) keeps; a longer
cell is cut, ending in its length, and the reason says so."""

REJECT_EXTRA_CELLS = 10
"""The cells beyond the header's width a reject keeps (`(extra 1)` ...); the reason gives
the row's full count."""

REASON_CHARS = 2_000
"""The longest reason a reject gives (a safety net: reasons quote values shortened)."""

MESSAGE_CHARS = 1_500
"""The longest message of a file error (the same kind of safety net)."""


def shorten(text: str, limit: int = QUOTED_CHARS) -> str:
    """`text` as a message quotes it: on one line and, when longer than `limit` characters,
    its first `limit` followed by its length: "xxxx… (1,073,741,824 characters)"."""
    if len(text) <= limit:
        return " ".join(text.split())
    return " ".join(text[:limit].split()) + f"… ({len(text):,} characters)"


def cut(text: str, limit: int = REJECT_CELL_CHARS) -> str:
    """A cell as the rejects file keeps it: unchanged, or its first `limit` characters
    followed by its length, so that the cut shows where it is."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


def listing(names: Sequence[str], shown: int = 10) -> str:
    """'a, b, c', each shortened; of more than `shown`, the first `shown` and 'and N more'."""
    head = ", ".join(shorten(name, 40) for name in names[:shown])
    more = len(names) - shown
    return f"{head} and {more:,} more" if more > 0 else head
