"""What a collector that knew everything could reach on the fleet `sweep.py` measures.

`sweep.py`'s lower bound takes the largest of its terms (the slowest export; 3 requests a
server at the API's rate, less its bucket; the flow of exports' ends, `flow_bound`). This
script schedules the benchmark's own fleet (the simulator's profiles for `--servers` and
`--seed`) with knowledge no collector has, and prints the makespan it reaches:

- every export's time is known, so each is polled once, at the moment it ends, and
  downloaded at once after (three requests a server, no poll wasted, no poll late);
- requests are sent at the API's token bucket exactly (refill `--rate-limit` a second,
  `--rate-burst` tokens, by default `max(1, rate)`, full at the start, as the simulator's
  gateway), each answered at once; a download goes before an export request, which goes
  before a poll;
- the exports are asked for in inventory order (a first run: nothing is known of any server
  yet) or, for a second run, in the best order found: the inventory's, the slowest first,
  the collector's rules (`collector.sweep.plan`: long first, least laxity with each spread;
  the collector takes the one this same model ends soonest with), and a hill-climb from the
  best of those (swaps kept while the makespan does not grow).

So it bounds from below what a first run in inventory order can reach (its polls cannot be
better than at each export's end, nor its requests faster than the bucket), and says how far
the second run's ordering can go by the orders tried (an upper bound on the best order, not
a proof of it). Beside it, `flow_bound` (`collector.sweep.plan`), a proof: no order reaches
below it. One JSON line per case:

    python benchmarks/ideal.py --servers 300 600 --export-seconds 5-15 --rate-limit 100 --rate-burst 20
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence

from _common import SimConfig, emit, parse_range

from collector.simulator.fleet import Fleet
from collector.sweep.plan import SPREADS, flow_bound, modelled_end, rule_end


def makespan(order: Sequence[int], durations: Sequence[float], rate: float, burst: float) -> float:
    """When the last download is sent, every export polled exactly at its end, asked in `order`
    (`collector.sweep.plan.modelled_end`, the model the collector picks its rule by)."""
    asking = iter(order)
    return modelled_end(durations, rate, lambda now: next(asking), burst=burst)


def hill_climb(
    order: list[int], durations: Sequence[float], rate: float, burst: float, tries: int, seed: int
) -> tuple[float, list[int]]:
    best, order = makespan(order, durations, rate, burst), list(order)
    rnd = random.Random(seed)
    for _ in range(tries):
        i, j = rnd.randrange(len(order)), rnd.randrange(len(order))
        order[i], order[j] = order[j], order[i]
        got = makespan(order, durations, rate, burst)
        if got <= best:
            best = got
        else:
            order[i], order[j] = order[j], order[i]
    return best, order


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[300, 600])
    parser.add_argument("--export-seconds", default="5-15", metavar="LO-HI")
    parser.add_argument("--rate-limit", type=float, default=100.0)
    parser.add_argument("--rate-burst", type=float, default=None, help="the API's bucket (default: a second's worth)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tries", type=int, default=3000, help="hill-climb swaps for the second run's order")
    args = parser.parse_args()
    for servers in args.servers:
        config = SimConfig(
            servers=servers,
            seed=args.seed,
            export_seconds=parse_range(args.export_seconds),
            rate_limit=args.rate_limit,
            rate_burst=args.rate_burst,
        )
        durations = [p.export_seconds for p in Fleet(config).profiles]
        rate = args.rate_limit
        burst = config.burst or 1.0  # the simulator's bucket (a rate limit is given)
        flow = flow_bound(durations, rate, burst)
        bound = max(*durations, (3 * servers - burst) / rate, flow)  # sweep.py's, less a round trip
        inventory = list(range(servers))
        orders = {
            "inventory": inventory,
            "slowest_first": sorted(inventory, key=lambda i: -durations[i]),
        }
        second = {name: makespan(order, durations, rate, burst) for name, order in orders.items()}
        # the collector's rules (`collector.sweep.plan`): long first, least laxity by its spreads
        for name, spread in [("long_first", None), *((f"least_laxity_{s:g}", s) for s in SPREADS)]:
            orders[name] = []
            second[name] = rule_end(durations, rate, spread, orders[name], burst=burst)
        start = min(second, key=second.get)
        climbed, _ = hill_climb(orders[start], durations, rate, burst, args.tries, args.seed)
        emit(
            {
                "bench": "ideal",
                "servers": servers,
                "export_seconds": list(config.export_seconds),
                "rate_limit": rate,
                "rate_burst": burst,
                "seed": args.seed,
                "bound_s": round(bound, 3),
                "flow_bound_s": round(flow, 3),
                "first_run_s": round(second["inventory"], 3),
                "first_run_ratio": round(second["inventory"] / bound, 3),
                "second_run_by_order_s": {name: round(s, 3) for name, s in second.items()},
                "second_run_best_s": round(climbed, 3),
                "second_run_best_ratio": round(climbed / bound, 3),
                "hill_climb": {"from": start, "tries": args.tries},
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
