"""Deterministic, realistic demo dataset: accounts and their buying committees.

The demo (``abm demo``), the tests and the benchmark all need data that looks like a real
CRM export (messy titles, unicode names, odd number formats, a few bad rows) without ever
pointing at a real company: every account domain is under the reserved ``.example`` TLD.
Everything is drawn from one ``random.Random(seed)``, so the same arguments always give
byte-identical files.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import random
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ACCOUNT_COLUMNS",
    "BAD_CONTACT_ROWS",
    "CONTACT_COLUMNS",
    "generate",
    "write_demo_csvs",
]

ACCOUNT_COLUMNS: tuple[str, ...] = (
    "domain",
    "name",
    "industry",
    "employees",
    "annual_revenue",
    "country",
    "technologies",
    "tier",
)
CONTACT_COLUMNS: tuple[str, ...] = (
    "email",
    "first_name",
    "last_name",
    "title",
    "account_domain",
    "linkedin_url",
    "country",
    "timezone",
    "consent",
)
# Rows appended after the ``contacts`` good ones, so the demo shows how rejects are reported.
BAD_CONTACT_ROWS = 3

TLD = ".example"


def _bar(text: str) -> tuple[str, ...]:
    """Split a ``|``-separated word list (kept as one string so it stays compact)."""
    return tuple(
        unicodedata.normalize("NFC", word.strip()) for word in text.split("|") if word.strip()
    )


class _Weighted:
    """A weighted choice with precomputed cumulative weights (fast for 100k+ draws)."""

    __slots__ = ("_cum", "_items", "_total")

    def __init__(self, pairs: Sequence[tuple[Any, float]]) -> None:
        self._items = [item for item, _ in pairs]
        self._cum = list(itertools.accumulate(weight for _, weight in pairs))
        self._total = self._cum[-1]

    def pick(self, rng: random.Random) -> Any:
        return self._items[bisect.bisect(self._cum, rng.random() * self._total)]


def _one(rng: random.Random, items: Sequence[Any]) -> Any:
    """Uniform choice with one ``random()`` call: ~5x cheaper than ``Random.choice``."""
    return items[int(rng.random() * len(items))]


# --------------------------------------------------------------------------------------
# Firmographics
# --------------------------------------------------------------------------------------

# industry -> (weight, revenue per employee in USD, name nouns)
_INDUSTRIES: dict[str, tuple[float, int, tuple[str, ...]]] = {
    "Software": (
        18,
        230_000,
        _bar("Software | Labs | Systems | Cloud | Analytics | Digital | Technologies | AI"),
    ),
    "Manufacturing": (
        14,
        300_000,
        _bar(
            "Manufacturing | Robotics | Industries | Components | Precision | Automation"
            " | Materials | Tooling"
        ),
    ),
    "Financial Services": (
        11,
        450_000,
        _bar("Capital | Financial | Bank | Insurance | Payments | Credit | Wealth | Lending"),
    ),
    "Healthcare": (
        10,
        160_000,
        _bar("Health | Medical | Care | Diagnostics | Therapeutics | Clinics | Biotech"),
    ),
    "Retail": (
        8,
        250_000,
        _bar("Retail | Outfitters | Goods | Market | Stores | Home | Apparel | Grocers"),
    ),
    "Logistics": (
        6,
        220_000,
        _bar("Logistics | Freight | Shipping | Transport | Cargo | Distribution | Express"),
    ),
    "Telecommunications": (
        4,
        500_000,
        _bar("Telecom | Networks | Communications | Mobile | Fiber | Broadband | Wireless"),
    ),
    "Energy": (
        5,
        900_000,
        _bar("Energy | Power | Solar | Renewables | Utilities | Wind | Grid | Hydro"),
    ),
    "Education": (
        5,
        90_000,
        _bar("Learning | Academy | Education | University | College | Institute | Schools"),
    ),
    "Professional Services": (
        8,
        170_000,
        _bar("Consulting | Advisory | Partners | Associates | Group | Solutions"),
    ),
    "Media": (
        4,
        280_000,
        _bar("Media | Studios | Publishing | Entertainment | Broadcasting | Press | Creative"),
    ),
    "Construction": (
        3,
        260_000,
        _bar("Construction | Builders | Contractors | Infrastructure | Engineering"),
    ),
    "Automotive": (2, 400_000, _bar("Motors | Automotive | Mobility | Drivetrain")),
    "Hospitality": (2, 80_000, _bar("Hotels | Hospitality | Resorts | Dining")),
}
_INDUSTRY_PICK = _Weighted([(name, spec[0]) for name, spec in _INDUSTRIES.items()])
_NO_LEGAL_SUFFIX = frozenset({"Education"})

# Company-name prefixes: invented compounds ("North" + "wind") plus single words.
_PREFIX_HEADS = _bar(
    """North | Bright | Blue | Silver | Iron | Red | Clear | High | Stone | Oak | Pine | Swift
    | True | Green | Gold | Cedar | Maple | River | Summit | Harbor | West | East | Deep | Star
    | Sun | Moon | Frost | Copper | Amber | Granite"""
)
_PREFIX_TAILS = _bar(
    """wind | line | stone | field | bridge | gate | path | point | crest | wave | ridge | light
    | works | vale | brook | haven | forge | peak | spring | wood | mark | ford | side | view
    | star"""
)
_PREFIX_WORDS = _bar(
    """Kestrel | Falcon | Osprey | Heron | Lynx | Otter | Orion | Atlas | Vega | Nimbus | Cobalt
    | Juniper | Tamarack | Aspen | Larkspur | Meridian | Quantum | Polaris | Helix | Vertex
    | Zephyr | Sable | Tundra | Halcyon | Corvid | Alder | Beacon | Pinnacle | Keystone | Lumen
    | Solstice | Tidewater | Ember | Saffron | Indigo | Marlin | Wren | Bramble | Thistle
    | Foxglove"""
)
_PREFIXES = (
    tuple(h + t for h in _PREFIX_HEADS for t in _PREFIX_TAILS if h[-1] != t[0] and h != t.title())
    + _PREFIX_WORDS
)
# A local flavour for some countries (folded to ASCII in the domain).
_LOCAL_PREFIXES: dict[str, tuple[str, ...]] = {
    "DE": _bar("Löwenstein | Grünfeld | Nordlicht | Elbwerk | Weißdorn | Südhang"),
    "FR": _bar("Bélair | Clairvent | Mistral | Beaurivage | Hélios | Mont-Clair"),
    "ES": _bar("Peñalta | Sierra Azul | Alborada | Brisamar | Solano"),
    "SE": _bar("Åkerlund | Norrsken | Solvik | Björkdal | Fjällvind"),
    "DK": _bar("Søndervang | Fjordlys | Nørreskov"),
    "NL": _bar("Duinwijk | Polderlicht | Zeewind"),
    "JP": _bar("Hikari | Sakura | Fujimi | Kaze | Midori"),
    "IN": _bar("Navya | Akshar | Suryoday | Tarang"),
    "BR": _bar("Ipê | Horizonte | Maré Alta | Jacarandá"),
    "PL": _bar("Wiślany | Złoty Las | Bursztyn"),
    "IT": _bar("Aurelia | Colle Verde | Maestrale"),
}
_PARTNER_SURNAMES = _bar(
    """Harper | Lowe | Whitfield | Ashby | Calloway | Drummond | Everett | Fairchild | Greaves
    | Holloway | Kingsley | Lockhart | Merriweather | Pemberton | Radcliffe | Sinclair
    | Thornton | Waverly | Beaumont | Castellan"""
)
_NAME_DESCRIPTORS = _bar("Group | Holdings | International | Partners | Global | Worldwide")


def _zones(text: str) -> tuple[tuple[str, float], ...]:
    """Parse "Zone/A 45 | Zone/B 25" into weighted time zones."""
    pairs = []
    for item in _bar(text):
        zone, _, weight = item.partition(" ")
        pairs.append((zone, float(weight or 1)))
    return tuple(pairs)


# country -> (weight, legal suffixes, weighted IANA zones, name pool, title language)
_COUNTRIES: dict[str, tuple[float, tuple[str, ...], tuple[tuple[str, float], ...], str, str]] = {
    "US": (
        34,
        _bar("Inc. | LLC | Corp."),
        _zones(
            "America/New_York 45 | America/Chicago 25 | America/Denver 8"
            " | America/Los_Angeles 20 | America/Phoenix 2"
        ),
        "en",
        "en",
    ),
    "GB": (10, _bar("Ltd | plc"), _zones("Europe/London"), "en", "en"),
    "DE": (9, _bar("GmbH | AG | GmbH & Co. KG"), _zones("Europe/Berlin"), "de", "de"),
    "FR": (6, _bar("SAS | SA"), _zones("Europe/Paris"), "fr", "fr"),
    "NL": (4, _bar("B.V. | N.V."), _zones("Europe/Amsterdam"), "nl", "en"),
    "ES": (4, _bar("S.L. | S.A."), _zones("Europe/Madrid 95 | Atlantic/Canary 5"), "es", "es"),
    "SE": (3, _bar("AB"), _zones("Europe/Stockholm"), "nordic", "en"),
    "CA": (
        5,
        _bar("Inc. | Ltd."),
        _zones(
            "America/Toronto 50 | America/Vancouver 25 | America/Edmonton 10"
            " | America/Winnipeg 8 | America/Halifax 7"
        ),
        "en",
        "en",
    ),
    "AU": (
        4,
        _bar("Pty Ltd"),
        _zones(
            "Australia/Sydney 40 | Australia/Melbourne 35 | Australia/Brisbane 15"
            " | Australia/Perth 10"
        ),
        "en",
        "en",
    ),
    "JP": (4, _bar("K.K. | Co., Ltd."), _zones("Asia/Tokyo"), "jp", "en"),
    "IN": (5, _bar("Pvt. Ltd. | Ltd."), _zones("Asia/Kolkata"), "in", "en"),
    "BR": (
        3,
        _bar("Ltda. | S.A."),
        _zones("America/Sao_Paulo 90 | America/Manaus 5 | America/Recife 5"),
        "br",
        "en",
    ),
    "IE": (2, _bar("Ltd | DAC"), _zones("Europe/Dublin"), "en", "en"),
    "IT": (2, _bar("S.p.A. | S.r.l."), _zones("Europe/Rome"), "it", "en"),
    "PL": (2, _bar("Sp. z o.o. | S.A."), _zones("Europe/Warsaw"), "pl", "en"),
    "DK": (1, _bar("A/S | ApS"), _zones("Europe/Copenhagen"), "nordic", "en"),
    "SG": (1, _bar("Pte. Ltd."), _zones("Asia/Singapore"), "sg", "en"),
    "MX": (
        1,
        _bar("S.A. de C.V."),
        _zones("America/Mexico_City 70 | America/Monterrey 20 | America/Tijuana 10"),
        "es",
        "es",
    ),
}
_COUNTRY_PICK = _Weighted([(code, spec[0]) for code, spec in _COUNTRIES.items()])
_TZ_PICK = {code: _Weighted(spec[2]) for code, spec in _COUNTRIES.items()}
_GDPR_COUNTRIES = frozenset({"GB", "DE", "FR", "NL", "ES", "SE", "IE", "IT", "PL", "DK"})

# technology -> (probability for a tiny company, probability for a very large one)
_TECHNOLOGIES: tuple[tuple[str, float, float], ...] = (
    ("Salesforce", 0.25, 0.75),
    ("HubSpot", 0.35, 0.10),
    ("Marketo", 0.03, 0.30),
    ("Snowflake", 0.05, 0.40),
    ("Databricks", 0.02, 0.25),
    ("SAP", 0.01, 0.60),
    ("Oracle NetSuite", 0.12, 0.03),
    ("Workday", 0.02, 0.45),
    ("Okta", 0.10, 0.45),
    ("ServiceNow", 0.02, 0.50),
    ("Slack", 0.45, 0.40),
    ("Zendesk", 0.20, 0.20),
    ("Jira", 0.35, 0.55),
    ("Tableau", 0.05, 0.35),
    ("Twilio", 0.05, 0.15),
)
_CLOUDS = _Weighted([("AWS", 50), ("Azure", 30), ("GCP", 20)])
_OFFICE_SUITES = _Weighted([("Microsoft 365", 60), ("Google Workspace", 40)])

# --------------------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------------------

_FIRST_NAMES: dict[str, tuple[str, ...]] = {
    "en": _bar(
        """James | Olivia | José | Zoë | Priya | Wei | Aaliyah | Mohammed | Chloé | Siobhán
        | Liam | Noah | Emma | Ava | Mateo | Sofia | Hannah | Ethan | Grace | Jamal | Aisha
        | Kenji | Mei | Raj | Ana | Connor | Niamh | Oluwaseun | Chidi | Fatima | Renée
        | Daniel | Sarah | Michael | Emily | David | Jessica | Christopher | Ashley | Matthew
        | Megan | Ryan | Lauren | Tyler | Rachel | Brandon | Nicole | Kevin | Amanda | Jin-woo
        | Minh | Thảo | Imani | DeShawn | Lucía | Andrés | Tomás | Eilidh | Rhys | Seán
        | Bethany | Harriet | Oliver | Isla | Callum | Amelia | Arjun | Yasmin | Chen | Mia
        | Jack"""
    ),
    "de": _bar(
        """Lukas | Jürgen | Anna | Lena | Maximilian | Jörg | Björn | Katharina | Uwe | Sabine
        | Günter | Mia | Felix | Jonas | Leonie | Özlem | Mehmet | Stefanie | Thomas | Andreas
        | Julia | Christian | Annika | Matthias | Käthe | Tobias | Sören | Heike | Florian
        | Lea"""
    ),
    "fr": _bar(
        """Amélie | Chloé | Léa | Camille | Hélène | François | Jérôme | Thibault | Inès | Manon
        | Benoît | Élodie | Noël | Zoë | Mathieu | Julien | Céline | Aurélien | Margaux | Théo
        | Gaëlle | Loïc | Sébastien | Anaïs | Nicolas | Clémence | Yannick | Maëlle"""
    ),
    "es": _bar(
        """José | María | Lucía | Javier | Alejandro | Álvaro | Sofía | Inés | Íñigo | Begoña
        | Raúl | Nuria | Jesús | Pilar | Carmen | Sergio | Marta | Pablo | Andrea | Adrián
        | Elena | Rocío | Ramón | Ximena | Valentina | Joaquín"""
    ),
    "nl": _bar(
        """Daan | Sem | Lotte | Sanne | Bram | Thijs | Femke | Joëlle | Maarten | Anouk | Ruud
        | Floor | Jeroen | Eline | Sven | Noor | Wouter | Iris | Pieter | Fleur"""
    ),
    "nordic": _bar(
        """Søren | Åsa | Björn | Linnéa | Erik | Karin | Lars | Ingrid | Märta | Oskar | Maja
        | Elin | Jörgen | Sven | Freja | Mads | Astrid | Nils | Sofie | Jens | Ebba | Henrik
        | Malin | Rasmus"""
    ),
    "pl": _bar(
        """Łukasz | Małgorzata | Paweł | Agnieszka | Grzegorz | Katarzyna | Michał | Zofia
        | Krzysztof | Joanna | Tomasz | Ewa | Wojciech | Magdalena | Jakub | Anna"""
    ),
    "it": _bar(
        """Giulia | Francesco | Niccolò | Lorenzo | Chiara | Alessandro | Federica | Matteo
        | Sara | Davide | Martina | Andrea | Elisa | Giovanni | Beatrice | Riccardo"""
    ),
    "in": _bar(
        """Priya | Rahul | Ananya | Arjun | Deepika | Vikram | Sneha | Rohan | Kavya | Aditya
        | Lakshmi | Sanjay | Meera | Karthik | Pooja | Nikhil | Divya | Amit | Shreya
        | Varun"""
    ),
    "br": _bar(
        """João | Ana | Luís | Gabriela | Thiago | Camila | Rafael | Letícia | Márcio | Beatriz
        | Caio | Júlia | Conceição | Lucas | Fernanda | André | Larissa | Vinícius | Mariana
        | Sebastião"""
    ),
    "sg": _bar(
        """Wei Ling | Jun Jie | Siti | Muhammad | Priya | Darren | Hui Min | Marcus | Nurul
        | Kai Xin | Ravi | Shu Fen | Aloysius | Xin Yi"""
    ),
}
_LAST_NAMES: dict[str, tuple[str, ...]] = {
    "en": _bar(
        """Smith | Johnson | Williams | Brown | Garcia | Nguyễn | Martínez | Patel | Kim
        | O'Brien | Müller | Chen | Singh | Okafor | Rodríguez | Thompson | Walker | MacDonald
        | Taylor | Davies | Evans | Wilson | Hughes | Kowalski | Lefèvre | Jones | Miller
        | Davis | Anderson | Jackson | White | Harris | Clark | Lewis | Robinson | Young | Allen
        | Wright | Scott | Green | Baker | Adams | Nelson | Hill | Campbell | Mitchell
        | Roberts | Carter | Phillips | Turner | Trần | Lê | Park | Choi | Wang | Li | Zhang
        | Hernández | López | González | Adeyemi | Mensah | Murphy | Ó Súilleabháin
        | Fitzgerald | Sørensen | Abernathy-Cole | Al-Sayed | Khan | Cohen"""
    ),
    "de": _bar(
        """Müller | Schmidt | Schneider | Fischer | Weber | Meyer | Wagner | Becker | Schäfer
        | Köhler | Groß | Hoffmann | Krüger | Yılmaz | Weiß | Schröder | Neumann | Schwarz
        | Zimmermann | Braun | Hofmann | Hartmann | Lange | Jäger | Vogel | Günther | Öztürk
        | Bäcker"""
    ),
    "fr": _bar(
        """Martin | Bernard | Dubois | Thomas | Robert | Petit | Durand | Lefèvre | Moreau
        | Girard | Rousseau | Fontaine | Chevalier | Lemaître | Bélanger | Lambert | Bonnet
        | François | Mercier | Guérin | Faure | André | Gauthier | Benoît | Boyer | Lefebvre"""
    ),
    "es": _bar(
        """García | Fernández | González | Rodríguez | López | Martínez | Sánchez | Pérez
        | Gómez | Jiménez | Muñoz | Álvarez | Ibáñez | Peña | Núñez | Romero | Navarro | Torres
        | Domínguez | Vázquez | Ramos | Gil | Serrano | Ortiz | Castillo"""
    ),
    "nl": _bar(
        """de Jong | Jansen | de Vries | van den Berg | van Dijk | Bakker | Visser | Smit
        | Meijer | de Boer | Mulder | van der Meer | Bos | Vos | Peters | Hendriks
        | van Leeuwen | Dekker"""
    ),
    "nordic": _bar(
        """Andersson | Johansson | Karlsson | Nilsson | Eriksson | Larsson | Olsson | Persson
        | Svensson | Gustafsson | Lindström | Åberg | Sjöberg | Öberg | Bergström | Jørgensen
        | Nørgaard | Sørensen | Hansen | Kjær | Mortensen"""
    ),
    "pl": _bar(
        """Kowalski | Nowak | Wiśniewska | Wójcik | Kowalczyk | Kamiński | Lewandowska
        | Zieliński | Szymańska | Woźniak | Dąbrowski | Kozłowska | Jankowski | Mazur
        | Krawczyk | Grabowski"""
    ),
    "it": _bar(
        """Rossi | Russo | Ferrari | Esposito | Bianchi | Romano | Colombo | Ricci | D'Angelo
        | Galli | Mancini | Conti | De Luca | Lombardi | Moretti | Barbieri"""
    ),
    "in": _bar(
        """Sharma | Patel | Iyer | Reddy | Nair | Gupta | Singh | Kumar | Mehta | Chatterjee
        | Rao | Desai | Banerjee | Menon | Joshi | Pillai | Kapoor | Bose"""
    ),
    "br": _bar(
        """Silva | Santos | Oliveira | Souza | Pereira | Costa | Rodrigues | Almeida | Gonçalves
        | Araújo | Ribeiro | Carvalho | Lima | Fernandes | Magalhães | Conceição | Batista
        | Simões"""
    ),
    "sg": _bar(
        """Tan | Lim | Lee | Ng | Wong | Goh | Chua | Rahman | Kumar | Teo | Koh | Ismail | Ong
        | Sim"""
    ),
}
# Japanese names as "written=romanisation" (the romanisation makes the email address).
_JP_FIRST = _bar(
    """翔太=Shota | 陽菜=Hina | 大輔=Daisuke | 美咲=Misaki | 健一=Kenichi | 由美=Yumi
    | 拓也=Takuya | 彩=Aya | 直樹=Naoki | 恵=Megumi | 蓮=Ren | 結衣=Yui | 悠斗=Yuto
    | さくら=Sakura | 誠=Makoto | 花子=Hanako"""
)
_JP_LAST = _bar(
    """佐藤=Sato | 鈴木=Suzuki | 高橋=Takahashi | 田中=Tanaka | 伊藤=Ito | 渡辺=Watanabe
    | 山本=Yamamoto | 中村=Nakamura | 小林=Kobayashi | 加藤=Kato | 吉田=Yoshida
    | 山田=Yamada | 松本=Matsumoto | 井上=Inoue"""
)

_FOLD = str.maketrans(
    {
        "ø": "o",
        "Ø": "O",
        "ł": "l",
        "Ł": "L",
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "đ": "d",
        "Đ": "D",
        "ı": "i",
        "þ": "th",
        "Þ": "Th",
        "ð": "d",
    }
)
_NOT_EMAIL_CHARS = re.compile(r"[^a-z0-9-]+")
_NOT_SLUG_CHARS = re.compile(r"[^a-z0-9]+")


def _fold(text: str) -> str:
    """ASCII-fold ("Łukasz Nguyễn" -> "Lukasz Nguyen") for email addresses and domains."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _email_part(name: str) -> str:
    return _NOT_EMAIL_CHARS.sub("", _fold(name).lower()).strip("-")


