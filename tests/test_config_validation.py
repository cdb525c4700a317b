"""One validation path for every config (issue 14, point 4): `config.validate`, behind `preset`, `--set`,
`TrainConfig.from_dict` (config.json, checkpoints), the dashboard's Train panel and `train --resume`.

Every error is one line, `<field path> = <value>: must be <what is allowed>`, and reaches a CLI user as
`esper-lab train: error: ...` with exit code 2 and no traceback.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from esper_lab import cli
from esper_lab.actions import SeedStage
from esper_lab.config import (PRESETS, RESUMABLE_FIELDS, ConfigError, TrainConfig, _field_paths, field_value, preset,
                              validate, with_overrides)

STAGES = ", ".join(repr(stage.name) for stage in SeedStage)
SEED_RANGE = "an integer in [0, 4294967295]"


def config_error(**overrides) -> str:
    """The ConfigError message of `tiny` (2 envs, 1 minibatch) with `overrides`."""
    with pytest.raises(ConfigError) as info:
        preset("tiny", **overrides)
    return str(info.value)


# --- each field alone: good values pass, bad ones name the field, the value and the rule ---------------------------

GOOD = [
    # TrainConfig
    ("num_envs", 1), ("updates", 1), ("seed", 0), ("seed", 2**32 - 1), ("torch_threads", 1), ("max_minutes", 0.5),
    ("max_minutes", 2), ("max_minutes", None), ("backend", "ray"), ("ray_address", "auto"), ("ray_address", None),
    ("workers", 2), ("workers", None), ("ray_cpus_per_actor", 0.5), ("ray_gpus_per_actor", 0), ("preset", "phase4"),
    # WorldConfig
    ("world.max_epochs", 2), ("world.host", "strong"), ("world.host_lr", 1), ("world.max_seeds", 0),
    ("world.data_seed", 7), ("world.interactions", False), ("world.env_threads", 2),
    # RewardConfig
    ("world.reward.gamma", 1), ("world.reward.gamma", 0.5), ("world.reward.germinate_cost", -3),
    ("world.reward.contribution_weight", 0), ("world.reward.holding_warning_min_epochs", 0),
    ("world.reward.fossilize_legitimacy_epochs", 1), ("world.reward.stage_potentials", {"TRAINING": 2}),
    ("world.reward.stage_potentials", {}),
    # PolicyConfig
    ("policy.feature_dim", 2), ("policy.lstm_hidden_dim", 16), ("policy.critic", "v"), ("policy.masks", "independent"),
    # PPOConfig
    ("ppo.lr", 1), ("ppo.lr", 1e-3), ("ppo.gae_lambda", 0), ("ppo.gae_lambda", 1), ("ppo.clip_ratio", 0.5),
    ("ppo.value_coef", 0), ("ppo.clip_value", False), ("ppo.entropy_coef", 0), ("ppo.target_kl", None),
    ("ppo.epochs", 1), ("ppo.minibatches", 1), ("ppo.q_aux_coef", 0),
]


@pytest.mark.parametrize("path, value", GOOD)
def test_allowed_values_pass(path, value):
    assert field_value(preset("tiny", **{path: value}), path) == value


BAD = [
    # the cases
    ("ppo.minibatches", 0, "ppo.minibatches = 0: must be an integer >= 1"),
    ("ppo.lr", "abc", "ppo.lr = 'abc': must be a number > 0"),
    ("torch_threads", 1.5, "torch_threads = 1.5: must be an integer >= 1"),
    ("seed", -1, f"seed = -1: must be {SEED_RANGE}"),
    ("max_minutes", 0, "max_minutes = 0: must be a number > 0 or None"),
    ("ppo.clip_ratio", -5, "ppo.clip_ratio = -5: must be a number in (0, 1)"),
    ("ray_cpus_per_actor", -1, "ray_cpus_per_actor = -1: must be a number > 0"),
    # TrainConfig
    ("preset", "huge", "preset = 'huge': must be one of 'tiny', 'demo', 'phase4'"),
    ("num_envs", 0, "num_envs = 0: must be an integer >= 1"),
    ("updates", 0, "updates = 0: must be an integer >= 1"),
    ("seed", 2**32, f"seed = 4294967296: must be {SEED_RANGE}"),
    ("seed", True, f"seed = True: must be {SEED_RANGE}"),  # a bool is not an int
    ("snapshot_every", 0, "snapshot_every = 0: must be an integer >= 1"),
    ("checkpoint_every", -2, "checkpoint_every = -2: must be an integer >= 1"),
    ("max_minutes", "10", "max_minutes = '10': must be a number > 0 or None"),
    ("backend", "gpu", "backend = 'gpu': must be one of 'local', 'process', 'ray'"),
    ("ray_address", 5, "ray_address = 5: must be a string or None"),
    ("workers", 0, "workers = 0: must be an integer >= 1 or None"),
    ("ray_gpus_per_actor", -0.5, "ray_gpus_per_actor = -0.5: must be a number >= 0"),
    ("world", 3, "world = 3: must be a WorldConfig"),
    # WorldConfig
    ("world.max_epochs", 1, "world.max_epochs = 1: must be an integer >= 2"),
    ("world.host", "weak", "world.host = 'weak': must be one of 'impaired', 'strong'"),
    ("world.host_batch_size", 0, "world.host_batch_size = 0: must be an integer >= 1"),
    ("world.host_lr", 0, "world.host_lr = 0: must be a number > 0"),
    ("world.max_seeds", -1, "world.max_seeds = -1: must be an integer >= 0 or None"),
    ("world.data_seed", -1, f"world.data_seed = -1: must be {SEED_RANGE}"),
    ("world.interactions", 1, "world.interactions = 1: must be true or false"),
    ("world.env_threads", 0, "world.env_threads = 0: must be an integer >= 1"),
    ("world.reward", {}, "world.reward = {}: must be a RewardConfig"),
    # RewardConfig
    ("world.reward.gamma", 0, "world.reward.gamma = 0: must be a number in (0, 1]"),
    ("world.reward.gamma", 1.01, "world.reward.gamma = 1.01: must be a number in (0, 1]"),
    ("world.reward.pbrs_weight", math.nan, "world.reward.pbrs_weight = nan: must be a finite number"),
    ("world.reward.max_rent", math.inf, "world.reward.max_rent = inf: must be a finite number"),
    ("world.reward.rent_weight", "high", "world.reward.rent_weight = 'high': must be a finite number"),
    ("world.reward.holding_warning_min_epochs", -1,
     "world.reward.holding_warning_min_epochs = -1: must be an integer >= 0"),
    ("world.reward.fossilize_legitimacy_epochs", 0,
     "world.reward.fossilize_legitimacy_epochs = 0: must be an integer >= 1"),
    ("world.reward.rent_host_params_floor", 2.5, "world.reward.rent_host_params_floor = 2.5: must be an integer >= 0"),
    ("world.reward.stage_potentials", [1.0], "world.reward.stage_potentials = [1.0]: must be an object (a dict)"),
    ("world.reward.stage_potentials", {"TRAINNG": 2.0},
     f"world.reward.stage_potentials key = 'TRAINNG': must be one of {STAGES}"),
    ("world.reward.stage_potentials", {"TRAINING": None},
     "world.reward.stage_potentials.TRAINING = None: must be a finite number"),
    # PolicyConfig
    ("policy.feature_dim", 3, "policy.feature_dim = 3: must be an even integer >= 2"),
    ("policy.feature_dim", 0, "policy.feature_dim = 0: must be an even integer >= 2"),
    ("policy.lstm_hidden_dim", 64.0, "policy.lstm_hidden_dim = 64.0: must be an even integer >= 2"),
    ("policy.critic", "q", "policy.critic = 'q': must be one of 'q_op', 'v', 'q_marginal'"),
    ("policy.masks", "soft", "policy.masks = 'soft': must be one of 'conditional', 'independent'"),
    # PPOConfig
    ("ppo.lr", 0, "ppo.lr = 0: must be a number > 0"),
    ("ppo.lr", True, "ppo.lr = True: must be a number > 0"),
    ("ppo.gae_lambda", 1.1, "ppo.gae_lambda = 1.1: must be a number in [0, 1]"),
    ("ppo.clip_ratio", 1, "ppo.clip_ratio = 1: must be a number in (0, 1)"),
    ("ppo.value_coef", -0.1, "ppo.value_coef = -0.1: must be a number >= 0"),
    ("ppo.clip_value", "yes", "ppo.clip_value = 'yes': must be true or false"),
    ("ppo.value_clip", 0, "ppo.value_clip = 0: must be a number > 0"),
    ("ppo.entropy_coef", -1, "ppo.entropy_coef = -1: must be a number >= 0"),
    ("ppo.max_grad_norm", 0, "ppo.max_grad_norm = 0: must be a number > 0"),
    ("ppo.target_kl", 0, "ppo.target_kl = 0: must be a number > 0 or None"),
    ("ppo.epochs", 0, "ppo.epochs = 0: must be an integer >= 1"),
    ("ppo.q_aux_coef", -1, "ppo.q_aux_coef = -1: must be a number >= 0"),
]


@pytest.mark.parametrize("path, value, message", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_a_bad_value_names_the_field_the_value_and_the_rule(path, value, message):
    assert config_error(**{path: value}) == message


class Alien:
    def __repr__(self) -> str:
        return "Alien()"


@pytest.mark.parametrize("path", _field_paths(TrainConfig))
def test_every_field_checks_its_type(path):
    """Not one field is left out: a value of no config type is refused, naming the field."""
    message = config_error(**{path: Alien()})
    assert message.startswith(f"{path} = Alien(): must be ") and "\n" not in message


# --- rules between fields -------------------------------------------------------------------------------------------

CROSS = [
    ({"num_envs": 3, "ppo.minibatches": 2}, "num_envs = 3: must be a multiple of ppo.minibatches (2)"),
    ({"ppo.minibatches": 4}, "ppo.minibatches = 4: must be <= num_envs (2): each minibatch holds whole env rows"),
    ({"workers": 3}, "workers = 3: must be <= num_envs (2) or None: each worker holds at least one world"),
]


@pytest.mark.parametrize("overrides, message", CROSS)
def test_cross_field_rules(overrides, message):
    assert config_error(**overrides) == message


def test_cross_field_rules_pass_when_they_hold():
    cfg = preset("tiny", num_envs=4, workers=4, **{"ppo.minibatches": 2})
    assert (cfg.num_envs, cfg.ppo.minibatches, cfg.workers) == (4, 2, 4)


def test_one_discount_so_ppo_and_the_shaping_cannot_differ():
    """The PBRS-gamma rule holds by construction: the config has one gamma, and setting PPO's says where it is."""
    assert [p for p in _field_paths(TrainConfig) if p.split(".")[-1] == "gamma"] == ["world.reward.gamma"]
    assert config_error(**{"ppo.gamma": 0.9}) == ("ppo.gamma is not a config field (the stage-potential shaping and "
                                                 "PPO share one discount): set world.reward.gamma")
    assert preset("tiny", **{"world.reward.gamma": 0.9}).gamma == 0.9


