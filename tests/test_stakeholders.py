from pathlib import Path

import pytest

from core.errors import ConfigError
from core.vocabulary import FUNCTIONS, ROLES, SENIORITIES
from stages.committee.titles import TitleClass, classify_title, load_title_table


def seniority(title: str | None) -> str:
    return classify_title(title).seniority


def function(title: str | None) -> str:
    return classify_title(title).function


def role(title: str | None) -> str:
    return classify_title(title).role


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my_titles.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_public_vocabularies_match_the_domain():
    assert SENIORITIES == ("c_level", "vp", "director", "manager", "individual_contributor")
    assert len(FUNCTIONS) == 15 and FUNCTIONS[0] == "executive" and FUNCTIONS[-1] == "other"
    assert ROLES == ("decision_maker", "approver", "specifier", "reviewer", "influencer", "user")


@pytest.mark.parametrize("title", [None, "", "   ", " -- | () "])
def test_a_missing_or_empty_title_is_an_individual_contributor_user(title):
    assert classify_title(title) == TitleClass("individual_contributor", "other", "user")


def test_highest_seniority_in_a_joint_title_wins():
    assert seniority("CFO & COO") == "c_level"
    assert seniority("Director and VP of Sales") == "vp"
    assert seniority("Team Lead / Head of Data") == "director"


def test_first_function_named_in_a_joint_title_wins():
    assert classify_title("CFO & COO") == TitleClass("c_level", "finance", "approver")
    assert function("COO & CFO") == "operations"
    assert function("Head of Finance & IT") == "finance"


@pytest.mark.parametrize("title", ["CFO&COO", "CFO / COO", "CFO and COO", "CFO + COO"])
def test_ampersand_slash_and_and_all_join_two_roles(title):
    assert classify_title(title) == TitleClass("c_level", "finance", "approver")


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Sr. Dir, IT Infrastructure", ("director", "it", "specifier")),
        ("VP, Eng.", ("vp", "engineering", "decision_maker")),
        ("V.P. Sales", ("vp", "sales", "decision_maker")),
        ("Sr Mgr, DevOps", ("manager", "engineering", "specifier")),
        ("SVP Mktg", ("vp", "marketing", "decision_maker")),
        ("Dir. of Ops", ("director", "operations", "influencer")),
        ("Chief Revenue Officer", ("c_level", "sales", "decision_maker")),
    ],
)
def test_punctuation_and_abbreviations_are_read_through(title, expected):
    assert classify_title(title) == TitleClass(*expected)


@pytest.mark.parametrize(
    ("title", "plain"),
    [
        ("Head of Procurement (EMEA)", "Head of Procurement"),
        ("Head of Sales - DACH", "Head of Sales"),
        ("Director of Marketing | Global", "Director of Marketing"),
        ("VP Engineering, North America", "VP Engineering"),
    ],
)
def test_region_suffixes_and_parentheses_change_nothing(title, plain):
    assert classify_title(title) == classify_title(plain)


def test_case_and_extra_whitespace_change_nothing():
    expected = classify_title("Chief Technology Officer")
    assert classify_title("CHIEF TECHNOLOGY OFFICER") == expected
    assert classify_title("  chief   technology\tofficer ") == expected


@pytest.mark.parametrize(
    "title", ["Geschäftsführer", "Geschaftsfuhrer", "Geschaeftsfuehrer", "GESCHÄFTSFÜHRERIN"]
)
def test_accented_and_transliterated_spellings_are_the_same_word(title):
    assert classify_title(title) == TitleClass("c_level", "executive", "approver")


def test_hyphenated_vice_president_and_co_founder_are_read():
    assert seniority("Vice-President") == "vp"
    assert classify_title("Co-Founder") == TitleClass("c_level", "executive", "approver")
    assert seniority("Cofounder & CEO") == "c_level"


def test_a_c_suite_abbreviation_is_not_read_inside_another_word():
    assert classify_title("Director") == TitleClass("director", "other", "influencer")
    assert seniority("Doctor") == "individual_contributor"


def test_it_is_not_read_inside_security():
    assert classify_title("Security Analyst") == TitleClass(
        "individual_contributor", "security", "reviewer"
    )


