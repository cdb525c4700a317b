"""The batched world engine (`WorldConfig.engine = "batched"`): many worlds' host epochs as one computation.

    exact.py    what keeps a world's numbers its own in a batched op: the per-world matmul, per-world sigmoid
    layers.py   stacked twins of Conv3x3, Conv1x1, Linear, GroupNorm: one layer's math for G worlds folded into the batch
    stack.py    ParamStack (a module kind's parameters stacked over worlds, Adam state per row) and the one Adam call
    seeds.py    seeds grouped by (slot, blueprint) at each injection point
    engine.py   BatchedWorlds: per-world Python decisions, then one batched train epoch, validation, counterfactuals
"""
