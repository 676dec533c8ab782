"""Text from anywhere (a server, the user's files, an exception) made safe to show: escaped
and bounded, so that no message can move the cursor, colour the terminal, reorder what a
reader sees, start a new line, or become a megabyte.

A leaf: it imports nothing of ours, and every layer that shows text uses it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

MESSAGE_LIMIT = 2000  # characters of a rendered message, after escaping
FIELD_LIMIT = 500  # characters of one string field
TRACEBACK_LIMIT = 8000  # characters of a traceback; its end is where the error is
ITEMS_LIMIT = 50  # entries of a list or mapping field

# Control characters (C0, DEL, C1), bidi controls, line and paragraph separators, and lone
# surrogates (which cannot even be encoded): everything that can move the cursor, colour the
# terminal, reorder what a reader sees, start a new line, or break the encoder.
_UNSAFE_CHARS = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"[{_UNSAFE_CHARS}]")
_PIECES = re.compile(f"[{_UNSAFE_CHARS}]|[^{_UNSAFE_CHARS}]+")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str, limit: int = FIELD_LIMIT) -> str:
    """`text` safe to show: unsafe characters escaped (`\\x1b`, `\\n`, `\\u202e`), at most
    `limit` characters of it, and a note of how much was cut."""
    if len(text) <= limit and not _UNSAFE.search(text):
        return text  # the common case, kept cheap
    head = text[: limit + 1]  # never look at more than we may keep
    out: list[str] = []
    used = taken = 0
    for piece in _PIECES.findall(head):
        plain = not _UNSAFE.match(piece)
        rendered = piece if plain else _escape_char(piece)
        if used + len(rendered) > limit:
            if plain:  # a run of plain text: keep what fits
                out.append(piece[: limit - used])
                taken += limit - used
            break  # an escape that does not fit is left out whole, never cut in half
        out.append(rendered)
        used += len(rendered)
        taken += len(piece)
    else:
        return "".join(out)  # all of it fitted (so `head` was all of `text`)
    return "".join(out) + f"... [{len(text) - taken} more characters]"


def clean_block(text: str, limit: int = TRACEBACK_LIMIT) -> str:
    """A multi-line text (a traceback): each line cleaned, newlines kept, at most `limit`
    characters, cut at the start: a traceback's end is where the error is."""
    lines = [clean(line, MESSAGE_LIMIT) for line in text[-4 * limit :].split("\n")]
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        if size + len(line) + 1 > limit:
            kept.append("[the start is cut]")
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(reversed(kept))


def clean_value(value: Any, limit: int = FIELD_LIMIT, depth: int = 0) -> Any:
    """A field's value as JSON can hold it, every string in it cleaned and bounded."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # Python will not even print a 5,000-digit one
        return value if value.bit_length() <= 64 else f"<a {value.bit_length()}-bit integer>"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN is not JSON
    if isinstance(value, str):
        return clean(value, limit)
    if depth < 3 and isinstance(value, Mapping):
        items = list(value.items())
        cleaned = {clean(str(k), 64): clean_value(v, limit, depth + 1) for k, v in items[:ITEMS_LIMIT]}
        if len(items) > ITEMS_LIMIT:
            cleaned["more_items"] = len(items) - ITEMS_LIMIT
        return cleaned
    if depth < 3 and isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        cleaned_list = [clean_value(v, limit, depth + 1) for v in items[:ITEMS_LIMIT]]
        if len(items) > ITEMS_LIMIT:
            cleaned_list.append(f"... [{len(items) - ITEMS_LIMIT} more items]")
        return cleaned_list
    return clean(str(value), limit)  # an exception, a Path, an enum: as people read it


# -- text for one line of a message: `clean_text` and `quoted` ----------------------------

_ELLIPSIS = "..."
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def clean_text(text: object, limit: int = 200) -> str:
    """Server-supplied `text` made safe to print in one line of at most `limit` characters.

    Bytes are read as UTF-8 (bad bytes become U+FFFD). Outer whitespace goes. Every character
    a terminal or log reader could act on is escaped as Python would write it (`\\x1b`,
    `\\n`, `\\u202e`): controls, format characters (bidi overrides, zero-width), surrogates,
    private-use and unassigned code points, and every space but the plain one. Longer results
    end in "...". Other values (None, numbers, containers) are shown briefly. Printable
    letters of any script stay as they are: CloudDC's messages may well be in Chinese.
    Never raises for any `text`; escapes no more of it than it can show.
    """
    if limit < len(_ELLIPSIS) + 1:
        raise ValueError(f"limit must be at least {len(_ELLIPSIS) + 1}")
    if isinstance(text, (bytes, bytearray, memoryview)):
        # Each character is at most 4 bytes: a prefix this long still shows that it was cut.
        data = bytes(text).lstrip()[: 4 * limit + 4]
        text = data.decode("utf-8", "replace")
    elif not isinstance(text, str):
        text = _brief(text, limit)
    text = text.strip()
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = char if char == " " or char.isprintable() else _escape(char)
        pieces.append(piece)
        used += len(piece)
        if used > limit:
            break
    else:
        return "".join(pieces)
    while used > limit - len(_ELLIPSIS):
        used -= len(pieces.pop())
    return "".join(pieces).rstrip() + _ELLIPSIS


def _escape(char: str) -> str:
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _brief(value: object, limit: int) -> str:
    """A short rendering of a non-text value; never `str()` of a huge int (ValueError)."""
    if value is None or isinstance(value, (bool, float)):
        return str(value)
    if isinstance(value, int):
        if value.bit_length() > 4 * limit:
            return f"<an integer of {value.bit_length()} bits>"
        return str(value)
    return f"<{type(value).__name__}>"


def quoted(value: object, limit: int = 40) -> str:
    """`value` for a message about what is wrong with it: quoted, escaped, cut short."""
    return f"'{clean_text(value, limit)}'" if isinstance(value, str) else clean_text(value, limit)