def _slug(name: str) -> str:
    return _NOT_SLUG_CHARS.sub("-", _fold(name).lower()).strip("-")


def _pool(names: Sequence[str]) -> list[tuple[str, str]]:
    """(written name, ASCII email part) pairs; "佐藤=Sato" takes the part after "="."""
    pairs = []
    for name in names:
        written, _, romanised = name.partition("=")
        pairs.append((written, _email_part(romanised or written)))
    return pairs


# pool -> ((written, ascii) first names, (written, ascii) last names)
_NAMES: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    pool: (_pool(_FIRST_NAMES[pool]), _pool(_LAST_NAMES[pool])) for pool in _FIRST_NAMES
}
_JP_NAMES = (_pool(_JP_FIRST), _pool(_JP_LAST))
_JP_ROMAJI = (
    [(a.title(), a) for _, a in _JP_NAMES[0]],
    [(a.title(), a) for _, a in _JP_NAMES[1]],
)

# --------------------------------------------------------------------------------------
# Job titles: function -> seniority level -> titles. Levels: c (C-suite, founders, owners),
# vp, dir (director / head of), mgr (manager / lead), ic (individual contributor).
# --------------------------------------------------------------------------------------

_LEVELS = ("c", "vp", "dir", "mgr", "ic")
_TITLES: dict[str, dict[str, tuple[str, ...]]] = {
    "executive": {
        "c": _bar(
            """CEO | Chief Executive Officer | Founder & CEO | Co-Founder & CEO | President
            | President & CEO | Managing Director | Owner | Founder | Co-Founder
            | Managing Partner | CEO & Co-Founder"""
        ),
        "vp": _bar(
            """General Manager | General Manager, EMEA | General Manager, North America
            | EVP & General Manager"""
        ),
        "ic": _bar("Chief of Staff | Chief of Staff to the CEO"),
    },
    "finance": {
        "c": _bar("CFO | Chief Financial Officer | CFO & COO | CFO & Treasurer"),
        "vp": _bar(
            """VP Finance | Vice President, Finance | SVP Finance & Administration
            | VP, Financial Planning & Analysis | Deputy CFO | VP, Corporate Controller"""
        ),
        "dir": _bar(
            """Finance Director | Director of Finance | Head of Finance | Head of FP&A
            | Director, Tax | Sr. Director, Finance Operations | Head of Treasury"""
        ),
        "mgr": _bar(
            """Finance Manager | FP&A Manager | Senior Finance Manager | Accounting Manager
            | Treasury Manager | Accounts Payable Supervisor"""
        ),
        "ic": _bar(
            """Financial Analyst | Senior Financial Analyst | FP&A Analyst | Accountant
            | Senior Accountant | Staff Accountant | Tax Specialist | Internal Auditor
            | Financial Controller | Controller"""
        ),
    },
    "engineering": {
        "c": _bar("CTO | Chief Technology Officer | Co-Founder & CTO"),
        "vp": _bar(
            """VP Engineering | VP Eng | SVP Engineering | VP, Platform Engineering
            | VP of Software Development | VP R&D"""
        ),
        "dir": _bar(
            """Director of Engineering | Engineering Director | Head of Engineering
            | Head of Platform | Sr. Director, Engineering | Director, DevOps | Head of R&D
            | Director of Quality Engineering"""
        ),
        "mgr": _bar(
            """Engineering Manager | Software Engineering Manager | Sr. Engineering Manager
            | Tech Lead | Team Lead, Backend | DevOps Manager | QA Manager | SRE Lead"""
        ),
        "ic": _bar(
            """Software Engineer | Senior Software Engineer | Staff Engineer | Principal Engineer
            | Backend Developer | Frontend Developer | Full Stack Developer | DevOps Engineer
            | Site Reliability Engineer | QA Engineer | Software Architect | Solutions Architect
            | Platform Engineer | Embedded Software Engineer | Sr. SWE"""
        ),
    },
    "it": {
        "c": _bar("CIO | Chief Information Officer"),
        "vp": _bar(
            """VP IT | VP, Information Technology | SVP, IT & Digital
            | VP Infrastructure & Operations | VP Enterprise Applications"""
        ),
        "dir": _bar(
            """IT Director | Director of IT | Head of IT | Sr. Dir, IT Infrastructure
            | Director, Enterprise Applications | Head of IT Operations
            | Director, End User Computing | Head of Infrastructure"""
        ),
        "mgr": _bar(
            """IT Manager | Infrastructure Manager | Service Desk Manager | Network Manager
            | IT Operations Manager | Enterprise Applications Manager | CRM Systems Lead"""
        ),
        "ic": _bar(
            """Systems Administrator | Network Engineer | IT Specialist | Cloud Engineer
            | Systems Engineer | IT Support Analyst | Salesforce Administrator
            | Enterprise Architect | SAP Basis Consultant | Service Desk Analyst"""
        ),
    },
    "security": {
        "c": _bar("CISO | Chief Information Security Officer | Chief Security Officer"),
        "vp": _bar("VP Security | VP, Information Security | Deputy CISO"),
        "dir": _bar(
            """Director of Security | Head of Information Security | Director, Cyber Security
            | Head of GRC | Director, Security Operations"""
        ),
        "mgr": _bar(
            """Security Manager | SOC Manager | IT Security Manager | GRC Manager
            | Security Engineering Lead"""
        ),
        "ic": _bar(
            """Security Engineer | Security Analyst | Cybersecurity Analyst | Security Architect
            | Penetration Tester | GRC Analyst | Information Security Specialist
            | Cloud Security Engineer"""
        ),
    },
    "data": {
        "c": _bar("Chief Data Officer | CDO | Chief Data & Analytics Officer"),
        "vp": _bar("VP Data | VP, Data & Analytics | VP of Data Science | VP, AI"),
        "dir": _bar(
            """Head of Data | Director of Analytics | Director, Data Engineering
            | Head of Business Intelligence | Head of Data Science
            | Director, Machine Learning"""
        ),
        "mgr": _bar(
            """Analytics Manager | Data Engineering Manager | BI Manager | Data Science Manager
            | Lead Data Scientist"""
        ),
        "ic": _bar(
            """Data Engineer | Data Scientist | Senior Data Analyst | Data Analyst | BI Developer
            | Analytics Engineer | Machine Learning Engineer | Data Architect"""
        ),
    },
    "product": {
        "c": _bar("Chief Product Officer | CPO"),
        "vp": _bar("VP Product | VP of Product Management | SVP, Product & Design"),
        "dir": _bar("Director of Product | Head of Product | Head of Design | Director, UX"),
        "mgr": _bar(
            "Product Manager | Senior Product Manager | Group Product Manager | Design Manager"
        ),
        "ic": _bar(
            """Product Owner | Product Designer | UX Designer | UX Researcher
            | Technical Product Owner | Product Analyst"""
        ),
    },
    "operations": {
        "c": _bar("COO | Chief Operating Officer | Chief Supply Chain Officer"),
        "vp": _bar("VP Operations | VP, Supply Chain | SVP Operations | VP Manufacturing"),
        "dir": _bar(
            """Director of Operations | Head of Operations | Plant Director
            | Director, Supply Chain | Head of Logistics | Director of Facilities
            | Head of Business Operations"""
        ),
        "mgr": _bar(
            """Operations Manager | Plant Manager | Supply Chain Manager | Logistics Manager
            | Warehouse Manager | Facilities Manager | Production Supervisor | Fleet Manager"""
        ),
        "ic": _bar(
            """Operations Analyst | Supply Chain Analyst | Logistics Coordinator
            | Operations Specialist | Executive Assistant | Executive Assistant to the CEO
            | Demand Planner"""
        ),
    },
    "marketing": {
        "c": _bar("CMO | Chief Marketing Officer"),
        "vp": _bar(
            """VP Marketing | VP of Demand Generation | SVP, Marketing & Communications
            | VP Brand | VP Growth"""
        ),
        "dir": _bar(
            """Marketing Director | Director of Marketing | Head of Marketing
            | Head of Demand Gen | Director, Product Marketing | Head of Brand
            | Director, Corporate Communications | Head of Digital Marketing
            | Head of Marketing (DACH)"""
        ),
        "mgr": _bar(
            """Marketing Manager | Demand Generation Manager | Product Marketing Manager
            | Content Marketing Manager | Marketing Operations Manager | Field Marketing Manager
            | ABM Manager | Digital Marketing Manager | PR Manager | Events Manager"""
        ),
        "ic": _bar(
            """Marketing Specialist | Marketing Coordinator | Content Strategist
            | SEO Specialist | Growth Marketer | Marketing Analyst | Copywriter
            | Communications Specialist"""
        ),
    },
    "sales": {
        "c": _bar("CRO | Chief Revenue Officer | Chief Sales Officer"),
        "vp": _bar(
            """VP Sales | VP of Sales, North America | SVP Global Sales
            | VP Business Development | VP, Partnerships | VP Revenue Operations"""
        ),
        "dir": _bar(
            """Sales Director | Director of Sales | Head of Sales | Regional Sales Director
            | Head of Business Development | Director, Channel Sales
            | Head of Revenue Operations | Head of Sales (APAC)"""
        ),
        "mgr": _bar(
            """Sales Manager | Regional Sales Manager | Sales Operations Manager
            | Inside Sales Manager | Business Development Manager | Key Account Manager
            | SDR Team Lead"""
        ),
        "ic": _bar(
            """Account Executive | Senior Account Executive | Enterprise Account Executive
            | Sales Development Representative | BDR | SDR | Sales Engineer
            | Revenue Operations Analyst | Inside Sales Representative"""
        ),
    },
    "hr": {
        "c": _bar("CHRO | Chief People Officer | Chief Human Resources Officer"),
        "vp": _bar("VP People | VP Human Resources | SVP, Talent"),
        "dir": _bar(
            """HR Director | Head of People | Director of Talent Acquisition
            | Head of Learning & Development | Director, Total Rewards"""
        ),
        "mgr": _bar(
            """HR Manager | Talent Acquisition Manager | People Operations Manager | L&D Manager
            | Recruiting Lead"""
        ),
        "ic": _bar(
            """HR Business Partner | Recruiter | Technical Recruiter | HR Generalist
            | People Partner | Talent Sourcer | HRIS Analyst"""
        ),
    },
    "customer_success": {
        "c": _bar("Chief Customer Officer"),
        "vp": _bar("VP Customer Success | VP Customer Experience | SVP, Customer Support"),
        "dir": _bar(
            """Director of Customer Success | Head of Customer Success | Head of Support
            | Director, Customer Experience | Head of Implementation"""
        ),
        "mgr": _bar(
            """Customer Success Manager | Support Manager | Customer Service Manager
            | Implementation Manager | Onboarding Lead | CX Manager"""
        ),
        "ic": _bar(
            """Customer Success Specialist | Technical Support Specialist
            | Customer Support Representative | Implementation Consultant
            | Onboarding Specialist"""
        ),
    },
    "procurement": {
        "c": _bar("Chief Procurement Officer"),
        "vp": _bar("VP Procurement | VP, Strategic Sourcing | VP Global Purchasing"),
        "dir": _bar(
            """Head of Procurement | Head of Procurement (EMEA) | Director of Procurement
            | Director, Strategic Sourcing | Head of Vendor Management | Purchasing Director"""
        ),
        "mgr": _bar(
            """Procurement Manager | IT Procurement Manager | Category Manager, IT
            | Sourcing Manager | Purchasing Manager | Vendor Manager
            | Category Manager, Indirect Spend"""
        ),
        "ic": _bar(
            """Buyer | Senior Buyer | Procurement Specialist | Strategic Sourcing Analyst
            | Purchasing Agent | Procurement Analyst"""
        ),
    },
    "legal": {
        "c": _bar("General Counsel | Chief Legal Officer | Chief Compliance Officer"),
        "vp": _bar("VP Legal | Deputy General Counsel | VP, Legal & Compliance"),
        "dir": _bar(
            "Head of Legal | Director of Legal Affairs | Head of Compliance | Director, Privacy"
        ),
        "mgr": _bar(
            """Legal Manager | Contracts Manager | Compliance Manager | Privacy Manager
            | Legal Operations Lead"""
        ),
        "ic": _bar(
            """Legal Counsel | Senior Legal Counsel | Corporate Counsel | Commercial Counsel
            | Paralegal | Contract Specialist | Compliance Analyst | Data Protection Officer"""
        ),
    },
    "other": {
        "mgr": _bar("Project Manager | Program Manager | Strategy Manager | Office Manager"),
        "ic": _bar(
            """Consultant | Senior Consultant | Business Analyst | Project Coordinator | Intern
            | Teacher | Research Associate"""
        ),
    },
}
# Titles in the local language, used for some contacts in DE, FR, ES and MX.
_LOCAL_TITLES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "de": {
        "executive": {
            "c": _bar("Geschäftsführer | Geschäftsführerin | Vorstandsvorsitzender | Inhaber")
        },
        "finance": {
            "c": _bar("Finanzvorstand"),
            "dir": _bar("Leiter Finanzen | Leiterin Controlling | Kaufmännischer Leiter"),
            "mgr": _bar("Teamleiter Buchhaltung"),
            "ic": _bar("Buchhalterin | Bilanzbuchhalter | Controllerin"),
        },
        "it": {
            "dir": _bar("Leiter IT | IT-Leiter | Leiterin IT-Infrastruktur"),
            "mgr": _bar("Teamleiter IT-Betrieb"),
            "ic": _bar("Systemadministrator | IT-Administratorin"),
        },
        "engineering": {
            "dir": _bar("Leiter Softwareentwicklung"),
            "ic": _bar("Softwareentwickler | Softwareentwicklerin"),
        },
        "security": {
            "dir": _bar("Leiter IT-Sicherheit"),
            "ic": _bar("Informationssicherheitsbeauftragter"),
        },
        "data": {"dir": _bar("Leiterin Data & Analytics")},
        "procurement": {
            "dir": _bar("Leiter Einkauf | Einkaufsleiter"),
            "ic": _bar("Einkäufer | Strategischer Einkäufer"),
        },
        "marketing": {"dir": _bar("Leiterin Marketing | Marketingleiter")},
        "sales": {
            "vp": _bar("Vizepräsident Vertrieb"),
            "dir": _bar("Vertriebsleiter | Leiter Vertrieb DACH"),
        },
        "operations": {"dir": _bar("Werksleiter | Leiter Logistik | Leiterin Produktion")},
        "hr": {"dir": _bar("Personalleiterin | Leiter Personal")},
        "legal": {"ic": _bar("Justiziar | Syndikusrechtsanwältin | Datenschutzbeauftragter")},
    },
    "fr": {
        "executive": {
            "c": _bar("Directeur Général | Directrice Générale | Président-Directeur Général")
        },
        "finance": {
            "dir": _bar("Directeur Administratif et Financier | Directrice Financière"),
            "mgr": _bar("Responsable Comptabilité"),
            "ic": _bar("Contrôleur de Gestion | Comptable"),
        },
        "it": {
            "dir": _bar("Directeur des Systèmes d'Information | DSI"),
            "mgr": _bar("Responsable Infrastructure"),
            "ic": _bar("Administrateur Systèmes et Réseaux"),
        },
        "engineering": {
            "dir": _bar("Directeur Technique"),
            "mgr": _bar("Responsable R&D"),
            "ic": _bar("Développeur Full Stack | Ingénieure Logiciel"),
        },
        "security": {"mgr": _bar("Responsable Sécurité des Systèmes d'Information | RSSI")},
        "data": {"mgr": _bar("Responsable Data")},
        "procurement": {
            "dir": _bar("Directeur des Achats"),
            "mgr": _bar("Responsable Achats"),
            "ic": _bar("Acheteuse IT"),
        },
        "marketing": {
            "dir": _bar("Directrice Marketing"),
            "mgr": _bar("Responsable Marketing Digital"),
            "ic": _bar("Chargée de Communication"),
        },
        "sales": {
            "dir": _bar("Directeur Commercial"),
            "mgr": _bar("Responsable Grands Comptes"),
            "ic": _bar("Ingénieur Commercial"),
        },
        "operations": {
            "dir": _bar("Directeur des Opérations | Directeur d'Usine"),
            "mgr": _bar("Responsable Logistique"),
        },
        "hr": {
            "dir": _bar("Directrice des Ressources Humaines | DRH"),
            "mgr": _bar("Responsable Recrutement"),
        },
        "legal": {
            "dir": _bar("Directeur Juridique"),
            "ic": _bar("Juriste d'Entreprise | Délégué à la Protection des Données"),
        },
    },
    "es": {
        "executive": {"c": _bar("Director General | Directora General | Consejero Delegado")},
        "finance": {
            "dir": _bar("Director Financiero | Directora Financiera | Jefe de Contabilidad"),
            "ic": _bar("Controller Financiero | Contable"),
        },
        "it": {
            "dir": _bar("Director de Sistemas | Jefe de Informática"),
            "mgr": _bar("Responsable de Infraestructura IT"),
            "ic": _bar("Administrador de Sistemas"),
        },
        "engineering": {
            "dir": _bar("Director de Ingeniería"),
            "ic": _bar("Desarrollador de Software | Ingeniera de Software"),
        },
        "security": {"mgr": _bar("Responsable de Ciberseguridad")},
        "data": {"dir": _bar("Director de Datos y Analítica")},
        "procurement": {
            "dir": _bar("Jefe de Compras | Directora de Compras"),
            "ic": _bar("Comprador"),
        },
        "marketing": {
            "dir": _bar("Directora de Marketing"),
            "mgr": _bar("Gerente de Marketing"),
        },
        "sales": {
            "dir": _bar("Director Comercial"),
            "mgr": _bar("Gerente de Ventas"),
            "ic": _bar("Ejecutivo de Cuentas"),
        },
        "operations": {
            "dir": _bar("Director de Operaciones | Jefe de Logística"),
            "mgr": _bar("Gerente de Planta"),
        },
        "hr": {
            "dir": _bar("Directora de Recursos Humanos"),
            "mgr": _bar("Responsable de Selección"),
        },
        "legal": {
            "dir": _bar("Director Jurídico"),
            "ic": _bar("Abogada Interna | Delegado de Protección de Datos"),
        },
    },
}
_LOCAL_TITLE_SHARE = 0.4
_LOCAL_BY_KEY: dict[tuple[str, str, str], tuple[str, ...]] = {
    (lang, function, level): titles
    for lang, by_function in _LOCAL_TITLES.items()
    for function, by_level in by_function.items()
    for level, titles in by_level.items()
}

