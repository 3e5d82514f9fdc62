"""What a trained crosscoder says about base against variant: relative decoder norms, decoder
cosines, latent classes, Latent Scaling, and ablation of a latent set.

All decoder-based numbers use the crosscoder's normalized space (each model scaled to mean
squared norm d_in), where the two models' decoder norms are comparable.

Relative decoder norm (Lindsey et al. 2024, as a fraction of the sum as in seed 003 and issue 6):

    rel_j = ||d_j^variant|| / (||d_j^base|| + ||d_j^variant||)        in [0, 1]

0: the latent writes only to the base model; 1: only to the variant; 0.5: equally to both.

Classes (`classify`), with the thresholds in `THRESHOLDS`:

    base-only        rel < 0.1
    variant-only     rel > 0.9
    shared           0.3 <= rel <= 0.7
    base-leaning     0.1 <= rel < 0.3           (neither exclusive nor clearly shared)
    variant-leaning  0.7 < rel <= 0.9
    dead             sum of decoder norms below 1e-8 times the median latent's (no direction)

The 0.1 / 0.9 cut-offs for exclusive latents are those Minder, Dumas et al. 2025 put on their
normalized norm difference Delta_j = ((||d_j^b|| - ||d_j^v||) / max(||d_j^b||, ||d_j^v||) + 1) / 2,
here put on rel_j, which is stricter: rel > 0.9 means the other model's norm is under 1/9 of
the owner's (their Delta < 0.1: under 1/5, i.e. rel > 0.83). A latent must be clearly
one-sided before it is called exclusive; Latent Scaling then tests whether it really is.
The 0.3..0.7 band for shared latents is the one Kissane et al. (2024, the open replication of
Anthropic's model-diffing crosscoder on Gemma 2 2B) use for the decoder-cosine histogram of
shared latents (Minder et al. take the narrower 0.44..0.56 in rel terms). Seed 003 ablates the
latents with rel > 0.5; `latent_sets` gives the classes, any other cut is one comparison away.

Latent Scaling (Minder, Dumas et al. 2025, eq. 4): for latent j with decoder direction d_j
(its decoder row for the `owner` model, the one it looks exclusive to) and each model m, the
scalar that best explains a target y^m from the latent's own contribution, by least squares over
tokens i:

    beta_j^m = argmin_beta sum_i ||beta f_j(x_i) d_j - y_i^m||^2
             = <d_j, sum_i f_j(x_i) y_i^m> / (||d_j||^2 sum_i f_j(x_i)^2)

with two targets (normalized space):

    error           y^m = x^m - x_hat^m + f_j d_j^m    model m's reconstruction error with
                                                        latent j left out of the reconstruction
    reconstruction  y^m = x_hat^m - b_dec^m            the crosscoder's reconstruction of model m

and the ratios (other model over owner):

    nu^eps_j = beta_j^{eps, other} / beta_j^{eps, owner}
    nu^r_j   = beta_j^{r, other}   / beta_j^{r, owner}

A truly variant-only latent has nu ~ 0 for both: the base model's activations hold nothing along
d_j. nu^eps large flags Complete Shrinkage (the concept is in the base activations but the L1
penalty shrank the base decoder to zero, so it sits in the base error); nu^r large flags Latent
Decoupling (the base model's reconstruction holds the concept through other latents). Defaults
flag a latent when nu^eps > 0.2 or nu^r > 0.5 (`FLAG_NU_ERROR`, `FLAG_NU_RECONSTRUCTION`), the
cut-offs of a public re-implementation of the paper's analysis; in the paper, the reference is
the nu distribution of shared latents, whose nu is near 1. One deviation from the paper's code:
our reconstruction target leaves out the decoder bias b_dec^m, a constant that is no latent's
doing and whose projection on d_j would otherwise give a truly exclusive latent nu^r > 0.

Ablation (seed 003, figure 2): `ablate_latents` subtracts the decoded contribution
f_j * W_dec[j, variant] of a latent set from the variant's residual, plain torch on tensors, so
the model-hooking code can apply it inside a forward hook and measure logits and loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

import torch

from core.crosscoder.model import Crosscoder, CrosscoderError

THRESHOLDS = {"base_only_below": 0.1, "variant_only_above": 0.9, "shared_from": 0.3, "shared_to": 0.7}
CLASSES = ("base-only", "base-leaning", "shared", "variant-leaning", "variant-only", "dead")
FLAG_NU_ERROR = 0.2
FLAG_NU_RECONSTRUCTION = 0.5
DEAD_NORM = 1e-8


def _W_dec(source: Union[Crosscoder, torch.Tensor]) -> torch.Tensor:
    W = source.W_dec if isinstance(source, Crosscoder) else source
    W = W.detach().float()
    if W.dim() != 3:
        raise CrosscoderError(f"A crosscoder decoder is [latents, models, d_in]; got shape {list(W.shape)}.",
                              "Pass the crosscoder or its W_dec.")
    return W


def decoder_norms(source: Union[Crosscoder, torch.Tensor]) -> torch.Tensor:
    """||W_dec[j, m]|| [F, M] (normalized space)."""
    return _W_dec(source).norm(dim=-1)


def relative_norms(source: Union[Crosscoder, torch.Tensor], base: int = 0, variant: int = 1) -> torch.Tensor:
    """rel_j = ||d_j^variant|| / (||d_j^base|| + ||d_j^variant||) [F]; NaN for a latent with no
    decoder at all."""
    n = decoder_norms(source)
    total = n[:, base] + n[:, variant]
    return torch.where(total > 0, n[:, variant] / total.clamp(min=1e-30), torch.full_like(total, float("nan")))


def decoder_cosines(source: Union[Crosscoder, torch.Tensor], base: int = 0, variant: int = 1) -> torch.Tensor:
    """Cosine between latent j's base and variant decoder directions [F] (0 where one is zero)."""
    W = _W_dec(source)
    return torch.nn.functional.cosine_similarity(W[:, base], W[:, variant], dim=-1, eps=1e-12)


