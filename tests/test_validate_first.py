"""Every input a campaign run needs is checked before anything is written or started: the
campaign file, the ICP, title and engagement rules, the templates the campaign uses (they
exist for its whole audience and they parse), the ramp file and the email backend's
settings. A mistake is exit 2 in well under a second, naming the file (and line) or the
setting, with no campaign row, no ledger row and no Prefect state written; and
`abm campaign run`'s exit codes tell a scheduler what happened: 0 all good, 1 messages of
this run failed, 2 configuration or input error, 3 the campaign is paused by a rule."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
import respx
from cli_support import run_abm
from sqlalchemy import func, select

from abm.demo_data import write_demo_csvs
from core.errors import ConfigError
from core.settings import DEFAULTS_DIR, get_settings, reset_settings
from models.db import get_engine, session_scope
from models.store import insert_new_events
from models.tables import Campaign, Delivery, utcnow
from stages.importing import import_file

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "campaigns" / "demo.yaml"
# No frequency caps and no sending window: every reachable person gets the email now.
UNCAPPED = """\
key: uncapped
name: Uncapped
links: {guide: 'https://demo.example/g'}
caps: {per_contact: null, per_account: null}
steps:
  - id: intro
    template: intro
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _broken_templates(tmp_path: Path, name: str, text: str) -> Path:
    """A copy of the shipped templates with one file rewritten."""
    folder = tmp_path / "templates"
    shutil.copytree(REPO / "templates", folder)
    _write(folder / name, text)
    return folder


@pytest.fixture
def database(sqlite_url, tmp_path, monkeypatch) -> str:
    """A migrated database holding a few demo accounts and people, configured as ABM's."""
    monkeypatch.setenv("ABM_DATABASE_URL", sqlite_url)
    for name in ("PREFECT_HOME", "PREFECT_LOGGING_SETTINGS_PATH"):
        monkeypatch.delenv(name, raising=False)  # what the run sets is undone afterwards
    reset_settings()
    engine = get_engine(sqlite_url)
    accounts, contacts = write_demo_csvs(tmp_path / "data", contacts=40)
    import_file("accounts", accounts, engine, get_settings())
    import_file("contacts", contacts, engine, get_settings())
    return sqlite_url


def _rows(url: str) -> tuple[int, int]:
    with get_engine(url).connect() as connection:
        campaigns = connection.execute(select(func.count()).select_from(Campaign)).scalar_one()
        deliveries = connection.execute(select(func.count()).select_from(Delivery)).scalar_one()
    return campaigns, deliveries


