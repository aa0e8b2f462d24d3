"""Accuracy of title classification on a labelled set of real-world titles, labelled
independently of the classifier by `docs/committee-conventions.md`."""

import csv
from pathlib import Path

from stages.committee.titles import classify_title

LABELLED = Path(__file__).parent / "data" / "titles_labelled.csv"
MINIMUM = {"seniority": 0.90, "function": 0.90, "role": 0.85}


def _rows():
    with LABELLED.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_labelled_set_is_large_and_varied():
    rows = _rows()
    assert len(rows) >= 200
    assert len({row["function"] for row in rows}) == 15
    assert len({row["role"] for row in rows}) == 6


def test_classification_accuracy_on_the_labelled_set(capsys):
    rows = _rows()
    hits = dict.fromkeys(MINIMUM, 0)
    misses = []
    for row in rows:
        got = classify_title(row["title"])
        for field in MINIMUM:
            if getattr(got, field) == row[field]:
                hits[field] += 1
            else:
                misses.append(f"{row['title']!r} {field}: {getattr(got, field)} != {row[field]}")
    accuracy = {field: hits[field] / len(rows) for field in MINIMUM}
    with capsys.disabled():
        print(
            "\ntitle accuracy on",
            len(rows),
            "titles:",
            ", ".join(f"{f} {a:.1%}" for f, a in accuracy.items()),
        )
    for field, minimum in MINIMUM.items():
        assert accuracy[field] >= minimum, f"{field} {accuracy[field]:.1%}\n" + "\n".join(misses)
