"""One archive searched, member by member and line by line, in bounded memory.

`search_archive` walks an archive's stream (`collector.grep.unpack`): a gzip layer is
inflated, a tar or zip is walked, and any other member is text to search. Lines are never
split one by one: each chunk of text is searched whole (`Matcher`), and only around a hit is
the line found and its number counted, so text that does not match costs one scan.

A line longer than `MAX_LINE` is searched in windows of that size, as it streams (a match
across two windows' edge is not seen); it is reported once, cut to `TEXT_BYTES`, with its
length. What is kept of a line is bytes: the printer decodes and escapes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from collector.config.select import Glob
from collector.grep.unpack import (
    MAX_DEPTH,
    TAR_BLOCK,
    Bomb,
    Budget,
    Damaged,
    Decompressor,
    Inflate,
    Limited,
    Peek,
    Stream,
    sniff,
    tar_members,
    zip_members,
)

MAX_LINE = 1024 * 1024  # bytes of one line searched at once; a longer one is searched in windows
HELD_BYTES = 8 * 1024 * 1024  # text held uncounted until a hit needs its line numbers
TEXT_BYTES = 4096  # bytes of a selected line kept for printing (the printer cuts further)
_WORD = rb"(?<![0-9A-Za-z_])(?:%s)(?![0-9A-Za-z_])"
_META = frozenset(b".^$*+?{}[]\\|()")


@dataclass(frozen=True, slots=True)
class Query:
    """What to look for and how to report it; the same in every worker."""

    pattern: bytes
    fixed: bool = False  # -F
    ignore_case: bool = False  # -i
    word: bool = False  # -w
    invert: bool = False  # -v
    max_count: int | None = None  # -m: selected lines per archive
    mode: str = "lines"  # "lines", "count" (-c) or "list" (-l)
    member: str | None = None  # --member GLOB
    engine: str = "auto"  # "auto" (re2 where it takes the pattern), "re" or "re2": see Matcher

    def check(self) -> str | None:
        """Why the pattern cannot be used, or None (the CLI turns it into a usage error)."""
        try:
            Matcher(self)
        except (re.error, ValueError, OverflowError) as exc:
            return str(exc)
        return None


class Matcher:
    """Finds the first hit in ``buf[pos:end]``, with google-re2 where it takes the pattern
    (a DFA: linear time, and a literal or a rare first byte is skipped to at memchr speed;
    ``benchmarks/grep.py`` measured it 4-20 times faster than `re` on logs), else with `re`
    (back references, look-arounds), else `bytes.find` for a plain literal. Both regex engines
    see bytes as Latin-1 (``.`` is any byte but a newline, whatever the encoding) and run
    MULTILINE, so ``^`` and ``$`` are the line's ends."""

    def __init__(self, query: Query) -> None:
        source = re.escape(query.pattern) if query.fixed else query.pattern
        literal = query.pattern if query.fixed else _plain(query.pattern)
        self.literal = literal if literal is not None and not query.ignore_case and not query.word else None
        self.engine = "find" if self.literal is not None else "re"
        self._search: Callable[[bytes, int, int], _Match | None] | None = None
        # "A|B|C" of plain strings: one bytes.find per string beats a regex scan (re2's DFA
        # runs at a few hundred MB/s on an alternation; find at GB/s).
        self.alternatives = None if query.fixed or query.ignore_case or query.word else _alternatives(query.pattern)
        if self.alternatives is not None and query.engine == "auto":
            self.engine = "find"
            return
        if query.engine in ("auto", "re2"):
            self._search = _re2_search(source, query)
            if self._search is not None:
                self.engine, self.literal = "re2", None
        if self._search is None:
            if query.engine == "re2":
                raise ValueError("google-re2 does not take this pattern")
            word = _WORD % source if query.word else source
            flags = re.MULTILINE | (re.IGNORECASE if query.ignore_case else 0)
            self._search = re.compile(word, flags).search

    def find(self, buf: bytes, pos: int, end: int) -> tuple[int, int] | None:
        if self.alternatives is not None:
            best: tuple[int, int] | None = None
            for text in self.alternatives:
                start = buf.find(text, pos, end if best is None else min(end, best[0] + len(text)))
                if start >= 0 and (best is None or start < best[0]):
                    best = (start, start + len(text))
            return best
        if self.literal is not None:
            start = buf.find(self.literal, pos, end)
            return None if start < 0 else (start, start + len(self.literal))
        assert self._search is not None
        match = self._search(buf, pos, end)
        return None if match is None else (match.start(), match.end())


