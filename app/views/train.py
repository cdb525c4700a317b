"""The sidebar: pick a run, and start a new training run (preset, critic, masks, reward, backend, envs, seed,
updates)."""

from __future__ import annotations

import streamlit as st

from app import process
from app.data import RunRef
from esper_lab.runs import runs_root

DEFAULT_PRESET = "demo"


def _presets():
    """(PRESETS, CRITIC_MODES, MASK_MODES, REWARD_MODES, BACKENDS, preset) from esper_lab.config, or the import error
    as text."""
    try:
        from esper_lab.config import BACKENDS, CRITIC_MODES, MASK_MODES, PRESETS, REWARD_MODES, preset
    except Exception as exc:  # noqa: BLE001 - a broken trainer install must not take the viewer down
        return f"{type(exc).__name__}: {exc}"
    return PRESETS, CRITIC_MODES, MASK_MODES, REWARD_MODES, BACKENDS, preset


def pick_run(runs: list[RunRef]) -> RunRef | None:
    """The run selector (most recent first). A selected run that vanished is reported and replaced."""
    names = [r.name for r in runs]
    chosen = st.session_state.get("run")
    if chosen is not None and chosen not in names:
        st.session_state["vanished"] = chosen
        del st.session_state["run"]
    if not runs:
        return None
    name = st.selectbox("Run", names, key="run", help=f"run directories under {runs_root()}")
    return runs[names.index(name)]


def _apply_preset(preset) -> None:
    cfg = preset(st.session_state["train_preset"])
    st.session_state.update(train_envs=cfg.num_envs, train_updates=cfg.updates, train_critic=cfg.policy.critic,
                            train_masks=cfg.policy.masks, train_reward=cfg.world.reward.mode, train_backend=cfg.backend)


def _start() -> None:
    ss = st.session_state
    try:
        run_dir = process.start_run(runs_root(), ss["train_preset"], ss["train_critic"], int(ss["train_envs"]),
                                    int(ss["train_seed"]), int(ss["train_updates"]), ss["train_backend"],
                                    ss["train_masks"], ss["train_reward"])
    except Exception as exc:  # noqa: BLE001 - shown to the user
        ss["train_error"] = f"Could not start training: {type(exc).__name__}: {exc}"
        return
    ss["run"] = run_dir.name
    ss["flash"] = f"Started {run_dir.name}: the first point appears when update 1 finishes."


def train_panel(any_running: bool) -> None:
    st.subheader("Train")
    found = _presets()
    if isinstance(found, str):
        st.error(f"Training is unavailable: esper_lab.config does not import ({found}).")
        return
    presets, critics, mask_modes, reward_modes, backends, preset = found
    if "train_preset" not in st.session_state:
        st.session_state["train_preset"] = DEFAULT_PRESET if DEFAULT_PRESET in presets else sorted(presets)[0]
        st.session_state["train_seed"] = 0
        _apply_preset(preset)
    st.selectbox("Preset", sorted(presets), key="train_preset", on_change=_apply_preset, args=(preset,),
                 help="tiny: seconds per update, a smoke test; demo: the default lab run; phase4: Phase 4 sizes")
    st.selectbox("Critic", critics, key="train_critic",
                 help="q_op: Q(s, op) baseline (Phase 4); v: op-independent V(s); q_marginal: Q marginalised over ops")
    st.selectbox("Masks", mask_modes, key="train_masks",
                 help="conditional: the slot is sampled among the slots where the sampled op can execute, so every "
                      "action executes; independent: Phase 4 as shipped (an op drawn for a slot that cannot take it "
                      "runs as WAIT)")
    st.selectbox("Reward", reward_modes, key="train_reward",
                 help="contribution: Phase 4's counterfactual attribution and shaping; simplified: stage potentials, "
                      "an action cost, final accuracy and fossils; sparse: final reward only (best accuracy minus "
                      "seed parameters); basic: Esper HEAD's (stage potentials, parameter rent, a FOSSILIZE bonus, the "
                      "episode's accuracy gain). docs/reward_modes.md")
    st.selectbox("Backend", backends, key="train_backend",
                 help="local: worlds in the trainer's process; process: in worker processes, one per core (the "
                      "demo default); ray: in Ray actors (pip install -e '.[ray]'; docs/scale-out.md)")
    left, right = st.columns(2)
    minibatches = preset(st.session_state["train_preset"]).ppo.minibatches
    left.number_input("Envs", min_value=1, max_value=64, step=1, key="train_envs",
                      help=f"worlds per update; a multiple of this preset's PPO minibatches ({minibatches})")
    right.number_input("Seed", min_value=0, step=1, key="train_seed")
    st.number_input("Updates", min_value=1, max_value=100_000, step=1, key="train_updates")
    st.button("Start", key="start", type="primary", on_click=_start, width="stretch")
    if any_running:
        st.caption("Another run is training: a second one shares the CPU cores with it.")
    error = st.session_state.pop("train_error", None)
    if error:
        st.error(error)
