"""Feature scores of one document (or of any vector): the two ways the feature bars are made.

1. Projection, the seed-000 bridge. A document's residual vectors at the dictionary's hook are
   mean-pooled over its non-BOS tokens, z-normalized against a reference distribution of such
   document vectors (per-dimension mean and std), and projected onto the *unit* decoder
   directions of the dictionary:

       score_f = <W_dec[f] / |W_dec[f]|, (v - mean) / std>

   The SAE encoder is never run on a pooled vector: it is non-linear and was trained on single
   tokens, so a mean of many tokens is an input it has never seen (the seed reports the results
   as unusable). The decoder rows are only used as a dictionary of directions, so the same
   formula scores a class mean or a contrast vector. Without z-normalization the top features
   are the same for every document (the residual's shared structure dominates); the scores are
   signed: a negative score means the document sits against that direction.

2. Tokens. Every token is encoded with the dictionary as it was trained, and the activations are
   aggregated over the document's non-BOS tokens: the mean (how much of the document carries the
   feature) and the max (whether it appears anywhere).
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from core.errors import DistillscopeError
from core.paths import atomic_write_bytes
from core.similarity import zscore

METHODS = ("projection", "tokens")
REFERENCE_FILENAME = "reference.safetensors"
REFERENCE_FORMAT = "distillscope-reference/1"
ENCODE_ROWS = 2048  # tokens encoded at once: bounds the [rows, d_sae] temporary


def unit_directions(sae) -> torch.Tensor:
    """Decoder rows scaled to unit L2 norm, [d_sae, d_in] float32 on the CPU. A zero row (a
    feature that was never trained) stays zero, so it scores 0 instead of NaN."""
    W_FD = sae.W_dec.detach().float().cpu()
    return W_FD / W_FD.norm(dim=1, keepdim=True).clamp(min=1e-12)


@dataclass
class FeatureScores:
    """Per-feature scores of one document or vector, as the feature bars show them."""

    method: str  # "projection" or "tokens"
    values: torch.Tensor  # [d_sae]: projection score (signed), or mean activation over non-BOS tokens
    peak: Optional[torch.Tensor] = None  # [d_sae] tokens: max activation over non-BOS tokens
    token_acts: Optional[torch.Tensor] = None  # [T, d_sae] tokens: every token's activations, BOS rows 0

    def top(self, n: int, by: str = "abs") -> list[int]:
        """The n features ranked by |value| ("abs"), by value, largest first ("value"; for
        projection the features the document points towards most), or by peak ("peak")."""
        if by == "abs":
            key = self.values.abs()
        elif by == "value":
            key = self.values
        elif by == "peak":
            if self.peak is None:
                raise ValueError("Ranking by peak needs token scores (method 'tokens').")
            key = self.peak
        else:
            raise ValueError(f"Unknown ranking '{by}'; use 'abs', 'value' or 'peak'.")
        n = max(0, min(int(n), key.numel()))
        # A stable sort breaks ties (e.g. many zero mean activations) by feature index, so the
        # order is the same between runs and between the GUI and the CLI.
        order = torch.sort(-key.double(), stable=True).indices[:n]
        return [int(f) for f in order]


def projection_scores(vector: torch.Tensor, sae, mean: torch.Tensor, std: torch.Tensor) -> FeatureScores:
    """Seed-000 bridge: unit decoder directions @ zscore(vector). Any [d_in] vector works: a
    pooled document, a class mean, or a contrast vector (for a difference of two class means,
    pass mean = 0 and std = the reference std, so only the scaling applies)."""
    vector = vector.detach().float().cpu().reshape(-1)
    mean, std = mean.float().cpu().reshape(-1), std.float().cpu().reshape(-1)
    if not (vector.numel() == mean.numel() == std.numel() == sae.d_in):
        raise DistillscopeError(
            f"Cannot project a vector of width {vector.numel()} with a reference of width "
            f"{mean.numel()} onto a dictionary of width d_in={sae.d_in}.",
            "Use a reference computed at the dictionary's hook of the same model.")
    return FeatureScores("projection", unit_directions(sae) @ zscore(vector, mean, std))


class _Inference:
    """Eval mode (BatchTopK then uses its threshold, not the batch) and no autograd, restored on
    exit: the GUI may hold the same SAE object another view trains or inspects."""

    def __init__(self, sae):
        self.sae = sae

    def __enter__(self):
        self.was_training = self.sae.training
        self.sae.eval()
        self.grad = torch.no_grad()
        self.grad.__enter__()
        return self.sae

    def __exit__(self, *exc):
        self.grad.__exit__(*exc)
        self.sae.train(self.was_training)
        return False


_FLOAT32_COPIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def as_float32(sae):
    """The SAE itself if its weights are float32, else a float32 copy (kept while the SAE lives
    and its weights are unchanged). Half-precision dictionaries (the starter ships in fp16 to
    stay small) are encoded in float32: fp16 overflows on large residual values and is slow on
    CPUs, and the copy of a 4096 x 640 dictionary costs a few milliseconds once."""
    if sae.W_enc.dtype == torch.float32:
        return sae
    versions = tuple(p._version for p in sae.parameters()) + tuple(b._version for b in sae.buffers())
    cached = _FLOAT32_COPIES.get(sae)
    if cached is None or cached[0] != versions:
        copy = type(sae)(dataclasses.replace(sae.cfg, dtype="float32"))
        with torch.no_grad():
            for name, tensor in list(sae.named_parameters()) + list(sae.named_buffers()):
                getattr(copy, name).copy_(tensor.detach().float() if tensor.is_floating_point() else tensor)
        cached = (versions, copy.to(sae.W_enc.device))
        _FLOAT32_COPIES[sae] = cached
    return cached[1]


def encode_tokens(sae, acts: torch.Tensor) -> torch.Tensor:
    """Feature activations [T, d_sae] float32 on the CPU of token activations [T, d_in], encoded
    one token at a time as the dictionary was trained (in chunks, to bound memory)."""
    if acts.ndim != 2 or acts.shape[1] != sae.d_in:
        raise DistillscopeError(f"Token activations of shape {list(acts.shape)} do not fit a "
                                f"dictionary with d_in={sae.d_in}.",
                                "Use the dictionary trained at this model's hook.")
    out = torch.empty(acts.shape[0], sae.d_sae, dtype=torch.float32)
    sae = as_float32(sae)
    device = sae.W_enc.device
    with _Inference(sae):
        for start in range(0, acts.shape[0], ENCODE_ROWS):
            chunk = acts[start:start + ENCODE_ROWS].to(device)
            out[start:start + ENCODE_ROWS] = sae.encode(chunk).float().cpu()
    return out


def token_scores(sae, acts: torch.Tensor, is_bos: Optional[Sequence[bool]] = None) -> FeatureScores:
    """Encode every token; mean and max over the non-BOS tokens (BOS rows are set to zero in
    `token_acts`: its residual norm dwarfs every other token's and it carries no content)."""
    token_acts = encode_tokens(sae, acts)
    keep = torch.ones(acts.shape[0], dtype=torch.bool)
    if is_bos is not None:
        if len(is_bos) != acts.shape[0]:
            raise ValueError(f"is_bos has {len(is_bos)} entries for {acts.shape[0]} tokens.")
        keep = ~torch.tensor(list(is_bos), dtype=torch.bool)
    token_acts[~keep] = 0
    if keep.any():
        kept = token_acts[keep]
        values, peak = kept.mean(0), kept.amax(0)
    else:  # a document of nothing but BOS: no feature is present
        values, peak = torch.zeros(sae.d_sae), torch.zeros(sae.d_sae)
    return FeatureScores("tokens", values, peak, token_acts)


# ---------------------------------------------------------------------------------------------
# The reference distribution for z-normalization


@dataclass
class Reference:
    """Per-dimension mean and std of pooled document vectors at one hook: what projection scores
    are z-normalized against. A dictionary folder ships the one its labels were made with."""

    mean: torch.Tensor  # [d_in]
    std: torch.Tensor  # [d_in]
    source: str  # what it was computed from, for display (corpus, cache folder, count)
    hook: str = ""  # where the vectors came from, e.g. resid_post.6
    count: int = 0  # documents it was computed from

    def check(self, sae) -> None:
        if self.mean.numel() != sae.d_in or self.std.numel() != sae.d_in:
            raise DistillscopeError(
                f"The reference ({self.source}) has width {self.mean.numel()}, the dictionary "
                f"d_in={sae.d_in}.", "Compute the reference at the dictionary's hook "
                "(distillscope label DICTIONARY --corpus demo).")


def reference_from_cache(cache) -> Reference:
    """Mean and std of the cache's *document* vectors. A pooled cache holds them (its stats);
    a token cache is pooled here per document over its non-BOS rows, exactly as pooled
    extraction does, so both kinds of cache give the same reference for the same corpus.
    (The per-token stats of a token cache would be the wrong distribution: a single token
    varies far more than a mean of many.)"""
    m = cache.manifest
    where = f"{m.get('n_documents', len(cache.document_ids)):,} documents in cache {cache.folder}"
    if cache.mode == "pooled":
        mean, std = cache.stats()
        return Reference(mean.float(), std.float(), where, m["hook"], int(m.get("n_documents", 0)))
    n_docs, d = len(cache.document_ids), int(m["d_model"])
    sums = torch.zeros(n_docs, d, dtype=torch.float64)
    counts = torch.zeros(n_docs, dtype=torch.float64)
    bos = (m.get("tokenizer") or {}).get("bos_id")
    for data in cache.shards():
        keep = data["token_id"] != bos if bos is not None else torch.ones(len(data["acts"]), dtype=torch.bool)
        doc = data["doc_index"][keep].long()
        sums.index_add_(0, doc, data["acts"][keep].double())
        counts.index_add_(0, doc, torch.ones(len(doc), dtype=torch.float64))
    present = counts > 0  # documents with no token at all (empty text) have no vector
    if not present.any():
        raise DistillscopeError(f"The cache in '{cache.folder}' holds no tokens.",
                                "Extract a corpus with some text.")
    vectors = sums[present] / counts[present, None]
    mean = vectors.mean(0)
    std = vectors.std(0, unbiased=False)  # population std, as the cache's own stats use
    return Reference(mean.float(), std.float(), where.replace(f"{n_docs:,}", f"{int(present.sum()):,}"),
                     m["hook"], int(present.sum()))


def save_reference(folder: str | Path, ref: Reference) -> Path:
    from safetensors.torch import save

    path = Path(folder) / REFERENCE_FILENAME
    meta = {"format": REFERENCE_FORMAT, "source": ref.source, "hook": ref.hook, "count": str(ref.count)}
    tensors = {"mean": ref.mean.float().contiguous(), "std": ref.std.float().contiguous()}
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


def load_reference(folder: str | Path) -> Optional[Reference]:
    """The reference shipped in a dictionary folder, or None when the folder has none."""
    from safetensors import safe_open

    path = Path(folder) / REFERENCE_FILENAME
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            mean, std = f.get_tensor("mean").float(), f.get_tensor("std").float()
    except Exception as exc:  # safetensors raises its own error types on bad headers/missing keys
        raise DistillscopeError(f"'{path}' cannot be read ({exc}).",
                                "Delete it and write it again (distillscope label DICTIONARY --corpus demo).")
    if mean.shape != std.shape or mean.ndim != 1 or not torch.isfinite(mean).all() \
            or not torch.isfinite(std).all():
        raise DistillscopeError(f"'{path}' holds a malformed reference (mean {list(mean.shape)}, "
                                f"std {list(std.shape)}).", "Delete it and write it again.")
    return Reference(mean, std, meta.get("source", str(path)), meta.get("hook", ""),
                     int(meta.get("count", "0") or 0))


# ---------------------------------------------------------------------------------------------
# Comparing


def class_vector(vectors: torch.Tensor, labels: Sequence, label) -> torch.Tensor:
    """Mean of the raw pooled vectors [N, d_in] whose label is `label` (for "document vs labeled
    class": score it with projection_scores like a document)."""
    if len(labels) != vectors.shape[0]:
        raise ValueError(f"{len(labels)} labels for {vectors.shape[0]} vectors.")
    mask = torch.tensor([lab == label for lab in labels], dtype=torch.bool)
    if not mask.any():
        raise DistillscopeError(f"No document is labelled {label!r}.",
                                "Choose a label the corpus has.")
    return vectors[mask].float().mean(0)


def compare(a: FeatureScores, b: FeatureScores, n: int) -> list[tuple[int, float, float]]:
    """The n features where the two scores differ most, as (feature, a, b), largest |a-b| first."""
    if a.values.shape != b.values.shape:
        raise ValueError("The two scores come from dictionaries of different widths.")
    diff = (a.values.float() - b.values.float()).abs()
    _, idx = diff.topk(max(0, min(int(n), diff.numel())))
    return [(int(f), float(a.values[f]), float(b.values[f])) for f in idx]


# ---------------------------------------------------------------------------------------------
# One document through the teacher


def sae_hook(sae, teacher=None):
    """The dictionary's hook point; checked against the teacher when given (check_fits)."""
    from core.dictionaries.formats import check_fits, hook_from_field
    from core.models import HookPoint

    if teacher is not None:
        return check_fits(sae, teacher)
    name = getattr(sae.cfg, "hook_name", "") or ""
    ours = hook_from_field(name)
    if ours is None:
        raise DistillscopeError(
            f"The dictionary does not say where in the model it reads (hook_name is {name!r}).",
            "Set hook_name in its cfg.json to the hook it was trained on, e.g. resid_post.6.")
    return HookPoint.parse(ours)


def document_scores(teacher, sae, text: str, reference: Optional[Reference], method: str,
                    max_length: int = 1024, state=None):
    """Run the teacher once (only as far as the dictionary's hook) and score the document.
    Returns (DocumentActivations, FeatureScores). `reference` is needed for "projection"."""
    from core.activations import document_activations

    if method not in METHODS:
        raise DistillscopeError(f"Scoring method '{method}' is unknown.", f"Use one of {', '.join(METHODS)}.")
    hook = sae_hook(sae, teacher)
    if method == "projection":
        if reference is None:
            raise DistillscopeError("Projection scores need a reference (the mean and std of "
                                    "document vectors to z-normalize against).",
                                    "Label the dictionary with a corpus to write one, or use "
                                    "token scores.")
        reference.check(sae)
    doc = document_activations(teacher, text, hook, max_length, state)
    if all(doc.is_bos):
        raise DistillscopeError("The document has no tokens to score.", "Type or open some text.")
    if method == "tokens":
        return doc, token_scores(sae, doc.acts, doc.is_bos)
    return doc, projection_scores(doc.pooled(), sae, reference.mean, reference.std)