def dead_latents(source: Union[Crosscoder, torch.Tensor]) -> torch.Tensor:
    """Latents with (almost) no decoder: summed norm below DEAD_NORM times the median's [F] bool."""
    s = decoder_norms(source).sum(-1)
    return s <= DEAD_NORM * max(float(s.median()), 1e-30)


def classify(rel: torch.Tensor, dead: Optional[torch.Tensor] = None,
             thresholds: Optional[dict] = None) -> list[str]:
    """One of CLASSES per latent from its relative norm (see the module docstring)."""
    t = {**THRESHOLDS, **(thresholds or {})}
    out = []
    for j, r in enumerate(rel.tolist()):
        if (dead is not None and bool(dead[j])) or r != r:  # NaN: no decoder
            out.append("dead")
        elif r < t["base_only_below"]:
            out.append("base-only")
        elif r > t["variant_only_above"]:
            out.append("variant-only")
        elif t["shared_from"] <= r <= t["shared_to"]:
            out.append("shared")
        elif r < t["shared_from"]:
            out.append("base-leaning")
        else:
            out.append("variant-leaning")
    return out


def _dead(model: Crosscoder, frequency) -> torch.Tensor:
    dead = dead_latents(model)
    if frequency is not None:
        freq = torch.as_tensor(frequency, dtype=torch.float64).flatten()
        if freq.numel() != model.d_latent:
            raise CrosscoderError(f"{freq.numel()} firing frequencies for {model.d_latent} latents.",
                                  "Pass evaluate(model, batches)['frequency'] of this crosscoder.")
        dead = dead | (freq.to(dead.device) == 0)
    return dead


