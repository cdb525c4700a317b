"""`esper-lab bench compare`: run the selected parts in this one process, print the table, write the JSON.

    esper-lab bench compare [--parts A,B,C] [--threads 2] [--repeats 7] [--budget-minutes 5] [--seeds 0,1,2]
                            [--episodes 20] [--preset demo] [--json results/bench_compare.json]

Every part runs with `torch.set_num_threads(--threads)` on both sides; timings are medians of `--repeats` repeats
after warm-up, with the IQR. The allocator is set once at the start with `esper_lab.malloc.tune_malloc()` (the call
our Trainer makes; without it part C would switch glibc's thresholds mid-process), so every part and both sides run
on the same malloc setting; `ESPER_LAB_MALLOC=default` keeps glibc's defaults. The JSON records the versions,
`torch.get_num_threads()`, `malloc` ("tuned": thresholds raised by mallopt or by GLIBC_TUNABLES containing
`mmap_threshold`; "default"; "unavailable") and the raw GLIBC_TUNABLES; it is rewritten after each part, so a later
failure keeps the parts already measured.

Targets (`TARGETS`): A, ours no slower than SB3's `policy.forward` at H=512, batch 8 (ratio >= 1.0); B, ours at least
2x faster at L=32 (ratio >= 2.0); C, ours has the higher pooled evaluated return. A target whose row was not measured
(another H, another L, a part not run) is "n/a".
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from esper_lab.bench.timing import Log, Progress
from esper_lab.config import PRESETS, ConfigError

PARTS = ("A", "B", "C")
DEFAULT_JSON = Path("results/bench_compare.json")
MIN_REPEATS = 5  # fewer repeats make a smoke run, not a measurement (the table says so)


@dataclass
class CompareConfig:
    """What `esper-lab bench compare` runs."""

    parts: tuple[str, ...] = PARTS
    """Parts to run, in order: A (inference), B (update), C (same world)."""
    threads: int = 2
    """torch.set_num_threads on both sides."""
    repeats: int = 7
    """Timed repeats per cell in parts A and B (median and IQR reported)."""
    budget_minutes: float = 5.0
    """Part C: training wall-clock budget per run and side."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Part C: one run per seed and side."""
    episodes: int = 20
    """Part C: evaluation episodes per run."""
    preset: str = "demo"
    """Part C: the world, policy and PPO preset."""
    json_path: Path | None = DEFAULT_JSON
    """Where the JSON goes (None: nowhere)."""
    lstm_hidden: int | None = None
    """Testing only: one LSTM width for parts A and B instead of (512, 128) and 512."""
    world_overrides: dict[str, Any] = field(default_factory=dict)
    """Testing only: preset overrides for part C."""


# --- input ------------------------------------------------------------------------------------------------------


