"""The files sandbox mode answers from, in place of LinkedIn: nothing is ever invented.

A sandbox folder may hold `ad_analytics.jsonl` and `lead_forms.jsonl`. Each line is one JSON
object in LinkedIn's own shape: an element of an `adAnalytics` answer (MEMBER_COMPANY pivot,
DAILY) or of a `leadFormResponses` answer (with the form expanded), or a whole answer
(`{"elements": [...], ...}`) as the API returned it. Because the shapes are LinkedIn's, the
rows then go through the very parsing code that real answers go through.

A line that cannot be used is reported with file, line and reason; the other lines still
count. Blank lines are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ANALYTICS_FILE = "ad_analytics.jsonl"
LEADS_FILE = "lead_forms.jsonl"
SANDBOX_FILES = (ANALYTICS_FILE, LEADS_FILE)

Check = Callable[[Mapping[str, Any]], str | None]


@dataclass
class SandboxFile:
    """The usable elements of one sandbox file and a `file:line: reason` per bad line."""

    path: Path
    elements: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def present_files(folder: Path | None) -> list[Path]:
    """The sandbox files that exist in `folder`, in a fixed order."""
    if folder is None:
        return []
    return [folder / name for name in SANDBOX_FILES if (folder / name).is_file()]


def read_sandbox_file(path: Path, check: Check) -> SandboxFile:
    """Every usable element of a JSON-lines file; a bad line becomes a problem, not a gap."""
    found = SandboxFile(path)
    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as exc:
        found.problems.append(f"{path}: cannot read: {exc.strerror}")
        return found
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        elements, reason = _line_elements(raw, check)
        if reason:
            found.problems.append(f"{path}:{number}: {reason}")
        else:
            found.elements.extend(elements)
    return found


def _line_elements(raw: bytes, check: Check) -> tuple[list[dict[str, Any]], str | None]:
    """The elements one line holds, or the reason it holds none that can be used."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return [], "not UTF-8"
    except (json.JSONDecodeError, RecursionError) as exc:
        return [], f"not JSON ({getattr(exc, 'msg', 'nested too deeply')})"
    if not isinstance(value, dict):
        return [], f"a JSON object was expected, not {type(value).__name__}"
    if "elements" in value:
        elements = value["elements"]
        if not isinstance(elements, list):
            return [], "elements: a list was expected"
        for index, element in enumerate(elements):
            reason = _checked(element, check)
            if reason:
                return [], f"elements[{index}]: {reason}"
        return elements, None
    reason = _checked(value, check)
    return ([], reason) if reason else ([value], None)


def _checked(element: Any, check: Check) -> str | None:
    if not isinstance(element, dict):
        return f"a JSON object was expected, not {type(element).__name__}"
    return check(element)


def check_analytics_element(element: Mapping[str, Any]) -> str | None:
    """Why an adAnalytics element cannot be used, or None when it can."""
    pivots = element.get("pivotValues")
    if not isinstance(pivots, list) or not pivots or not isinstance(pivots[0], str):
        return "pivotValues: a list holding the organization URN was expected"
    if not pivots[0].startswith("urn:li:organization:"):
        return f"pivotValues: {pivots[0]!r} is not an organization URN (urn:li:organization:<id>)"
    if analytics_day(element) is None:
        return 'dateRange.start: a day like {"year": 2026, "month": 1, "day": 31} was expected'
    for name in ("impressions", "clicks"):
        value = element.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{name}: a whole number of 0 or more was expected, not {value!r}"
    return None


def analytics_day(element: Mapping[str, Any]) -> date | None:
    """The day an adAnalytics element reports, or None when it names no valid day."""
    start = _path(element, "dateRange", "start")
    if not isinstance(start, dict):
        return None
    try:
        return date(int(start["year"]), int(start["month"]), int(start["day"]))
    except (KeyError, TypeError, ValueError):
        return None


def check_lead_element(element: Mapping[str, Any]) -> str | None:
    """Why a leadFormResponses element cannot be used, or None when it can."""
    if element.get("id") in (None, ""):
        return "id: the lead's response id is missing"
    submitted = element.get("submittedAt")
    if isinstance(submitted, bool) or not isinstance(submitted, int) or submitted < 0:
        return f"submittedAt: epoch milliseconds (a whole number) were expected, not {submitted!r}"
    if not isinstance(_path(element, "form", "content", "questions"), list):
        return "form.content.questions: the form's questions (with predefinedField) are missing"
    if not isinstance(_path(element, "formResponse", "answers"), list):
        return "formResponse.answers: the list of answers is missing"
    return None


def _path(value: Any, *keys: str) -> Any:
    """`value[k1][k2]...`, or None where a level is missing or not an object."""
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value