_TECH_FUNCTIONS = frozenset({"engineering", "it", "data", "product"})
_BUSINESS_FUNCTIONS = frozenset({"marketing", "sales", "operations", "hr", "customer_success"})
_DECIDING_FUNCTIONS = _TECH_FUNCTIONS | _BUSINESS_FUNCTIONS | {"security"}

# Committee slot -> (function distribution, level distribution)
_SLOTS: dict[str, tuple[_Weighted, _Weighted]] = {
    "executive": (_Weighted([("executive", 1)]), _Weighted([("c", 1)])),
    "decision": (
        _Weighted(
            [
                ("engineering", 12),
                ("it", 15),
                ("data", 8),
                ("security", 5),
                ("product", 5),
                ("primary", 55),
            ]
        ),
        _Weighted([("c", 35), ("vp", 65)]),
    ),
    "specifier": (
        _Weighted([("engineering", 35), ("it", 35), ("data", 20), ("product", 10)]),
        _Weighted([("dir", 50), ("mgr", 50)]),
    ),
    "finance": (
        _Weighted([("finance", 1)]),
        _Weighted([("c", 30), ("vp", 15), ("dir", 30), ("mgr", 15), ("ic", 10)]),
    ),
    "technical": (
        _Weighted(
            [("engineering", 30), ("it", 30), ("data", 20), ("security", 12), ("product", 8)]
        ),
        _Weighted([("c", 3), ("vp", 8), ("dir", 20), ("mgr", 29), ("ic", 40)]),
    ),
    "business": (
        _Weighted(
            [
                ("marketing", 35),
                ("sales", 25),
                ("operations", 20),
                ("customer_success", 10),
                ("hr", 10),
            ]
        ),
        _Weighted([("c", 3), ("vp", 8), ("dir", 22), ("mgr", 32), ("ic", 35)]),
    ),
    "procurement": (
        _Weighted([("procurement", 1)]),
        _Weighted([("c", 2), ("vp", 5), ("dir", 35), ("mgr", 35), ("ic", 23)]),
    ),
    "legal": (
        _Weighted([("legal", 1)]),
        _Weighted([("c", 20), ("vp", 10), ("dir", 20), ("mgr", 15), ("ic", 35)]),
    ),
    "filler": (
        _Weighted(
            [
                ("engineering", 14),
                ("it", 12),
                ("data", 8),
                ("security", 5),
                ("product", 6),
                ("marketing", 12),
                ("sales", 12),
                ("operations", 10),
                ("hr", 5),
                ("customer_success", 7),
                ("finance", 5),
                ("other", 4),
            ]
        ),
        _Weighted([("c", 1), ("vp", 4), ("dir", 12), ("mgr", 30), ("ic", 53)]),
    ),
}
# Committee gaps planted on purpose: the account gets nobody who would fill that role.
_GAPS = ("approver", "specifier", "decision_maker")
_GAP_SHARE = 0.06
_BUSINESS_PICK = _SLOTS["business"][0]