@pytest.mark.parametrize("path, message", [
    ("ppo.lrr", "unknown config field 'ppo.lrr' (did you mean 'ppo.lr'?)"),
    ("gamma", "unknown config field 'gamma' (did you mean 'world.reward.gamma'?)"),
    ("to_dict", "unknown config field 'to_dict'"),  # a method, not a field
    ("seed.x", "unknown config field 'seed.x'"),
    ("world.reward.gama", "unknown config field 'world.reward.gama' (did you mean 'world.reward.gamma'?)"),
    ("world.reward.stage_potentials.TRAINING", "unknown config field 'world.reward.stage_potentials.TRAINING'"),
])
def test_unknown_fields(path, message):
    assert config_error(**{path: 1}) == message


def test_with_overrides_copies_and_validate_checks_a_hand_built_config():
    cfg = preset("tiny")
    assert with_overrides(cfg, seed=3).seed == 3 and cfg.seed == 0
    with pytest.raises(ConfigError, match=r"^num_envs = 0: must be an integer >= 1$"):
        validate(TrainConfig(num_envs=0))
    with pytest.raises(ConfigError, match=r"^config = None: must be a TrainConfig$"):
        validate(None)


# --- from_dict: config.json and checkpoints --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name):
    cfg = preset(name)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def tiny_dict(**changes) -> dict:
    """`tiny`'s to_dict with the values at the dotted paths of `changes` set (or added)."""
    data = preset("tiny").to_dict()
    for path, value in changes.items():
        *parents, name = path.split(".")
        holder = data
        for part in parents:
            holder = holder[part]
        holder[name] = value
    return data


