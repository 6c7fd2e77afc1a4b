"""Text cleaning a source asks for: 4chan HTML (`html: true`) and literal backslash escapes (`unescape: true`)."""
from __future__ import annotations

import html
import re
from typing import Any

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_ESCAPE = re.compile(r"\\([ntr\\\"'])")
_ESCAPED = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}


def clean_html(text: str) -> str:
    """4chan post markup to plain text: `<br>` → newline; quote links (`<a class="quotelink">`), greentext
    (`<span class="quote">`) and every other element unwrapped to their text (tags dropped); entities
    unescaped last, so an escaped `&lt;b&gt;` stays text; surrounding whitespace stripped."""
    return html.unescape(_TAG.sub("", _BREAK.sub("\n", text))).strip()


def unescape_text(text: str) -> str:
    """Literal `\\n`, `\\t`, `\\r`, `\\\\` and quote escapes become the characters (ToxiGen `train` prompts);
    other backslashes and non-ASCII text are left alone (unlike `unicode_escape`)."""
    return _ESCAPE.sub(lambda m: _ESCAPED[m.group(1)], text)


def clean_text(value: str, spec: Any) -> str:
    """A text cleaned as the source asks (`html`, then `unescape`); unchanged when it asks nothing."""
    if getattr(spec, "html", False):
        value = clean_html(value)
    if getattr(spec, "unescape", False):
        value = unescape_text(value)
    return value
