"""Signals during a run: the first SIGINT/SIGTERM starts nothing new and gives running
downloads --grace seconds; a second, or the end of the grace, stops everything now.
"""

from __future__ import annotations

import logging
import signal

import anyio

from collector.log import ev
from collector.run.outcome import Outcome
from collector.sweep.pipeline import Sweep

# The run's own records (its start, stops and end) show at the default level: see
# collector.cli.logs.configure_logging.
log = logging.getLogger("collector.run")


# A second signal counts only this long after the first. Ctrl-C under `timeout` or a cron
# wrapper reaches the run twice in the same instant (the terminal signals the process group,
# the wrapper passes it on); that is one request to stop, and it must not skip the grace.
DEBOUNCE = 1.0


async def watch_signals(sweep: Sweep, outcome: Outcome) -> None:
    """First SIGINT/SIGTERM: start nothing new (`grace_after_stop` bounds the rest). Second,
    at least `DEBOUNCE` s later: stop now."""
    first_at = 0.0
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if outcome.signal is not None:
                if anyio.current_time() - first_at < DEBOUNCE:
                    continue  # the same Ctrl-C, delivered twice
                log.warning("second signal: stopping now", extra=ev("run_cancelled", reason="second signal"))
                sweep.cancel()
                return
            first_at = anyio.current_time()
            outcome.signal = signum
            name = signal.Signals(signum).name
            log.warning(
                "%s: starting nothing new; running downloads get %g s to finish",
                name,
                sweep.settings.grace,
                extra=ev("run_stopping", reason=name, wait_s=sweep.settings.grace),
            )
            sweep.stop(name)


async def grace_after_stop(sweep: Sweep, grace: float) -> None:
    """Whatever stopped the run (a signal, the error budget), running downloads get `grace` s."""
    await sweep.stopped.wait()
    await anyio.sleep(grace)
    log.warning("grace period over: stopping running downloads", extra=ev("run_cancelled", reason="grace over"))
    sweep.cancel()
