"""Write a token-mode activation cache from tensors, in the format core.activations.extract
writes, so feature-index tests and benchmarks need no teacher run."""

import json
from pathlib import Path

import torch
from safetensors.torch import save

from core.activations import CACHE_FORMAT


def write_token_cache(folder: Path, acts: torch.Tensor, doc_index: torch.Tensor, position: torch.Tensor,
                      token_id: torch.Tensor, hook: str = "resid_post.6", docs_per_shard: int = 0,
                      bos_id: int = 1) -> Path:
    """Rows must be grouped by document (as extract writes them). Shards hold whole documents:
    `docs_per_shard` documents each (0: one shard)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_docs = int(doc_index.max()) + 1
    per = docs_per_shard or n_docs
    shards, total, total_sq = [], torch.zeros(acts.shape[1], dtype=torch.float64), None
    total_sq = torch.zeros_like(total)
    for i, first in enumerate(range(0, n_docs, per)):
        rows = ((doc_index >= first) & (doc_index < first + per)).nonzero().flatten()
        data = {"acts": acts[rows].contiguous(), "doc_index": doc_index[rows].long(),
                "position": position[rows].to(torch.int32), "token_id": token_id[rows].long(),
                "stat_sum": acts[rows].double().sum(0), "stat_sumsq": acts[rows].double().pow(2).sum(0)}
        total += data["stat_sum"]
        total_sq += data["stat_sumsq"]
        blob = save(data)
        name = f"shard-{i:05d}.safetensors"
        (folder / name).write_bytes(blob)
        shards.append({"file": name, "rows": len(rows), "bytes": len(blob),
                       "documents": sorted(set(data["doc_index"].tolist()))})
    n = acts.shape[0]
    mean = total / n
    std = (total_sq / n - mean * mean).clamp(min=0).sqrt()
    (folder / "stats.safetensors").write_bytes(save({"mean": mean.float(), "std": std.float(),
                                                     "count": torch.tensor([n])}))
    key = {"model": {"name": "synthetic", "source": "test", "fingerprint": "0", "n_layers": 8,
                     "d_model": acts.shape[1]},
           "hook": hook, "settings": {"mode": "tokens"}, "corpus": f"synthetic-{n}-{n_docs}"}
    manifest = {"format": CACHE_FORMAT, "key": key, "hook": hook, "mode": "tokens", "dtype": "float32",
                "tokenizer": {"class": "synthetic", "vocab_size": int(token_id.max()) + 1, "bos_id": bos_id},
                "d_model": acts.shape[1], "n_documents": n_docs,
                "document_ids": [f"doc-{i}" for i in range(n_docs)], "labels": [None] * n_docs,
                "n_rows": n, "n_tokens": n, "shards": shards, "complete": True, "created": "synthetic"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def synthetic_token_data(n_tokens: int, d_in: int, D: torch.Tensor, k_active: int = 8, vocab: int = 20_000,
                         doc_length: int = 200, seed: int = 0):
    """Tokens whose activations are sparse sums of rows of D (plus a little noise), grouped in
    documents of `doc_length`; token ids Zipf-distributed, each token id favouring a few features."""
    g = torch.Generator().manual_seed(seed)
    F = D.shape[0]
    ranks = torch.arange(1, vocab + 1, dtype=torch.float64)
    token_id = torch.multinomial(1 / ranks, n_tokens, replacement=True, generator=g) + 3
    favourite = torch.randint(0, F, (vocab + 3, 2), generator=g)
    feats = torch.randint(0, F, (n_tokens, k_active), generator=g)
    feats[:, :2] = favourite[token_id]
    mags = 1 + 2 * torch.rand(n_tokens, k_active, generator=g)
    acts = torch.zeros(n_tokens, d_in)
    for j in range(k_active):
        acts += mags[:, j:j + 1] * D[feats[:, j]]
    acts += 0.05 * torch.randn(n_tokens, d_in, generator=g)
    doc_index = torch.arange(n_tokens) // doc_length
    position = torch.arange(n_tokens) % doc_length + 1
    return acts, doc_index, position, token_id
