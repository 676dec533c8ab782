"""Every setting of a run, declared once.

A setting is a field of `Settings` whose metadata (an `Option`) says how people give it: its
kind, which decides how a flag's text and an inventory value are read and checked; its help;
its flag; whether the inventory's ``collector:`` section may set it (under the field's name).
Everything else is derived from these declarations, so nothing can drift:

- the flags of ``collector run`` and ``collector demo`` (`add_flags`, `given`);
- the check of a value, `check_value`, with its message and `HINTS`: the flags' parsers read
  the text into the kind's type, the inventory's ``collector:`` section the YAML value
  (`collector.config.inventory` reads `BY_KEY`), and both leave the rest to it;
- the order of precedence, defaults < inventory < flags (`resolve`);
- the flag table in the README (`markdown_table`; a test keeps the README identical to it).

Fields without an `Option` (`poll_max`, `policy`) are for tests and tuning, not for users.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from collector.control.endpoint import DEAD_AFTER, OUTAGE_TIMEOUT
from collector.control.throttle import RetryPolicy
from collector.text import quoted

__all__ = [
    "BY_KEY",
    "HINTS",
    "OPTIONS",
    "BadValue",
    "Deadline",
    "FailureBudget",
    "Kind",
    "Option",
    "Settings",
    "add_flags",
    "check_value",
    "given",
    "markdown_table",
    "parse_budget",
    "parse_deadline",
    "parse_size",
    "resolve",
    "size_in_bytes",
]


class Kind(enum.Enum):
    """How a value is written and checked, on the command line and in the inventory alike."""

    COUNT = "count"  # a whole number, at least 1
    POSITIVE = "positive"  # a number above 0
    NON_NEGATIVE = "non-negative"  # a number, 0 or more
    SIZE = "size"  # bytes: 8589934592, or 512M, 8G (binary units)
    CHOICE = "choice"  # one of `choices`
    SWITCH = "switch"  # on or off; the flag sets the opposite of the default
    REPEAT = "repeat"  # a flag counted each time it is given (-v, -vv)
    BUDGET = "budget"  # a number of servers, 5, or a share of the run's servers, 2%
    TEXT = "text"  # a non-empty string: a URL, a path
    DEADLINE = "deadline"  # a duration, 15m, 90s, 1h30m, or a time with its zone, 2026-12-06T21:00Z


@dataclass(frozen=True, slots=True)
class Option:
    """How one setting is given: see the module's docstring."""

    kind: Kind
    help: str  # one line; `backticks` are for the README and dropped from --help
    default: Any = None
    flags: tuple[str, ...] = ()  # empty: --name-with-dashes
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    yaml: bool = True  # the inventory's `collector:` section may set it
    run_only: bool = False  # a flag of `collector run` only, not of the demo
    name: str = ""  # the Settings field and YAML key; filled in from the field

    @property
    def flag(self) -> str:
        return self.flags[0] if self.flags else "--" + self.name.replace("_", "-")

    def shown_default(self) -> str:
        """The default as a person would type it; empty for a switch."""
        if self.kind in (Kind.SWITCH, Kind.REPEAT):
            return ""
        if self.default is None:
            return "none"
        if self.kind is Kind.SIZE:
            return format_size(self.default)
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


_RETRY_POLICY = RetryPolicy()  # frozen: every Settings shares the one default


def _setting(default: Any, kind: Kind, help: str, **how: Any) -> Any:
    """A `Settings` field declared with how people give it."""
    return field(default=default, metadata={"option": Option(kind, help, default, **how)})