FROM_DICT = [
    ([1, 2], "config = [1, 2]: must be an object of TrainConfig fields"),
    (None, "config = None: must be an object of TrainConfig fields"),
    ({"precious": 1}, "unknown config field 'precious'"),
    (tiny_dict(world=[1]), "world = [1]: must be an object of WorldConfig fields"),
    (tiny_dict(**{"world.reward": "x"}), "world.reward = 'x': must be an object of RewardConfig fields"),
    (tiny_dict(**{"ppo.foo": 1}), "unknown config field 'ppo.foo'"),
    (tiny_dict(**{"ppo.minibatches": "1"}), "ppo.minibatches = '1': must be an integer >= 1"),
    (tiny_dict(**{"world.reward.stage_potentials": []}),
     "world.reward.stage_potentials = []: must be an object (a dict)"),
    (tiny_dict(**{"ppo.gamma": 0.99}), "ppo.gamma = 0.99 differs from world.reward.gamma = 0.995 (the stage-potential "
                                       "shaping and PPO share one discount): keep world.reward.gamma, drop ppo.gamma"),
]


@pytest.mark.parametrize("data, message", FROM_DICT)
def test_from_dict_refuses_with_a_config_error_naming_the_key(data, message):
    with pytest.raises(ConfigError) as info:  # never a TypeError or KeyError
        TrainConfig.from_dict(data)
    assert str(info.value) == message


