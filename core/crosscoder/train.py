"""Training a crosscoder, one step at a time, on paired activation batches x [B, M, D].

    model = Crosscoder(CrosscoderConfig(d_in=640, d_latent=8192, architecture="batchtopk"), seed=0)
    trainer = CrosscoderTrainer(model, CrosscoderTrainConfig(total_steps=20_000))
    for x_BMD in batches:                       # base and variant activations, same tokens
        metrics = trainer.train_step(x_BMD)     # plain floats: loss, mse_base, fve_variant, l0, ...
        if trainer.done:
            break
    state = trainer.state_dict()                # tensors + JSON-able meta: exact resume

Adam with the learning-rate schedule of the SAE trainer (`core.dictionaries.train.lr_factor`:
linear warm-up, constant, linear decay to zero), the L1 coefficient rising linearly from zero over
the first `l1_warmup_fraction` of training (Anthropic's crosscoder recipe; 'l1' only), gradient
clipping. Before the first step the trainer estimates each model's input scale and sets the
decoder biases to the batch mean. Nothing in a step is random: the run is a function of the
model's initial weights (its seed) and the batches.

The job wrapper drives `train_step`, reads `step`, `total_steps`, `tokens` and `done`, emits
the metrics, and checkpoints `state_dict()` (model weights included, so a fresh trainer over a
fresh `Crosscoder(cfg)` continues exactly with `load_state_dict`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Optional

import torch

from core.crosscoder.model import Crosscoder, CrosscoderConfig, CrosscoderError
from core.dictionaries.base import check_fields, known_fields, option
from core.dictionaries.train import lr_factor


@dataclass
class CrosscoderTrainConfig:
    """How to train a crosscoder. Every field is documented (see `describe`)."""

    total_steps: int = option(10_000, help="Optimizer steps; the learning-rate decay and the L1 "
                              "warm-up are fractions of this.", min=1, unit="steps")
    batch_size: int = option(4096, help="Paired tokens per step (for whoever builds the batches; "
                             "the trainer takes what it is given).", min=1, unit="tokens")
    lr: Optional[float] = option(None, help="Peak Adam learning rate. Empty: 2e-4 / sqrt(d_latent "
                                 "/ 16384), the SAE trainer's default (Gao et al. 2024).",
                                 min=1e-8, max=1.0)
    warmup_steps: int = option(100, help="Steps over which the learning rate rises linearly to lr.",
                               min=0, unit="steps")
    decay_start: float = option(0.8, help="Fraction of training after which the learning rate falls "
                                "linearly to zero at the end. 1.0: no decay.", min=0.0, max=1.0)
    l1_warmup_fraction: float = option(0.05, help="'l1': fraction of training over which the L1 "
                                       "coefficient rises linearly from zero.", min=0.0, max=1.0)
    adam_beta1: float = option(0.9, help="Adam beta1.", min=0.0, max=0.9999)
    adam_beta2: float = option(0.999, help="Adam beta2.", min=0.0, max=0.99999)
    grad_clip: float = option(1.0, help="Clip the gradient norm to this. 0: no clipping.", min=0.0)
    seed: int = option(0, help="Seed of the crosscoder's initialisation and of the data order "
                       "(for whoever builds them: Crosscoder(cfg, seed)).", min=0)
    normalize_inputs: bool = option(True, help="Before the first step, estimate each model's "
                                    "input_scale from the first batch (mean squared norm d_in). "
                                    "Turn off when continuing a trained crosscoder.")
    init_b_dec: str = option("mean", help="Before the first step, set each model's decoder bias to "
                             "the mean of the first batch, or leave it ('none').",
                             choices=("mean", "none"))

    def validate(self) -> "CrosscoderTrainConfig":
        check_fields(self)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CrosscoderTrainConfig":
        return cls(**known_fields(cls, data))

    def resolved_lr(self, d_latent: int) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(d_latent / 16384)


class CrosscoderTrainer:
    """Adam on a Crosscoder, one `train_step(x_BMD)` at a time (see the module docstring)."""

    def __init__(self, model: Crosscoder, cfg: CrosscoderTrainConfig):
        try:
            cfg.validate()
        except ValueError as exc:
            raise CrosscoderError(f"The training settings are invalid: {exc}",
                                  "Correct the setting and try again.")
        self.model, self.cfg = model, cfg
        self.total_steps = cfg.total_steps
        self.peak_lr = cfg.resolved_lr(model.d_latent)
        self.opt = torch.optim.Adam(model.parameters(), lr=self.peak_lr,
                                    betas=(cfg.adam_beta1, cfg.adam_beta2))
        self.step = 0  # optimizer steps taken
        self.tokens = 0  # paired tokens trained on
        self.lr = 0.0
        self.l1_factor = 0.0
        model.train()

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    def l1_warmup(self, step: int) -> float:
        warm = self.cfg.l1_warmup_fraction * self.total_steps
        return min(1.0, (step + 1) / warm) if warm > 0 else 1.0

    def train_step(self, x: torch.Tensor) -> dict:
        """One optimizer step on paired activations x [B, M, D]; returns this step's metrics
        (plain floats, see `batch_metrics`)."""
        model, cfg = self.model, self.cfg
        model.check_input(x)
        x = x.reshape(-1, model.n_models, model.d_in).to(device=model.W_enc.device)
        if x.shape[0] == 0:
            raise CrosscoderError("The batch holds no tokens.", "Check the paired activation cache.")
        if self.step == 0:
            self.prepare(x)
        model.train()
        self.lr = self.peak_lr * lr_factor(self.step, self.total_steps, cfg.warmup_steps, cfg.decay_start)
        for group in self.opt.param_groups:
            group["lr"] = self.lr
        self.l1_factor = self.l1_warmup(self.step)
        out = model.loss(x, l1_factor=self.l1_factor)
        if not torch.isfinite(out["loss"]):
            raise CrosscoderError(f"Training diverged at step {self.step:,} (the loss is not finite).",
                                  "Lower the learning rate, or turn on input normalization.")
        self.opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        self.opt.step()
        model.after_step(out["feature_acts"].detach())
        self.step += 1
        self.tokens += x.shape[0]
        return {"step": self.step, "tokens": self.tokens, "lr": self.lr, **batch_metrics(model, out)}

    @torch.no_grad()
    def prepare(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation from the first batch."""
        if self.cfg.normalize_inputs:
            self.model.set_input_scales(x)
        if self.cfg.init_b_dec == "mean":
            self.model.init_b_dec(x)

    # -- checkpoints ---------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Model weights and buffers ('model.*'), dead-latent counters and Adam moments
        ('opt.<i>.<key>'), as plain contiguous CPU tensors (safetensors can store them)."""
        tensors = {f"model.{n}": getattr(self.model, n).detach().cpu().clone()
                   for n in self.model.tensor_names()}
        tensors["model.tokens_since_fired"] = self.model.tokens_since_fired.detach().cpu().clone()
        for i, p in enumerate(self.model.parameters()):
            for key, value in self.opt.state.get(p, {}).items():
                tensors[f"opt.{i}.{key}"] = value.detach().cpu().clone().reshape(value.shape)
        return {k: v.contiguous() for k, v in tensors.items()}

    def state_meta(self) -> dict:
        """JSON-able: step, tokens, the input scales, and both configs (for checks on resume)."""
        return {"step": self.step, "tokens": self.tokens, "input_scale": list(self.model.cfg.input_scale),
                "model_cfg": self.model.cfg.to_dict(), "train_cfg": self.cfg.to_dict()}

    def state_dict(self) -> dict:
        """{'tensors': state_tensors(), 'meta': state_meta()}: everything an exact resume needs."""
        return {"tensors": self.state_tensors(), "meta": self.state_meta()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` (or from {'tensors': ..., 'meta': ...} read back from a
        safetensors file and a JSON file): model weights, counters, Adam moments, step."""
        try:
            tensors, meta = state["tensors"], state["meta"]
            step, tokens = int(meta["step"]), int(meta["tokens"])
            scales = [float(s) for s in meta["input_scale"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CrosscoderError(f"The training state is incomplete ({exc.__class__.__name__}: {exc}).",
                                  "Resume from another checkpoint, or start the run again.")
        saved = meta.get("model_cfg") or {}
        for key in ("d_in", "d_latent", "n_models", "architecture"):
            if key in saved and saved[key] != getattr(self.model.cfg, key):
                raise CrosscoderError(f"The checkpoint is of a crosscoder with {key} = {saved[key]!r}, "
                                      f"this one has {getattr(self.model.cfg, key)!r}.",
                                      "Resume with the settings the run was started with.")
        if len(scales) != self.model.n_models:
            raise CrosscoderError(f"The checkpoint has {len(scales)} input scales for "
                                  f"{self.model.n_models} models.", "Resume from another checkpoint.")
        model_tensors = {k[len("model."):]: v for k, v in tensors.items()
                         if k.startswith("model.") and k != "model.tokens_since_fired"}
        self.model.fill(model_tensors, "the checkpoint")
        device = self.model.W_enc.device
        if "model.tokens_since_fired" in tensors:
            self.model.tokens_since_fired.copy_(tensors["model.tokens_since_fired"].to(device))
        self.model.cfg.input_scale = scales
        self.opt.state.clear()
        for i, p in enumerate(self.model.parameters()):
            moments = {key.split(".", 2)[2]: value.to(device) for key, value in tensors.items()
                       if key.startswith(f"opt.{i}.")}
            if moments:
                if "step" in moments:
                    moments["step"] = moments["step"].cpu()  # unfused Adam counts on the CPU
                self.opt.state[p] = moments
        self.step, self.tokens = step, tokens
        self.model.train()


@torch.no_grad()
def batch_metrics(model: Crosscoder, out: dict) -> dict:
    """Per-step numbers from a `Crosscoder.loss` output, as plain floats: loss; per model
    ('mse_<name>', 'fve_<name>'): squared error (normalized space, summed over d_in, mean over
    tokens) and fraction of variance explained (1 - error / variance around the batch mean);
    l0 (active latents per token); dead_fraction; l1_penalty or aux, and threshold (BatchTopK)."""
    x_s, x_hat_s, f = out["x_s"].float(), out["x_hat_s"].float(), out["feature_acts"].float()
    err_M = (x_s - x_hat_s).pow(2).sum((0, 2))
    var_M = (x_s - x_s.mean(0)).pow(2).sum((0, 2)).clamp(min=1e-12)
    m = {"loss": float(out["loss"].detach())}
    for i, name in enumerate(model.cfg.model_names):
        m[f"mse_{name}"] = float(out["mse"][i].detach())
        m[f"fve_{name}"] = float(1 - err_M[i] / var_M[i])
    m["l0"] = float((f > 0).float().sum(-1).mean())
    m["dead_fraction"] = model.dead_fraction()
    for key in ("l1_penalty", "aux"):
        if key in out:
            m[key] = float(out[key].detach())
    if model.cfg.architecture == "batchtopk":
        m["threshold"] = float(model.threshold.float().mean())
    return m


@torch.no_grad()
def evaluate(model: Crosscoder, batches: Iterable[torch.Tensor], max_batches: Optional[int] = None) -> dict:
    """Inference-mode quality over paired batches x [B, M, D] (BatchTopK uses its threshold):
    per model 'fve_<name>' (against each model's overall mean) and 'mse_<name>' (normalized
    space), l0, dead_fraction (latents that never fired here), and the per-latent firing
    frequency as a list."""
    was_training = model.training
    model.eval()
    M, F = model.n_models, model.d_latent
    n, sum_x, sum_sq, sse, l0 = 0, torch.zeros(M, model.d_in, dtype=torch.float64), \
        torch.zeros(M, dtype=torch.float64), torch.zeros(M, dtype=torch.float64), 0.0
    fires = torch.zeros(F, dtype=torch.float64)
    try:
        for i, x in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x_s = model.scale_in(x.to(model.W_enc.device)).reshape(-1, M, model.d_in)
            f = model.activation(model.pre_activation(x_s))
            x_hat_s = model.decode_scaled(f)
            x64 = x_s.double().cpu()
            sum_x += x64.sum(0)
            sum_sq += x64.pow(2).sum((0, 2))
            sse += (x64 - x_hat_s.double().cpu()).pow(2).sum((0, 2))
            active = f > 0
            fires += active.sum(0).double().cpu()
            l0 += float(active.sum())
            n += x_s.shape[0]
    finally:
        model.train(was_training)
    if n == 0:
        raise CrosscoderError("There were no activations to evaluate on.", "Check the paired activation cache.")
    total = sum_sq - sum_x.pow(2).sum(-1) / n
    out = {"n": n, "l0": l0 / n, "dead_fraction": float((fires == 0).double().mean()),
           "frequency": (fires / n).tolist()}
    for i, name in enumerate(model.cfg.model_names):
        out[f"fve_{name}"] = float(1 - sse[i] / max(float(total[i]), 1e-30))
        out[f"mse_{name}"] = float(sse[i] / n)
    return out


def describe_settings() -> dict[str, list[dict]]:
    """The documented fields of both configs, for a form: {'crosscoder': [...], 'training': [...]}."""
    from core.dictionaries.base import describe

    return {"crosscoder": describe(CrosscoderConfig), "training": describe(CrosscoderTrainConfig)}


__all__ = ["CrosscoderTrainConfig", "CrosscoderTrainer", "batch_metrics", "evaluate", "describe_settings"]
