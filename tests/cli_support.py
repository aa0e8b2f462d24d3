"""Running the `abm` entry point inside the test process: its exit codes and outputs as a
user sees them, without a subprocess's start-up time."""

from __future__ import annotations

import sys

import pytest


def run_abm(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """`abm ARGS` through `abm.cli.main`: (exit code, stdout, stderr)."""
    from abm.cli import main
    from abm.cli.common import err, out

    monkeypatch.setattr(sys, "argv", ["abm", *args])
    for console in (out, err):  # a wide terminal: each table row on one line
        monkeypatch.setattr(console, "_width", 200)
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err