def latent_sets(model: Crosscoder, base: Union[int, str] = 0, variant: Union[int, str] = 1,
                thresholds: Optional[dict] = None, frequency=None) -> dict[str, torch.Tensor]:
    """Latent indices per class: {'base-only': LongTensor, 'shared': ..., ...} (all CLASSES).
    `frequency` (per latent, e.g. `evaluate(...)['frequency']`): latents that never fired are
    'dead' too; without it only latents without a decoder are (a latent that never fires keeps
    its random initial decoder, which looks shared)."""
    b, v = model.model_index(base), model.model_index(variant)
    classes = classify(relative_norms(model, b, v), _dead(model, frequency), thresholds)
    return {c: torch.tensor([j for j, k in enumerate(classes) if k == c], dtype=torch.long) for c in CLASSES}


def histogram(values: torch.Tensor, bins: int, lo: float, hi: float) -> dict:
    """{'counts': [bins ints], 'edges': [bins + 1 floats]} of the finite values on [lo, hi]
    (values at hi go in the last bin)."""
    v = values.detach().double().flatten()
    v = v[torch.isfinite(v)].clamp(lo, hi)
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    counts = torch.histogram(v, bins=edges).hist if v.numel() else torch.zeros(bins, dtype=torch.float64)
    return {"counts": [int(c) for c in counts.tolist()], "edges": edges.tolist()}


def norm_report(model: Crosscoder, base: Union[int, str] = 0, variant: Union[int, str] = 1,
                bins: int = 50, thresholds: Optional[dict] = None, frequency=None) -> dict:
    """Plain data for the analysis views and JSON: per latent 'relative_norm', 'cosine', 'class';
    'counts' per class; 'relative_norm_histogram' over [0, 1] of live latents;
    'cosine_histogram' over [-1, 1] of the shared latents (as Anthropic and Kissane et al. plot
    it); 'thresholds' used; the model names. `frequency`: as in `latent_sets` (recommended:
    without it, never-firing latents count by their random decoders)."""
    b, v = model.model_index(base), model.model_index(variant)
    rel = relative_norms(model, b, v)
    cos = decoder_cosines(model, b, v)
    dead = _dead(model, frequency)
    classes = classify(rel, dead, thresholds)
    shared = torch.tensor([c == "shared" for c in classes], dtype=torch.bool)
    return {
        "base": model.cfg.model_names[b], "variant": model.cfg.model_names[v],
        "relative_norm": [None if r != r else r for r in rel.tolist()],
        "cosine": cos.tolist(),
        "class": classes,
        "counts": {c: classes.count(c) for c in CLASSES},
        "relative_norm_histogram": histogram(rel[~dead], bins, 0.0, 1.0),
        "cosine_histogram": histogram(cos[shared], bins, -1.0, 1.0),
        "thresholds": {**THRESHOLDS, **(thresholds or {})},
    }


# ---------------------------------------------------------------------------------------------
# Latent Scaling


