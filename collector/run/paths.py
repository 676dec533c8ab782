"""Where a run keeps what it writes: the output folder, proven writable before any request,
and the local state folder (journal, lock) of an object-storage output.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from collector.destinations.local import make_folders
from collector.destinations.location import S3Location
from collector.errors import UsageError


def prepare_output(out_dir: Path) -> Path:
    """Create the output folder (0700) and prove we can write there, before any request."""
    out_dir = Path(out_dir).expanduser()
    try:
        make_folders(out_dir)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise UsageError(
            f"output folder {out_dir} is not writable: {exc.strerror or exc}",
            "choose another folder with -o, or fix its permissions",
        ) from None
    return out_dir.resolve()


def state_root(given: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The collector's own state folder: `given` (--state-dir), else `$XDG_STATE_HOME/collector`
    (`~/.local/state/collector`); None where there is none (no HOME, no XDG_STATE_HOME)."""
    if given:
        return Path(given).expanduser()
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_STATE_HOME") or (environ.get("HOME") and f"{environ['HOME']}/.local/state")
    return Path(base) / "collector" if base else None


def state_dir_for(location: S3Location, given: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """Where an object-storage output keeps its journal and lock: `given` (--state-dir), else a
    folder per destination under the state root."""
    if given:
        return Path(given).expanduser()
    root = state_root(None, environ)
    if root is None:
        raise UsageError(
            f"no folder for the journal of {location.url}: neither XDG_STATE_HOME nor HOME is set",
            "give --state-dir PATH (in a container: a writable volume)",
        )
    digest = hashlib.sha256(location.url.encode()).hexdigest()[:12]
    return root / f"{location.bucket}-{digest}"