def _violates_gap(gap: str, function: str, level: str, title: str) -> bool:
    """True when a drawn title would fill the committee role this account must lack."""
    if gap == "approver":
        return (function == "finance" and level in ("c", "vp", "dir")) or (
            function == "executive" and level == "c"
        )
    if gap == "specifier":
        return function in _TECH_FUNCTIONS and (level in ("dir", "mgr") or "Architect" in title)
    if function == "executive":
        return level in ("vp", "dir")
    return level in ("c", "vp") and function in _DECIDING_FUNCTIONS


# --------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------


def _account_sizes(rng: random.Random, contacts: int) -> list[int]:
    """Contacts per account: 4..18, about 10 on average, summing exactly to ``contacts``."""
    if contacts < 4:
        return [contacts] if contacts > 0 else []
    sizes: list[int] = []
    remaining = contacts
    while remaining > 0:
        size = min(remaining, round(rng.triangular(4, 18, 8)))
        leftover = remaining - size
        if 0 < leftover < 4:
            size = remaining if remaining <= 18 else remaining - 4
        sizes.append(size)
        remaining -= size
    return sizes


def _round_sig(value: float, digits: int) -> int:
    if value <= 0:
        return 0
    scale = 10 ** max(0, math.floor(math.log10(value)) - digits + 1)
    return int(round(value / scale) * scale)