@dataclass
class LatentScaling:
    """Betas of Latent Scaling for a set of latents (see the module docstring).

    latents [K]; owner: the model index whose decoder gives d_j; beta_error and
    beta_reconstruction [M, K] (model m's beta in row m); n_active [K]: tokens where the latent
    fired (a beta from few tokens is noisy; zero: beta is NaN)."""

    latents: torch.Tensor
    owner: int
    model_names: list[str]
    beta_error: torch.Tensor
    beta_reconstruction: torch.Tensor
    n_active: torch.Tensor

    def _other(self) -> int:
        return 1 - self.owner

    def nu_error(self) -> torch.Tensor:
        """nu^eps = beta^eps_other / beta^eps_owner [K]."""
        return self.beta_error[self._other()] / self.beta_error[self.owner]

    def nu_reconstruction(self) -> torch.Tensor:
        """nu^r = beta^r_other / beta^r_owner [K]."""
        return self.beta_reconstruction[self._other()] / self.beta_reconstruction[self.owner]

    def flagged(self, nu_error_max: float = FLAG_NU_ERROR,
                nu_reconstruction_max: float = FLAG_NU_RECONSTRUCTION) -> torch.Tensor:
        """[K] bool: the latent looks exclusive to the owner only because of the sparsity
        penalty (nu^eps or nu^r above its cut-off), or never fired (no evidence either way)."""
        nu_e, nu_r = self.nu_error(), self.nu_reconstruction()
        return ~((nu_e <= nu_error_max) & (nu_r <= nu_reconstruction_max))  # NaN counts as flagged

    def rows(self) -> list[dict]:
        """One plain dict per latent, for tables and JSON."""
        o, t = self.model_names[self.owner], self.model_names[self._other()]
        nu_e, nu_r, flags = self.nu_error(), self.nu_reconstruction(), self.flagged()

        def num(x):
            x = float(x)
            return x if x == x else None

        return [{"latent": int(self.latents[i]), "owner": o, "n_active": int(self.n_active[i]),
                 f"beta_error_{o}": num(self.beta_error[self.owner, i]),
                 f"beta_error_{t}": num(self.beta_error[self._other(), i]),
                 f"beta_reconstruction_{o}": num(self.beta_reconstruction[self.owner, i]),
                 f"beta_reconstruction_{t}": num(self.beta_reconstruction[self._other(), i]),
                 "nu_error": num(nu_e[i]), "nu_reconstruction": num(nu_r[i]), "flagged": bool(flags[i])}
                for i in range(len(self.latents))]


