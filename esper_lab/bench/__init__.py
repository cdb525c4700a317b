"""`esper-lab bench env | policy | train | compare`: every speed measurement of esper_lab, in one place.

- `timing`: the one timing helper (`measure`, `summarize`: median and IQR over repeats after warm-up; `Progress`).
- `synthetic`: random but legal policy inputs, and the one synthetic rollout + real `PPOUpdater` builder.
- `env`: ms per env step, split into host training, validation + counterfactuals and features.
- `policy`: `get_action` ms per step and the real PPO update at a preset's sizes.
- `train`: SPS of the whole training loop, split into env, policy inference and update.
- `compare/`: side by side with sb3-contrib's RecurrentPPO (parts A, B, C; optional extra `bench`).
"""
