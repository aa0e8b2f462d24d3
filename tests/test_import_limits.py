"""What an import reads at once and what it repeats is bounded (issue 19, item 5).

A line longer than the row limit (1 MiB) is rejected with its line number, without being
read whole, and the rows around it go in; a header with more than 1,000 columns is refused
with a short message; a value quoted in a message, kept in memory or written to the rejects
and warnings files is cut, saying so. The slow test imports a file with a 1 GiB line in a
subprocess and checks its peak memory.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.settings import get_settings
from models.queries import list_accounts, list_contacts
from stages.importing import (
    ImportFileError,
    import_file,
    parse_accounts,
    read_csv,
    rejects_path,
)

ROW_LIMIT = 1 << 20  # characters in a row (stages.importing.limits.MAX_ROW_CHARS)
LONG = "x" * (2 * ROW_LIMIT)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def _rejects_lines(source: Path) -> list[list[str]]:
    with rejects_path(source).open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def test_a_long_line_in_the_middle_is_rejected_with_its_line_and_the_rows_around_it_go_in(
    engine, tmp_path: Path
) -> None:
    source = _write(
        tmp_path,
        "accounts.csv",
        f"domain,name\none.example,One\nbig.example,{LONG}\ntwo.example,Two\n",
    )
    report = import_file("accounts", source, engine, get_settings())
    assert (report.imported, report.updated) == (2, 0)
    assert [r.line for r in report.rejects] == [3]
    reason = report.rejects[0].reason
    assert f"{len(LONG) + len('big.example,'):,}" in reason and f"{ROW_LIMIT:,}" in reason
    assert len(reason) < 500
    assert sorted(a["domain"] for a in list_accounts(engine)) == ["one.example", "two.example"]
    # the rejects file keeps the start of the line, cut and marked, not 2 MB of it
    assert rejects_path(source).stat().st_size < 20_000
    [header, row] = _rejects_lines(source)
    assert header == ["line", "reason", "domain", "name"]
    assert row[:1] == ["3"] and row[2] == "big.example"
    assert row[3].startswith("xxx") and row[3].endswith(" characters)")


def test_a_long_line_opening_a_quoted_cell_skips_the_whole_record_and_lines_stay_right(
    engine, tmp_path: Path
) -> None:
    """The streaming contacts import, Windows line ends: the overlong line opens a quoted
    cell that closes on the next line, so the record (lines 3-4) is skipped as one, and the
    rows after it keep their line numbers (the warning names line 5)."""
    import_file(
        "accounts", _write(tmp_path, "a.csv", "domain\nacme.example\n"), engine, get_settings()
    )
    text = (
        "email,first_name,notes,timezone\r\n"
        "ana@acme.example,Ana,short,\r\n"
        f'bob@acme.example,Bob,"{LONG}\r\nstill the note, quoted",\r\n'
        "cy@acme.example,Cy,after,PST\r\n"
    )
    source = _write(tmp_path, "contacts.csv", text)
    report = import_file("contacts", source, engine, get_settings(), batch_rows=1)
    assert report.imported == 2
    assert [r.line for r in report.rejects] == [3]
    assert "lines 3-4" in report.rejects[0].reason
    assert [(w.line, w.field) for w in report.warnings] == [(5, "timezone")]
    assert sorted(c["email"] for c in list_contacts(engine)) == [
        "ana@acme.example",
        "cy@acme.example",
    ]


def test_a_quoted_cell_running_over_the_limit_across_many_lines_is_one_reject(
    tmp_path: Path,
) -> None:
    note = "first\n" + ("y" * 999 + "\n") * 1500 + "last"
    text = f'domain,notes\na.example,"short"\nb.example,"{note}"\nc.example,z\n'
    table = read_csv(_write(tmp_path, "a.csv", text))
    end = 3 + note.count("\n")
    assert [(r.line, r.values.get("domain")) for r in table.rows] == [
        (2, "a.example"),
        (end + 1, "c.example"),
    ]
    [reject] = table.rejects
    assert reject.line == 3 and f"lines 3-{end}" in reject.reason


@pytest.mark.parametrize("columns", [1_001, 5_000, 1_000_000])
def test_a_header_with_too_many_columns_is_refused_with_a_short_message(
    engine, tmp_path: Path, columns: int
) -> None:
    header = ",".join(f"column{i}" for i in range(columns))
    source = _write(tmp_path, "accounts.csv", header + "\n" + "x," * 3 + "\n")
    with pytest.raises(ImportFileError) as info:
        import_file("accounts", source, engine, get_settings())
    message = str(info.value)
    assert len(message) < 2_000
    assert f"{columns:,} columns" in message and "1,000" in message
    assert "column999" not in message


def test_a_header_of_1000_named_columns_and_trailing_blank_ones_is_read(tmp_path: Path) -> None:
    """Excel often writes empty columns after the last one: those are not counted."""
    names = ["domain", *(f"c{i}" for i in range(999))]
    text = ",".join(names) + "," * 2000 + "\n" + "acme.example" + ",v" * 999 + "\n"
    table = read_csv(_write(tmp_path, "a.csv", text))
    assert table.header[:1000] == names and len(table.header) <= 1_000
    assert [r.values["c998"] for r in table.rows] == ["v"]
    # and the limit is on columns, so 1,001 named ones are still refused
    with pytest.raises(ImportFileError, match="1,001 columns"):
        read_csv(_write(tmp_path, "b.csv", ",".join([*names, "one_more"]) + "\nx\n"))


def test_values_quoted_in_messages_and_kept_warnings_are_cut(engine, tmp_path: Path) -> None:
    huge = "n" * 100_000
    # two columns meaning the same, each with a 100,000 character name
    with pytest.raises(ImportFileError) as info:
        read_csv(_write(tmp_path, "dup.csv", f"domain,{huge},{huge}\nacme.example,1,2\n"))
    assert len(str(info.value)) < 2_000 and "(100,000 characters)" in str(info.value)
    # a required column missing among columns with long names
    table = read_csv(_write(tmp_path, "nodomain.csv", f"name,{huge}\nAcme,1\n"))
    with pytest.raises(ImportFileError) as info:
        parse_accounts(table)
    assert len(str(info.value)) < 2_000 and "'domain'" in str(info.value)
    # a kept row's warning: the value in memory is cut like the one in the warnings file
    import_file(
        "accounts", _write(tmp_path, "a.csv", "domain\nacme.example\n"), engine, get_settings()
    )
    source = _write(tmp_path, "c.csv", f"email,timezone\nana@acme.example,{'z' * 100_000}\n")
    report = import_file("contacts", source, engine, get_settings())
    [warning] = report.warnings
    assert len(warning.value) <= 300 and len(warning.action) <= 300
    assert len(str(warning)) < 1_000


def test_a_rejects_entry_is_bounded_and_says_what_was_cut(engine, tmp_path: Path) -> None:
    notes = "n" * 100_000  # under the csv module's own field limit of 128 KiB
    extra = ",".join(["e"] * 5_000)
    text = (
        "domain,name,notes\n"
        f"not a domain,Bad,{notes}\n"
        f"wide.example,Wide,w,{extra}\n"
        "good.example,Good,fine\n"
    )
    source = _write(tmp_path, "accounts.csv", text)
    report = import_file("accounts", source, engine, get_settings())
    assert report.imported == 1 and [r.line for r in report.rejects] == [2, 3]
    assert all(len(r.reason) < 2_000 for r in report.rejects)
    assert sum(len(v) for r in report.rejects for v in r.values.values()) < 50_000
    rows = _rejects_lines(source)
    assert len(rows[0]) <= 2 + 3 + 10  # line, reason, the columns, at most 10 extra
    assert all(sum(map(len, row)) < 20_000 for row in rows)
    [_, bad, wide] = rows
    assert bad[4].startswith("nnn") and bad[4].endswith("(100,000 characters)")
    assert "cut" in bad[1]
    assert "5,003 fields" in wide[1] and "10" in wide[1]
    assert rejects_path(source).stat().st_size < 30_000


def _run_measuring_peak_rss(command: list[str], env: dict[str, str], folder: Path) -> int:
    """Run `command`; its peak resident memory in MB, read from VmHWM while it runs.

    Not `ru_maxrss`: Linux counts into it the memory of the process before `exec`, a fork
    of this test process, which is larger than the import itself when it has run others.
    `Popen` returns once the child has exec'd, so every reading is of the import."""
    with (folder / "out.txt").open("wb") as stdout, (folder / "err.txt").open("wb") as stderr:
        child = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)
        status = Path(f"/proc/{child.pid}/status")
        peak_kb = 0
        while child.poll() is None:
            try:
                text = status.read_text()
            except OSError:  # it has just exited
                continue
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
            time.sleep(0.02)
    return peak_kb // 1024


