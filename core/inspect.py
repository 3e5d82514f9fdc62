"""What the inspect view shows, computed without Qt: per-token quantities and similar documents."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from core import paths
from core.activations import ActivationCache, ExtractSettings, corpus_hash, document_activations, extract
from core.models import HookPoint, Teacher
from core.progress import TaskState
from core.similarity import nearest, zscore


def auto_cache_folder(teacher: Teacher, documents: Sequence, settings: ExtractSettings) -> Path:
    """A cache folder in the user cache dir, one per (model, corpus, settings)."""
    ids = [d.id for d in documents]
    key = json.dumps([teacher.identity(), corpus_hash(ids, [d.text for d in documents]),
                      settings.key(results_only=False)], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return paths.cache_dir() / "activations" / digest


@dataclass
class CorpusVectors:
    """z-normalized mean-pooled document vectors of a corpus at one layer (seed 000)."""

    ids: list[str]
    raw: torch.Tensor  # [N, D]
    z: torch.Tensor  # [N, D], z-normalized against the corpus itself
    mean: torch.Tensor
    std: torch.Tensor
    cache: ActivationCache

    def neighbours(self, index: int, k: int = 10) -> list[tuple[int, float]]:
        return nearest(self.z, self.z[index], k, exclude=index)

    def neighbours_of(self, vector: torch.Tensor, k: int = 10) -> list[tuple[int, float]]:
        return nearest(self.z, zscore(vector, self.mean, self.std), k)


def corpus_vectors(teacher: Teacher, documents: Sequence, layer: int, max_length: int = 256,
                   state: Optional[TaskState] = None) -> CorpusVectors:
    """Pooled residual vectors at `layer`, extracted once and then read from the cache."""
    settings = ExtractSettings(hook=f"resid_post.{layer}", mode="pooled", max_length=max_length)
    folder = auto_cache_folder(teacher, documents, settings)
    cache = extract(teacher, documents, folder, settings, state)
    raw = cache.pooled()
    mean, std = cache.stats()
    return CorpusVectors(cache.document_ids, raw, zscore(raw, mean, std), mean, std, cache)


@dataclass
class TokenView:
    tokens: list[str]
    values: list[float]  # the per-token quantity (here: residual norm)
    is_bos: list[bool]
    pooled: torch.Tensor  # mean over non-BOS tokens, for comparing with corpus vectors


def token_norms(teacher: Teacher, text: str, layer: int, max_length: int = 1024,
                state: Optional[TaskState] = None) -> TokenView:
    acts = document_activations(teacher, text, HookPoint("resid_post", layer), max_length, state)
    return TokenView(acts.tokens, acts.acts.norm(dim=-1).tolist(), acts.is_bos, acts.pooled())
