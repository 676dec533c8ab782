"""What bounding `collector.clouddc.replies.parse_json` costs, on answers up to its 1 MiB cap.

For each body: the non-recursive nesting check alone (`_depth_within`), the whole of
`parse_json`, and plain `json.loads`, best of `--repeat` runs, in milliseconds. The check
must stay within the same order as json.loads itself on every shape, hostile or not; if
plain json.loads (which recurses) ever refused deep nesting by itself cheaply, the check
would have to earn its place again.

    python benchmarks/parse_json.py
"""

from __future__ import annotations

import argparse
import json
import time

from collector.clouddc.replies import MAX_JSON_BYTES, _depth_within, parse_json
from collector.errors import ProtocolError

MIB = MAX_JSON_BYTES


def bodies() -> dict[str, bytes]:
    typical = {"export_id": "1", "status": "Running", "percentage": "30%", "created_at": "2025-03-20T02:48:06+00:00"}
    many = json.dumps([{**typical, "export_id": str(i)} for i in range(MIB // 110)]).encode()
    return {
        "typical status": json.dumps(typical).encode(),
        "many small objects": many[: many.rfind(b"}", 0, MIB - 1) + 1] + b"]",
        "one long string": json.dumps({"a": "x" * (MIB - 10)}).encode(),
        "escaped quotes": json.dumps({"a": '\\"' * (MIB // 5)}).encode(),
        "flat [] list": b"[" + b"[]," * (MIB // 3 - 1) + b"[]]",
        "32 deep, repeated": b"[" + b",".join([b"[" * 31 + b"1" + b"]" * 31] * (MIB // 65)) + b"]",
        "[ x 1 MiB (refused)": b"[" * MIB,
        "quotes only": b'"' * MIB,
        "backslashes": b'"' + b"\\" * (MIB - 1),
    }


def best(function, body: bytes, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            function(body)
        except (ValueError, RecursionError, ProtocolError):
            pass
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'body':26} {'bytes':>9} {'depth check':>12} {'parse_json':>11} {'json.loads':>11}  (ms)")
    for name, body in bodies().items():
        check = best(lambda b: _depth_within(b, 32), body, args.repeat)
        ours = best(lambda b: parse_json(b, operation="bench"), body, args.repeat)
        plain = best(json.loads, body, args.repeat)
        print(f"{name:26} {len(body):9d} {check:12.2f} {ours:11.2f} {plain:11.2f}")


if __name__ == "__main__":
    main()
