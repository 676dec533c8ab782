"""Running a command as an unprivileged user, for the faults root does not see: root reads a
mode-0000 file and writes in a 0500 folder, so those are checked as another uid."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def unprivileged(command: list[str], uid: int) -> list[str]:
    """`command` as `uid` with no groups; as it is if we are not root, which is unprivileged
    already. (setpriv, unlike subprocess's `user=`, finds an interpreter behind root's 0700 home.)"""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    assert setpriv, f"setpriv (util-linux) is needed to drop to uid {uid}"
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *command]


@contextmanager
def open_folder(prefix: str = "collector-") -> Iterator[Path]:
    """A folder another uid can reach: pytest's tmp_path is under a 0700 folder of root's."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
