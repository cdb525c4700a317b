"""RolloutBuffer: per-env rows, full schema, overflow and schema errors, batched layout."""

import pytest
import torch

from esper_lab.actions import HEAD_INDEX, HEAD_NAMES, NUM_HEADS, NUM_OPS, head_sizes
from esper_lab.rl.buffer import BufferFullError, BufferSchemaError, RolloutBuffer

E, STEPS, D, S, H, L = 3, 4, 5, 3, 8, 1


def _step(t: int, E: int = E, S: int = S) -> dict:
    """One step for all envs, with values that encode (env, step) so the layout can be checked."""
    env = torch.arange(E, dtype=torch.float32)
    sizes = head_sizes(S)
    return dict(
        obs=(env * 100 + t).unsqueeze(1).expand(E, D).clone(),  # [E, D]
        blueprint_indices=torch.full((E, S), -1 if t == 0 else t, dtype=torch.long),
        actions=torch.tensor([t % sizes[h] for h in HEAD_NAMES]).expand(E, NUM_HEADS).clone(),  # [E, 8]
        log_probs=(-(env + t)).unsqueeze(1).expand(E, NUM_HEADS).clone(),  # [E, 8]
        value=env * 10 + t,
        op_values=torch.randn(E, NUM_OPS),
        executed_op=torch.full((E,), t % NUM_OPS, dtype=torch.long),
        reward=torch.ones(E) * t,
        done=torch.full((E,), t == STEPS - 1),
        truncated=torch.full((E,), t == STEPS - 1),
        masks={h: torch.ones(E, k, dtype=torch.bool) for h, k in sizes.items()},
    )


def _hidden(E: int = E) -> tuple[torch.Tensor, torch.Tensor]:
    """A recognisable initial state: h0[l, e, :] = 7 + e, c0 = -7."""
    return torch.full((L, E, H), 7.0) + torch.arange(E, dtype=torch.float32).view(1, E, 1), torch.full((L, E, H), -7.0)


def _empty(E: int = E, S: int = S) -> RolloutBuffer:
    buf = RolloutBuffer(E, STEPS, D, S, H, L)
    buf.reset(_hidden(E))
    return buf


def _filled() -> RolloutBuffer:
    buf = _empty()
    for t in range(STEPS):
        buf.add(**_step(t))
    return buf


def test_batched_layout_is_per_env_rows():
    buf = _filled()
    batch = buf.batched()
    assert batch.obs.shape == (E, STEPS, D)
    assert batch.blueprint_indices.shape == (E, STEPS, S) and batch.blueprint_indices.dtype == torch.long
    assert batch.op_values.shape == (E, STEPS, NUM_OPS)
    assert batch.masks["blueprint"].shape == (E, STEPS, 13) and batch.masks["slot"].dtype == torch.bool
    assert batch.actions.shape == (E, STEPS, NUM_HEADS) and batch.actions.dtype == torch.long
    assert batch.log_probs.shape == (E, STEPS, NUM_HEADS)
    for e in range(E):
        assert batch.obs[e, :, 0].tolist() == [100 * e + t for t in range(STEPS)]
        assert batch.values[e].tolist() == [10 * e + t for t in range(STEPS)]
        assert batch.log_probs[e, :, HEAD_INDEX["op"]].tolist() == [-(e + t) for t in range(STEPS)]
        assert batch.actions[e, :, HEAD_INDEX["tempo"]].tolist() == [t % 3 for t in range(STEPS)]
        assert batch.executed_ops[e].tolist() == [t % NUM_OPS for t in range(STEPS)]
    assert batch.blueprint_indices[:, 0].eq(-1).all() and batch.blueprint_indices[:, 1].eq(1).all()
    assert batch.dones[:, -1].all() and not batch.dones[:, :-1].any()
    assert batch.valid.all() and batch.valid.shape == (E, STEPS)


