"""Outside text (file names, labels from model metadata or label files, anything occlude did not write):
one rule for showing it, used by every output.

File names may hold any byte but '/' and NUL (a name from a Windows archive may not even be UTF-8; Python
keeps such bytes as lone surrogates, U+DC80..U+DCFF), and labels come from files anyone can write. Shown
raw, an escape sequence in a name would drive the user's terminal (clear the screen, set the window title),
a lone surrogate makes JSON that strict readers reject, and a right-to-left override makes ``gnp.exe``
look like ``exe.png``. So wherever occlude shows outside text, it shows :func:`shown` of it:

- control characters (C0, DEL, C1) as ``\\n``, ``\\r``, ``\\t`` or ``\\xNN`` (below U+0080) and ``\\u0080``
  to ``\\u009f``;
- bytes of a file name that are not UTF-8 as ``\\xNN`` (NN >= 80: a byte, never a character);
- every other character that is invisible or has no glyph of its own as ``\\uXXXX`` (``\\UXXXXXXXX`` above
  U+FFFF): the Unicode categories Cf (format: bidirectional controls such as U+202E, zero-width space U+200B,
  joiners, U+FEFF, U+2060, soft hyphen, tags), Zl and Zp (line and paragraph separators), Co (private use),
  Cs (other lone surrogates) and Cn (unassigned in this Python's Unicode database, noncharacters such as
  U+FFFF included), and the blank default-ignorable letters and marks (Hangul fillers U+115F, U+1160, U+3164,
  U+FFA0, the combining grapheme joiner U+034F, Khmer U+17B4/U+17B5, Mongolian variation selectors, and the
  variation selectors but U+FE0E and U+FE0F, which choose an emoji's presentation). The zero-width
  non-joiner and joiner (U+200C, U+200D) are shown as they are between two visible characters outside ASCII,
  where they spell Persian, Urdu and Indic words and emoji sequences; anywhere else they are escaped.

Everything else (spaces, accents, CJK, emoji, backslashes) is shown as it is. The form is for people; it
is not reversible on its own (a name may contain a backslash). JSON keeps the exact text: where the shown
form of a string differs from the text, the document carries ``KEY_b64`` beside ``KEY``, the exact text's
bytes in base64 (a file name's own bytes; a label's UTF-8). :func:`recover` reads it back.

One function per kind of output: :func:`shown` (terminal, errors, PNG titles; :func:`shortened` cuts a long
label there), :func:`for_logfmt` (the ``key=value`` log lines of a CI log), :func:`for_csv`, :func:`json_safe`
(every JSON file and every ``--json`` print), :func:`for_html`, and the hooks for outputs to come,
:func:`for_xml` (JUnit) and :func:`for_markdown` (CI job summaries).
"""

from __future__ import annotations

import base64
import html
import re
import unicodedata
from typing import Any, Mapping, Optional, Tuple

# Characters never shown raw (see the module's docstring): the categories below, whatever their code (C0 and
# C1 controls, DEL, format characters, separators, private use, surrogates: undecodable bytes of a file name
# are U+DC80..U+DCFF under Python's surrogateescape; unassigned), and the blank default-ignorable code points
# of other categories.
_HIDDEN_CATEGORIES = frozenset(("Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp"))
_BLANK = frozenset(
    (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x3164, 0xFFA0)
    + tuple(range(0xFE00, 0xFE0E))
    + tuple(range(0xE0100, 0xE01F0))
)
_PLAIN = re.compile("[ -~]*")  # printable ASCII: always shown as it is
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# Cells a spreadsheet would run as a formula (OWASP "CSV injection"): prefixed with a quote.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

B64_SUFFIX = "_b64"


def _hidden(char: str) -> bool:
    """Is ``char`` one that :func:`shown` escapes?"""
    code = ord(char)
    if code < 0x80:
        return code < 0x20 or code == 0x7F
    return code in _BLANK or unicodedata.category(char) in _HIDDEN_CATEGORIES


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


# zero-width non-joiner and joiner: part of the spelling of Persian, Urdu and Indic words and of emoji sequences
_JOINERS = frozenset("\u200c\u200d")


def _kept(text: str, i: int) -> bool:
    """Is ``text[i]`` shown as it is: a character :func:`_hidden` lets through, or a joiner between two
    visible characters outside ASCII (between ASCII letters it can only hide in a name: ``pay\\u200dpal``)."""
    char = text[i]
    if not _hidden(char):
        return True
    if char not in _JOINERS or not 0 < i < len(text) - 1:
        return False
    return all(ord(c) >= 0x80 and not _hidden(c) for c in (text[i - 1], text[i + 1]))


def is_safe(text: str) -> bool:
    """True when :func:`shown` leaves ``text`` as it is."""
    return _PLAIN.fullmatch(text) is not None or all(_kept(text, i) for i in range(len(text)))


def shown(text: Any) -> str:
    """``text`` as people see it in any output: one line, no character that can drive a terminal, reorder
    the text or hide in it, no undecodable byte (see the module's docstring). ``shown(shown(x)) == shown(x)``."""
    text = str(text)
    if _PLAIN.fullmatch(text) is not None:
        return text
    return "".join(c if _kept(text, i) else _escape(c) for i, c in enumerate(text))


LABEL_LIMIT = 80  # the most characters of one label on a terminal (files keep the whole text)
TITLE_LIMIT = 200  # the most characters of a picture's title
CUT_MARK = "..."  # the end of a cut text, as picture titles and captions are cut


