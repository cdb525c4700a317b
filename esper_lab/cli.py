"""`esper-lab train | evaluate | probe | dashboard | bench`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from esper_lab.policy.baselines import BASELINES
from esper_lab.stats import LEVEL
from esper_lab.config import (PRESETS, RESUMABLE_FIELDS, ConfigError, PolicyConfig, TrainConfig, WorldConfig,
                              config_differences, field_help, field_value, preset, with_overrides)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2  # a runtime failure; bad input (arguments, config, run directory, checkpoint)
DEBUG_HELP = "on a failure, show the traceback instead of the one-line error"
BASELINE_NAMES = tuple(BASELINES)  # heuristic, random, wait: the one table in policy/baselines.py
DEFAULT_PRESET = "demo"
TRAIN_FLAGS = {  # flag of `esper-lab train` -> the config field it sets (the field's docstring is its help)
    "--updates": "updates", "--critic": "policy.critic", "--seed": "seed", "--num-envs": "num_envs",
    "--max-epochs": "world.max_epochs", "--max-minutes": "max_minutes", "--threads": "torch_threads",
    "--backend": "backend", "--ray-address": "ray_address", "--workers": "workers",
}


def _train_parser(sub: argparse._SubParsersAction) -> None:
    helps = {**field_help(TrainConfig), **{f"world.{k}": v for k, v in field_help(WorldConfig).items()},
             **{f"policy.{k}": v for k, v in field_help(PolicyConfig).items()}}
    p = sub.add_parser("train", help="train the Phase 4 policy with PPO, writing a run directory")
    p.add_argument("--preset", choices=sorted(PRESETS), help=f"config preset (default: {DEFAULT_PRESET})")
    p.add_argument("--run-dir", type=Path, help="run directory (default: runs/<preset>-<critic>-s<seed>-<time>)")
    for flag, path in TRAIN_FLAGS.items():  # values stay text: _parse_value reads them, config.validate checks them
        p.add_argument(flag, help=helps[path] + (" (default: the preset's)" if flag == "--updates" else ""))
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other config field, e.g. --set ppo.epochs=1 --set world.host=strong (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from its checkpoint, on its own config: only "
                        + ", ".join(f for f, path in TRAIN_FLAGS.items() if path in RESUMABLE_FIELDS)
                        + " and --set " + ", ".join(f for f in RESUMABLE_FIELDS if f not in TRAIN_FLAGS.values())
                        + " may change")
    p.add_argument("--overwrite", action="store_true",
                   help="restart the run in --run-dir from scratch, replacing its metrics, snapshots and checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate baselines and/or a trained checkpoint on the same world seeds",
                       description="Every policy plays the same episode seeds. Besides return, final validation "
                       "accuracy, fossils and seed parameters: each policy's accuracy gain over wait on the same "
                       "episode (wait runs too when not asked for), seed parameters per point of that gain, and the "
                       "checkpoint's paired comparison with each baseline evaluated (mean difference of final "
                       f"validation accuracy and of return, {100 * LEVEL:.0f} % t interval).")
    p.add_argument("--policy", default="all", choices=BASELINE_NAMES + ("all", "none"),
                   help="baseline policy to evaluate (default: all three; 'none' with --checkpoint for the policy "
                        "only, and wait for the gain)")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint.pt of a training run: evaluate it next to the baselines")
    p.add_argument("--deterministic", action="store_true", help="trained policy takes argmax actions")
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="world preset (ignored with --checkpoint)")
    p.add_argument("--set", action="append", default=[], metavar="world.FIELD=VALUE",
                   help="a world field of the preset, e.g. --set world.reward.mode=basic to score the baselines "
                        "under another reward (repeatable; not with --checkpoint, whose world is its run's)")
    p.add_argument("--episodes", type=_int_at_least(1), default=10, help="episodes per policy (default: 10)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="first world seed (default: 0)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")


def _probe_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="measure the critic against Monte Carlo ground truth on the probe states",
                       description="From each probe state of the checkpoint's run, every legal op is taken K times "
                       "and the checkpoint's policy plays to the end of the episode: the mean discounted return per "
                       "op (in the critic's own units: the run's reward normaliser and truncation bootstrap) is "
                       "Q^pi(s, op), shown beside the critic's Q(s, op) with a "
                       f"{100 * LEVEL:.0f} % interval. Appends the records to the run's snapshots/truth.jsonl.")
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint.pt of a training run")
    p.add_argument("--states", default="all", help="probe states to measure: 'all' or indices such as 0,2 "
                   "(default: all)")
    p.add_argument("--rollouts", type=_int_at_least(2), default=16, help="rollouts per op, K (default: 16)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the policy's samples (default: 0)")
    p.add_argument("--backend", default="process", choices=("local", "process"),
                   help="where the rollouts' worlds run (default: process, one worker per core)")
    p.add_argument("--workers", type=_int_at_least(1), help="worker processes for --backend process")
    p.add_argument("--json", type=Path, help="also write the records as JSON here")
    p.add_argument("--no-write", action="store_true", help="do not append to the run directory")


def _dashboard_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve the Streamlit dashboard on 127.0.0.1")
    p.add_argument("--port", type=_int_at_least(1, maximum=65535), default=8501, help="port (default: 8501)")
    p.add_argument("--runs-dir", type=Path, help="where run directories live (default: $ESPER_LAB_RUNS or ./runs)")
    p.add_argument("--train", choices=sorted(PRESETS), metavar="PRESET",
                   help="also start training this preset in the background (what `make run` does with demo)")


def _int_at_least(minimum: int, maximum: int | None = None):
    """An argparse `type=`: the integer in the text, refused (an argparse error) when below `minimum` or above
    `maximum`."""
    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    return integer


def _checked(parse):
    """An argparse `type=` from a parser that raises ConfigError (so bad input is an argparse error)."""
    def convert(text: str):
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = parse.__name__.replace("parse_", "")
    return convert


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    from esper_lab.bench.compare import report as cmp

    p = sub.add_parser("bench", help="measure speed on this machine")
    p.add_argument("what", choices=("env", "policy", "train", "compare"), help="env: ms per env step; policy: "
                   "get_action and the real PPO update; train: SPS and the env / policy / update split, beside the "
                   "sequential 4-world reference; compare: "
                   "side by side with sb3-contrib's RecurrentPPO (needs pip install -e '.[bench]'; about 40 min "
                   "with the defaults, mostly part C's 6 runs)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="preset (default: demo; policy: phase4, its sizes; compare: part C's world)")
    p.add_argument("--steps", type=_int_at_least(1), default=60, help="env steps to time (bench env; default: 60)")
    p.add_argument("--updates", type=_int_at_least(1), default=3, help="updates to time (bench train; default: 3)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="bench train: a config field of the measured run (repeatable); it is measured back to back "
                        "against the same config with world.engine=sequential, num_envs=4 and the preset's ppo.minibatches")
    p.add_argument("--threads", type=_int_at_least(1), default=2, help="torch threads (default: 2; bench train uses the config's, "
                   "--set torch_threads=N)")
    p.add_argument("--json", type=Path,
                   help=f"also write the figures as JSON here (compare: default {cmp.DEFAULT_JSON})")
    g = p.add_argument_group("bench compare")
    g.add_argument("--parts", type=_checked(cmp.parse_parts), default=cmp.PARTS,
                   help="A: rollout inference, B: update time, C: the same world (default: A,B,C)")
    g.add_argument("--repeats", type=_checked(cmp.positive_int), default=7,
                   help="timed repeats per cell and process in A and B, median and IQR reported (default: 7)")
    g.add_argument("--rounds", type=_checked(cmp.positive_int), default=cmp.CompareConfig.rounds,
                   help="A, B: fresh processes per side and malloc setting, samples pooled (default: 2)")
    g.add_argument("--budget-minutes", type=_checked(cmp.positive_float), default=5.0,
                   help="C: training wall-clock budget per run and side (default: 5)")
    g.add_argument("--seeds", type=_checked(cmp.parse_seeds), default=(0, 1, 2),
                   help="C: one run per seed and side (default: 0,1,2)")
    g.add_argument("--episodes", type=_checked(cmp.positive_int), default=20,
                   help="C: evaluation episodes per run (default: 20)")
    g.add_argument("--lstm-hidden", type=_checked(cmp.positive_int), help=argparse.SUPPRESS)  # testing: one H in A, B


class UsageError(Exception):
    """A command line that cannot work (exit code 2, like every other bad input)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments in one line, `esper-lab <cmd>: error: ...`, with exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="esper-lab", description=__doc__)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_train_parser, _evaluate_parser, _probe_parser, _dashboard_parser, _bench_parser):
        add(sub)
    for command in sub.choices.values():  # `esper-lab train --debug` too; SUPPRESS keeps `esper-lab --debug train`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


