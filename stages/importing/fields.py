"""One cell of an optional field, read leniently: as written, as a blank, or mapped or
converted with a warning; under `--strict`, anything but "as written" rejects the row.

Only identity rejects a row by default (a contact's email, an account's domain, a contact
whose account cannot be found): one unusable time zone must not cost the whole person. The
outcome of each raw value is decided once here, so `records` can stay a fast loop.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from stages.importing.values import PERSONAL_MAILBOX_DOMAINS, is_explicit_blank

__all__ = ["FieldReader", "Fix", "file_under", "known_parent", "lenient"]


@dataclass(frozen=True, slots=True)
class Fix:
    """A cell not taken as written: the value kept (None: left blank), what was done (the
    warning) and what is wrong with it (the reason a `--strict` import rejects the row)."""

    value: Any
    action: str
    reason: str


Read = Callable[[str], Any]
"""A cell reader: the value, or a `Fix`; ValueError with a reason when it is unusable."""


def lenient(parse: Read, alias: Callable[[str], str | None] | None = None) -> Read:
    """`parse`, with explicit blanks ("n/a", "-", "unknown") read as blank, and what it
    refuses mapped by `alias` when that knows the value ("yes" -> opt_in)."""

    def read(raw: str) -> Any:
        try:
            return parse(raw)
        except ValueError as exc:
            if is_explicit_blank(raw):
                return None
            value = alias(raw) if alias is not None else None
            if value is None:
                raise
            return Fix(value, f"mapped to {value}", f"{exc} (without --strict: mapped to {value})")

    return read


_MEMO_SIZE = 1 << 14


class FieldReader:
    """One column's reader, which remembers each raw value's outcome.

    Columns such as time zone, consent or account domain repeat thousands of times. The
    memory is bounded (`_MEMO_SIZE` values, then it starts again), so that a streaming
    import of many accounts' contacts stays flat. A cached outcome is (value, message,
    is_warning): message None for a value taken as written. `identity` fields (the ones a
    row is filed under) and `strict` readers turn every problem into an error.
    """

    __slots__ = ("cache", "field", "identity", "label", "read", "strict")

    def __init__(
        self, field: str, read: Read, *, strict: bool = False, identity: bool = False
    ) -> None:
        self.field = field
        self.label = f"{field}: " if field else ""
        self.read = read
        self.strict = strict
        self.identity = identity
        self.cache: dict[str, tuple[Any, str | None, bool]] = {}

    def outcome(self, raw: str) -> tuple[Any, str | None, bool]:
        try:
            got = self.read(raw)
        except ValueError as exc:
            if self.identity or self.strict:
                return None, f"{self.label}{exc}", False
            return None, f"left blank: {exc}", True
        if isinstance(got, Fix):
            if self.strict:
                return None, f"{self.label}{got.reason}", False
            return got.value, got.action, True
        return got, None, False

    def __call__(
        self, raw: str, errors: list[str], warns: list[tuple[str, str, str]], shown: str = ""
    ) -> Any:
        """The value for `raw`; its problem goes to `errors` (reject) or `warns` (field,
        value, action: kept), with `shown` as the value when the key is not the cell."""
        hit = self.cache.get(raw)
        if hit is None:
            hit = self.outcome(raw)
            if len(self.cache) >= _MEMO_SIZE:
                self.cache.clear()
            self.cache[raw] = hit
        message = hit[1]
        if message is not None:
            if hit[2]:
                warns.append((self.field, shown or raw, message))
            else:
                errors.append(message)
        return hit[0]

    def once(self, raw: str, errors: list[str], warns: list[tuple[str, str, str]]) -> Any:
        """As a call, without remembering: for values that hardly repeat (LinkedIn URLs)."""
        value, message, is_warning = self.outcome(raw)
        if message is not None and is_warning:
            warns.append((self.field, raw, message))
        elif message is not None:
            errors.append(message)
        return value


def known_parent(domain: str, known: Collection[str]) -> str | None:
    """eu.acme.com -> acme.com when only the parent is a known account."""
    labels = domain.split(".")
    for i in range(1, len(labels) - 1):
        parent = ".".join(labels[i:])
        if parent in known:
            return parent
    return None


def file_under(email_domain: str, named: str, known: Collection[str]) -> str | Fix:
    """The account for a contact whose `account_domain` names `named` (a known account).

    The address is the better witness: at another imported account (or a subdomain of
    one), the person is filed there, never emailed as `named`'s employee. An address that
    cannot confirm `named` (a personal mailbox, a domain no account has) keeps `named`,
    and says so. The same domain, a subdomain or a parent of `named` agrees with it."""
    if (
        email_domain == named
        or email_domain.endswith("." + named)
        or named.endswith("." + email_domain)
    ):
        return named
    if email_domain in PERSONAL_MAILBOX_DOMAINS:
        why = f"{email_domain} is a personal mailbox, so the address cannot confirm the company"
        return Fix(named, f"kept under {named}: {why}", f"{why} {named}")
    owner = email_domain if email_domain in known else known_parent(email_domain, known)
    if owner is None:
        why = (
            f"the email domain {email_domain} is not an imported account, so the address "
            "cannot confirm the company"
        )
        return Fix(named, f"kept under {named}: {why}", f"{why} {named}")
    if owner == email_domain:
        at = f"{owner}, an imported account"
    else:
        at = f"{email_domain}, which belongs to the imported account {owner}"
    return Fix(
        owner,
        f"filed under {owner}, not {named}: the email address is at {at}",
        f"the email address is at {at}, not at {named}",
    )
