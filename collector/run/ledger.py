"""The results of a run whose sweep crashed, rebuilt from each server's latest event, and
the result of a server discovery rejected before the sweep.
"""

from __future__ import annotations

from collector.config.inventory import Inventory
from collector.destinations.base import archive_name
from collector.run.prepare import Rejected
from collector.sweep.events import Phase, PhaseChanged
from collector.sweep.results import ServerResult


def rejected_result(rejected: Rejected) -> ServerResult:
    """A discovered server we cannot collect: failed, with why, and nothing written for it."""
    result = ServerResult(rejected.project_id, rejected.server_id, rejected.name)
    result.failed_as(rejected.reason, "listed with an unusable id", kind=rejected.kind)
    return result


class Ledger:
    """Each server's latest event: the results to report when a crash took the sweep's own."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], PhaseChanged] = {}

    def __call__(self, event: PhaseChanged) -> None:
        self.last[event.project_id, event.server_id] = event

    def results(self, inventory: Inventory) -> list[ServerResult]:
        results = []
        for project, server in inventory.targets():
            result = ServerResult(project.project_id, server.id, server.name)
            event = self.last.get((project.project_id, server.id))
            if event is not None:
                result.polling(event.export_id)
                if event.phase is Phase.COLLECTED:
                    result.collected(archive_name(project.project_id, server.id), event.size, event.sha256)
                elif event.phase is Phase.FAILED:
                    result.failed_as(event.error, event.reason or event.error)
            result.stopped("internal error")
            results.append(result)
        return results