def test_only_the_initial_hidden_state_is_stored():
    buf = _filled()
    batch = buf.batched()
    h0, c0 = batch.initial_hidden
    assert h0.shape == (L, E, H) and c0.shape == (L, E, H)
    torch.testing.assert_close(h0, _hidden()[0])
    torch.testing.assert_close(c0, _hidden()[1])
    assert not [name for name in vars(buf) if name.startswith("hidden")]  # no per-step hidden state
    with pytest.raises(BufferSchemaError, match="initial hidden h has shape"):
        buf.reset((torch.zeros(E, H), torch.zeros(E, H)))
    with pytest.raises(BufferSchemaError, match="reset\\(initial_hidden\\) first"):
        RolloutBuffer(E, STEPS, D, S, H, L).add(**_step(0))


def test_rows_selects_whole_episodes():
    batch = _filled().batched()
    sub = batch.rows(torch.tensor([2, 0]))
    assert sub.num_envs == 2 and sub.num_steps == STEPS
    torch.testing.assert_close(sub.obs[0], batch.obs[2])
    torch.testing.assert_close(sub.initial_hidden[0][:, 0], batch.initial_hidden[0][:, 2])
    torch.testing.assert_close(sub.masks["op"][1], batch.masks["op"][0])


def test_overflow_raises_naming_the_capacity():
    buf = _filled()
    with pytest.raises(BufferFullError, match="max_steps=4"):
        buf.add(**_step(0))
    buf.reset(_hidden())
    assert len(buf) == 0
    buf.add(**_step(0))  # usable again after reset
    assert len(buf) == 1 and not buf.dones.any()


def test_missing_field_is_a_clear_schema_error():
    buf = _empty()
    step = _step(0)
    del step["blueprint_indices"]
    with pytest.raises(BufferSchemaError, match="blueprint_indices"):
        buf.add(**step)
    assert len(buf) == 0  # nothing half-written


def test_missing_head_and_wrong_shape_are_clear_errors():
    buf = _empty()
    step = _step(0)
    del step["masks"]["tempo"]
    with pytest.raises(BufferSchemaError, match="tempo"):
        buf.add(**step)
    step = _step(0)
    step["blueprint_indices"] = torch.zeros(E, S + 1, dtype=torch.long)
    with pytest.raises(BufferSchemaError, match="blueprint_indices has shape"):
        buf.add(**step)
    step = _step(0)
    step["actions"] = step["actions"][:, :7]  # a joint action must have a column per head
    with pytest.raises(BufferSchemaError, match="actions has shape"):
        buf.add(**step)


def test_add_detaches_and_copies():
    buf = _empty()
    step = _step(0)
    step["value"] = step["value"].requires_grad_()
    buf.add(**step)
    step["obs"].fill_(123.0)  # mutating the caller's tensor afterwards does not change the buffer
    batch = buf.batched()
    assert not batch.values.requires_grad
    assert batch.obs[0, 0, 0].item() == 0.0


def test_set_bootstrap_writes_the_last_stored_step():
    buf = _empty()
    for t in range(2):
        buf.add(**_step(t))
    buf.set_bootstrap(torch.tensor([1.0, 2.0, 3.0]))
    batch = buf.batched()
    assert batch.bootstrap_values.shape == (E, 2)
    assert batch.bootstrap_values[:, 1].tolist() == [1.0, 2.0, 3.0]
    assert batch.bootstrap_values[:, 0].eq(0).all()
    with pytest.raises(BufferSchemaError):
        buf.set_bootstrap(torch.zeros(E + 1))


def test_five_slots():
    buf = RolloutBuffer(2, 3, D, 5, H, L)
    buf.reset(_hidden(2))
    buf.add(**_step(0, E=2, S=5))
    batch = buf.batched()
    assert batch.masks["slot"].shape == (2, 1, 5) and batch.blueprint_indices.shape == (2, 1, 5)


def test_empty_buffer_has_no_batch():
    with pytest.raises(RuntimeError, match="empty"):
        RolloutBuffer(E, STEPS, D, S, H, L).batched()
