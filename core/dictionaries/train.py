"""Training and evaluating SAEs: one Adam loop for every architecture.

    sae = create(SAEConfig(d_in=640, d_sae=8192, architecture="topk", k=32))
    batches = activation_batches(cache, batch_size=4096, seed=0, epochs=4)
    final = train_sae(sae, batches, TrainConfig(total_tokens=2_000_000), on_metrics=print)
    report = evaluate(sae, activation_batches(cache, 4096, seed=1))

A plain function of (sae, batches, settings): the jobs framework wraps it with checkpoints.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator, Optional

import torch

from core.dictionaries.base import (DictionaryError, SAE, check_fields, describe, estimate_input_scale,
                                    known_fields, option)
from core.errors import CacheError
from core.progress import TaskState


@dataclass
class TrainConfig:
    """How to train an SAE. Every field is documented (see `describe(TrainConfig)`)."""

    lr: Optional[float] = option(None, help="Peak Adam learning rate. Empty: 2e-4 / sqrt(d_sae / "
                                 "16384), the scaling rule of Gao et al. 2024 (1.6e-3 for 256 "
                                 "features, 2e-4 for 16k).", min=1e-8, max=1.0)
    batch_size: int = option(4096, help="Activations (tokens) per step.", min=1, max=1_000_000,
                             unit="tokens")
    total_tokens: int = option(10_000_000, help="Training length. Steps = total_tokens / batch_size; "
                               "training also ends when the data runs out.", min=1, unit="tokens")
    warmup_steps: int = option(100, help="Steps over which the learning rate rises linearly from "
                               "near zero to lr.", min=0, unit="steps")
    decay_start: float = option(0.8, help="Fraction of training after which the learning rate "
                                "falls linearly to zero at the end. 1.0: no decay.", min=0.0, max=1.0)
    l1_warmup_fraction: float = option(0.05, help="ReLU SAE: fraction of training over which the "
                                       "L1 coefficient rises linearly from zero (Anthropic, 2024).",
                                       min=0.0, max=1.0)
    adam_beta1: float = option(0.9, help="Adam beta1.", min=0.0, max=0.9999)
    adam_beta2: float = option(0.999, help="Adam beta2.", min=0.0, max=0.99999)
    grad_clip: float = option(1.0, help="Clip the gradient norm to this. 0: no clipping.", min=0.0)
    seed: int = option(0, help="Seed for the SAE's initialisation and the order of the data "
                       "(for whoever builds them from this config: create(cfg, seed), "
                       "activation_batches(..., seed)).", min=0)
    log_every: int = option(50, help="Steps between metric reports.", min=1, unit="steps")
    normalize_inputs: bool = option(True, help="Before the first step, set the SAE's input_scale "
                                    "so scaled inputs have mean squared norm d_in (from the first "
                                    "batch). Turn off when continuing a trained SAE.")
    init_b_dec: str = option("median", help="Before the first step, set the decoder bias to the "
                             "geometric median or mean of the first batch, or leave it ('none').",
                             choices=("median", "mean", "none"))

    def validate(self) -> "TrainConfig":
        check_fields(self)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return cls(**known_fields(cls, data))

    def resolved_lr(self, d_sae: int) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(d_sae / 16384)

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(self.total_tokens / self.batch_size))


def lr_factor(step: int, total_steps: int, warmup_steps: int, decay_start: float) -> float:
    """Multiplier of the peak learning rate at 0-based `step`: linear warm-up over the first
    `warmup_steps` ((step + 1) / warmup_steps), then 1, then from step decay_start * total_steps
    a linear fall that reaches zero one step after the last."""
    factor = 1.0
    if warmup_steps > 0 and step < warmup_steps:
        factor = (step + 1) / warmup_steps
    decay_from = int(decay_start * total_steps)
    if decay_start < 1.0 and step >= decay_from:
        factor = min(factor, max(total_steps - step, 0) / max(total_steps - decay_from, 1))
    return factor


MetricsCallback = Callable[[dict], None]


@torch.no_grad()
def batch_metrics(sae: SAE, x: torch.Tensor, out: dict) -> dict:
    """Reconstruction and sparsity on one training batch (as plain floats)."""
    x = x.float()
    f = out["feature_acts"].float()
    err = (x - out["x_hat"].float()).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum().clamp(min=1e-12)
    m = {
        "loss": float(out["loss"].detach()),
        "mse": float(out["mse"].detach()),
        "explained_variance": float(1 - err / total),
        "l0": float((f > 0).float().sum(-1).mean()),
        "l1": float(f.abs().sum(-1).mean()),
        "dead_fraction": sae.dead_fraction(),
    }
    for key in ("l1_penalty", "aux"):
        if key in out:
            m[key] = float(out[key].detach())
    if hasattr(sae, "threshold"):
        m["threshold"] = float(sae.threshold.float().mean())
    return m


class Trainer:
    """The Adam loop every architecture shares, one step at a time, so a job can pause, save a
    checkpoint and resume exactly: `state_tensors()` + `state_meta()` hold everything a resumed
    run needs (moments, step, data position, dead-feature counters, RNG).

    Data parallel (torch.distributed initialised, world size W > 1): every rank reads the same
    global batch and trains on its 1/W slice; gradients are summed across ranks with each
    rank's loss weighted by its share of rows, so the step equals the single-process step on
    the whole batch. Dead-feature counters and BatchTopK's threshold are synchronised too.
    (BatchTopK's top-k then runs per rank, over B/W rows, not over the whole batch.)
    """

    def __init__(self, sae: SAE, cfg: TrainConfig):
        try:
            cfg.validate()
        except ValueError as exc:
            raise DictionaryError(f"The training settings are invalid: {exc}",
                                  "Correct the setting and try again.")
        self.sae, self.cfg = sae, cfg
        self.total_steps = cfg.total_steps
        self.peak_lr = cfg.resolved_lr(sae.d_sae)
        self.opt = _adam(sae, self.peak_lr, (cfg.adam_beta1, cfg.adam_beta2))
        self.step = 0  # optimizer steps taken
        self.tokens = 0  # global rows trained on
        self.batches = 0  # batches consumed from the data (the data position)
        self.lr = 0.0
        self.world, self.rank = _world()
        sae.train()

    @property
    def done(self) -> bool:
        return self.tokens >= self.cfg.total_tokens

    def train_step(self, x: torch.Tensor) -> dict:
        """One optimizer step on a global batch x [B, d_in]; returns the loss dict of this rank."""
        sae, cfg = self.sae, self.cfg
        if x.shape[-1] != sae.d_in:
            raise DictionaryError(f"The activations have width {x.shape[-1]}, but the SAE reads "
                                  f"d_in = {sae.d_in}.", "Create the SAE with d_in equal to the "
                                  "hidden size at the hook the activations come from.")
        x = x.reshape(-1, sae.d_in).to(device=sae.W_enc.device, dtype=sae.W_enc.dtype)
        n_global = x.shape[0]
        if self.step == 0:
            _prepare(sae, x, cfg)  # every rank sees the same global batch: same initialisation
        local = x.tensor_split(self.world)[self.rank] if self.world > 1 else x
        self.lr = self.peak_lr * lr_factor(self.step, self.total_steps, cfg.warmup_steps, cfg.decay_start)
        for group in self.opt.param_groups:
            group["lr"] = self.lr
        warm = cfg.l1_warmup_fraction * self.total_steps
        out = sae.loss(local, sparsity_factor=min(1.0, (self.step + 1) / warm) if warm > 0 else 1.0)
        if not torch.isfinite(out["loss"]):
            raise DictionaryError(f"Training diverged at step {self.step:,} (the loss is not finite).",
                                  "Lower the learning rate, or turn on input normalization.")
        self.opt.zero_grad(set_to_none=True)
        if self.world > 1:
            (out["loss"] * (local.shape[0] / n_global)).backward()
            _all_reduce_grads(sae)
        else:
            out["loss"].backward()
        if sae.normalize_decoder:
            sae.remove_parallel_grad()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
        self.opt.step()
        if sae.normalize_decoder:
            sae.set_decoder_norm_to_unit()
        before = sae.tokens_since_fired.clone() if self.world > 1 else None
        sae.after_step(out["feature_acts"].detach())
        if self.world > 1:
            _sync_bookkeeping(sae, out["feature_acts"].detach(), before, n_global, self.world)
        self.step += 1
        self.batches += 1
        self.tokens += n_global
        out["x"] = local
        return out

    def metrics(self, out: dict) -> dict:
        return {"step": self.step, "tokens": self.tokens, "lr": self.lr,
                **batch_metrics(self.sae, out["x"], out)}

    # -- checkpoints ---------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Optimizer moments, dead-feature counters and RNG state, as plain tensors (safetensors)."""
        tensors = {"tokens_since_fired": self.sae.tokens_since_fired.detach().cpu().clone(),
                   "rng_cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and self.sae.W_enc.is_cuda:
            tensors["rng_cuda"] = torch.cuda.get_rng_state(self.sae.W_enc.device)
        for i, p in enumerate(self.sae.parameters()):
            for key, value in self.opt.state.get(p, {}).items():
                tensors[f"opt.{i}.{key}"] = value.detach().cpu().clone().reshape(value.shape)
        return {k: v.contiguous() for k, v in tensors.items()}

    def state_meta(self) -> dict:
        return {"step": self.step, "tokens": self.tokens, "batches": self.batches,
                "input_scale": self.sae.cfg.input_scale, "world": self.world}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Continue from a checkpoint: SAE weights are loaded separately (SAE.load)."""
        device = self.sae.W_enc.device
        self.step, self.tokens, self.batches = int(meta["step"]), int(meta["tokens"]), int(meta["batches"])
        self.sae.cfg.input_scale = float(meta["input_scale"])
        self.sae.tokens_since_fired.copy_(tensors["tokens_since_fired"].to(device))
        for i, p in enumerate(self.sae.parameters()):
            moments = {key.split(".", 2)[2]: value.to(device) for key, value in tensors.items()
                       if key.startswith(f"opt.{i}.")}
            if moments:
                if "step" in moments and not self.opt.defaults.get("fused"):
                    moments["step"] = moments["step"].cpu()  # unfused Adam counts on the CPU
                self.opt.state[p] = moments
        torch.set_rng_state(tensors["rng_cpu"])
        if "rng_cuda" in tensors and self.sae.W_enc.is_cuda:
            torch.cuda.set_rng_state(tensors["rng_cuda"], self.sae.W_enc.device)


def _adam(sae: SAE, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Fused Adam (one kernel for all parameters: ~10% faster steps on a CPU) where the device
    and dtype have it, else the default implementation."""
    try:
        return torch.optim.Adam(sae.parameters(), lr=lr, betas=betas, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(sae.parameters(), lr=lr, betas=betas)


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _all_reduce_grads(sae: SAE) -> None:
    import torch.distributed as dist

    grads = [p.grad for p in sae.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective instead of four
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def _sync_bookkeeping(sae: SAE, f_local: torch.Tensor, before: torch.Tensor, n_global: int,
                      world: int) -> None:
    """Make every rank's dead-feature counters (and BatchTopK threshold) what one process that
    saw the whole batch would hold: fired anywhere resets, otherwise the whole batch counts."""
    import torch.distributed as dist

    fired = (f_local.reshape(-1, f_local.shape[-1]) > 0).any(0).to(torch.int32)
    dist.all_reduce(fired, op=dist.ReduceOp.MAX)
    sae.tokens_since_fired.copy_(before + n_global)
    sae.tokens_since_fired[fired.bool()] = 0
    if hasattr(sae, "threshold"):
        dist.all_reduce(sae.threshold)
        sae.threshold /= world


def train_sae(sae: SAE, batch_iter: Iterable[torch.Tensor], cfg: TrainConfig,
              on_metrics: Optional[MetricsCallback] = None, state: Optional[TaskState] = None) -> dict:
    """Train `sae` in place on batches x [B, d_in] until cfg.total_tokens or the data end.

    Adam with linear warm-up and linear decay to zero; unit-norm decoder rows (gradient parallel
    to each row removed, rows renormalised) where the architecture asks for it; dead-feature
    tracking; `on_metrics(dict)` every cfg.log_every steps and at the end with step, tokens, lr,
    loss, mse, explained_variance, l0, l1, dead_fraction (+ l1_penalty / aux / threshold).
    Checks `state` for cancellation every step (raises core.errors.Cancelled) and reports progress.
    Returns the last metrics. (The jobs framework drives a `Trainer` itself, with checkpoints.)
    """
    trainer = Trainer(sae, cfg)
    state = state or TaskState()
    metrics, out, last_report = {}, None, 0.0
    state.report(0, trainer.total_steps, "Starting")
    for x in batch_iter:
        state.check_cancelled()
        out = trainer.train_step(x)
        if trainer.step % cfg.log_every == 0 or trainer.done:
            metrics = trainer.metrics(out)
            if on_metrics is not None:
                on_metrics(metrics)
        now = time.monotonic()
        if now - last_report > 0.1 or trainer.done:
            last_report = now
            state.report(min(trainer.step, trainer.total_steps), trainer.total_steps,
                         f"step {trainer.step:,}/{trainer.total_steps:,}, loss {float(out['loss'].detach()):.4g}")
        if trainer.done:
            break
    if out is None:
        raise DictionaryError("There were no activations to train on.", "Check the activation cache.")
    if metrics.get("step") != trainer.step:  # data ended between log steps: report the last batch
        metrics = trainer.metrics(out)
        if on_metrics is not None:
            on_metrics(metrics)
    ended = trainer.step if not trainer.done else trainer.total_steps  # data may end early
    state.report(ended, ended, f"Finished after {trainer.step:,} steps ({trainer.tokens:,} tokens)")
    return metrics


def _prepare(sae: SAE, x: torch.Tensor, cfg: TrainConfig) -> None:
    """Data-dependent initialisation from the first batch."""
    if cfg.normalize_inputs:
        sae.cfg.input_scale = estimate_input_scale(x)
    if cfg.init_b_dec != "none":
        sae.init_from(x, cfg.init_b_dec)
    if sae.normalize_decoder:
        sae.set_decoder_norm_to_unit()


@torch.no_grad()
def evaluate(sae: SAE, batches: Iterable[torch.Tensor], max_batches: Optional[int] = None,
             bins: int = 30) -> dict:
    """Inference-mode quality over `batches` (BatchTopK uses its threshold): explained_variance
    (over all rows, against the overall mean), mse (original units, summed over d_in), l0,
    dead_fraction (features that never fired here), feature frequencies and their histogram
    over log10(frequency) as counts + edges (never-fired features counted apart)."""
    was_training = sae.training
    sae.eval()
    device, dtype = sae.W_enc.device, sae.W_enc.dtype
    n, sum_x, sum_sq, sse, l0 = 0, None, 0.0, 0.0, 0.0
    fires = torch.zeros(sae.d_sae, dtype=torch.float64)
    try:
        for i, x in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x = x.reshape(-1, sae.d_in).to(device=device, dtype=dtype)
            x_hat, f = sae(x)
            x64 = x.double()
            sum_x = x64.sum(0) if sum_x is None else sum_x + x64.sum(0)
            sum_sq += float(x64.pow(2).sum())
            sse += float((x64 - x_hat.double()).pow(2).sum())
            active = f > 0
            fires += active.sum(0).double().cpu()
            l0 += float(active.sum())
            n += x.shape[0]
    finally:
        sae.train(was_training)
    if n == 0:
        raise DictionaryError("There were no activations to evaluate on.", "Check the activation cache.")
    total = sum_sq - float(sum_x.pow(2).sum()) / n
    freq = fires / n
    live = freq[freq > 0]
    low = math.floor(math.log10(1.0 / n))
    edges = torch.linspace(low, 0.0, bins + 1, dtype=torch.float64)
    counts = torch.histogram(live.log10(), bins=edges).hist if live.numel() else torch.zeros(bins)
    return {
        "n": n,
        "explained_variance": 1.0 - sse / max(total, 1e-30),
        "mse": sse / n,
        "l0": l0 / n,
        "dead_fraction": float((freq == 0).double().mean()),
        "frequency": freq.tolist(),
        "freq_histogram": {"counts": [int(c) for c in counts.tolist()], "edges": edges.tolist(),
                           "never_fired": int((freq == 0).sum())},
    }


def activation_batches(cache, batch_size: int, seed: int = 0, epochs: int = 1,
                       buffer_shards: int = 4, drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Shuffled float32 batches [batch_size, d] of an ActivationCache's rows, with bounded memory:
    each epoch visits the shards in a random order, `buffer_shards` at a time, and shuffles the
    rows within that buffer; leftovers carry into the next buffer. The last batch may be short
    unless `drop_last`."""
    from safetensors import safe_open

    if batch_size < 1 or epochs < 1 or buffer_shards < 1:
        raise ValueError("batch_size, epochs and buffer_shards must be at least 1.")
    g = torch.Generator().manual_seed(seed)
    shards = cache.manifest["shards"]
    carry: Optional[torch.Tensor] = None
    for _ in range(epochs):
        order = torch.randperm(len(shards), generator=g).tolist()
        for start in range(0, len(order), buffer_shards):
            parts = [] if carry is None else [carry]
            for j in order[start:start + buffer_shards]:
                path = cache.folder / shards[j]["file"]
                try:
                    with safe_open(str(path), "pt") as f:
                        parts.append(f.get_tensor("acts").float())
                except Exception as exc:
                    raise CacheError(f"Cache file '{path}' cannot be read ({exc}).",
                                     "The cache was damaged; delete the folder and extract again.")
            buf = torch.cat(parts)
            buf = buf[torch.randperm(buf.shape[0], generator=g)]
            full = buf.shape[0] // batch_size * batch_size
            for i in range(0, full, batch_size):
                yield buf[i:i + batch_size]
            carry = buf[full:] if full < buf.shape[0] else None
    if carry is not None and not drop_last:
        yield carry


__all__ = ["TrainConfig", "Trainer", "lr_factor", "train_sae", "evaluate", "activation_batches", "batch_metrics",
           "describe"]
