"""Nothing lost, nothing exposed, no tracebacks (issue 14): the run directory's lock, folders that are not runs,
resume and --overwrite, one-line errors with exit codes 2 (bad input) and 1 (runtime failure), readers of files of
the wrong JSON type, temporary files left by a killed writer, the baseline cache and the dashboard's binding.

Every refusal asserts the one line on stderr, the exit code, and that no file outside the run directory and no
file a user wrote changed. The CLI runs in this process (`esper_lab.cli.main`) unless a second process is the point.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch
from streamlit import config as streamlit_config

from esper_lab import cli
from esper_lab.config import preset
from esper_lab.env.process_vector import ProcessVectorEnv
from esper_lab.runs import (CHECKPOINT_SCHEMA, LOCK_NAME, TRUTH_FILE, CheckpointError, RunDirError, RunLock,
                            RunReader, RunWriter, cache_path, lock_holder, read_cached)
from fixtures.make_run import make_run
from test_dashboard import VIEWS, app, show, texts

REPO = Path(__file__).resolve().parent.parent
TINY = ("--preset", "tiny", "--max-epochs", "4", "--quiet")
HOST = socket.gethostname()


# --- helpers --------------------------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under `root`: relative path -> (mtime_ns, sha256 of its contents)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def changed(before: dict, after: dict, run_dir: Path | None = None, root: Path | None = None) -> list[str]:
    """Files added, removed or changed, except the trainer's own files inside `run_dir` (relative to `root`)."""
    inside = str(run_dir.relative_to(root)) + os.sep if run_dir is not None else None
    paths = set(before) | set(after)
    return sorted(p for p in paths if before.get(p) != after.get(p) and not (inside and p.startswith(inside)))


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    """`esper-lab argv` in this process: (exit code, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_line_error(err: str, command: str, fragment: str) -> None:
    """The failure is the last line, `esper-lab <command>: error: ...` with `fragment`, and no traceback anywhere."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert errors[0].startswith(f"esper-lab {command}: error: " if command else "esper-lab: error: "), err
    assert fragment in errors[0], err


def metrics_updates(run: Path) -> list[int]:
    return [row["update"] for row in RunReader(run).metrics()]


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's whole world: cwd and ESPER_LAB_RUNS inside tmp_path, so a stray write shows in `tree(tmp_path)`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ESPER_LAB_RUNS", str(tmp_path / "runs"))
    return tmp_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-update tiny run with its checkpoint (copy it before changing it: `own_copy`)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main(["train", *TINY, "--updates", "1", "--run-dir", str(run)]) == 0
    return run


def own_copy(trained: Path, where: Path) -> Path:
    run = where / "run"
    shutil.copytree(trained, run)
    return run