def parse_parts(text: str) -> tuple[str, ...]:
    """'A,c' -> ('A', 'C'); raises ConfigError for an empty list or an unknown letter."""
    parts = [p.strip().upper() for p in text.split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"no part given; choose from {', '.join(PARTS)} (e.g. --parts A,B)")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConfigError(f"unknown part {', '.join(map(repr, unknown))}; choose from {', '.join(PARTS)}")
    return tuple(dict.fromkeys(parts))


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2); raises ConfigError when empty or not integers."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ConfigError("no seed given (e.g. --seeds 0,1,2)")
    try:
        return tuple(int(s) for s in items)
    except ValueError:
        raise ConfigError(f"seeds must be integers separated by commas, got {text!r}") from None


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise ConfigError(f"must be greater than 0, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise ConfigError(f"must be at least 1, got {text}")
    return value


def validate(cfg: CompareConfig) -> CompareConfig:
    """Raise ConfigError naming the first setting that cannot work."""
    parse_parts(",".join(cfg.parts))
    if not cfg.seeds:
        raise ConfigError("seeds: at least one seed is needed for part C")
    if not cfg.budget_minutes > 0:
        raise ConfigError(f"budget_minutes must be greater than 0, got {cfg.budget_minutes}")
    for name in ("threads", "repeats", "episodes"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r}; choose one of {sorted(PRESETS)}")
    return cfg


def environment() -> dict[str, Any]:
    """Versions, threads, malloc mode and machine of this process."""
    import numpy
    import torch

    from esper_lab.bench.compare.sb3_side import versions
    from esper_lab.malloc import ENV_VAR, malloc_setting

    return {"python": platform.python_version(), "torch": torch.__version__, **versions(), "numpy": numpy.__version__,
            "torch_num_threads": torch.get_num_threads(), "malloc": malloc_setting(),
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES"), ENV_VAR.lower(): os.environ.get(ENV_VAR),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# --- running ----------------------------------------------------------------------------------------------------


def run_part(part: str, cfg: CompareConfig, log: Log) -> dict[str, Any]:
    """One part's results dict (see the part's module)."""
    if part == "A":
        from esper_lab.bench.compare.inference import InferenceBenchConfig, run_inference

        sizes = (cfg.lstm_hidden,) if cfg.lstm_hidden else InferenceBenchConfig.hidden_sizes
        return run_inference(InferenceBenchConfig(hidden_sizes=sizes, repeats=cfg.repeats), log)
    if part == "B":
        from esper_lab.bench.compare.update import UpdateBenchConfig, run_update

        hidden = cfg.lstm_hidden or UpdateBenchConfig.lstm_hidden_dim
        return run_update(UpdateBenchConfig(lstm_hidden_dim=hidden, repeats=cfg.repeats), log)
    if part == "C":
        from esper_lab.bench.compare.same_world import SameWorldConfig, run_same_world

        return run_same_world(SameWorldConfig(preset=cfg.preset, budget_minutes=cfg.budget_minutes, seeds=cfg.seeds,
                                              episodes=cfg.episodes, threads=cfg.threads,
                                              overrides=dict(cfg.world_overrides)), log)
    raise ConfigError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")


def run_compare(cfg: CompareConfig, log: Log | None = None, on_part: Callable[[dict], None] | None = None) -> dict:
    """Run `cfg.parts` in order with `cfg.threads` torch threads; `on_part(results)` after each part; progress
    lines go to `log` (default: stderr).

    Returns `{environment, config, parts: {A, B, C}, targets}`."""
    import torch

    from esper_lab.bench.compare.sb3_side import require_sb3
    from esper_lab.malloc import tune_malloc

    log = log or Progress("compare")
    validate(cfg)
    require_sb3()
    tune_malloc()
    torch.set_num_threads(cfg.threads)
    config = {**asdict(cfg), "json_path": None if cfg.json_path is None else str(cfg.json_path)}
    results: dict[str, Any] = {"environment": environment(), "config": config, "parts": {}, "targets": []}
    for part in cfg.parts:
        log(f"part {part}: start")
        results["parts"][part] = run_part(part, cfg, log)
        torch.set_num_threads(cfg.threads)  # whatever a part did, the next one starts like this one
        results["targets"] = judge(results["parts"])
        results["environment"]["torch_num_threads"] = torch.get_num_threads()
        if on_part is not None:
            on_part(results)
    return results


# --- targets ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    part: str
    name: str
    threshold: float
    """PASS when value >= threshold (A, B: a ratio) or value > threshold (C: a return difference)."""
    strict: bool = False


TARGETS = (
    Target("A", "ours no slower than SB3 forward (H=512, batch 8): sb3/ours", 1.0),
    Target("B", "ours >= 2x faster update (L=32, H=512): sb3/ours", 2.0),
    Target("C", "higher evaluated return: ours - sb3 (pooled)", 0.0, strict=True),
)


def _find(rows: list[dict], **keys: Any) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in keys.items())), None)


def target_value(target: Target, parts: dict[str, Any]) -> float | None:
    """The number a target judges, or None when its row was not measured."""
    part = parts.get(target.part)
    if part is None:
        return None
    if target.part == "A":
        row = _find(part["rows"], lstm_hidden=512, batch=8)
        return None if row is None else row["ratio_forward"]
    if target.part == "B":
        row = _find(part["rows"], episode_length=32)
        return None if row is None or part["config"]["lstm_hidden_dim"] != 512 else row["ratio"]
    return part["return_diff"]


