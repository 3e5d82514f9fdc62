"""Synthetic activations with a known answer: sparse codes over a planted dictionary.

    D = planted_dictionary(d_in=64, n_features=256, seed=0)          # [F, d_in], unit rows
    x, codes = sparse_activations(D, n=4096, k_active=4, seed=1)      # x = codes @ D
    mean_cos, per_feature = recovery(D, sae.W_dec)                    # did training find D?

Used to test that dictionary learners recover planted features (SAEs now; crosscoders and
students later). Everything is seeded and runs on CPU.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch

MAGNITUDES = ("uniform", "exponential")


def planted_dictionary(d_in: int, n_features: int, seed: int = 0, near_orthogonal: bool = False,
                       steps: int = 300) -> torch.Tensor:
    """`n_features` unit-norm directions in R^d_in, rows of a [n_features, d_in] tensor.

    Random directions by default (pairwise |cos| around 1/sqrt(d_in), with a tail). With
    `near_orthogonal`, exactly orthogonal when n_features <= d_in, otherwise spread out by
    gradient descent on the squared off-diagonal Gram entries (close to a tight frame).
    """
    if d_in < 1 or n_features < 1:
        raise ValueError("d_in and n_features must be at least 1.")
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_features, d_in, generator=g, dtype=torch.float64)
    if near_orthogonal and n_features <= d_in:
        q, _ = torch.linalg.qr(D.T)
        D = q.T[:n_features]
    elif near_orthogonal:
        D = D / D.norm(dim=1, keepdim=True)
        D.requires_grad_(True)
        opt = torch.optim.Adam([D], lr=0.01)
        eye = torch.eye(n_features, dtype=D.dtype)
        for _ in range(steps):
            U = D / D.norm(dim=1, keepdim=True)
            loss = ((U @ U.T - eye) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        D = D.detach()
    D = D / D.norm(dim=1, keepdim=True)
    return D.float()


def sample_codes(n: int, n_features: int, k_active: Optional[int] = None,
                 p_active: Optional[float | torch.Tensor] = None, magnitude: str = "uniform",
                 low: float = 1.0, high: float = 3.0, generator: Optional[torch.Generator] = None
                 ) -> torch.Tensor:
    """Sparse non-negative codes [n, n_features]. Exactly `k_active` features per row (chosen
    uniformly), or each feature independently with probability `p_active` (a float, or a
    [n_features] tensor for features of different frequencies). Magnitudes: 'uniform' on
    [low, high], or 'exponential': low plus an exponential with mean high - low."""
    if (k_active is None) == (p_active is None):
        raise ValueError("Give exactly one of k_active and p_active.")
    if magnitude not in MAGNITUDES:
        raise ValueError(f"Magnitude '{magnitude}' is unknown; use one of {', '.join(MAGNITUDES)}.")

    def draw(*shape):
        if magnitude == "uniform":
            return low + (high - low) * torch.rand(*shape, generator=generator)
        return low + torch.empty(*shape).exponential_(1.0 / max(high - low, 1e-12), generator=generator)

    if k_active is not None:
        if not 0 <= k_active <= n_features:
            raise ValueError(f"k_active must be between 0 and {n_features}.")
        idx = _distinct_indices(n, n_features, k_active, generator)
        return torch.zeros(n, n_features).scatter_(1, idx, draw(n, k_active))
    p = torch.as_tensor(p_active, dtype=torch.float32).expand(n_features)
    if (p < 0).any() or (p > 1).any():
        raise ValueError("p_active must lie in [0, 1].")
    mask = (torch.rand(n, n_features, generator=generator) < p).float()
    return mask * draw(n, n_features)


def _distinct_indices(n: int, n_features: int, k: int, generator) -> torch.Tensor:
    """[n, k] feature indices, distinct within each row, uniform over k-subsets."""
    if 2 * k > n_features:  # dense: rank random keys
        return torch.rand(n, n_features, generator=generator).topk(k, dim=1).indices
    idx = torch.randint(0, n_features, (n, k), generator=generator)
    while True:  # redraw rows with a repeat (rare when k << n_features)
        s = idx.sort(dim=1).values
        bad = (s[:, 1:] == s[:, :-1]).any(1).nonzero().flatten()
        if bad.numel() == 0:
            return idx
        idx[bad] = torch.randint(0, n_features, (bad.numel(), k), generator=generator)


def sparse_activations(dictionary: torch.Tensor, n: int, k_active: Optional[int] = None,
                       p_active: Optional[float | torch.Tensor] = None, seed: int = 0,
                       magnitude: str = "uniform", low: float = 1.0, high: float = 3.0,
                       noise_std: float = 0.0, offset: Optional[torch.Tensor] = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """x [n, d_in] = codes @ dictionary (+ offset + Gaussian noise), and the true codes
    [n, n_features] (dense: keep n moderate, or use `synthetic_batches`)."""
    g = torch.Generator().manual_seed(seed)
    codes = sample_codes(n, dictionary.shape[0], k_active, p_active, magnitude, low, high, g)
    x = codes @ dictionary.float()
    if offset is not None:
        x = x + offset
    if noise_std > 0:
        x = x + noise_std * torch.randn(x.shape, generator=g)
    return x, codes


def synthetic_batches(dictionary: torch.Tensor, batch_size: int, n_batches: int, seed: int = 0,
                      **kwargs) -> Iterator[torch.Tensor]:
    """Fresh batches x [batch_size, d_in] generated on the fly (arguments as sparse_activations)."""
    for i in range(n_batches):
        yield sparse_activations(dictionary, batch_size, seed=seed * 1_000_003 + i, **kwargs)[0]


@torch.no_grad()
def recovery(true_FD: torch.Tensor, learned_GD: torch.Tensor) -> tuple[float, torch.Tensor]:
    """For each true direction, the best (signed) cosine with any learned direction (rows).
    Returns the mean over true directions and the per-direction values [F]; 1.0 is perfect."""
    t = true_FD.detach().float().cpu()
    t = t / t.norm(dim=1, keepdim=True).clamp(min=1e-12)
    l = learned_GD.detach().float().cpu()
    l = l / l.norm(dim=1, keepdim=True).clamp(min=1e-12)
    best = (t @ l.T).max(dim=1).values
    return float(best.mean()), best