def shortened(text: Any, limit: int = LABEL_LIMIT) -> str:
    """:func:`shown` of ``text``, cut to at most ``limit`` characters (``limit`` >= 4) when longer: whole
    characters and whole escapes, then ``...``. For a label on a terminal or in a picture title; files keep the
    whole text."""
    full = shown(text)
    if len(full) <= limit:
        return full
    kept, length = [], 0
    for char in str(text):
        piece = shown(char)
        if length + len(piece) > limit - len(CUT_MARK):
            break
        kept.append(piece)
        length += len(piece)
    return "".join(kept) + CUT_MARK


def exact_bytes(text: str) -> bytes:
    """The exact bytes of outside text: a file name's own bytes (undecodable ones included), else UTF-8."""
    return text.encode("utf-8", "surrogateescape")


def from_bytes(data: bytes) -> str:
    """The inverse of :func:`exact_bytes`: the text as Python's file functions take it."""
    return data.decode("utf-8", "surrogateescape")


def _b64(text: str) -> str:
    return base64.b64encode(exact_bytes(text)).decode("ascii")


def json_safe(value: Any, exact: bool = True) -> Any:
    """A JSON-ready copy of ``value`` where every string is :func:`shown`, and (with ``exact``) every dict
    entry whose string (or list of strings) changed gets a ``KEY_b64`` sibling with the exact bytes (a list:
    one entry per string, null where nothing changed). The result encodes as strict UTF-8 JSON, and
    :func:`recover` gives the exact text back. ``exact=False``: display only (the HTML report's data)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = shown(key)
            out[name] = json_safe(item, exact)
            if not exact:
                continue
            if isinstance(item, str):
                if not is_safe(item):
                    out[name + B64_SUFFIX] = _b64(item)
            elif isinstance(item, (list, tuple)) and any(isinstance(v, str) and not is_safe(v) for v in item):
                out[name + B64_SUFFIX] = [_b64(v) if isinstance(v, str) and not is_safe(v) else None for v in item]
        return out
    if isinstance(value, (list, tuple)):
        nested = any(isinstance(v, (str, dict, list, tuple)) for v in value)
        return [json_safe(v, exact) for v in value] if nested else list(value)
    if isinstance(value, str):
        return shown(value)
    return value


def recover(document: Mapping, key: str) -> Optional[Any]:
    """The exact text of ``document[key]`` in a JSON document occlude wrote (see :func:`json_safe`): from
    ``KEY_b64`` when present, else the value itself. Lists of strings are recovered element-wise."""
    value = document.get(key)
    encoded = document.get(key + B64_SUFFIX)
    if encoded is None:
        return value
    if isinstance(encoded, str):
        return from_bytes(base64.b64decode(encoded))
    if isinstance(encoded, list) and isinstance(value, list):
        return [from_bytes(base64.b64decode(e)) if isinstance(e, str) else v for e, v in zip(encoded, value)]
    return value


def for_csv(value: Any) -> str:
    """One CSV cell: '' for None, numbers as numbers, text :func:`shown` and, when a spreadsheet would run
    it as a formula (starting with = + - @ tab CR), prefixed with ' (a negative number is data)."""
    if value is None:
        return ""
    if isinstance(value, (bool, int, float)) or type(value).__module__ == "numpy":
        return str(value)
    text = shown(value)
    return "'" + text if text.startswith(FORMULA_START) else text


_LOGFMT_PLAIN = re.compile(r'[^\s="\\]+')


def for_logfmt(value: Any) -> str:
    """One value of a logfmt line (``key=value``, as Heroku, Go's logfmt and Grafana Loki read it): '' for
    None, numbers as they are, text :func:`shown` and, unless it is one plain word, in double quotes with ``"``
    and ``\\`` backslash-escaped. A file name or label can neither end its value early nor add a key (a label
    ``x y=1`` stays one quoted value) nor a line; a logfmt reader gives back the shown text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) or type(value).__module__ == "numpy":
        return str(value)
    text = shown(value)
    if _LOGFMT_PLAIN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def logfmt(*pairs: Tuple[str, Any]) -> str:
    """A logfmt line from (key, value) pairs (keys are occlude's own words; values :func:`for_logfmt`)."""
    return " ".join(f"{key}={for_logfmt(value)}" for key, value in pairs)


def for_html(text: Any) -> str:
    """Text for an HTML element or attribute (what the report's template autoescaping does, after
    :func:`shown`)."""
    return html.escape(shown(text), quote=True)


def for_xml(text: Any) -> str:
    """Text for an XML element or attribute (JUnit reports): :func:`shown` leaves no character XML 1.0
    forbids (the noncharacters U+FFFE and U+FFFF are unassigned, so written ``\\ufffe`` and ``\\uffff``),
    then the five XML specials are escaped."""
    return html.escape(shown(text), quote=True).replace("&#x27;", "&apos;")


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~])")


def for_markdown(text: Any) -> str:
    """Text for Markdown (a CI job summary, a table cell): :func:`shown`, ``&`` as an entity, and every
    character Markdown gives a meaning backslash-escaped, so a name can neither format nor link."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", shown(text).replace("&", "&amp;"))


def for_plot(text: Any) -> str:
    """Text for a matplotlib title, label or legend: :func:`shortened` to ``TITLE_LIMIT`` characters, with ``$``
    escaped so that a name never starts mathtext (a stray ``$x^$`` in a label would stop the picture being
    drawn)."""
    return shortened(text, TITLE_LIMIT).replace("$", r"\$")


def restore(value: Any) -> Any:
    """The inverse of :func:`json_safe` on a whole document read back: every ``KEY`` with a ``KEY_b64``
    sibling gets its exact text again and the sibling goes (for documents whose own keys never end in
    ``_b64``, such as occlude's)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key.endswith(B64_SUFFIX) and key[: -len(B64_SUFFIX)] in value:
                continue
            out[key] = recover(value, key) if (key + B64_SUFFIX) in value else restore(item)
        return out
    if isinstance(value, list):
        return [restore(v) for v in value]
    return value
