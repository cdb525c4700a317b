"""One side of one part of `bench compare`, measured in the process that runs this module (a fresh one, started by
`report.py` through `bench.processes.run_fresh` under the malloc setting being measured):

    python -m esper_lab.bench.compare.cell '{"part": "B", "side": "ours", "threads": 2, "config": {...}}'

`config` holds the fields of the part's config dataclass (`InferenceBenchConfig`, `UpdateBenchConfig`,
`SameWorldConfig`; part C adds `"seed"`). Progress goes to stderr; the result is the one `RESULT` line on stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from esper_lab.bench.processes import emit
from esper_lab.bench.timing import Log, Progress


def _config(cls: type, fields: dict[str, Any]) -> Any:
    """`cls(**fields)` with JSON lists turned back into the tuples the dataclasses hold."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def run_cell(spec: dict[str, Any], log: Log) -> Any:
    """Measure `spec["side"]` of `spec["part"]` with `spec["threads"]` torch threads; the part's rows."""
    import torch

    torch.set_num_threads(int(spec["threads"]))
    part, side, fields = spec["part"], spec["side"], dict(spec["config"])
    if side not in ("ours", "sb3"):
        raise ValueError(f"unknown side {side!r}; expected 'ours' or 'sb3'")
    if part == "A":
        from esper_lab.bench.compare.inference import InferenceBenchConfig, measure_side

        return measure_side(side, _config(InferenceBenchConfig, fields), log)
    if part == "B":
        from esper_lab.bench.compare.update import UpdateBenchConfig, measure_side

        return measure_side(side, _config(UpdateBenchConfig, fields), log)
    if part == "C":
        from esper_lab.bench.compare.same_world import SameWorldConfig, run_ours, run_sb3

        seed = int(fields.pop("seed"))
        cfg = _config(SameWorldConfig, fields)
        return [{"seed": seed, side: (run_ours if side == "ours" else run_sb3)(cfg, seed, log)}]
    raise ValueError(f"unknown part {part!r}; expected A, B or C")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m esper_lab.bench.compare.cell '<json spec>'", file=sys.stderr)
        return 2
    spec = json.loads(args[0])
    emit(run_cell(spec, Progress(f"compare {spec['part']} {spec['side']}")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
