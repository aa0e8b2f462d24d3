"""Write the rows an import could not use to FILE.rejects.csv, ready to fix and import again.

Separate from reading and parsing because it is the only part that writes files, and it
must not leak the source's personal data wider than the source itself.
"""

from __future__ import annotations

import csv
import os
import stat
import tempfile
from pathlib import Path

from stages.importing.csv_file import CsvTable, Reject

__all__ = ["rejects_path", "source_mode", "write_rejects"]


def rejects_path(source: Path) -> Path:
    """accounts.csv -> accounts.rejects.csv, next to the source."""
    source = Path(source)
    return source.with_name(f"{source.stem}.rejects{source.suffix or '.csv'}")


def write_rejects(source: Path, table: CsvTable, rejects: list[Reject]) -> Path | None:
    """Write the rejected rows (line, reason, original columns) so they can be fixed.

    The file keeps the source's delimiter and original column names, so after fixing it can
    be imported again (read_csv drops the leading line and reason columns). A stale rejects
    file from an earlier run is removed when nothing was rejected.
    """
    target = rejects_path(source)
    if not rejects:
        target.unlink(missing_ok=True)
        return None
    originals = table.original_header or table.header
    # an unnamed column keeps its generated name (column_2): read back, it is the same column
    names = {h: o or h for h, o in zip(table.header, originals, strict=False)}
    keys = list(table.header)
    known = set(keys)
    for reject in rejects:
        for key in reject.values:
            if key not in known:
                known.add(key)
                keys.append(key)
    encoding = "utf-8" if table.encoding == "utf-8" else "utf-8-sig"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as handle:
            if table.delimiter not in ",;\t":
                # only Excel's `sep=` line tells read_csv about any other delimiter
                handle.write(f"sep={table.delimiter}\r\n")
            writer = csv.writer(handle, delimiter=table.delimiter, lineterminator="\r\n")
            writer.writerow(["line", "reason", *(names.get(k, k) for k in keys)])
            for reject in rejects:
                values = reject.values
                writer.writerow([reject.line, reject.reason, *(values.get(k, "") for k in keys)])
        os.chmod(tmp, source_mode(source))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def source_mode(source: Path) -> int:
    """The rejects and warnings files hold values of the source (people's names and emails):
    they get the source's permissions, never wider (a rejects file used to be
    world-readable whatever the source)."""
    try:
        return stat.S_IMODE(os.stat(source).st_mode) & 0o666
    except OSError:
        return 0o600
