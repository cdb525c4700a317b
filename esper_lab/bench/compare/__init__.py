"""`esper-lab bench compare`: esper_lab side by side with sb3-contrib's RecurrentPPO, all parts in one process.

- `inference` (part A): rollout inference, microseconds per vectorised step.
- `update` (part B): PPO update time, ms per 1,000 samples per epoch, at three episode lengths.
- `same_world` (part C): both learners on MorphoEnv for the same wall-clock budget, evaluated on the same episodes.
- `sb3_side`: everything that imports sb3_contrib / stable_baselines3 (imported lazily; `pip install -e '.[bench]'`).
- `report`: runs the selected parts, prints the table with ratios and PASS / MISS, writes the JSON.

Timings go through `esper_lab.bench.timing` (median and IQR over repeats), like every other benchmark.
"""
