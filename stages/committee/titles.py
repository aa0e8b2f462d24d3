"""Job title -> seniority, function and buying-committee role.

The knowledge lives in `core/defaults/titles.yaml`, whose header explains how a title is read,
so that a marketer can correct or extend it with a file of their own instead of code. This
module only normalises titles and applies the table. It is pure: no Prefect, no database.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.settings import DEFAULTS_DIR
from core.vocabulary import SENIORITIES, Function, Role, Seniority
from core.yamlfile import load_model

DEFAULT_TITLE_TABLE = DEFAULTS_DIR / "titles.yaml"
TITLE_CACHE_SIZE = 1 << 16  # distinct titles remembered per table; real contact lists repeat
_WORD_CACHE_SIZE = 1 << 17

_WORD = re.compile(r"[^\W_]+(?:&[^\W_]+)*|&")
_DOTTED_ACRONYM = re.compile(r"\b[a-z](?:\.[a-z]\b)+\.?")
_ESCAPE = re.compile(r"\\.")
_RANK = {level: rank for rank, level in enumerate(SENIORITIES)}


@dataclass(frozen=True)
class TitleClass:
    """What a job title tells us about the person's place in the buying committee."""

    seniority: str
    function: str
    role: str


def _fold(text: str) -> str:
    """Lower case without accents, so "Geschäftsführer" and "GESCHAFTSFUHRER" are one word."""
    text = text.casefold()
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _words(text: str) -> list[str]:
    """Folded words of `text`; "V.P." is one word and a lone "&" reads "and"."""
    text = _fold(text)
    if "." in text:
        text = _DOTTED_ACRONYM.sub(lambda m: m.group().replace(".", ""), text)
    return ["and" if word == "&" else word for word in _WORD.findall(text)]


def _check_word(value: str) -> str:
    word = _fold(value)
    if word == "&" or not _WORD.fullmatch(word):
        raise ValueError(f"{value!r} is not one word (letters and digits, maybe joined by &)")
    return word


def _check_pattern(value: str) -> str:
    pattern = value if value.isascii() else _fold_accents_only(value)
    if any(c.isupper() for c in _ESCAPE.sub("", pattern)):
        raise ValueError(f"{value!r}: write patterns in lower case, titles are matched folded")
    try:
        re.compile(pattern)
        compiled = re.compile(f"(?:{pattern})")
    except re.error as exc:
        raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None
    if compiled.fullmatch(""):
        raise ValueError(f"{value!r} matches an empty title, so it would match anywhere")
    return pattern


def _fold_accents_only(pattern: str) -> str:
    """Accents off a pattern without touching its regex syntax (case matters there: \\S)."""
    stripped = unicodedata.normalize("NFKD", pattern.replace("ß", "ss"))
    return "".join(c for c in stripped if not unicodedata.combining(c))


