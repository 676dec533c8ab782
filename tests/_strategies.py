"""Hypothesis strategies shared by the property tests: the characters a hostile or broken
server might put anywhere, made likely rather than rare."""

from __future__ import annotations

from hypothesis import strategies as st

# Path and URL syntax, shell and option look-alikes, whitespace and line breaks of every kind,
# C0/C1 controls, bidi and zero-width format characters, lone surrogates, private use, astral
# planes, and the JSON and query-string punctuation a naive parser trips on.
DANGEROUS = [
    "/",
    "\\",
    ".",
    "..",
    "-",
    "%2e",
    "%2F",
    "?",
    "#",
    "%",
    "=",
    "&",
    " ",
    "\t",
    "\n",
    "\r",
    "\x00",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9b",
    "\u00a0",
    "\u2028",
    "\u3000",
    "\u200b",
    "\u200e",
    "\u202e",
    "\u2066",
    "\ufeff",
    "\ud800",
    "\udfff",
    "\udc80",
    "\ue000",
    "\U0010ffff",
    "\U0001f600",
    "é",
    "[",
    "]",
    "{",
    "}",
    '"',
]

# One piece of text: any character at all (surrogates included), or one of the dangerous ones.
PIECES = st.one_of(st.characters(exclude_categories=()), st.sampled_from(DANGEROUS))


def texts(min_size: int = 0, max_size: int = 40, pieces: st.SearchStrategy[str] = PIECES) -> st.SearchStrategy[str]:
    """Text built of `pieces`, a dangerous one likely at every position."""
    return st.lists(pieces, min_size=min_size, max_size=max_size).map("".join)
