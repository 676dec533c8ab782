"""Text from anywhere (a server, the user's files, an exception) made safe to show: escaped
and bounded, so that no message can move the cursor, colour the terminal, reorder what a
reader sees, start a new line, or become a megabyte.

One rule says which characters are unsafe and one function escapes them (`escape`); the
cleaners differ only in their bound and in how they mark a cut: `clean` (log fields) appends
"... [N more characters]", `clean_text` (one line of a message) ends in "..." within its limit.

A leaf: it imports nothing of ours, and every layer that shows text uses it.
"""

from __future__ import annotations

import math
import sys
import unicodedata
from collections.abc import Mapping
from typing import Any, Protocol

MESSAGE_LIMIT = 2000  # characters of a rendered message, after escaping
FIELD_LIMIT = 500  # characters of one string field
TRACEBACK_LIMIT = 8000  # characters of a traceback; its end is where the error is
ITEMS_LIMIT = 50  # entries of a list or mapping field
LINE_LIMIT = 500  # characters of one line a person reads on the terminal, its cut marker included

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ELLIPSIS = "..."


# -- the one rule and the one escape -------------------------------------------------------
#
# A character is safe to show when Python calls it printable (`str.isprintable`), which a
# plain space is too: that leaves out controls (C0, DEL, C1), format characters (bidi
# overrides, zero-width), line and paragraph separators, lone surrogates, private-use and
# unassigned code points, and every space but the plain one. Everything a terminal or a log
# reader could act on, or that could display as something else, is escaped as Python would
# write it. Printable letters of any script stay: CloudDC's messages may well be in Chinese.


def escape(char: str) -> str:
    """One character as Python writes it in a string literal: ``\\n``, ``\\x1b``, ``\\u202e``, ``\\U000f0000``."""
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escaped(text: str, limit: int) -> tuple[str, int]:
    """The longest start of `text` that fits in `limit` characters once escaped, and how many
    characters of `text` it holds. An escape that does not fit is left out whole, never cut."""
    if text.isprintable():  # the common case, at C speed
        return text[:limit], min(len(text), limit)
    out: list[str] = []
    used = 0
    for index, char in enumerate(text):
        piece = char if char.isprintable() else escape(char)
        used += len(piece)
        if used > limit:
            return "".join(out), index
        out.append(piece)
    return "".join(out), len(text)


def clean(text: str, limit: int = FIELD_LIMIT) -> str:
    """`text` safe to show: unsafe characters escaped (`\\x1b`, `\\n`, `\\u202e`), at most
    `limit` characters of it, and a note of how much was cut ("... [N more characters]")."""
    if len(text) <= limit and text.isprintable():
        return text  # the common case, kept cheap: this runs on every log field
    shown, taken = _escaped(text[: limit + 1], limit)  # never look at more than we may keep
    if taken == len(text):
        return shown
    return f"{shown}... [{len(text) - taken} more characters]"


# -- whether text is safe to keep ----------------------------------------------------------


def unsafe_char(
    text: str, *, spaces: bool = True, unprintable: bool = True, non_ascii: bool = True
) -> tuple[str, str] | None:
    """The first character of `text` it may not hold, and what it is in words ("a control
    character"), or None if every character may stay.

    Always refused, whatever the text is for: what can act on a terminal or make one text
    display as another -- controls (C0, DEL, C1), format characters (bidi overrides,
    zero-width), line and paragraph separators -- and lone surrogates, which cannot even be
    encoded. The rest depends on where the text goes, so the caller says:

    - `spaces` False refuses every space, the plain one too: a URL or a path segment we send;
    - `unprintable` False refuses the other characters `str.isprintable` rejects (private-use,
      unassigned, spaces but the plain one): a value that must mean one thing to every reader;
    - `non_ascii` False refuses everything beyond ASCII: a value that goes into a query string
      and an AK/SK signature, where nothing should need judgement.

    Names a person gave (a server's name, its tags, a server id that names a file) keep spaces,
    private-use characters and code points newer than our Unicode tables: refusing them would
    leave a server we could collect uncollectable.
    """
    if text.isprintable() and (spaces or " " not in text) and (non_ascii or text.isascii()):
        return None  # the usual case, at C speed
    for char in text:
        problem = _char_problem(char, spaces=spaces, unprintable=unprintable, non_ascii=non_ascii)
        if problem is not None:
            return char, problem
    return None