@dataclass(frozen=True)
class Settings:
    """Everything a run can be told, with the defaults users get. See the module's docstring."""

    verify: bool = _setting(
        False, Kind.SWITCH, "rehash archives earlier runs collected before skipping them", run_only=True
    )
    concurrency: int = _setting(
        8192,
        Kind.COUNT,
        "at most this many servers between their export and the end of their download (each holds "
        "a few KB meanwhile; fewer are started while the API's rate cannot keep more busy)",
        metavar="N",
    )
    downloads: int = _setting(16, Kind.COUNT, "archive transfers at a time", metavar="N")
    rate: float = _setting(
        20.0,
        Kind.POSITIVE,
        "starting requests per second per endpoint; the limiter then learns the API's budget",
        metavar="R",
    )
    max_rate: float | None = _setting(
        None, Kind.POSITIVE, "never more requests per second than this, whatever the limiter learns", metavar="R"
    )
    poll_interval: float = _setting(
        5.0,
        Kind.POSITIVE,
        "seconds before the first status poll, until the run has seen how long "
        "exports take; then polls are aimed at each export's expected end",
        metavar="S",
    )
    export_timeout: float = _setting(
        1800.0,
        Kind.POSITIVE,
        "seconds an export may take, from its acceptance, before the server is failed (judged on the server's "
        "answers: a poll held up by our own rate limit does not count against it)",
        metavar="S",
    )
    read_timeout: float = _setting(
        60.0,
        Kind.POSITIVE,
        "seconds without a byte before a transfer is retried (there is no total timeout)",
        metavar="S",
    )
    connect_timeout: float = _setting(
        30.0,
        Kind.POSITIVE,
        "seconds to open a connection to the API or a download origin before the attempt is retried",
        metavar="S",
    )
    outage_timeout: float = _setting(
        OUTAGE_TIMEOUT,
        Kind.POSITIVE,
        "seconds an endpoint that answered before may stay unreachable before its servers are stopped as pending",
        metavar="S",
    )
    grace: float = _setting(
        20.0, Kind.NON_NEGATIVE, "seconds running downloads get to finish after SIGINT/SIGTERM", metavar="S"
    )
    max_archive_bytes: int = _setting(
        8 * 1024**3, Kind.SIZE, "a larger archive fails that server; bytes, or a size like `512M`", metavar="SIZE"
    )
    progress: bool = _setting(
        True,
        Kind.SWITCH,
        "no live display; a progress line is logged every 10 s instead (always so when stderr is not a terminal)",
        flags=("--no-progress",),
    )
    log_format: str = _setting("text", Kind.CHOICE, "`json` for one JSON object per log line", choices=("text", "json"))
    max_failures: FailureBudget | None = _setting(  # noqa: RUF009 -- _setting returns a dataclasses.field
        None,
        Kind.BUDGET,
        "once more servers than this have failed (a number, or a share like `5%`), "
        "start nothing new, let running downloads finish within --grace, leave the rest pending "
        "and exit 5",
        metavar="N|P%",
    )
    s3_endpoint: str | None = _setting(
        None,
        Kind.TEXT,
        "object storage endpoint for `-o s3://` or `obs://` (else `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`)",
        metavar="URL",
    )
    s3_buffer: int = _setting(
        32 * 1024**2,
        Kind.SIZE,
        "memory for archive parts on their way to `-o s3://`, shared by all transfers (at least one 8M part): "
        "a transfer waits for room rather than growing the process",
        metavar="SIZE",
    )
    metrics_file: str | None = _setting(
        None,
        Kind.TEXT,
        "write Prometheus metrics to this file every 10 s and at the end (for node_exporter's textfile collector); "
        "its folder must exist and be writable, checked before the first request",
        metavar="PATH",
    )
    pushgateway: str | None = _setting(
        None,
        Kind.TEXT,
        "push Prometheus metrics to this Pushgateway once, at the end (put a URL with "
        "a password in the inventory, not on the command line)",
        metavar="URL",
    )
    metrics_job: str = _setting("collector", Kind.TEXT, "the Pushgateway job name", metavar="NAME")
    deadline: Deadline | None = _setting(  # noqa: RUF009 -- _setting returns a dataclasses.field
        None,
        Kind.DEADLINE,
        "end the run at this time (a duration from the start like `15m`, `90s`, `1h30m`, or a time like "
        "`2026-12-06T21:00Z`); what is not collected by then is pending, to resume, and the run exits 6",
        metavar="WHEN",
    )
    state_dir: str | None = _setting(
        None,
        Kind.TEXT,
        "the collector's own state: the learned request rates and export times, and the journal and lock of an `s3://` "
        "output (default: `$XDG_STATE_HOME/collector`, a folder per destination for the journals)",
        metavar="PATH",
    )
    # Not for users: tests scale these down.
    poll_max: float = 60.0
    dead_after: float = DEAD_AFTER  # an endpoint that never answered is given up this long after its first request
    policy: RetryPolicy = _RETRY_POLICY


SETTINGS: tuple[Option, ...] = tuple(
    replace(f.metadata["option"], name=f.name) for f in fields(Settings) if "option" in f.metadata
)
BY_KEY: Mapping[str, Option] = {option.name: option for option in SETTINGS if option.yaml}

# Flags that are about this one invocation, not settings of the run.
# The collector's own folder inside OUT: the journal, its lock, shards' journals, crash files.
JOURNAL_DIR = ".collector"

FRESH = Option(
    Kind.SWITCH, "ignore the journal of earlier runs into this folder", False, yaml=False, run_only=True, name="fresh"
)
VERBOSE = Option(
    Kind.REPEAT, "retries and more (`-vv` for debug)", 0, flags=("-v", "--verbose"), yaml=False, name="verbose"
)

# Every flag `collector run` takes besides -i and -o, in the order --help and the README list them.
OPTIONS: tuple[Option, ...] = (FRESH, *SETTINGS, VERBOSE)


