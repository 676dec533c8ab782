"""A local, seeded imitation of Huawei Cloud CloudDC's log-export API, quirks and faults included.

The collector's demo, tests and benchmarks run against it over real loopback sockets. See
`Simulator` for the Python API and `collector.simulator.cli` for ``collector simulate``.
"""

from collector.simulator.config import DEFAULT_PROJECT_ID, DEFAULT_TOKEN, SimConfig
from collector.simulator.server import Simulator

__all__ = ["DEFAULT_PROJECT_ID", "DEFAULT_TOKEN", "SimConfig", "Simulator"]