def _employees(rng: random.Random) -> int:
    """Log-normal head count (median ~800, 15..60,000): many mid-size, few giants."""
    raw = min(60_000.0, max(15.0, math.exp(rng.gauss(math.log(800), 1.45))))
    if raw < 200:
        return int(raw)
    return _round_sig(raw, 2 if raw < 10_000 else 3)


def _company_name(
    rng: random.Random, industry: str, country: str, taken: set[str]
) -> tuple[str, str]:
    """An invented, unique company name and its ``.example`` domain."""
    nouns = _INDUSTRIES[industry][2]
    local = _LOCAL_PREFIXES.get(country, ())
    base = ""
    for attempt in itertools.count():
        roll = rng.random()
        if industry in ("Professional Services", "Financial Services") and roll < 0.15:
            first, second = rng.sample(_PARTNER_SURNAMES, 2)
            base = f"{first} & {second}"
        else:
            prefix = _one(rng, local) if local and roll < 0.35 else _one(rng, _PREFIXES)
            base = f"{prefix} {_one(rng, nouns)}"
        if attempt >= 8:
            base = f"{base} {rng.choice(_NAME_DESCRIPTORS)}"
        if attempt >= 16:
            base = f"{base} {attempt - 15}"
        if _slug(base) not in taken:
            break
    slug = _slug(base)
    taken.add(slug)
    suffixes = _COUNTRIES[country][1]
    name = base
    if industry not in _NO_LEGAL_SUFFIX and rng.random() < 0.55:
        name = f"{base} {rng.choice(suffixes)}"
    return name, slug + TLD


