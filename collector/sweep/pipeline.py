"""The per-server pipeline and the fan-out over the fleet.

`Sweep.collect` is the whole story for one server: export, wait for the export, download,
verify. Everything around it sits beside it: `run` fans out under the limits, turns each
server's outcome into a `ServerResult`, and stops early on rejected credentials or a signal;
the rate limiter and retries live in `collector.control.throttle` (via the API client); progress,
logs and the journal listen to `collector.sweep.events`.

Limits, all shared by the whole run:
- `concurrency`: servers between their export and the end of their download, at most. Exports
  run on the servers' side, so many can be in flight; this bounds the tasks we hold. Below it,
  the fan-out starts a server only when its export can be asked soon (`_room_to_ask`) and the
  servers already started are not waiting for each other (`_behind`): against a rate-limited
  API, a few hundred in flight keep it busy, and more would only wait, each holding its task.
- `downloads`: archive transfers at a time.
- `rate`: where each endpoint's adaptive `RateLimiter` starts; export POSTs also pass a
  second one of their own, so an API that caps running exports slows only exports.
- the request budget, while it binds: polls are moved into what nobody uses of it
  (`collector.sweep.early`, one per endpoint beside the servers' tasks).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import aiohttp
import anyio
import anyio.abc
import anyio.lowlevel
from anyio import TaskHandle

from collector.clouddc.api import CloudDC
from collector.clouddc.gateway import Gateway, Gateways
from collector.clouddc.replies import ExportState, ExportStatus
from collector.config.inventory import Inventory, Project, Server
from collector.config.settings import Settings
from collector.control.endpoint import EndpointHealth, Unreachable
from collector.control.throttle import Sleep, monotonic, sleep
from collector.destinations.base import Archive, Destination, archive_name
from collector.errors import AuthError, CollectorError, ExportFailed, NotFoundError
from collector.log import ev
from collector.sweep.early import EarlyPolls
from collector.sweep.events import Events, Phase, PhaseChanged, Waits
from collector.sweep.journal import Entry
from collector.sweep.plan import AskingOrder, asking_order
from collector.sweep.polling import ExportDurations, OwnTime, PollSchedule
from collector.sweep.results import ServerResult
from collector.sweep.timebox import DEADLINE, TimeBox
from collector.text import short_id
from collector.transfer.download import DownloadOptions, fetch_archive

log = logging.getLogger(__name__)

MAX_TRACEBACKS = 3  # internal errors logged with their traceback; later ones in one line


# A retry's wait this long or longer (a Retry-After of minutes) gives back the server's place of
# --concurrency meanwhile; shorter ones keep it (re-queueing for it would cost more).
LONG_WAIT = 10.0

# New servers are started while fewer exports than this are asked and not answered (at least
# MIN_QUEUED, else QUEUED_SECONDS at the export limiter's rate): see `Sweep._room_to_ask`. The
# fan-out looks again every QUEUED_CHECK seconds.
MIN_QUEUED = 32
QUEUED_SECONDS = 0.5
QUEUED_CHECK = 0.05

# Nor while more polls and downloads are due than the endpoints' rates send in a --poll-interval
# (at least MIN_QUEUED): see `Sweep._behind`.

# Polls are moved into idle request budget while the servers left need at least this share of a
# typical export's time at the budget: see `Sweep._pressing`.
PRESSING = 0.5

# An export whose estimated end is within this of the latest known at its endpoint, once every
# export there has been asked for and the exports set the run's end, may end the run: its polls
# aim tight. See `Sweep._may_end_run`.
LAST_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Target:
    project: Project
    server: Server

    @property
    def key(self) -> tuple[str, str]:
        return (self.project.project_id, self.server.id)


# What the fan-out takes in turn: a server, its result, and whether --first picked it.
_Work = tuple[Target, "ServerResult", bool]


def _work_key(work: _Work) -> tuple[str, str]:
    return work[0].key


def _work_endpoint(work: _Work) -> str:
    return work[0].project.endpoint


# One name for every server's task: anyio otherwise makes each its own copy of the
# coroutine's dotted name (~370 bytes a server in flight, issue 14).
_SERVER_TASK = "collector.sweep.pipeline.Sweep._run_one"


class _Progress:
    """One server's journey: which phase, which export, how many tries. Emits as it moves."""

    __slots__ = ("asking", "events", "first", "phase", "result", "slot", "target", "task", "waits")

    def __init__(
        self,
        target: Target,
        events: Events,
        result: ServerResult,
        waits: Waits | None = None,
        slot: _Slot | None = None,
        first: bool = False,
    ) -> None:
        self.target = target
        self.events = events
        self.result = result
        self.waits = waits
        self.slot = slot  # its place among --concurrency, given back during a long wait
        self.first = first  # --first picked it: its download goes before others'
        self.phase = Phase.PENDING
        self.task: TaskHandle[None] | None = None  # its task, for `Sweep.stop` to cancel it alone
        self.asking = True  # started, not yet past its export request (see `Sweep._room_to_ask`)

    async def away(self, backoff: Sleep, seconds: float) -> None:
        """Wait out a retry's backoff; a long one (a Retry-After of minutes) without holding
        a place of --concurrency that another server could use meanwhile."""
        if self.slot is None or seconds < LONG_WAIT:
            await backoff(seconds)
        else:
            await self.slot.away(backoff, seconds)

    def cancel(self) -> None:
        """Stop this server now (`Sweep.stop`): it is left pending."""
        if self.task is not None:
            self.task.cancel()

    def retried(self, exc: BaseException, attempt: int, wait: float) -> None:
        self.result.retried()
        log.info(
            "%s: %s; retry %d in %.1f s",
            short_id(self.target.server.id),
            exc,
            attempt,
            wait,
            extra=ev("retry", **self.where(), attempt=attempt, wait_s=round(wait, 3), **error_fields(exc)),
        )
        asked = getattr(exc, "retry_after", None)
        if self.waits is not None and asked:
            self.waits.note(self.target.key, wait, asked)

    def export_sent(self) -> None:
        self.result.export_sent()

    def where(self) -> dict[str, str | None]:
        """The fields that say which server a log line is about."""
        return {
            "project_id": self.target.project.project_id,
            "server_id": self.target.server.id,
            "export_id": self.result.export_id,
            "endpoint": self.target.project.endpoint,
        }

    async def enter(
        self,
        phase: Phase,
        *,
        export_id: str | None = None,
        size: int | None = None,
        sha256: str | None = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> None:
        previous, self.phase = self.phase, phase
        await self.events.emit(
            PhaseChanged(
                self.target.project.project_id,
                self.target.server.id,
                phase,
                previous,
                endpoint=self.target.project.endpoint,
                attempt=self.result.attempts,
                export_id=export_id,
                size=size,
                sha256=sha256,
                error=error,
                reason=reason,
            )
        )


class Sweep:
    def __init__(
        self,
        inventory: Inventory,
        settings: Settings,
        destination: Destination,
        session: aiohttp.ClientSession,
        events: Events | None = None,
        prior: Mapping[tuple[str, str], Entry] | None = None,
        fresh: bool = False,
        observe: Callable[[str, int | BaseException], None] | None = None,
        gateways: Gateways | None = None,
        timebox: TimeBox | None = None,
        first: Callable[[Target], bool] | None = None,
        durations: ExportDurations | None = None,
        known: Mapping[tuple[str, str], OwnTime] | None = None,
    ) -> None:
        self.inventory = inventory
        # Each server's export time from earlier runs (`collector.run.learned`): the order
        # exports are asked in (`collector.sweep.plan`) and each first poll's aim. This run's
        # are in each server's result, for the next.
        self.known = known or {}
        self.timebox = timebox  # --deadline: see collector.sweep.timebox
        self.first = first  # --first: these servers' exports are asked for, and downloads made, first
        self.prior = prior or {}  # what earlier runs reached, from the journal
        self.fresh = fresh  # collect everything again, whatever earlier runs left
        self.settings = settings
        self.destination = destination
        self.events = events or Events()
        # One gateway per endpoint (limiters, health, retry budget, observer), shared by its
        # projects and, when the runner passes its own, with the discovery before the sweep.
        self.gateways = gateways if gateways is not None else Gateways(session, settings, observe=observe)
        self.stats = self.gateways.stats
        self.health: dict[str, EndpointHealth] = {}
        self.waits = Waits()  # servers waiting out a Retry-After, for the display
        # Keyed by the project entry itself: two entries may name the same project id.
        self.clients: dict[int, CloudDC] = {}
        for project in inventory.projects:
            client = self.clients[id(project)] = CloudDC.for_project(self.gateways, project)
            self.health[project.endpoint] = client.health
        self.durations = durations if durations is not None else ExportDurations()  # from earlier runs, if kept
        # A transfer that trickles below the floor for as long as --read-timeout is stalled too.
        self.download_options = DownloadOptions(
            max_bytes=settings.max_archive_bytes, policy=settings.policy, stall_window=settings.read_timeout
        )
        # A semaphore, not a CapacityLimiter: the loop acquires, the server task releases.
        self._in_flight = anyio.Semaphore(settings.concurrency, fast_acquire=True)
        self._asking = 0  # servers started and not yet past their export request
        self._polls_due = 0  # polls whose time has come, not yet answered (see `_behind`)
        self._downloads = Places(settings.downloads)
        self._scope: anyio.CancelScope | None = None
        self.stopping: str | None = None  # why we start nothing new: a signal's name, the error budget
        self.stopped = anyio.Event()  # set by `stop()`: the runner then gives downloads --grace
        self.failed = 0
        self.failure_limit: int | None = None  # from --max-failures, once the run knows its size
        self.budget_spent = False
        self.auth_error: AuthError | None = None
        self._active: set[_Progress] = set()
        self._left: Counter[str] = Counter()  # servers not yet done, by endpoint (`_pressing`)
        self._to_ask: Counter[str] = Counter()  # ... nor past their export request
        self._latest_end: dict[str, float] = {}  # by endpoint: the latest estimated export end (`_may_end_run`)
        self.early: dict[str, EarlyPolls] = {}  # by endpoint, while `run` runs
        self._internal_errors = 0
        self.cut_off = False  # the deadline left servers pending

    # -- the pipeline ---------------------------------------------------------------------

    async def collect(self, target: Target, progress: _Progress, export_id: str | None = None) -> Archive:
        """Export -> poll -> download -> verify, for one server.

        `export_id` is an export an earlier run asked for: we poll it rather than ask again.
        A 404 while polling or downloading means the export expired or vanished: we ask for
        one new export, once per server per run.
        """
        api = self.clients[id(target.project)]
        renewals_left = 1
        while True:
            resumed = export_id is not None
            if export_id is None:
                export_id = await self.start_export(api, target, progress)
            try:
                await self.wait_for_export(api, target, export_id, progress, resumed=resumed)
                return await self.download(api, target, export_id, progress)
            except NotFoundError as exc:
                if not renewals_left:
                    raise ExportFailed(f"export {export_id} vanished twice (404); last: {exc}") from exc
                log.info(
                    "%s: export %s is gone (%s); asking for a new one",
                    short_id(target.server.id),
                    export_id,
                    exc,
                    extra=ev("export_renewed", **progress.where(), **error_fields(exc)),
                )
                renewals_left -= 1
                export_id = None

    async def start_export(self, api: CloudDC, target: Target, progress: _Progress) -> str:
        if self.timebox is not None and not self.timebox.worth_exporting(self.durations):
            raise _CutOff
        await progress.enter(Phase.EXPORTING)
        status = await api.export(
            target.server.id, on_retry=progress.retried, on_sent=progress.export_sent, away=progress.away
        )
        if status.state is ExportState.FAILED:
            raise ExportFailed(f"export {status.export_id} failed at once (status {status.status!r})")
        return status.export_id

    async def download(self, api: CloudDC, target: Target, export_id: str, progress: _Progress) -> Archive:
        """Fetch and verify the archive, once one of the `downloads` transfer slots is free."""
        async with _Slot(self._downloads, first=progress.first) as slot:
            if self.stopping:  # ready, but we are shutting down: leave it for the next run
                progress.cancel()
                await anyio.lowlevel.checkpoint()
            if self.timebox is not None and not self.timebox.worth_downloading():
                raise _CutOff  # the export stays in the journal: the next run downloads it
            await progress.enter(Phase.DOWNLOADING, export_id=export_id)
            started = monotonic()
            archive, _ = await fetch_archive(
                api,
                target.server.id,
                export_id,
                self.destination,
                archive_name(*target.key),
                self.download_options,
                on_retry=progress.retried,
                sleep=functools.partial(slot.away, api.health.backoff),
            )
            if self.timebox is not None:
                self.timebox.transfers.add(monotonic() - started)
            return archive

    async def wait_for_export(
        self, api: CloudDC, target: Target, export_id: str, progress: _Progress, *, resumed: bool = False
    ) -> ExportStatus:
        """Poll until the export completes; raise `ExportFailed` if it fails or takes too long."""
        self._asked(progress)
        progress.result.polling(export_id)
        await progress.enter(Phase.POLLING, export_id=export_id)
        server_id = target.server.id
        timeout = self.settings.export_timeout
        now = monotonic()
        schedule = PollSchedule(
            first=self.settings.poll_interval,
            longest=self.settings.poll_max,
            shortest=min(1.0, self.settings.poll_interval),
            started=now,
            resumed=resumed,
            max_age=timeout,
            durations=self.durations,
            expected=None if resumed else self.known.get(target.key),
        )
        # The timeout judges the server, not our own queue: it runs from the export's acceptance,
        # and an export fails only on an answer, received after the deadline, that it is still
        # not complete. A poll waiting for our rate limiter past the deadline is not the
        # server's fault. Each poll is itself bounded (the retry policy's `max_elapsed`, the endpoint's
        # --outage-timeout), so the loop needs no cancel scope of its own as a safety net: one per
        # server in flight cost ~700 bytes at thousands of servers (issue 14).
        deadline = now + timeout
        delay = min(schedule.first_delay(now), timeout)
        early = self.early.get(target.project.endpoint)
        while True:
            woken = await self._poll_wait(delay, schedule, early)
            # Until the fleet's durations are known, wait for them (unless --deadline is near).
            while not woken and (later := schedule.postpone(monotonic())) > 0 and self._shortened(later) == later:
                woken = await self._poll_wait(later, schedule, early, again=True)
            due = monotonic()
            self._polls_due += 1
            try:
                status = await api.status(server_id, export_id, on_retry=progress.retried, away=progress.away)
            finally:
                self._polls_due -= 1
            now = monotonic()
            if status.state is ExportState.COMPLETED:
                schedule.completed(now, due)
                if schedule.took is not None and not resumed:
                    progress.result.exported_in(schedule.took)
                return status
            if status.state is ExportState.FAILED:
                at = f" at {status.percentage}%" if status.percentage is not None else ""
                raise ExportFailed(f"export {export_id} failed{at} (status {status.status!r})")
            if now >= deadline:
                raise schedule.failure(timeout, now - schedule.started)
            delay = schedule.next_delay(status, now)
            if self._may_end_run(api.gateway, schedule.end, now):
                delay = schedule.tight_delay(now) or delay
            delay = max(0.0, min(delay, deadline - now))

    def _poll_wait(
        self, delay: float, schedule: PollSchedule, early: EarlyPolls | None, *, again: bool = False
    ) -> Awaitable[bool | None]:
        """The wait of `delay` before a poll, to await (no coroutine of its own: one frame
        per waiting export): shorter as --deadline nears; and while the export's end is only
        guessed, woken sooner (True) for a poll into request budget nobody uses
        (`collector.sweep.early`)."""
        wait = self._shortened(delay)
        if early is not None and schedule.guessing:
            return early.sleep(wait, again=again or schedule.polled)
        return sleep(wait)

    def _shortened(self, delay: float) -> float:
        """`delay` before a poll, shortened as --deadline nears."""
        return delay if self.timebox is None else self.timebox.poll_delay(delay)

    # -- the fan-out ----------------------------------------------------------------------

    def targets(self) -> Iterable[Target]:
        for project, server in self.inventory.targets():
            yield Target(project, server)

    async def run(self, targets: Iterable[Target] | None = None) -> list[ServerResult]:
        """Collect every target; one result per target, in inventory order, whatever happens."""
        targets = list(self.targets() if targets is None else targets)
        if self.settings.max_failures is not None:
            self.failure_limit = self.settings.max_failures.limit(len(targets))
        results = [ServerResult(t.project.project_id, t.server.id, t.server.name) for t in targets]
        first = self.first
        listed = [(t, r, first is not None and first(t)) for t, r in zip(targets, results, strict=True)]
        work: Iterable[_Work] = listed
        if self.known:  # each server's export time from earlier runs: ask by `collector.sweep.plan`
            rates = {gateway.endpoint: gateway.limiter.budget or gateway.limiter.rate for gateway in self.gateways}
            plan = (listed, self.known, _work_key, _work_endpoint, rates)
            if first is None:
                # Decided as each is taken, about `QUEUED_SECONDS` before it is sent (see `_fan_out`).
                work = order = AskingOrder(*plan, lead=QUEUED_SECONDS)
                log.debug("asking order: %s", order.rules, extra=ev("asking_order", rules=order.rules))
            else:
                work = asking_order(*plan)
        if first is not None:  # --first: theirs before any other's, each group in its order
            work = sorted(work, key=lambda item: not item[2])
        ends_at = math.inf if self.timebox is None else self.timebox.ends_at
        self._left = Counter(target.project.endpoint for target in targets)
        self._to_ask = self._left.copy()
        with anyio.CancelScope(deadline=ends_at) as self._scope:
            async with anyio.create_task_group() as beside:
                for endpoint in self._left:  # one per endpoint, beside the servers' tasks
                    gateway = self.gateways[endpoint]
                    pressing = functools.partial(self._pressing, gateway)
                    early = self.early[endpoint] = EarlyPolls(gateway.limiter, pressing)
                    beside.start_soon(early.run)
                async with anyio.create_task_group() as tasks:
                    await self._fan_out(work, tasks)
                beside.cancel_scope.cancel()  # every server is done
        ran_out = self.timebox is not None and self.timebox.left() <= 0
        if self._scope.cancelled_caught and ran_out and not self.stopping:  # not a signal's stop
            self.cut_off = True
            for result in results:
                result.cut_off(str(self.timebox))
        why = self.stop_reason or "cancellation"
        for result in results:
            result.stopped(why)
        return results

    async def _fan_out(self, work: Iterable[_Work], tasks: anyio.abc.TaskGroup) -> None:
        """Start each server's task in turn, under the limits (see the module). Each is taken
        from `work` before the wait for its room: about `QUEUED_SECONDS` before it is sent."""
        for target, result, picked in work:
            await self._in_flight.acquire()
            await self._room_to_ask(target)
            while self._behind() and not self.stopping:
                await sleep(QUEUED_CHECK)
            if self.stopping or self.auth_error:
                self._in_flight.release()
                return
            self._asking += 1  # until `_asked`
            progress = _Progress(target, self.events, result, self.waits, _Slot.held(self._in_flight), picked)
            progress.task = tasks.start_soon(self._run_one, progress, name=_SERVER_TASK)

    def _pressing(self, gateway: Gateway) -> bool:
        """Does the endpoint's request budget set the run's end, so that budget left unused
        now is time lost at the end (`collector.sweep.early`)? When the API has refused us
        (its budget is known: measured between two refusals, any request's, else where it
        refused the endpoint's limiter), and sending two requests (a poll and a download)
        for each of its servers still to finish takes at least `PRESSING` of a typical
        export's time at that budget: completions bunch (with exports of 5-15 s asked over
        the first few seconds, twice as many end a second at their peak as on average), so
        the budget binds there well before it binds on average. Not while exports are still
        to be asked for: they pass their own limiter first (`Gateway.send`), where the
        endpoint's looks idle, and polls taking its slots held the last of them back by
        seconds."""
        if self._to_ask[gateway.endpoint]:
            return False  # export requests go first: idle budget is what they leave
        limiter = gateway.limiter
        budget = limiter.budget or (limiter.learned if limiter.refused else None)
        if budget is None:
            return False  # never refused: no budget binds (an API without a limit, say)
        typical = self.durations.quantile(0.5)
        return typical is not None and 2 * self._left[gateway.endpoint] >= PRESSING * budget * typical

    def _may_end_run(self, gateway: Gateway, end: float | None, now: float) -> bool:
        """Might an export estimated to end at `end` (clock time) end the run, so that its
        poll's lag is the run's (`PollSchedule.tight_delay`)? When every export of the endpoint
        has been asked for, its end is within `LAST_SECONDS` of the latest estimated there so
        far (each end asked about is recorded toward that latest), and the exports set the
        run's end, not the requests: a poll and a download for each server left fit in the
        budget before then. Where the requests set it (600 servers of 5-15 s at 100 a second)
        a poll that comes early delays everyone, and the last exports' lag is hidden behind the
        others' requests. Only a few exports near the end pay: about 15 of 300 servers of 5-15
        s, a request each."""
        endpoint = gateway.endpoint
        if end is None or self._to_ask[endpoint]:
            return False
        latest = self._latest_end[endpoint] = max(end, self._latest_end.get(endpoint, end))
        if end < latest - LAST_SECONDS:
            return False
        rate = gateway.limiter.budget or gateway.limiter.rate
        return 2 * self._left[endpoint] / rate <= max(latest - now, LAST_SECONDS)

    async def _room_to_ask(self, target: Target) -> None:
        """Wait while this server's export request would only queue behind others'.

        A server started while many exports still wait for the rate limiter would wait there
        too, holding its task and its request's chain (~10 KB) and nothing else: at the start
        of a large run, all --concurrency servers at once. So the fan-out keeps about
        `QUEUED_SECONDS` of exports at the limiter's rate asked for and not answered: enough
        that the limiter never runs dry, start-up included, which sets the rate at twice what
        got through (issue 14).
        """
        gateway = self.clients[id(target.project)].gateway
        limiter = gateway.export_limiter or gateway.limiter
        while self._asking > max(MIN_QUEUED, limiter.rate * QUEUED_SECONDS) and not self.stopping:
            await sleep(QUEUED_CHECK)

    def _behind(self) -> bool:
        """Are the servers in flight waiting for each other: more polls and downloads due than
        the endpoints send in a --poll-interval? Then another server would only wait too.

        Exports go before polls at the rate limiter, so against a rate-limited API (a shard of a
        large fleet, say) the fan-out would otherwise start all --concurrency servers while the
        ones started first, long done, wait for their polls and downloads, each holding its task
        (issue 14). Starting stays ahead of finishing by what one --poll-interval can send.
        """
        due = self._polls_due + self._downloads.waiting
        if due <= MIN_QUEUED:
            return False
        rate = sum(gateway.limiter.rate for gateway in self.gateways)
        return due > rate * self.settings.poll_interval

    def _asked(self, progress: _Progress) -> None:
        """This server is past its export request (answered, or never needed: a resumed export)."""
        if progress.asking:
            progress.asking = False
            self._asking -= 1
            self._to_ask[progress.target.project.endpoint] -= 1

    @property
    def unreachable(self) -> str | None:
        """Why some endpoint was given up, if one was: its servers are pending (exit 4)."""
        for health in self.health.values():
            if health.given_up is not None:
                return str(health.given_up)
        return None

    @property
    def stop_reason(self) -> str | None:
        """Why the run stopped before it had tried every server, if it did."""
        if self.stopping:
            return self.stopping
        if self.cut_off:
            return DEADLINE
        if self.auth_error is not None:
            return "credentials rejected"
        if self.unreachable is not None and all(h.given_up for h in self.health.values()):
            return "API unreachable"
        return None

    async def _run_one(self, progress: _Progress) -> None:
        """One server, whatever happens; `stop()` may cancel it (its task's own scope, no scope of
        its own: one per server in flight was ~650 bytes, issue 14), and then it stays pending."""
        target, result = progress.target, progress.result
        result.started()
        started = time.monotonic()
        self._active.add(progress)
        try:
            prior = self.prior.get(target.key)
            if prior is not None and await self._already_collected(target, prior, progress):
                return
            if prior is None and await self._found_stored(target, progress):
                return
            archive = await self.collect(target, progress, export_id=_resumable_export(prior))
        except _CutOff:
            self.cut_off = True
            result.cut_off(str(self.timebox))
        except Unreachable as exc:
            # Not this server's failure: the endpoint was given up. Pending, and no log line
            # per server (the endpoint said it once).
            result.pending("API unreachable", f"not collected: {exc}", exc)
        except AuthError as exc:
            # Not this server's failure either: the run stops, and a re-run with fresh
            # credentials picks this server up where the journal says.
            result.pending(
                "run stopped: credentials rejected", f"not collected: run stopped, credentials rejected ({exc})", exc
            )
            self._stop_for_auth(exc, progress)
        except CollectorError as exc:
            await self._fail(progress, exc, getattr(exc, "reason", None))
        except Exception as exc:
            self._internal_errors += 1
            log.error(
                "%s/%s: internal error: %s: %s",
                short_id(result.project_id),
                short_id(result.server_id),
                type(exc).__name__,
                exc,
                exc_info=self._internal_errors <= MAX_TRACEBACKS,
                extra=ev("internal_error", **progress.where(), error=f"{type(exc).__name__}: {exc}"),
            )
            await self._fail(progress, exc, f"internal error: {type(exc).__name__}")
        else:
            result.collected(archive.name, archive.size, archive.sha256)
            log.info(
                "%s/%s: collected, %d bytes",
                short_id(result.project_id),
                short_id(result.server_id),
                archive.size,
                extra=ev(
                    "server_collected",
                    **progress.where(),
                    bytes=archive.size,
                    attempt=result.attempts,
                    duration_s=round(time.monotonic() - started, 3),
                ),
            )
            await progress.enter(Phase.COLLECTED, export_id=result.export_id, size=archive.size, sha256=archive.sha256)
        finally:
            self._asked(progress)
            self._left[target.project.endpoint] -= 1
            self._active.discard(progress)
            result.finished(time.monotonic() - started)
            if progress.slot is not None:
                progress.slot.give_back()

    async def _already_collected(self, target: Target, prior: Entry, progress: _Progress) -> bool:
        """Is this server's archive on disk from an earlier run, as the journal recorded it?"""
        if prior.phase is not Phase.COLLECTED or prior.bytes is None:
            return False
        name = archive_name(*target.key)
        if not await self.destination.check(name, prior.bytes, prior.sha256 if self.settings.verify else None):
            log.warning(
                "%s: archive from an earlier run is missing or changed; collecting it again",
                name,
                extra=ev("archive_recollected", **progress.where(), reason="missing or changed"),
            )
            return False
        progress.result.collected(name, prior.bytes, prior.sha256, earlier=True, export_id=prior.export_id)
        await progress.enter(Phase.COLLECTED, export_id=prior.export_id, size=prior.bytes, sha256=prior.sha256)
        return True

    async def _found_stored(self, target: Target, progress: _Progress) -> bool:
        """Without a journal entry (a new pod's first run into a bucket), is the archive already
        stored, whole (its size and the sha256 we stamped on it)? Only destinations that can
        say (`stat`: a local folder cannot) are asked, and not with --fresh."""
        if self.fresh:
            return False
        name = archive_name(*target.key)
        stored = await self.destination.stat(name)  # a StorageError fails this server like any other
        if stored is None or stored.sha256 is None:
            return False
        progress.result.collected(name, stored.size, stored.sha256, earlier=True)
        await progress.enter(Phase.COLLECTED, size=stored.size, sha256=stored.sha256)
        return True

    async def _fail(self, progress: _Progress, exc: Exception, reason: str | None) -> None:
        result = progress.result
        result.failed(exc, reason)
        log.warning(
            "%s/%s: failed: %s",
            short_id(result.project_id),
            short_id(result.server_id),
            result.error,
            extra=ev("server_failed", **progress.where(), **error_fields(exc), reason=reason),
        )
        await progress.enter(Phase.FAILED, export_id=result.export_id, error=result.error, reason=reason)
        self.failed += 1
        if self.failure_limit is not None and self.failed > self.failure_limit and not self.stopping:
            self.budget_spent = True
            why = f"too many failures (more than {self.settings.max_failures} of the servers)"
            log.error(
                "%d servers failed, more than --max-failures %s: starting nothing new; running downloads "
                "get %g s to finish",
                self.failed,
                self.settings.max_failures,
                self.settings.grace,
                extra=ev("run_stopping", reason=why, wait_s=self.settings.grace),
            )
            self.stop(why)

    def _stop_for_auth(self, exc: AuthError, progress: _Progress) -> None:
        self.credentials_rejected(exc, progress.target.project.project_id, progress.target.project.endpoint)

    def credentials_rejected(self, exc: AuthError, project_id: str, endpoint: str) -> None:
        """Stop the run: the API refused our credentials, even fresh ones. Before `run`
        (discovery was refused), it starts nothing and leaves every server pending."""
        if self.auth_error is None:
            self.auth_error = exc
            log.error(
                "credentials rejected: %s; stopping the run",
                exc,
                extra=ev("credentials_rejected", project_id=project_id, endpoint=endpoint, **error_fields(exc)),
            )
        if self._scope is not None:
            self._scope.cancel()

    def stop(self, why: str) -> None:
        """Start nothing new; let transfers already running finish (the caller bounds how long).

        Servers still exporting or polling stop now: their export id is known (and journalled),
        so the next run picks them up without asking for a new export.
        """
        self.stopping = why
        self.stopped.set()
        for progress in list(self._active):
            if progress.phase is not Phase.DOWNLOADING:
                progress.cancel()

    def cancel(self) -> None:
        """Stop everything now."""
        if self._scope is not None:
            self._scope.cancel()


class _CutOff(Exception):  # not an error: the deadline leaves this server to the next run
    """Work that could not finish before --deadline is not started (`collector.sweep.timebox`)."""


class Places:
    """A number of places (the `downloads` transfer slots) taken in turn, except that a server
    --first picked goes before every other that waits. A place given back goes straight to the
    next in line."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"places must be at least 1, got {total}")
        self._free = total
        self._first: deque[anyio.Event] = deque()
        self._others: deque[anyio.Event] = deque()

    async def acquire(self, first: bool = False) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._free and not self._first and not self._others:
            self._free -= 1
            return
        turn = anyio.Event()
        line = self._first if first else self._others
        line.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():
                self.release()  # handed a place as it was cancelled: the next in line takes it
            else:
                line.remove(turn)
            raise

    @property
    def waiting(self) -> int:
        return len(self._first) + len(self._others)

    def release(self) -> None:
        for line in (self._first, self._others):
            if line:
                line.popleft().set()
                return
        self._free += 1


class _Slot:
    """A place of a limited kind (one of the `downloads` transfer slots, or of --concurrency),
    given back while its holder waits out a backoff: a server that is not working must not keep
    another from working. Re-taken after the wait; given back at the end only if held."""

    def __init__(self, limiter: Places | anyio.Semaphore, *, first: bool = False) -> None:
        self._limiter = limiter
        self._first = first  # taken before others' (--first), where the limiter has an order
        self._held = False

    @classmethod
    def held(cls, limiter: Places | anyio.Semaphore) -> _Slot:
        """A slot its holder already took (the fan-out takes it before starting the task)."""
        slot = cls(limiter)
        slot._held = True
        return slot

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._limiter.release()

    async def __aenter__(self) -> _Slot:
        await self._take()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.give_back()

    async def away(self, sleep: Callable[[float], Awaitable[None]], seconds: float) -> None:
        """`sleep(seconds)` without the slot, then queue for one again."""
        self._held = False
        self._limiter.release()
        await sleep(seconds)
        await self._take()

    async def _take(self) -> None:
        if isinstance(self._limiter, Places):
            await self._limiter.acquire(self._first)
        else:
            await self._limiter.acquire()
        self._held = True


def error_fields(exc: BaseException) -> dict[str, object]:
    """What a log line or an event says about an error."""
    return {
        "error": str(exc) if isinstance(exc, CollectorError) else f"{type(exc).__name__}: {exc}",
        "error_kind": getattr(exc, "kind", "internal"),
        "status": getattr(exc, "status", None),
        "error_code": getattr(exc, "error_code", None),
        "request_id": getattr(exc, "request_id", None),
    }


def _resumable_export(prior: Entry | None) -> str | None:
    """An export an earlier run asked for and did not finish with: poll it, don't ask again.

    A failed server starts over with a new export; whatever failed may have been the export.
    """
    if prior is None or prior.phase not in (Phase.POLLING, Phase.DOWNLOADING):
        return None
    return prior.export_id
