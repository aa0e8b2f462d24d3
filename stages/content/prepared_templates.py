"""Email templates prepared once, so each message costs little more than its renders.

Much of what turns a rendered HTML body into an email is the same for every recipient:
the partials it includes, the CSS inlined into its tags, the plain-text version, which of
its links get UTM parameters. Contact data is escaped and can never add a tag, so all of
that can be worked out on the template source instead of on every rendered message:

1. `{% include "..." %}` of a fixed name is replaced by the included source;
2. links are routed through the `tracked` filter, which adds UTM parameters at render time;
3. every Jinja tag is swapped for an opaque placeholder, the CSS is inlined over that
   skeleton, and the plain text is derived from it with the same `html_to_text` as ever;
4. the placeholders are put back, giving an HTML and a text template;
5. both, and a plain subject, are merged into one single-pass template that evaluates each
   expression once per message and returns the values, from which all three are written
   (`SinglePass`), only where that writes exactly what the separate renders would.

Each step checks its own result (every Jinja tag survives once and in order; no tag ends up
inside CSS or an attribute that selectors read) and gives up when it cannot be sure; a
template it gives up on is rendered the per-message way, with identical output. Errors
never come from a prepared template: `stages.content.rendering` renders the originals again so the
message names the template file and line a person wrote."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from jinja2 import Template, TemplateSyntaxError, nodes, pass_context
from jinja2.runtime import Context, new_context
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape

from stages.content.email_html import add_utm_cached, html_to_text, inline_css

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
_JUST_STR = frozenset({str})
_CHUNKS_KEY = "__abm_chunks__"
_BLOCK_WORD = re.compile(r"\{%\s*(\w+)")
_WHITESPACE_CONTROL = re.compile(r"^\{[{%#][-+]|[-+][}%#]\}$")
# What a single-pass template may contain. Its values are worked out once, with
# autoescaping off, and escaped afterwards for the HTML part; that equals what the HTML
# template computes with autoescaping on as long as no value is Markup and nothing
# depends on the autoescape setting. So: block tags that only steer (no macro, call,
# filter or autoescape blocks), filters that return plain values and ignore the setting
# (not `safe`, `e`, `join`, `replace`, `tojson`, `urlize`, `xmlattr`...), and none of
# `lipsum` (Markup, and random), `self` (blocks, rendered as Markup), `cycler` and `joiner`
# (their state would advance once where two renders advanced it apart) or our own keys.
_SINGLE_PASS_BLOCKS = frozenset({"if", "elif", "else", "endif", "for", "endfor", "set"})
_SINGLE_PASS_STATEMENTS = (nodes.Output, nodes.If, nodes.For, nodes.Assign)
_PLAIN_FILTERS = frozenset(
    {
        "abs", "capitalize", "center", "company", "count", "d", "default", "first", "float",
        "format", "int", "last", "length", "lower", "possessive", "round", "string", "title",
        "tracked", "trim", "truncate", "upper", "wordcount",
    }
)  # fmt: skip
_REFUSED_NAMES = frozenset({"lipsum", "self", "cycler", "joiner", UTM_KEY, _CHUNKS_KEY})


class LinkTags(NamedTuple):
    """What `tracked` adds to a link in one message: parameters, domains, a URL to skip.
    (A named tuple: one is made per message, and that is cheaper than a dataclass.)"""

    params: tuple[tuple[str, str], ...]
    domains: tuple[str, ...]
    skip: str


@pass_context
def tracked(context: Context, url: Any) -> str:
    """A link with this message's UTM parameters (none outside the campaign's domains,
    none on the unsubscribe link)."""
    url = str(url)
    tags = context.parent.get(UTM_KEY)  # set by the caller, never by a template
    if not tags or not tags.params or url == tags.skip or not url.startswith("http"):
        return url
    return add_utm_cached(url, tags.params, tags.domains)


def _collapse(value: Any) -> Any:
    """Values in the derived text part lose runs of whitespace, as they do in HTML."""
    if isinstance(value, str) and not (value.isprintable() and "  " not in value):
        return _WHITESPACE.sub(" ", value)
    return value


def _tidy(text: str) -> str:
    """The derived text, tidied as `html_to_text` tidies: single spaces, no blank runs.
    The source is tidy already; only values and empty blocks can untidy it."""
    if "  " in text or " \n" in text or "\n " in text or "\n\n\n" in text or "\t" in text:
        lines = (line.strip() for line in _SPACES.sub(" ", text).split("\n"))
        text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"
    return text


def _written(values: list[Any]) -> tuple[list[str], list[str]]:
    """Each value as the HTML template writes it (`markupsafe.escape`) and as the text
    template does (`_collapse`, then `str`). When all are plain strings, as they nearly
    always are, that is one `escape` of them joined by a NUL none contains, and one check
    that none has whitespace to collapse."""
    if set(map(type, values)) == _JUST_STR:
        joined = "\0".join(values)
        if joined.count("\0") == len(values) - 1:
            html = str.split(escape(joined), "\0")
            if "  " not in joined and joined.replace("\0", " ").isprintable():
                return html, values
            return html, [str(_collapse(value)) for value in values]
    return [str(escape(value)) for value in values], [str(_collapse(v)) for v in values]


@pass_context
def _keep(context: Context, values: tuple[Any, ...]) -> str:
    """The single-pass template's `finalize`: its only output is one tuple per chunk (the
    chunk's number and values), kept in this render's list instead of written."""
    context.parent[_CHUNKS_KEY].append(values)
    return ""


@dataclass(frozen=True)
class Chunk:
    """One chunk's fixed text in each part, as a list with an empty gap for each value:
    `[text, "", text, "", ..., text]`. The HTML shows every value in evaluation order;
    the text shows the values `text_order` lists (None: all of them, in order)."""

    html: list[str]
    text: list[str]
    text_order: tuple[int, ...] | None

    def fill(self, html_values: list[str], text_values: list[str]) -> tuple[str, str]:
        html, text = self.html.copy(), self.text.copy()
        html[1::2] = html_values
        if self.text_order is None:
            text[1::2] = text_values
        else:
            text[1::2] = [text_values[i] for i in self.text_order]
        return "".join(html), "".join(text)


@dataclass(frozen=True)
class SinglePass:
    """The HTML and text parts from one render that evaluates each expression once.

    The prepared HTML and text templates have the same block tags in the same order, so
    between two block tags (a chunk) each is fixed text around the same expressions.
    `template` outputs, for every chunk it passes through, the chunk's number and the
    values of its expressions; `chunks[n]` puts them into chunk n's fixed text, escaped
    for the HTML and whitespace-collapsed for the text, as the two templates would.

    A subject without block tags comes along: its values first, written with `str` into
    `subject` (`[text, "", text, ..., text]`) as its own template would."""

    template: Template
    chunks: tuple[Chunk, ...]
    subject: list[str] | None = None

    def render(self, context: dict[str, Any], tags: LinkTags) -> tuple[str | None, str, str]:
        """(subject, HTML, text); the subject is None when it is rendered on its own."""
        kept: list[tuple[Any, ...]] = []
        values = {**_globals(self.template), **context, UTM_KEY: tags, _CHUNKS_KEY: kept}
        "".join(_run(self.template, values))
        subject = None
        if self.subject is not None:  # the first tuple, before any chunk
            subject = self.subject.copy()
            subject[1::2] = map(str, kept.pop(0))
            subject = "".join(subject)
        html_values, text_values = _written([value for chunk in kept for value in chunk[1:]])
        html, text, start = [], [], 0
        for chunk in kept:
            end = start + len(chunk) - 1
            html_part, text_part = self.chunks[chunk[0]].fill(
                html_values[start:end], text_values[start:end]
            )
            html.append(html_part)
            text.append(text_part)
            start = end
        return subject, "".join(html), _tidy("".join(text))


@dataclass(frozen=True)
class PreparedEmail:
    """The HTML body with CSS inlined and its text part, ready to render."""

    html: Template
    text: Template
    single: SinglePass | None = None

    def render_html(self, context: dict[str, Any]) -> str:
        return render_quick(self.html, context)

    def render_text(self, context: dict[str, Any]) -> str:
        return _tidy(render_quick(self.text, context))

    def render_parts(self, context: dict[str, Any], tags: LinkTags) -> tuple[str | None, str, str]:
        """(subject, HTML, text) in one pass when the templates allow it, else two renders
        and no subject: None means the caller renders the subject itself."""
        if self.single is not None:
            return self.single.render(context, tags)
        values = {**context, UTM_KEY: tags}
        return None, self.render_html(values), self.render_text(values)


@lru_cache(maxsize=1024)
def _globals(template: Template) -> dict[str, Any]:
    return dict(template.globals)


def _run(template: Template, values: dict[str, Any]) -> Iterator[str]:
    context = new_context(template.environment, template.name, template.blocks, values, True)
    return template.root_render_func(context)  # type: ignore[no-any-return]


def render_quick(template: Template, values: dict[str, Any]) -> str:
    """`template.render(values)` minus the two passes over Jinja's globals it makes on every
    call (a third of a small template's time): they are merged into `values` from a copy
    made once. Errors come out without Jinja's traceback rewriting; callers render the
    original again to report them."""
    return "".join(_run(template, {**_globals(template), **values}))


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


@dataclass(frozen=True)
class Skeletons:
    """The prepared HTML and text with each Jinja tag still a numbered placeholder."""

    html: str
    text: str
    tags: list[str]

    def sources(self) -> tuple[str, str]:
        """The HTML and text template sources (or CannotPrepare)."""
        html = _restore(self.html, self.tags, every_tag=True)
        return html, _restore(self.text, self.tags, every_tag=False)


def prepare_sources(env: SandboxedEnvironment, name: str) -> tuple[str, str]:
    """The HTML and text template sources for one HTML template (or CannotPrepare)."""
    return prepare_skeletons(env, name).sources()


def prepare_skeletons(env: SandboxedEnvironment, name: str) -> Skeletons:
    """CSS inlined and text derived over placeholders for one HTML template's tags."""
    skeleton, tags = _skeleton(route_links(flatten(env, name)))
    for tag in _IN_TAG.findall(skeleton):
        if _PLACEHOLDER.search(_SAFE_IN_TAG.sub("", tag)):
            raise CannotPrepare(f"a Jinja tag inside an HTML tag: {tag[:60]}")
    if re.search(r"<style\b[^>]*>[^<]*ABMJ", skeleton, re.IGNORECASE):
        raise CannotPrepare("a Jinja tag inside CSS")
    html_skeleton = inline_css(skeleton)
    text_skeleton = html_to_text(html_skeleton)
    if any(mark in _PLACEHOLDER.sub("", text_skeleton) for mark in ("{{", "{%", "{#")):
        raise CannotPrepare("the text part would contain Jinja syntax of its own")
    return Skeletons(html_skeleton, text_skeleton, tags)


def _chunks(skeleton: str, tags: list[str]) -> list[list[str | int]]:
    """The skeleton cut at block tags (the runs between them are chunks), each chunk a
    list of fixed text and expression tag numbers. Comments write nothing."""
    pieces = _PLACEHOLDER.split(skeleton)  # text, tag number, text, ..., text
    chunks: list[list[str | int]] = [[pieces[0]]]
    for number, literal in zip(pieces[1::2], pieces[2::2], strict=True):
        tag = tags[int(number)]
        if tag.startswith("{{"):
            chunks[-1].append(int(number))
        elif tag.startswith("{%"):
            chunks.append([])
        chunks[-1].append(literal)
    return chunks


def _block_tags(skeleton: str, tags: list[str]) -> list[int]:
    numbers = (int(number) for number in _PLACEHOLDER.findall(skeleton))
    return [number for number in numbers if tags[number].startswith("{%")]


def _gaps(chunk: list[str | int], slots: list[int]) -> tuple[list[str], list[int]]:
    """A chunk as `[text, "", text, ..., text]` with a gap for each expression, and the
    place in `slots` (the order the single pass evaluates them in) of each gap's value."""
    pieces, order = [""], []
    for part in chunk:
        if isinstance(part, str):
            pieces[-1] += part
        elif part in slots:
            pieces += ["", ""]
            order.append(slots.index(part))
        else:
            raise CannotPrepare("an expression moves past a block tag in the text part")
    return pieces, order


def single_pass_sources(skeletons: Skeletons) -> tuple[str, list[Chunk]]:
    """The single-pass template source and its chunks (see `SinglePass`), or CannotPrepare
    when one pass could differ from two renders."""
    tags = skeletons.tags
    for tag in tags:
        if _WHITESPACE_CONTROL.search(tag):
            raise CannotPrepare(f"whitespace control moves fixed text: {tag[:60]}")
        word = _BLOCK_WORD.match(tag)
        if word and (word.group(1) not in _SINGLE_PASS_BLOCKS or "recursive" in tag):
            raise CannotPrepare(f"a block tag one pass cannot follow: {tag[:60]}")
    if _block_tags(skeletons.html, tags) != _block_tags(skeletons.text, tags):
        raise CannotPrepare("the text part lost or moved a block tag")
    html_chunks, text_chunks = _chunks(skeletons.html, tags), _chunks(skeletons.text, tags)
    blocks = iter(tag for tag in tags if tag.startswith("{%"))
    source, chunks = [], []
    for html_chunk, text_chunk in zip(html_chunks, text_chunks, strict=True):
        slots = [part for part in html_chunk if isinstance(part, int)]
        html, _ = _gaps(html_chunk, slots)
        text, order = _gaps(text_chunk, slots)
        in_order = order == list(range(len(slots)))
        chunks.append(Chunk(html, text, None if in_order else tuple(order)))
        if slots or html != [""] or text != [""]:
            values = "".join(f" ({tags[n][2:-2]})," for n in slots)
            source.append(f"{{{{ ({len(chunks) - 1},{values}) }}}}")
        source.append(next(blocks, ""))
    return "".join(source), chunks


@lru_cache(maxsize=8)
def _environments(
    env: SandboxedEnvironment,
) -> tuple[SandboxedEnvironment, SandboxedEnvironment, SandboxedEnvironment]:
    """Sandboxes for prepared sources, which have no file name to pick escaping by: HTML
    always escaped; the derived text never (it is not HTML), its values' whitespace
    collapsed as HTML would show it; the single pass keeps values rather than writing
    them. Same loader, filters, strictness and sandbox as `env`."""
    html_env = env.overlay(autoescape=True)
    text_env = env.overlay(autoescape=False, finalize=_collapse)
    # `| e` escapes for the HTML part only: the text derived from the HTML reads unescaped
    text_env.filters = {**env.filters, "e": _unescaped, "escape": _unescaped}
    single_env = env.overlay(autoescape=False, finalize=_keep)
    return html_env, text_env, single_env  # type: ignore[return-value]


def _unescaped(value: Any) -> Any:
    """The text template's `e` and `escape`: the value itself, which is what a reader of
    the escaped HTML sees."""
    return value


def _check_single_pass(single_env: SandboxedEnvironment, source: str) -> None:
    """CannotPrepare unless every statement, filter and name of the single-pass source
    gives the same value with autoescaping on or off (the list above the imports)."""
    try:
        tree = single_env.parse(source)
    except TemplateSyntaxError as error:
        raise CannotPrepare(f"the single-pass source does not parse: {error}") from None
    for statement in tree.find_all(nodes.Stmt):
        if not isinstance(statement, _SINGLE_PASS_STATEMENTS):
            raise CannotPrepare(f"a statement one pass cannot follow: {type(statement).__name__}")
    for applied in tree.find_all(nodes.Filter):
        if applied.name not in _PLAIN_FILTERS:
            raise CannotPrepare(f"the filter {applied.name!r} may differ between HTML and text")
    for name in tree.find_all(nodes.Name):
        if name.name in _REFUSED_NAMES:
            raise CannotPrepare(f"{name.name!r} may differ between HTML and text")


def _subject_pieces(env: SandboxedEnvironment, name: str) -> tuple[list[str], list[str]]:
    """The subject template's fixed text with a gap for each expression, and those
    expressions; CannotPrepare unless it is only text and expressions, written as plain
    text, that give the same value in the single pass as in its own render."""
    source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
    tags = _JINJA.findall(source)
    autoescape = env.autoescape(name) if callable(env.autoescape) else env.autoescape
    if not tags or autoescape:
        raise CannotPrepare("the subject has no expressions, or is HTML")
    if any(not tag.startswith("{{") or _WHITESPACE_CONTROL.search(tag) for tag in tags):
        raise CannotPrepare("the subject has block tags, comments or whitespace control")
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as error:
        raise CannotPrepare(f"the subject does not parse: {error}") from None
    found = [node for output in tree.body for node in getattr(output, "nodes", [output])]
    expressions = [node for node in found if not isinstance(node, nodes.TemplateData)]
    if len(tree.body) > 1 or len(expressions) != len(tags):
        raise CannotPrepare("the subject's tags are not what they look like")
    # rendered on its own, the subject sees no UTM parameters
    if any(applied.name == "tracked" for applied in tree.find_all(nodes.Filter)):
        raise CannotPrepare("the subject tracks a link")
    pieces = [""]
    for literal in _JINJA.split(source):
        pieces[-1] += literal
        pieces += ["", ""]
    return pieces[:-2], [tag[2:-2] for tag in tags]


def single_pass(
    env: SandboxedEnvironment, skeletons: Skeletons, subject: str | None = None
) -> SinglePass:
    """The single-pass form of prepared HTML and text, with the subject template `subject`
    when it can come along (or CannotPrepare)."""
    source, chunks = single_pass_sources(skeletons)
    single_env = _environments(env)[2]
    _check_single_pass(single_env, source)
    if subject is not None:
        try:
            pieces, expressions = _subject_pieces(env, subject)
            with_subject = "{{ (" + "".join(f" ({e})," for e in expressions) + ") }}" + source
            _check_single_pass(single_env, with_subject)
        except CannotPrepare:
            subject = None
    if subject is None:
        return SinglePass(single_env.from_string(source), tuple(chunks))
    return SinglePass(single_env.from_string(with_subject), tuple(chunks), pieces)


@lru_cache(maxsize=512)
def prepared_email(
    env: SandboxedEnvironment, name: str, subject: str | None = None
) -> PreparedEmail | None:
    """The prepared form of one HTML template (with the subject template `subject` in its
    single pass when it can be), or None when it keeps the per-message path."""
    try:
        skeletons = prepare_skeletons(env, name)
        html, text = skeletons.sources()
    except CannotPrepare:
        return None
    try:
        single: SinglePass | None = single_pass(env, skeletons, subject)
    except CannotPrepare:
        single = None
    html_env, text_env, _ = _environments(env)
    return PreparedEmail(html_env.from_string(html), text_env.from_string(text), single)