# Each case: the environment to set (a callable of tmp_path), and what the message names.
BAD_INPUTS = {
    "icp rules": (
        lambda tmp: {
            "ABM_ICP_RULES": _write(
                tmp / "icp.yaml", "rules:\n  - field: employees\n    weight: lots\n"
            )
        },
        ["ABM_ICP_RULES", "icp.yaml:3", "weight"],
    ),
    "icp rules missing": (
        lambda tmp: {"ABM_ICP_RULES": tmp / "no-such-icp.yaml"},
        ["ABM_ICP_RULES", "no-such-icp.yaml", "cannot read"],
    ),
    "engagement rules": (
        lambda tmp: {"ABM_ENGAGEMENT_RULES": _write(tmp / "engagement.yaml", "weights: 3\n")},
        ["ABM_ENGAGEMENT_RULES", "engagement.yaml"],
    ),
    "title rules": (
        lambda tmp: {"ABM_TITLE_RULES": _write(tmp / "titles.yaml", "seniority: [1, 2\n")},
        ["ABM_TITLE_RULES", "titles.yaml:"],
    ),
    "warm-up ramp": (
        lambda tmp: {"ABM_WARMUP": _write(tmp / "ramp.yaml", "one: many\n")},
        ["ABM_WARMUP", "ramp.yaml"],
    ),
    "template syntax": (
        lambda tmp: {
            "ABM_TEMPLATES_DIR": _broken_templates(
                tmp, "email/intro/body.html.j2", "<p>Hi\n{{ contact.first_name }\n</p>\n"
            )
        },
        ["intro/body.html.j2:2", "demo.yaml", "'intro'"],
    ),
    "syntax in an included partial": (
        lambda tmp: {
            "ABM_TEMPLATES_DIR": _broken_templates(
                tmp, "email/_partials/footer.html.j2", "<p>\n\n{% if x %}no end\n"
            )
        },
        ["_partials/footer.html.j2:", "demo.yaml"],
    ),
    "unknown filter": (
        lambda tmp: {
            "ABM_TEMPLATES_DIR": _broken_templates(
                tmp, "email/intro/subject.j2", "Hello {{ account.name | shout }}\n"
            )
        },
        ["intro/subject.j2:1", "shout"],
    ),
    "email backend without credentials": (
        lambda tmp: {"ABM_EMAIL_BACKEND": "sendgrid", "ABM_PUBLIC_URL": "https://abm.acme.com"},
        ["ABM_SENDGRID_API_KEY"],
    ),
    "unsafe public url": (
        lambda tmp: {"ABM_EMAIL_BACKEND": "smtp", "ABM_SMTP_URL": "smtps://u:p@mail.acme.com:465"},
        ["ABM_PUBLIC_URL"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_a_bad_input_stops_the_run_at_once_with_exit_2_and_nothing_written(
    database, tmp_path, monkeypatch, capsys, abm_state, case
) -> None:
    environment, named = BAD_INPUTS[case]
    for name, value in environment(tmp_path).items():
        monkeypatch.setenv(name, str(value))
    reset_settings()

    started = time.monotonic()
    code, out, err = run_abm(capsys, monkeypatch, "campaign", "run", str(DEMO), "--json")
    elapsed = time.monotonic() - started

    assert code == 2, err
    assert out == "" and "Traceback" not in err
    message = " ".join(err.split())
    for part in named:
        assert part in message, (part, err)
    assert _rows(database) == (0, 0)  # no campaign row, no ledger row
    assert not (abm_state / "prefect").exists() and not (abm_state / "logs").exists()
    assert elapsed < 5, f"{elapsed:.1f} s: Prefect must not start for a bad input"


def test_a_missing_template_names_the_campaign_file_line_and_step(
    database, tmp_path, monkeypatch, capsys, abm_state
) -> None:
    campaign = _write(
        tmp_path / "typo.yaml",
        "name: Typo\nlinks: {guide: https://acme.example/guide}\nsteps:\n  - id: intro\n"
        "    template: intro\n  - id: next\n    wait: 3d\n    template: intor\n",
    )
    code, _out, err = run_abm(capsys, monkeypatch, "campaign", "run", str(campaign))
    message = " ".join(err.split())
    assert code == 2, err
    assert f"{campaign}:8" in message and "'next'" in message and "email/intor" in message
    assert _rows(database) == (0, 0)
    assert not (abm_state / "prefect").exists()


def test_a_template_only_some_tiers_have_is_refused_for_the_others(tmp_path, monkeypatch):
    from flows.preflight import preflight

    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    (templates / "email" / "intro" / "body.html.j2").unlink()  # only tier-1/ keeps one
    monkeypatch.setenv("ABM_TEMPLATES_DIR", str(templates))
    reset_settings()
    tier_1 = _write(
        tmp_path / "t1.yaml",
        "name: T1\nlinks: {guide: https://acme.example/g}\naudience: {tiers: [1]}\n"
        "steps: [{id: intro}]\n",
    )
    preflight(get_settings(), tier_1)
    every_tier = _write(
        tmp_path / "all.yaml",
        "name: All\nlinks: {guide: https://a.example/g}\nsteps:\n  - id: intro\n",
    )
    with pytest.raises(ConfigError, match=r"all\.yaml:4: step 'intro'.*body\.html\.j2.*tier 2"):
        preflight(get_settings(), every_tier)


def test_the_shipped_campaigns_and_defaults_pass(monkeypatch):
    from flows.preflight import preflight

    for campaign in sorted((REPO / "campaigns").glob("*.yaml")):
        preflight(get_settings(), campaign)
    monkeypatch.setenv("ABM_ICP_RULES", str(DEFAULTS_DIR / "icp.yaml"))
    monkeypatch.setenv("ABM_WARMUP", "on")
    reset_settings()
    preflight(get_settings(), DEMO)


def test_a_link_a_template_needs_and_the_campaign_lacks_is_named(tmp_path):
    from flows.preflight import preflight

    lacking = _write(tmp_path / "nolinks.yaml", "name: No links\nsteps:\n  - id: intro\n")
    with pytest.raises(ConfigError) as caught:
        preflight(get_settings(), lacking)
    message = str(caught.value)
    assert "nolinks.yaml:3: step 'intro'" in message and "uses links.guide" in message
    assert "body.html.j2:" in message and "(it defines: none)" in message
    asking = tmp_path / "templates"
    shutil.copytree(REPO / "templates", asking)
    for body in (asking / "email" / "intro").rglob("body.html.j2"):
        body.write_text(
            "{% if links.guide is defined %}{{ links.guide }}{% endif %}"
            "{{ links.other | default('') }}{{ unsubscribe_url }}"
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ABM_TEMPLATES_DIR", str(asking))
        reset_settings()
        preflight(get_settings(), lacking)  # a template that asks first needs nothing
    reset_settings()


def test_a_missing_campaign_file_is_exit_2(database, tmp_path, monkeypatch, capsys, abm_state):
    code, _out, err = run_abm(capsys, monkeypatch, "campaign", "run", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml" in err and "cannot read" in err
    assert not (abm_state / "prefect").exists()


# --- the flow checks too: deployments run it without the command line ---------------------


@pytest.mark.slow
def test_the_flow_itself_refuses_a_bad_input_before_it_writes(
    database, tmp_path, monkeypatch, prefect_server
) -> None:
    from flows.campaign import run_campaign

    monkeypatch.setenv("ABM_ICP_RULES", str(_write(tmp_path / "icp.yaml", "rules: 5\n")))
    reset_settings()
    with pytest.raises(ConfigError, match="ABM_ICP_RULES"):
        run_campaign(campaign_file=str(DEMO))
    assert _rows(database) == (0, 0)


# --- exit codes of real runs ---------------------------------------------------------------


@pytest.mark.slow
def test_a_clean_run_exits_0(database, monkeypatch, capsys, prefect_server) -> None:
    code, _out, err = run_abm(capsys, monkeypatch, "campaign", "run", str(DEMO), "--json")
    assert code == 0, err
    assert _rows(database)[1] > 0


def _complaints(url: str, how_many: int) -> None:
    """Spam reports from people the campaign emailed, as a provider's webhook stores them."""
    engine = get_engine(url)
    with engine.connect() as connection:
        sent = connection.execute(
            select(Delivery.contact_id, Delivery.account_id, Delivery.campaign_id)
            .where(Delivery.state == "sent")
            .order_by(Delivery.id)
            .limit(how_many)
        ).all()
    events = [
        {
            "provider": "sendgrid",
            "provider_event_id": f"spam-{contact}",
            "type": "spam_report",
            "channel": "email",
            "occurred_at": utcnow(),
            "account_id": account,
            "contact_id": contact,
            "campaign_id": campaign,
        }
        for contact, account, campaign in sent
    ]
    with session_scope(engine) as session:
        assert insert_new_events(session, engine, events, utcnow()) == how_many


@pytest.mark.slow
def test_a_campaign_the_circuit_breaker_paused_exits_3_and_a_persons_pause_0(
    database, tmp_path, monkeypatch, capsys, prefect_server
) -> None:
    monkeypatch.setenv("ABM_REPUTATION_MIN_SENT", "5")
    reset_settings()
    campaign = _write(tmp_path / "uncapped.yaml", UNCAPPED)
    code, _out, err = run_abm(capsys, monkeypatch, "campaign", "run", str(campaign), "--json")
    assert code == 0, err
    _complaints(database, 3)

    code, out, err = run_abm(capsys, monkeypatch, "campaign", "run", str(campaign), "--json")

    assert code == 3, err
    assert "spam complaints" in err and "abm campaign resume" in err
    assert '"paused_because": "paused: 3 spam complaints' in out
    # still paused by the rule: every later run says so too, until a person resumes it
    assert run_abm(capsys, monkeypatch, "campaign", "run", str(campaign))[0] == 3

    assert run_abm(capsys, monkeypatch, "campaign", "pause", str(campaign))[0] == 0
    code, _out, err = run_abm(capsys, monkeypatch, "campaign", "run", str(campaign))
    assert code == 0, err  # a person's pause is what they asked for
    assert "paused" in err


@pytest.mark.slow
def test_a_provider_refusal_pauses_the_campaign_and_exits_3(
    database, tmp_path, monkeypatch, capsys, prefect_server
) -> None:
    monkeypatch.setenv("ABM_EMAIL_BACKEND", "sendgrid")
    monkeypatch.setenv("ABM_SENDGRID_API_KEY", "SG.wrong-key.abcdefghijklmnopqrstuvwxyz012345")
    monkeypatch.setenv("ABM_PUBLIC_URL", "https://abm.acme.com")
    reset_settings()
    campaign = _write(tmp_path / "uncapped.yaml", UNCAPPED)
    refusal = {
        "errors": [{"field": None, "message": "The provided authorization grant is invalid"}]
    }
    with respx.mock(assert_all_called=False) as router:
        sendgrid = router.post("https://api.sendgrid.com/v3/mail/send").mock(
            return_value=httpx.Response(401, json=refusal)
        )
        router.route().pass_through()  # Prefect's own API calls
        code, out, err = run_abm(capsys, monkeypatch, "campaign", "run", str(campaign), "--json")

    assert sendgrid.call_count == 1
    assert code == 3, err
    assert "ABM_SENDGRID_API_KEY" in err and "abm campaign resume" in err
    assert '"failed": 0' in out  # nothing lost: the messages stay planned