def user_files(folder: Path) -> None:
    """What a user keeps in a folder of their own: notes.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes\n")


# --- 2 and 5: refused before anything is written ------------------------------------------------------------


def _foreign_config(root: Path) -> tuple[Path, ...]:
    (root / "X").mkdir()
    (root / "X" / "config.json").write_text('{"precious": 1}\n')
    return ()


def _tiny_checkpoint_without(root: Path, *missing: str) -> Path:
    payload = {"schema": CHECKPOINT_SCHEMA, "config": preset("tiny").to_dict(), "update": 1, "env_steps": 8}
    for key in missing:
        payload.pop(key, None)
    path = root / "partial.pt"
    torch.save(payload, path)
    return path


REFUSED = {  # case -> (set-up of the sandbox, argv, command, fragment of the one line)
    "foreign config.json": (_foreign_config, ("train", *TINY, "--updates", "1", "--run-dir", "X"), "train",
                            "X is not an esper_lab run: its config.json is not an esper_lab config"),
    "folder of someone else's files": (lambda r: user_files(r / "X"), ("train", *TINY, "--run-dir", "X"), "train",
                                       "X is not empty and is not an esper_lab run (it holds notes.txt)"),
    "run dir is a file": (lambda r: (r / "F").write_text("mine\n"), ("train", *TINY, "--run-dir", "F"), "train",
                          "F is a file, not a run directory"),
    "run dir under /proc": (lambda r: None, ("train", *TINY, "--run-dir", "/proc/esper-lab-run"), "train",
                            "cannot create the run directory /proc/esper-lab-run"),
    "resume of a folder that is not a run": (_foreign_config, ("train", "--resume", "--run-dir", "X"), "train",
                                             "config.json"),
    "resume of nothing": (lambda r: None, ("train", "--resume", "--run-dir", "missing"), "train", "missing"),
    "resume without run dir": (lambda r: None, ("train", "--resume"), "train", "--resume needs --run-dir"),
    "resume and overwrite": (lambda r: None, ("train", "--resume", "--overwrite", "--run-dir", "R"), "train",
                             "choose one"),
    "unknown preset": (lambda r: None, ("train", "--preset", "huge"), "train", "invalid choice"),
    "no command": (lambda r: None, (), "", "the following arguments are required"),
    "evaluate --episodes 0": (lambda r: None, ("evaluate", "--episodes", "0"), "evaluate",
                              "argument --episodes: must be at least 1, got 0"),
    "evaluate --seed -1": (lambda r: None, ("evaluate", "--seed", "-1"), "evaluate", "must be at least 0"),
    "evaluate --json a directory": (lambda r: (r / "out").mkdir(), ("evaluate", "--preset", "tiny", "--json", "out"),
                                    "evaluate", "--json out is a directory"),
    "evaluate nothing": (lambda r: None, ("evaluate", "--policy", "none"), "evaluate", "nothing to evaluate"),
    "evaluate a corrupt checkpoint": (lambda r: (r / "bad.pt").write_bytes(b"garbage"),
                                      ("evaluate", "--checkpoint", "bad.pt"), "evaluate", "corrupt or foreign"),
    "evaluate a checkpoint with keys missing": (
        lambda r: _tiny_checkpoint_without(r, "policy", "optimizer"), ("evaluate", "--checkpoint", "partial.pt"),
        "evaluate", "checkpoint with keys missing: policy, obs_norm, optimizer, reward_norm, torch_rng"),
    "bench --steps 0": (lambda r: None, ("bench", "env", "--steps", "0"), "bench", "must be at least 1"),
    "bench --json a directory": (lambda r: (r / "out").mkdir(), ("bench", "env", "--json", "out"), "bench",
                                 "--json out is a directory"),
    "evaluate --json onto a run's checkpoint": (
        lambda r: _fake_run(r / "R"), ("evaluate", "--preset", "tiny", "--policy", "wait", "--json", "R/checkpoint.pt"),
        "evaluate", "--json R/checkpoint.pt is a file of the run"),
    "evaluate --json onto a file that is not JSON": (
        lambda r: (r / "notes.txt").write_text("mine\n"), ("evaluate", "--preset", "tiny", "--json", "notes.txt"),
        "evaluate", "--json notes.txt exists and is not a JSON file"),
    "--set preset": (lambda r: None, ("train", *TINY, "--set", "preset=phase4"), "train",
                     "--set preset would only relabel the run; choose the preset with --preset"),
    "bench compare --seeds -1": (lambda r: None, ("bench", "compare", "--seeds", "-1"), "bench",
                                 "seeds must be in [0, 4294967295], got -1"),
    "bench compare --seeds 0,0": (lambda r: None, ("bench", "compare", "--seeds", "0,0"), "bench",
                                  "each seed once, got '0,0'"),
    "a flag and --set for one field": (lambda r: None, ("train", *TINY, "--seed", "5", "--set", "seed=7"), "train",
                                       "--seed and --set seed=7 both set seed, to different values; give one"),
    "probe a checkpoint outside a run": (lambda r: (r / "lone.pt").write_bytes(b"weights"),
                                         ("probe", "--checkpoint", "lone.pt"), "probe",
                                         "is not a run directory (no esper_lab config.json); pass --no-write"),
    "dashboard --port 70000": (lambda r: None, ("dashboard", "--port", "70000"), "dashboard",
                               "argument --port: must be at most 65535, got 70000"),
    "dashboard --runs-dir a file": (lambda r: (r / "F").write_text("mine\n"), ("dashboard", "--runs-dir", "F"),
                                    "dashboard", "is a file, not a directory of runs"),
}


def _fake_run(run: Path) -> None:
    """A folder that is a run by its config.json, with a checkpoint file."""
    run.mkdir()
    (run / "config.json").write_text(json.dumps(preset("tiny").to_dict()))
    (run / "checkpoint.pt").write_bytes(b"weights")


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(sandbox, capsys, case):
    set_up, argv, command, fragment = REFUSED[case]
    set_up(sandbox)
    before = tree(sandbox)
    code, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert_one_line_error(err, command, fragment)
    assert changed(before, tree(sandbox)) == []
    assert not (sandbox / "runs").exists()


def test_debug_shows_the_traceback_instead(sandbox, capsys):
    (sandbox / "F").write_text("mine\n")
    for argv in (("--debug", "train", "--run-dir", "F"), ("train", "--run-dir", "F", "--debug")):
        with pytest.raises(RunDirError, match="is a file"):
            cli.main([*argv, *TINY])


def test_an_unexpected_failure_is_one_line_exit_1_pointing_at_debug(sandbox, capsys, monkeypatch):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(cli.COMMANDS, "evaluate", broken)
    code, err = run_cli(capsys, "evaluate")
    assert code == 1
    assert_one_line_error(err, "evaluate", "ZeroDivisionError: division by zero (esper-lab --debug evaluate")


@pytest.mark.trainer
def test_a_killed_process_backend_worker_is_one_line_exit_1(sandbox, capsys, monkeypatch):
    original = ProcessVectorEnv.step

    def step_after_killing_a_worker(self, actions):
        os.kill(self.procs[-1].pid, signal.SIGKILL)
        self.procs[-1].join(5)
        return original(self, actions)

    monkeypatch.setattr(ProcessVectorEnv, "step", step_after_killing_a_worker)
    run = sandbox / "run"
    code, err = run_cli(capsys, "train", *TINY, "--updates", "1", "--backend", "process", "--workers", "2",
                        "--run-dir", run)
    assert code == 1, err
    assert_one_line_error(err, "train", "worker process 1 of 2")
    status = RunReader(run).status()
    assert status["state"] == "failed" and "WorkerDied" in status["error"]
    assert lock_holder(run) is None


# --- 2: what a run directory may be restarted or resumed from -------------------------------------------------


def _run_without_checkpoint(root: Path) -> Path:
    """A run killed after 2 updates, before its first checkpoint (checkpoint_every=5), with the user's notes."""
    run = root / "run"
    writer = RunWriter(run, preset("tiny", **{"world.max_epochs": 4, "checkpoint_every": 5}).to_dict())
    for update in (1, 2):
        writer.metrics({"update": update, "episode_return": 0.5})
    writer.status("running", update=2)
    writer.release()
    user_files(run)
    return run