# -- values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailureBudget:
    """How many failed servers a run tolerates: a count, or a share of its servers (as
    Ansible's max_fail_percentage and SSM's MaxErrors)."""

    count: int | None = None
    percent: float | None = None

    def limit(self, servers: int) -> int:
        """Failures allowed among `servers`; one more ends the run."""
        if self.count is not None:
            return self.count
        assert self.percent is not None  # parse_budget gives one or the other
        return math.floor(servers * self.percent / 100)

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


def parse_budget(text: str) -> FailureBudget:
    """``5`` or ``2.5%``; ValueError saying what is wrong."""
    cleaned = str(text).strip()
    try:
        if cleaned.endswith("%"):
            percent = float(cleaned[:-1])
            if not math.isfinite(percent) or not 0 <= percent <= 100:
                raise ValueError
            return FailureBudget(percent=percent)
        count = int(cleaned)
        if count < 0:
            raise ValueError
        return FailureBudget(count=count)
    except ValueError:
        raise ValueError(f"expected a number of servers or a share like 5%, got {text!r}") from None


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a run must end (--deadline): `seconds` after it starts, or at `at` (a UTC time)."""

    seconds: float | None = None
    at: datetime | None = None
    written: str = field(default="", compare=False)

    def seconds_left(self, started: datetime) -> float:
        """Seconds from `started` (the run's start, UTC) to the deadline; negative if past."""
        if self.seconds is not None:
            return self.seconds
        assert self.at is not None  # parse_deadline gives one or the other
        return (self.at - started).total_seconds()

    def __str__(self) -> str:
        return self.written or (f"{self.seconds:g}s" if self.seconds is not None else f"{self.at:%Y-%m-%dT%H:%M:%SZ}")


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def parse_deadline(text: str) -> Deadline:
    """``15m``, ``90s``, ``90``, ``1h30m``, or ``2026-12-06T21:00Z`` (any ISO 8601 time with
    its zone, as `datetime.fromisoformat` reads it); ValueError saying what is wrong."""
    cleaned = str(text).strip()
    match = _DURATION.fullmatch(cleaned.lower())
    if match and cleaned and any(match.groups()):
        hours, minutes, seconds = (float(part or 0) for part in match.groups())
        total = hours * 3600 + minutes * 60 + seconds
        if not math.isfinite(total) or total <= 0:
            raise ValueError(f"a deadline must be later than the start, got {text!r}")
        return Deadline(seconds=total, written=cleaned)
    try:
        when = datetime.fromisoformat(cleaned)
    except ValueError:
        message = f"expected a duration like 15m or 90s, or a time like 2026-12-06T21:00Z, got {text!r}"
        raise ValueError(message) from None
    if when.tzinfo is None:
        raise ValueError(f"the time {text!r} has no zone: add Z for UTC, or an offset like +08:00")
    return Deadline(at=when.astimezone(UTC), written=cleaned)


class BadValue(ValueError):
    """A setting's value is not one its kind allows: `str()` says what is wrong, `hint` what
    to give instead (the inventory shows both; a flag's error the first)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


# What to give instead, per kind: the same words after a flag and in the inventory.
HINTS: Mapping[Kind, str] = {
    Kind.COUNT: "give a whole number, at least 1",
    Kind.POSITIVE: "give a number, more than 0",
    Kind.NON_NEGATIVE: "give a number, 0 or more",
    Kind.SIZE: "give a number of bytes, or a size like 512M or 8G",
    Kind.BUDGET: 'give a number of servers, like 5, or a share, like "5%"',
    Kind.SWITCH: "write true or false",
    Kind.TEXT: "give a value, or remove it",
    Kind.DEADLINE: "give a duration like 15m or 90s, or a time with its zone like 2026-12-06T21:00Z",
}


def check_value(kind: Kind, value: Any, written: str, choices: tuple[str, ...] = ()) -> Any:
    """`value`, already read as its kind's type (an int for a count or a size, a float for a
    number, a str for a choice or a text), if the kind allows it; else `BadValue`.

    The one check of a setting's value: the flags' parsers and the inventory's ``collector:``
    section each read the text or YAML into the type, then call this. `written` is the value
    as the user wrote it, for the message.
    """
    if kind is Kind.COUNT and value < 1:
        raise BadValue(f"must be at least 1, got {value}", HINTS[kind])
    if kind is Kind.SIZE and value < 1:
        raise BadValue(f"must be at least 1, got {written}", HINTS[kind])
    if kind in (Kind.POSITIVE, Kind.NON_NEGATIVE):
        zero_allowed = kind is Kind.NON_NEGATIVE
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed):
            bound = "0 or more" if zero_allowed else "more than 0"
            raise BadValue(f"must be a number {bound}, got {written}", HINTS[kind])
    if kind is Kind.CHOICE and value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f"did you mean {close[0]}?" if close else "use one of " + ", ".join(choices)
        raise BadValue(f"{quoted(value)} is not one of {', '.join(choices)}", hint)
    if kind is Kind.TEXT and not value.strip():
        raise BadValue("is empty", HINTS[kind])
    return value


_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def size_in_bytes(text: str) -> int | None:
    """Bytes from ``8589934592``, ``512M``, ``8G``, ``1.5GiB`` (binary units); None if `text`
    is not a size."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def parse_size(text: str) -> int:
    """`size_in_bytes`, at least 1, or ValueError saying what is wrong."""
    value = size_in_bytes(text)
    if value is None:
        raise ValueError(f"expected a size like 512M or 8G, got {text!r}")
    return int(check_value(Kind.SIZE, value, text))


