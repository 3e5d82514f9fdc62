"""Paired activations with a known answer, for testing and demonstrating crosscoders.

    pair = planted_pair(d_in=32, n_shared=20, n_rotated=4, n_base_only=4, n_variant_only=4, seed=0)
    x_BMD, codes = paired_activations(pair, n=4096, p_active=0.05, seed=1)

Each planted feature has a direction per model (a zero row where the model lacks it); one sparse
code drives both models on the same token: x[:, m] = codes @ directions[:, m]. Kinds, in order:

    shared        the same unit direction in both models
    rotated       shared, but the variant's direction is turned (cosine `rotation_cos`)
    base-only     in the base model only
    variant-only  in the variant only
    weak-base     the variant's direction, present in the base at `weak_scale` of the strength
                  (what an L1 crosscoder tends to call variant-only: Complete Shrinkage)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from core.synthetic import planted_dictionary, sample_codes

KINDS = ("shared", "rotated", "base-only", "variant-only", "weak-base")


@dataclass
class PlantedPair:
    """directions [n_features, 2, d_in] (row [j, m]: feature j in model m, zero where absent),
    kinds [n_features] (one of KINDS)."""

    directions: torch.Tensor
    kinds: list[str]

    def indices(self, kind: str) -> list[int]:
        return [j for j, k in enumerate(self.kinds) if k == kind]


def planted_pair(d_in: int, n_shared: int = 0, n_rotated: int = 0, n_base_only: int = 0,
                 n_variant_only: int = 0, n_weak_base: int = 0, rotation_cos: float = 0.9,
                 weak_scale: float = 0.3, seed: int = 0) -> PlantedPair:
    """Planted features of each kind (see the module docstring). Directions are spread out
    (`core.synthetic.planted_dictionary(near_orthogonal=True)`); a rotated feature's variant
    direction is cos * d + sin * u with u a random unit vector orthogonal to d."""
    counts = {"shared": n_shared, "rotated": n_rotated, "base-only": n_base_only,
              "variant-only": n_variant_only, "weak-base": n_weak_base}
    kinds = [k for k in KINDS for _ in range(counts[k])]
    if not kinds:
        raise ValueError("Plant at least one feature.")
    if not -1.0 <= rotation_cos <= 1.0 or not 0.0 <= weak_scale:
        raise ValueError("rotation_cos must lie in [-1, 1] and weak_scale must not be negative.")
    D = planted_dictionary(d_in, len(kinds), seed=seed, near_orthogonal=True)
    g = torch.Generator().manual_seed(seed + 1)
    dirs = torch.zeros(len(kinds), 2, d_in)
    for j, kind in enumerate(kinds):
        d = D[j]
        base, variant = d, d
        if kind == "rotated":
            u = torch.randn(d_in, generator=g)
            u = u - (u @ d) * d
            u = u / u.norm().clamp(min=1e-12)
            variant = rotation_cos * d + math.sqrt(max(1 - rotation_cos ** 2, 0.0)) * u
        elif kind == "base-only":
            variant = torch.zeros_like(d)
        elif kind == "variant-only":
            base = torch.zeros_like(d)
        elif kind == "weak-base":
            base = weak_scale * d
        dirs[j, 0], dirs[j, 1] = base, variant
    return PlantedPair(dirs, kinds)


def paired_activations(pair: PlantedPair, n: int, p_active: float = 0.05, seed: int = 0,
                       low: float = 1.0, high: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """x [n, 2, d_in] and the true codes [n, n_features]: each feature fires independently with
    probability p_active, magnitude Uniform(low, high), the same code in both models."""
    g = torch.Generator().manual_seed(seed)
    codes = sample_codes(n, pair.directions.shape[0], p_active=p_active, low=low, high=high, generator=g)
    return torch.einsum("nf,fmd->nmd", codes, pair.directions), codes


def paired_batches(pair: PlantedPair, batch_size: int, n_batches: int, seed: int = 0,
                   **kwargs) -> Iterator[torch.Tensor]:
    """Fresh batches x [batch_size, 2, d_in] (arguments as paired_activations)."""
    for i in range(n_batches):
        yield paired_activations(pair, batch_size, seed=seed * 1_000_003 + i, **kwargs)[0]


__all__ = ["KINDS", "PlantedPair", "planted_pair", "paired_activations", "paired_batches"]
