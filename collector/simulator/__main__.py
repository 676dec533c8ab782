"""``python -m collector.simulator``: the ``collector simulate`` subcommand, standalone."""

import argparse

from collector.simulator.cli import add_arguments, main

parser = argparse.ArgumentParser(prog="python -m collector.simulator", description=__doc__)
add_arguments(parser)
raise SystemExit(main(parser.parse_args()))
