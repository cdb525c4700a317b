"""MaskedCategorical: a categorical distribution over legal actions only.

Illegal actions get the logit `MASKED_LOGIT_VALUE` (-1e4, never -inf: -inf makes 0 * -inf = NaN in the entropy and
overflows in fp16). Everything is computed in fp32 (Esper commit 072029d (tachyon-beep/esper-lite): logits upcast
to fp32, because fp16 log-softmax under autocast gave NaN gradients to the heads). The entropy is normalised by
ln(number of legal actions), so it lies in [0, 1] for any head size and is exactly 0 when only one action is legal:
an entropy bonus cannot push on a head that has no choice.

The class works on any batch shape `[..., k]`; the network packs its eight heads into one padded `[B, T, 8, 13]`
instance so that a rollout step pays for one log-softmax and one random draw, not eight.

Validation is always on, because it is what catches the bugs (empty masks from a broken lifecycle, NaN from a
diverged network): one fused check, one host sync, per construction; the slow diagnosis runs only on failure.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from esper_lab.actions import MASKED_LOGIT_VALUE


class MaskedCategorical:
    """Categorical over the last dim of `logits`, restricted to `mask`.

    Args:
        logits: `[..., k]` float, unnormalised; every entry must be finite (masked ones too).
        mask: `[..., k]` bool, True = legal, or None (all legal). Every row needs at least one True.
        row_names: optional names of the entries along dim -2 (e.g. the head names), used in error messages only.

    Raises:
        ValueError: a non-finite logit, a row with no legal action, or a mask of the wrong shape or dtype.
    """

    def __init__(
        self, logits: torch.Tensor, mask: torch.Tensor | None = None, *, row_names: Sequence[str] | None = None
    ):
        if mask is None:
            mask = torch.ones_like(logits, dtype=torch.bool)
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
        if mask.shape != logits.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match logits shape {tuple(logits.shape)}")
        self.row_names = row_names
        logits = logits.float()  # fp32 seam, whatever the autocast dtype
        legal_count = mask.sum(-1)  # [...]
        bad_logits = ~torch.isfinite(logits)  # [..., k]
        if bool(bad_logits.any() | (legal_count == 0).any()):  # the one host sync
            self._raise_invalid(bad_logits, legal_count)
        self.mask = mask
        self.legal_count = legal_count
        self.masked_logits = logits.masked_fill(~mask, MASKED_LOGIT_VALUE)  # [..., k]
        self.log_probs = F.log_softmax(self.masked_logits, dim=-1)  # [..., k]; illegal entries are exactly -1e4-ish

    def _raise_invalid(self, bad_logits: torch.Tensor, legal_count: torch.Tensor) -> None:
        problems = []
        if bad_logits.any():
            where = self._describe(bad_logits.any(-1))
            problems.append(f"non-finite logits (NaN or inf) at {where}")
        if (legal_count == 0).any():
            problems.append(f"no legal action (all-False mask row) at {self._describe(legal_count == 0)}")
        raise ValueError("MaskedCategorical: " + "; ".join(problems))

    def _describe(self, rows: torch.Tensor, limit: int = 5) -> str:
        """Positions of True entries of `rows [...]`, with the dim -2 index replaced by its name if given."""
        hits = rows.nonzero().tolist()
        out = []
        for pos in hits[:limit]:
            if self.row_names is not None and pos:
                pos = pos[:-1] + [self.row_names[pos[-1]]]
            out.append(str(tuple(pos)))
        more = f" (+{len(hits) - limit} more)" if len(hits) > limit else ""
        return ", ".join(out) + more

    @property
    def probs(self) -> torch.Tensor:
        """`[..., k]` probabilities; exactly 0 on illegal actions."""
        return self.log_probs.exp()

    def sample(self) -> torch.Tensor:
        """One draw per row: `[...]` int64, by the exponential race (Gumbel-max): argmax_i log p_i - log E_i with
        E_i ~ Exp(1) picks i with probability p_i. One random draw for every row of every head at once.

        E is clamped away from 0 (CPU exponential_ can return exactly 0, which would make any entry win), so the
        noise term is at most ~69 and an illegal entry (log p ~ -1e4) can never be drawn.
        """
        noise = torch.empty_like(self.log_probs).exponential_().clamp_min_(1e-30).log_()  # [..., k]
        return (self.log_probs - noise).argmax(-1)  # [...]

    def mode(self) -> torch.Tensor:
        """The most likely legal action per row: `[...]` int64."""
        return self.masked_logits.argmax(-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """Log-probability of `action [...]` (int64, legal under the mask): `[...]` float32.

        Raises ValueError for an out-of-range or illegal action: its log-prob would be about -1e4, which turns a PPO
        ratio into inf. That happens only when stored actions and stored masks have drifted apart.
        """
        k = self.log_probs.shape[-1]
        if action.shape != self.log_probs.shape[:-1]:
            raise ValueError(f"action shape {tuple(action.shape)} != batch shape {tuple(self.log_probs.shape[:-1])}")
        out_of_range = (action < 0) | (action >= k)  # [...]
        index = action.clamp(0, k - 1).unsqueeze(-1)  # [..., 1]
        illegal = ~self.mask.gather(-1, index).squeeze(-1) | out_of_range  # [...]
        if bool(illegal.any()):
            raise ValueError(
                f"MaskedCategorical.log_prob: action out of range [0, {k}) or illegal under the mask at "
                f"{self._describe(illegal)}"
            )
        return self.log_probs.gather(-1, index).squeeze(-1)  # [...]

    def entropy(self) -> torch.Tensor:
        """Normalised entropy `[...]` in [0, 1]: H(p) / ln(number of legal actions), 0 when one action is legal."""
        p_log_p = (self.probs * self.log_probs).masked_fill(~self.mask, 0.0)  # [..., k]
        entropy = -p_log_p.sum(-1)  # [...] nats
        max_entropy = torch.log(self.legal_count.clamp_min(2).float())  # [...] ln(n), ln 2 as a safe floor
        normalised = (entropy / max_entropy).clamp(0.0, 1.0)
        return torch.where(self.legal_count > 1, normalised, torch.zeros_like(normalised))

