"""Real filesystem faults: a small tmpfs (to fill up), mounted for one test and unmounted after.

Mounting needs root (CAP_SYS_ADMIN); CI runs as root. Where this process may not mount, the
test that asked is skipped and says why, rather than faking the fault.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (as mount(8) reads it: "1m", "64k") mounted 0700 at `path` for the block."""
    path.mkdir(mode=0o700, exist_ok=True)
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if os.geteuid() != 0 or not mount or not umount:
        pytest.skip("a real full disk needs a tmpfs, and mounting one needs root")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], capture_output=True, check=False
    )
    if done.returncode != 0 or not os.path.ismount(path):
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run([umount, str(path)], capture_output=True, check=True)


def fill(folder: Path) -> Path:
    """Fill the filesystem under `folder` to the last byte with one file; returns that file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler
