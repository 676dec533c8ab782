"""The command line: parses flags, sets up logging, prints; the only importer of argparse,
the logging set-up and the simulator. May import every layer below it."""
