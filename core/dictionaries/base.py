"""The interface every sparse dictionary shares, its documented config, and the registry.

An SAE maps an activation x [.., d_in] to sparse feature activations f [.., d_sae] and back:

    x_s   = x * input_scale                       (input scaling, recorded in the config)
    pre   = (x_s - b_dec) @ W_enc + b_enc         (b_dec subtracted when apply_b_dec_to_input)
    f     = activation(pre)                       (ReLU, TopK, BatchTopK/JumpReLU: per file)
    x_hat = (f @ W_dec + b_dec) / input_scale

Parameters are named as SAELens names them (`W_enc` [d_in, d_sae], `b_enc` [d_sae],
`W_dec` [d_sae, d_in], `b_dec` [d_in]) and a folder holds `cfg.json` beside
`sae_weights.safetensors`, so dictionaries move between distillscope and SAELens-style tools:
`SAE.save` writes what sae-lens 6 loads with `SAE.load_from_disk` (input_scale folded into the
tensors, BatchTopK saved as the JumpReLU it is at inference, as sae-lens does), and `SAE.load`
reads what sae-lens writes. Other formats (Gemma Scope parameter files) and the check of a
dictionary against a teacher live in `formats.py`.
Losses are computed in the scaled space; `mse` is the squared error summed over d_in and
averaged over rows (SAELens' and Anthropic's convention).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Union, get_args, get_origin, get_type_hints

import torch
from torch import nn

from core.errors import DistillscopeError
from core.paths import atomic_write_bytes, atomic_write_text

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
# /2: input_scale folded into the saved tensors (recorded as folded_input_scale), BatchTopK
# saved as architecture 'jumprelu' with metadata.training_architecture 'batchtopk', hook
# names in TransformerLens form where one names the same activations. /1 folders still load.
FORMAT = "distillscope-sae/2"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class DictionaryError(DistillscopeError):
    """A dictionary (SAE) config or folder is invalid, unreadable or of an unknown kind."""


# ---------------------------------------------------------------------------------------------
# Documented configs: every field carries help text and bounds a GUI form can be built from.


def option(default: Any = dataclasses.MISSING, help: str = "", *, min: Any = None, max: Any = None,
           choices: Optional[tuple] = None, unit: str = "", default_factory: Any = dataclasses.MISSING):
    """A dataclass field with machine-readable documentation in `field.metadata`."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "unit": unit}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def describe(config_cls) -> list[dict]:
    """One dict per field: name, type ('int', 'float', 'bool', 'str'), optional (None allowed),
    default, help, min, max, choices, unit. Enough for a form with tooltips and validation."""
    hints = get_type_hints(config_cls)
    dynamic = config_cls.dynamic_choices() if hasattr(config_cls, "dynamic_choices") else {}
    out = []
    for f in fields(config_cls):
        base, optional = _unwrap_optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        entry = {"name": f.name, "type": getattr(base, "__name__", str(base)), "optional": optional,
                 "required": required, "default": default}
        entry.update({k: f.metadata.get(k) for k in ("help", "min", "max", "choices", "unit")})
        if f.name in dynamic:
            entry["choices"] = dynamic[f.name]
        out.append(entry)
    return out


def _unwrap_optional(tp):
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def check_fields(cfg) -> None:
    """Type, bounds and choices from each field's metadata; raises ValueError with the field name."""
    hints = get_type_hints(type(cfg))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        base, optional = _unwrap_optional(hints[f.name])
        if value is None:
            if optional:
                continue
            raise ValueError(f"'{f.name}' must be set ({f.metadata.get('help', '')}).")
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            setattr(cfg, f.name, value)
        if base in (int, float, bool, str) and (not isinstance(value, base)
                                                or (base is int and isinstance(value, bool))):
            raise ValueError(f"'{f.name}' must be {_KINDS[base]}, got {value!r}.")
        if base is float and not math.isfinite(value):
            raise ValueError(f"'{f.name}' must be a finite number, got {value!r}.")
        lo, hi, choices = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("choices")
        if lo is not None and value < lo:
            raise ValueError(f"'{f.name}' must be at least {lo}, got {value!r}.")
        if hi is not None and value > hi:
            raise ValueError(f"'{f.name}' must be at most {hi}, got {value!r}.")
        if choices and value not in choices:
            raise ValueError(f"'{f.name}' must be one of {', '.join(map(str, choices))}; got {value!r}.")


