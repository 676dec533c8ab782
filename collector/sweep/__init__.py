"""The engine: the per-server pipeline (export, poll, download, verify), its fan-out, the
journal and the events it emits. Imports transfer/, destinations/, clouddc/ and below; never
observe/, run/ or cli/ (they subscribe to its events)."""
