"""`esper-lab bench compare`: each side of each part in its own fresh process, the table, the JSON.

    esper-lab bench compare [--parts A,B,C] [--threads 2] [--repeats 7] [--rounds 2] [--budget-minutes 5]
                            [--seeds 0,1,2] [--episodes 20] [--preset demo] [--json results/bench_compare.json]

Parts A (inference) and B (update): for every round, every malloc setting (`tuned`: the thresholds in GLIBC_TUNABLES
at process start; `default`: glibc's own) and every side (ours, SB3), one new process (`cell.py`) measures all of
that side's cells, with `torch.set_num_threads(--threads)`: medians of `--repeats` repeats after warm-up, pooled over
rounds. The order alternates between rounds. Each side is then compared at its own best setting (the lower median,
measured, not assumed), and also with both under the defaults. The floor (the bare computation of our shapes:
`bench/floor.py`) is measured in ours' processes. Part C: every training run is a fresh process too, under the
setting part B found best for that side (`tuned` when B did not run).

The JSON records the versions, this process's environment, every measuring process (side, setting, pid, malloc as
that process saw it, seconds) and every summary; it is rewritten after each part, so a later failure keeps the parts
already measured. Targets (`TARGETS`) are judged on the H = 512, batch 8 row (A), the L = 32 and 1024 rows (B) and
the pooled return (C); a target whose row was not measured is "n/a".
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
from esper_lab.config import PRESETS, SEED, ConfigError

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
    """Timed repeats per cell and process in parts A and B (median and IQR reported)."""
    rounds: int = 2
    """Parts A and B: fresh processes per side and malloc setting (samples pooled; order alternates)."""
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
    """'0,1,2' -> (0, 1, 2); raises ConfigError when empty, not integers, outside a run seed's range or repeated
    (checked here, before parts A and B run, not when part C starts)."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ConfigError("no seed given (e.g. --seeds 0,1,2)")
    try:
        seeds = tuple(int(s) for s in items)
    except ValueError:
        raise ConfigError(f"seeds must be integers separated by commas, got {text!r}") from None
    bad = [s for s in seeds if not SEED.allows(s)]  # the rule every config's seed field is checked against
    if bad:
        raise ConfigError(f"seeds must be {SEED.text()}, got {', '.join(map(str, bad))}")
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"each seed once, got {text!r}")
    return seeds


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
    for name in ("threads", "repeats", "rounds", "episodes"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r}; choose one of {sorted(PRESETS)}")
    return cfg