def judge(parts: dict[str, Any]) -> list[dict[str, Any]]:
    """`[{part, target, value, threshold, status}]` with status PASS, MISS or n/a, one per TARGETS entry."""
    out = []
    for t in TARGETS:
        value = target_value(t, parts)
        if value is None:
            status = "n/a"
        else:
            status = "PASS" if (value > t.threshold if t.strict else value >= t.threshold) else "MISS"
        out.append(dict(part=t.part, target=t.name, value=value, threshold=t.threshold, status=status))
    return out


# --- output -----------------------------------------------------------------------------------------------------

COLUMNS = (("part", 4), ("measurement", 36), ("ours", 20), ("sb3", 20), ("ratio", 8), ("target", 7), ("result", 6))


def _stat(s: dict[str, Any], digits: int = 0) -> str:
    return f"{s['median']:.{digits}f} (iqr {s['iqr']:.{digits}f})"


def _line(*cells: Any) -> str:
    """Left-aligned part and measurement, right-aligned numbers, one space between columns."""
    widths = [w for _, w in COLUMNS]
    return " ".join(f"{str(c):<{w}}" if i < 2 else f"{str(c):>{w}}" for i, (c, w) in enumerate(zip(cells, widths)))


def _verdict(results: dict, part: str) -> tuple[str, str]:
    for v in results.get("targets", []):
        if v["part"] == part and v["status"] != "n/a":
            return (f">{v['threshold']:g}" if part == "C" else f">={v['threshold']:g}"), v["status"]
    return "", ""


def _rows_a(a: dict, results: dict) -> list[str]:
    lines = []
    for r in a["rows"]:
        key = f"H={r['lstm_hidden']} batch {r['batch']} us/step"
        target, status = _verdict(results, "A") if (r["lstm_hidden"], r["batch"]) == (512, 8) else ("", "")
        lines.append(_line("A", f"{key} forward", _stat(r["ours_us"]), _stat(r["sb3_forward_us"]),
                           f"{r['ratio_forward']:.2f}x", target, status))
        lines.append(_line("A", f"{key} predict", "", _stat(r["sb3_predict_us"]), f"{r['ratio_predict']:.2f}x", "", ""))
    for H in dict.fromkeys(r["lstm_hidden"] for r in a["rows"]):
        r = _find(a["rows"], lstm_hidden=H)
        lines.append(_line("A", f"H={H} parameters", f"{r['ours_params']:,}", f"{r['sb3_params']:,}", "", "", ""))
    return lines


def _rows_b(b: dict, results: dict) -> list[str]:
    lines = []
    for r in b["rows"]:
        L, ours, sb3 = r["episode_length"], r["ours"], r["sb3"]
        target, status = _verdict(results, "B") if L == 32 else ("", "")
        lines.append(_line("B", f"L={L} ms per 1k samples per epoch", _stat(ours["ms_per_1k_epoch"], 1),
                           _stat(sb3["ms_per_1k_epoch"], 1), f"{r['ratio']:.2f}x", target, status))
        calls = [f"{side['lstm_calls']} ({side['padded_samples']})" for side in (ours, sb3)]
        lines.append(_line("B", f"L={L} LSTM calls (padded samples)", *calls, "", "", ""))
    if b["rows"]:
        r = b["rows"][0]
        lines.append(_line("B", f"H={b['config']['lstm_hidden_dim']} parameters", f"{r['ours']['params']:,}",
                           f"{r['sb3']['params']:,}", "", "", ""))
    return lines


