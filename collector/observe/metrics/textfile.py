"""The metrics as a file for node_exporter's textfile collector (`--metrics-file`): written
atomically (`collector.destinations.local.write_atomically`), every 10 s during a run and
once more at its end, its first failure logged and none ever raised."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.to_thread
from prometheus_client.parser import text_string_to_metric_families

from collector.destinations.local import write_atomically as _write_atomically
from collector.errors import UsageError
from collector.log import ev
from collector.observe.metrics.registry import LAST_SUCCESS, Metrics, describe, log

Sleep = Callable[[float], Awaitable[None]]

TEXTFILE_INTERVAL = 10.0  # seconds between writes of --metrics-file
FINAL_WRITE_TIMEOUT = 10.0  # seconds the last write may take once the run is over
_PREVIOUS_FILE_LIMIT = 1024 * 1024  # bytes of an earlier metrics file we read; ours are a few KiB


def write_atomically(path: Path, data: bytes) -> None:
    """`data` under `path`, all or nothing: node_exporter may read the file at any moment.

    The temporary file's name does not end in `.prom`, so the textfile collector never reads
    it. 0644: node_exporter runs as another user, and metrics hold no secrets.
    """
    _write_atomically(path, data, mode=0o644)


def check_textfile(path: Path | str) -> None:
    """`--metrics-file`, checked before the run starts, as `-o` is: its folder must exist and
    be writable. Not created: node_exporter reads one folder, and a typo in its name would
    otherwise be a file nobody reads, found out at the end of the run, or never."""
    folder = Path(path).expanduser().parent
    if not folder.is_dir():
        raise UsageError(
            f"--metrics-file {path}: the folder {folder} does not exist",
            "give a file in node_exporter's --collector.textfile.directory",
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--metrics-file {path}: the folder {folder} is not writable", "fix its permissions")
    if Path(path).expanduser().is_dir():
        raise UsageError(f"--metrics-file {path}: is a folder", "give a file name, like collector.prom")


def previous_success(path: Path, shard: str | None) -> float | None:
    """The last success an earlier run wrote into `path` for this shard, if it did."""
    try:
        with open(path, "rb") as file:
            text = file.read(_PREVIOUS_FILE_LIMIT).decode("utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and sample.labels.get("shard") == shard:
                    return sample.value
    except Exception:  # noqa: BLE001 - none yet, or not one we can read: nothing to carry
        return None
    return None


class _Textfile:
    """One metrics file: written atomically, its first failure logged, none ever raised."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.carried = False
        self._reported = False

    def carry(self, metrics: Metrics) -> None:
        """Before the first write replaces it: keep the last success the file holds."""
        if not self.carried:
            self.carried = True
            metrics.carry_last_success(previous_success(self.path, metrics.shard))

    def write(self, data: bytes) -> bool:
        try:
            write_atomically(self.path, data)
        except Exception as exc:  # noqa: BLE001 - metrics never stop a run
            self.failed(exc)
            return False
        return True

    def failed(self, exc: Exception) -> None:
        if self._reported:
            return
        self._reported = True
        error = describe(exc)
        log.warning(
            "metrics: cannot write %s: %s; the run goes on without it",
            self.path,
            error,
            extra=ev("metrics_failed", destination=str(self.path), error=error, error_kind=type(exc).__name__),
        )


def write_textfile(path: Path | str, metrics: Metrics) -> bool:
    """Write the metrics file once, now (blocking); False, and a log line, if it failed.

    For when no event loop runs (a usage error, exit 2); during a run use
    `write_textfile_every`.
    """
    textfile = _Textfile(path)
    try:
        textfile.carry(metrics)
        data = metrics.text()
    except Exception as exc:  # noqa: BLE001 - metrics never stop a run
        textfile.failed(exc)
        return False
    return textfile.write(data)


async def write_textfile_every(
    path: Path | str,
    metrics: Metrics,
    interval: float = TEXTFILE_INTERVAL,
    *,
    sleep: Sleep = anyio.sleep,
    final_timeout: float = FINAL_WRITE_TIMEOUT,
) -> None:
    """Write the metrics file now, every `interval` seconds, and once more when cancelled.

    Run it as a task and cancel it when the run is over, after `metrics.finish`: the last
    write (shielded, at most `final_timeout` s) then holds the exit code. The text is made
    on the event loop's thread, where the sweep changes what it reads; the file is written
    in a worker thread, since an fsync can take a while.
    """
    textfile = _Textfile(path)

    async def write(*, abandon_on_cancel: bool = False) -> None:
        try:
            if not textfile.carried:  # read in a thread, applied here: metrics live on this thread
                earlier = await anyio.to_thread.run_sync(
                    previous_success, textfile.path, metrics.shard, abandon_on_cancel=abandon_on_cancel
                )
                textfile.carried = True
                metrics.carry_last_success(earlier)
            data = metrics.text()
        except Exception as exc:  # noqa: BLE001 - metrics never stop a run
            textfile.failed(exc)
            return
        await anyio.to_thread.run_sync(textfile.write, data, abandon_on_cancel=abandon_on_cancel)

    try:
        while True:
            await write()
            await sleep(interval)
    finally:
        # The run is over (or being torn down): one last write, whatever cancelled us, but
        # bounded, so a hung file system cannot hold the process.
        with anyio.move_on_after(final_timeout, shield=True):
            await write(abandon_on_cancel=True)
