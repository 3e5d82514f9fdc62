"""Helpers both sides of the SAE training benchmark import (torch + safetensors only, so the
SAELens environment can load this file too): the shared activation file, the batch order, and
a timer around the batch iterator.

Both trainers ask their data iterator for the next batch at the start of every step, so the
moment batch i is requested marks the end of step i - 1. `TimedBatches` records those moments;
the timed region runs from the request of batch 2 (step 1 begins: start-up, first-step
initialisation and lazy allocations are over) to the return of the trainer's fit call.
"""

from __future__ import annotations

import json
import time
from typing import Iterator

import torch


def load_split(path: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(train rows [N, d], held-out rows [H, d], metadata) from the file bench_sae.py wrote."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["bench"])
        return f.get_tensor("train"), f.get_tensor("heldout"), meta


def batch_stream(train: torch.Tensor, batch_size: int, n_batches: int, seed: int) -> Iterator[torch.Tensor]:
    """`n_batches` full batches of rows of `train`: each epoch a fresh permutation from one
    seeded generator, rows left over at an epoch's end carried into the next. The same
    arguments give the same batches in either environment (same torch build)."""
    g = torch.Generator().manual_seed(seed)
    n = train.shape[0]
    pending = torch.empty(0, dtype=torch.long)
    for _ in range(n_batches):
        while pending.numel() < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=g)])
        idx, pending = pending[:batch_size], pending[batch_size:]
        yield train[idx]


class TimedBatches:
    """Wraps a batch iterator and records when each batch is requested (perf_counter)."""

    def __init__(self, batches: Iterator[torch.Tensor]):
        self.batches = iter(batches)
        self.requested: list[float] = []

    def __iter__(self) -> "TimedBatches":
        return self

    def __next__(self) -> torch.Tensor:
        self.requested.append(time.perf_counter())
        return next(self.batches)

    def timing(self, end: float, batch_size: int) -> dict:
        """Throughput of steps 1 .. n-1 (step 0 excluded), ended at `end`."""
        starts = self.requested[1:]
        steps = len(starts)
        if steps < 2:
            raise ValueError("Too few steps to time; train for more tokens.")
        ends = starts[1:] + [end]
        step_s = sorted(b - a for a, b in zip(starts, ends))
        seconds = end - starts[0]
        return {"timed_steps": steps, "timed_tokens": steps * batch_size, "seconds": seconds,
                "tokens_per_s": steps * batch_size / seconds,
                "median_step_ms": 1000 * step_s[len(step_s) // 2],
                "tokens_per_s_median_step": batch_size / step_s[len(step_s) // 2]}