class _Match(Protocol):
    def start(self) -> int: ...
    def end(self) -> int: ...


_RE2_WORD = rb"(?:^|[^0-9A-Za-z_])(?:%s)(?:$|[^0-9A-Za-z_])"  # no look-behind in RE2; the line is what counts


def _re2_search(source: bytes, query: Query) -> Callable[[bytes, int, int], _Match | None] | None:
    """google-re2's search for `source`, or None where it is not installed or refuses it."""
    try:
        import re2  # type: ignore[import-untyped]  # google-re2 ships no types
    except ImportError:  # pragma: no cover - a dependency; a platform without its wheel falls back
        return None
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.case_sensitive = not query.ignore_case
    options.never_capture = True
    options.log_errors = False
    try:
        compiled = re2.compile(b"(?m)" + (_RE2_WORD % source if query.word else source), options)
    except re2.error:
        return None
    search: Callable[[bytes, int, int], _Match | None] = compiled.search
    return search


def _alternatives(pattern: bytes) -> list[bytes] | None:
    """The strings of a pattern that is only plain strings joined by ``|``, or None."""
    parts = pattern.split(b"|")
    if len(parts) < 2 or not all(parts) or any(_plain(part) is None for part in parts):
        return None
    return parts


def _plain(pattern: bytes) -> bytes | None:
    """`pattern` if no character of it is special to a regex, else None."""
    return pattern if _META.isdisjoint(pattern) else None


class Stop(Exception):
    """Enough lines of this archive were selected."""


class Sink:
    """Where an archive's findings go. The worker subclasses it to batch them to the parent."""

    def __init__(self, query: Query) -> None:
        self.query = query
        self.selected = 0
        self.limit = 1 if query.mode == "list" else query.max_count

    def line(self, member: str, number: int, text: bytes, length: int) -> None:
        """A selected line: `text` is at most `TEXT_BYTES` of it, `length` its whole size."""

    def warn(self, message: str) -> None:
        """Something of the archive could not be searched: `message` says what and why."""

    def selected_line(self, member: str, number: int, text: bytes, length: int) -> None:
        self.selected += 1
        if self.query.mode == "lines":
            self.line(member, number, text[:TEXT_BYTES], length)
        if self.limit is not None and self.selected >= self.limit:
            raise Stop