# --- train ------------------------------------------------------------------------------------------------------


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The config of a new run: the preset with every flag and --set applied, validated (ConfigError if not)."""
    return preset(args.preset or DEFAULT_PRESET, **{path: value for _, path, value in _overrides(args)})


def resume_config(args: argparse.Namespace) -> TrainConfig:
    """The config in --run-dir's config.json with the flags that may change on resume (RESUMABLE_FIELDS) applied.

    Raises ConfigError naming the file when it is not an esper_lab config, and listing the flags that would change
    the run when there are any (a flag that repeats the run's own value changes nothing and is accepted).
    """
    cfg = _run_config(args.run_dir)
    given = _overrides(args)
    changing = ["--preset"] if args.preset not in (None, cfg.preset) else []
    changing += [flag for flag, path, value in given
                 if path not in RESUMABLE_FIELDS and field_value(cfg, path) != value]
    if changing:
        raise ConfigError(f"--resume keeps the run's config; these flags would change it: {', '.join(changing)}")
    return with_overrides(cfg, **{path: value for _, path, value in given})


def _run_config(run_dir: Path) -> TrainConfig:
    """The validated config of the run in `run_dir`; raises ConfigError naming config.json when it is not one."""
    from esper_lab.runs import RunReader

    path = run_dir / "config.json"
    data = RunReader(run_dir).require().config()
    if not data:
        raise ConfigError(f"{path}: not an esper_lab config (unreadable, not JSON, or empty)")
    try:
        return TrainConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _overrides(args: argparse.Namespace) -> list[tuple[str, str, Any]]:
    """(the flag as the user wrote it, the field path, the parsed value) of every TRAIN_FLAGS flag and --set given."""
    given = [(flag, path, _parse_value(text)) for flag, path in TRAIN_FLAGS.items()
             if (text := getattr(args, flag[2:].replace("-", "_"))) is not None] + _set_items(args.set)
    first: dict[str, tuple[str, Any]] = {}
    for flag, path, value in given:  # two flags for one field must agree: neither silently wins
        if path in first and first[path][1] != value:
            raise ConfigError(f"{first[path][0]} and {flag} both set {path}, to different values; give one")
        first.setdefault(path, (flag, value))
    return given


def _set_items(items: Sequence[str]) -> list[tuple[str, str, Any]]:
    """`--set FIELD=VALUE` items as (the flag, the field path, the parsed value)."""
    given = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
        if key.strip() == "preset":  # the field names the preset a config was built from; setting it builds nothing
            raise ConfigError("--set preset would only relabel the run; choose the preset with --preset")
        given.append((f"--set {item}", key.strip(), _parse_value(text.strip())))
    return given


def _parse_value(text: str) -> Any:
    """A flag's text as a value: 'true'/'false' -> bool and 'none'/'null' -> None in any case, then JSON ('1' -> 1,
    '0.5' -> 0.5, '{"TRAINING": 2}' -> a dict), then a Python number ('inf', '1_000'); anything else stays a string.
    Whether the field takes it is config.validate's to say."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for parse in (json.loads, int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def cmd_train(args: argparse.Namespace) -> int:
    from esper_lab.progress import ProgressLine
    from esper_lab.rl.trainer import Trainer
    from esper_lab.runs import RunReader, runs_root

    if args.resume and args.overwrite:
        raise UsageError("--resume continues a run and --overwrite restarts it: choose one")
    if args.resume:
        if args.run_dir is None:
            raise UsageError("--resume needs --run-dir")
        cfg = resume_config(args)
    else:
        cfg = train_config(args)
    run_dir = args.run_dir or runs_root() / f"{cfg.preset}-{cfg.policy.critic}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    trainer = Trainer(cfg, run_dir, resume=args.resume, overwrite=args.overwrite)
    if trainer.update_idx >= cfg.updates:  # a resumed run already there: leave its files as they are
        trainer.close()
        print(f"esper-lab train: {run_dir} is already at {trainer.update_idx} updates (--updates {cfg.updates}); "
              "nothing to train: pass a larger --updates to continue it", file=sys.stderr)
        return 0
    bar = None if args.quiet else ProgressLine(cfg.updates, start=trainer.update_idx)
    print(f"esper-lab train: {cfg.preset}, critic {cfg.policy.critic}, {cfg.num_envs} envs x {cfg.world.max_epochs} "
          f"epochs, {cfg.updates} updates -> {run_dir}", file=sys.stderr)
    try:
        trainer.run(progress=bar.update if bar else None)
    finally:
        trainer.close()
        if bar:
            bar.close()
    status = RunReader(run_dir).status()
    print(f"{status.get('state', '?')}: {trainer.update_idx} updates in {run_dir}", file=sys.stderr)
    return 0 if status.get("state") in ("finished", "stopped") else 1