def environment() -> dict[str, Any]:
    """Versions, threads, malloc and machine of this (orchestrating) process; each measuring process reports its
    own (`parts[X]["processes"]`)."""
    import numpy
    import torch

    from esper_lab.bench.compare.sb3_side import versions
    from esper_lab.bench.processes import available_settings
    from esper_lab.malloc import ENV_VAR, GLIBC_VAR, TUNABLES, malloc_setting

    return {"python": platform.python_version(), "torch": torch.__version__, **versions(), "numpy": numpy.__version__,
            "torch_num_threads": torch.get_num_threads(), "malloc": malloc_setting(),
            "glibc_tunables": os.environ.get(GLIBC_VAR), ENV_VAR.lower(): os.environ.get(ENV_VAR),
            "settings": list(available_settings()), "tuned_means": TUNABLES, "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# --- running ----------------------------------------------------------------------------------------------------


CELL_MODULE = "esper_lab.bench.compare.cell"
SIDES = ("ours", "sb3")


def measure_sides(part: str, config: dict[str, Any], cfg: CompareConfig, log: Log) -> dict[str, dict[str, list]]:
    """`measured[side][setting]`: one fresh process per round, setting and side; the order alternates by round."""
    from esper_lab.bench.processes import available_settings, run_fresh

    settings = available_settings()
    measured: dict[str, dict[str, list]] = {side: {s: [] for s in settings} for side in SIDES}
    for r in range(cfg.rounds):
        flip = r % 2 == 1
        for setting in (settings[::-1] if flip else settings):
            for side in (SIDES[::-1] if flip else SIDES):
                spec = {"part": part, "side": side, "threads": cfg.threads, "config": config}
                measured[side][setting].append(run_fresh(CELL_MODULE, spec, setting, log))
    return measured


def run_part(part: str, cfg: CompareConfig, log: Log, parts: dict[str, Any] | None = None) -> dict[str, Any]:
    """One part's results dict (see the part's module), measured in fresh processes; `parts` holds the parts
    already measured (part C takes each side's malloc setting from part B)."""
    from esper_lab.bench.processes import processes

    if part in ("A", "B"):
        if part == "A":
            from esper_lab.bench.compare.inference import InferenceBenchConfig as Config, combine

            sizes = (cfg.lstm_hidden,) if cfg.lstm_hidden else Config.hidden_sizes
            config = Config(hidden_sizes=sizes, repeats=cfg.repeats)
        else:
            from esper_lab.bench.compare.update import UpdateBenchConfig as Config, combine

            config = Config(lstm_hidden_dim=cfg.lstm_hidden or Config.lstm_hidden_dim, repeats=cfg.repeats)
        measured = measure_sides(part, asdict(config), cfg, log)
        return {**combine(config, measured), "processes": processes(measured)}
    if part == "C":
        from esper_lab.bench.compare.same_world import SameWorldConfig, run_same_world

        settings = side_settings((parts or {}).get("B"))
        config = SameWorldConfig(preset=cfg.preset, budget_minutes=cfg.budget_minutes, seeds=cfg.seeds,
                                 episodes=cfg.episodes, threads=cfg.threads, overrides=dict(cfg.world_overrides))
        seen: list[dict] = []

        def fresh_side(c: SameWorldConfig, side: str, seed: int, log: Log) -> dict[str, Any]:
            from esper_lab.bench.processes import run_fresh

            spec = {"part": "C", "side": side, "threads": cfg.threads, "config": {**asdict(c), "seed": seed}}
            result = run_fresh(CELL_MODULE, spec, settings[side], log)
            seen.append({"side": side, "setting": settings[side], "seed": seed, **result["process"]})
            return result["rows"][0][side]

        return {**run_same_world(config, log, fresh_side), "processes": seen}
    raise ConfigError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")


def side_settings(part_b: dict[str, Any] | None) -> dict[str, str]:
    """Part C's malloc setting per side: the one part B found best at L = 32 (or its first row), else 'tuned'
    ('default' where glibc is not the C library)."""
    from esper_lab.bench.processes import available_settings

    fallback = available_settings()[0]
    if not part_b or not part_b.get("rows"):
        return {side: fallback for side in SIDES}
    row = _find(part_b["rows"], episode_length=32) or part_b["rows"][0]
    return {side: row["best"][side] for side in SIDES}


def run_compare(cfg: CompareConfig, log: Log | None = None, on_part: Callable[[dict], None] | None = None) -> dict:
    """Run `cfg.parts` in order; `on_part(results)` after each part; progress lines go to `log` (default: stderr).

    Returns `{environment, config, parts: {A, B, C}, targets}`."""
    import torch

    from esper_lab.bench.compare.sb3_side import require_sb3

    log = log or Progress("compare")
    validate(cfg)
    require_sb3()
    torch.set_num_threads(cfg.threads)
    config = {**asdict(cfg), "json_path": None if cfg.json_path is None else str(cfg.json_path)}
    results: dict[str, Any] = {"environment": environment(), "config": config, "parts": {}, "targets": []}
    for part in cfg.parts:
        log(f"part {part}: start")
        results["parts"][part] = run_part(part, cfg, log, results["parts"])
        results["targets"] = judge(results["parts"])
        if on_part is not None:
            on_part(results)
    return results


# --- targets ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    part: str
    name: str
    threshold: float
    op: str
    """'>=', '<=' or '>': PASS when `value op threshold`."""
    row: tuple[tuple[str, Any], ...]
    """The row (key, value pairs) of the part the value is read from; empty for part C's pooled figure."""
    key: str
    """The field of that row (or of the part, for C)."""


TARGETS = (
    Target("A", "get_action no slower than SB3 predict (H=512, batch 8): sb3 predict / ours", 1.0, ">=",
           (("lstm_hidden", 512), ("batch", 8)), "ratio_predict"),
    Target("A", "get_action within 1.3x the bare step (H=512, batch 8): ours / floor", 1.3, "<=",
           (("lstm_hidden", 512), ("batch", 8)), "floor_ratio"),
    Target("B", "update at most 1.5x the bare trunk (L=32): ours / bare", 1.5, "<=", (("episode_length", 32),),
           "bare_ratio"),
    Target("B", "update at most 1.5x the bare trunk (L=1024): ours / bare", 1.5, "<=", (("episode_length", 1024),),
           "bare_ratio"),
    Target("B", "update >= 2x faster than RecurrentPPO (L=32): sb3 / ours", 2.0, ">=", (("episode_length", 32),),
           "ratio"),
    Target("C", "higher evaluated return: ours - sb3 (pooled)", 0.0, ">", (), "return_diff"),
)
OPS = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t, ">": lambda v, t: v > t}


def _find(rows: list[dict], **keys: Any) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in keys.items())), None)


def target_value(target: Target, parts: dict[str, Any]) -> float | None:
    """The number a target judges, or None when its row was not measured."""
    part = parts.get(target.part)
    if part is None:
        return None
    if not target.row:
        return part.get(target.key)
    if target.part == "B" and part["config"]["lstm_hidden_dim"] != 512:
        return None
    row = _find(part["rows"], **dict(target.row))
    return None if row is None else row.get(target.key)


