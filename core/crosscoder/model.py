"""An acausal two-model crosscoder with shared latents (Lindsey et al., "Sparse Crosscoders for
Cross-Layer Features and Model Diffing", Anthropic 2024), in its L1 form and the BatchTopK form
that Minder, Dumas et al. (2025, "Overcoming Sparsity Artifacts in Crosscoders to Interpret
Chat-Tuning") found to mitigate falsely model-exclusive latents.

Inputs are paired activations x [B, M, D]: model m's activation at the same hook on the same
token (M = 2: a base model and its variant). One latent code is shared by both models; each model
has its own encoder and decoder:

    x_s[b, m]     = x[b, m] * input_scale[m]                   per-model normalization
    pre[b]        = sum_m x_s[b, m] @ W_enc[m] + b_enc           W_enc [M, D, F], b_enc [F]
    f[b]          = ReLU(pre[b])                                 'l1'
    x_hat_s[b, m] = f[b] @ W_dec[:, m] + b_dec[m]                W_dec [F, M, D], b_dec [M, D]
    x_hat[b, m]   = x_hat_s[b, m] / input_scale[m]

With s_j = sum_m ||W_dec[j, m]|| (latent j's decoder norms summed over the models):

- 'l1':        loss = sum_m mean_b ||x_s[b,m] - x_hat_s[b,m]||^2 + l1_coefficient * mean_b sum_j f[b,j] s_j
  (the L1 weighted by the SUM of per-model decoder norms, as Anthropic's model-diffing
  crosscoder; decoders are free, so a model's decoder for a latent can shrink to zero).
- 'batchtopk': in training, keep the k * B largest scores f[b,j] * s_j over the whole batch
  (the values kept are f; ranking by f * s_j makes the choice blind to how a latent splits its
  scale between encoder and decoder); loss = the same squared error + AuxK (dead latents
  reconstruct the residual, Gao et al. 2024). A running average of the smallest kept score is
  the threshold used in eval mode: f[b,j] is kept where f[b,j] * s_j > threshold (a JumpReLU,
  independent of the rest of the batch), as core/dictionaries/batchtopk.py does for SAEs.

Losses are in the normalized space: `input_scale[m]` makes model m's activations have mean
squared norm D (`set_input_scales`, estimated from a sample), so neither model dominates the
loss and decoder norms of the two models can be compared. The weights are saved in that space
with the scales in cfg.json (not folded in: folding would change relative decoder norms
whenever the two models' activation scales differ). `decoder_directions(m)` gives model m's
decoder rows in its own activation units, for steering and ablation.

On disk a crosscoder is a folder with `cfg.json` (the config plus "format") beside
`crosscoder_weights.safetensors` (W_enc, b_enc, W_dec, b_dec, and threshold for BatchTopK).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from core.dictionaries.base import (DTYPES, DictionaryError, check_fields, describe,
                                    estimate_input_scale, known_fields, option)
from core.dictionaries.batchtopk import batch_topk_activation
from core.paths import atomic_write_bytes, atomic_write_text

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "crosscoder_weights.safetensors"
FORMAT = "distillscope-crosscoder/1"
ARCHITECTURES = ("l1", "batchtopk")
ALIASES = {"relu": "l1", "standard": "l1", "relu_l1": "l1", "batch_topk": "batchtopk"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class CrosscoderError(DictionaryError):
    """A crosscoder config, folder or input is invalid or unreadable."""


@dataclass
class CrosscoderConfig:
    """Everything that defines a crosscoder. Written to `cfg.json`; every field is documented
    (`describe(CrosscoderConfig)`)."""

    d_in: int = option(help="Width of each model's activations at the hook (both models' hidden "
                       "size; they must be equal).", min=1, max=1_000_000)
    d_latent: int = option(help="Number of shared latents. Often 8 to 64 times d_in.", min=1,
                           max=10_000_000)
    n_models: int = option(2, help="Number of models read together: a base model and its "
                           "variant.", min=2, max=2)
    architecture: str = option("batchtopk", help="'l1': ReLU with an L1 penalty weighted by the sum "
                               "of the models' decoder norms (Anthropic 2024). 'batchtopk': k "
                               "latents active on average over a batch, a learned threshold at "
                               "inference; fewer falsely model-exclusive latents (Minder et al. "
                               "2025).", choices=ARCHITECTURES)
    k: int = option(32, help="BatchTopK: active latents per token, on average over a batch. "
                    "Ignored by 'l1'.", min=1)
    l1_coefficient: float = option(2.0, help="'l1': weight of the penalty sum_j f_j * sum_m "
                                   "||W_dec[j, m]||. Larger gives fewer active latents and worse "
                                   "reconstruction. Ignored by 'batchtopk'.", min=0.0)
    model_names: list[str] = option(help="Short names of the models, in the order of the M axis "
                                    "(letters, digits, '_', '-', '.'); metrics are named after "
                                    "them.", default_factory=lambda: ["base", "variant"])
    model_sources: list[str] = option(help="Where each model was loaded from (a folder, a file or "
                                      "'bundled'); informational.",
                                      default_factory=lambda: ["", ""])
    hook: str = option("", help="Where the activations come from in both models, e.g. "
                       "resid_post.6.")
    input_scale: list[float] = option(help="Per model: activations are multiplied by this before "
                                      "encoding and reconstructions divided by it. Training "
                                      "estimates it so each model's scaled activations have mean "
                                      "squared norm d_in.", default_factory=lambda: [1.0, 1.0])
    dtype: str = option("float32", help="Parameter dtype.", choices=tuple(DTYPES))
    dead_after_tokens: int = option(1_000_000, help="A latent that has not fired for this many "
                                    "training tokens counts as dead.", min=1, unit="tokens")
    aux_k: Optional[int] = option(None, help="BatchTopK: dead latents used by the auxiliary loss "
                                  "that revives them. Empty: d_in // 2 (Gao et al. 2024).", min=1)
    aux_coefficient: float = option(1 / 32, help="BatchTopK: weight of the auxiliary loss (1/32 in "
                                    "Gao et al. 2024). 0 turns it off.", min=0.0)
    threshold_lr: float = option(0.01, help="BatchTopK: rate of the running average that learns the "
                                 "inference threshold from the smallest score kept per batch.",
                                 min=0.0, max=1.0)

    def validate(self) -> "CrosscoderConfig":
        """Raise ValueError with a message naming the field; return self for chaining."""
        arch = ALIASES.get(str(self.architecture).strip().lower(), str(self.architecture).strip().lower())
        if arch in ARCHITECTURES:
            self.architecture = arch
        check_fields(self)
        for name in ("model_names", "model_sources", "input_scale"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or len(value) != self.n_models:
                raise ValueError(f"'{name}' must be a list of {self.n_models} entries, one per model; "
                                 f"got {value!r}.")
            setattr(self, name, list(value))
        for n in self.model_names:
            if not isinstance(n, str) or not _NAME.match(n):
                raise ValueError(f"'model_names' entries must be short names of letters, digits, "
                                 f"'_', '-' or '.'; got {n!r}.")
        if len(set(self.model_names)) != len(self.model_names):
            raise ValueError(f"'model_names' must differ from each other; got {self.model_names}.")
        if not all(isinstance(s, str) for s in self.model_sources):
            raise ValueError(f"'model_sources' entries must be text; got {self.model_sources!r}.")
        for s in self.input_scale:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
                raise ValueError(f"'input_scale' entries must be positive numbers; got {s!r}.")
        self.input_scale = [float(s) for s in self.input_scale]
        if self.architecture == "batchtopk" and self.k > self.d_latent:
            raise ValueError(f"'k' ({self.k}) cannot exceed the number of latents d_latent "
                             f"({self.d_latent}).")
        if self.aux_k is not None and self.aux_k > self.d_latent:
            raise ValueError(f"'aux_k' ({self.aux_k}) cannot exceed d_latent ({self.d_latent}).")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CrosscoderConfig":
        """Build from a dict, ignoring keys it does not know (cfg.json holds 'format')."""
        return cls(**known_fields(cls, data))

    def resolved_aux_k(self) -> int:
        return min(self.aux_k if self.aux_k is not None else max(self.d_in // 2, 1), self.d_latent)


class Crosscoder(nn.Module):
    """The two-model crosscoder; see the module docstring for the map and the losses."""

    def __init__(self, cfg: CrosscoderConfig, seed: Optional[int] = None):
        super().__init__()
        cfg = dataclasses.replace(cfg, model_names=list(cfg.model_names),
                                  model_sources=list(cfg.model_sources), input_scale=list(cfg.input_scale))
        try:
            cfg.validate()
        except ValueError as exc:
            raise CrosscoderError(f"The crosscoder settings are invalid: {exc}",
                                  "Correct the setting and try again.")
        self.cfg = cfg  # a copy: training records input_scale here
        M, D, F = cfg.n_models, cfg.d_in, cfg.d_latent
        dtype = DTYPES[cfg.dtype]
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        # Independent random directions per model (no latent starts out shared), each of norm
        # 0.1 for 'l1' (Anthropic's recommendation for L1 dictionaries whose penalty is weighted
        # by decoder norms) and 1 for BatchTopK; the encoder starts as the decoder's transpose.
        W_dec_FMD = torch.randn(F, M, D, generator=g, dtype=torch.float32)
        norm = 0.1 if cfg.architecture == "l1" else 1.0
        W_dec_FMD *= norm / W_dec_FMD.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        self.W_enc = nn.Parameter(W_dec_FMD.permute(1, 2, 0).contiguous().to(dtype))  # [M, D, F]
        self.b_enc = nn.Parameter(torch.zeros(F, dtype=dtype))
        self.W_dec = nn.Parameter(W_dec_FMD.to(dtype))  # [F, M, D]
        self.b_dec = nn.Parameter(torch.zeros(M, D, dtype=dtype))
        if cfg.architecture == "batchtopk":
            # In score units (f * s_j); zero until the first training batch, so an untrained
            # crosscoder in eval mode is a plain ReLU.
            self.register_buffer("threshold", torch.zeros(F, dtype=dtype))
        self.register_buffer("tokens_since_fired", torch.zeros(F, dtype=torch.long), persistent=False)

    # -- properties ----------------------------------------------------------------------------

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_latent(self) -> int:
        return self.cfg.d_latent

    @property
    def n_models(self) -> int:
        return self.cfg.n_models

    @property
    def model_names(self) -> list[str]:
        return list(self.cfg.model_names)

    @property
    def architecture(self) -> str:
        return self.cfg.architecture

    def model_index(self, model: Union[int, str]) -> int:
        """The M-axis index of a model given by index or by name."""
        if isinstance(model, str):
            if model not in self.cfg.model_names:
                raise CrosscoderError(f"The crosscoder has no model named '{model}'.",
                                      f"Use one of {', '.join(self.cfg.model_names)}.")
            return self.cfg.model_names.index(model)
        if isinstance(model, bool) or not isinstance(model, int) or not -self.n_models <= model < self.n_models:
            raise CrosscoderError(f"Model index {model!r} is out of range.",
                                  f"Use 0 to {self.n_models - 1} or a name ({', '.join(self.cfg.model_names)}).")
        return model % self.n_models

    def dead_mask(self) -> torch.Tensor:
        """Latents that have not fired for `dead_after_tokens` training tokens."""
        return self.tokens_since_fired >= self.cfg.dead_after_tokens

    def dead_fraction(self) -> float:
        return float(self.dead_mask().float().mean())

    # -- the map -------------------------------------------------------------------------------

    def _scales(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.cfg.input_scale, dtype=like.dtype, device=like.device)[:, None]

    def check_input(self, x: torch.Tensor) -> None:
        """CrosscoderError unless x is [..., n_models, d_in]."""
        if x.dim() < 2 or tuple(x.shape[-2:]) != (self.n_models, self.d_in):
            raise CrosscoderError(f"The activations have shape {list(x.shape)}, but the crosscoder "
                                  f"reads [..., {self.n_models}, {self.d_in}] (models x d_in).",
                                  "Pass paired activations of both models at the crosscoder's hook, "
                                  "stacked on the second-to-last axis.")

    def scale_in(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., M, D] in each model's units -> the normalized space the crosscoder works in."""
        self.check_input(x)
        x = x.to(self.W_enc.dtype)
        return x * self._scales(x)

    def pre_activation(self, x_s: torch.Tensor) -> torch.Tensor:
        """sum_m x_s[..., m, :] @ W_enc[m] + b_enc: [..., M, D] -> [..., F]."""
        lead = x_s.shape[:-2]
        x_flat = x_s.reshape(-1, self.n_models * self.d_in)  # one matmul: [N, M*D] @ [M*D, F]
        pre = torch.addmm(self.b_enc, x_flat, self.W_enc.reshape(-1, self.d_latent))
        return pre.reshape(*lead, self.d_latent)

    def latent_weights(self) -> torch.Tensor:
        """s_j = sum_m ||W_dec[j, m]|| [F]: the L1 weight and the BatchTopK ranking weight."""
        return self.W_dec.norm(dim=-1).sum(-1)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        f = torch.relu(pre)
        if self.cfg.architecture == "l1":
            return f
        with torch.no_grad():
            scores = f * self.latent_weights()
            if self.training:
                keep = batch_topk_activation(scores, self.cfg.k) > 0
            else:
                keep = scores > self.threshold
        return f * keep

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations f [..., F] of paired activations x [..., M, D] (each model's units).
        BatchTopK: over the batch in training mode, by the learned threshold in eval mode."""
        return self.activation(self.pre_activation(self.scale_in(x)))

    def decode_scaled(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction [..., M, D] in the normalized space."""
        lead = f.shape[:-1]
        x_hat = f.reshape(-1, self.d_latent).to(self.W_dec.dtype) @ self.W_dec.reshape(self.d_latent, -1)
        return x_hat.reshape(*lead, self.n_models, self.d_in) + self.b_dec

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction [..., M, D] of latent activations f [..., F], in each model's units."""
        x_hat_s = self.decode_scaled(f)
        return x_hat_s / self._scales(x_hat_s)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(x)
        return self.decode(f), f

    def decoder_directions(self, model: Union[int, str], original_units: bool = True) -> torch.Tensor:
        """Model `model`'s decoder rows W_dec[:, m] [F, D] (detached). In the model's own
        activation units by default (divided by its input_scale): f_j times row j is what latent
        j adds to that model's residual, for steering and ablation."""
        m = self.model_index(model)
        W_FD = self.W_dec.detach()[:, m]
        return W_FD / self.cfg.input_scale[m] if original_units else W_FD

    # -- training ------------------------------------------------------------------------------

    def loss(self, x: torch.Tensor, l1_factor: float = 1.0) -> dict[str, torch.Tensor]:
        """Training loss on paired activations x [B, M, D] (or [..., M, D], flattened).
        Returns `loss` (differentiable), `mse` [M] (squared error summed over d_in, averaged
        over tokens, per model, normalized space), `l1_penalty` ('l1', already times
        l1_coefficient * l1_factor) or `aux` ('batchtopk'), `feature_acts` [B, F], `x_s` and
        `x_hat_s` [B, M, D]. `l1_factor` scales the L1 penalty (its warm-up)."""
        x_s = self.scale_in(x).reshape(-1, self.n_models, self.d_in)
        pre = self.pre_activation(x_s)
        f = self.activation(pre)
        x_hat_s = self.decode_scaled(f)
        mse_M = (x_hat_s - x_s).pow(2).sum(-1).mean(0)
        out = {"mse": mse_M, "feature_acts": f, "x_s": x_s, "x_hat_s": x_hat_s}
        total = mse_M.sum()
        if self.cfg.architecture == "l1":
            penalty = self.cfg.l1_coefficient * l1_factor * (f * self.latent_weights()).sum(-1).mean()
            out["l1_penalty"] = penalty
            total = total + penalty
        else:
            aux = self.aux_loss(pre, x_s, x_hat_s)
            out["aux"] = aux
            total = total + aux
        out["loss"] = total
        return out

    def aux_loss(self, pre: torch.Tensor, x_s: torch.Tensor, x_hat_s: torch.Tensor) -> torch.Tensor:
        """AuxK: the aux_k largest dead-latent activations per token reconstruct the residual
        x_s - x_hat_s of both models (squared error summed over models and d_in, times
        aux_coefficient). Zero when no latent is dead."""
        dead = self.dead_mask()
        n_dead = int(dead.sum())
        if n_dead == 0 or self.cfg.aux_coefficient == 0:
            return pre.new_zeros(())
        k_aux = min(self.cfg.resolved_aux_k(), n_dead)
        idx = pre.detach().masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False).indices
        f_aux = torch.zeros_like(pre).scatter(-1, idx, torch.relu(pre.gather(-1, idx)))
        e_hat = torch.einsum("bf,fmd->bmd", f_aux, self.W_dec)
        e = (x_s - x_hat_s).detach()
        return self.cfg.aux_coefficient * (e_hat - e).pow(2).sum((-1, -2)).mean()

    @torch.no_grad()
    def after_step(self, f: torch.Tensor) -> None:
        """Bookkeeping after an optimizer step: dead-latent counters, BatchTopK's threshold."""
        f_NF = f.reshape(-1, self.d_latent)
        if f_NF.shape[0] == 0:
            return
        self.tokens_since_fired += f_NF.shape[0]
        self.tokens_since_fired[f_NF.amax(0) > 0] = 0
        if self.cfg.architecture == "batchtopk":
            self.update_threshold(f_NF)

    @torch.no_grad()
    def update_threshold(self, f_NF: torch.Tensor) -> None:
        """Running average of the smallest score f * s_j that BatchTopK kept (set outright by the
        first batch, as BatchTopKSAE.update_threshold does)."""
        scores = f_NF * self.latent_weights()
        positive = scores[scores > 0]
        if positive.numel() == 0:
            return
        smallest = positive.min().to(self.threshold.dtype)
        if not bool((self.threshold > 0).any()):
            self.threshold.fill_(smallest)
        else:
            lr = self.cfg.threshold_lr
            self.threshold.mul_(1 - lr).add_(lr * smallest)

    @torch.no_grad()
    def set_input_scales(self, x_sample: torch.Tensor) -> list[float]:
        """Estimate each model's input_scale from a sample [N, M, D] (each model's units) so its
        scaled activations have mean squared norm d_in; returns the scales."""
        self.check_input(x_sample)
        x = x_sample.reshape(-1, self.n_models, self.d_in)
        scales = []
        for m, name in enumerate(self.cfg.model_names):
            try:
                scales.append(estimate_input_scale(x[:, m]))
            except DictionaryError as exc:
                raise CrosscoderError(f"Model '{name}': {exc.what}", exc.hint)
        self.cfg.input_scale = scales
        return scales

    @torch.no_grad()
    def init_b_dec(self, x_sample: torch.Tensor) -> None:
        """Set each model's decoder bias to the mean of a sample [N, M, D] (normalized space)."""
        x_s = self.scale_in(x_sample).reshape(-1, self.n_models, self.d_in)
        self.b_dec.copy_(x_s.float().mean(0).to(self.b_dec.dtype))

    # -- save / load ---------------------------------------------------------------------------

    def tensor_names(self) -> tuple[str, ...]:
        return ("W_enc", "b_enc", "W_dec", "b_dec") + (("threshold",) if self.cfg.architecture == "batchtopk" else ())

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        M, D, F = self.n_models, self.d_in, self.d_latent
        shapes = {"W_enc": (M, D, F), "b_enc": (F,), "W_dec": (F, M, D), "b_dec": (M, D), "threshold": (F,)}
        return {n: shapes[n] for n in self.tensor_names()}

    def cfg_json(self) -> dict:
        return {**self.cfg.to_dict(), "format": FORMAT}

    def save(self, folder: Union[str, Path]) -> Path:
        """Write `cfg.json` and `crosscoder_weights.safetensors` into `folder`, each atomically
        (a temporary file renamed over the old one), weights first: a folder whose cfg.json is
        new also has the new weights."""
        from safetensors.torch import save

        tensors = {n: getattr(self, n).detach().cpu().contiguous() for n in self.tensor_names()}
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / WEIGHTS_FILENAME, save(tensors, metadata={"format": FORMAT}))
        atomic_write_text(folder / CFG_FILENAME, json.dumps(self.cfg_json(), indent=2))
        return folder

    @classmethod
    def load(cls, folder: Union[str, Path], device: Union[str, torch.device] = "cpu") -> "Crosscoder":
        """Load a folder written by `save`, in eval mode (BatchTopK then uses its threshold).
        Every problem (missing or damaged files, wrong shapes, an SAE folder) is a
        CrosscoderError saying what to do."""
        folder = Path(folder)
        cfg = read_config(folder)
        model = cls(cfg, seed=0)  # seeded: loading leaves the global RNG alone
        tensors = read_weights(folder)
        model.fill(tensors, folder / WEIGHTS_FILENAME)
        return model.to(device).eval()

    def fill(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        """Copy `tensors` into this crosscoder after checking names, shapes and values."""
        hint = "The weights and cfg.json belong to different crosscoders; save the crosscoder again."
        expected = self.expected_shapes()
        missing = [n for n in expected if n not in tensors]
        extra = [n for n in tensors if n not in expected]
        if missing or extra:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                    ([f"unexpected {', '.join(extra)}"] if extra else [])
            raise CrosscoderError(f"The weights in '{path}' do not fit a '{self.cfg.architecture}' "
                                  f"crosscoder: {'; '.join(parts)}.", hint)
        for name, shape in expected.items():
            t = tensors[name]
            if tuple(t.shape) != shape:
                raise CrosscoderError(f"Tensor '{name}' in '{path}' has shape {list(t.shape)}, but "
                                      f"cfg.json (n_models={self.n_models}, d_in={self.d_in}, "
                                      f"d_latent={self.d_latent}) needs {list(shape)}.", hint)
            if not t.is_floating_point():
                raise CrosscoderError(f"Tensor '{name}' in '{path}' holds {t.dtype} values, not "
                                      "floating-point numbers.", hint)
            if not torch.isfinite(t).all():
                raise CrosscoderError(f"Tensor '{name}' in '{path}' holds NaN or infinite values.",
                                      "The training diverged; use an earlier checkpoint or train "
                                      "again with a lower learning rate.")
        with torch.no_grad():
            for name in expected:
                getattr(self, name).copy_(tensors[name].to(getattr(self, name).dtype))


def read_config(folder: Path) -> CrosscoderConfig:
    """Parse and check `folder/cfg.json` of a crosscoder; every problem is a CrosscoderError."""
    if not folder.exists():
        raise CrosscoderError(f"'{folder}' does not exist.", "Choose the folder that holds the "
                              f"crosscoder's {CFG_FILENAME} and {WEIGHTS_FILENAME}.")
    if not folder.is_dir():
        raise CrosscoderError(f"'{folder}' is not a folder.", "Choose the folder that holds the "
                              f"crosscoder's {CFG_FILENAME} and {WEIGHTS_FILENAME}.")
    path = folder / CFG_FILENAME
    if not path.is_file():
        raise CrosscoderError(f"'{folder}' holds no crosscoder: {CFG_FILENAME} is missing.",
                              f"Choose the folder that holds {CFG_FILENAME} and {WEIGHTS_FILENAME}.")
    try:
        data = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CrosscoderError(f"'{path}' is not valid JSON ({exc.__class__.__name__}: {exc}).",
                              "The file is damaged or truncated; save the crosscoder again.")
    if not isinstance(data, dict):
        raise CrosscoderError(f"'{path}' must hold a JSON object, not {type(data).__name__}.",
                              "The file was not written by distillscope.")
    fmt = data.get("format")
    if not (isinstance(fmt, str) and fmt.startswith("distillscope-crosscoder/")):
        if (folder / "sae_weights.safetensors").exists() or "d_sae" in data:
            raise CrosscoderError(f"'{folder}' holds a sparse autoencoder, not a crosscoder.",
                                  "Open it as a dictionary (SAE) instead.")
        raise CrosscoderError(f"'{path}' is not a distillscope crosscoder config (no \"format\": "
                              f"\"{FORMAT}\").", "Choose a folder written by a crosscoder training run.")
    if fmt != FORMAT:
        raise CrosscoderError(f"'{path}' is in format '{fmt}', which this version does not read.",
                              "Update distillscope, or train the crosscoder again.")
    for key in ("d_in", "d_latent"):
        if key not in data:
            raise CrosscoderError(f"'{path}' lacks '{key}'.", "The file is incomplete; save the "
                                  "crosscoder again.")
    try:
        return CrosscoderConfig.from_dict(data).validate()
    except (TypeError, ValueError) as exc:
        raise CrosscoderError(f"'{path}' has an invalid setting: {exc}",
                              "Correct cfg.json or save the crosscoder again.")


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILENAME
    if not path.is_file():
        raise CrosscoderError(f"'{folder}' has {CFG_FILENAME} but no {WEIGHTS_FILENAME}.",
                              "The save was interrupted or the file was moved; save the crosscoder again.")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types on bad headers
        raise CrosscoderError(f"'{path}' cannot be read ({exc}).",
                              "The file is damaged or truncated; save the crosscoder again.")


def load(folder: Union[str, Path], device: Union[str, torch.device] = "cpu") -> Crosscoder:
    """`Crosscoder.load`: a crosscoder folder, in eval mode."""
    return Crosscoder.load(folder, device=device)


__all__ = ["ARCHITECTURES", "CFG_FILENAME", "WEIGHTS_FILENAME", "FORMAT", "Crosscoder",
           "CrosscoderConfig", "CrosscoderError", "describe", "load", "read_config",
           "read_weights"]
