"""A typed reader of YAML nodes, for files a person writes: the inventory.

A file is composed into nodes rather than handed to ``yaml.safe_load``: nodes keep their line
numbers for the errors, duplicate keys can be refused (a constructed dict silently keeps the
last one), and no tag beyond plain YAML can construct anything. `NodeReader` reads one node as
a mapping, a list, a string, a boolean or a value of given tags, with an `InventoryError` that
names the file, the line and the key path (``projects[1].servers[3].id``) for anything else.

It knows nothing of what the file means: `collector.config.inventory` walks its schema with it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import yaml

from collector.errors import InventoryError
from collector.text import quoted

__all__ = [
    "BOOL",
    "BROKEN",
    "NULL",
    "Entry",
    "NodeReader",
    "Stopped",
    "broken",
    "compose",
    "given",
    "got",
    "join",
    "line_of",
]

YAML = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (YAML + t for t in ("str", "int", "float", "bool", "null"))
TIMESTAMP, MAP, SEQ, MERGE = (YAML + t for t in ("timestamp", "map", "seq", "merge"))
# The tags plain YAML resolves to by itself; any other (!!python/..., !!binary, !custom) is refused.
SCALAR_TAGS = frozenset({STR, INT, FLOAT, BOOL, NULL, TIMESTAMP})
_KINDS = {INT: "the integer", FLOAT: "the number", BOOL: "the boolean", TIMESTAMP: "the date"}
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")

_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_T = TypeVar("_T")


def _compose_text(text: str, fast: Any = None) -> yaml.Node | None:
    """Compose with libyaml where PyYAML has it (three times faster on a 10,000-server file).

    libyaml refuses a few corners the pure-Python parser accepts (``{tags:}``), and words its
    errors differently; so on any complaint the pure-Python parser decides, and its message
    is the one the user sees.
    """
    fast = fast or getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return yaml.compose(text, Loader=fast)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def compose(path: Path, fast: Any = None) -> yaml.Node:
    """The file's YAML node tree; every way of not getting one is an `InventoryError`.
    `fast` composes in libyaml's stead, given the text (the pure-Python parser stays the judge)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InventoryError(path, "no such file", hint="check the inventory's path") from None
    except IsADirectoryError:
        raise InventoryError(path, "is a directory", hint="give the inventory file's path") from None
    except OSError as exc:
        raise InventoryError(
            path, f"cannot be read ({exc.strerror or exc})", hint="check the file's permissions"
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InventoryError(path, "not UTF-8 text", line=line, hint="save the file as UTF-8") from None
    try:
        root = _compose_text(text, fast)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = ", ".join(part for part in (exc.context, exc.problem) if part).replace("\n", " ")
        hint = (
            "indent with spaces, not tabs"
            if "'\\t'" in detail
            else "check the indentation, colons and quotes on that line and the one before"
        )
        raise InventoryError(
            path, f"not valid YAML: {detail}", line=mark.line + 1 if mark else None, hint=hint
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise InventoryError(path, f"character {char!r} is not allowed in YAML", line=line, hint="remove it") from None
    except RecursionError:
        raise InventoryError(path, "nested too deeply", hint="see configs/example-inventory.yaml") from None
    if root is None:
        raise InventoryError(path, "the file is empty", hint="see configs/example-inventory.yaml")
    return root


class Entry(NamedTuple):
    key: yaml.Node
    value: yaml.Node


class Stopped(Exception):
    """A part of the file has problems, already recorded: stop checking that part."""


class Broken:
    """What a part of the file stands for once it has a problem, so later checks stay quiet
    about it (a project whose default endpoint is wrong is not also "missing" one)."""

    def __repr__(self) -> str:
        return "<broken>"


BROKEN = Broken()


def broken(*values: object) -> bool:
    """Whether any of `values` is `BROKEN`: a part whose problems are already recorded."""
    return any(value is BROKEN for value in values)


class NodeReader:
    """Reads nodes of the file at `path`, recording problems. A `key` is a path like ``servers[3].id``.

    A check raises `InventoryError` at the first problem in its part of the file; `part`
    records it and goes on with the next part.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[InventoryError] = []
        self._meant: dict[str, set[str]] = {}  # by a mapping's key path: the keys its misspelt keys were close to
        self._lost: set[int] = set()  # the entries (by id) of mappings that lost a key to a problem

    def error(self, node: yaml.Node | None, key: str | None, message: str, hint: str) -> InventoryError:
        line = None if node is None else line_of(node)
        return InventoryError(self.path, message, key=key or None, line=line, hint=hint)

    def part(self, check: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """`check(...)`, or `BROKEN` once its problems are recorded."""
        try:
            return check(*args, **kwargs)
        except InventoryError as exc:
            self.problems.append(exc)
        except Stopped:
            pass
        # The placeholder stands in for a value of any type until its part is abandoned: every
        # caller checks `BROKEN in (...)` before using what it got.
        return cast(_T, BROKEN)

    def stop_if_any(self) -> None:
        if self.problems:
            raise Stopped

    def plain(self, node: yaml.Node, key: str) -> None:
        """Refuse any tag plain YAML would not give this node by itself."""
        if isinstance(node, yaml.MappingNode):
            allowed: Collection[str] = (MAP,)
        elif isinstance(node, yaml.SequenceNode):
            allowed = (SEQ,)
        else:
            allowed = SCALAR_TAGS
        if node.tag not in allowed:
            raise self.error(
                node,
                key,
                f"the YAML tag {node.tag.replace(YAML, '!!')} is not allowed",
                hint="remove the tag: plain strings, numbers, lists and mappings are enough",
            )

    def mapping(self, node: yaml.Node, key: str, allowed: Collection[str] | None, *, hint: str) -> dict[str, Entry]:
        """The mapping's entries by name; `allowed` None lets any name through."""
        self.plain(node, key)
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, f"expected a mapping, got {got(node)}", hint=hint)
        entries: dict[str, Entry] = {}
        meant: set[str] = set()
        for key_node, value_node in node.value:
            try:
                name = self.entry_name(key_node, key, entries, allowed, hint=hint)
            except InventoryError as exc:
                # Recorded, and the rest of the mapping is still checked: every problem of the
                # file in one pass, not one round per fix.
                self.problems.append(exc)
                if allowed is not None and isinstance(key_node, yaml.ScalarNode):
                    meant.update(difflib.get_close_matches(str(key_node.value), list(allowed), n=1))
                continue
            entries[name] = Entry(key_node, value_node)
        if len(entries) < len(node.value):
            self._lost.add(id(entries))
        if meant:  # not a set per mapping: an inventory lists 100,000 servers as mappings
            self._meant.setdefault(key, set()).update(meant)
        return entries

    def incomplete(self, fields: Mapping[str, Entry]) -> bool:
        """Whether `fields` (from `mapping`) lost keys to problems already reported: what it
        lacks may be one of them, so "missing" would only repeat the same mistake."""
        return id(fields) in self._lost

    def entry_name(
        self,
        key_node: yaml.Node,
        key: str,
        entries: Mapping[str, Entry],
        allowed: Collection[str] | None,
        *,
        hint: str,
    ) -> str:
        if key_node.tag == MERGE:
            raise self.error(
                key_node,
                join(key, "<<"),
                "merge keys are not supported",
                hint="write the keys out (an alias, *name, can still stand for a whole value)",
            )
        if not isinstance(key_node, yaml.ScalarNode):
            raise self.error(key_node, key, f"expected a name as key, got {got(key_node)}", hint=hint)
        self.plain(key_node, key)
        name: str = key_node.value
        child = join(key, name)
        if name in entries:
            raise self.error(
                key_node,
                child,
                f"duplicate key, first given on line {line_of(entries[name].key)}",
                hint="keep only one of them",
            )
        if allowed is not None and name not in allowed:
            raise self.error(key_node, child, "unknown key", hint=did_you_mean(name, allowed))
        return name

    def sequence(self, node: yaml.Node, key: str, *, hint: str) -> list[yaml.Node]:
        self.plain(node, key)
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, key, f"expected a list, got {got(node)}", hint=hint)
        items: list[yaml.Node] = node.value
        return items

    def string(self, node: yaml.Node, key: str) -> str:
        self.plain(node, key)
        if isinstance(node, yaml.ScalarNode) and node.tag == STR:
            text: str = node.value
            return text
        if not isinstance(node, yaml.ScalarNode):
            hint = "give a single string"
        elif node.tag == NULL:
            hint = "give a value here, or remove it"
        else:
            # YAML reads 0123 as the integer 83 and 1e3 as 1000.0: only quotes keep it as written.
            hint = f'quote it, "{node.value}", so YAML keeps it as written'
        raise self.error(node, key, f"expected a string, got {got(node)}", hint=hint)

    def typed(self, node: yaml.Node, key: str, tags: Collection[str], expected: str, *, hint: str) -> Any:
        """The Python value of a scalar tagged as one of `tags`.

        Tags, not Python types, decide: YAML's `true` is a bool even though Python's bool is an int.
        """
        self.plain(node, key)
        if node.tag in tags:
            try:
                return _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)
            except (ValueError, KeyError, IndexError):  # an explicit tag on a bad value: !!int abc
                pass
        raise self.error(node, key, f"expected {expected}, got {got(node)}", hint=hint)

    def boolean(self, node: yaml.Node, key: str) -> bool:
        return bool(self.typed(node, key, (BOOL,), "true or false", hint="write true or false"))

    def required(
        self,
        fields: Mapping[str, Entry],
        node: yaml.Node | None,
        key: str,
        name: str,
        *,
        hint: str,
    ) -> yaml.Node:
        if name not in fields:
            if name in self._meant.get(key, ()):
                raise Stopped  # its misspelling is already reported, with "did you mean"
            raise self.error(node, join(key, name), "required but missing", hint=hint)
        return fields[name].value


