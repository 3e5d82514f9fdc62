"""Document vectors compared the seed-000 way: z-normalize against a reference, then cosine."""

import torch


def zscore(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return (x - mean) / (std + eps)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = torch.nn.functional.normalize(a.float(), dim=-1)
    b = torch.nn.functional.normalize(b.float(), dim=-1)
    return a @ b.T


def nearest(vectors: torch.Tensor, query: torch.Tensor, k: int = 10,
            exclude: int | None = None) -> list[tuple[int, float]]:
    """Indices and cosines of the k rows of `vectors` closest to `query`, best first."""
    sims = cosine_matrix(query.unsqueeze(0), vectors)[0]
    if exclude is not None:
        sims[exclude] = -float("inf")
    k = min(k, len(sims) - (exclude is not None))
    values, idx = sims.topk(max(k, 0))
    return [(int(i), float(v)) for i, v in zip(idx, values)]
