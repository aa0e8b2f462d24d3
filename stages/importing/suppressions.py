"""What an operator types to name one suppression, read the one way by the command line
(`abm suppressions remove`) and the console (add, lift): the same rule as an imported
suppression list's `value` column (records.parse_suppressions)."""

from __future__ import annotations

from core.domains import normalise_domain
from core.errors import AbmError
from stages.importing.values import normalise_email

KINDS = ("email", "domain")
CHANNELS = ("all", "email", "linkedin")


def suppression_key(raw: str) -> tuple[str, str]:
    """(kind, value) as suppressions are stored: an email address, or a domain however it was
    pasted ("@acme.com", "*.acme.com", a URL). A usage error when it is neither."""
    text = raw.strip()
    try:
        if "@" in text and not text.startswith(("@", "*@")):
            return "email", normalise_email(text)
        for prefix in ("*@", "@", "*."):
            text = text.removeprefix(prefix)
        return "domain", normalise_domain(text)
    except ValueError as exc:
        raise AbmError(f"{raw!r} is not a valid email or domain: {exc}") from None