def known_fields(config_cls, data: dict) -> dict:
    names = {f.name for f in fields(config_cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class SAEConfig:
    """Everything that defines an SAE. Written to `cfg.json`; every field is documented."""

    d_in: int = option(help="Width of the activations the SAE reads (the model's hidden size at the hook).",
                       min=1, max=1_000_000)
    d_sae: int = option(help="Number of dictionary features (latents). Often 4 to 64 times d_in.",
                        min=1, max=10_000_000)
    architecture: str = option("topk", help="Which SAE: 'standard' (ReLU + L1 penalty), 'topk' "
                               "(exactly k active per input), 'batchtopk' (k active on average "
                               "over a batch; a learned threshold at inference).")
    k: int = option(32, help="TopK/BatchTopK: active features per input (on average for BatchTopK). "
                    "Ignored by the ReLU SAE.", min=1)
    l1_coefficient: float = option(5.0, help="ReLU SAE: weight of the sparsity penalty "
                                   "sum_i f_i * ||W_dec_i||. Larger gives fewer active features "
                                   "and worse reconstruction. Ignored by TopK/BatchTopK.", min=0.0)
    input_scale: float = option(1.0, help="Inputs are multiplied by this before encoding and "
                                "reconstructions divided by it. Training estimates it so the mean "
                                "squared norm of scaled inputs is d_in.", min=1e-12)
    normalize_decoder: Optional[bool] = option(None, help="Keep every decoder row at unit norm during "
                                               "training. Empty: the architecture's choice (yes for "
                                               "TopK/BatchTopK, no for ReLU, whose penalty is "
                                               "weighted by decoder norms instead).")
    apply_b_dec_to_input: bool = option(True, help="Subtract the decoder bias from inputs before "
                                        "encoding (SAELens' default).")
    hook_name: str = option("", help="Where the activations come from, e.g. resid_post.6.")
    model_name: str = option("", help="The model the activations come from.")
    dtype: str = option("float32", help="Parameter dtype.", choices=tuple(DTYPES))
    dead_after_tokens: int = option(1_000_000, help="A feature that has not fired for this many "
                                    "training inputs counts as dead.", min=1, unit="tokens")
    aux_k: Optional[int] = option(None, help="TopK/BatchTopK: dead features used by the auxiliary "
                                  "loss that revives them. Empty: d_in // 2 (Gao et al. 2024).", min=1)
    aux_coefficient: float = option(1 / 32, help="TopK/BatchTopK: weight of the auxiliary loss "
                                    "(1/32 in Gao et al. 2024). 0 turns it off.", min=0.0)
    threshold_lr: float = option(0.01, help="BatchTopK: rate of the running average that learns the "
                                 "inference threshold from the smallest activation kept per batch.",
                                 min=0.0, max=1.0)

    def validate(self) -> "SAEConfig":
        """Raise ValueError with a message naming the field; return self for chaining."""
        check_fields(self)
        arch = canonical_architecture(self.architecture)
        if arch is None:
            raise ValueError(f"Architecture '{self.architecture}' is unknown; use one of "
                             f"{', '.join(sorted(REGISTRY))}.")
        self.architecture = arch
        cls = REGISTRY[arch]
        if cls.uses_k and self.k > self.d_sae:
            raise ValueError(f"'k' ({self.k}) cannot exceed the number of features d_sae ({self.d_sae}).")
        if self.aux_k is not None and self.aux_k > self.d_sae:
            raise ValueError(f"'aux_k' ({self.aux_k}) cannot exceed d_sae ({self.d_sae}).")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def dynamic_choices(cls) -> dict[str, tuple]:
        """Choices known only at run time: the trainable architectures registered."""
        return {"architecture": tuple(n for n, c in REGISTRY.items() if c.trainable)}

    @classmethod
    def from_dict(cls, data: dict) -> "SAEConfig":
        """Build from a dict, ignoring keys it does not know (cfg.json holds SAELens extras)."""
        return cls(**known_fields(cls, data))

    def resolved_aux_k(self) -> int:
        return min(self.aux_k if self.aux_k is not None else max(self.d_in // 2, 1), self.d_sae)


# ---------------------------------------------------------------------------------------------
# Registry


REGISTRY: dict[str, type["SAE"]] = {}
ALIASES = {"relu": "standard", "relu_l1": "standard", "top_k": "topk", "batch_topk": "batchtopk",
           "jump_relu": "jumprelu"}


def register(name: str) -> Callable[[type["SAE"]], type["SAE"]]:
    def deco(cls: type["SAE"]) -> type["SAE"]:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"Architecture '{name}' is registered twice.")
        cls.architecture = name
        REGISTRY[name] = cls
        return cls
    return deco


def canonical_architecture(name: str) -> Optional[str]:
    name = ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    return name if name in REGISTRY else None


def create(cfg: SAEConfig, seed: Optional[int] = None) -> "SAE":
    """A freshly initialised SAE of `cfg.architecture`; raises DictionaryError on a bad config."""
    try:
        cfg.validate()
    except ValueError as exc:
        raise DictionaryError(f"The SAE settings are invalid: {exc}", "Correct the setting and try again.")
    return REGISTRY[cfg.architecture](cfg, seed=seed)


def load(path: str | Path, device: str | torch.device = "cpu", hook: Optional[str] = None,
         dtype: Optional[Union[str, torch.dtype]] = None) -> "SAE":
    """Any dictionary distillscope reads: a SAELens folder (cfg.json + sae_weights.safetensors),
    or a Gemma Scope parameter file (params.npz / .safetensors; needs `hook`). In eval mode.
    See `core.dictionaries.formats.load_dictionary`."""
    from core.dictionaries.formats import load_dictionary

    return load_dictionary(path, device=device, hook=hook, dtype=dtype)


def dtype_name(dtype: Union[str, torch.dtype]) -> str:
    """'float16' for torch.float16 or 'float16' or 'torch.float16'; DictionaryError otherwise."""
    name = str(dtype).replace("torch.", "")
    if name not in DTYPES:
        raise DictionaryError(f"The dtype '{dtype}' is not one distillscope stores dictionaries in.",
                              f"Use one of {', '.join(DTYPES)}.")
    return name


# ---------------------------------------------------------------------------------------------
# The shared module


class SAE(nn.Module):
    """Base of every architecture. Subclasses define `activation(pre)` and, when they train with
    something other than MSE + nothing, `sparsity_loss`."""

    architecture: str = ""
    label: str = ""  # human name for menus
    uses_k: bool = False
    trainable: bool = True
    default_normalize_decoder: bool = True
    init_decoder_norm: float = 1.0  # norm of decoder rows at initialisation
    extra_tensors: tuple[str, ...] = ()  # saved beside the four parameters (e.g. threshold)
    # The SAELens architecture the saved tensors are (BatchTopK: 'jumprelu'); empty: the same.
    saved_architecture: str = ""

    def __init__(self, cfg: SAEConfig, seed: Optional[int] = None):
        super().__init__()
        # A copy, with the architecture's defaults filled in: training records input_scale here.
        self.cfg = dataclasses.replace(cfg)
        if self.cfg.normalize_decoder is None:
            self.cfg.normalize_decoder = self.default_normalize_decoder
        dtype = DTYPES[cfg.dtype]
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        W_dec_FD = torch.randn(cfg.d_sae, cfg.d_in, generator=g, dtype=torch.float32)
        W_dec_FD *= self.init_decoder_norm / W_dec_FD.norm(dim=1, keepdim=True).clamp(min=1e-12)
        # Encoder and decoder start tied: W_dec = W_enc^T (Gao et al. 2024; Anthropic 2024).
        self.W_enc = nn.Parameter(W_dec_FD.T.contiguous().to(dtype))
        self.W_dec = nn.Parameter(W_dec_FD.to(dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))
        # Inputs seen since each feature last fired (training only; not saved).
        self.register_buffer("tokens_since_fired", torch.zeros(cfg.d_sae, dtype=torch.long),
                             persistent=False)

    # -- properties --------------------------------------------------------------------------

    @property
    def normalize_decoder(self) -> bool:
        return bool(self.cfg.normalize_decoder)

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def dead_mask(self) -> torch.Tensor:
        """Features that have not fired for `dead_after_tokens` training inputs."""
        return self.tokens_since_fired >= self.cfg.dead_after_tokens

    def dead_fraction(self) -> float:
        return float(self.dead_mask().float().mean())

    # -- the map -----------------------------------------------------------------------------

    def scale_in(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.W_enc.dtype)
        return x * self.cfg.input_scale if self.cfg.input_scale != 1.0 else x

    def pre_activation(self, x_s: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations of already scaled inputs."""
        if self.cfg.apply_b_dec_to_input:
            x_s = x_s - self.b_dec
        return x_s @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [..., d_sae] of inputs [..., d_in] (original units)."""
        return self.activation(self.pre_activation(self.scale_in(x)))

    def decode_scaled(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction [..., d_in] in the inputs' original units."""
        x_hat = self.decode_scaled(f)
        return x_hat / self.cfg.input_scale if self.cfg.input_scale != 1.0 else x_hat

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(x)
        return self.decode(f), f

    # -- training ----------------------------------------------------------------------------

    def sparsity_loss(self, f_BF: torch.Tensor, pre_BF: torch.Tensor, x_s_BD: torch.Tensor,
                      x_hat_s_BD: torch.Tensor, factor: float) -> dict[str, torch.Tensor]:
        """Extra loss terms, by name; all are added to the total. Default: none."""
        return {}

    def loss(self, x: torch.Tensor, sparsity_factor: float = 1.0) -> dict[str, torch.Tensor]:
        """Training loss on a batch x [B, d_in]. Returns `loss` (differentiable), `mse`, the
        architecture's extra terms (`l1`, `aux`), `feature_acts` [B, d_sae] and `x_hat` [B, d_in]
        (original units). `sparsity_factor` scales the sparsity penalty (for its warm-up)."""
        x_s_BD = self.scale_in(x)
        pre_BF = self.pre_activation(x_s_BD)
        f_BF = self.activation(pre_BF)
        x_hat_s_BD = self.decode_scaled(f_BF)
        mse = (x_hat_s_BD - x_s_BD).pow(2).sum(-1).mean()
        extra = self.sparsity_loss(f_BF, pre_BF, x_s_BD, x_hat_s_BD, sparsity_factor)
        total = mse + sum(extra.values()) if extra else mse
        x_hat = x_hat_s_BD / self.cfg.input_scale if self.cfg.input_scale != 1.0 else x_hat_s_BD
        return {"loss": total, "mse": mse, **extra, "feature_acts": f_BF, "x_hat": x_hat}

    @torch.no_grad()
    def after_step(self, f_BF: torch.Tensor) -> None:
        """Bookkeeping after an optimizer step: dead-feature tracking (and, in subclasses,
        running statistics such as BatchTopK's threshold)."""
        self.record_firing(f_BF)

    @torch.no_grad()
    def record_firing(self, f_BF: torch.Tensor) -> None:
        f_NF = f_BF.reshape(-1, f_BF.shape[-1])
        if f_NF.shape[0] == 0:
            return
        fired = f_NF.amax(0) > 0  # = (f_NF > 0).any(0), one pass and no [N, d_sae] temporary
        self.tokens_since_fired += f_NF.shape[0]
        self.tokens_since_fired[fired] = 0

    @torch.no_grad()
    def set_decoder_norm_to_unit(self) -> None:
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True).clamp(min=1e-12)

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Project out the part of each decoder row's gradient along the (unit) row, so a step
        changes its direction, not its norm (Bricken et al. 2023; Gao et al. 2024)."""
        if self.W_dec.grad is None:
            return
        # grad -= (grad . W) / |W|^2 * W, row by row: the same projection as through W / |W|,
        # without [d_sae, d_in] temporaries (this runs every step).
        W_FD, grad_FD = self.W_dec.data, self.W_dec.grad
        norm_sq_F = torch.linalg.vector_norm(W_FD, dim=1).square().clamp(min=1e-24)
        grad_FD.addcmul_(W_FD, (torch.linalg.vecdot(grad_FD, W_FD) / norm_sq_F)[:, None], value=-1)

    @torch.no_grad()
    def init_from(self, x_sample: torch.Tensor, method: str = "median") -> None:
        """Set b_dec to the geometric median ('median') or mean ('mean') of a sample of inputs
        [N, d_in] (in scaled units), so encoding starts centred on the data."""
        x_s = self.scale_in(x_sample.reshape(-1, self.d_in)).float()
        if method == "mean":
            centre = x_s.mean(0)
        elif method == "median":
            centre = geometric_median(x_s)
        else:
            raise ValueError(f"init method '{method}' is unknown; use 'median' or 'mean'.")
        self.b_dec.data.copy_(centre.to(self.b_dec.dtype))

    @torch.no_grad()
    def fold_input_scale(self) -> None:
        """Fold input_scale into the weights and set it to 1: the same function, in a form that
        tools which ignore `input_scale` compute correctly (decoder rows then lose unit norm)."""
        s = self.cfg.input_scale
        if s == 1.0:
            return
        self.W_enc.data *= s
        self.W_dec.data /= s
        self.b_dec.data /= s
        self.cfg.input_scale = 1.0

    @torch.no_grad()
    def fold_decoder_norms(self) -> None:
        """Turn SAELens' `rescale_acts_by_decoder_norm` form (pre-activations multiplied by each
        decoder row's norm n, activations divided by n before decoding; what SAELens 6 saves
        for TopK) into the plain form: W_enc, b_enc times n, W_dec rows over n. The same
        function for every activation here, as ReLU, TopK and thresholds see pre * n either way."""
        n_F = self.W_dec.data.norm(dim=1).clamp(min=1e-12)
        self.W_enc.data *= n_F
        self.b_enc.data *= n_F
        self.W_dec.data /= n_F[:, None]

    # -- save / load ---------------------------------------------------------------------------

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        d, f = self.cfg.d_in, self.cfg.d_sae
        shapes = {"W_enc": (d, f), "b_enc": (f,), "W_dec": (f, d), "b_dec": (d,)}
        shapes.update({name: tuple(getattr(self, name).shape) for name in self.extra_tensors})
        return shapes

    def cfg_json(self, dtype: str = "") -> dict:
        """cfg.json: our config plus the keys SAELens reads, describing the tensors as written by
        `save` (input_scale folded in, so `input_scale` is 1 and `folded_input_scale` says
        what to unfold on loading)."""
        from core.dictionaries.formats import hook_to_field

        data = self.cfg.to_dict()
        hook_name = hook_to_field(self.cfg.hook_name)
        data.update({
            "dtype": dtype or self.cfg.dtype,
            "input_scale": 1.0,
            "hook_name": hook_name,
            "format": FORMAT,
            "device": "cpu",
            "normalize_activations": "none",
            "reshape_activations": "none",
            "metadata": {"model_name": self.cfg.model_name, "hook_name": hook_name,
                         "training_architecture": self.architecture},
        })
        if self.cfg.input_scale != 1.0:
            data["folded_input_scale"] = self.cfg.input_scale
        if self.saved_architecture:
            data["architecture"] = self.saved_architecture
        if self.uses_k:
            data["activation_fn_kwargs"] = {"k": self.cfg.k}  # SAELens < 6 reads k here
            data["rescale_acts_by_decoder_norm"] = False
        return data

    def save(self, folder: str | Path, dtype: Optional[Union[str, torch.dtype]] = None) -> Path:
        """Write `cfg.json` and `sae_weights.safetensors` into `folder` (each atomically), in the
        SAELens layout: sae-lens 6 loads the folder (`SAE.load_from_disk`) and encodes and
        decodes as this SAE does. sae-lens has no input scaling, so input_scale is folded into
        the tensors written (W_enc * s, W_dec / s, b_dec / s; the same function); `load` unfolds
        it. `dtype` (e.g. torch.float16): the dtype of the tensors written; default the SAE's."""
        from safetensors.torch import save

        out = DTYPES[dtype_name(dtype)] if dtype is not None else self.W_enc.dtype
        s = self.cfg.input_scale
        tensors = {}
        for name in self.expected_shapes():
            t = getattr(self, name).detach().cpu()
            if s != 1.0 and name in ("W_enc", "W_dec", "b_dec"):
                t = t.double() * s if name == "W_enc" else t.double() / s
            converted = t.to(out).contiguous()
            if out != t.dtype and torch.isfinite(t).all() and not torch.isfinite(converted).all():
                raise DictionaryError(f"Tensor '{name}' has values too large for {dtype_name(out)} "
                                      f"(largest magnitude {float(t.abs().max()):.3g}).",
                                      "Save it in float32 or bfloat16.")
            tensors[name] = converted
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / WEIGHTS_FILENAME, save(tensors, metadata={"format": FORMAT}))
        atomic_write_text(folder / CFG_FILENAME, json.dumps(self.cfg_json(dtype_name(out)), indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu", hook: Optional[str] = None,
             dtype: Optional[Union[str, torch.dtype]] = None) -> "SAE":
        """Load a folder written by `save` or by SAELens (its inference and training saves of
        standard, topk, jumprelu and batchtopk SAEs). In eval mode (BatchTopK then uses its
        threshold; training calls train()). `hook` gives or checks the hook (e.g. resid_post.6);
        `dtype` converts the parameters (default: the dtype in cfg.json)."""
        from core.dictionaries.formats import resolve_hook

        folder = Path(folder)
        cfg, info = _read_config(folder)
        cfg.hook_name = resolve_hook(cfg.hook_name, hook, folder / CFG_FILENAME)
        if dtype is not None:
            cfg.dtype = dtype_name(dtype)
        sae = REGISTRY[cfg.architecture](cfg)
        if cls is not SAE and not isinstance(sae, cls):
            raise DictionaryError(f"'{folder}' holds a '{cfg.architecture}' SAE, not a {cls.__name__}.",
                                  "Open it as the architecture it is.")
        path = folder / WEIGHTS_FILENAME
        tensors = _from_saelens_tensors(read_weights(folder), sae, path)
        sae.fill(tensors, path, f"cfg.json (d_in={cfg.d_in}, d_sae={cfg.d_sae})",
                 "The weights and cfg.json belong to different dictionaries, or the file was "
                 "written by an unsupported tool.")
        # Both reparametrisations in float64 on the file's tensors, then one rounding.
        if info["rescaled"]:
            _fold_decoder_norms(tensors)
        s = info["folded_input_scale"]
        if s != 1.0:
            tensors["W_enc"] = tensors["W_enc"].double() / s
            tensors["W_dec"] = tensors["W_dec"].double() * s
            tensors["b_dec"] = tensors["b_dec"].double() * s
            sae.cfg.input_scale = s
        with torch.no_grad():
            for name in sae.expected_shapes():
                getattr(sae, name).copy_(tensors[name].to(getattr(sae, name).dtype))
        return sae.to(device).eval()

    def fill(self, tensors: dict[str, torch.Tensor], path: Path, described_by: str, hint: str) -> None:
        """Check that `tensors` are exactly this SAE's (names, shapes, finite values); every
        problem becomes a DictionaryError naming the file."""
        expected = self.expected_shapes()
        missing = [n for n in expected if n not in tensors]
        extra = [n for n in tensors if n not in expected]
        if missing or extra:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                    ([f"unexpected {', '.join(extra)}"] if extra else [])
            raise DictionaryError(f"The weights in '{path}' do not fit a '{self.cfg.architecture}' "
                                  f"SAE: {'; '.join(parts)}.", hint)
        for name, shape in expected.items():
            got = tuple(tensors[name].shape)
            if got != shape:
                raise DictionaryError(f"Tensor '{name}' in '{path}' has shape {list(got)}, but "
                                      f"{described_by} needs {list(shape)}.", hint)
            if not tensors[name].is_floating_point():
                raise DictionaryError(f"Tensor '{name}' in '{path}' holds {tensors[name].dtype} "
                                      "values, not floating-point numbers.", hint)
            if not torch.isfinite(tensors[name]).all():
                raise DictionaryError(f"Tensor '{name}' in '{path}' holds NaN or infinite values.",
                                      "The training diverged; use an earlier checkpoint or train "
                                      "again with a lower learning rate.")


def _fold_decoder_norms(tensors: dict[str, torch.Tensor]) -> None:
    """SAELens' `rescale_acts_by_decoder_norm` form into the plain one, in place (see
    SAE.fold_decoder_norms); a threshold stays, as it compares pre-activations times n."""
    n_F = tensors["W_dec"].double().norm(dim=1).clamp(min=1e-12)
    tensors["W_enc"] = tensors["W_enc"].double() * n_F
    tensors["b_enc"] = tensors["b_enc"].double() * n_F
    tensors["W_dec"] = tensors["W_dec"].double() / n_F[:, None]


def _from_saelens_tensors(tensors: dict[str, torch.Tensor], sae: "SAE", path: Path) -> dict[str, torch.Tensor]:
    """Tensors SAELens writes under other names: a training BatchTopK's scalar `topk_threshold`,
    an older JumpReLU's `log_threshold`, an all-ones `scaling_factor` (SAELens < 6)."""
    tensors = dict(tensors)
    if "threshold" in sae.expected_shapes() and "threshold" not in tensors:
        if "topk_threshold" in tensors and tensors["topk_threshold"].numel() == 1:
            tensors["threshold"] = tensors.pop("topk_threshold").double().reshape(()).expand(sae.d_sae).clone()
        elif "log_threshold" in tensors:
            tensors["threshold"] = tensors.pop("log_threshold").double().exp()
    if "scaling_factor" in tensors:
        if not torch.equal(tensors["scaling_factor"], torch.ones_like(tensors["scaling_factor"])):
            raise DictionaryError(f"'{path}' scales features by a learned 'scaling_factor' (SAELens' "
                                  "finetuning_scaling_factor), which distillscope does not apply.",
                                  "Fold it into W_dec in SAELens and save the SAE again.")
        del tensors["scaling_factor"]
    return tensors


def read_config(folder: Path) -> SAEConfig:
    """Parse and check `folder/cfg.json`; every problem becomes a DictionaryError. (A SAELens
    cfg.json may ask for decoder-norm rescaling, and ours records a folded input scale: SAE.load
    applies both to the weights.)"""
    return _read_config(folder)[0]


def _read_config(folder: Path) -> tuple[SAEConfig, dict]:
    """(config, {'rescaled': SAELens' rescale_acts_by_decoder_norm, 'folded_input_scale': s})."""
    if not folder.is_dir():
        raise DictionaryError(f"'{folder}' is not a folder.", "Choose the folder that holds cfg.json "
                              "and sae_weights.safetensors.")
    path = folder / CFG_FILENAME
    if not path.is_file():
        raise DictionaryError(f"'{folder}' holds no SAE: {CFG_FILENAME} is missing.",
                              f"Choose the folder that holds {CFG_FILENAME} and {WEIGHTS_FILENAME}.")
    try:
        data = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DictionaryError(f"'{path}' is not valid JSON ({exc.__class__.__name__}: {exc}).",
                              "The file is damaged or truncated; save the SAE again.")
    if not isinstance(data, dict):
        raise DictionaryError(f"'{path}' must hold a JSON object, not {type(data).__name__}.",
                              "The file was not written by an SAE library.")
    data = _from_saelens(data)
    arch = data.get("architecture")
    if arch is None:
        raise DictionaryError(f"'{path}' does not say which architecture the SAE is.",
                              f"Add \"architecture\": one of {', '.join(sorted(REGISTRY))}.")
    if canonical_architecture(arch) is None:
        raise DictionaryError(f"'{path}' holds a '{arch}' SAE, an architecture distillscope does not "
                              f"know.", f"Known architectures: {', '.join(sorted(REGISTRY))}.")
    for key in ("d_in", "d_sae"):
        if key not in data:
            raise DictionaryError(f"'{path}' lacks '{key}'.", "The file is incomplete; save the SAE again.")
    if data.get("normalize_activations", "none") not in ("none", None, False):
        raise DictionaryError(f"'{path}' normalizes activations with '{data['normalize_activations']}', "
                              "which distillscope cannot reproduce.",
                              "Fold the scaling factor into the weights before exporting.")
    folded = data.get("folded_input_scale", 1.0)
    if isinstance(folded, bool) or not isinstance(folded, (int, float)) or not math.isfinite(folded) \
            or folded <= 0:
        raise DictionaryError(f"'{path}' has an invalid folded_input_scale: {folded!r}.",
                              "It must be a positive number; save the SAE again.")
    try:
        cfg = SAEConfig.from_dict(data).validate()
    except (TypeError, ValueError) as exc:
        raise DictionaryError(f"'{path}' has an invalid setting: {exc}",
                              "Correct cfg.json or save the SAE again.")
    return cfg, {"rescaled": bool(data.get("rescale_acts_by_decoder_norm")),
                 "folded_input_scale": float(folded)}


def _from_saelens(data: dict) -> dict:
    """Map SAELens cfg.json conventions onto ours: nested metadata, TransformerLens hook names,
    old TopK encoding, BatchTopK saved as JumpReLU (sae-lens' and ours since format /2)."""
    from core.dictionaries.formats import hook_from_field

    data = dict(data)
    meta = data.get("metadata") or data.get("meta") or {}
    if not isinstance(meta, dict):
        meta = {}
    for key in ("model_name", "hook_name"):
        if not data.get(key) and meta.get(key):
            data[key] = meta[key]
    if isinstance(data.get("hook_name"), str):
        data["hook_name"] = hook_from_field(data["hook_name"]) or data["hook_name"]
    kwargs = data.get("activation_fn_kwargs") or {}
    if data.get("activation_fn_str", data.get("activation_fn")) == "topk" \
            and data.get("architecture", "standard") == "standard":
        data["architecture"] = "topk"  # SAELens < 6 stored TopK SAEs as 'standard' + topk activation
    if "k" not in data and isinstance(kwargs, dict) and "k" in kwargs:
        data["k"] = kwargs["k"]
    details = meta.get("training_architecture_details")
    details = details if isinstance(details, dict) else {}
    if canonical_architecture(str(data.get("architecture", ""))) == "jumprelu" \
            and meta.get("training_architecture") in ("batchtopk", "batch_topk"):
        # What a BatchTopK SAE is at inference; it loads as one (trainable again) when its k is
        # a whole number no larger than d_sae. Otherwise it stays a JumpReLU: the same encode.
        k = data.get("k", details.get("k"))
        d_sae = data.get("d_sae")
        if isinstance(k, (int, float)) and not isinstance(k, bool) and float(k).is_integer() \
                and isinstance(d_sae, int) and 1 <= k <= d_sae:
            data["architecture"] = "batchtopk"
            data["k"] = int(k)
            if "threshold_lr" not in data and isinstance(details.get("topk_threshold_lr"), (int, float)):
                data["threshold_lr"] = float(details["topk_threshold_lr"])
    if isinstance(data.get("k"), float) and float(data["k"]).is_integer():
        data["k"] = int(data["k"])
    if "dtype" in data and isinstance(data["dtype"], str):
        data["dtype"] = data["dtype"].replace("torch.", "")
    for key in ("hook_name", "model_name"):
        if data.get(key) is None:
            data.pop(key, None)
    return data


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILENAME
    if not path.is_file():
        raise DictionaryError(f"'{folder}' has cfg.json but no {WEIGHTS_FILENAME}.",
                              "The save was interrupted or the file was moved; save the SAE again.")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types on bad headers
        raise DictionaryError(f"'{path}' cannot be read ({exc}).",
                              "The file is damaged or truncated; save the SAE again.")


@torch.no_grad()
def geometric_median(x_ND: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances to the rows."""
    y = x_ND.mean(0)
    for _ in range(iters):
        w = 1.0 / (x_ND - y).norm(dim=1).clamp(min=1e-8)
        y_new = (w[:, None] * x_ND).sum(0) / w.sum()
        if (y_new - y).norm() <= tol * max(float(y.norm()), 1.0):
            return y_new
        y = y_new
    return y


@torch.no_grad()
def estimate_input_scale(x_sample: torch.Tensor) -> float:
    """The factor that makes the mean squared norm of scaled inputs equal d_in (Anthropic's
    convention, so learning rates and L1 coefficients carry over between models and layers)."""
    x = x_sample.reshape(-1, x_sample.shape[-1]).float()
    mean_sq = float(x.pow(2).sum(-1).mean())
    if not math.isfinite(mean_sq) or mean_sq <= 0:
        raise DictionaryError("The activations are all zero or not finite; they cannot be scaled.",
                              "Check the activation cache.")
    return math.sqrt(x.shape[-1] / mean_sq)
