"""The morphogenetic world: digits data, the host CNN, seed blueprints and slots, the reward, the envs.

Names are imported lazily, so importing one submodule (say `env.process_vector` in a worker) loads no other.
"""

from importlib import import_module

_EXPORTS = {
    "MorphoEnv": "esper_lab.env.morpho_env",
    "World": "esper_lab.env.morpho_env",
    "WorldReport": "esper_lab.env.morpho_env",
    "VectorEnv": "esper_lab.env.vector",
    "BatchedWorlds": "esper_lab.env.batched.engine",
    "make_engine": "esper_lab.env.engines",
    "SeedSlot": "esper_lab.env.slot",
    "SlotReport": "esper_lab.env.slot",
    "IllegalTransitionError": "esper_lab.env.slot",
    "LifecycleError": "esper_lab.env.slot",
    "RewardBreakdown": "esper_lab.env.reward",
    "REWARD_TERMS": "esper_lab.env.reward",
    "compute_reward": "esper_lab.env.reward",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'esper_lab.env' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
