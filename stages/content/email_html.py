"""What is done to an HTML email body: CSS inlined, links tagged with UTM parameters, a
plain-text version derived. Pure functions over strings, used on template sources once
(`stages.content.prepared_templates`) and, for templates that cannot be prepared, on each
message."""

from __future__ import annotations

import html as html_lib
import re
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import css_inline

_INLINER = css_inline.CSSInliner(keep_style_tags=False)
_HREF = re.compile(r'(<a\b[^>]*?\bhref=")(https?://[^"]+)(")', re.IGNORECASE)
_TEXT_URL = re.compile(r"https?://[^\s<>()\"']+")
_INVISIBLE = re.compile(r"<(head|style|script|title)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_LINK = re.compile(r"<a\b[^>]*?\bhref=\"([^\"]*)\"[^>]*>(.*?)</a\s*>", re.IGNORECASE | re.DOTALL)
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_ITEM = re.compile(r"<li\b[^>]*>", re.IGNORECASE)
_BLOCK = re.compile(r"</?(p|div|h[1-6]|tr|table|ul|ol|hr|blockquote)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")


def inline_css(html: str) -> str:
    """Styles from `<style>` blocks moved into `style` attributes (mail clients drop the
    blocks)."""
    return _INLINER.inline(html)


def add_utm(url: str, params: dict[str, str], domains: tuple[str, ...] = ()) -> str:
    """The URL with UTM parameters it does not already carry, for links to `domains`."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if domains and not any(host == d or host.endswith("." + d) for d in domains):
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {key for key, _ in query}
    query += [(key, value) for key, value in params.items() if key not in present and value]
    return urlunsplit(parts._replace(query=urlencode(query)))


@lru_cache(maxsize=4096)
def add_utm_cached(url: str, params: tuple[tuple[str, str], ...], domains: tuple[str, ...]) -> str:
    """`add_utm` for the few links a campaign has, each worked out once."""
    return add_utm(url, dict(params), domains)


def tag_html_links(html: str, params: dict[str, str], domains: tuple[str, ...], skip: str) -> str:
    """UTM parameters on every `<a href>` of a rendered body except `skip`."""

    def replace(found: re.Match[str]) -> str:
        url = html_lib.unescape(found.group(2))
        if url == skip:
            return found.group(0)
        tagged = add_utm_cached(url, tuple(params.items()), domains)
        return found.group(1) + html_lib.escape(tagged) + found.group(3)

    return _HREF.sub(replace, html)


def tag_text_links(text: str, params: dict[str, str], domains: tuple[str, ...], skip: str) -> str:
    """UTM parameters on every URL of a rendered text part except `skip`."""
    pairs = tuple(params.items())
    return _TEXT_URL.sub(
        lambda m: m.group(0) if m.group(0) == skip else add_utm_cached(m.group(0), pairs, domains),
        text,
    )


def _link_text(found: re.Match[str]) -> str:
    href, text = html_lib.unescape(found.group(1)), _TAG.sub("", found.group(2)).strip()
    return text if not href or href == html_lib.unescape(text) else f"{text} ({href})"


def html_to_text(html: str) -> str:
    """The plain-text part when a template has none: readable, links spelled out.

    Regular expressions over our own templates' HTML, not a general parser: ten times
    faster than `html.parser`, and the input is ours."""
    text = _SPACE.sub(" ", _INVISIBLE.sub("", html))
    text = _LINK.sub(_link_text, text)
    text = _BLOCK.sub("\n\n", _ITEM.sub("\n- ", _BREAK.sub("\n", text)))
    text = html_lib.unescape(_TAG.sub("", text))
    lines = [line.strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"