def _char_problem(char: str, *, spaces: bool, unprintable: bool, non_ascii: bool) -> str | None:
    if char.isprintable() and (spaces or char != " ") and (non_ascii or char.isascii()):
        return None
    category = unicodedata.category(char)
    if category == "Cc":
        return "a control character"
    if category == "Cf":
        return "a format character (bidi or zero-width)"
    if category == "Cs":
        return "a lone surrogate"
    if category in ("Zl", "Zp"):
        return "a line break"
    if not spaces and (char.isspace() or category.startswith("Z")):
        return "whitespace"
    if not unprintable and not char.isprintable():
        return "a character that is not printable"
    if not non_ascii and not char.isascii():
        return "a character beyond ASCII"
    return None


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


def clean_text(text: object, limit: int = 200) -> str:
    """Server-supplied `text` made safe to print in one line of at most `limit` characters.

    Bytes are read as UTF-8 (bad bytes become U+FFFD). Outer whitespace goes. Unsafe
    characters are escaped (see `escape` for the rule). Longer results end in "...". Other
    values (None, numbers, containers) are shown briefly. Never raises for any `text`;
    escapes no more of it than it can show.
    """
    if limit < len(_ELLIPSIS) + 1:
        raise ValueError(f"limit must be at least {len(_ELLIPSIS) + 1}")
    if isinstance(text, (bytes, bytearray, memoryview)):
        # Each character is at most 4 bytes: a prefix this long still shows that it was cut.
        data = bytes(text).lstrip()[: 4 * limit + 4]
        text = data.decode("utf-8", "replace")
    elif not isinstance(text, str):
        text = _brief(text, limit)
    return _one_line(text.strip(), limit)


def _one_line(text: str, limit: int) -> str:
    """`text` escaped in at most `limit` characters, "..." included when it is cut."""
    shown, taken = _escaped(text, limit)
    if taken == len(text):
        return shown
    shown, _ = _escaped(text, limit - len(_ELLIPSIS))
    return shown.rstrip() + _ELLIPSIS


def _brief(value: object, limit: int) -> str:
    """A short rendering of a non-text value; never `str()` of a huge int (ValueError)."""
    if value is None or isinstance(value, (bool, float)):
        return str(value)
    if isinstance(value, int):
        if value.bit_length() > 4 * limit:
            return f"<an integer of {value.bit_length()} bits>"
        return str(value)
    return f"<{type(value).__name__}>"


# -- the words of "expected X, got Y" -------------------------------------------------------


def quoted(value: object, limit: int = 40) -> str:
    """`value` for a message about what is wrong with it: a string quoted, escaped and cut
    short, its outer spaces kept (they may be what is wrong); any other value as `clean_text`
    shows it."""
    if isinstance(value, str):
        if limit < len(_ELLIPSIS) + 1:
            raise ValueError(f"limit must be at least {len(_ELLIPSIS) + 1}")
        return f"'{_one_line(value, limit)}'"
    return clean_text(value, limit)


def a_or_an(word: str) -> str:
    """``a list``, ``an object``: the article by the first letter, as people read most words."""
    return f"an {word}" if word[:1].lower() in ("a", "e", "i", "o", "u") else f"a {word}"


def kind_of(value: object, *, numbers: bool = False) -> str:
    """What a JSON value is, in words, for "expected X, got Y": ``null``, ``a boolean``,
    ``a number``, ``a string``, ``a list``, ``an object``; anything else by its type's name.

    With `numbers`, a float or an integer of at most 64 bits is shown as itself (``-1``,
    ``2.5``): a wrong number is clearer than its kind.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        if numbers and (isinstance(value, float) or value.bit_length() <= 64):
            return repr(value)
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return a_or_an(type(value).__name__)


# -- what reaches the terminal ---------------------------------------------------------------


def short_id(text: str, keep: int = 4) -> str:
    """A long id as a person scans it in a line: ``0a5f…1c80`` (the full one is in the report and
    in the JSON log's fields). Ids of up to 3 x `keep` characters stay whole."""
    return text if len(text) <= 3 * keep else f"{text[:keep]}\u2026{text[-keep:]}"


def one_line(text: str, limit: int = LINE_LIMIT) -> str:
    """`text` as one line a person reads: escaped by the one rule, at most `limit` characters
    with its cut marker ("... [N more characters]")."""
    shown = clean(text, limit)
    if len(shown) <= limit:
        return shown
    marker_room = 40  # "... [N more characters]" for any N we can hold
    return clean(text, limit - marker_room)


class Writable(Protocol):
    def write(self, text: str, /) -> object: ...


def say(*lines: str, file: Writable | None = None) -> None:
    """Print each of `lines` through `one_line`: every line the command line prints (results,
    errors, hints, the summary) goes through here, whatever the source of its text -- a
    server's reply, the user's inventory or selection file, an exception."""
    stream = file if file is not None else sys.stdout
    for line in lines:
        stream.write(one_line(line) + "\n")  # a newline inside `line` is escaped, never a second line
