"""One run, wired: the stage before the sweep (prepare), then the sweep with its destination,
journal, listeners and signals, and the exit policy. Imports observe/ and everything below."""
