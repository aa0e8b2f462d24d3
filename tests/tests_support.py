"""Paths the tests share: the provider specs live in the `shared` folder beside the
checkout (as in CI), or wherever ABM_SHARED_DIR points."""

import os
from pathlib import Path

SHARED = Path(os.environ.get("ABM_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")


def write_file(path: Path, text: str) -> Path:
    """A UTF-8 file with its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