def test_from_dict_migrates_an_old_ppo_gamma_that_agrees():
    assert TrainConfig.from_dict(tiny_dict(**{"ppo.gamma": 0.995})) == preset("tiny")


def test_a_config_from_before_reward_modes_keeps_the_reward_it_trained_on():
    """`world.reward.mode`'s default changed to 'simplified'; a file without the field ran 'contribution'."""
    old = tiny_dict()
    del old["world"]["reward"]["mode"]
    assert TrainConfig.from_dict(old) == preset("tiny", **{"world.reward.mode": "contribution"})
    no_reward = tiny_dict()
    del no_reward["world"]["reward"]
    assert TrainConfig.from_dict(no_reward).world.reward.mode == "contribution"
    assert TrainConfig.from_dict(tiny_dict()).world.reward.mode == "simplified"  # a file with the field keeps it
    with pytest.raises(ConfigError, match="world.reward"):  # a reward that is not an object is still named
        TrainConfig.from_dict(tiny_dict(**{"world.reward": 3}))


# --- the CLI: exit code 2, one line, no traceback, nothing written ----------------------------------------------------

CLI = [
    (["--set", "ppo.minibatches=0"], "ppo.minibatches = 0: must be an integer >= 1"),
    (["--seed", "-1"], f"seed = -1: must be {SEED_RANGE}"),
    (["--seed", "abc"], f"seed = 'abc': must be {SEED_RANGE}"),
    (["--set", "ppo.lr=abc"], "ppo.lr = 'abc': must be a number > 0"),
    (["--set", "torch_threads=1.5"], "torch_threads = 1.5: must be an integer >= 1"),
    (["--set", "ppo.gamma=0.9"],
     "ppo.gamma is not a config field (the stage-potential shaping and PPO share one discount): set world.reward.gamma"),
    (["--max-minutes", "0"], "max_minutes = 0: must be a number > 0 or None"),
    (["--set", "ppo.clip_ratio=-5"], "ppo.clip_ratio = -5: must be a number in (0, 1)"),
    (["--set", "ray_cpus_per_actor=-1"], "ray_cpus_per_actor = -1: must be a number > 0"),
    (["--num-envs", "3", "--set", "ppo.minibatches=2"], "num_envs = 3: must be a multiple of ppo.minibatches (2)"),
    (["--max-epochs", "1"], "world.max_epochs = 1: must be an integer >= 2"),
    (["--critic", "x"], "policy.critic = 'x': must be one of 'q_op', 'v', 'q_marginal'"),
    (["--workers", "0"], "workers = 0: must be an integer >= 1 or None"),
    (["--set", "ppo.lrr=1"], "unknown config field 'ppo.lrr' (did you mean 'ppo.lr'?)"),
    (["--set", "ppo.lr"], "--set expects FIELD=VALUE, got 'ppo.lr'"),
]