class _Lines:
    """The line search of one member's text."""

    def __init__(self, matcher: Matcher, sink: Sink, member: str, invert: bool) -> None:
        self.matcher = matcher
        self.sink = sink
        self.member = member
        self.invert = invert
        self.number = 1  # the number of the line the current buffer starts with
        # A line longer than MAX_LINE, while it streams: its first bytes, its length so far,
        # whether it matched, and the last bytes searched (a window's overlap).
        self.long_head: bytes | None = None
        self.long_length = 0
        self.long_hit = False
        # Blocks without a hit, their newlines not counted yet: most members hold no match,
        # and then their lines are never counted (counting was most of a search's CPU).
        self.held: list[tuple[bytes, int]] = []
        self.held_bytes = 0
        self.lazy = sink.query.mode == "lines" and not invert

    def run(self, source: Stream) -> None:
        carry = b""
        while True:
            chunk = source.read(MAX_LINE)
            if not chunk:
                break
            buf = carry + chunk if carry else chunk
            end = buf.rfind(b"\n") + 1
            if self.long_head is not None:
                if end == 0:
                    self._long_window(buf)
                    carry = b""
                    continue
                first = buf.find(b"\n")
                self._long_window(buf[:first])
                self._long_end()
                buf, end = buf[first + 1 :], end - first - 1
            if end == 0:
                if len(buf) >= MAX_LINE:
                    self.long_head, self.long_length, self.long_hit = buf[:TEXT_BYTES], 0, False
                    self._long_window(buf)
                    carry = b""
                else:
                    carry = buf
                continue
            self._block(buf, end)
            carry = buf[end:]
        if self.long_head is not None:
            self._long_end()
        elif carry:
            self._block(carry + b"\n", len(carry) + 1)  # a last line without its newline

    def _long_window(self, window: bytes) -> None:
        self.long_length += len(window)
        if not self.long_hit and window and self.matcher.find(window, 0, len(window)) is not None:
            self.long_hit = True

    def _settle(self) -> None:
        """Count the newlines of the held blocks: a line number is about to be used."""
        for buf, end in self.held:
            self.number += buf.count(b"\n", 0, end)
        self.held.clear()
        self.held_bytes = 0

    def _long_end(self) -> None:
        self._settle()
        head, self.long_head = self.long_head or b"", None
        if self.long_hit != self.invert:
            self.sink.selected_line(self.member, self.number, head, self.long_length)
        self.number += 1

    def _block(self, buf: bytes, end: int) -> None:
        """The whole lines of ``buf[:end]`` (``buf[end - 1]`` is a newline)."""
        find = self.matcher.find
        invert = self.invert
        numbered = self.sink.query.mode == "lines"
        if self.lazy:
            if find(buf, 0, end) is None:
                self.held.append((buf, end))
                self.held_bytes += end
                while self.held_bytes > HELD_BYTES:
                    first, first_end = self.held.pop(0)
                    self.number += first.count(b"\n", 0, first_end)
                    self.held_bytes -= first_end
                return
            self._settle()
        pos = 0  # where the search goes on: always a line's start
        number = self.number  # the number of the line at `pos`
        while pos < end:
            hit = find(buf, pos, end)
            if hit is None:
                break
            start, stop = hit
            before = buf.rfind(b"\n", pos, start)
            line_start = before + 1 if before >= 0 else pos
            line_end = buf.find(b"\n", start, end)
            # grep matches within one line: a match that ran over its end is tried again inside it.
            matched = (
                stop <= line_end
                or stop == start
                or find(buf[line_start:line_end], 0, line_end - line_start) is not None
            )
            if invert:
                self._unselected(buf, pos, line_start if matched else line_end + 1, number)
            if numbered:
                number += buf.count(b"\n", pos, line_start)
            if matched and not invert:
                self.sink.selected_line(self.member, number, buf[line_start:line_end], line_end - line_start)
            pos = line_end + 1
            number += 1
        if pos < end:
            if invert:
                self._unselected(buf, pos, end, number)
            if numbered:  # -c and -l print no line numbers: the newlines go uncounted
                number += buf.count(b"\n", pos, end)
        self.number = number

    def _unselected(self, buf: bytes, start: int, end: int, number: int) -> None:
        """-v: every line of ``buf[start:end]`` is selected; `number` is the first's."""
        if self.sink.query.mode == "count" and self.sink.limit is None:
            self.sink.selected += buf.count(b"\n", start, end)
            return
        while start < end:
            line_end = buf.find(b"\n", start, end)
            self.sink.selected_line(self.member, number, buf[start:line_end], line_end - start)
            start = line_end + 1
            number += 1


@dataclass
class Walk:
    """The state of one archive's search: what to match, where findings go, its budget."""

    query: Query
    matcher: Matcher
    sink: Sink
    budget: Budget
    inflater: Decompressor
    member_glob: Glob | None
    top_name: str  # the archive's file name: the member name of an archive that is not a container

    texts: int = 0  # members searched, whole or in part

    def search(self, stream: Stream) -> bool:
        """Search the whole archive; a damaged or bombing archive is a warning, not an error.
        False if nothing of it could be searched."""
        try:
            peek, head = Peek.of(stream, TAR_BLOCK)
            if sniff(head) != "gzip":
                raise Damaged("not a gzip archive" if head else "empty")
            self._walk(peek, "", 0)
        except Stop:
            pass
        except (Damaged, Bomb) as exc:
            self.sink.warn(f"damaged: {exc}" if isinstance(exc, Damaged) else str(exc))
            return self.texts > 0
        return True

    def _walk(self, stream: Stream, shown: str, depth: int) -> None:
        peek, head = Peek.of(stream, TAR_BLOCK)
        kind = sniff(head)
        if kind == "data":
            self._text(peek, shown or self.top_name)
            return
        if depth >= MAX_DEPTH:
            self.sink.warn(f"{shown}: nested deeper than {MAX_DEPTH} archives, not searched")
            return
        if kind == "gzip":
            self._walk(Inflate(peek, self.budget, self.inflater), shown, depth + 1)
            return
        members = tar_members(peek) if kind == "tar" else zip_members(peek, self.budget, self.inflater)
        for member in members:
            name = f"{shown}!{member.name}" if shown else member.name
            try:
                self._walk(member.data, name, depth + 1)
            except Damaged as exc:
                if isinstance(member.data, Limited):
                    member.data.drain()  # raises again if it is the container that is damaged
                self.sink.warn(f"{name}: damaged: {exc}")

    def _text(self, stream: Stream, shown: str) -> None:
        if self.member_glob is not None:
            leaf = shown.rsplit("!", 1)[-1]
            if not (self.member_glob(shown) or self.member_glob(leaf)):
                return
        self.texts += 1
        _Lines(self.matcher, self.sink, shown, self.query.invert).run(stream)