def judge(parts: dict[str, Any]) -> list[dict[str, Any]]:
    """`[{part, target, value, threshold, op, status}]` with status PASS, MISS or n/a, one per TARGETS entry."""
    out = []
    for t in TARGETS:
        value = target_value(t, parts)
        status = "n/a" if value is None else "PASS" if OPS[t.op](value, t.threshold) else "MISS"
        out.append(dict(part=t.part, target=t.name, value=value, threshold=t.threshold, op=t.op, status=status))
    return out


# --- output -----------------------------------------------------------------------------------------------------

COLUMNS = (("part", 4), ("measurement", 38), ("ours", 20), ("sb3", 20), ("floor", 16), ("ratio", 7),
           ("target", 6), ("result", 6))


def _stat(s: dict[str, Any] | None, digits: int = 0, setting: str = "") -> str:
    if s is None:
        return "-"
    return f"{s['median']:.{digits}f} ±{s['iqr']:.{digits}f}" + (f" {setting}" if setting else "")


def _line(*cells: Any) -> str:
    """Left-aligned part and measurement, right-aligned numbers, one space between columns."""
    widths = [w for _, w in COLUMNS]
    return " ".join(f"{str(c):<{w}}" if i < 2 else f"{str(c):>{w}}" for i, (c, w) in enumerate(zip(cells, widths)))


def _verdict(results: dict, part: str, key: str, row: dict) -> tuple[str, str]:
    for t, v in zip(TARGETS, results.get("targets", [])):
        if t.part == part and t.key == key and all(row.get(k) == x for k, x in t.row) and v["status"] != "n/a":
            return f"{t.op}{t.threshold:g}", v["status"]
    return "", ""


def _best(row: dict, name: str, digits: int = 0) -> str:
    setting = row["best"][name]
    return _stat(row[name][setting], digits, setting)


def _rows_a(a: dict, results: dict) -> list[str]:
    lines = []
    for r in a["rows"]:
        key = f"H={r['lstm_hidden']} b{r['batch']} µs"
        ours_setting = r["best"]["ours"]
        floor = _stat(r[f"floor_{r['floor_kernel']}"][ours_setting], 0, r["floor_kernel"])
        lines.append(_line("A", f"{key} predict, best", _best(r, "ours"), _best(r, "sb3_predict"), floor,
                           f"{r['ratio_predict']:.2f}x", *_verdict(results, "A", "ratio_predict", r)))
        lines.append(_line("A", f"{key} forward, best", "", _best(r, "sb3_forward"), "",
                           f"{r['ratio_forward']:.2f}x", "", ""))
        if "ratio_predict_default" in r:
            lines.append(_line("A", f"{key} predict, both default", _stat(r["ours"].get("default")),
                               _stat(r["sb3_predict"].get("default")), _stat(r[f"floor_{r['floor_kernel']}"].get("default")),
                               f"{r['ratio_predict_default']:.2f}x", "", ""))
        other = "onednn" if r["floor_kernel"] == "native" else "native"
        lines.append(_line("A", f"{key} ours / floor (2nd kernel)", "", "", _stat(r[f"floor_{other}"][ours_setting], 0, other),
                           f"{r['floor_ratio']:.2f}x", *_verdict(results, "A", "floor_ratio", r)))
    for H in dict.fromkeys(r["lstm_hidden"] for r in a["rows"]):
        r = _find(a["rows"], lstm_hidden=H)
        lines.append(_line("A", f"H={H} parameters", f"{r['ours_params']:,}", f"{r['sb3_params']:,}", "", "", "", ""))
    return lines


def _rows_b(b: dict, results: dict) -> list[str]:
    lines = []
    for r in b["rows"]:
        L = r["episode_length"]
        bare = _stat(r["bare"][r["best"]["ours"]], 1, r["best"]["ours"])
        lines.append(_line("B", f"L={L} ms/1k samples/epoch, best", _best(r, "ours", 1), _best(r, "sb3", 1), bare,
                           f"{r['ratio']:.2f}x", *_verdict(results, "B", "ratio", r)))
        if "ratio_default" in r:
            lines.append(_line("B", f"L={L} both default", _stat(r["ours"].get("default"), 1),
                               _stat(r["sb3"].get("default"), 1), _stat(r["bare"].get("default"), 1),
                               f"{r['ratio_default']:.2f}x", "", ""))
        lines.append(_line("B", f"L={L} ours / bare", "", "", "", f"{r['bare_ratio']:.2f}x",
                           *_verdict(results, "B", "bare_ratio", r)))
        calls = [f"{r[f'{side}_counts']['lstm_calls']} ({r[f'{side}_counts']['padded_samples']})" for side in SIDES]
        lines.append(_line("B", f"L={L} LSTM calls (padded samples)", *calls, "", "", "", ""))
    if b["rows"]:
        r = b["rows"][0]
        lines.append(_line("B", f"H={b['config']['lstm_hidden_dim']} parameters", f"{r['ours_counts']['params']:,}",
                           f"{r['sb3_counts']['params']:,}", "", "", "", ""))
    return lines