@pytest.mark.parametrize("argv, fragment", [
    (("train", *TINY), "already holds a run (2 updates, stopped before its first checkpoint); pass --overwrite"),
    (("train", "--resume"), "has no checkpoint.pt (it stopped before its first checkpoint); pass --overwrite instead "
                            "of --resume to restart it from scratch"),
])
def test_a_run_killed_before_its_first_checkpoint_points_at_overwrite(sandbox, capsys, argv, fragment):
    run = _run_without_checkpoint(sandbox)
    before = tree(sandbox)
    code, err = run_cli(capsys, *argv, "--run-dir", run)
    assert code == 2
    assert_one_line_error(err, "train", fragment)
    after = tree(sandbox)
    assert changed(before, after, run, sandbox) == []
    for name in ("notes.txt", "metrics.jsonl", "config.json"):
        assert before[f"run{os.sep}{name}"] == after[f"run{os.sep}{name}"], name


@pytest.mark.trainer
def test_overwrite_restarts_from_scratch_and_keeps_the_users_files(sandbox, capsys):
    run = _run_without_checkpoint(sandbox)
    (sandbox / "outside.txt").write_text("outside\n")
    before = tree(sandbox)
    code, err = run_cli(capsys, "train", *TINY, "--updates", "1", "--overwrite", "--run-dir", run)
    assert code == 0, err
    assert metrics_updates(run) == [1]
    assert RunReader(run).status()["state"] == "finished"
    after = tree(sandbox)
    assert changed(before, after, run, sandbox) == []
    assert after[f"run{os.sep}notes.txt"] == before[f"run{os.sep}notes.txt"]