def _technologies(rng: random.Random, employees: int) -> str:
    size = min(1.0, max(0.0, (math.log10(employees) - 1.2) / 3.6))
    chosen: list[str] = []
    if rng.random() < 0.9:
        chosen.append(_CLOUDS.pick(rng))
        if rng.random() < 0.15:
            second = _CLOUDS.pick(rng)
            if second not in chosen:
                chosen.append(second)
    chosen.append(_OFFICE_SUITES.pick(rng))
    for tech, small, large in _TECHNOLOGIES:
        if rng.random() < small + (large - small) * size:
            chosen.append(tech)
    if "Salesforce" in chosen and "HubSpot" in chosen and rng.random() < 0.7:
        chosen.remove("HubSpot")
    return ";".join(chosen)


def _money(value: int) -> str:
    """A human revenue figure ("$12M", "$1.4B") as found in hand-made spreadsheets."""
    if value >= 1_000_000_000:
        return f"${value / 1e9:.1f}B"
    if value >= 1_000_000:
        return f"${value / 1e6:.0f}M"
    return f"${value / 1e3:.0f}K"


def _make_accounts(rng: random.Random, count: int) -> tuple[list[dict[str, str]], list[int]]:
    """Account rows plus their head counts (the rows get messy formats later)."""
    taken: set[str] = set()
    accounts: list[dict[str, str]] = []
    headcounts: list[int] = []
    for _ in range(count):
        industry = _INDUSTRY_PICK.pick(rng)
        country = _COUNTRY_PICK.pick(rng)
        name, domain = _company_name(rng, industry, country, taken)
        employees = _employees(rng)
        headcounts.append(employees)
        per_head = _INDUSTRIES[industry][1] * math.exp(rng.gauss(0, 0.35))
        revenue = "" if rng.random() < 0.04 else str(_round_sig(employees * per_head, 2))
        technologies = "" if rng.random() < 0.05 else _technologies(rng, employees)
        accounts.append(
            {
                "domain": domain,
                "name": name,
                "industry": industry,
                "employees": str(employees),
                "annual_revenue": revenue,
                "country": country,
                "technologies": technologies,
                "tier": "",
            }
        )
    return accounts, headcounts