@pytest.mark.slow
def test_a_1_gib_line_is_imported_around_in_bounded_memory(tmp_path: Path) -> None:
    """`abm import accounts` in a subprocess on a file whose third line is 1 GiB: the line
    is rejected by number, the two good rows go in, and the import's peak resident memory
    stays under 200 MB (before the limits it was 2.2 GB, and the file was refused)."""
    source = tmp_path / "accounts.csv"
    chunk = b"x" * (1 << 20)
    with source.open("wb") as handle:
        handle.write(b"domain,name\none.example,One\nbig.example,")
        for _ in range(1024):
            handle.write(chunk)
        handle.write(b"\ntwo.example,Two\n")
    del chunk
    abm = str(Path(sys.executable).with_name("abm"))
    env = {**os.environ, "ABM_DATABASE_URL": f"sqlite:///{tmp_path / 'abm.db'}"}
    try:
        subprocess.run([abm, "init"], env=env, check=True, capture_output=True)
        command = [abm, "import", "accounts", str(source)]
        started = time.monotonic()
        peak_mb = _run_measuring_peak_rss(command, env, tmp_path)
        seconds = time.monotonic() - started
    finally:
        source.unlink(missing_ok=True)
    printed = (tmp_path / "err.txt").read_text()
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert lines and lines[-1].startswith("imported=2 updated=0 rejected=1"), printed
    assert f"{source}:3:" in printed and "1,073,741,836 characters" in printed
    assert peak_mb < 200, f"peak RSS {peak_mb} MB"
    assert seconds < 40


