"""The command line: parses flags, sets up logging, prints; the only importer of argparse,
the logging set-up and the simulator. May import every layer below it."""

from __future__ import annotations

import os
import sys


def main() -> int:
    """The `collector` console script and `python -m collector`. Its modules take a moment to
    load; Ctrl-C in that moment ends quietly with 130, as it does once a command runs."""
    try:
        from collector.cli.main import main as command

        return command()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `collector run --help | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return 141  # 128 + SIGPIPE, as a shell reports a pipeline's early reader