# --- evaluate ---------------------------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    from esper_lab.evaluate import evaluate_policies, format_table
    from esper_lab.agent import load_trained_policy

    _check_output(args.json)
    policies: list[Any] = []
    names = BASELINE_NAMES if args.policy == "all" else (() if args.policy == "none" else (args.policy,))
    sets = _set_items(args.set)
    bad = [flag for flag, path, _ in sets if not path.startswith("world.")]
    if bad:
        raise UsageError(f"evaluate --set takes world fields only (world.FIELD=VALUE): {', '.join(bad)}")
    if sets and args.checkpoint is not None:
        raise UsageError("--set changes the preset's world; with --checkpoint the world is the checkpoint's run's")
    world = with_overrides(preset(args.preset), **{path: value for _, path, value in sets}).world
    if args.checkpoint is not None:
        trained, world = load_trained_policy(args.checkpoint, deterministic=args.deterministic)
        policies.append(trained)
    if not names and not policies:
        raise UsageError("nothing to evaluate (--policy none needs --checkpoint)")
    policies += list(names)
    results = evaluate_policies(policies, world, episodes=args.episodes, seed=args.seed, compare=True)
    print(format_table(results))
    if args.json:
        _write_json(args.json, results)
    return 0


# --- probe ------------------------------------------------------------------------------------------------------


