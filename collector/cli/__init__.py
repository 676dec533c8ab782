"""The command line: parses flags, sets up logging, prints; the only importer of argparse,
the logging set-up and the simulator. May import every layer below it."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


def main() -> int:
    """The `collector` console script and `python -m collector`. Its modules take a moment to
    load; Ctrl-C in that moment ends quietly with 130, as it does once a command runs."""
    interrupted = False

    def note(_signum: int, _frame: FrameType | None) -> None:
        nonlocal interrupted
        interrupted = True  # not an exception in the middle of some module's import

    previous = signal.signal(signal.SIGINT, note)
    try:
        from collector.cli.main import main as command
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        return 130
    try:
        return command()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `collector run --help | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 141  # 128 + SIGPIPE, as a shell reports a pipeline's early reader