def format_size(value: int) -> str:
    """``8G`` for 8 GiB: the largest binary unit that divides `value`."""
    for unit in ("T", "G", "M", "K"):
        if value % _UNITS[unit.lower()] == 0:
            return f"{value // _UNITS[unit.lower()]}{unit}"
    return str(value)


def _checked(kind: Kind, value: Any, text: str) -> Any:
    try:
        return check_value(kind, value, text)
    except BadValue as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    return int(_checked(Kind.COUNT, value, text))


def _number(kind: Kind) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        return float(_checked(kind, value, text))

    return parse


parse_positive = _number(Kind.POSITIVE)  # a flag's number above 0: seconds, a rate


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _budget(text: str) -> FailureBudget:
    try:
        return parse_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _deadline(text: str) -> Deadline:
    try:
        return parse_deadline(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _text(text: str) -> str:
    return str(_checked(Kind.TEXT, text, text))


_FLAG_TYPES = {
    Kind.BUDGET: _budget,
    Kind.DEADLINE: _deadline,
    Kind.TEXT: _text,
    Kind.COUNT: parse_count,
    Kind.POSITIVE: parse_positive,
    Kind.NON_NEGATIVE: _number(Kind.NON_NEGATIVE),
    Kind.SIZE: _size,
}


# -- the command line -----------------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser, *, demo: bool = False) -> None:
    """The flags of `collector run` (or, with `demo`, of `collector demo`).

    Every flag defaults to None, "not given", so that `resolve` can let the inventory's value
    stand where no flag was given.
    """
    settings = parser.add_argument_group(
        "settings" if demo else "settings (the inventory's collector: section may set these; flags win)"
    )
    invocation = parser.add_argument_group("this run")
    for option in OPTIONS:
        if demo and option.run_only:
            continue
        group = settings if option.yaml else invocation
        shown = option.shown_default()
        described = "(default" in option.help  # its help says what the default is, in words
        text = option.help.replace("`", "").replace("%", "%%") + (
            f" (default {shown})" if shown and not described else ""
        )
        names = option.flags or (option.flag,)
        if option.kind is Kind.SWITCH:
            group.add_argument(
                *names, dest=option.name, action="store_const", const=not option.default, default=None, help=text
            )
        elif option.kind is Kind.REPEAT:
            group.add_argument(*names, dest=option.name, action="count", default=None, help=text)
        elif option.kind is Kind.CHOICE:
            group.add_argument(*names, dest=option.name, choices=option.choices, default=None, help=text)
        else:
            group.add_argument(
                *names, dest=option.name, type=_FLAG_TYPES[option.kind], metavar=option.metavar, default=None, help=text
            )


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, by name."""
    return {o.name: getattr(args, o.name) for o in SETTINGS if getattr(args, o.name, None) is not None}


def resolve(*layers: Mapping[str, Any], base: Settings | None = None) -> Settings:
    """`base` (the defaults), then each layer in turn: the inventory's section, then the flags.

    A layer holds only what was given; a later layer wins.
    """
    chosen: dict[str, Any] = {}
    for layer in layers:
        chosen.update(layer)
    unknown = set(chosen) - {o.name for o in SETTINGS}
    if unknown:
        raise ValueError(f"not settings: {', '.join(sorted(unknown))}")
    return replace(base or Settings(), **chosen)


# -- the README -----------------------------------------------------------------------------


def markdown_table() -> str:
    """The README's flag table, rendered from the declarations (tests keep the README equal)."""

    def row(*cells: str) -> str:
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"

    rows = [row("flag", "default", "in `collector:`", "meaning"), "|---|---|---|---|"]
    for option in OPTIONS:
        key = ""
        if option.yaml:
            # A switch's flag turns it one way; the key shows what the inventory writes for that.
            key = (
                f"`{option.name}: {str(not option.default).lower()}`"
                if option.kind is Kind.SWITCH
                else f"`{option.name}`"
            )
        rows.append(row(f"`{option.flag}`", option.shown_default(), key, option.help))
    return "\n".join(rows) + "\n"