def test_devops_is_engineering_not_operations():
    assert function("DevOps Engineer") == "engineering"
    assert function("Ops Manager") == "operations"


def test_partner_in_partner_management_titles_is_not_c_level():
    assert classify_title("Channel Partner Manager") == TitleClass("manager", "sales", "influencer")
    assert seniority("Partner Account Manager") == "manager"
    assert seniority("HR Business Partner") == "individual_contributor"
    assert seniority("Talent Acquisition Partner") == "individual_contributor"
    assert seniority("Partner") == "c_level"
    assert seniority("Managing Partner") == "c_level"


def test_president_in_vice_president_is_not_c_level():
    assert classify_title("Vice President") == TitleClass("vp", "other", "influencer")
    assert classify_title("President") == TitleClass("c_level", "executive", "approver")
    assert seniority("Senior Vice President & General Manager") == "vp"


def test_owner_of_a_product_or_process_is_not_an_owner_of_the_business():
    assert classify_title("Product Owner") == TitleClass(
        "individual_contributor", "product", "user"
    )
    assert seniority("Process Owner") == "individual_contributor"
    assert classify_title("Owner") == TitleClass("c_level", "executive", "approver")


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("CEO", "executive"),
        ("CFO", "finance"),
        ("CTO", "engineering"),
        ("CIO", "it"),
        ("CISO", "security"),
        ("CDO", "data"),
        ("CMO", "marketing"),
        ("CRO", "sales"),
        ("CPO", "product"),
        ("CHRO", "hr"),
        ("CCO", "customer_success"),
        ("COO", "operations"),
        ("Chief Procurement Officer", "procurement"),
        ("Chief People Officer", "hr"),
        ("Chief Legal Officer", "legal"),
        ("Chief Information Security Officer", "security"),
        ("Chief Information Officer", "it"),
        ("Chief Operating Officer", "operations"),
    ],
)
def test_chief_officers_are_c_level_in_their_own_function(title, expected):
    assert classify_title(title).seniority == "c_level"
    assert classify_title(title).function == expected


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Deputy CFO", "vp"),
        ("General Manager", "vp"),
        ("AVP, IT", "director"),
        ("Assistant Vice President", "director"),
        ("Head of Data", "director"),
        ("Managing Director", "c_level"),
        ("Directora General", "c_level"),
        ("Assistant Director", "manager"),
        ("Associate Director, Procurement", "manager"),
        ("Tech Lead", "manager"),
        ("Principal Engineer", "individual_contributor"),
        ("Chief of Staff", "individual_contributor"),
    ],
)
def test_seniority_follows_the_convention(title, expected):
    assert seniority(title) == expected


def test_executive_assistants_work_in_operations_and_do_not_borrow_their_bosss_rank():
    assert classify_title("Executive Assistant to the CEO") == TitleClass(
        "individual_contributor", "operations", "user"
    )
    assert seniority("Chief of Staff to the CEO") == "individual_contributor"


def test_a_job_noun_names_the_function_only_when_no_area_is_named():
    assert function("Analyst, Finance") == "finance"
    assert function("Analyst") == "data"
    assert function("Sales Engineer") == "sales"
    assert function("Engineer") == "engineering"


def test_lead_generation_is_marketing_not_a_lead():
    assert classify_title("Lead Generation Specialist") == TitleClass(
        "individual_contributor", "marketing", "user"
    )


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Head of Procurement", "reviewer"),
        ("Legal Counsel", "reviewer"),
        ("VP Finance", "approver"),
        ("Financial Analyst", "influencer"),
        ("CEO", "approver"),
        ("General Manager", "decision_maker"),
        ("Chief of Staff", "influencer"),
        ("VP Security", "decision_maker"),
        ("Security Engineer", "reviewer"),
        ("CTO", "decision_maker"),
        ("Director of Engineering", "specifier"),
        ("Data Engineer", "user"),
        ("VP Marketing", "decision_maker"),
        ("Sales Manager", "influencer"),
        ("Account Executive", "user"),
        ("Partner", "approver"),
        ("Director", "influencer"),
        ("Teacher", "user"),
    ],
)
def test_committee_role_follows_the_first_matching_line_of_the_convention(title, expected):
    assert role(title) == expected