# --------------------------------------------------------------------------- the reader's rules
# A row too long to read is skipped by following the csv reader's quoting rules without it
# (`_scan`), and a long record's quoting is checked cell by cell: both must agree with what
# they stand for on any text.

START, FIELD, QUOTED, QUOTE = range(4)
csv_text = st.text(alphabet='a,;" \r\n', max_size=60)


def _reference_scan(text: str, state: int, delimiter: str) -> tuple[int, int]:
    """The csv module's state machine (skipinitialspace, not strict), a character at a time."""
    cells = 0
    for c in text:
        if state == START and c == " ":
            continue
        if state == START and c == '"':
            state = QUOTED
        elif state in (START, FIELD) and c == delimiter:
            cells += 1
            state = START
        elif state == START:
            state = FIELD
        elif state == QUOTED and c == '"':
            state = QUOTE
        elif state == QUOTE:
            state = QUOTED if c == '"' else START if c == delimiter else FIELD
            cells += c == delimiter
    return state, cells


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    text=st.text(alphabet='ab,;" ', max_size=80),
    state=st.sampled_from([START, FIELD, QUOTED, QUOTE]),
    cut_at=st.integers(0, 80),
)
def test_scan_follows_the_readers_rules(text: str, state: int, cut_at: int) -> None:
    from stages.importing.csv_file import _scan

    assert _scan(text, state, ",", count=True) == _reference_scan(text, state, ",")
    # and the state carries over from one piece of a line to the next
    middle, count = _scan(text[:cut_at], state, ",", count=True)
    end, more = _scan(text[cut_at:], middle, ",", count=True)
    assert (end, count + more) == _reference_scan(text, state, ",")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=csv_text, limit=st.integers(0, 8))
def test_skipping_long_records_ends_them_where_the_reader_would(text: str, limit: int) -> None:
    """With a tiny limit most records are skipped without the reader: each must still end
    on the line where the csv reader ends it."""
    from stages.importing.csv_file import _Feed, _TooLong

    def handle() -> io.TextIOWrapper:
        return io.TextIOWrapper(io.BytesIO(text.encode()), encoding="utf-8", newline="")

    plain = csv.reader(handle(), skipinitialspace=True)
    expected = [plain.line_num for _ in plain]
    feed = _Feed(handle(), ",", limit=limit)
    reader = csv.reader(feed, skipinitialspace=True)
    ends: list[int] = []
    while True:
        try:
            for _ in reader:
                feed.chars = 0
                ends.append(feed.lines)
            break
        except _TooLong:
            ends.append(feed.lines)
    assert ends == expected


@settings(max_examples=500, deadline=None, derandomize=True)
@given(raw=csv_text.map(lambda t: t.replace("\r", "")).filter(lambda t: '"' in t))
def test_quoting_checked_cell_by_cell_agrees_with_the_regex(raw: str) -> None:
    from stages.importing.csv_file import _quote_problem_by_cell, _quote_problem_by_regex

    for record in (raw, raw + "\n", raw + "\r\n"):
        for delimiter in ",;":
            assert _quote_problem_by_cell(record, delimiter) == _quote_problem_by_regex(
                record, delimiter
            )
