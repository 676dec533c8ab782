"""When collector itself fails: keep the traceback for a maintainer, tell the user one line.

A bug in the orchestrator (not a server's failure, not a user error) must not cost the run
its report, nor greet the operator with a traceback. The runner writes the report with what
it has, `save` puts the traceback in ``OUT/.collector/crash-<UTC time>.txt`` (0600), and
`line` is the single line the user sees; the exit code is 70 (see `collector.run.outcome`).
"""

from __future__ import annotations

import os
import platform
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path

from collector import __version__
from collector.config.settings import JOURNAL_DIR
from collector.destinations.local import make_folders

_MESSAGE_LIMIT = 300


def cause(exc: BaseException) -> BaseException:
    """The error that started it: a task group wraps it in (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def folder_for(output: Path | str | None) -> Path:
    """Where a crash file goes: the output folder's `.collector`, if there is an output folder
    yet, else the system's temporary folder."""
    if output is not None and Path(output).expanduser().is_dir():
        return Path(output).expanduser() / JOURNAL_DIR
    return Path(tempfile.gettempdir())


def save(folder: Path, exc: BaseException, *, now: datetime | None = None) -> Path | None:
    """Write `exc`'s traceback to a new ``crash-<UTC time>.txt`` in `folder`; None if that
    fails too (the line then says so)."""
    now = now or datetime.now(UTC)
    text = (
        f"collector {__version__} crashed at {now.isoformat(timespec='seconds')}\n"
        f"python {platform.python_version()} on {platform.platform()}\n\n" + "".join(traceback.format_exception(exc))
    )
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    try:
        make_folders(folder)
        for attempt in range(100):
            path = folder / (f"crash-{stamp}.txt" if attempt == 0 else f"crash-{stamp}-{attempt}.txt")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as file:
                file.write(text)
            return path
    except OSError:
        pass
    return None


def line(exc: BaseException, path: Path | None) -> str:
    """``collector: internal error: <Type>: <msg>; details in <path>; please report it``."""
    first = cause(exc)
    message = " ".join(str(first).split()) or "(no message)"
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 3] + "..."
    where = f"details in {path}" if path is not None else "the details could not be saved"
    return f"collector: internal error: {type(first).__name__}: {message}; {where}; please report it"