def test_architects_are_specifiers_though_other_engineers_are_users():
    assert role("Enterprise Architect") == "specifier"
    assert role("Solutions Architect") == "specifier"
    assert role("Software Engineer") == "user"


def test_security_architects_stay_reviewers_because_the_security_line_comes_first():
    assert role("Security Architect") == "reviewer"


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Leiter Einkauf", ("director", "procurement", "reviewer")),
        ("Leiterin Entwicklung", ("director", "engineering", "specifier")),
        ("Teamleiter Vertrieb", ("manager", "sales", "influencer")),
        ("Vizepräsident Vertrieb", ("vp", "sales", "decision_maker")),
        ("Directeur des Achats", ("director", "procurement", "reviewer")),
        ("Responsable Marketing", ("manager", "marketing", "influencer")),
        ("Directeur Général", ("c_level", "executive", "approver")),
        ("Jefe de Compras", ("director", "procurement", "reviewer")),
        ("Gerente de Ventas", ("manager", "sales", "influencer")),
        ("Director de Tecnologías de la Información", ("director", "it", "specifier")),
        ("Hoofd Inkoop", ("director", "procurement", "reviewer")),
    ],
)
def test_titles_in_other_languages_are_translated(title, expected):
    assert classify_title(title) == TitleClass(*expected)


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Einkaufsleiter", ("director", "procurement", "reviewer")),
        ("Vertriebsleiterin", ("director", "sales", "influencer")),
        ("Inkoopmanager", ("manager", "procurement", "reviewer")),
    ],
)
def test_german_and_dutch_compounds_are_split(title, expected):
    assert classify_title(title) == TitleClass(*expected)


def test_the_default_table_gives_every_function_and_seniority_a_role():
    table = load_title_table()
    for function_ in FUNCTIONS:
        for level in SENIORITIES:
            rule = next(
                rule
                for rule in table.roles
                if rule.keywords is None
                and (rule.functions is None or function_ in rule.functions)
                and (rule.seniorities is None or level in rule.seniorities)
            )
            assert rule.role in ROLES


def test_repeated_titles_are_answered_from_the_cache_of_the_default_table():
    table = load_title_table()
    assert load_title_table() is table
    classify_title("Head of Widget Procurement 1234", table)
    hits = table._matcher.classify.cache_info().hits
    classify_title("Head of Widget Procurement 1234")
    assert table._matcher.classify.cache_info().hits == hits + 1


def test_override_entries_take_priority_over_the_defaults(tmp_path):
    path = write(
        tmp_path,
        """
expansions:
  kahuna: chief
seniority:
  - level: c_level
    match: ['big kahuna', 'chief']
functions:
  - function: procurement
    match: ['product']
c_suite:
  cpo: procurement
roles:
  - keywords: ['budget (?:owner|holder)']
    role: decision_maker
""",
    )
    table = load_title_table(path)
    assert classify_title("Big Kahuna", table).seniority == "c_level"
    assert classify_title("Product Manager", table).function == "procurement"
    assert classify_title("CPO", table) == TitleClass("c_level", "procurement", "reviewer")
    assert classify_title("Budget Holder, Marketing", table).role == "decision_maker"


def test_an_override_keeps_the_defaults_for_everything_it_does_not_mention(tmp_path):
    table = load_title_table(write(tmp_path, "c_suite:\n  cpo: procurement\n"))
    for title in ("Sr. Dir, IT Infrastructure", "CFO & COO", "Geschäftsführer", "Teacher"):
        assert classify_title(title, table) == classify_title(title)
    assert classify_title("CPO") == TitleClass("c_level", "product", "decision_maker")