def _mess_up(rng: random.Random, accounts: list[dict[str, str]]) -> None:
    """Plant the formats an importer must cope with, and a few manual tier overrides."""
    n = len(accounts)
    if n == 0:
        return
    order = list(range(n))
    rng.shuffle(order)
    scale = n // 200
    big = [i for i in order if int(accounts[i]["employees"]) >= 1000]
    with_revenue = [i for i in order if accounts[i]["annual_revenue"]]
    n_comma, n_k = 2 + scale, 1 + scale
    for i in big[:n_comma]:
        accounts[i]["employees"] = f"{int(accounts[i]['employees']):,}"
    for i in big[n_comma : n_comma + n_k]:
        thousands = int(accounts[i]["employees"]) / 1000
        accounts[i]["employees"] = f"{thousands:.0f}k" if thousands >= 10 else f"{thousands:g}k"
    for i in with_revenue[: 2 + scale]:
        accounts[i]["annual_revenue"] = _money(int(accounts[i]["annual_revenue"]))
    for i in order[: 1 + scale]:
        accounts[i]["domain"] = "https://www." + accounts[i]["domain"]
    for i in order[-rng.choice((2, 3)) :]:
        accounts[i]["tier"] = rng.choice(("1", "1", "2", "3"))


def _committee(rng: random.Random, size: int) -> list[str]:
    """Slots for one account: the classic committee first, then more people around it.

    Executive (approver), a C-level or VP owning the budget area (decision maker), a
    technical director or manager (specifier), finance and the business area; larger
    accounts add technical and business people and sometimes procurement or legal.
    """
    slots = ["executive", "decision", "specifier", "finance", "business"][:size]
    extra = size - len(slots)
    slots += ["technical"] * round(extra * 0.3)
    slots += ["business"] * round(extra * 0.25)
    if size >= 6 and rng.random() < 0.5:
        slots.append("procurement")
    if size >= 8 and rng.random() < 0.3:
        slots.append("legal")
    slots += ["filler"] * (size - len(slots))
    slots = slots[:size]
    rng.shuffle(slots)
    return slots


