"""BatchedWorlds: E worlds whose host epochs run as one computation.

Each world stays a `World`: its own generator (data order, initial weights), slots, lifecycle, alpha ramps, reward,
signals and reports, all by `World`'s own code. Only the tensor work is shared. A step:

    per world   check_action, apply_action (execute, reward, tick: Python)       World.step's first half
    stacks      new seeds' weights copied into their (slot, blueprint) stack rows
    one epoch   per world its own randperm; then for every minibatch ONE forward of all the hosts (stacked
                parameters, bmm) with the seeds grouped by (slot, blueprint), ONE backward, ONE fused Adam call
    validation  one pass over every world, then one pass per counterfactual slot set (over the worlds measuring
                it, resumed from the full pass's activation before the first slot it switches off)
    per world   gradient norms, counterfactuals and signals written back through World's own methods

A world's numbers never depend on the other worlds: every batched op computes each world's slice from the world's
own operands with the same kernel arithmetic as the world's own layers (env/batched/layers.py, stack.py), so a
world's parameters, gradients, accuracies, counterfactuals, rewards and reports are those of `World.step`, bit for bit
on one CPU thread, whatever worlds it is batched with. The one exception is the reported training loss
(`WorldReport.train_loss`, a feature): a world's minibatch loss is a mean over the batch axis, where `F.cross_entropy`
sums its batch in a cascade, so it can differ in the last bits (about 1e-7 relative; its gradient is the same).
tests/test_batched_parts.py and tests/test_batched_engine.py pin all of this.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from esper_lab.actions import BlueprintAction
from esper_lab.env.batched.seeds import SlotInjector, plan_injectors, take_rows, trained_stacks
from esper_lab.env.batched.stack import ParamStack, RowAdam
from esper_lab.env.morpho_env import World, WorldReport, accuracies, epoch_timings, for_each_world, torch_threads


class BatchedWorlds:
    """`worlds` stepped together: `reset(seeds)` and `step(rows)` as `World.reset` / `World.step` for each world,
    in one computation. `labels` (env ids) name a failing world in errors, as `for_each_world` does."""

    def __init__(self, worlds: Sequence[World], labels: Sequence[int] | None = None):
        if not worlds:
            raise ValueError("BatchedWorlds needs at least one world")
        self.worlds, self.labels = list(worlds), labels
        self.cfg, self.data = self.worlds[0].cfg, self.worlds[0].data
        self.host: ParamStack | None = None
        self.seeds: dict[tuple[int, BlueprintAction], ParamStack] = {}
        self.gates: dict[int, ParamStack] = {}
        self._loaded: list[list[nn.Module | None]] = []  # the seed module held in each (world, slot) stack row

    # -- the engine interface (what VectorEnv and WorldGroup call) -------------------------------------------

    def reset(self, seeds: Sequence[int]) -> list[WorldReport]:
        """Episode `seeds[e]` in world e (fresh hosts, empty slots); trains and validates epoch 1 of all of them."""
        with torch_threads(self.cfg.env_threads):
            for_each_world(self.worlds, World.start_episode, seeds, self.labels)
            if self.host is None:
                self.host = ParamStack(self.worlds[0].host, len(self.worlds))
            for row, world in enumerate(self.worlds):
                self.host.load(row, world.host)
            self._loaded = [[None] * len(world.slots) for world in self.worlds]
            self._run_epoch(list(range(len(self.worlds))))
            return [world.report() for world in self.worlds]

    def step(self, rows: Sequence[Sequence[int]]) -> list[tuple[float, bool, dict]]:
        """Every world's `World.step(rows[e])`: `[(reward, truncated, info)]` in world order. Every action is checked
        before any world changes."""
        with torch_threads(self.cfg.env_threads):
            actions = for_each_world(self.worlds, World.check_action, rows, self.labels)
            results = for_each_world(self.worlds, World.apply_action, actions, self.labels)
            self._load_new_seeds()
            live = [row for row, (_, terminal, _) in enumerate(results) if not terminal]
            if live:
                self._run_epoch(live)
            return results

    # -- stacks --------------------------------------------------------------------------------------------------

    def _load_new_seeds(self) -> None:
        """Copy every seed germinated since the last call (and its gate) into its world's stack rows."""
        for row, world in enumerate(self.worlds):
            for s, slot in enumerate(world.slots):
                if slot.seed is None or slot.seed is self._loaded[row][s]:
                    continue
                key = (s, slot.blueprint)
                if key not in self.seeds:
                    self.seeds[key] = ParamStack(slot.seed, len(self.worlds))
                if s not in self.gates:
                    self.gates[s] = ParamStack(slot.gate, len(self.worlds))
                self.seeds[key].load(row, slot.seed)
                self.gates[s].load(row, slot.gate)
                self._loaded[row][s] = slot.seed

    def _plan(self, rows: list[int]) -> dict[str, SlotInjector]:
        return plan_injectors([w.slots for w in self.worlds], rows, lambda s, bp: self.seeds[(s, bp)],
                              self.gates.__getitem__)

    def _host_rows(self, rows: list[int]) -> torch.Tensor | None:
        return None if rows == list(range(len(self.worlds))) else torch.tensor(rows, dtype=torch.int64)

    # -- one epoch of the worlds `live` ------------------------------------------------------------------------

    def _run_epoch(self, live: list[int]) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        train_losses = self._train_epoch(live)
        t1, c1 = time.perf_counter(), time.thread_time()
        validation = self._validate(live)
        t2, c2 = time.perf_counter(), time.thread_time()
        timings = epoch_timings(t0, t1, t2, c0, c1, c2, share=1.0 / len(live))  # each world's share of the batch
        for row, train_loss, (val_loss, val_acc) in zip(live, train_losses, validation):
            self.worlds[row].finish_epoch(train_loss, val_loss, val_acc, timings)

    def _train_epoch(self, live: list[int]) -> list[float]:
        """One pass over each world's own shuffle of the training set; each world's mean training loss."""
        P, bs = len(live), self.cfg.host_batch_size
        perms = torch.stack([torch.randperm(self.data.num_train, generator=self.worlds[r].gen) for r in live])
        injectors, host_rows = self._plan(live), self._host_rows(live)
        adam = RowAdam([(self.host, live), *trained_stacks(injectors)], lr=self.cfg.host_lr)
        total, N = torch.zeros(P), perms.shape[1]
        for i in range(0, N, bs):
            batch = perms[:, i:i + bs]  # [P, b]: each world's own next minibatch
            b = batch.shape[1]
            xb, yb = self.data.x_train[batch.reshape(-1)], self.data.y_train[batch]  # [P*b, 1, 8, 8], [P, b]
            logits = self.host.select(host_rows)(xb, injectors)  # [P*b, 10]
            loss = F.cross_entropy(logits, yb.reshape(-1), reduction="none").view(P, b).mean(dim=1)  # [P]
            adam.zero_grad()
            loss.sum().backward()  # each world's parameters get the gradient of its own loss only
            adam.step()
            total += loss.detach() * b
        self._record_gradients(injectors)
        return [t / N for t in total.tolist()]

    def _record_gradients(self, injectors: dict[str, SlotInjector]) -> None:
        """Seed gradient norms of the epoch's last minibatch (`World._record_gradients`)."""
        for injector in injectors.values():
            for group in injector.groups:
                for row, norm in zip(group.rows, group.stack.grad_norms(group.rows)):
                    self.worlds[row].slots[group.slot].record_gradient(norm)

    @torch.inference_mode()
    def _validate(self, live: list[int]) -> list[tuple[float, float]]:
        """Each world's validation loss and accuracy; then every measured seed's counterfactual. A counterfactual
        pass resumes from the full pass's activation before the first slot it switches off (the same numbers as
        running it from the image: everything before that slot is the same computation)."""
        y, N = self.data.y_val, self.data.num_val
        taps: list[torch.Tensor] = []  # [P * N_val, W, 4, 4] before each slot
        logits = self._val_pass(live, live, 0, frozenset(), taps).view(len(live), N, -1)  # [P, N_val, 10]
        losses = [F.cross_entropy(world_logits, y).item() for world_logits in logits]  # the world's own reduction
        accs = accuracies(logits, y)
        passes: dict[frozenset[str], list[int]] = {}  # slot set switched off -> the worlds that measure it
        for row in live:
            for group in self.worlds[row].counterfactual_groups():
                passes.setdefault(group, []).append(row)
        without: dict[int, dict[frozenset[str], float]] = {row: {} for row in live}
        slot_ids = list(self.host.twin.slot_ids)
        for group, rows in passes.items():
            point = min(slot_ids.index(slot_id) for slot_id in group)
            off = self._val_pass(live, rows, point, group, taps).view(len(rows), N, -1)
            for row, acc in zip(rows, accuracies(off, y)):
                without[row][group] = acc
        for row, acc in zip(live, accs):
            self.worlds[row].record_counterfactuals(acc, without[row])
        return list(zip(losses, accs))

    def _val_pass(self, live: list[int], rows: list[int], point: int, skip: frozenset[str],
                  taps: list[torch.Tensor]) -> torch.Tensor:
        """`[len(rows) * N_val, 10]`: the validation set through the hosts of `rows` (a subset of `live`) with the
        slots in `skip` switched off, from injection point `point` on. From point 0 (the full pass) the stem runs
        and `taps` is filled; later points start from `taps`."""
        host = self.host.select(self._host_rows(rows))
        plan = self._plan(rows)
        if point == 0 and not taps:
            x = self.data.x_val  # [N_val, 1, 8, 8], the same for every world
            folded = x.expand(len(rows), *x.shape).reshape(len(rows) * x.shape[0], *x.shape[1:])
            return host(folded, plan, skip, taps)
        h = taps[point]  # [P * N_val, W, 4, 4] of the worlds `live`
        if rows != live:
            position = {row: p for p, row in enumerate(live)}
            where = torch.tensor([position[row] for row in rows], dtype=torch.int64)
            h = take_rows(h.view(len(live), -1, *h.shape[1:]), where).flatten(0, 1)
        return host.forward_from(h, point, plan, skip)