def test_an_empty_override_file_changes_nothing(tmp_path):
    table = load_title_table(write(tmp_path, ""))
    assert classify_title("VP, Eng.", table) == classify_title("VP, Eng.")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("seniority:\n  - level: boss\n    match: [big cheese]\n", "seniority[0].level"),
        ("functions:\n  - function: sales\n    match: ['sales(']\n", "functions[0].match[0]"),
        ("functions:\n  - function: sales\n    match: ['Sales']\n", "functions[0].match[0]"),
        ("functions:\n  - function: sales\n    match: ['x*']\n", "functions[0].match[0]"),
        ("roles:\n  - role: boss\n", "roles[0].role"),
        ("roles:\n  - role: user\n    colour: red\n", "roles[0].colour"),
        ("c_suite:\n  cxo: everything\n", "c_suite.cxo"),
        ("expansions:\n  vice president: vp\n", "expansions.vice president"),
        ("titles: []\n", "titles"),
    ],
)
def test_a_bad_override_file_is_rejected_naming_the_file_and_the_field(tmp_path, text, field):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_title_table(path)
    message = str(caught.value)
    assert "my_titles.yaml" in message
    assert field in message


def test_an_override_file_that_is_not_yaml_is_rejected_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"my_titles\.yaml:\d+: not valid YAML"):
        load_title_table(write(tmp_path, "seniority: [unclosed\n"))


def test_a_missing_override_file_is_rejected_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere\.yaml"):
        load_title_table(tmp_path / "nowhere.yaml")


def test_committee_coverage_counts_reachable_contacts_in_the_campaigns_role_order(engine):
    from sqlalchemy import update

    from models.db import session_scope
    from models.store import account_ids_by_domain, upsert_accounts, upsert_contacts
    from models.tables import Contact
    from stages.committee.coverage import Coverage, classify_contacts, committee_coverage

    domains = ["full.example", "half.example", "none.example", "empty.example"]
    upsert_accounts(engine, [{"domain": d, "attributes": {}, "technologies": []} for d in domains])
    people = [
        ("cfo@full.example", "CFO"),
        ("cto@full.example", "CTO"),
        ("eng@full.example", "Solutions Architect"),
        ("cfo@half.example", "CFO"),
        ("cto@half.example", "CTO"),
        ("intern@none.example", "Marketing Intern"),
    ]
    upsert_contacts(
        engine,
        [
            {"email": email, "account_domain": email.split("@")[1], "title": title}
            | {"attributes": {}}
            for email, title in people
        ],
    )
    with session_scope(engine) as session:  # not reachable: half.example has no decision maker
        session.execute(
            update(Contact).where(Contact.email == "cto@half.example").values(status="unsubscribed")
        )
    ids = account_ids_by_domain(engine, domains)
    classify_contacts(engine, None)
    required = ["decision_maker", "approver", "specifier", "approver"]
    found = committee_coverage(engine, [ids[d] for d in domains], required)
    roles = ("decision_maker", "approver", "specifier")
    assert found[ids["full.example"]] == Coverage(roles, ())
    assert found[ids["half.example"]] == Coverage(("approver",), ("decision_maker", "specifier"))
    assert found[ids["none.example"]] == found[ids["empty.example"]] == Coverage((), roles)


def test_classifying_writes_changes_in_batches_and_counts_them_all(engine, monkeypatch):
    from sqlalchemy import select

    import stages.committee.coverage
    from models.db import session_scope
    from models.store import upsert_accounts, upsert_contacts
    from models.tables import Contact
    from stages.committee.coverage import classify_contacts

    upsert_accounts(engine, [{"domain": "a.example", "attributes": {}, "technologies": []}])
    titles = ["CFO", "CTO", "Solutions Architect", "Marketing Intern", "VP Sales"]
    upsert_contacts(
        engine,
        [
            {"email": f"p{i}@a.example", "account_domain": "a.example", "title": title}
            | {"attributes": {}}
            for i, title in enumerate(titles)
        ],
    )
    monkeypatch.setattr(stages.committee.coverage, "CLASSIFY_BATCH", 2)
    assert classify_contacts(engine, None) == 5
    with session_scope(engine) as session:
        stored = dict(session.execute(select(Contact.title, Contact.role)).all())
    assert stored == {title: classify_title(title).role for title in titles}
    assert classify_contacts(engine, None) == 0  # nothing left to change
