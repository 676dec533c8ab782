"""Which servers a sweep takes: the `--select EXPR` of `collector run` and `collector validate`.

During an incident the operator wants the logs of *some* servers of a large inventory: a rack,
the nodes named in a ticket, everything but the ones already collected. An expression is a
list of terms separated by ``,``; several ``--select`` flags count as if joined with ``,``.

    id:GLOB          the server id matches
    name:GLOB        the server's name matches (a server without a name never does)
    tag:KEY=GLOB     the server has the tag KEY (matched exactly) and its value matches
    project:GLOB     the server's project id matches
    GLOB             the id or the name matches
    @FILE            every term in FILE: one or more per line, ``,`` or newline apart;
                     blank lines and ``#`` comments are ignored (a ticket's list of ids)

Globs are `fnmatch` patterns (``*``, ``?``, ``[...]``, ``[!...]``), case-sensitive and
anchored: ``name:node-1`` selects node-1 only, ``name:node-1*`` also node-10. A term starting
with ``&`` intersects, one starting with ``!`` excludes. As in Ansible's host patterns
(``InventoryManager._evaluate_patterns``), the order terms are written in does not matter:
first the union of the plain terms (every server if there is none), then each ``&`` term
narrows it, then every ``!`` term removes from it:

    selected = (T1 ∪ T2 ∪ ...  or everything)  ∩ A1 ∩ A2 ...  \\ (N1 ∪ N2 ...)

``&@FILE`` intersects with the union of the file's terms, ``!@FILE`` excludes every one of
them (so ``!@done.txt`` skips the servers listed in done.txt); their lines carry no ``&``/``!``
of their own. A plain ``@FILE``'s lines are terms of the expression, ``&``/``!`` included.
A file is read relative to the current directory; files do not include other files.

Every mistake is a `UsageError` with one line and a hint, raised before anything is sent,
and so is a selection that matches no server. Globs are compiled once, by `fnmatch.translate`
(which escapes everything else); globs without wildcards compare as strings, so a file of
thousands of ids costs one set lookup per server.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from collector.errors import UsageError
from collector.text import clean_text, quoted

__all__ = ["Glob", "Selection", "glob_problem", "parse_selection"]

PREFIXES = ("id", "name", "tag", "project")
MAX_FILE_BYTES = 16 * 1024 * 1024  # a pasted list of 100,000 ids is ~3 MB
_WILDCARDS = frozenset("*?[")
_TERMS = "id:GLOB, name:GLOB, tag:KEY=GLOB, project:GLOB or a bare GLOB (id or name)"
GLOB_HINT = "close it with ']', or write '[[]' for a literal '['"  # for a `glob_problem`


def glob_problem(text: str) -> str | None:
    """Why `text` is not a usable glob, or None.

    fnmatch reads a ``[`` that is never closed as a literal ``[``; nobody means that, and a
    selection that then matches nothing would only say so at the end. ``]`` alone stays literal.
    """
    index, length = 0, len(text)
    while index < length:
        if text[index] == "[":
            # fnmatch's own reading: after "[" an optional "!", then a "]" that is a member.
            end = index + 1
            if end < length and text[end] == "!":
                end += 1
            if end < length and text[end] == "]":
                end += 1
            end = text.find("]", end)
            if end < 0:
                return f"the '[' at character {index + 1} is never closed"
            index = end
        index += 1
    return None


class Glob:
    """One fnmatch pattern, compiled once: ``Glob("db-*")("db-01")`` is True.

    Case-sensitive and anchored, as `fnmatch.fnmatchcase`. Raises `ValueError` (with
    `glob_problem`'s words) for an unclosed ``[``.
    """

    __slots__ = ("_match", "literal", "text")

    def __init__(self, text: str) -> None:
        problem = glob_problem(text)
        if problem:
            raise ValueError(problem)
        self.text = text
        self.literal = _WILDCARDS.isdisjoint(text)
        self._match = None if self.literal else re.compile(fnmatch.translate(text)).match

    def __call__(self, value: str | None) -> bool:
        if value is None:
            return False
        if self._match is None:
            return value == self.text
        return self._match(value) is not None

    def __repr__(self) -> str:
        return f"Glob({self.text!r})"


class _Patterns:
    """Globs for one field, any of which may match: literals in a set, the rest in a list."""

    __slots__ = ("globs", "literals")

    def __init__(self) -> None:
        self.literals: set[str] = set()
        self.globs: list[Glob] = []

    def add(self, glob: Glob) -> None:
        if glob.literal:
            self.literals.add(glob.text)
        else:
            self.globs.append(glob)

    def update(self, other: _Patterns) -> None:
        self.literals |= other.literals
        self.globs += other.globs

    def __call__(self, value: str | None) -> bool:
        if value is None:
            return False
        return value in self.literals or any(glob(value) for glob in self.globs)

    def __bool__(self) -> bool:
        return bool(self.literals or self.globs)


class _ServerLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def tags(self) -> Mapping[str, str]: ...


class _Union:
    """A union of terms, kept by field so that matching a server is a few lookups."""

    def __init__(self) -> None:
        self.ids = _Patterns()
        self.names = _Patterns()
        self.either = _Patterns()  # bare globs: the id or the name
        self.projects = _Patterns()
        self.tags: dict[str, _Patterns] = {}

    def add(self, term: _Term) -> None:
        if term.field == "tag":
            self.tags.setdefault(term.key, _Patterns()).add(term.glob)
        else:
            getattr(self, _FIELDS[term.field]).add(term.glob)

    def update(self, other: _Union) -> _Union:
        """Add every term of `other` to this union; returns self."""
        for name in _FIELDS.values():
            getattr(self, name).update(getattr(other, name))
        for key, patterns in other.tags.items():
            self.tags.setdefault(key, _Patterns()).update(patterns)
        return self

    def matches(self, project_id: str, server: _ServerLike) -> bool:
        if self.ids(server.id) or self.names(server.name) or self.projects(project_id):
            return True
        if self.either and (self.either(server.id) or self.either(server.name)):
            return True
        if self.tags:
            tags = server.tags
            return any(patterns(tags.get(key)) for key, patterns in self.tags.items())
        return False


_FIELDS = {"id": "ids", "name": "names", "any": "either", "project": "projects"}


@dataclass(frozen=True, slots=True)
class _Term:
    field: str  # "id", "name", "any", "project" or "tag"
    glob: Glob
    key: str = ""  # the tag's key


def _term_matches(term: _Term, project_id: str, server: _ServerLike) -> bool:
    group = _Union()
    group.add(term)
    return group.matches(project_id, server)


class _ProjectLike(Protocol):
    @property
    def project_id(self) -> str: ...


_Target = TypeVar("_Target", bound=tuple[_ProjectLike, _ServerLike])


@dataclass(frozen=True)
class Selection:
    """The servers `--select` chose; `parse_selection` builds it. Matching is pure and cheap.

    `text` is the expressions as given, joined with ``,`` (``@FILE`` as written, not its
    contents), for messages. With no expression at all every server matches.
    """

    text: str
    _union: _Union | None = field(repr=False)  # None: no plain term, start from every server
    _intersections: tuple[_Union, ...] = field(repr=False)
    _exclusion: _Union | None = field(repr=False)
    _terms: tuple[tuple[str, _Term], ...] = field(default=(), repr=False)  # (how to name it, the term)

    @property
    def everything(self) -> bool:
        """Whether this selection is no selection at all (no `--select` given)."""
        return self._union is None and not self._intersections and self._exclusion is None

    def matches(self, project_id: str, server: _ServerLike) -> bool:
        if self._union is not None and not self._union.matches(project_id, server):
            return False
        if not all(group.matches(project_id, server) for group in self._intersections):
            return False
        return self._exclusion is None or not self._exclusion.matches(project_id, server)

    def apply(self, targets: Iterable[_Target]) -> list[_Target]:
        """The (project, server) pairs of `targets` that match, in their order.

        Raises `UsageError` if none does: a sweep of nothing is a mistake in the expression.
        """
        total = 0
        chosen = []
        for target in targets:
            total += 1
            project, server = target
            if self.matches(project.project_id, server):
                chosen.append(target)
        self.require_match(len(chosen), total)
        return chosen

    def unmatched(self, targets: Iterable[_Target]) -> list[str]:
        """The terms (as written, with their file and line) that match none of `targets`:
        a ticket's id mistyped, or pasted where it does not belong, is said, not dropped."""
        literals: dict[tuple[str, str, str], list[str]] = {}
        globs: list[tuple[str, _Term]] = []
        for label, term in self._terms:
            if term.glob.literal:
                literals.setdefault((term.field, term.key, term.glob.text), []).append(label)
            else:
                globs.append((label, term))
        for project, server in targets:
            if not literals and not globs:
                break
            values = [("id", "", server.id), ("any", "", server.id), ("project", "", project.project_id)]
            if server.name is not None:
                values += [("name", "", server.name), ("any", "", server.name)]
            values += [("tag", key, value) for key, value in server.tags.items()]
            for value in values:
                literals.pop(value, None)
            globs = [(label, term) for label, term in globs if not _term_matches(term, project.project_id, server)]
        left = {label for labels in literals.values() for label in labels} | {label for label, _ in globs}
        return [label for label, _ in self._terms if label in left]

    def require_match(self, count: int, total: int | None = None) -> None:
        """Raise `UsageError`, quoting the expression, if `count` servers (of `total`) is none."""
        if count:
            return
        among = "no server" if total is None else f"none of the {total:,} servers"
        raise UsageError(
            f"--select {quoted(self.text, 120)}: {among} matches",
            hint="globs are case-sensitive and match the whole id or name"
            " (name:node-1* also selects node-10; name:node-1 only node-1);"
            " collector validate --select ... shows how many match",
        )

    def describe(self, count: int, total: int) -> str:
        """One line for `collector validate`: "12 of 2,500 servers match name:node-1*"."""
        if self.everything:
            return f"{total:,} of {total:,} servers (no --select)"
        verb = "matches" if count == 1 else "match"
        return f"{count:,} of {total:,} servers {verb} {clean_text(self.text, 200)}"


SHOWN_TERMS = 10  # unmatched terms a warning names


def unmatched_line(labels: list[str], flag: str = "--select") -> str:
    """``--select: 2 terms match no server: 'id1', suspects.txt:3: 'id2'``."""
    shown = ", ".join(labels[:SHOWN_TERMS])
    if len(labels) > SHOWN_TERMS:
        shown += f" and {len(labels) - SHOWN_TERMS} more"
    several = len(labels) != 1
    return f"{flag}: {len(labels)} term{'s' * several} match{'es' * (not several)} no server: {shown}"


def parse_selection(exprs: Iterable[str], *, cwd: str | os.PathLike[str] | None = None) -> Selection:
    """The `Selection` of the `--select` expressions `exprs` (one per flag), or `UsageError`.

    `cwd` is where ``@FILE`` paths are found (the current directory by default).
    """
    exprs = list(exprs)
    builder = _Builder(Path.cwd() if cwd is None else Path(cwd))
    for expr in exprs:
        for piece in expr.split(","):
            builder.term(piece, _Failure(expr, None))
    return builder.selection(",".join(exprs))


class _Builder:
    """Sorts terms into the union, the intersections and the exclusion as they come."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.union: _Union | None = None
        self.intersections: list[_Union] = []
        self.exclusion: _Union | None = None
        self.terms: list[tuple[str, _Term]] = []

    def selection(self, text: str) -> Selection:
        return Selection(text, self.union, tuple(self.intersections), self.exclusion, tuple(self.terms))

    def parsed(self, text: str, fail: _Failure) -> _Term:
        term = _parse_term(text, fail)
        self.terms.append((fail.label(), term))
        return term

    def term(self, piece: str, context: _Failure) -> None:
        """Add one comma-separated piece; `context` quotes the expression or file line."""
        text = piece.strip()
        if not text:
            raise context("an empty term", "remove the extra ',' (or give a term between the commas)")
        fail = context.about(text)
        op, rest = (text[0], text[1:].lstrip()) if text[0] in "&!" else ("", text)
        if not rest:
            raise fail(f"nothing after '{op}'", f"write {op}TERM, like {op}name:db-*")
        if rest[0] in "&!":
            raise fail("a term takes one '&' or '!'", "write &TERM to intersect, !TERM to exclude")
        if rest[0] == "@":
            if context.where is not None:
                raise fail("a file cannot include another file", "list the terms themselves")
            self.file(op, rest[1:].strip(), fail)
            return
        group = _Union()
        group.add(self.parsed(rest, fail))
        self.place(op, group)

    def file(self, op: str, name: str, fail: _Failure) -> None:
        if not name:
            raise fail("no file name after '@'", "write @FILE, like @ids.txt")
        lines = _file_lines(self.base / os.path.expanduser(name), name)
        if not lines:
            raise fail(
                "the file lists no servers",
                "put one id, name or term per line (an empty selection would mean every server)",
            )
        if not op:
            for number, line in lines:
                context = _Failure(line, f"{name}:{number}")
                for piece in _pieces(line):
                    self.term(piece, context)
            return
        # &@FILE and !@FILE: the file's terms are one group, their union.
        group = _Union()
        for number, line in lines:
            context = _Failure(line, f"{name}:{number}")
            for text in _pieces(line):
                if text[0] in "&!@":
                    raise context.about(text)(
                        f"'{text[0]}' inside a file read with '{op}@'",
                        f"list plain terms in it, or read it with @{name}",
                    )
                group.add(self.parsed(text, context.about(text)))
        self.place(op, group)

    def place(self, op: str, group: _Union) -> None:
        if op == "&":
            self.intersections.append(group)
        elif op == "!":
            self.exclusion = group if self.exclusion is None else self.exclusion.update(group)
        else:
            self.union = group if self.union is None else self.union.update(group)


@dataclass(frozen=True, slots=True)
class _Failure:
    """Builds the one-line `UsageError` for a term: ``--select 'nmae:x': unknown prefix 'nmae'``."""

    text: str  # the term, or the expression or line it was in
    where: str | None  # "ids.txt:3" for a line of a file

    def about(self, term: str) -> _Failure:
        return _Failure(term, self.where)

    def label(self) -> str:
        """The term as a warning names it: ``id1`` or ``suspects.txt:3: id1``."""
        term = quoted(self.text, 60)
        return term if self.where is None else f"{clean_text(self.where, 160)}: {term}"

    def __call__(self, problem: str, hint: str) -> UsageError:
        origin = "--select" if self.where is None else f"--select @{clean_text(self.where, 80)}:"
        return UsageError(f"{origin} {quoted(self.text, 60)}: {problem}", hint)


def _parse_term(text: str, fail: _Failure) -> _Term:
    """One term without its `&`/`!`: ``name:db-*``, ``tag:rack=A1*``, ``2102313YJK*``."""
    prefix, colon, rest = text.partition(":")
    if colon and prefix.isascii() and prefix.isalpha():
        word = prefix.lower()
        if word not in PREFIXES or word != prefix:
            close = difflib.get_close_matches(word, PREFIXES, n=1, cutoff=0.6)
            if close:
                hint = f"did you mean {close[0]}:?"
            else:
                hint = f"a term is {_TERMS}; for an id or name holding ':', write id:GLOB or name:GLOB"
            raise fail(f"unknown prefix '{clean_text(prefix, 20)}'", hint)
        if word == "tag":
            key, equals, value = rest.partition("=")
            if not equals:
                example = clean_text(rest, 40) if rest else "rack"
                hint = f"write tag:KEY=GLOB, like tag:{example}=A1* (tag:{example}=* for any value)"
                raise fail("tag: without '='", hint)
            if not key:
                raise fail("the tag's key is empty", "write tag:KEY=GLOB, like tag:rack=A1*")
            return _Term("tag", _glob(value, fail, f"tag:{key}="), key)
        return _Term(word, _glob(rest, fail, f"{word}:"))
    return _Term("any", _glob(text, fail, ""))


def _glob(text: str, fail: _Failure, prefix: str) -> Glob:
    if not text:
        example = "*" if prefix.startswith("tag:") else "db-*"
        raise fail(f"nothing after '{prefix}'", f"give a pattern, like {prefix}{example}")
    try:
        return Glob(text)
    except ValueError as exc:
        raise fail(str(exc), GLOB_HINT) from None


def _file_lines(path: Path, name: str) -> list[tuple[int, str]]:
    """(line number, text) of every line of `path` that holds terms; reading errors as usage."""

    def problem(what: str, hint: str) -> UsageError:
        return UsageError(f"--select @{clean_text(name, 120)}: {what}", hint)

    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        where = clean_text(str(path.parent), 80)
        raise problem("no such file", f"@FILE is read relative to the current directory ({where})") from None
    except IsADirectoryError:
        raise problem("is a directory", "give a file listing one term per line") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise problem(f"cannot be read ({clean_text(reason, 80)})", "check the path and its permissions") from None
    if len(data) > MAX_FILE_BYTES:
        raise problem(f"is larger than {MAX_FILE_BYTES:,} bytes", "select fewer servers per file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_line = data.count(b"\n", 0, exc.start) + 1
        raise problem(f"line {bad_line} is not UTF-8 text", "save the file as UTF-8") from None
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _without_comment(raw).strip()
        if line:
            lines.append((number, line))
    return lines


def _pieces(line: str) -> list[str]:
    """The terms of one line of a selection file: separated by commas or white space, as ids
    are pasted from a ticket (``id1 id2``, ``id1, id2``). A glob for a name with a space in
    it uses ``?`` (``name:rack?7``)."""
    return [piece for piece in re.split(r"[,\s]+", line) if piece]


def _without_comment(line: str) -> str:
    """`line` up to a ``#`` that starts it or follows whitespace (``id1  # db-01, dead PSU``)."""
    for index, char in enumerate(line):
        if char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line