def _rows_c(c: dict, results: dict) -> list[str]:
    lines = []
    for run in c["runs"]:
        o, s, seed = run["ours"], run["sb3"], run["seed"]
        oe, se = o["eval"], s["eval"]
        lines.append(_line("C", f"seed {seed} return", f"{oe['return_mean']:.2f} ± {oe['return_std']:.2f}",
                           f"{se['return_mean']:.2f} ± {se['return_std']:.2f}", "",
                           f"{oe['return_mean'] - se['return_mean']:+.2f}", "", ""))
        lines.append(_line("C", f"seed {seed} final val acc %", f"{oe['final_val_acc_mean']:.1f}",
                           f"{se['final_val_acc_mean']:.1f}", "",
                           f"{oe['final_val_acc_mean'] - se['final_val_acc_mean']:+.1f}", "", ""))
        lines.append(_line("C", f"seed {seed} SPS (updates)", f"{o['sps']:.1f} ({o['updates']})",
                           f"{s['sps']:.1f} ({s['updates']})", "", f"{o['sps'] / s['sps']:.2f}x", "", ""))
    p = c["pooled"]
    lines.append(_line("C", "pooled return", f"{p['ours']['return_mean']:.2f} ± {p['ours']['return_std']:.2f}",
                       f"{p['sb3']['return_mean']:.2f} ± {p['sb3']['return_std']:.2f}", "", f"{c['return_diff']:+.2f}",
                       *_verdict(results, "C", "return_diff", {})))
    lines.append(_line("C", "pooled final val acc %", f"{p['ours']['final_val_acc_mean']:.1f}",
                       f"{p['sb3']['final_val_acc_mean']:.1f}", "",
                       f"{p['ours']['final_val_acc_mean'] - p['sb3']['final_val_acc_mean']:+.1f}", "", ""))
    lines.append(_line("C", "pooled SPS", f"{p['ours']['sps']:.1f}", f"{p['sb3']['sps']:.1f}", "",
                       f"{c['sps_ratio']:.2f}x", "", ""))
    return lines


def _process_line(part: str, data: dict) -> str:
    """Which processes measured the part: side/setting (malloc the process saw), pid, seconds."""
    items = [f"{p['side']}/{p['setting']}" + ("" if p["malloc"] == p["setting"] else f" (saw {p['malloc']}!)")
             + f" pid {p['pid']} {p['seconds']:.0f}s" for p in data.get("processes", [])]
    return f"part {part}: {len(items)} fresh processes: " + ", ".join(items)


def format_table(results: dict[str, Any]) -> str:
    """The fixed-width report: a header (versions, threads, malloc, processes), one block per part, the targets."""
    env, cfg = results["environment"], results["config"]
    header = _line(*(name for name, _ in COLUMNS))
    lines = [
        f"esper-lab bench compare: torch {env['torch']}, sb3-contrib {env['sb3_contrib']}, stable-baselines3 "
        f"{env['stable_baselines3']}, python {env['python']}",
        f"threads {cfg['threads']} on both sides; repeats {cfg['repeats']} x rounds {cfg.get('rounds', 1)} "
        f"(median ±iqr); every side in its own fresh process per malloc setting: tuned = GLIBC_TUNABLES "
        f"{env.get('tuned_means', '')} at start, default = glibc's own; 'best' = each side at its own faster setting",
        "ratio = sb3 / ours (> 1: ours faster); 'ours / floor|bare' = ours over the bare computation of our shapes in "
        "ours' process; C ratio column = ours - sb3",
    ]
    if cfg["repeats"] < MIN_REPEATS:
        lines.append(f"note: fewer than {MIN_REPEATS} repeats: a smoke run, not a measurement")
    lines += [header, "-" * len(header)]
    builders = {"A": _rows_a, "B": _rows_b, "C": _rows_c}
    for part, data in results["parts"].items():
        lines += builders[part](data, results)
    lines.append("-" * len(header))
    for part, data in results["parts"].items():
        lines.append(_process_line(part, data))
    for v in results["targets"]:
        value = ("not measured" if v["value"] is None
                 else f"{v['value']:+.2f}" if v["part"] == "C" else f"{v['value']:.2f}x")
        lines.append(f"target {v['part']}: {v['target']:<72} {value:>12}  {v['status']}")
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