def test_a_run_with_a_checkpoint_is_not_restarted_without_a_flag(sandbox, capsys, trained):
    run = own_copy(trained, sandbox)
    before = tree(sandbox)
    code, err = run_cli(capsys, "train", *TINY, "--run-dir", run)
    assert code == 2
    assert_one_line_error(err, "train", "already holds a run (1 updates and a checkpoint); pass --resume to continue "
                                        "it, --overwrite to restart it from scratch")
    assert changed(before, tree(sandbox), run, sandbox) == []
    assert tree(run)["checkpoint.pt"] == before[f"run{os.sep}checkpoint.pt"]


def test_a_folder_with_only_a_launchers_log_may_become_a_run(sandbox):
    """`esper-lab dashboard --train` opens trainer.log in the new folder before its trainer starts."""
    run = sandbox / "launched"
    run.mkdir()
    (run / "trainer.log").write_text("starting\n")
    RunWriter(run, preset("tiny").to_dict()).release()
    assert RunReader(run).config()["preset"] == "tiny" and (run / "trainer.log").read_text() == "starting\n"


# --- 1: one trainer owns a run directory --------------------------------------------------------------------


def _train_command(run: Path, *argv: str) -> list[str]:
    return [sys.executable, "-m", "esper_lab.cli", "train", "--run-dir", str(run), *argv]


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.trainer
@pytest.mark.parametrize("second", [(*TINY, "--updates", "3"), ("--resume", "--updates", "500", "--quiet")],
                         ids=["fresh start", "resume"])
def test_two_trainers_on_one_directory_exactly_one_runs(tmp_path, second):
    run = tmp_path / "run"
    first = subprocess.Popen(_train_command(run, *TINY, "--updates", "500"), stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: (run / "checkpoint.pt").is_file() or first.poll() is not None, 240)
        assert first.poll() is None, first.stderr.read()
        other = subprocess.run(_train_command(run, *second), capture_output=True, text=True, timeout=240)
        assert other.returncode == 2, other.stderr
        assert_one_line_error(other.stderr, "train",
                              f"is in use by another trainer (pid {first.pid} on {HOST}); stop it first")
        assert first.poll() is None  # the first one is still training
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(120)
    assert first.returncode == 0
    updates = metrics_updates(run)
    assert updates and updates == list(range(1, len(updates) + 1))  # strictly increasing, nothing duplicated
    assert RunReader(run).status()["state"] == "stopped" and lock_holder(run) is None


def test_a_live_lock_refuses_resume_naming_the_pid_and_host(sandbox, capsys, trained):
    run = own_copy(trained, sandbox)
    held = RunLock(run)  # another open file description: to flock, another owner, even in this process
    try:
        assert lock_holder(run) == {"pid": os.getpid(), "host": HOST, "since": pytest.approx(time.time(), abs=60)}
        before = tree(sandbox)
        code, err = run_cli(capsys, "train", "--resume", "--run-dir", run)
        assert code == 2
        assert_one_line_error(err, "train", f"{run} is in use by another trainer (pid {os.getpid()} on {HOST})")
        assert changed(before, tree(sandbox)) == []
    finally:
        held.release()
    assert lock_holder(run) is None


