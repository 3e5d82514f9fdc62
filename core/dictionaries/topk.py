"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    f = scatter(TopK_k(pre), ReLU)        exactly k (or fewer, if pre-activations are negative)
    loss = ||x - x_hat||^2 + aux_coefficient * AuxK

k fixes sparsity directly, so there is no L1 penalty and no shrinkage. Decoder rows are kept at
unit norm (gradient parallel to each row removed, rows renormalised after each step). AuxK: the
aux_k dead features with the largest pre-activations reconstruct the residual x - x_hat, which
gives dead features a gradient that pulls them towards what the live ones miss.
"""

from __future__ import annotations

import torch

from core.dictionaries.base import SAE, register


def topk_activation(pre: torch.Tensor, k: int) -> torch.Tensor:
    values, idx = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, idx, torch.relu(values))


@register("topk")
class TopKSAE(SAE):
    label = "TopK"
    uses_k = True
    default_normalize_decoder = True
    init_decoder_norm = 1.0

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return topk_activation(pre, self.cfg.k)

    def sparsity_loss(self, f_BF, pre_BF, x_s_BD, x_hat_s_BD, factor):
        return {"aux": self.aux_loss(pre_BF, x_s_BD, x_hat_s_BD)}

    def aux_loss(self, pre_BF: torch.Tensor, x_s_BD: torch.Tensor, x_hat_s_BD: torch.Tensor) -> torch.Tensor:
        """AuxK: squared error of the dead features' reconstruction of the residual, in the
        same units as `mse` (Gao et al. 2024 weight it 1/32). Zero when no feature is dead."""
        dead_F = self.dead_mask()
        n_dead = int(dead_F.sum())
        if n_dead == 0 or self.cfg.aux_coefficient == 0:
            return pre_BF.new_zeros(())
        k_aux = min(self.cfg.resolved_aux_k(), n_dead)
        pre_NF = pre_BF.reshape(-1, pre_BF.shape[-1])
        masked_NF = pre_NF.masked_fill(~dead_F, float("-inf"))
        values, idx = masked_NF.topk(k_aux, dim=-1, sorted=False)
        f_aux_NF = torch.zeros_like(pre_NF).scatter(-1, idx, torch.relu(values))
        e_ND = (x_s_BD - x_hat_s_BD).detach().reshape(-1, x_s_BD.shape[-1])
        e_hat_ND = f_aux_NF @ self.W_dec
        return self.cfg.aux_coefficient * (e_hat_ND - e_ND).pow(2).sum(-1).mean()