def cmd_probe(args: argparse.Namespace) -> int:
    from esper_lab.rl.truth import UnknownProbeState, format_truth, probe_checkpoint
    from esper_lab.runs import TRUTH_FILE, RunDirError, RunLockedError, RunReader, RunWriter

    _check_output(args.json)
    states = None if args.states == "all" else _index_list(args.states, "--states")
    writer = None
    if not args.no_write:  # refuse a checkpoint outside a run, or a run being trained, before any work
        run_dir = args.checkpoint.parent  # resuming writers keep the run's config.json as it is
        try:
            writer = RunWriter(run_dir, RunReader(run_dir).config(), resume=True)
        except RunLockedError as exc:  # its message ends with train's advice (another --run-dir)
            who = f"pid {exc.holder['pid']} on {exc.holder['host']}" if exc.holder else "another process"
            raise RunDirError(f"{run_dir} is being trained by {who}; wait for it to stop, or pass --no-write "
                              "(with --json to keep the records)") from None
        except RunDirError as exc:
            raise RunDirError(f"{str(exc).removeprefix('cannot resume: ')}; pass --no-write (with --json to keep "
                              "the records) to probe a checkpoint outside its run") from None
    try:
        records, cfg = probe_checkpoint(args.checkpoint, states, args.rollouts, args.seed, args.backend,
                                        args.workers)
        print(format_truth(records))
        if args.json:
            _write_json(args.json, records)
        differing = [] if writer is None else config_differences(cfg, _run_config(writer.dir))
        if differing:  # a checkpoint copied in from another run: its records are not this run's
            raise UsageError(f"{args.checkpoint} was not written by the run in {writer.dir} (its config differs in "
                             f"{', '.join(differing)}); nothing appended to {TRUTH_FILE}: use --no-write or --json")
        if writer is not None:
            writer.truth(records)
            print(f"appended {len(records)} records to {writer.dir / TRUTH_FILE}", file=sys.stderr)
    except UnknownProbeState as exc:
        raise UsageError(str(exc)) from None
    finally:
        if writer is not None:
            writer.release()
    return 0