def _rows_c(c: dict, results: dict) -> list[str]:
    lines = []
    for run in c["runs"]:
        o, s, seed = run["ours"], run["sb3"], run["seed"]
        oe, se = o["eval"], s["eval"]
        lines.append(_line("C", f"seed {seed} return", f"{oe['return_mean']:.2f} ± {oe['return_std']:.2f}",
                           f"{se['return_mean']:.2f} ± {se['return_std']:.2f}",
                           f"{oe['return_mean'] - se['return_mean']:+.2f}", "", ""))
        lines.append(_line("C", f"seed {seed} final val acc %", f"{oe['final_val_acc_mean']:.1f}",
                           f"{se['final_val_acc_mean']:.1f}",
                           f"{oe['final_val_acc_mean'] - se['final_val_acc_mean']:+.1f}", "", ""))
        lines.append(_line("C", f"seed {seed} SPS (updates)", f"{o['sps']:.1f} ({o['updates']})",
                           f"{s['sps']:.1f} ({s['updates']})", f"{o['sps'] / s['sps']:.2f}x", "", ""))
    p = c["pooled"]
    target, status = _verdict(results, "C")
    lines.append(_line("C", "pooled return", f"{p['ours']['return_mean']:.2f} ± {p['ours']['return_std']:.2f}",
                       f"{p['sb3']['return_mean']:.2f} ± {p['sb3']['return_std']:.2f}", f"{c['return_diff']:+.2f}",
                       target, status))
    lines.append(_line("C", "pooled final val acc %", f"{p['ours']['final_val_acc_mean']:.1f}",
                       f"{p['sb3']['final_val_acc_mean']:.1f}",
                       f"{p['ours']['final_val_acc_mean'] - p['sb3']['final_val_acc_mean']:+.1f}", "", ""))
    lines.append(_line("C", "pooled SPS", f"{p['ours']['sps']:.1f}", f"{p['sb3']['sps']:.1f}", f"{c['sps_ratio']:.2f}x",
                       "", ""))
    return lines


def format_table(results: dict[str, Any]) -> str:
    """The fixed-width report: a header (versions, threads, malloc), one block per part, the targets."""
    env, cfg = results["environment"], results["config"]
    header = _line(*(name for name, _ in COLUMNS))
    lines = [
        f"esper-lab bench compare: torch {env['torch']}, sb3-contrib {env['sb3_contrib']}, stable-baselines3 "
        f"{env['stable_baselines3']}, python {env['python']}",
        f"threads {cfg['threads']} (torch.get_num_threads() = {env['torch_num_threads']}), malloc {env['malloc']}, "
        f"repeats {cfg['repeats']} (median, iqr); ratio = sb3 / ours (> 1: ours faster); C ratio column = ours - sb3",
    ]
    if cfg["repeats"] < MIN_REPEATS:
        lines.append(f"note: fewer than {MIN_REPEATS} repeats: a smoke run, not a measurement")
    lines += [header, "-" * len(header)]
    builders = {"A": _rows_a, "B": _rows_b, "C": _rows_c}
    for part, data in results["parts"].items():
        lines += builders[part](data, results)
    lines.append("-" * len(header))
    for v in results["targets"]:
        value = ("not measured" if v["value"] is None
                 else f"{v['value']:+.2f}" if v["part"] == "C" else f"{v['value']:.2f}x")
        lines.append(f"target {v['part']}: {v['target']:<62} {value:>12}  {v['status']}")
    return "\n".join(lines)


def write_json(path: Path, results: dict[str, Any]) -> None:
    """Indented JSON through `runs.dumps` (NaN -> null) and `runs.atomic_write`."""
    from esper_lab.runs import atomic_write, dumps

    atomic_write(path, json.dumps(json.loads(dumps(results)), indent=2) + "\n")


def main(cfg: CompareConfig, log: Log | None = None) -> int:
    """Run, print the table to stdout, write the JSON after every part. Returns the exit code (2 when sb3 is
    missing)."""
    from esper_lab.bench.compare.sb3_side import BenchDependencyError

    log = log or Progress("compare")
    on_part = (lambda results: write_json(cfg.json_path, results)) if cfg.json_path is not None else None
    try:
        results = run_compare(cfg, log, on_part)
    except BenchDependencyError as exc:
        print(f"esper-lab bench compare: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(results))
    if cfg.json_path is not None:
        print(f"wrote {cfg.json_path}", file=sys.stderr)
    return 0
