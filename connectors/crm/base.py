"""The one shape every CRM backend has, after the email backends: open lazily, push a batch of
accounts and say what happened to each, pull what changed since a cursor, close.

A push sends our results onto the CRM's account records; a pull reads back what sales keeps
there (owners, deals, meetings). Which accounts to push and what a pulled record changes here
is decided in `stages/crm`, never in a backend: a backend only speaks its CRM's API."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Self

from connectors.http import Closing
from core.errors import ConfigError
from core.vocabulary import STAGES, TIERS

# What a pull reads, each with its own cursor: the account records (for their owner), the
# deals or opportunities (for the stage), and the meetings booked with our contacts.
PullKind = Literal["accounts", "deals", "meetings"]
PULL_KINDS: tuple[PullKind, ...] = ("accounts", "deals", "meetings")


class CrmAuthError(ConfigError):
    """The CRM refused our credentials (wrong, expired, revoked, missing a scope).

    The message names the setting to check and never a secret. Raised out of a push or a
    pull: nothing after it is sent, and a pull's cursor stays at the last page applied.
    `status` has a default so the error survives pickling (Prefect task states)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class WriteBackResult:
    """What one push did: records updated and created, and why each failure failed.

    `failures` maps a domain (or `<row N>` when a row had none) to a reason a marketer can
    act on; nothing in it is a secret. `stopped` says why sending stopped early (the CRM
    unavailable after every retry), so a caller with more accounts waits for the next run.
    `crm_ids` maps each domain written to the CRM's id of its record, so later pushes can
    address it directly."""

    updated: int = 0
    created: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    stopped: str | None = None
    crm_ids: dict[str, str] = field(default_factory=dict)
    requests: int = 0

    @property
    def failed(self) -> int:
        """How many accounts were not written."""
        return len(self.failures)


@dataclass(frozen=True)
class CrmOwner:
    """The CRM user who owns an account (HubSpot owner, Salesforce User). `active` is False
    for one who has left (HubSpot archived, Salesforce inactive): still the owner of record,
    but never a From address."""

    crm_id: str
    email: str | None = None
    name: str | None = None
    active: bool = True


@dataclass(frozen=True)
class CrmAccount:
    """An account record that changed in the CRM: its domain as the CRM has it (raw, the
    stage normalises it) and its owner, None when it has none."""

    crm_id: str
    domain: str | None
    owner: CrmOwner | None
    modified_at: datetime


@dataclass(frozen=True)
class CrmDeal:
    """A deal (HubSpot) or opportunity (Salesforce) that changed.

    `stage` is the CRM's own stage value (HubSpot's internal `dealstage` id such as
    `closedwon`, Salesforce's `StageName`); `closed` and `won` are the CRM's own flags where
    it has them (None when it does not say). `domains` are the accounts it belongs to, raw."""

    crm_id: str
    name: str | None
    stage: str
    pipeline: str | None
    closed: bool | None
    won: bool | None
    amount: float | None
    domains: tuple[str, ...]
    modified_at: datetime


@dataclass(frozen=True)
class CrmMeeting:
    """A meeting (HubSpot meeting engagement, Salesforce Event) that changed: who attended by
    email, the accounts it belongs to, when it starts, and its outcome where the CRM has one
    (HubSpot `hs_meeting_outcome`: SCHEDULED, COMPLETED, RESCHEDULED, NO_SHOW, CANCELED)."""

    crm_id: str
    title: str | None
    start_at: datetime | None
    outcome: str | None
    attendee_emails: tuple[str, ...]
    domains: tuple[str, ...]
    modified_at: datetime


CrmRecord = CrmAccount | CrmDeal | CrmMeeting


def checked_values(account: Mapping[str, Any]) -> tuple[float, str, int | None, int | None]:
    """The engagement score, stage, tier and ICP score a push sends, checked the same way
    for every CRM: ValueError names the first value that cannot be sent (the backend
    reports it for that domain and sends the rest)."""
    try:
        score = float(account["engagement_score"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"engagement_score {account.get('engagement_score')!r} is not a number"
        ) from None
    if not math.isfinite(score):
        raise ValueError(f"engagement_score {score!r} is not a finite number")
    stage = str(account.get("stage") or "").strip().lower()
    if stage not in STAGES:
        raise ValueError(f"stage {account.get('stage')!r} is not one of {', '.join(STAGES)}")
    tier = account.get("tier")
    if tier is not None and tier not in TIERS:
        raise ValueError(f"tier {tier!r} is not 1, 2, 3 or None")
    icp = account.get("icp_score")
    if icp is not None and not (isinstance(icp, int) and 0 <= icp <= 100):
        raise ValueError(f"icp_score {icp!r} is not an integer from 0 to 100, or None")
    return score, stage, tier, icp


@dataclass
class PullPage:
    """One page of changes of one kind, in the CRM's modification order.

    `cursor` is where the next pull starts once this page has been applied and stored: the
    caller stores it in the same transaction as the page's changes, so a failure later never
    moves the cursor past what was stored. `skipped` says, per record the CRM returned but
    that could not be used, why (a deal with no company, a meeting with no attendee), so that
    nothing is dropped silently."""

    kind: PullKind
    records: list[CrmRecord]
    cursor: str
    skipped: list[str] = field(default_factory=list)
    requests: int = 0


class CrmBackend(Closing, ABC):
    """Base class of a CRM backend, chosen by `ABM_CRM` (`connectors.crm.get_crm`).

    `batch_size` is how many accounts one push request carries: a push of N accounts whose
    records the CRM already knows takes ceil(N / batch_size) requests. `accounts_per_call`
    is how many a push hands `push_accounts` at once: the most a crash can leave pushed but
    not recorded (pushed again next time, which is harmless)."""

    name: str = "base"
    batch_size: int = 100
    accounts_per_call: int = 1000

    def open(self) -> None:
        """Open connections, authenticate; a no-op by default. Twice must be harmless."""

    def close(self) -> None:
        """Close what `open` opened; a no-op by default."""

    def ensure_fields(self) -> list[str]:
        """Create the custom fields a push writes where the CRM allows it; the names
        created ([] when all exist or the CRM's admin creates them)."""
        return []

    @abstractmethod
    def push_accounts(
        self, accounts: Sequence[dict[str, Any]], known_ids: dict[str, str] | None = None
    ) -> WriteBackResult:
        """Write these accounts (keys: `domain`, `name`, `tier`, `icp_score`, `icp_summary`,
        `engagement_score`, `stage`, `coverage`, `gaps`) onto the CRM's account records.
        `known_ids` maps a domain to the CRM id a previous push or pull learned."""

    def pull_notes(self) -> list[str]:
        """What the pulls so far want the user to know beyond records (the sandbox: where
        to put the files it found missing); [] by default."""
        return []

    @abstractmethod
    def pull_changes(self, kind: PullKind, cursor: str | None) -> Iterator[PullPage]:
        """The changes of `kind` since `cursor` (None: from the beginning), page by page.

        A record modified exactly at the cursor may come again: applying one is idempotent.
        Raises `CrmAuthError` on refused credentials; other failures after the transport's
        retries raise `connectors.http.ApiError`. Pages already yielded stay valid."""

    def __enter__(self) -> Self:
        self.open()
        return self