@pytest.mark.parametrize("argv, message", CLI, ids=[" ".join(argv) for argv, _ in CLI])
def test_cli_refuses_a_bad_config_in_one_line(argv, message, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--preset", "tiny", "--run-dir", str(run_dir), "--quiet", *argv]) == 2
    assert capsys.readouterr().err == f"esper-lab train: error: {message}\n"
    assert not run_dir.exists()


@pytest.mark.parametrize("text, value", [
    ("1", 1), ("0.5", 0.5), ("1e-3", 1e-3), ("true", True), ("False", False), ("none", None), ("null", None),
    ("abc", "abc"), ("ray://head:10001", "ray://head:10001"), ('{"TRAINING": 2.5}', {"TRAINING": 2.5}),
    ("inf", math.inf), ("007", 7),
])
def test_parse_value(text, value):
    assert cli._parse_value(text) == value


def test_set_takes_a_dict_and_flags_take_none():
    args = cli.build_parser().parse_args(["train", "--preset", "tiny", "--max-minutes", "none",
                                          "--set", 'world.reward.stage_potentials={"TRAINING": 2.5}'])
    cfg = cli.train_config(args)
    assert cfg.world.reward.stage_potentials == {"TRAINING": 2.5} and cfg.max_minutes is None


# --- train --resume ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished one-update `tiny` run with 4-epoch episodes (the resume tests copy it before they touch it)."""
    run_dir = tmp_path_factory.mktemp("resume") / "run"
    assert cli.main(["train", "--preset", "tiny", "--updates", "1", "--set", "world.max_epochs=4",
                     "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def resume(run_dir: Path, *argv: str) -> int:
    return cli.main(["train", "--resume", "--run-dir", str(run_dir), "--quiet", *argv])


REFUSED = [
    (["--seed", "3", "--set", "ppo.lr=1e-3"], "--seed, --set ppo.lr=1e-3"),
    (["--num-envs", "4"], "--num-envs"),
    (["--critic", "v"], "--critic"),
    (["--max-epochs", "6"], "--max-epochs"),
    (["--preset", "demo", "--updates", "5"], "--preset"),
    (["--set", "world.host=strong", "--threads", "1"], "--set world.host=strong"),
]


@pytest.mark.parametrize("argv, flags", REFUSED, ids=[" ".join(argv) for argv, _ in REFUSED])
def test_resume_refuses_flags_that_would_change_the_run(tiny_run, argv, flags, capsys):
    before = snapshot(tiny_run)
    assert resume(tiny_run, *argv) == 2
    assert capsys.readouterr().err == (f"esper-lab train: error: --resume keeps the run's config; these flags would "
                                       f"change it: {flags}\n")
    assert snapshot(tiny_run) == before


def test_resume_applies_the_flags_that_may_change(tiny_run):
    """--updates, --max-minutes, --threads (and where the worlds run) change; the run's own values repeated change
    nothing and are accepted."""
    assert {"updates", "max_minutes", "torch_threads"} <= set(RESUMABLE_FIELDS)
    args = cli.build_parser().parse_args(["train", "--resume", "--run-dir", str(tiny_run), "--updates", "5",
                                          "--max-minutes", "2", "--threads", "1", "--preset", "tiny", "--seed", "0",
                                          "--set", "world.max_epochs=4", "--set", "truth.every=3",
                                          "--set", "truth.rollouts=4"])
    cfg = cli.resume_config(args)
    assert (cfg.updates, cfg.max_minutes, cfg.torch_threads) == (5, 2, 1)
    assert (cfg.truth.every, cfg.truth.rollouts) == (3, 4)  # ground truth only measures; the run trains the same
    assert cfg.world.max_epochs == 4 and cfg.seed == 0 and cfg.preset == "tiny"
    args.updates = "0"
    with pytest.raises(ConfigError, match=r"^updates = 0: must be an integer >= 1$"):
        cli.resume_config(args)


@pytest.mark.parametrize("content, message", [
    ("garbage{", "not an esper_lab config (unreadable, not JSON, or empty)"),
    ("{}", "not an esper_lab config (unreadable, not JSON, or empty)"),
    ("[1, 2]", None),  # refused either by the reader (not an object) or by from_dict
    ('{"precious": 1}', "unknown config field 'precious'"),
    ('{"preset": "tiny", "seed": -4}', f"seed = -4: must be {SEED_RANGE}"),
])
def test_resume_with_a_config_json_that_is_not_a_config_names_the_file(tiny_run, tmp_path, content, message, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "config.json").write_text(content)
    before = snapshot(run_dir)
    assert resume(run_dir) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"esper-lab train: error: {run_dir / 'config.json'}: ") and err.count("\n") == 1
    if message is not None:
        assert err == f"esper-lab train: error: {run_dir / 'config.json'}: {message}\n"
    assert snapshot(run_dir) == before


def test_evaluate_refuses_a_checkpoint_whose_config_is_not_allowed(tiny_run, tmp_path, capsys):
    payload = torch.load(tiny_run / "checkpoint.pt", map_location="cpu", weights_only=True)
    payload["config"]["seed"] = -1
    torch.save(payload, tmp_path / "bad.pt")
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "bad.pt"), "--policy", "none", "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("esper-lab evaluate: error: ") and f"seed = -1: must be {SEED_RANGE}" in err
    assert err.count("\n") == 1


# --- the dashboard's Train panel ---------------------------------------------------------------------------------------


def test_dashboard_start_refuses_a_bad_config_before_creating_a_run(runs_dir):
    from app import process

    with pytest.raises(ConfigError, match=r"^num_envs = 3: must be a multiple of ppo.minibatches \(2\)$"):
        process.start_run(runs_dir, "demo", "q_op", num_envs=3, seed=0, updates=10)
    assert not any(runs_dir.iterdir())


def test_train_panel_shows_the_config_error(runs_dir):
    from streamlit.testing.v1 import AppTest

    from conftest import DASHBOARD

    at = AppTest.from_file(str(DASHBOARD), default_timeout=30).run()
    at.selectbox(key="train_preset").set_value("demo").run()
    at.number_input(key="train_envs").set_value(3)
    at.button(key="start").click().run()
    assert not at.exception
    assert any("num_envs = 3: must be a multiple of ppo.minibatches (2)" in e.value for e in at.error)
    assert not any(runs_dir.iterdir())
