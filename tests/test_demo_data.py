"""The demo dataset must be deterministic, safe (``.example`` only) and realistic enough."""

from __future__ import annotations

import collections
import csv
import hashlib
import os
import subprocess
import sys
import unicodedata
import zoneinfo
from pathlib import Path

import pytest

from abm import demo_data
from abm.demo_data import (
    ACCOUNT_COLUMNS,
    BAD_CONTACT_ROWS,
    CONTACT_COLUMNS,
    generate,
    write_demo_csvs,
)

CONSENTS = {"opt_in", "legitimate_interest", "none"}


def _domain(raw: str) -> str:
    return raw.lower().removeprefix("https://").removeprefix("http://").removeprefix("www.")


def _employees(raw: str) -> int:
    raw = raw.replace(",", "")
    return round(float(raw[:-1]) * 1000) if raw.endswith("k") else int(raw)


@pytest.fixture(scope="module")
def data() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    return generate()


@pytest.fixture(scope="module")
def good(data: tuple[list[dict[str, str]], list[dict[str, str]]]) -> list[dict[str, str]]:
    return data[1][:-BAD_CONTACT_ROWS]


def test_counts_and_accounts_of_4_to_18_people(data, good) -> None:
    accounts, contacts = data
    assert len(contacts) == 2000 + BAD_CONTACT_ROWS
    assert len(good) == 2000
    assert 150 <= len(accounts) <= 260
    per_account = collections.Counter(c["account_domain"] for c in good)
    assert set(per_account) == {_domain(a["domain"]) for a in accounts}
    assert min(per_account.values()) >= 4
    assert max(per_account.values()) <= 18
    assert len(set(per_account.values())) >= 10


@pytest.mark.parametrize("count", [0, 1, 3, 4, 5, 19, 22, 37])
def test_small_counts_are_exact(count: int) -> None:
    accounts, contacts = generate(contacts=count, seed=7)
    assert len(contacts) == count + BAD_CONTACT_ROWS
    sizes = collections.Counter(c["account_domain"] for c in contacts[:count])
    assert sum(sizes.values()) == count
    assert len(sizes) == len(accounts)
    if count >= 4:
        assert all(4 <= n <= 18 for n in sizes.values())


def test_negative_count_is_refused() -> None:
    with pytest.raises(ValueError):
        generate(contacts=-1)


def test_same_arguments_give_byte_identical_files(tmp_path: Path) -> None:
    first = write_demo_csvs(tmp_path / "a", contacts=500, seed=3)
    second = write_demo_csvs(tmp_path / "b", contacts=500, seed=3)
    other = write_demo_csvs(tmp_path / "c", contacts=500, seed=4)
    assert [p.name for p in first] == ["accounts.csv", "contacts.csv"]
    for one, two, three in zip(first, second, other, strict=True):
        assert one.read_bytes() == two.read_bytes()
        assert one.read_bytes() != three.read_bytes()


def test_output_does_not_depend_on_hash_seed_or_process(tmp_path: Path) -> None:
    script = (
        "import hashlib, sys; from pathlib import Path; from abm.demo_data import write_demo_csvs;"
        "paths = write_demo_csvs(Path(sys.argv[1]), contacts=300, seed=11);"
        "print(hashlib.sha256(b''.join(p.read_bytes() for p in paths)).hexdigest())"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / hash_seed)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=Path(demo_data.__file__).resolve().parents[1],
        )
        digests.add(out.stdout.strip())
    here = write_demo_csvs(tmp_path / "here", contacts=300, seed=11)
    digests.add(hashlib.sha256(b"".join(p.read_bytes() for p in here)).hexdigest())
    assert len(digests) == 1


def test_csv_round_trip_utf8_without_bom(tmp_path: Path, data) -> None:
    accounts_path, contacts_path = write_demo_csvs(tmp_path)
    for path, columns, rows in (
        (accounts_path, ACCOUNT_COLUMNS, data[0]),
        (contacts_path, CONTACT_COLUMNS, data[1]),
    ):
        raw = path.read_bytes()
        assert not raw.startswith(b"\xef\xbb\xbf")
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            assert tuple(reader.fieldnames or ()) == columns
            assert list(reader) == rows
    assert '"' in accounts_path.read_text(encoding="utf-8")  # names like "Co., Ltd." quoted


