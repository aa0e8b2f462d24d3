"""The console in a real browser: a live `abm serve` on a seeded database, and Debian's
chromium driven by Playwright (no browser download: its own executable).

The database is filled by the product's own commands, as a user would: `abm init`, `abm
import` of accounts and contacts from CSV files written here, `abm campaign run` to the
outbox (on the test session's temporary Prefect server), `abm console add-user`. Then `abm
serve` runs in a subprocess on a free loopback port until the module's tests are done.

Without a chromium the browser tests skip with the reason, unless ABM_TEST_REQUIRE_BROWSER=1
(set by .ci/run), where they fail saying what is missing. Screenshots go to ABM_SCREENSHOTS,
else tests/.screenshots/ (ignored by git, never committed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from smtp_server import free_port

TESTS = Path(__file__).resolve().parent
REQUIRE_BROWSER = os.environ.get("ABM_TEST_REQUIRE_BROWSER") == "1"
SCREENSHOTS = Path(os.environ.get("ABM_SCREENSHOTS") or TESTS / ".screenshots")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORDS = {"olive": "operator-Passw0rd!", "victor": "viewer-Passw0rd!"}
ROLES = {"olive": "operator", "victor": "viewer"}

# The seeded people: names and emails a test looks for in every URL the browser asked for.
ACCOUNTS_CSV = """domain,name,industry,employees,country,tier
northwind-console.example,Northwind Console,Manufacturing,1200,US,1
bluepeak-console.example,Bluepeak Console,Software,300,DE,2
quietharbor-console.example,Quiet Harbor Console,Retail,40,GB,3
"""
PEOPLE = [
    # email, first, last, title, account
    ("ada.quillfeather@northwind-console.example", "Ada", "Quillfeather", "CFO", "northwind"),
    ("bram.ostrowski@northwind-console.example", "Bram", "Ostrowski", "VP Eng", "northwind"),
    ("cleo.vantongeren@northwind-console.example", "Cleo", "Vantongeren", "CISO", "northwind"),
    ("dario.fenwhistle@bluepeak-console.example", "Dario", "Fenwhistle", "CTO", "bluepeak"),
    ("elke.marchbanks@bluepeak-console.example", "Elke", "Marchbanks", "IT Manager", "bluepeak"),
    ("fynn.halloran@quietharbor-console.example", "Fynn", "Halloran", "Owner", "quietharbor"),
]
SUPPRESSED = "gone.person@quietharbor-console.example"
CAMPAIGN_KEY = "console-check"
CAMPAIGN_YAML = f"""key: {CAMPAIGN_KEY}
name: Console check
audience:
  tiers: [1, 2, 3]
consent_required: false
caps:
  per_contact: {{max: 5, days: 7}}
  per_account: {{max: 50, days: 7}}
links:
  guide: https://demo.example/guide
steps:
  - id: intro
    template: intro
"""


def chromium_path() -> str | None:
    """Debian's chromium, where it is."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def missing_browser() -> str | None:
    """What is missing to run the browser tests here, in words; None when nothing is."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed ({exc}): pip install -r requirements.lock"
    if chromium_path() is None:
        return "no chromium on the PATH or at /usr/bin/chromium: apt-get install chromium"
    return None


def require_browser() -> str:
    """The chromium executable; skips the test without one, or fails under CI's
    ABM_TEST_REQUIRE_BROWSER=1."""
    missing = missing_browser()
    if missing:
        if REQUIRE_BROWSER:
            pytest.fail(f"ABM_TEST_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    path = chromium_path()
    assert path is not None
    return path


@dataclass
class LiveConsole:
    """A running `abm serve` on its own database and state folder, and what a test needs
    to use the product beside the browser (the same environment for every command)."""

    folder: Path
    env: dict[str, str]
    campaign: Path
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    requested: list[str] = field(default_factory=list)  # every URL any page asked for

    @property
    def outbox(self) -> Path:
        return Path(self.env["ABM_OUTBOX_DIR"])

    def sent_files(self) -> int:
        """The messages the outbox holds: what has really gone out."""
        return sum(1 for _ in self.outbox.rglob("*.eml")) if self.outbox.exists() else 0

    def abm(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """`abm ARGS` as a user runs it, in this console's environment; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "abm", *args],
            env=self.env,
            cwd=self.folder,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"abm {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def run_campaign(self, *options: str) -> str:
        return self.abm("campaign", "run", str(self.campaign), *options)

    def sql(self, statement: str, **params: Any) -> list[tuple[Any, ...]]:
        """Read the console's database directly: what a page claims, checked at the source."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.env["ABM_DATABASE_URL"])
        try:
            with engine.begin() as connection:
                result = connection.execute(text(statement), params)
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()


def _environment(folder: Path, prefect_api_url: str | None) -> dict[str, str]:
    """The process environment every command of the live console runs with: its own
    database, state folder and outbox, and no ABM_ or PREFECT_ setting from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ABM_", "PREFECT_"))}
    state = folder / "state"
    env.update(
        ABM_DATABASE_URL=f"sqlite:///{folder / 'console.db'}",
        ABM_STATE_DIR=str(state),
        ABM_OUTBOX_DIR=str(state / "outbox"),
        ABM_SECRET_KEY="browser-test-secret-key",
        ABM_PUBLIC_URL="http://127.0.0.1:8025",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS.parent), env.get("PYTHONPATH")])),
    )
    if prefect_api_url:
        env["PREFECT_API_URL"] = prefect_api_url
    return env