Word = Annotated[str, AfterValidator(_check_word)]
Pattern = Annotated[str, AfterValidator(_check_pattern)]
Patterns = Annotated[list[Pattern], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeniorityEntry(_Strict):
    """Patterns naming one level; with level null, words that must not count as a level."""

    level: Seniority | None
    match: Patterns


class FunctionEntry(_Strict):
    """Patterns naming one function; weak ones count only when nothing else is named."""

    function: Function | None
    match: Patterns
    weak: bool = False


class RoleRule(_Strict):
    """One line of the committee-role table; a condition left out fits everything."""

    functions: list[Function] | None = None
    seniorities: list[Seniority] | None = None
    keywords: Patterns | None = None
    role: Role


class TitleTable(_Strict):
    """The parsed title table; the format is documented in core/defaults/titles.yaml."""

    expansions: dict[Word, str] = {}
    compound_suffixes: list[Word] = []
    seniority: list[SeniorityEntry] = []
    functions: list[FunctionEntry] = []
    c_suite: dict[Word, Function] = {}
    roles: list[RoleRule] = []

    @cached_property
    def _matcher(self) -> _CompiledTable:
        """Patterns compiled once per table, on first use."""
        return _CompiledTable(self)


class _Alternation:
    """Groups of patterns in one regular expression that also tells which group matched.

    Each group is followed by an empty marker group, which closes last, so
    `values[m.lastindex]` is the value of the group that matched. The marker goes after the
    patterns, not around them, so that the regex engine can skip a pattern on its first
    letter: that keeps a few hundred patterns fast.
    """

    def __init__(self, entries: list[tuple[list[str], str | None, bool]]) -> None:
        parts: list[str] = []
        self.values: list[str | None] = [None]
        self.weak: list[bool] = [False]
        for patterns, value, weak in entries:
            body = "|".join(patterns)
            parts.append(f"(?:{body})()")
            inner = re.compile(body).groups
            self.values += [None] * inner + [value]
            self.weak += [False] * inner + [weak]
        body = "|".join(parts) or "(?!)"
        self.regex = re.compile(rf"(?<!\S)(?:{body})(?!\S)")


class _CompiledTable:
    """A TitleTable ready to classify: regexes built and a per-title cache."""

    def __init__(self, table: TitleTable) -> None:
        self.expansions = {word: tuple(_words(text)) for word, text in table.expansions.items()}
        self.suffixes = tuple(sorted(set(table.compound_suffixes), key=len, reverse=True))
        abbreviations = [(re.escape(abbr), function) for abbr, function in table.c_suite.items()]
        self.seniority = _Alternation(
            [(entry.match, entry.level, False) for entry in table.seniority]
            + [([abbr for abbr, _ in abbreviations], "c_level", False)] * bool(abbreviations)
        )
        self.function = _Alternation(
            [(entry.match, entry.function, entry.weak) for entry in table.functions]
            + [([abbr], function, False) for abbr, function in abbreviations]
        )
        self.rules = [
            (
                frozenset(rule.functions) if rule.functions is not None else None,
                frozenset(rule.seniorities) if rule.seniorities is not None else None,
                _Alternation([(rule.keywords, None, False)]).regex if rule.keywords else None,
                rule.role,
            )
            for rule in table.roles
        ]
        self.word_cache: dict[str, tuple[str, ...]] = {}
        self.classify: Callable[[str], TitleClass] = lru_cache(maxsize=TITLE_CACHE_SIZE)(
            self._classify
        )

    def _split(self, word: str) -> tuple[str, ...]:
        known = self.expansions.get(word)
        if known is not None:
            return known
        for suffix in self.suffixes:
            head = word[: -len(suffix)]
            if word.endswith(suffix) and len(head) >= 2:
                if head not in self.expansions and head[-1] == "s" and head[:-1] in self.expansions:
                    head = head[:-1]
                return self.expansions.get(head, (head,)) + self.expansions.get(suffix, (suffix,))
        return (word,)

    def _expand(self, word: str) -> tuple[str, ...]:
        known = self.expansions.get(word)
        if known is not None:
            return known
        if "&" not in word:
            return self._split(word)
        expanded: list[str] = []
        for index, part in enumerate(word.split("&")):
            if index:
                expanded.append("and")
            expanded += self._split(part)
        return tuple(expanded)

    def normalise(self, title: str) -> str:
        """The title as the patterns see it: folded, expanded words joined by single spaces."""
        out: list[str] = []
        cache = self.word_cache
        for word in _words(title):
            expanded = cache.get(word)
            if expanded is None:
                expanded = self._expand(word)
                if len(cache) < _WORD_CACHE_SIZE:
                    cache[word] = expanded
            out += expanded
        return " ".join(out)

    def _seniority(self, text: str) -> str:
        best = _RANK["individual_contributor"]
        values = self.seniority.values
        for match in self.seniority.regex.finditer(text):
            level = values[match.lastindex or 0]
            if level is not None and _RANK[level] < best:
                best = _RANK[level]
                if best == 0:
                    break
        return SENIORITIES[best]

    def _function(self, text: str) -> str:
        fallback = None
        values, weak = self.function.values, self.function.weak
        for match in self.function.regex.finditer(text):
            index = match.lastindex or 0
            function = values[index]
            if function is None:
                continue
            if not weak[index]:
                return function
            fallback = fallback or function
        return fallback or "other"

    def _role(self, function: str, seniority: str, text: str) -> str:
        for functions, seniorities, keywords, role in self.rules:
            if (
                (functions is None or function in functions)
                and (seniorities is None or seniority in seniorities)
                and (keywords is None or keywords.search(text))
            ):
                return role
        return "user"

    def _classify(self, title: str) -> TitleClass:
        text = self.normalise(title)
        seniority = self._seniority(text)
        function = self._function(text)
        return _title_class(seniority, function, self._role(function, seniority, text))


@cache
def _title_class(seniority: str, function: str, role: str) -> TitleClass:
    """One shared instance per combination: 100,000 cached titles need only a few hundred."""
    return TitleClass(seniority, function, role)


def _merge(front: TitleTable, back: TitleTable) -> TitleTable:
    """`front`'s entries tried first; its expansions and abbreviations replace `back`'s."""
    return TitleTable(
        expansions={**back.expansions, **front.expansions},
        compound_suffixes=list(dict.fromkeys([*front.compound_suffixes, *back.compound_suffixes])),
        seniority=[*front.seniority, *back.seniority],
        functions=[*front.functions, *back.functions],
        c_suite={**back.c_suite, **front.c_suite},
        roles=[*front.roles, *back.roles],
    )


@lru_cache(maxsize=1)
def _default_table() -> TitleTable:
    return load_model(DEFAULT_TITLE_TABLE, TitleTable)


@lru_cache(maxsize=8)
def _merged_table(path: Path, mtime_ns: int, size: int) -> TitleTable:
    return _merge(load_model(path, TitleTable), _default_table())


def load_title_table(override: Path | None = None) -> TitleTable:
    """The shipped table, or a user's file merged in front of it so that its entries win.

    Tables are reused while the file is unchanged, so repeated loads keep their title cache.
    A bad file raises ConfigError naming the file, the line and the field.
    """
    if override is None:
        return _default_table()
    path = Path(override)
    try:
        stat = path.stat()
    except OSError:
        return _merge(load_model(path, TitleTable), _default_table())
    return _merged_table(path.resolve(), stat.st_mtime_ns, stat.st_size)


def classify_title(title: str | None, table: TitleTable | None = None) -> TitleClass:
    """Seniority, function and committee role of one job title (cached per distinct title).

    A missing or empty title is an individual contributor in function other: a user.
    """
    text = "" if title is None else str(title)
    return (table if table is not None else _default_table())._matcher.classify(text)