def test_domains_unique_and_always_under_example(data, good) -> None:
    accounts, _ = data
    domains = [_domain(a["domain"]) for a in accounts]
    assert len(set(domains)) == len(domains)
    assert len({a["name"] for a in accounts}) == len(accounts)
    for domain in domains:
        assert domain.endswith(".example")
        assert domain.isascii()
        assert all(label and not label.startswith("-") for label in domain.split("."))
    for contact in good:
        assert contact["account_domain"].endswith(".example")
        assert contact["email"].rsplit("@", 1)[1] == contact["account_domain"]


def test_emails_unique_ascii_first_dot_last(data, good) -> None:
    emails = [c["email"] for c in data[1]]
    assert len(set(emails)) == len(emails)
    for contact in good:
        local = contact["email"].split("@")[0]
        assert contact["email"].isascii()
        assert local == local.lower()
        assert local.count(".") == 1
        assert all(ch.isalnum() or ch in ".-" for ch in local)
    assert any(c["email"].startswith("lukasz.") for c in generate(20000, seed=1)[1])


def test_names_are_diverse_and_unicode_correct(good) -> None:
    names = [c["first_name"] for c in good] + [c["last_name"] for c in good]
    for name in names:
        assert name
        assert unicodedata.normalize("NFC", name) == name
    assert sum(not n.isascii() for n in names) > 100
    assert any(unicodedata.category(ch) == "Lo" for n in names for ch in n)  # kanji/kana
    japanese = [c for c in good if c["country"] == "JP" and not c["last_name"].isascii()]
    assert japanese and all(c["email"].isascii() for c in japanese)


def test_consent_values(good) -> None:
    consent = collections.Counter(c["consent"] for c in good)
    assert set(consent) == CONSENTS
    assert consent["legitimate_interest"] > len(good) / 2


def test_timezones_valid_and_match_country(good) -> None:
    zones = zoneinfo.available_timezones()
    blank = 0
    for contact in good:
        tz = contact["timezone"]
        if not tz:
            blank += 1
            continue
        assert tz in zones
        zoneinfo.ZoneInfo(tz)
        assert tz in {z for z, _ in demo_data._COUNTRIES[contact["country"]][2]}
    assert 0 < blank < len(good) / 4


def test_linkedin_urls_some_blank(good) -> None:
    urls = [c["linkedin_url"] for c in good]
    assert 0 < urls.count("") < len(urls) / 2
    assert all(u.startswith("https://www.linkedin.com/in/") for u in urls if u)


def test_firmographics_spread(data) -> None:
    accounts, _ = data
    assert len({a["industry"] for a in accounts}) >= 10
    assert len({a["country"] for a in accounts}) >= 10
    sizes = [_employees(a["employees"]) for a in accounts]
    assert all(15 <= n <= 60_000 for n in sizes)
    mid = sum(200 <= n <= 5000 for n in sizes)
    assert mid > len(sizes) / 2
    assert min(sizes) < 100
    assert max(sizes) > 10_000
    for account, employees in zip(accounts, sizes, strict=True):
        revenue = account["annual_revenue"]
        if revenue.isdigit():
            assert 20_000 <= int(revenue) / employees <= 5_000_000
    technologies = [t for a in accounts for t in a["technologies"].split(";") if t]
    assert {"Salesforce", "HubSpot", "Snowflake", "AWS", "Azure", "GCP", "SAP"} <= set(technologies)


def test_messy_formats_and_tier_overrides(data) -> None:
    accounts, _ = data
    assert any("," in a["employees"] for a in accounts)
    assert any(a["employees"].endswith("k") for a in accounts)
    assert any(a["annual_revenue"].startswith("$") for a in accounts)
    assert any(a["domain"].startswith("https://www.") for a in accounts)
    tiers = [a["tier"] for a in accounts if a["tier"]]
    assert 2 <= len(tiers) <= 3
    assert set(tiers) <= {"1", "2", "3"}