def seed(console: LiveConsole) -> None:
    """Accounts, people, a campaign run to the outbox and two console users, each through
    the product's own command."""
    folder = console.folder
    (folder / "accounts.csv").write_text(ACCOUNTS_CSV, encoding="utf-8")
    rows = ["email,first_name,last_name,title,account_domain"]
    rows += [
        f'{email},{first},{last},"{title}",{account}-console.example'
        for email, first, last, title, account in PEOPLE
    ]
    (folder / "contacts.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    console.campaign.write_text(CAMPAIGN_YAML, encoding="utf-8")
    console.abm("init")
    console.abm("import", "accounts", str(folder / "accounts.csv"))
    console.abm("import", "contacts", str(folder / "contacts.csv"))
    (folder / "suppressions.csv").write_text(
        f"email,reason\n{SUPPRESSED},asked by phone\n", encoding="utf-8"
    )
    console.abm("import", "suppressions", str(folder / "suppressions.csv"))
    console.run_campaign("--limit", "2")  # two people sent to; the others wait for the next run
    for name, password in PASSWORDS.items():
        console.abm(
            "console", "add-user", name, "--role", ROLES[name], "--password-stdin",
            stdin=password + "\n",
        )  # fmt: skip


def start_server(console: LiveConsole, timeout_s: float = 60.0) -> None:
    """`abm serve` on a free loopback port, waited for on /healthz."""
    port = free_port()
    log = (console.folder / "serve.log").open("wb")
    console.process = subprocess.Popen(
        [sys.executable, "-m", "abm", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=console.env,
        cwd=console.folder,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    console.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if console.process.poll() is not None:
            raise AssertionError(
                f"abm serve exited {console.process.returncode}: "
                + (console.folder / "serve.log").read_text(encoding="utf-8", errors="replace")
            )
        try:
            if httpx.get(f"{console.url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(console)
    raise AssertionError(f"abm serve did not answer /healthz within {timeout_s} s")


def stop_server(console: LiveConsole) -> None:
    process = console.process
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def live_console(folder: Path, prefect_api_url: str | None) -> Iterator[LiveConsole]:
    """A seeded, running console for a module's tests (a fixture's body)."""
    folder.mkdir(parents=True, exist_ok=True)
    console = LiveConsole(folder, _environment(folder, prefect_api_url), folder / "campaign.yaml")
    seed(console)
    start_server(console)
    try:
        yield console
    finally:
        stop_server(console)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Iterator[LiveConsole]:
    """The module's live console (the session's temporary Prefect server runs the flows)."""
    from prefect.settings import PREFECT_API_URL

    require_browser()
    yield from live_console(tmp_path_factory.mktemp("console"), PREFECT_API_URL.value())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module; each test opens a context of its own. Not for
    the session: Playwright's sync API keeps an event loop running in this thread while it
    is open, and every later test calling asyncio.run() would fail."""
    executable = require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Any, live: LiveConsole) -> Iterator[Any]:
    """A fresh browser context (no cookies) whose every request URL is recorded."""
    fresh = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 800})
    fresh.on("request", lambda request: live.requested.append(request.url))
    fresh.set_default_timeout(15_000)
    try:
        yield fresh
    finally:
        fresh.close()


def sign_in(context: Any, name: str) -> Any:
    """A page of `context` signed in as `name` through the sign-in form."""
    page = context.new_page()
    page.goto("/console/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return page


def screenshot(page: Any, name: str) -> Path:
    """A full-page screenshot of what the page shows now, for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
