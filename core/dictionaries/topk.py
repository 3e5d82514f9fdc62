"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    f = scatter(TopK_k(pre), ReLU)        exactly k (or fewer, if pre-activations are negative)
    loss = ||x - x_hat||^2 + aux_coefficient * AuxK

k fixes sparsity directly, so there is no L1 penalty and no shrinkage. Decoder rows are kept at
unit norm (gradient parallel to each row removed, rows renormalised after each step). AuxK: the
aux_k dead features with the largest pre-activations reconstruct the residual x - x_hat, which
gives dead features a gradient that pulls them towards what the live ones miss.

Training is sparse where it can be. Only the top-k selection needs every pre-activation (one
dense [B, d_in] x [d_in, d_sae] product, without autograd); everything after it touches only
the B * k kept entries, held as `Codes` (CSR row/column indices):

    forward:  values at the kept entries (gathered), x_hat = CSR(acts) @ W_dec   B*k*d_in
    backward: dL/dacts = <dL/dx_hat, W_dec rows> at the kept entries (sampled matmul),
              dW_dec = CSR^T @ dL/dx_hat, dW_enc = (CSR^T @ x_c)^T, db_enc = sum per feature
              (CSR^T: the same arrays read as a CSC matrix, no re-sort)

instead of five more dense B*d_sae*d_in products (decode, its two gradients, the encoder's two
gradients). The gradients equal the dense ones: the top-k mask is piecewise constant, so the
dense backward is zero off the kept entries anyway. `encode` still returns the dense [.., d_sae]
features for callers.
"""

from __future__ import annotations

import warnings

import torch

from core.dictionaries.base import SAE, register

# The CSR kernels used exist on CPU (MKL) and CUDA for these dtypes; anything else (half
# precision, MPS) trains through the dense formulation in SAE.loss.
SPARSE_DTYPES = (torch.float32, torch.float64)
SPARSE_DEVICES = ("cpu", "cuda")
# torch warns once per process that CSR support is "beta"; the few CSR ops used here are long
# stable, so spend that one warning here, silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.sparse_csr_tensor(torch.tensor([0, 1]), torch.tensor([0]), torch.ones(1), (1, 1))


def topk_activation(pre: torch.Tensor, k: int) -> torch.Tensor:
    values, idx = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, idx, torch.relu(values))


class Codes:
    """The kept entries of a [B, d_sae] activation in CSR order (by row, features ascending
    within a row, as torch's CSR invariants ask): `crow` [B + 1], `col` [nnz], and `flat`, the
    same positions in the flattened [B * d_sae] matrix. Builds sparse matrices of any values
    over that pattern."""

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, flat: torch.Tensor, n_rows: int, d_sae: int):
        self.crow, self.col, self.flat, self.shape = crow, col, flat, (n_rows, d_sae)

    @classmethod
    def per_row(cls, idx_BK: torch.Tensor, d_sae: int) -> "Codes":
        """From top-k indices [B, k] (any order within a row)."""
        B, k = idx_BK.shape
        idx_BK = idx_BK.sort(-1).values
        crow = torch.arange(0, B * k + 1, k, device=idx_BK.device)
        flat = (torch.arange(B, device=idx_BK.device)[:, None] * d_sae + idx_BK).reshape(-1)
        return cls(crow, idx_BK.reshape(-1), flat, B, d_sae)

    @classmethod
    def from_flat(cls, flat_idx: torch.Tensor, n_rows: int, d_sae: int) -> "Codes":
        """From positions in the flattened [B * d_sae] matrix (any order)."""
        flat_idx = flat_idx.sort().values
        row = flat_idx // d_sae
        crow = torch.zeros(n_rows + 1, dtype=torch.long, device=flat_idx.device)
        crow[1:] = torch.bincount(row, minlength=n_rows).cumsum(0)
        return cls(crow, flat_idx - row * d_sae, flat_idx, n_rows, d_sae)

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        """[B, d_sae] sparse CSR matrix with `values` [nnz] at the kept entries."""
        return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape,
                                       check_invariants=False)

    def csr_t(self, values: torch.Tensor) -> torch.Tensor:
        """The transpose, [d_sae, B], for weight gradients: a CSC view of the same arrays (no
        sort), which `@` multiplies as fast as a CSR matrix."""
        return self.csr(values).t()

    def dense(self, values: torch.Tensor) -> torch.Tensor:
        # scatter_ into the flat view: about twice as fast on CPU as index_put_ with (row, col)
        return values.new_zeros(self.shape[0] * self.shape[1]).scatter_(0, self.flat, values).view(self.shape)

    def gather(self, dense_BF: torch.Tensor) -> torch.Tensor:
        return dense_BF.reshape(-1)[self.flat]


class _PreAtCodes(torch.autograd.Function):
    """values[n] = ((x - b_dec) @ W_enc + b_enc)[row[n], col[n]], differentiable in every input.

    The forward reads them off the dense pre-activations the selection computed anyway; the
    backward is sparse. b_dec's gradient is -W_enc @ db_enc (its sum over the batch) rather
    than a [B, d_in] product; `b_dec` may be None (apply_b_dec_to_input off)."""

    @staticmethod
    def forward(ctx, x, b_dec, W_enc, b_enc, pre_BF, codes):
        ctx.save_for_backward(x, b_dec, W_enc)
        ctx.codes = codes
        return codes.gather(pre_BF)

    @staticmethod
    def backward(ctx, g):
        x, b_dec, W_enc = ctx.saved_tensors
        codes = ctx.codes
        need_x, need_bdec, need_W, need_b = ctx.needs_input_grad[:4]
        g = g.contiguous()
        grad_x = grad_bdec = grad_W = grad_b = None
        if need_b or need_bdec:
            grad_b = torch.zeros(codes.shape[1], dtype=g.dtype, device=g.device).index_add_(0, codes.col, g)
        if need_bdec:
            grad_bdec = -(W_enc @ grad_b)
        if need_W:
            x_c = x - b_dec if b_dec is not None else x
            grad_W = (codes.csr_t(g) @ x_c).t()  # [d_in, d_sae]; autograd makes it contiguous
        if need_x:
            grad_x = codes.csr(g) @ W_enc.t()
        return grad_x, grad_bdec, grad_W, grad_b if need_b else None, None, None


class _DecodeCodes(torch.autograd.Function):
    """x_hat = CSR(acts) @ W_dec (no bias): each row sums its kept features' decoder rows."""

    @staticmethod
    def forward(ctx, acts, W_dec, codes):
        ctx.save_for_backward(acts, W_dec)
        ctx.codes = codes
        return codes.csr(acts) @ W_dec

    @staticmethod
    def backward(ctx, g):
        acts, W_dec = ctx.saved_tensors
        codes = ctx.codes
        g = g.contiguous()
        grad_acts = grad_W = None
        if ctx.needs_input_grad[0]:  # <g[row], W_dec[col]> at the kept entries only
            pattern = codes.csr(torch.zeros_like(acts))
            grad_acts = torch.sparse.sampled_addmm(pattern, g, W_dec.t(), beta=0.0).values()
        if ctx.needs_input_grad[1]:
            grad_W = codes.csr_t(acts) @ g
        return grad_acts, grad_W, None


def pre_at_codes(sae: SAE, x_s: torch.Tensor, pre_BF: torch.Tensor, codes: Codes) -> torch.Tensor:
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    return _PreAtCodes.apply(x_s, b_dec, sae.W_enc, sae.b_enc, pre_BF, codes)


@register("topk")
class TopKSAE(SAE):
    label = "TopK"
    uses_k = True
    default_normalize_decoder = True
    init_decoder_norm = 1.0

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return topk_activation(pre, self.cfg.k)

    def select(self, pre_BF: torch.Tensor) -> Codes:
        """Training-time choice of the kept entries (no gradient flows through the choice)."""
        return Codes.per_row(pre_BF.topk(self.cfg.k, dim=-1, sorted=False).indices, self.d_sae)

    def loss(self, x: torch.Tensor, sparsity_factor: float = 1.0) -> dict[str, torch.Tensor]:
        """As SAE.loss (mse + AuxK), computed sparsely; `feature_acts` is returned dense and
        detached (for metrics and dead-feature tracking)."""
        if self.W_enc.dtype not in SPARSE_DTYPES or self.W_enc.device.type not in SPARSE_DEVICES:
            return super().loss(x, sparsity_factor)
        lead = x.shape[:-1]
        x_s = self.scale_in(x).reshape(-1, self.d_in)
        with torch.no_grad():
            x_c = x_s - self.b_dec if self.cfg.apply_b_dec_to_input else x_s
            pre_BF = torch.addmm(self.b_enc, x_c, self.W_enc)
            codes = self.select(pre_BF)
        acts = torch.relu(pre_at_codes(self, x_s, pre_BF, codes))
        x_hat_s = _DecodeCodes.apply(acts, self.W_dec, codes) + self.b_dec
        mse = (x_hat_s - x_s).pow(2).sum(-1).mean()
        aux = self.sparse_aux_loss(x_s, pre_BF, x_hat_s)
        x_hat = x_hat_s / self.cfg.input_scale if self.cfg.input_scale != 1.0 else x_hat_s
        f_BF = codes.dense(acts.detach())
        return {"loss": mse + aux, "mse": mse, "aux": aux,
                "feature_acts": f_BF.reshape(*lead, self.d_sae), "x_hat": x_hat.reshape(x.shape)}

    def sparsity_loss(self, f_BF, pre_BF, x_s_BD, x_hat_s_BD, factor):
        return {"aux": self.aux_loss(pre_BF, x_s_BD, x_hat_s_BD)}

    def _aux_selection(self, pre_BF: torch.Tensor):
        """(indices [N, k_aux] of the largest dead pre-activations per row) or None."""
        dead_F = self.dead_mask()
        n_dead = int(dead_F.sum())
        if n_dead == 0 or self.cfg.aux_coefficient == 0:
            return None
        k_aux = min(self.cfg.resolved_aux_k(), n_dead)
        pre_NF = pre_BF.reshape(-1, pre_BF.shape[-1])
        return pre_NF.detach().masked_fill(~dead_F, float("-inf")).topk(k_aux, dim=-1, sorted=False).indices

    def aux_loss(self, pre_BF: torch.Tensor, x_s_BD: torch.Tensor, x_hat_s_BD: torch.Tensor) -> torch.Tensor:
        """AuxK: squared error of the dead features' reconstruction of the residual, in the
        same units as `mse` (Gao et al. 2024 weight it 1/32). Zero when no feature is dead.
        Dense form (dtypes without sparse kernels); `sparse_aux_loss` is the same loss."""
        idx = self._aux_selection(pre_BF)
        if idx is None:
            return pre_BF.new_zeros(())
        pre_NF = pre_BF.reshape(-1, pre_BF.shape[-1])
        f_aux_NF = torch.zeros_like(pre_NF).scatter(-1, idx, torch.relu(pre_NF.gather(-1, idx)))
        e_ND = (x_s_BD - x_hat_s_BD).detach().reshape(-1, x_s_BD.shape[-1])
        e_hat_ND = f_aux_NF @ self.W_dec
        return self.cfg.aux_coefficient * (e_hat_ND - e_ND).pow(2).sum(-1).mean()

    def sparse_aux_loss(self, x_s: torch.Tensor, pre_BF: torch.Tensor, x_hat_s: torch.Tensor) -> torch.Tensor:
        idx = self._aux_selection(pre_BF)
        if idx is None:
            return pre_BF.new_zeros(())
        codes = Codes.per_row(idx, self.d_sae)
        e_hat = _DecodeCodes.apply(torch.relu(pre_at_codes(self, x_s, pre_BF, codes)), self.W_dec, codes)
        return self.cfg.aux_coefficient * (e_hat - (x_s - x_hat_s).detach()).pow(2).sum(-1).mean()