def _pick_title(
    rng: random.Random,
    slot: str,
    primary: str,
    lang: str,
    small_company: bool,
) -> tuple[str, str, str]:
    functions, levels = _SLOTS[slot]
    function = functions.pick(rng)
    if function == "primary" or (slot == "business" and rng.random() < 0.7):
        function = primary
    by_level = _TITLES[function]
    level = levels.pick(rng)
    if small_company and level == "vp" and slot != "decision" and rng.random() < 0.7:
        level = "dir"
    if level not in by_level:
        level = "ic" if "ic" in by_level else next(lv for lv in _LEVELS if lv in by_level)
    local = _LOCAL_BY_KEY.get((lang, function, level))
    if local and rng.random() < _LOCAL_TITLE_SHARE:
        return function, level, _one(rng, local)
    return function, level, _one(rng, by_level[level])


def _person(rng: random.Random, country: str) -> tuple[str, str, str, str]:
    """(first name, last name, ascii first, ascii last) typical for the country."""
    pool = _COUNTRIES[country][3]
    if pool == "jp":
        firsts, lasts = _JP_NAMES if rng.random() < 0.7 else _JP_ROMAJI
    else:
        firsts, lasts = _NAMES[pool]
    first, first_ascii = _one(rng, firsts)
    last, last_ascii = _one(rng, lasts)
    return first, last, first_ascii, last_ascii


def _consent(rng: random.Random, country: str) -> str:
    roll = rng.random()
    opt_in = 0.2 if country in _GDPR_COUNTRIES else 0.1
    if roll < opt_in:
        return "opt_in"
    return "none" if roll > 0.93 else "legitimate_interest"


def _make_contacts(
    rng: random.Random,
    accounts: list[dict[str, str]],
    headcounts: list[int],
    sizes: list[int],
) -> list[dict[str, str]]:
    count = len(accounts)
    gap_count = max(2, round(count * _GAP_SHARE)) if count >= 10 else 0
    gaps = {i: rng.choice(_GAPS) for i in rng.sample(range(count), gap_count)}
    rows: list[dict[str, str]] = []
    emails: set[str] = set()
    for index, (account, employees, size) in enumerate(
        zip(accounts, headcounts, sizes, strict=True)
    ):
        domain = account["domain"].removeprefix("https://www.")
        home = account["country"]
        home_tz = _TZ_PICK[home].pick(rng)
        primary = _BUSINESS_PICK.pick(rng)
        small = employees < 150
        gap = gaps.get(index)
        used_titles: set[str] = set()
        for slot in _committee(rng, size):
            country = home if rng.random() < 0.85 else _COUNTRY_PICK.pick(rng)
            lang = _COUNTRIES[country][4]
            current = slot
            for attempt in range(40):
                function, level, title = _pick_title(rng, current, primary, lang, small)
                if gap and _violates_gap(gap, function, level, title):
                    if attempt >= 5:
                        current = "filler"
                    continue
                if level in ("c", "vp") and title in used_titles:
                    continue
                break
            else:
                title = "Marketing Specialist"
            used_titles.add(title)
            first, last, first_ascii, last_ascii = _person(rng, country)
            local = f"{first_ascii}.{last_ascii}"
            email = f"{local}@{domain}"
            suffix = 2
            while email in emails:
                email = f"{local}{suffix}@{domain}"
                suffix += 1
            emails.add(email)
            linkedin = ""
            if rng.random() < 0.7:
                linkedin = (
                    f"https://www.linkedin.com/in/{first_ascii}-{last_ascii}-"
                    f"{rng.getrandbits(28):07x}"
                )
            timezone = ""
            if rng.random() < 0.9:
                same_place = country == home and rng.random() < 0.75
                timezone = home_tz if same_place else _TZ_PICK[country].pick(rng)
            rows.append(
                {
                    "email": email,
                    "first_name": first,
                    "last_name": last,
                    "title": title,
                    "account_domain": domain,
                    "linkedin_url": linkedin,
                    "country": country,
                    "timezone": timezone,
                    "consent": _consent(rng, country),
                }
            )
    return rows


def _bad_contacts(accounts: list[dict[str, str]]) -> list[dict[str, str]]:
    """Exactly three rows an importer must reject, each for a different reason."""
    domains = {a["domain"].removeprefix("https://www.") for a in accounts}
    some_domain = next(iter(sorted(domains)), "demo-company" + TLD)
    unknown = "unlisted-holdings" + TLD
    while unknown in domains:
        unknown = "un" + unknown
    blank = dict.fromkeys(CONTACT_COLUMNS, "")
    return [
        blank
        | {
            "email": f"maria.gomez(at){some_domain}",
            "first_name": "María",
            "last_name": "Gómez",
            "title": "Marketing Manager",
            "account_domain": some_domain,
            "country": "ES",
            "timezone": "Europe/Madrid",
            "consent": "legitimate_interest",
        },
        blank
        | {
            "email": f"lena.vogt@{unknown}",
            "first_name": "Lena",
            "last_name": "Vogt",
            "title": "Head of Operations",
            "account_domain": unknown,
            "country": "DE",
            "timezone": "Europe/Berlin",
            "consent": "legitimate_interest",
        },
        blank
        | {
            # Gmail does not allow hyphens in user names, so this address cannot exist.
            "email": "sam.rivera-demo@gmail.com",
            "first_name": "Sam",
            "last_name": "Rivera",
            "title": "Freelance Consultant",
            "consent": "none",
        },
    ]


def generate(
    contacts: int = 2000, seed: int = 42
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Return (account rows, contact rows) as CSV-ready dicts of strings.

    ``contacts`` good contacts are spread over accounts of 4..18 people (about 10 on
    average) and followed by exactly ``BAD_CONTACT_ROWS`` rows an importer must reject.
    Same arguments, same rows: only ``random.Random(seed)`` is used.
    """
    if contacts < 0:
        raise ValueError("contacts must be >= 0")
    rng = random.Random(seed)
    sizes = _account_sizes(rng, contacts)
    accounts, headcounts = _make_accounts(rng, len(sizes))
    _mess_up(rng, accounts)
    people = _make_contacts(rng, accounts, headcounts, sizes)
    return accounts, people + _bad_contacts(accounts)


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, str]]) -> None:
    """Plain ``csv.writer`` on lists: DictWriter's per-row key check costs ~3x the time."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([row[column] for column in columns] for row in rows)


def write_demo_csvs(directory: Path, contacts: int = 2000, seed: int = 42) -> tuple[Path, Path]:
    """Write ``accounts.csv`` and ``contacts.csv`` into ``directory`` for the importers.

    UTF-8 without BOM, comma-separated, quoted by the csv module where needed; the files
    are byte-identical for the same arguments.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    accounts, people = generate(contacts=contacts, seed=seed)
    accounts_path = directory / "accounts.csv"
    contacts_path = directory / "contacts.csv"
    _write_csv(accounts_path, ACCOUNT_COLUMNS, accounts)
    _write_csv(contacts_path, CONTACT_COLUMNS, people)
    return accounts_path, contacts_path