LOCK_THEN_DIE = """
import os, signal, sys, time
from esper_lab.runs import RunLock
lock = RunLock(sys.argv[1])
child = os.fork()  # a world worker forked while the lock is held
if child == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1), os.dup2(null, 2)  # let the test read the parent's output to its end
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.trainer
def test_a_lock_left_by_a_dead_trainer_never_blocks_even_with_its_worker_alive(sandbox, capsys, trained):
    run = own_copy(trained, sandbox)
    dead = subprocess.run([sys.executable, "-c", LOCK_THEN_DIE, str(run)], capture_output=True, text=True, timeout=60)
    worker = int(dead.stdout.split()[0])
    try:
        assert dead.returncode == -signal.SIGKILL and os.kill(worker, 0) is None  # its forked child still runs
        stale = json.loads((run / LOCK_NAME).read_text())
        assert stale["pid"] != os.getpid()
        assert lock_holder(run) is None
        code, err = run_cli(capsys, "train", "--resume", "--updates", "2", "--run-dir", run)
        assert code == 0, err
        assert metrics_updates(run) == [1, 2]
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()  # the stale pid was overwritten
    finally:
        os.kill(worker, signal.SIGKILL)


def test_the_dashboard_shows_who_holds_the_lock(runs_dir):
    run = make_run(runs_dir, "held", updates=3)
    held = RunLock(run)
    try:
        at = app().run()
        assert not at.exception
        assert f"written by pid {os.getpid()} on {HOST}" in texts(at.caption)
    finally:
        held.release()
    at = app().run()
    assert "written by pid" not in texts(at.caption)


# --- 5: readers of files of the wrong JSON type, a killed writer's leftovers, checkpoints that do not fit --------

WRONG_TYPES = {"status.json": "[1, 2]", "config.json": '"a string"', "baselines.json": "[1, 2]",
               "snapshots/update_000003.json": "7", "metrics.jsonl": "[1, 2]\n3\n", "events.jsonl": '"x"\n[1]\n'}


def test_files_of_the_wrong_json_type_read_as_empty(tmp_path):
    run = make_run(tmp_path, "typed", updates=3)
    for name, text in WRONG_TYPES.items():
        (run / name).write_text(text)
    reader = RunReader(run)
    assert (reader.status(), reader.config(), reader.metrics(), reader.events()) == ({}, {}, [], [])
    assert reader.snapshot(3) is None and reader.latest_snapshot() is None


@pytest.mark.parametrize("names", [("status.json",), tuple(WRONG_TYPES)], ids=["status.json [1, 2]", "every file"])
def test_the_five_views_survive_files_of_the_wrong_json_type(runs_dir, names):
    run = make_run(runs_dir, "typed", updates=3)
    for name in names:
        (run / name).write_text(WRONG_TYPES[name])
    at = app().run()
    for view in VIEWS:
        at = show(at, view)
        assert not at.exception, (view, at.exception)
        assert not at.error, (view, texts(at.error))


LEFTOVERS = {  # what a writer killed mid-write (or a dashboard killed mid-launch) leaves, and wrong-typed files
    "status.json [1, 2]": {"status.json": "[1, 2]"},
    "temporary files": {".checkpoint.pt.k1l2.tmp": "half a checkpoint", "snapshots/.update_000001.json.x9.tmp": "{",
                        ".status.json.launch.tmp": "{}", ".metrics.jsonl.a1.tmp": "[1"},
    "log lines of the wrong type": {"metrics.jsonl": None, "events.jsonl": None},
}


@pytest.mark.trainer
@pytest.mark.parametrize("case", list(LEFTOVERS))
def test_resume_after_damage(sandbox, capsys, trained, case):
    run = own_copy(trained, sandbox)
    for name, text in LEFTOVERS[case].items():
        path = run / name
        path.write_text(text if text is not None else path.read_text() + '[1, 2]\n"x"\n{"update": "?"}\n')
    before = tree(sandbox)
    code, err = run_cli(capsys, "train", "--resume", "--updates", "2", "--run-dir", run)
    assert code == 0, err
    assert metrics_updates(run) == [1, 2]
    assert not [p for p in run.rglob("*.tmp")]
    assert RunReader(run).status()["state"] == "finished"
    assert changed(before, tree(sandbox), run, sandbox) == []


def _resize_a_tensor(ckpt: dict) -> None:
    name = next(iter(ckpt["policy"]))
    ckpt["policy"][name] = torch.zeros(3)


def _poison_a_tensor(ckpt: dict) -> None:
    name = next(n for n, value in ckpt["policy"].items() if value.is_floating_point())
    ckpt["policy"][name] = torch.full_like(ckpt["policy"][name], float("nan"))


@pytest.mark.parametrize("damage, fragment", [
    (lambda ckpt: ckpt.pop("optimizer"), "checkpoint with keys missing: optimizer"),
    (_resize_a_tensor, "does not fit the model its config describes: Error(s) in loading state_dict"),
    (_poison_a_tensor, "the policy's weights are not finite (NaN or inf) in "),
], ids=["a key missing", "a tensor of another size", "NaN weights"])
def test_a_checkpoint_that_does_not_fit_is_one_line_exit_2(sandbox, capsys, trained, damage, fragment):
    run = own_copy(trained, sandbox)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    damage(ckpt)
    torch.save(ckpt, run / "checkpoint.pt")
    before = tree(sandbox)
    for argv, command in ((("train", "--resume", "--updates", "2", "--run-dir", run), "train"),
                          (("evaluate", "--checkpoint", run / "checkpoint.pt", "--policy", "none"), "evaluate")):
        code, err = run_cli(capsys, *argv)
        assert code == 2, err
        assert_one_line_error(err, command, fragment)
    assert changed(before, tree(sandbox), run, sandbox) == []
    assert metrics_updates(run) == [1]


def test_load_checkpoint_names_the_missing_keys(tmp_path):
    from esper_lab.runs import load_checkpoint

    with pytest.raises(CheckpointError, match=r"keys missing: policy, obs_norm, optimizer, reward_norm, torch_rng$"):
        load_checkpoint(_tiny_checkpoint_without(tmp_path))


# --- 7: the baseline cache, and tests that write only into temporary directories ---------------------------------


@pytest.mark.trainer
def test_baselines_come_from_the_cache_the_second_time(tmp_path, monkeypatch):
    from esper_lab.rl import trainer as trainer_module

    monkeypatch.setenv("ESPER_LAB_CACHE", str(tmp_path / "cache"))
    cfg = preset("tiny", **{"world.max_epochs": 4})
    first = trainer_module.Trainer(cfg, tmp_path / "a")
    first._write_baselines()
    first.close()
    key = {"world": cfg.to_dict()["world"], "seed": cfg.seed, "episodes": cfg.num_envs}
    cached = cache_path("baselines", key)
    assert cached.parent == tmp_path / "cache" / "baselines" and cached.is_file()
    assert read_cached("baselines", key) == json.loads((tmp_path / "a" / "baselines.json").read_text())

    def no_evaluation(*args, **kwargs):
        raise AssertionError("the baselines were evaluated again")

    monkeypatch.setattr(trainer_module, "evaluate_policies", no_evaluation)
    second = trainer_module.Trainer(cfg, tmp_path / "b")
    second._write_baselines()
    second.close()
    assert (tmp_path / "b" / "baselines.json").read_text() == (tmp_path / "a" / "baselines.json").read_text()
    assert cache_path("baselines", {**key, "seed": 1}) != cached
    assert cache_path("baselines", {**key, "episodes": 3}) != cached


def test_the_session_writes_runs_and_caches_outside_the_repository():
    for name in ("ESPER_LAB_RUNS", "ESPER_LAB_CACHE"):
        assert not Path(os.environ[name]).resolve().is_relative_to(REPO), name


# --- 3: the dashboard listens on 127.0.0.1 however it is started ------------------------------------------------


def test_streamlit_config_binds_loopback():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"


def test_a_dashboard_listening_everywhere_serves_nothing(runs_dir):
    make_run(runs_dir, "any", updates=2)
    address = streamlit_config.get_option("server.address")
    streamlit_config.set_option("server.address", None)
    try:
        at = app().run()
    finally:
        streamlit_config.set_option("server.address", address)
    assert not at.exception
    assert "listens on every network interface" in texts(at.error)
    assert not at.button and not at.selectbox


# --- what bad input must not cost: the old run, a trainer left behind, another run's files ------------------------


def _own_files(run: Path) -> dict:
    return {name: digest for name, digest in tree(run).items() if name != LOCK_NAME}


@pytest.mark.trainer
def test_overwrite_with_a_bad_ray_address_keeps_the_old_run(sandbox, capsys, trained):
    """The worlds are built before an earlier start's outputs go: a --ray-address Ray refuses leaves the run whole."""
    pytest.importorskip("ray")
    run = own_copy(trained, sandbox)
    before = _own_files(run)
    code, err = run_cli(capsys, "train", *TINY, "--updates", "1", "--overwrite", "--run-dir", run, "--backend", "ray",
                        "--ray-address", "foo")
    assert code == 2, err
    assert_one_line_error(err, "train", "ray_address = 'foo': Invalid address format")
    assert _own_files(run) == before