def _index_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: give 'all' or comma-separated indices such as 0,2") from None
    if not values or min(values) < 0:
        raise UsageError(f"{flag} {text!r}: give 'all' or comma-separated indices >= 0 such as 0,2")
    return list(dict.fromkeys(values))  # each once, in the order given


# --- dashboard --------------------------------------------------------------------------------------------------


def cmd_dashboard(args: argparse.Namespace) -> int:
    from esper_lab.runs import runs_root

    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", STREAMLIT_SERVER_HEADLESS="true")
    # absolute, so the server (started in the repository) reads the runs of the directory the command ran in
    runs = (args.runs_dir if args.runs_dir is not None else runs_root()).resolve()
    if runs.exists() and not runs.is_dir():
        raise ConfigError(f"--runs-dir {runs} is a file, not a directory of runs")
    env["ESPER_LAB_RUNS"] = str(runs)
    app = REPO_ROOT / "app" / "dashboard.py"
    if not app.is_file():
        raise SystemExit(f"esper-lab dashboard: {app} not found (the dashboard ships with the repository checkout)")
    _require_free_port(args.port)  # before a background trainer starts: a server that cannot start would orphan it
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", "127.0.0.1",
           "--server.port", str(args.port), "--browser.gatherUsageStats", "false", "--server.headless", "true"]
    if args.train:
        _start_background_training(args.train, env)
    print(f"esper-lab dashboard: http://127.0.0.1:{args.port}", file=sys.stderr)
    os.chdir(REPO_ROOT)
    os.execvpe(cmd[0], cmd, env)  # the server replaces this process, so signals reach it directly