def test_titles_varied_and_localised(good) -> None:
    titles = {c["title"] for c in good}
    assert len(titles) >= 200
    for expected in ("VP Eng", "Sr. Dir, IT Infrastructure", "Head of Procurement (EMEA)"):
        assert expected in titles or expected in {c["title"] for c in generate(20000)[1]}
    local = {
        t
        for by_function in demo_data._LOCAL_TITLES.values()
        for by_level in by_function.values()
        for group in by_level.values()
        for t in group
    }
    local_used = [c for c in good if c["title"] in local]
    assert local_used
    assert {c["country"] for c in local_used} <= {"DE", "FR", "ES", "MX"}


def _committee_index() -> dict[str, tuple[str, str]]:
    index = {}
    for table in (demo_data._TITLES, *demo_data._LOCAL_TITLES.values()):
        for function, by_level in table.items():
            for level, titles in by_level.items():
                for title in titles:
                    index[title] = (function, level)
    return index


def test_committees_plausible_with_a_few_gaps(data, good) -> None:
    index = _committee_index()
    people: dict[str, list[tuple[str, str, str]]] = collections.defaultdict(list)
    for contact in good:
        people[contact["account_domain"]].append((*index[contact["title"]], contact["title"]))
    with_exec = with_finance = with_tech = with_business = 0
    gaps = 0
    for members in people.values():
        functions = {f for f, _, _ in members}
        with_exec += any(f == "executive" and lv == "c" for f, lv, _ in members)
        with_finance += "finance" in functions
        with_tech += bool(functions & demo_data._TECH_FUNCTIONS)
        with_business += bool(functions & demo_data._BUSINESS_FUNCTIONS)
        missing = [
            gap
            for gap in demo_data._GAPS
            if not any(demo_data._violates_gap(gap, f, lv, t) for f, lv, t in members)
        ]
        gaps += bool(missing)
    total = len(people)
    assert with_exec > 0.8 * total
    assert with_finance > 0.8 * total
    assert with_tech > 0.8 * total
    assert with_business > 0.9 * total
    assert 2 <= gaps <= 0.12 * total
    procurement_or_legal = sum(
        any(f in ("procurement", "legal") for f, _, _ in m) for m in people.values()
    )
    assert 0.2 * total < procurement_or_legal < 0.9 * total


def test_three_bad_rows_at_the_end(data) -> None:
    accounts, contacts = data
    domains = {_domain(a["domain"]) for a in accounts}
    invalid, orphan, freemail = contacts[-BAD_CONTACT_ROWS:]
    assert "@" not in invalid["email"]
    assert invalid["account_domain"] in domains
    assert orphan["account_domain"] not in domains
    assert orphan["email"].endswith("@" + orphan["account_domain"])
    assert freemail["email"].endswith("@gmail.com")
    assert freemail["account_domain"] == ""
    for row in contacts[:-BAD_CONTACT_ROWS]:
        assert "@" in row["email"]
        assert not row["email"].endswith("@gmail.com")


def test_100k_contacts_stay_unique(tmp_path: Path) -> None:
    accounts_path, contacts_path = write_demo_csvs(tmp_path, contacts=100_000, seed=42)
    with contacts_path.open(encoding="utf-8", newline="") as handle:
        emails = [row["email"] for row in csv.DictReader(handle)]
    with accounts_path.open(encoding="utf-8", newline="") as handle:
        domains = [_domain(row["domain"]) for row in csv.DictReader(handle)]
    assert len(emails) == 100_000 + BAD_CONTACT_ROWS
    assert len(set(emails)) == len(emails)
    assert len(set(domains)) == len(domains)
    assert 8_000 <= len(domains) <= 12_000
    assert all(d.endswith(".example") for d in domains)
