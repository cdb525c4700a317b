"""Where the time of one PPO update and of one rollout step goes: `torch.profiler` tables, top ops by self time.

    GLIBC_TUNABLES=$(.venv/bin/python -m esper_lab.malloc) .venv/bin/python scripts/profile_update.py [--rows 20]

The update: H = 512, 32 rows x 32 steps, 4 epochs x 4 minibatches (`bench compare` part B's L = 32 layout), after
two warm-up updates. The step: `get_action` at batch 8 with all-legal masks, 100 steps after 50 warm-up steps.
docs/performance.md ("The misses, and the profiles that show why") quotes both.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from esper_lab.agent import Agent
from esper_lab.bench.synthetic import all_legal_masks, random_inputs, synthetic_update
from esper_lab.config import PolicyConfig, PPOConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20, help="ops per table")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    agent = Agent.from_config(PolicyConfig(), 3)

    _, update = synthetic_update(agent, PPOConfig(epochs=4, minibatches=4, target_kl=None), all_legal_masks(32), 32)
    update(), update()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        update()
    print("one PPO update (32 x 32, 4 epochs x 4 minibatches)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))

    agent.eval()
    obs, bp_idx = random_inputs(8, torch.Generator().manual_seed(0))
    masks, hidden = all_legal_masks(8), agent.initial_hidden(8)
    with torch.inference_mode():
        for _ in range(50):
            hidden = agent.get_action(obs, bp_idx, masks, hidden).hidden
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(100):
                hidden = agent.get_action(obs, bp_idx, masks, hidden).hidden
    print("100 get_action steps at batch 8")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
