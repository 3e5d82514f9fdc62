"""What a feature's decoder direction does downstream (logit effects) and which features point
the same way (nearest features by decoder cosine)."""

from __future__ import annotations

import torch

from core.errors import DistillscopeError
from core.features.scoring import unit_directions

# Where transformers keeps the final norm, by architecture family.
_FINAL_NORMS = ("model.norm", "model.language_model.norm", "model.final_layernorm",
                "model.decoder.final_layer_norm", "transformer.ln_f", "gpt_neox.final_layer_norm")


def final_norm(model: torch.nn.Module) -> torch.nn.Module:
    for path in _FINAL_NORMS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.Module):
            return obj
    raise DistillscopeError(f"Cannot find the final norm of {type(model).__name__}.",
                            "Logit effects are not available for this architecture.")


def _check_feature(sae, f: int) -> int:
    f = int(f)
    if not 0 <= f < sae.d_sae:
        raise IndexError(f"Feature {f} does not exist; the dictionary has 0 to {sae.d_sae - 1}.")
    return f


@torch.no_grad()
def logit_effects(teacher, sae, f: int, n: int = 10) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(promoted, suppressed): the n tokens whose logits the feature's decoder direction raises
    most and lowers most, as (decoded token, logit), through the final norm and the unembedding.

    The direction goes through the final norm as if it were the whole residual of one token.
    RMSNorm and LayerNorm are invariant to the input's scale, so this applies exactly what the
    norm does to a direction: its per-dimension gain (Gemma's 1 + weight, LayerNorm's weight
    and bias, and LayerNorm's mean removal). Leaving the norm out would rank tokens by raw
    W_dec @ W_U, which a large gain on a few dimensions can reorder. Logit soft-capping (Gemma 2)
    is left out: it is monotone, so the ranking is the same."""
    f = _check_feature(sae, f)
    model = teacher.model
    head = model.get_output_embeddings()
    if head is None:
        raise DistillscopeError(f"{type(model).__name__} has no output embedding (language-model head).",
                                "Logit effects need a causal language model.")
    if sae.d_in != teacher.d_model:
        raise DistillscopeError(f"The dictionary has width {sae.d_in}, {teacher.name} {teacher.d_model}.",
                                "Use a dictionary made for this model.")
    direction = sae.W_dec[f].detach().float()
    direction = direction / direction.norm().clamp(min=1e-12)
    x = direction.to(teacher.device, teacher.dtype).reshape(1, 1, -1)
    logits = head(final_norm(model)(x))[0, 0].float().cpu()
    n = max(0, min(int(n), logits.numel()))
    up_vals, up_ids = logits.topk(n)
    down_vals, down_ids = (-logits).topk(n)
    up = teacher.token_strings(up_ids.tolist())
    down = teacher.token_strings(down_ids.tolist())
    return ([(s, float(v)) for s, v in zip(up, up_vals)],
            [(s, float(-v)) for s, v in zip(down, down_vals)])


@torch.no_grad()
def nearest_features(sae, f: int, n: int = 10) -> list[tuple[int, float]]:
    """The n other features whose decoder directions have the largest cosine with f's."""
    f = _check_feature(sae, f)
    U = unit_directions(sae)
    cos = U @ U[f]
    cos[f] = -float("inf")
    n = max(0, min(int(n), U.shape[0] - 1))
    values, idx = cos.topk(n)
    return [(int(i), float(v)) for i, v in zip(idx, values)]
