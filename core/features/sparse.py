"""Encoding many cached tokens fast, straight into sparse (row, feature, value) triplets.

The feature index encodes every token of a cache once, so this is its whole cost. Two things
make it fast on a CPU without changing what is computed:

- The encoder is folded into one affine map, pre = x @ W + b with W = input_scale * W_enc and
  b = b_enc - b_dec @ W_enc (when b_dec is subtracted from inputs): one matrix product per chunk
  and no pass over x beforehand.
- TopK never builds the dense [rows, d_sae] activation: top-k of each row's pre-activations gives
  the kept entries directly. Other architectures run their own `activation` on the dense
  pre-activations and keep the nonzeros, so any registered architecture is encoded as it defines.

Precision: on CPUs with bfloat16 matrix units (AMX) the product runs about 4x faster in
bfloat16 (fp32 accumulation) than in float32. Inputs and weights then carry 8 mantissa bits:
activations are within about 0.5% and a TopK choice can differ only between near-tied features.
`pick_precision` chooses from the CPU's features; callers needing exact values
(contexts shown to the user, tests against brute force) use float32.
"""

from __future__ import annotations

import functools
import time

import torch

PRECISIONS = ("float32", "bfloat16")


@functools.lru_cache(maxsize=None)
def pick_precision(device: str = "cpu") -> str:
    """'bfloat16' on CPUs with bfloat16 matrix instructions (AMX tiles or AVX512-BF16), where
    its product is several times faster than float32's; else 'float32' (elsewhere bfloat16 is
    emulated and slower; on GPUs float32 is fast enough, and exact). Decided from the CPU's
    features, not by timing, so a busy machine gets the same answer, and with it the same
    cached index (the precision is part of index_for's key)."""
    if device != "cpu":
        return "float32"
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(check is None for check in checks):  # a torch without these probes: measure once
        return _timed_choice()
    return "bfloat16" if any(check is not None and check() for check in checks) else "float32"


def _timed_choice() -> str:
    a, b = torch.randn(1024, 640), torch.randn(640, 1024)

    def best(x, y) -> float:
        x @ y  # warm-up: first calls pick and cache kernels
        times = []
        for _ in range(3):
            t = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t)
        return min(times)

    try:
        return "bfloat16" if best(a.bfloat16(), b.bfloat16()) * 1.5 < best(a, b) else "float32"
    except RuntimeError:  # no bfloat16 matmul on this build
        return "float32"


class SparseEncoder:
    """An SAE's encoder in folded form, for many rows at a time. Same results as `sae.encode`
    (in float32) but returned as triplets of the nonzero activations."""

    def __init__(self, sae, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        from core.dictionaries.batchtopk import BatchTopKSAE, JumpReLUSAE
        from core.dictionaries.relu import ReluSAE
        from core.dictionaries.topk import TopKSAE

        self.sae = sae
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        self.device = sae.W_enc.device
        with torch.no_grad():
            W_enc = sae.W_enc.detach().float()
            b = sae.b_enc.detach().float()
            if sae.cfg.apply_b_dec_to_input:
                b = b - sae.b_dec.detach().float() @ W_enc
            self.W = (W_enc * sae.cfg.input_scale).to(self.dtype)
            self.b = b.to(self.dtype)
        # Plain TopK: kept entries straight from topk. ReLU and JumpReLU (BatchTopK at
        # inference): a feature is active where pre > max(threshold, 0), found with one
        # comparison instead of building the activation and then its nonzero mask. Any other
        # activation goes through the architecture's own `activation`.
        activation = type(sae).activation
        self.topk = activation is TopKSAE.activation
        self.k = int(sae.cfg.k)
        self.threshold = None
        if activation is ReluSAE.activation:
            self.threshold = torch.zeros((), dtype=self.dtype, device=self.device)
        elif activation in (JumpReLUSAE.activation, BatchTopKSAE.activation):
            self.threshold = sae.threshold.detach().float().clamp(min=0).to(self.dtype)

    @torch.no_grad()
    def __call__(self, x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows [nnz] int64, features [nnz] int64, values [nnz] float32) of the positive
        activations of x [N, d_in], ordered by row."""
        pre_NF = torch.addmm(self.b, x_ND.to(self.device, self.dtype), self.W)
        if self.topk:
            values, feats = pre_NF.topk(min(self.k, pre_NF.shape[1]), dim=-1, sorted=False)
            rows = torch.arange(pre_NF.shape[0], device=pre_NF.device)[:, None].expand_as(feats)
            keep = values > 0  # TopK then ReLU: a negative top-k entry is not active
            if bool(keep.all()):  # the usual case: skip three masked copies
                return rows.reshape(-1).cpu(), feats.reshape(-1).cpu(), values.reshape(-1).float().cpu()
            return rows[keep].cpu(), feats[keep].cpu(), values[keep].float().cpu()
        if self.threshold is not None:
            rows, feats = (pre_NF > self.threshold).nonzero(as_tuple=True)
            return rows.cpu(), feats.cpu(), pre_NF[rows, feats].float().cpu()
        was = self.sae.training
        self.sae.eval()  # BatchTopK: the inference threshold, not the batch's choice
        try:
            f_NF = self.sae.activation(pre_NF)
        finally:
            self.sae.train(was)
        rows, feats = (f_NF > 0).nonzero(as_tuple=True)
        return rows.cpu(), feats.cpu(), f_NF[rows, feats].float().cpu()
