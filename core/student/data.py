"""Training data for a student: token ids per document, the teacher's targets (document
vectors, or every token's residual), z-normalization statistics from the training split only,
and the order documents are visited in (a pure function of seed and epoch, so a resume needs
only the step)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from core.activations import pad_batch
from core.features.scoring import Reference
from core.similarity import zscore

EPS = 1e-6
CHUNK_ROWS = 65_536  # rows summed at a time in float64
# Batches sorted by length within pools of this many batches. On the mixed demo corpus (median 29
# tokens, 10% over 98) pools of 8 pad the tokens 1.41x and the attention 2.29x; pools of 32,
# 1.08x and 1.23x.
LENGTH_POOL = 32


@dataclass
class StudentData:
    """Documents [N] with their token ids and z-normalized targets."""

    tokens: list[list[int]]  # teacher token ids per document, BOS first
    doc_z: torch.Tensor  # [N, D] z-normalized document vectors (the pooled targets)
    token_z: Optional[list[torch.Tensor]]  # per document [n_content, D], token-target mode only
    content: list[torch.Tensor]  # token-target mode: per document the positions of its rows

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, index: Sequence[int], pad_id: int, with_tokens: bool = True) -> dict:
        """Padded ids/mask [B, T], document targets [B, D], and when the data has them the
        token targets [N, D] of the positions that count, each at (token_row, token_pos) of the
        padded batch: only those rows, so the loss and the output layer skip the padding."""
        ids, mask = pad_batch([self.tokens[i] for i in index], pad_id)
        out = {"ids": ids, "mask": mask, "doc": self.doc_z[list(index)]}
        if self.token_z is not None and with_tokens:
            out["token_z"] = torch.cat([self.token_z[i] for i in index])
            out["token_row"] = torch.cat([torch.full((len(self.content[i]),), row, dtype=torch.long)
                                          for row, i in enumerate(index)])
            out["token_pos"] = torch.cat([self.content[i] for i in index]).long()
        return out


def document_reference(rows, source: str, hook: str) -> Reference:
    """Per-dimension mean/std (population std, as the caches' stats) of the rows of a tensor
    [N, D] or of a list of them (a token corpus: gigabytes, so never concatenated), summed in
    float64 a part at a time."""
    parts = list(rows.split(CHUNK_ROWS)) if torch.is_tensor(rows) else list(rows)
    n = sum(len(p) for p in parts)
    total = total_sq = torch.zeros(parts[0].shape[-1], dtype=torch.float64)
    group, size = [], 0
    for k, part in enumerate(parts):
        group.append(part)
        size += len(part)
        if size >= CHUNK_ROWS or k == len(parts) - 1:
            x = torch.cat(group).double()
            total, total_sq = total + x.sum(0), total_sq + x.pow(2).sum(0)
            group, size = [], 0
    mean = total / max(n, 1)
    std = (total_sq / max(n, 1) - mean.pow(2)).clamp(min=0).sqrt()
    return Reference(mean.float(), std.float(), source, hook, n)


def pooled_targets(cache, doc_ids: Sequence[str]) -> torch.Tensor:
    """Rows of a pooled cache in the order of `doc_ids`."""
    where = {d: i for i, d in enumerate(cache.document_ids)}
    return cache.pooled()[[where[d] for d in doc_ids]]


def token_targets(cache, doc_ids: Sequence[str]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per document (in the order of `doc_ids`): its token rows [n, D] by position, and those
    positions (BOS is not in the cache, so positions are where the student's content mask is).
    A shard holds each document's rows in one run, so a shard splits at its runs."""
    where = {d: i for i, d in enumerate(cache.document_ids)}
    rows: dict[int, list] = {}
    for data in cache.shards():
        docs, counts = torch.unique_consecutive(data["doc_index"], return_counts=True)
        counts = counts.tolist()
        for doc, pos, acts in zip(docs.tolist(), data["position"].long().split(counts),
                                  data["acts"].float().split(counts)):
            rows.setdefault(doc, []).append((pos, acts))
    acts, positions = [], []
    d_model = int(cache.manifest["d_model"])
    for doc_id in doc_ids:
        parts = rows.get(where[doc_id], [])
        if not parts:
            pos, x = torch.zeros(0, dtype=torch.long), torch.zeros(0, d_model)
        elif len(parts) == 1:  # the usual case: views of the shard, no copy
            pos, x = parts[0]
        else:
            pos, x = torch.cat([p for p, _ in parts]), torch.cat([a for _, a in parts])
        if len(pos) > 1 and not bool((pos[1:] > pos[:-1]).all()):
            order = pos.argsort()
            pos, x = pos[order], x[order]
        positions.append(pos)
        acts.append(x)
    return acts, positions


def build_data(tokens: list[list[int]], pooled: torch.Tensor, ref: Reference,
               token_acts: Optional[list[torch.Tensor]] = None,
               token_positions: Optional[list[torch.Tensor]] = None,
               token_ref: Optional[Reference] = None) -> StudentData:
    doc_z = zscore(pooled.float(), ref.mean, ref.std, EPS)
    if token_acts is None:
        return StudentData(tokens, doc_z, None, [])
    token_z = [zscore(x, token_ref.mean, token_ref.std, EPS) for x in token_acts]
    return StudentData(tokens, doc_z, token_z, token_positions)


def epoch_order(n: int, batch_size: int, seed: int, epoch: int, lengths: Sequence[int],
                pool: int = LENGTH_POOL) -> list[list[int]]:
    """The batches of one epoch: shuffled, then sorted by length within pools of `pool` batches
    (less padding), then the batches themselves shuffled. Depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    batches = []
    for start in range(0, n, batch_size * pool):
        chunk = sorted(perm[start:start + batch_size * pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]
