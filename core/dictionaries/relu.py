"""ReLU SAE with an L1 penalty weighted by decoder norms (Anthropic, "Circuits Updates", April 2024).

    f    = ReLU(pre)
    loss = ||x - x_hat||^2 + l1_coefficient * sum_i f_i * ||W_dec_i||

Weighting the penalty by each decoder row's norm removes the cheap way out of an L1 penalty
(shrink f, grow the decoder), so the decoder needs no unit-norm constraint. Decoder rows start
at norm 0.1 (the update's recommendation), the encoder at their transpose.
"""

from __future__ import annotations

import torch

from core.dictionaries.base import SAE, register


@register("standard")
class ReluSAE(SAE):
    label = "ReLU + L1"
    uses_k = False
    default_normalize_decoder = False
    init_decoder_norm = 0.1

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def sparsity_loss(self, f_BF, pre_BF, x_s_BD, x_hat_s_BD, factor):
        l1 = (f_BF * self.W_dec.norm(dim=1)).sum(-1).mean()
        return {"l1_penalty": self.cfg.l1_coefficient * factor * l1}
