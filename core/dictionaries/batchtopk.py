"""BatchTopK SAE (Bussmann, Leask & Nanda 2024), and JumpReLU, the form it takes at inference.

Training keeps the k * batch largest activations over the whole batch, so a hard input may use
many features and an easy one few, with k on average. That depends on the batch, so a global
threshold is learned alongside: a running average of the smallest activation kept per batch.
In eval mode `encode` keeps every activation above the threshold (a JumpReLU with one threshold
for all features), independent of what else is in the batch. The threshold is saved per feature
as `threshold` [d_sae], and the SAE as a JumpReLU (cfg.json architecture 'jumprelu', training
architecture 'batchtopk' in its metadata), as SAELens saves BatchTopK SAEs. Unit-norm decoder
and AuxK as in TopK.
"""

from __future__ import annotations

import torch

from core.dictionaries.base import DictionaryError, SAE, register
from core.dictionaries.topk import Codes, TopKSAE


def batch_topk_activation(pre: torch.Tensor, k: int) -> torch.Tensor:
    pre_NF = pre.reshape(-1, pre.shape[-1])
    flat = torch.relu(pre_NF).flatten()
    n_keep = min(k * pre_NF.shape[0], flat.numel())
    values, idx = flat.topk(n_keep, sorted=False)
    return torch.zeros_like(flat).scatter(-1, idx, values).reshape(pre.shape)


def batch_topk_codes(pre_BF: torch.Tensor, k: int) -> Codes:
    """The entries batch_topk_activation keeps, as Codes (for the sparse training path)."""
    B, F = pre_BF.shape
    n_keep = min(k * B, B * F)
    return Codes.from_flat(torch.relu(pre_BF).flatten().topk(n_keep, sorted=False).indices, B, F)


def jumprelu_activation(pre: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.where(pre > threshold, torch.relu(pre), torch.zeros_like(pre))


@register("batchtopk")
class BatchTopKSAE(TopKSAE):
    label = "BatchTopK"
    extra_tensors = ("threshold",)
    saved_architecture = "jumprelu"

    def __init__(self, cfg, seed=None):
        super().__init__(cfg, seed=seed)
        # Zero until the first training batch: then an eval-mode encode is a plain ReLU.
        self.register_buffer("threshold", torch.zeros(cfg.d_sae, dtype=self.W_enc.dtype))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        if self.training:
            return batch_topk_activation(pre, self.cfg.k)
        return jumprelu_activation(pre, self.threshold)

    def select(self, pre_BF: torch.Tensor) -> Codes:
        return batch_topk_codes(pre_BF, self.cfg.k)

    @torch.no_grad()
    def after_step(self, f_BF: torch.Tensor) -> None:
        super().after_step(f_BF)
        self.update_threshold(f_BF)

    @torch.no_grad()
    def update_threshold(self, f_BF: torch.Tensor) -> None:
        """Running average of the smallest positive activation that BatchTopK kept. While the
        threshold is still zero (a new SAE) the batch sets it outright, so it does not creep up
        from zero over the first hundreds of steps."""
        positive = f_BF[f_BF > 0]
        if positive.numel() == 0:
            return
        smallest = positive.min().to(self.threshold.dtype)
        if not bool((self.threshold > 0).any()):
            self.threshold.fill_(smallest)
        else:
            lr = self.cfg.threshold_lr
            self.threshold.mul_(1 - lr).add_(lr * smallest)

    def cfg_json(self, dtype: str = "") -> dict:
        # Saved as what it is at inference, a JumpReLU, as sae-lens saves its BatchTopK SAEs
        # (with the training architecture and k in the metadata, which `load` reads back).
        data = super().cfg_json(dtype)
        data["metadata"]["training_architecture_details"] = {"k": self.cfg.k,
                                                             "topk_threshold_lr": self.cfg.threshold_lr}
        return data


@register("jumprelu")
class JumpReLUSAE(SAE):
    """Inference only: f = ReLU(pre) where pre > threshold (per feature). Loads JumpReLU SAEs
    saved by SAELens, Gemma Scope parameter files (formats.py) and BatchTopK SAEs whose k is
    not known (sae-lens' with a fractional k)."""

    label = "JumpReLU (inference only)"
    trainable = False
    extra_tensors = ("threshold",)
    default_normalize_decoder = False

    def __init__(self, cfg, seed=None):
        super().__init__(cfg, seed=seed)
        self.register_buffer("threshold", torch.zeros(cfg.d_sae, dtype=self.W_enc.dtype))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return jumprelu_activation(pre, self.threshold)

    def loss(self, x, sparsity_factor=1.0):
        raise DictionaryError("Training a JumpReLU SAE is not supported.",
                              "Train a BatchTopK SAE: at inference it is a JumpReLU.")