def given(fields: Mapping[str, Entry], name: str) -> yaml.Node | None:
    """The value of an optional key, or None if it is absent or empty (null).

    Empty counts as absent so that a section with every line commented out, or a generated
    inventory writing ``name: null``, means what it looks like.
    """
    entry = fields.get(name)
    return None if entry is None or entry.value.tag == NULL else entry.value


def did_you_mean(name: str, allowed: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    if close:
        return f"did you mean {close[0]}?"
    if not allowed:
        return "no keys are allowed here: write {}"
    return "the keys allowed here are " + ", ".join(allowed)


NAME_LIMIT = 60  # characters of one key in a key path: enough to recognise it, never a megabyte


def join(parent: str, name: str) -> str:
    """The key path of `name` under `parent` (``projects[0].servers``), each key cut short."""
    if len(name) > NAME_LIMIT:
        name = f"{name[:NAME_LIMIT]}...[{len(name) - NAME_LIMIT} more]"
        part = f"[{name!r}]"
    else:
        part = name if _PLAIN_NAME.fullmatch(name) else f"[{name!r}]"
    if not parent:
        return part
    return f"{parent}{part}" if part.startswith("[") else f"{parent}.{part}"


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def got(node: yaml.Node) -> str:
    """What `node` is, for "expected X, got Y"."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == NULL:
        return "nothing"
    if node.tag == STR:
        return f"the string {quoted(node.value)}"
    shown = node.value if len(node.value) <= 40 and node.value.isprintable() else quoted(node.value)
    return f"{_KINDS.get(node.tag, 'the value')} {shown}"
