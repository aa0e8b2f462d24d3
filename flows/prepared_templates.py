"""Email templates prepared once, so each message costs little more than its renders.

Much of what turns a rendered HTML body into an email is the same for every recipient:
the partials it includes, the CSS inlined into its tags, the plain-text version, which of
its links get UTM parameters. Contact data is escaped and can never add a tag, so all of
that can be worked out on the template source instead of on every rendered message:

1. `{% include "..." %}` of a fixed name is replaced by the included source;
2. links are routed through the `tracked` filter, which adds UTM parameters at render time;
3. every Jinja tag is swapped for an opaque placeholder, the CSS is inlined over that
   skeleton, and the plain text is derived from it with the same `html_to_text` as ever;
4. the placeholders are put back, giving an HTML and a text template.

Each step checks its own result (every Jinja tag survives once and in order; no tag ends up
inside CSS or an attribute that selectors read) and gives up when it cannot be sure; a
template it gives up on is rendered the per-message way, with identical output. Errors
never come from a prepared template: `flows.rendering` renders the originals again so the
message names the template file and line a person wrote."""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import Template, pass_context
from jinja2.runtime import Context, new_context
from jinja2.sandbox import SandboxedEnvironment

from flows.email_html import add_utm_cached, html_to_text, inline_css

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_INCLUDE = re.compile(r"""\{%-?\s*include\s+(["'])([^"'{}]+)\1\s*-?%\}""")
_OTHER_TEMPLATES = re.compile(r"\{%-?\s*(include|extends|import|from)\b")
_EXPRESSION = re.compile(r"\{\{(-?)(.*?)(-?)\}\}", re.DOTALL)
_HREF_EXPRESSION = re.compile(r'(\bhref=")(\{\{-?)(.*?)(-?\}\})(")', re.IGNORECASE | re.DOTALL)
_HREF_LITERAL = re.compile(r'(\bhref=")(https?://[^"{}]+)(")', re.IGNORECASE)
_PLACEHOLDER = re.compile(r"ABMJ(\d{5})Z")
_IN_TAG = re.compile(r"<[^>]*?ABMJ\d{5}Z[^>]*>")
_SAFE_IN_TAG = re.compile(r'\bhref="ABMJ\d{5}Z"', re.IGNORECASE)
_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_WHITESPACE = re.compile(r"\s+")
UTM_KEY = "__abm_utm__"
_UNTIDY = ("  ", " \n", "\n ", "\n\n\n", "\t")


@dataclass(frozen=True)
class LinkTags:
    """What `tracked` adds to a link in one message: parameters, domains, a URL to skip."""

    params: tuple[tuple[str, str], ...]
    domains: tuple[str, ...]
    skip: str


@pass_context
def tracked(context: Context, url: Any) -> str:
    """A link with this message's UTM parameters (none outside the campaign's domains,
    none on the unsubscribe link)."""
    url = str(url)
    tags = context.get(UTM_KEY)
    if not tags or not tags.params or url == tags.skip or not url.startswith("http"):
        return url
    return add_utm_cached(url, tags.params, tags.domains)


def _collapse(value: Any) -> Any:
    """Values in the derived text part lose runs of whitespace, as they do in HTML."""
    if isinstance(value, str) and not (value.isprintable() and "  " not in value):
        return _WHITESPACE.sub(" ", value)
    return value


@dataclass(frozen=True)
class PreparedEmail:
    """The HTML body with CSS inlined and its text part, ready to render."""

    html: Template
    text: Template

    def render_html(self, context: dict[str, Any]) -> str:
        return render_quick(self.html, context)

    def render_text(self, context: dict[str, Any]) -> str:
        """The derived text, tidied as `html_to_text` tidies: single spaces, no blank runs.
        The source is tidy already; only values and empty blocks can untidy it."""
        text = render_quick(self.text, context)
        if any(mark in text for mark in _UNTIDY):
            lines = (line.strip() for line in _SPACES.sub(" ", text).split("\n"))
            text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"
        return text


@lru_cache(maxsize=1024)
def _globals(template: Template) -> dict[str, Any]:
    return dict(template.globals)


def render_quick(template: Template, values: dict[str, Any]) -> str:
    """`template.render(values)` minus the two passes over Jinja's globals it makes on every
    call (a third of a small template's time): they are merged into `values` from a copy
    made once. Errors come out without Jinja's traceback rewriting; callers render the
    original again to report them."""
    values = {**_globals(template), **values}
    context = new_context(template.environment, template.name, template.blocks, values, True)
    return "".join(template.root_render_func(context))