@torch.no_grad()
def latent_scaling_sums(x_s_BMD: torch.Tensor, f_BF: torch.Tensor, W_dec_FMD: torch.Tensor,
                        b_dec_MD: torch.Tensor, latents: torch.Tensor, owner: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch's sufficient statistics, pure torch (normalized space throughout):
    (A_err [M, K], A_rec [M, K], C [K], active [K]) with
    A[m, j] = <d_j, sum_i f_j(x_i) y_i^m>, C[j] = sum_i f_j(x_i)^2, d_j = W_dec[j, owner].
    beta = A / (||d_j||^2 C). The error target's f_j d_j^m term is added in closed form
    (C[j] <d_j, d_j^m>), so no [K, B, D] tensor is built."""
    f = f_BF.double()
    W = W_dec_FMD.double()
    x_s = x_s_BMD.double()
    x_hat_s = torch.einsum("bf,fmd->bmd", f, W) + b_dec_MD.double()
    f_BK = f[:, latents]
    d_KD = W[latents, owner]
    C = f_BK.pow(2).sum(0)
    M = x_s.shape[1]
    A_err, A_rec = [], []
    for m in range(M):
        e_BD = x_s[:, m] - x_hat_s[:, m]
        r_BD = x_hat_s[:, m] - b_dec_MD[m].double()
        self_term = C * (d_KD * W[latents, m]).sum(-1)
        A_err.append(((f_BK.T @ e_BD) * d_KD).sum(-1) + self_term)
        A_rec.append(((f_BK.T @ r_BD) * d_KD).sum(-1))
    return torch.stack(A_err), torch.stack(A_rec), C, (f_BK > 0).sum(0).double()


@torch.no_grad()
def latent_scaling(model: Crosscoder, batches: Union[torch.Tensor, Iterable[torch.Tensor]],
                   latents: Union[Sequence[int], torch.Tensor], owner: Union[int, str] = 1,
                   max_batches: Optional[int] = None) -> LatentScaling:
    """Latent Scaling of `latents` over paired activations: one tensor x [N, M, D] or an
    iterable of batches (each model's units), in eval mode (BatchTopK by its threshold).
    `owner`: the model the latents look exclusive to (default the variant, index 1), whose
    decoder rows are d_j; nu = beta of the other model over the owner's."""
    if model.n_models != 2:
        raise CrosscoderError("Latent Scaling compares two models.", "Use a two-model crosscoder.")
    o = model.model_index(owner)
    idx = torch.as_tensor(latents, dtype=torch.long).flatten()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= model.d_latent):
        raise CrosscoderError(f"Latent indices must lie in 0..{model.d_latent - 1}.", "Check the latent list.")
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    was_training = model.training
    model.eval()
    K = idx.numel()
    A_err = torch.zeros(model.n_models, K, dtype=torch.float64)
    A_rec = torch.zeros_like(A_err)
    C = torch.zeros(K, dtype=torch.float64)
    active = torch.zeros(K, dtype=torch.float64)
    W = model.W_dec.detach()
    try:
        for i, x in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x_s = model.scale_in(x.to(W.device)).reshape(-1, model.n_models, model.d_in)
            f = model.activation(model.pre_activation(x_s))
            a_e, a_r, c, n = latent_scaling_sums(x_s, f, W, model.b_dec.detach(), idx.to(W.device), o)
            A_err += a_e.cpu()
            A_rec += a_r.cpu()
            C += c.cpu()
            active += n.cpu()
    finally:
        model.train(was_training)
    denom = W[idx.to(W.device), o].double().pow(2).sum(-1).cpu() * C
    denom = torch.where(denom > 0, denom, torch.full_like(denom, float("nan")))
    return LatentScaling(latents=idx, owner=o, model_names=model.model_names,
                         beta_error=(A_err / denom).float(), beta_reconstruction=(A_rec / denom).float(),
                         n_active=active.long())


# ---------------------------------------------------------------------------------------------
# Ablation


def latent_contribution(f: torch.Tensor, W_dec_FD: torch.Tensor,
                        latents: Union[Sequence[int], torch.Tensor]) -> torch.Tensor:
    """sum_{j in latents} f[..., j] * W_dec_FD[j]: [..., F] -> [..., D]. W_dec_FD is one model's
    decoder rows in the units of the residual it is applied to (`Crosscoder.decoder_directions`)."""
    idx = torch.as_tensor(latents, dtype=torch.long, device=f.device).flatten()
    return f[..., idx].to(W_dec_FD.dtype) @ W_dec_FD[idx]


def ablate_latents(x_BTD: torch.Tensor, f_BTF: torch.Tensor, W_dec_FD: torch.Tensor,
                   latents: Union[Sequence[int], torch.Tensor], mask_BT: Optional[torch.Tensor] = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove a latent set from a residual: x - sum_{j in latents} f_j W_dec_FD[j].

    x_BTD: the variant's residual at the crosscoder's hook; f_BTF: the crosscoder's latent
    activations on those tokens (from the paired activations); W_dec_FD: the variant's decoder
    rows in the residual's units (`model.decoder_directions('variant')`); mask_BT (optional,
    bool): positions to change (e.g. all but BOS). Returns (ablated x, change = ablated - x),
    in x's dtype."""
    if x_BTD.shape[:-1] != f_BTF.shape[:-1]:
        raise CrosscoderError(f"Residual {list(x_BTD.shape)} and latent activations {list(f_BTF.shape)} "
                              "cover different tokens.", "Encode the same tokens the residual holds.")
    if W_dec_FD.shape != (f_BTF.shape[-1], x_BTD.shape[-1]):
        raise CrosscoderError(f"The decoder has shape {list(W_dec_FD.shape)}; the residual and latents "
                              f"need [{f_BTF.shape[-1]}, {x_BTD.shape[-1]}].",
                              "Pass one model's decoder rows, Crosscoder.decoder_directions(model).")
    change = -latent_contribution(f_BTF, W_dec_FD.to(x_BTD.device), latents).to(x_BTD.dtype)
    if mask_BT is not None:
        change = change * mask_BT.to(change.device)[..., None].to(change.dtype)
    return x_BTD + change, change


__all__ = ["THRESHOLDS", "CLASSES", "FLAG_NU_ERROR", "FLAG_NU_RECONSTRUCTION", "LatentScaling",
           "ablate_latents", "classify", "dead_latents", "decoder_cosines", "decoder_norms", "histogram",
           "latent_contribution", "latent_scaling", "latent_scaling_sums", "latent_sets", "norm_report",
           "relative_norms"]
