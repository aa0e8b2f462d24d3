"""A company's domain, the key every account is filed under: one normaliser, used by the
import, the CRM and LinkedIn alike, so a domain reads the same wherever it comes from."""

from __future__ import annotations

import functools
import re

__all__ = ["HOST", "TRIM", "check_host", "domain_or_none", "normalise_domain", "show"]

# Every character str.strip() removes, plus zero-width space and stray byte-order marks.
TRIM = "".join(chr(c) for c in range(0x3001) if chr(c).isspace()) + "\u200b\ufeff"


def show(value: str, limit: int = 60) -> str:
    """A value as it may appear inside a reason: one line, not too long."""
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})")
_LABEL_CHARS = re.compile(r"[^a-z0-9-]")
_IPV4 = re.compile(r"[0-9]+(?:\.[0-9]+){3}")
_SCHEME = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//")
_PORT = re.compile(r":[0-9]*$")


@functools.lru_cache(maxsize=1 << 16)
def check_host(host: str) -> str:
    """Validate a lowercase host name and return its ASCII (IDNA) form.

    Raises ValueError with a phrase that completes "it ...". Cached: contacts repeat domains.
    """
    if len(host) <= 253 and HOST.fullmatch(host):
        return host
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise ValueError("is not a valid international domain name") from None
        if len(host) <= 253 and HOST.fullmatch(host):
            return host
    if _IPV4.fullmatch(host):
        raise ValueError("is an IP address, not a domain")
    labels = host.split(".")
    if len(labels) < 2:
        raise ValueError("has no top-level domain such as .com")
    if any(not label for label in labels):
        raise ValueError("has an empty part between two dots")
    for label in labels:
        bad = _LABEL_CHARS.search(label)
        if bad:
            ch = bad.group(0)
            shown = "a space" if ch.isspace() else f"'{ch}'"
            raise ValueError(f"contains {shown}, which is not allowed in a domain")
        if len(label) > 63:
            raise ValueError("has a part longer than 63 characters")
        if label.startswith("-") or label.endswith("-"):
            raise ValueError("has a part that starts or ends with '-'")
    if len(host) > 253:
        raise ValueError("is longer than 253 characters")
    raise ValueError(f"ends in '.{labels[-1]}', which is not a top-level domain")


@functools.lru_cache(maxsize=1 << 16)
def normalise_domain(raw: str) -> str:
    """A company domain as accounts are keyed: lowercase, bare host, IDNA-encoded.

    Pasted URLs ("https://www.Acme.com/about?x=1") are common in exports, so scheme, `www.`,
    path, query, port and a trailing dot are dropped before validation.
    """
    s = raw.strip(TRIM).lower()
    if not s:
        raise ValueError("the domain is empty")
    if len(s) <= 253 and HOST.fullmatch(s) and not s.startswith("www."):
        return s
    s = _SCHEME.sub("", s)
    for sep in "/?#\\":
        s = s.split(sep, 1)[0]
    if "@" in s:
        raise ValueError(f"'{show(raw)}' looks like an email address, not a domain")
    s = _PORT.sub("", s).strip(TRIM).rstrip(".")
    if s.startswith("www.") and s.count(".") >= 2:
        s = s[4:]
    if not s:
        raise ValueError(f"'{show(raw)}' is not a valid domain")
    try:
        return check_host(s)
    except ValueError as exc:
        raise ValueError(f"'{show(raw)}' is not a valid domain: it {exc}") from None


def domain_or_none(raw: str) -> str | None:
    """The account key for a domain a provider sent us, or None when it is not a domain."""
    try:
        return normalise_domain(raw)
    except ValueError:
        return None