class CannotPrepare(Exception):
    """This template keeps the per-message path (the reason is for tests and debugging)."""


def flatten(env: SandboxedEnvironment, name: str, seen: tuple[str, ...] = ()) -> str:
    """The template's source with every fixed-name include replaced by its source."""
    if name in seen:
        raise CannotPrepare(f"{name} includes itself")
    source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]

    def include(found: re.Match[str]) -> str:
        return flatten(env, found.group(2), (*seen, name))

    source = _INCLUDE.sub(include, source)
    if _OTHER_TEMPLATES.search(source):
        raise CannotPrepare(f"{name} includes, extends or imports by a computed name")
    return source


def _jinja_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def route_links(source: str) -> str:
    """Every `href` goes through `tracked`: literal URLs and expressions alike."""

    def expression(found: re.Match[str]) -> str:
        opening, inner, closing = found.group(2), found.group(3), found.group(4)
        return f"{found.group(1)}{opening} ({inner.strip()}) | tracked {closing}{found.group(5)}"

    def literal(found: re.Match[str]) -> str:
        url = _jinja_string(html_lib.unescape(found.group(2)))
        return f"{found.group(1)}{{{{ {url} | tracked }}}}{found.group(3)}"

    return _HREF_LITERAL.sub(literal, _HREF_EXPRESSION.sub(expression, source))


def _skeleton(source: str) -> tuple[str, list[str]]:
    if _PLACEHOLDER.search(source):
        raise CannotPrepare("the source already contains a placeholder-like word")
    tags: list[str] = []

    def hide(found: re.Match[str]) -> str:
        tags.append(found.group(0))
        return f"ABMJ{len(tags) - 1:05d}Z"

    return _JINJA.sub(hide, source), tags


def _restore(skeleton: str, tags: list[str], *, every_tag: bool) -> str:
    order = [int(number) for number in _PLACEHOLDER.findall(skeleton)]
    expected = list(range(len(tags)))
    kept = [n for n in expected if tags[n].startswith("{%")]
    if every_tag and order != expected:
        raise CannotPrepare("a Jinja tag moved or vanished (HTML parsers move text in tables)")
    if not every_tag and [n for n in order if tags[n].startswith("{%")] != kept:
        raise CannotPrepare("a Jinja block tag sits where the text part drops it")
    return _PLACEHOLDER.sub(lambda found: tags[int(found.group(1))], skeleton)


def prepare_sources(env: SandboxedEnvironment, name: str) -> tuple[str, str]:
    """The HTML and text template sources for one HTML template (or CannotPrepare)."""
    skeleton, tags = _skeleton(route_links(flatten(env, name)))
    for tag in _IN_TAG.findall(skeleton):
        if _PLACEHOLDER.search(_SAFE_IN_TAG.sub("", tag)):
            raise CannotPrepare(f"a Jinja tag inside an HTML tag: {tag[:60]}")
    if re.search(r"<style\b[^>]*>[^<]*ABMJ", skeleton, re.IGNORECASE):
        raise CannotPrepare("a Jinja tag inside CSS")
    html_skeleton = inline_css(skeleton)
    html = _restore(html_skeleton, tags, every_tag=True)
    text_skeleton = html_to_text(html_skeleton)
    if any(mark in _PLACEHOLDER.sub("", text_skeleton) for mark in ("{{", "{%", "{#")):
        raise CannotPrepare("the text part would contain Jinja syntax of its own")
    return html, _restore(text_skeleton, tags, every_tag=False)


@lru_cache(maxsize=8)
def _environments(env: SandboxedEnvironment) -> tuple[SandboxedEnvironment, SandboxedEnvironment]:
    """Sandboxes for prepared sources, which have no file name to pick escaping by: HTML
    always escaped; the derived text never (it is not HTML), its values' whitespace
    collapsed as HTML would show it. Same loader, filters and strictness as `env`."""
    html_env = env.overlay(autoescape=True)
    text_env = env.overlay(autoescape=False, finalize=_collapse)
    return html_env, text_env  # type: ignore[return-value]


@lru_cache(maxsize=512)
def prepared_email(env: SandboxedEnvironment, name: str) -> PreparedEmail | None:
    """The prepared form of one HTML template, or None when it keeps the per-message path."""
    try:
        html, text = prepare_sources(env, name)
    except CannotPrepare:
        return None
    html_env, text_env = _environments(env)
    return PreparedEmail(html=html_env.from_string(html), text=text_env.from_string(text))
