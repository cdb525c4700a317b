"""World snapshots: a world can be cloned at any step. `World.get_state` / `from_state` / `set_state`, and every
backend's `get_states` / `set_states`: a clone continues exactly as the original would (reports, features, masks,
rewards, infos, bit for bit), shares no mutable state with it, and a snapshot rewinds an env."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from esper_lab.config import preset
from esper_lab.env.backends import close_vector_env, make_worlds
from esper_lab.env.data import load_digits_data
from esper_lab.env.morpho_env import World
from esper_lab.features import batch_obs_to_features
from esper_lab.policy.baselines import RandomLegalPolicy

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD = dataclasses.replace(preset("tiny").world, max_epochs=12)  # long enough for prunes and re-germinations
SEEDS = [11, 12, 13]
BACKENDS = ["local", "process"]


@pytest.fixture
def make_env():
    """`make_env(backend, seed=0, world=WORLD)`: 3 worlds ('process': 2 workers, [0, 1] and [2]); closed after."""
    made = []

    def make(backend: str, seed: int = 0, world=WORLD):
        envs = make_worlds(world, len(SEEDS), seed, backend, workers=2 if backend == "process" else None)
        made.append(envs)
        return envs

    yield make
    for envs in made:
        close_vector_env(envs)


def act(envs, policy: RandomLegalPolicy) -> torch.Tensor:
    """Random legal actions `[E, 8]` for what `envs` shows now."""
    return policy.act(envs.reports(), envs.masks())


def advance(envs, steps: int, policy: RandomLegalPolicy) -> None:
    for _ in range(steps):
        envs.step(act(envs, policy))


def play(envs, steps: int, policy: RandomLegalPolicy) -> list:
    """The results of `steps` random legal steps."""
    return [envs.step(act(envs, policy)) for _ in range(steps)]


def assert_same_view(x, y) -> None:
    """The two envs look the same: reports, their features, masks, episode seeds."""
    assert x.reports() == y.reports()
    for a, b in zip(batch_obs_to_features(x.reports()), batch_obs_to_features(y.reports())):
        assert torch.equal(a, b)
    masks_x, masks_y = x.masks(), y.masks()
    assert masks_x.keys() == masks_y.keys() and all(torch.equal(masks_x[k], masks_y[k]) for k in masks_x)
    assert x.episode_seeds == y.episode_seeds


def assert_same_step(x, y) -> None:
    """Two `step` results are identical: reports, rewards, flags, infos (reward terms included)."""
    assert x[0] == y[0]
    for a, b in zip(x[1:4], y[1:4]):  # rewards, terminated, truncated
        assert torch.equal(a, b)
    assert [i["reward_terms"] for i in x[4]] == [i["reward_terms"] for i in y[4]]
    assert x[4] == y[4]


def replay_in_lockstep(envs: list, policy: RandomLegalPolicy) -> int:
    """Step every env in `envs` with the same random legal actions (drawn from the first) to the episode's end,
    checking each step is identical in all of them. Returns the steps taken."""
    steps, done = 0, False
    while not done:
        actions = act(envs[0], policy)
        results = [env.step(actions) for env in envs]
        for other in results[1:]:
            assert_same_step(results[0], other)
        done, steps = bool(results[0][3].all()), steps + 1
    return steps


def random_step_count(salt: int) -> int:
    """A random, reproducible number of steps to take before the snapshot: 2 .. max_epochs - 3."""
    return int(torch.randint(2, WORLD.max_epochs - 2, (1,), generator=torch.Generator().manual_seed(salt)))


# --- the vector envs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_clone_replays_the_original_exactly(make_env, backend):
    original, policy = make_env(backend), RandomLegalPolicy(seed=5)
    original.reset(SEEDS)
    k = random_step_count(len(backend))
    advance(original, k, policy)
    assert any(s is not None for r in original.reports() for s in r.slots)  # seeds live: their state is cloned too
    clone = make_env(backend, seed=99)  # a different seed stream: the seeds must come from the snapshots
    assert clone.set_states(original.get_states()) == original.reports()
    assert_same_view(original, clone)
    assert clone.episode_seeds == SEEDS
    assert replay_in_lockstep([original, clone], policy) == WORLD.max_epochs - k >= 3


def test_a_clone_shares_no_state_with_the_original(make_env):
    """Three envs in one process from one snapshot: stepping one further leaves the other two identical."""
    original, policy = make_env("local"), RandomLegalPolicy(seed=6)
    original.reset(SEEDS)
    advance(original, 4, policy)
    states = original.get_states()
    stray, twin = make_env("local"), make_env("local")
    stray.set_states(states)
    twin.set_states(states)
    advance(stray, 5, RandomLegalPolicy(seed=7))  # other actions, other epochs, other seeds
    assert stray.reports() != original.reports()
    assert_same_view(original, twin)
    replay_in_lockstep([original, twin], policy)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_snapshot_rewinds_an_env(make_env, backend):
    envs = make_env(backend)
    envs.reset(SEEDS)
    advance(envs, 3, RandomLegalPolicy(seed=8))
    states, before = envs.get_states(), envs.reports()
    first = play(envs, 4, RandomLegalPolicy(seed=9))
    assert envs.set_states(states) == before == envs.reports()
    again = play(envs, 4, RandomLegalPolicy(seed=9))
    for x, y in zip(first, again):
        assert_same_step(x, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_finished_episode_round_trips_and_still_refuses_to_step(make_env, backend):
    original, policy = make_env(backend), RandomLegalPolicy(seed=10)
    original.reset(SEEDS)
    advance(original, WORLD.max_epochs, policy)
    clone = make_env(backend)
    assert clone.set_states(original.get_states()) == original.reports()
    assert_same_view(original, clone)
    with pytest.raises(RuntimeError, match="World.step after the episode ended"):
        clone.step(torch.zeros(len(SEEDS), 8, dtype=torch.int64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_snapshot_calls_are_refused(make_env, backend):
    envs = make_env(backend)
    with pytest.raises(RuntimeError, match="get_states called before reset"):
        envs.get_states()
    envs.reset(SEEDS)
    states = envs.get_states()
    with pytest.raises(ValueError, match="set_states: 2 states for 3 envs"):
        envs.set_states(states[:2])
    with pytest.raises(ValueError, match="set_states: 4 states for 3 envs"):
        envs.set_states(states + states[:1])
    assert envs.set_states(states) == envs.reports()


def test_a_snapshot_of_another_config_or_before_reset_changes_nothing(make_env):
    envs = make_env("local")
    envs.reset(SEEDS)
    before = envs.reports()
    other = World(dataclasses.replace(WORLD, host_lr=1e-3))
    other.reset(1)
    states = envs.get_states()
    with pytest.raises(ValueError, match="another config"):
        envs.set_states([*states[:2], other.get_state()])
    with pytest.raises(ValueError, match="before reset"):
        envs.set_states([*states[:2], World(WORLD).get_state()])
    assert envs.reports() == before and envs.get_states() == states


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_batched_engine_refuses_snapshots_clearly(make_env, backend):
    envs = make_env(backend, world=dataclasses.replace(WORLD, engine="batched"))
    envs.reset(SEEDS)
    with pytest.raises(ValueError, match=r"world snapshots need world.engine='sequential', got 'batched'"):
        envs.get_states()
    with pytest.raises(ValueError, match=r"world snapshots need world.engine='sequential'"):
        envs.set_states([b""] * len(SEEDS))


# --- one world -----------------------------------------------------------------------------------------------------


def world_params(world: World) -> list[torch.nn.Parameter]:
    """The host's and every seed's parameters (what the optimizer must be updating)."""
    return [*world.host.parameters(), *(p for params in world.seed_params_by_slot.values() for p in params)]


def germinated_world() -> World:
    """A world some random legal steps in, with two seeds germinated."""
    world, policy = World(WORLD), RandomLegalPolicy(seed=3)
    world.reset(4)
    while len(world.seed_params_by_slot) < 2:
        assert world.epoch < WORLD.max_epochs - 2, "the random policy germinated too little: pick another seed"
        masks = {k: v[None] for k, v in world.action_masks().items()}  # [1, ...]
        world.step(policy.act([world.report()], masks)[0].tolist())
    return world


def test_a_restored_world_trains_the_parameters_it_holds_and_shares_the_data():
    world = germinated_world()
    state = world.get_state()
    clone = World.from_state(state, WORLD)
    assert [id(p) for p in clone.optimizer.params] == [id(p) for p in world_params(clone)]  # the same objects
    assert not {id(p) for p in world_params(clone)} & {id(p) for p in world_params(world)}
    for mine, theirs in zip(world_params(world), world_params(clone)):
        assert torch.equal(mine, theirs)
    for name in ("exp_avg", "exp_avg_sq", "steps"):
        assert all(torch.equal(a, b) for a, b in zip(getattr(world.optimizer, name), getattr(clone.optimizer, name)))
    assert torch.equal(clone.gen.get_state(), world.gen.get_state())
    assert clone.data is world.data is load_digits_data(WORLD.data_seed)  # re-loaded from the cache, not copied
    assert len(state) < world.data.x_train.nbytes
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in world_params(clone))


def test_a_world_before_reset_round_trips():
    fresh = World.from_state(World(WORLD).get_state(), WORLD)
    assert fresh.host is None and fresh.data is load_digits_data(WORLD.data_seed)
    assert fresh.reset(21) == World(WORLD).reset(21)


def test_set_state_replaces_a_world_in_place():
    world, other = germinated_world(), World(WORLD)
    other.reset(99)
    other.set_state(world.get_state())
    assert other.report() == world.report() and other.seed == world.seed == 4
    action = [0] * 8  # WAIT: one host epoch on the restored data order, Adam state and seeds
    assert other.step(action) == world.step(action)
    assert other.report() == world.report()
    with pytest.raises(ValueError, match="another config"):
        World(dataclasses.replace(WORLD, max_epochs=9)).set_state(world.get_state())