def _require_free_port(port: int) -> None:
    """Raise ConfigError when nothing can listen on 127.0.0.1:`port` (another server holds it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT does not count
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(f"port {port} on 127.0.0.1 is not available ({exc.strerror}); choose another --port") \
                from None


def _start_background_training(preset_name: str, env: dict[str, str]) -> None:
    """A trainer child in its own session, writing a new run directory (under `env`'s ESPER_LAB_RUNS) the dashboard
    shows first."""
    from esper_lab.runs import LOG_NAME

    run_dir = Path(env["ESPER_LAB_RUNS"]) / f"{preset_name}-q_op-s0-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOG_NAME, "ab") as log:
        subprocess.Popen([sys.executable, "-m", "esper_lab.cli", "train", "--preset", preset_name, "--run-dir",
                          str(run_dir), "--quiet"], stdout=log, stderr=subprocess.STDOUT, env=env,
                         start_new_session=True, cwd=REPO_ROOT)
    print(f"esper-lab dashboard: training {preset_name} in the background -> {run_dir}", file=sys.stderr)


# --- bench ------------------------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    _check_output(args.json)
    name = args.preset or ("phase4" if args.what == "policy" else "demo")
    if args.what == "compare":
        from esper_lab.bench.compare import report

        return report.main(report.CompareConfig(
            parts=args.parts, threads=args.threads, repeats=args.repeats, rounds=args.rounds,
            budget_minutes=args.budget_minutes,
            seeds=args.seeds, episodes=args.episodes, preset=name, json_path=args.json or report.DEFAULT_JSON,
            lstm_hidden=args.lstm_hidden))
    torch.set_num_threads(args.threads)
    if args.what == "env":
        from esper_lab.bench.env import bench_env

        figures = bench_env(preset(name).world, steps=args.steps, seed=0)
    elif args.what == "policy":
        from esper_lab.bench.policy import bench_policy

        figures = bench_policy(name, threads=args.threads)
    else:
        from esper_lab.bench.timing import Progress
        from esper_lab.bench.train import REFERENCE, back_to_back

        cfg = preset(name, **{path: value for _, path, value in _set_items(args.set)})
        # the reference keeps the preset's own PPO minibatches: a --set for more worlds may set more minibatches
        reference = with_overrides(cfg, **REFERENCE, **{"ppo.minibatches": preset(name).ppo.minibatches})
        result = back_to_back(cfg, reference, updates=args.updates, rounds=args.rounds,
                              log=Progress("bench train"))
        figures = {f"{label}.{key}": value for label in ("measured", "reference") for key, value in result[label].items()}
        figures["sps_ratio"] = result["sps_ratio"]
        figures["processes"] = ", ".join(f"{p['side']} pid {p['pid']} ({p['malloc']})" for p in result["processes"])
    from esper_lab.malloc import malloc_setting

    figures = {"what": args.what, "preset": name, "threads": args.threads, "malloc": malloc_setting(), **figures}
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {_figure(value)}")
    if args.json:
        _write_json(args.json, figures)
    return 0


def _figure(value: Any) -> str:
    """A bench figure for the terminal: floats to 3 decimals, also inside a dict such as `{4: 0.586, 8: 0.639}`."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_figure(v)}" for k, v in value.items()) + "}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _check_output(path: Path | None) -> None:
    """Refuse a `--json` path before any work is done when it is a directory, or an existing file that writing would
    destroy: one of a run's own files (its checkpoint, config, metrics, ...), or any file that is not JSON."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"--json {path} is a directory; give a file name")
    if not path.is_file():
        return
    from esper_lab.runs import run_of_file

    run = run_of_file(path)
    if run is not None:
        raise UsageError(f"--json {path} is a file of the run {run}; give another file name")
    try:
        json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError):
        raise UsageError(f"--json {path} exists and is not a JSON file; give another file name") from None
    except OSError:
        pass  # unreadable: writing it fails with its own message


def _write_json(path: Path, data: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write --json {path}: {exc.strerror or exc}") from None
    print(f"wrote {path}", file=sys.stderr)


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "probe": cmd_probe, "dashboard": cmd_dashboard,
            "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a failure ends in one line on stderr, `esper-lab <cmd>: error: ...`, and exit code 2 for
    bad input or 1 for a runtime failure (`--debug`: the traceback instead)."""
    if argv is None:  # run as a program: restart once under the malloc thresholds (esper_lab/malloc.py)
        from esper_lab.malloc import reexec_with_tuned_malloc

        reexec_with_tuned_malloc()
    args = build_parser().parse_args(argv)

    try:
        return COMMANDS[args.command](args)
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug:
            raise
        code, message = _failure(exc, args.command)
        print(f"esper-lab {args.command}: error: {message}", file=sys.stderr)
        return code


def _failure(exc: BaseException, command: str) -> tuple[int, str]:
    """(exit code, one line) for what ended a command: bad input is 2, a named runtime failure (a world worker or
    Ray actor that died) 1 with its own first line, anything else 1 with a pointer to --debug."""
    from esper_lab.env.process_vector import WorkerError
    from esper_lab.env.ray_vector import WorldActorError
    from esper_lab.runs import CheckpointError, RunDirError

    first = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, (UsageError, ConfigError, RunDirError, CheckpointError)):
        return EXIT_BAD_INPUT, first
    if isinstance(exc, (WorkerError, WorldActorError)):
        return EXIT_FAILED, first
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_FAILED, "interrupted"
    return EXIT_FAILED, f"{type(exc).__name__}: {first} (esper-lab --debug {command} ... shows the traceback)"


if __name__ == "__main__":
    sys.exit(main())
