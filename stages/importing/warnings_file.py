"""The warnings of an import: cells of kept rows that could not be used as written (left
blank, mapped or converted), and what was done instead, written to FILE.warnings.csv.

Apart from the parsing so the parsers stay pure: they hand each kept row's warnings to a
`WarningLog`, which keeps them all (for a parse in memory) or streams them to the file and
keeps only the first few (for an import of any size).
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from core.domains import show
from stages.importing.rejects import source_mode

__all__ = ["WARNINGS_KEPT", "FieldWarning", "WarningLog", "warnings_path"]

WARNINGS_KEPT = 100
"""How many warnings an import keeps in memory for printing; the file has all of them."""
_VALUE_LIMIT = 200
_ACTION_LIMIT = 300
HEADER = ("line", "field", "value", "action")


@dataclass(frozen=True, slots=True)
class FieldWarning:
    """A cell of a kept row that was not taken as written: line, field, value and what was
    done instead ("left blank: ...", "mapped to ...", "converted from ...")."""

    line: int
    field: str
    value: str
    action: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field} '{show(self.value)}': {self.action}"


def warnings_path(source: Path) -> Path:
    """accounts.csv -> accounts.warnings.csv, next to the source."""
    source = Path(source)
    return source.with_name(f"{source.stem}.warnings{source.suffix or '.csv'}")


def _cap(text: str, limit: int) -> str:
    """A value never grows without bound: a 5 MB cell of the source is neither kept in
    memory nor copied whole to the file."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class WarningLog:
    """Collects the warnings of one parse, one kept row at a time.

    Without `source`, every warning stays in `kept` (the `parse_*` functions, whose input is
    in memory anyway). With `source`, each warning is written at once to a temporary file
    beside it that `finish` puts in place as FILE.warnings.csv, and only the first `keep`
    stay in memory, so a million warned rows cost no more memory than none.
    """

    def __init__(self, keep: int | None = None, *, source: Path | None = None) -> None:
        self.keep = keep
        self.source = source
        self.kept: list[FieldWarning] = []
        self.count = 0
        self.rows = 0
        self.delimiter = ","
        self.encoding = "utf-8"
        self._handle: IO[str] | None = None
        self._writer: Any = None
        self._tmp: Path | None = None

    def format_like(self, delimiter: str, encoding: str) -> None:
        """Write the file as the source is written (delimiter; UTF-8 with a BOM for a source
        that was not UTF-8), so it opens the same way. Call before the first warning."""
        self.delimiter = delimiter if delimiter in ",;\t" else ","
        self.encoding = "utf-8" if encoding == "utf-8" else "utf-8-sig"

    def add(self, line: int, found: Iterable[tuple[str, str, str]]) -> None:
        """The warnings (field, value, action) of the kept row at `line`."""
        self.rows += 1
        keep = self.keep
        for field, value, action in found:
            self.count += 1
            value, action = _cap(value, _VALUE_LIMIT), _cap(action, _ACTION_LIMIT)
            if keep is None or len(self.kept) < keep:
                self.kept.append(FieldWarning(line, field, value, action))
            if self.source is not None:
                writer = self._writer or self._open()
                writer.writerow((line, field, value, action))

    def _open(self) -> Any:
        assert self.source is not None
        target = warnings_path(self.source)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        self._tmp = Path(tmp)
        self._handle = os.fdopen(fd, "w", encoding=self.encoding, newline="")
        self._writer = csv.writer(self._handle, delimiter=self.delimiter, lineterminator="\r\n")
        self._writer.writerow(HEADER)
        return self._writer

    def finish(self) -> Path | None:
        """Put FILE.warnings.csv in place, with the source's permissions, never wider; with
        no warnings, remove a stale one from an earlier import. Returns its path, if any."""
        if self.source is None:
            return None
        target = warnings_path(self.source)
        if self._handle is None or self._tmp is None:
            target.unlink(missing_ok=True)
            return None
        self._handle.close()
        os.chmod(self._tmp, source_mode(self.source))
        os.replace(self._tmp, target)
        self._handle = self._tmp = None
        return target

    def discard(self) -> None:
        """Drop the half-written file of an import that failed; an earlier one stays."""
        if self._handle is not None:
            self._handle.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        self._handle = self._tmp = None