def test_a_dashboard_whose_port_is_taken_starts_no_trainer(sandbox, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, err = run_cli(capsys, "dashboard", "--train", "tiny", "--port", port)
    assert code == 2, err
    assert_one_line_error(err, "dashboard", f"port {port} on 127.0.0.1 is not available")
    assert not (sandbox / "runs").exists()


@pytest.mark.trainer
def test_resume_to_fewer_updates_than_done_changes_nothing(sandbox, capsys, trained):
    run = own_copy(trained, sandbox)
    before = _own_files(run)
    code, err = run_cli(capsys, "train", "--resume", "--updates", "1", "--run-dir", run, "--quiet")
    assert code == 0, err
    assert "is already at 1 updates (--updates 1); nothing to train" in err
    assert _own_files(run) == before


@pytest.mark.trainer
def test_a_checkpoint_from_another_run_is_refused_by_resume_and_probe(sandbox, capsys, trained):
    """A checkpoint copied in from a run of another seed: resume refuses it (one line, rc 2) and probe appends
    nothing to this run's truth.jsonl."""
    other = sandbox / "other"
    assert cli.main(["train", *TINY, "--updates", "1", "--seed", "5", "--run-dir", str(other)]) == 0
    run = own_copy(trained, sandbox)
    shutil.copy(other / "checkpoint.pt", run / "checkpoint.pt")
    shutil.copy(other / "checkpoint.pt", run / "foreign.pt")
    capsys.readouterr()
    before = _own_files(run)
    code, err = run_cli(capsys, "train", "--resume", "--updates", "2", "--run-dir", run)
    assert code == 2, err
    assert_one_line_error(err, "train", "checkpoint.pt was not written by this run: its config differs from "
                                        "config.json in seed")
    code, err = run_cli(capsys, "probe", "--checkpoint", run / "foreign.pt", "--states", "0", "--rollouts", "2",
                        "--backend", "local")
    assert code == 2, err
    assert_one_line_error(err, "probe", "foreign.pt was not written by the run in")
    assert {k: v for k, v in _own_files(run).items() if k != TRUTH_FILE} == before
    assert RunReader(run).truth() == []
